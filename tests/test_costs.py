"""The cost machinery (dcf.bench.costs) and the benchmark report (dcf.bench.report, `dcf bench`).
No timing is asserted: only shapes, bookkeeping and the arithmetic of the report."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from dcf.bench import report as q
from dcf.bench import costs
from dcf.descriptors.fingerprints import Featurizer
from dcf.models.dcf import DCFModel, ElementNetworks
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


# seconds that each operation of a DCF MD step costs on the fake clock below
KNOWN_COST = {"environment": 1e-3, "G": 2e-3, "G+A": 5e-3, "networks of one element": 0.5e-3,
              "force assembly": 0.25e-3, "integrator step": 0.4e-3}


@pytest.fixture
def fake_clock(monkeypatch):
    """dcf.bench.costs reads a clock that only the operations of an MD step advance, each by
    its KNOWN_COST, so that every timer has an exact answer known beforehand."""
    now = [0.0]
    monkeypatch.setattr(costs, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    def charging(fn, seconds):
        def charged(self, *args, **kwargs):
            now[0] += seconds(self) if callable(seconds) else seconds
            return fn(self, *args, **kwargs)
        return charged

    def features_cost(fz):
        has_axes = any(fz.spec.n_features(el)[1] for el in fz.spec.elements)
        return KNOWN_COST["G+A"] if has_axes else KNOWN_COST["G"]

    def integrator(run, steps):
        now[0] += steps * KNOWN_COST["integrator step"]
        return run_md(run, steps)

    run_md = costs.MDRun.run
    monkeypatch.setattr(Featurizer, "environment",
                        charging(Featurizer.environment, KNOWN_COST["environment"]))
    monkeypatch.setattr(Featurizer, "features", charging(Featurizer.features, features_cost))
    monkeypatch.setattr(ElementNetworks, "forces",
                        charging(ElementNetworks.forces, KNOWN_COST["networks of one element"]))
    monkeypatch.setattr(DCFModel, "forces",
                        charging(DCFModel.forces, KNOWN_COST["force assembly"]))
    monkeypatch.setattr(costs.MDRun, "run", integrator)
    return now


def test_md_step_cost_and_profile_recover_known_costs(system, fake_clock):
    c = KNOWN_COST
    networks = 3 * c["networks of one element"]                    # Li, O, P
    force_call = c["environment"] + c["G+A"] + networks + c["force assembly"]
    md_step = force_call + c["integrator step"]
    model = costs.table_s4_model("paper")

    res = costs.md_step_cost(system, model.calculator(), steps=2, repeats=3, warmup=1)
    assert (res["steps"], res["n_atoms"], res["rounds"]) == (2, 208, 3)
    assert res["median"] == pytest.approx(md_step, abs=1e-12)       # one force call per step
    assert res["median_us_per_atom"] == pytest.approx(1e6 * md_step / 208)

    prof = costs.profile_dcf_step(model, system, repeats=3)
    assert tuple(prof["parts"]) == costs.PROFILE_PARTS
    expected = {"neighbor list": c["environment"], "G": c["G"], "A": c["G+A"] - c["G"],
                "networks": networks, "force assembly": c["force assembly"],
                "ASE step": c["integrator step"]}
    assert prof["parts"] == pytest.approx(expected, abs=1e-12)
    assert prof["force_call"] == pytest.approx(force_call, abs=1e-12)
    assert prof["md_step"] == pytest.approx(md_step, abs=1e-12)


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
    b.append(_bench(q.FEATURIZE_STORE, 208, 0.05, steps=20, featurize_frames_per_s=25.0,
                    featurize_atoms_per_s=5200.0, store_seconds=0.1, bytes_per_snapshot=400.0))
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
    assert f["n2p2_over_dcf"] == pytest.approx(0.092 / 0.012)     # a force call, not a step
    assert f["sweep_fingerprint_ratio"] == pytest.approx((1.5, 3.0))
    rows = c.sweep_rows()
    assert [r["m"] for r in rows] == [30.0, 100.0, 160.0]
    assert rows[1]["force_ratio"] == pytest.approx(4.0)
    verdicts = {claim: v for claim, _, _, v in q.claims_table(f)}
    assert verdicts == {      # the ratios above against the paper, worked by hand
        "cost(G+dG/dr) / cost(G+A) = 1 + 3m (m = 101.0)": "does not hold: 152x below the claim",
        "cost(B-P forces) / cost(DCF forces) ~ 1 + 3m (m = 101.0)":
            "does not hold: 111x below the claim",                  # 304 / 2.75
        "fingerprint savings of DCF, (G+dG/dr)/(G+A) over m ~ 30-160":
            "does not hold: 60x below the low end",                 # 180 / 3
        "MD speedup of DCF over B-P (per step)": "does not hold: 31.8x below the claim",
        "DCF / classical FF per atom-step (LAMMPS loop)": "does not hold: 2.96x the claim",
        "DCF / classical FF per atom-step (through ASE)": "holds (within 2x)",   # 4 / 2.7
    }


N2P2_ROW = "DCF force call, speedup over n2p2 energy+forces (92 ms per 208 atoms)"


@pytest.mark.parametrize("dcf_scale, expected", [
    # DCF MD step 10.4 ms = 50 us/atom/step, 8x the LAMMPS loop; force call 12 ms: n2p2 7.7x
    (1.0, {"DCF MD step / classical FF (LAMMPS loop), per atom-step": "not met",
           "DCF MD step, us/atom/step": "not met", N2P2_ROW: "met"}),
    # DCF 4x faster: 12.5 us/atom/step, 2x the LAMMPS loop; n2p2 30.7x
    (0.25, {"DCF MD step / classical FF (LAMMPS loop), per atom-step": "met",
            "DCF MD step, us/atom/step": "met", N2P2_ROW: "met"}),
    # DCF 2x slower: 100 us/atom/step, 16x; n2p2 3.8x
    (2.0, {"DCF MD step / classical FF (LAMMPS loop), per atom-step": "not met",
           "DCF MD step, us/atom/step": "not met", N2P2_ROW: "not met"}),
])
def test_targets_met_or_not(dcf_scale, expected):
    data = fake_json()
    for b in data["benchmarks"]:
        if b["extra_info"].get("quantity") in (q.MD_STEP.format(ff=q.FF_DCF_PAPER),
                                               q.DCF_FORCES.format(head="paper")):
            b["stats"] = {k: v * dcf_scale if k != "rounds" else v for k, v in b["stats"].items()}
    rows = q.targets_table(q.findings(q.Costs(data)))
    assert {target: met for target, _, _, met in rows} == expected


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
    # featurization: 1 s per round of 20 frames of 208 atoms
    assert "| whole run, median | 50 ms/frame | 20.0 frames/s, 4160 atoms/s |" in text
    assert "| featurization phase | 40 ms/frame | 25.0 frames/s, 5200 atoms/s |" in text
    assert "| store size | 400 bytes per snapshot |  |" in text
    assert "- featurize into a store (Table S4, 1 rank): 20.0 frames/s, 4160 atoms/s" in text


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


def test_bench_mpi_section_runs_the_scripts_and_appends_their_summaries(tmp_path):
    """`dcf bench --mpi K`: each MPI script present in the benchmarks folder runs with
    --ranks for K and --out JSON, and its printed summary becomes a block of the report."""
    from dcf.cli.bench import append_mpi_section, mpi_scaling

    suites = tmp_path / "benchmarks"
    suites.mkdir()
    (suites / "md_mpi.py").write_text(
        "import sys, json\nargs = sys.argv[1:]\n"
        "open(args[args.index('--out') + 1], 'w').write(json.dumps(args))\n"
        "print('  scaled', args[args.index('--ranks') + 1])\n")
    (suites / "train_mpi.py").write_text("import sys\nsys.exit('broken')\n")
    results = mpi_scaling(suites, 3, tmp_path)
    assert [r[0].split(",")[0] for r in results] == ["`dcf md`", "`dcf train`"]
    assert results[0][2] == "  scaled 3" and "--ranks 3" in results[0][1]
    assert results[1][2].startswith("failed (exit 1)") and "broken" in results[1][2]
    assert (tmp_path / "md_mpi.json").exists()
    report = tmp_path / "r.md"
    report.write_text("# costs\n")
    append_mpi_section(report, results, 3)
    text = report.read_text()
    assert text.startswith("# costs\n") and "## MPI scaling: 1 and 3 ranks" in text
    assert "```\n  scaled 3\n```" in text
