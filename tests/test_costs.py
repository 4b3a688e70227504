"""The cost machinery (dcf.bench.costs) and the benchmark report (dcf.bench.report, `dcf bench`).
No timing is asserted: only shapes, bookkeeping and the arithmetic of the report."""
import json

import numpy as np
import pytest

from dcf.bench import report as q
from dcf.bench import costs
from dcf.cli import commands, main
from dcf.data.structures import system_b


@pytest.fixture(scope="module")
def system():
    return system_b()


def test_table_s4_models_predict_forces(system):
    for head in ("paper", "covariant"):
        F = costs.table_s4_model(head).forces(system)
        assert F.shape == (208, 3) and np.all(np.isfinite(F))
        assert np.allclose(F.sum(axis=0), 0.0, atol=1e-9)       # net force removed
    res = costs.bp_model().compute(system, ("energy", "forces"))
    assert res["forces"].shape == (208, 3) and np.isfinite(res["energy"])


def test_m_sweep_systems_have_increasing_neighbor_counts():
    targets = [30, 60, 100, 160]
    built = [costs.system_b_with_neighbors(m) for m in targets]
    m = [a.info["mean_neighbors"] for a in built]
    assert all(a < b for a, b in zip(m, m[1:]))
    assert np.allclose(m, targets, rtol=0.05)
    assert all(len(a) == 208 for a in built)
    assert m[2] == pytest.approx(costs.mean_neighbors(built[2]))


def test_system_b_has_the_papers_neighbor_count(system):
    assert costs.mean_neighbors(system, 6.5) == pytest.approx(101.5, abs=1.0)


def test_summarize():
    s = costs.summarize([4.0, 1.0, 3.0, 2.0, 5.0], n_atoms=2)
    assert (s["median"], s["min"], s["max"], s["rounds"]) == (3.0, 1.0, 5.0, 5)
    assert s["iqr"] == pytest.approx(2.0)
    assert s["median_us_per_atom"] == pytest.approx(1.5e6)
    with pytest.raises(ValueError):
        costs.summarize([])


def test_md_step_cost_and_profile(system):
    model = costs.table_s4_model("paper")
    res = costs.md_step_cost(system, model.calculator(), steps=2, repeats=2, warmup=0)
    assert res["steps"] == 2 and res["n_atoms"] == 208 and res["rounds"] == 2
    assert res["median"] > 0
    assert res["median_us_per_atom"] == pytest.approx(1e6 * res["median"] / 208)

    prof = costs.profile_dcf_step(model, system, repeats=2)
    assert tuple(prof["parts"]) == costs.PROFILE_PARTS
    assert sum(prof["parts"].values()) == pytest.approx(prof["md_step"])   # parts telescope
    assert prof["force_call"] > 0


def test_classical_pair_commands():
    cmds = costs.classical_pair_commands(("Li", "O", "P"))
    assert cmds[0] == f"pair_style born/coul/dsf {costs.DSF_ALPHA} {costs.CLASSICAL_CUTOFF}"
    assert "pair_coeff 1 2 41051.938 0.15116 0.0 0.0 0.0" in cmds          # Li-O
    assert "pair_coeff 2 3 26655.472 0.181968 0.0 86.856 0.0" in cmds       # O-P
    assert "pair_coeff 1 1 0.0 1.0 0.0 0.0 0.0" in cmds                     # Li-Li: Coulomb
    assert sum(c.startswith("pair_coeff") for c in cmds) == 6
    counts = {"Li": 64, "O": 112, "P": 32}
    assert sum(costs.LI_P_O_CHARGES[el] * n for el, n in counts.items()) == pytest.approx(0.0)


def test_classical_force_field_through_ase(system):
    reason = costs.lammps_missing()
    if reason:
        pytest.skip(reason)
    atoms = system.copy()
    atoms.calc = costs.classical_calculator()
    F = atoms.get_forces()
    assert F.shape == (208, 3) and np.allclose(F.sum(axis=0), 0.0, atol=1e-6)


# ---------------------------------------------------------------- the report
def _bench(quantity, n, median, steps=1, rounds=5, **extra):
    return {"name": quantity, "extra_info": {"quantity": quantity, "n_atoms": n, "steps": steps,
                                             **extra},
            "stats": {"median": median * steps, "iqr": 0.1 * median * steps,
                      "min": 0.9 * median * steps, "rounds": rounds}}


def fake_json() -> dict:
    """Two sizes, every MD force field, a three-point m sweep; round numbers."""
    b = []
    for n, k in ((208, 1), (1664, 8)):
        b += [_bench(q.NEIGHBOR_LIST, n, 0.001 * k, mean_neighbors=101.0),
              _bench(q.G, n, 0.010 * k), _bench(q.G_A, n, 0.011 * k),
              _bench(q.G_DG, n, 0.022 * k), _bench(q.BP_EF, n, 0.033 * k),
              _bench(q.DCF_FORCES.format(head="paper"), n, 0.012 * k),
              _bench(q.MD_STEP.format(ff=q.FF_DCF_PAPER), n,
                     0.0104 * k, steps=10),
              _bench(q.MD_STEP.format(ff=q.FF_BP), n, 0.0416 * k, steps=3),
              _bench(q.MD_STEP.format(ff=q.FF_CLASSICAL_ASE), n, 0.0026 * k, steps=20),
              _bench(q.MD_STEP.format(ff=q.FF_CLASSICAL_NATIVE), n, 0.0013 * k, steps=100)]
    b[6]["extra_info"]["profile"] = {
        "parts": {"neighbor list": 0.001, "G": 0.006, "A": 0.0005, "networks": 0.001,
                  "force assembly": 0.0005, "ASE step": 0.0014},
        "spread": {}, "force_call": 0.009, "md_step": 0.0104, "n_atoms": 208, "repeats": 5}
    for m, g_a, g_dg, dcf, bp in ((30.0, 0.002, 0.003, 0.003, 0.006),
                                  (100.0, 0.010, 0.025, 0.011, 0.044),
                                  (160.0, 0.020, 0.060, 0.021, 0.105)):
        sweep = {"sweep": "m", "mean_neighbors": m, "m_target": m, "length_scale": 1.0}
        b += [_bench(q.G, 208, g_a * 0.9, **sweep), _bench(q.G_A, 208, g_a, **sweep),
              _bench(q.G_DG, 208, g_dg, **sweep),
              _bench(q.DCF_FORCES.format(head="paper"), 208, dcf, **sweep),
              _bench(q.BP_EF, 208, bp, **sweep)]
    b.append({"name": "unrelated", "extra_info": {}, "stats": {"median": 1.0}})
    info = {"cpu": "Test CPU", "logical_cpus": 2, "cpus_available": 1, "load_average": [0.1] * 3,
            "load_average_start": [0.1] * 3, "python": "3.x", "date": "2026-01-01 00:00 UTC"}
    return {"benchmarks": b, "machine_info": {"dcf": info}, "datetime": "2026-01-01"}


def test_costs_are_per_step_and_ratios_are_right():
    c = q.Costs(fake_json())
    assert c.sizes == [208, 1664]
    assert c.md(q.FF_DCF_PAPER).median == pytest.approx(0.0104)          # round / steps
    assert c.md(q.FF_BP, 1664).rounds == 5
    f = q.findings(c)
    assert f["bp_over_dcf_md"] == pytest.approx(4.0)
    assert f["dcf_over_classical_native"] == pytest.approx(8.0)
    assert f["dcf_over_classical_ase"] == pytest.approx(4.0)
    assert f["fingerprint_ratio"] == pytest.approx(2.0)
    assert f["one_plus_3m"] == pytest.approx(304.0)
    assert f["force_ratio"] == pytest.approx(2.75)
    assert f["dcf_us_per_atom_step"] == pytest.approx(0.0104e6 / 208)
    assert f["n2p2_over_dcf"] == pytest.approx(0.092 / 0.0104)
    assert f["sweep_fingerprint_ratio"] == pytest.approx((1.5, 3.0))
    rows = c.sweep_rows()
    assert [r["m"] for r in rows] == [30.0, 100.0, 160.0]
    assert rows[1]["force_ratio"] == pytest.approx(4.0)
    verdicts = {claim: v for claim, _, _, v in q.claims_table(f)}
    assert any(v.startswith("does not hold") for v in verdicts.values())
    targets = {t: met for t, _, _, met in q.targets_table(f)}
    assert set(targets.values()) <= {"met", "not met"}
    assert targets["DCF MD step / classical FF (LAMMPS loop), per atom-step"] == "not met"


def test_write_report_tables_and_figures(tmp_path):
    report = q.write_report(fake_json(), tmp_path / "docs" / "benchmarks.md",
                            run={"command": "dcf bench --quick", "seconds": 90.0,
                                 "mode": "quick", "json": "out/bench/bench.json"})
    text = report.read_text()
    for png in ("bench-cost-per-atom-step.png", "bench-ratio-vs-m.png"):
        path = tmp_path / "docs" / "figures" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(figures/{png})" in text
    assert "`dcf bench --quick`" in text and "1.5 min" in text
    assert "| DCF (paper head) | 208 | 10.4 |" in text            # ms per step
    assert "| 304 | 2.00 | does not hold: 152x below the claim |" in text    # 1 + 3m claim
    assert "| 100.0 | 1 | 10 | 25 | 2.5 | 11 | 44 | 4 | 301 |" in text
    assert "Test CPU" in text and "## Where a DCF MD step spends its time" in text
    assert "| G | 6 | 57.7% |" in text


def test_report_without_classical_force_field(tmp_path):
    data = fake_json()
    data["benchmarks"] = [b for b in data["benchmarks"]
                          if "classical" not in b["extra_info"].get("quantity", "")]
    text = q.write_report(data, tmp_path / "r.md").read_text()
    assert "classical force field was not measured" in text


def test_bench_command_renders_saved_json(tmp_path, capsys):
    assert "bench" in commands()
    saved = tmp_path / "bench.json"
    data = fake_json()
    data["dcf_run"] = {"command": "dcf bench", "mode": "full", "seconds": 300.0}
    saved.write_text(json.dumps(data))
    report = tmp_path / "out" / "report.md"
    assert main(["bench", "--from-json", str(saved), "--report", str(report)]) == 0
    assert report.is_file() and (tmp_path / "out" / "figures" / "bench-ratio-vs-m.png").is_file()
    assert "B-P / DCF per MD step: 4.00x" in capsys.readouterr().out
    assert "This page: `dcf bench`; full run;" in report.read_text()      # how it was measured
    assert "5.0 min" in report.read_text()
