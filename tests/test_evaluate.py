"""`dcf evaluate`: several models side by side (Table 1) and the standard and reaction test sets
(Table 2), checked against force errors computed directly from the models' forces."""
import json

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from dcf import FingerprintSpec
from dcf.cli import main
from dcf.analysis.evaluation import (force_metrics, read_reaction_snapshots, reaction_table,
                            snapshot_keys)
from dcf.models import load_model
from dcf.data.store import FeatureStore

from test_bp_model import random_bp_model
from test_dcf_model import CUAU_RULES, cuau_spec, emt_frames, random_model
from test_reactions import h2_f2_trajectory


@pytest.fixture(scope="module")
def cuau(tmp_path_factory):
    """Four Cu/Au frames with EMT forces (extxyz), a random DCF and a random B-P model."""
    tmp = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(7)
    data = tmp / "cuau.extxyz"
    write(data, emt_frames(4, seed=3))
    spec = cuau_spec()
    dcf_path = random_model(spec, "paper", rng).save(tmp / "dcf.dcf")
    bp_path = random_bp_model(rng, spec).save(tmp / "bp.dcf")
    spec.save(tmp / "spec.json")
    return {"dir": tmp, "data": data, "dcf": dcf_path, "bp": bp_path, "spec": tmp / "spec.json"}


def direct_errors(model_path, frames, pairs):
    """{el: force_metrics} of a model on the (frame, atom) pairs (m, 2) of `frames`."""
    model = load_model(model_path)
    pred = {k: model.forces(frames[k]) for k in np.unique(pairs[:, 0])}
    out = {}
    symbols = np.array([frames[f].get_chemical_symbols()[a] for f, a in pairs])
    for el in np.unique(symbols):
        sel = pairs[symbols == el]
        out[el] = force_metrics([pred[f][a] for f, a in sel],
                                [frames[f].get_forces()[a] for f, a in sel])
    return out


def all_pairs(frames):
    return np.array([(k, i) for k, a in enumerate(frames) for i in range(len(a))])


def without(pairs, remove):
    return pairs[~np.isin(snapshot_keys(*pairs.T), snapshot_keys(*np.asarray(remove).T))]


def assert_metrics_equal(got, want):
    assert got["n"] == want["n"]
    for key in ("mae", "rmse", "mean_abs_ref"):
        assert got[key] == pytest.approx(want[key], rel=1e-10, abs=1e-12)


def test_two_models_side_by_side(cuau, tmp_path, capsys):
    report, plots = tmp_path / "r.json", tmp_path / "plots"
    assert main(["evaluate", str(cuau["dcf"]), str(cuau["bp"]), str(cuau["data"]),
                 "--report", str(report), "--plots", str(plots), "--rotations", "1",
                 "--covariance-frames", "1"]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines()]
    rows = [r[:-5] for r in table if len(r) > 6 and r[-6] in ("Cu", "Au")]
    assert rows == [["DCF", "paper", "NN3", "Cu"], ["DCF", "paper", "NN3", "Au"],
                    ["B-P", "Cu"], ["B-P", "Au"]]
    assert "B-P energy: MAE" in out and "DCF paper NN3 energy" not in out
    assert out.count("covariance error") == 2
    assert "outside the span of A" in out

    r = json.loads(report.read_text())
    assert r["data"] == str(cuau["data"]) and len(r["models"]) == 2
    frames = read(cuau["data"], ":")
    from dcf.analysis.evaluation import axes_span_of_frames
    expected = axes_span_of_frames(frames, load_model(cuau["dcf"]).spec)
    for entry, path in zip(r["models"], (cuau["dcf"], cuau["bp"])):
        assert entry["model_file"] == str(path)
        for el, span in expected.items():
            assert entry["axes_span"][el] == pytest.approx(span)
        want = direct_errors(path, frames, all_pairs(frames))
        for el in ("Cu", "Au"):
            assert_metrics_equal(entry["forces"][el], want[el])
    assert [e["label"] for e in r["models"]] == ["DCF paper NN3", "B-P"]
    assert r["models"][0]["energy"] is None and r["models"][1]["energy"]["n"] == 4
    assert r["models"][0]["covariance"]["n_frames"] == 1
    assert sorted(p.name for p in plots.iterdir()) == [
        "error_by_F_B-P_Au.png", "error_by_F_B-P_Cu.png",
        "error_by_F_DCF_paper_NN3_Au.png", "error_by_F_DCF_paper_NN3_Cu.png",
        "parity_B-P_Au.png", "parity_B-P_Cu.png",
        "parity_DCF_paper_NN3_Au.png", "parity_DCF_paper_NN3_Cu.png"]


def test_same_label_models_are_told_apart(cuau, tmp_path, capsys):
    other = random_model(cuau_spec(), "paper", np.random.default_rng(1)).save(tmp_path / "b.dcf")
    report = tmp_path / "r.json"
    main(["evaluate", str(cuau["dcf"]), str(other), str(cuau["data"]), "--rotations", "0",
          "--report", str(report)])
    assert "DCF paper NN3 (dcf)" in capsys.readouterr().out
    labels = [e["label"] for e in json.loads(report.read_text())["models"]]
    assert labels == ["DCF paper NN3 (dcf)", "DCF paper NN3 (b)"]


def test_reaction_table_on_a_structure_file(cuau, tmp_path, capsys):
    frames = read(cuau["data"], ":")
    pairs = np.array([[0, 3], [0, 5], [2, 7], [3, 0], [3, 31]])
    lines = tmp_path / "r.txt"
    lines.write_text("# frame atom\n" + "".join(f"{f} {a}\n" for f, a in pairs) + "0 3 5.0\n")
    report = tmp_path / "r.json"
    assert main(["evaluate", str(cuau["dcf"]), str(cuau["bp"]), str(cuau["data"]),
                 "--reactions", str(lines), "--rotations", "0", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "standard n" in out and "reaction MAE" in out and "occurrence" in out

    symbols = np.array([frames[f].get_chemical_symbols()[a] for f, a in pairs])
    standard = without(all_pairs(frames), pairs)
    for entry, path in zip(json.loads(report.read_text())["models"], (cuau["dcf"], cuau["bp"])):
        rx = entry["reactions"]
        assert rx["n_snapshots"] == len(pairs) and rx["in_store_training_frames"] is None
        want_s = direct_errors(path, frames, standard)
        want_r = direct_errors(path, frames, pairs)
        for el in ("Cu", "Au"):
            got = rx["elements"][el]
            assert_metrics_equal(got["standard"], want_s[el])
            assert_metrics_equal(got["reaction"], want_r[el])
            n_el = sum(s == el for s in frames[0].get_chemical_symbols())
            assert got["occurrence"] == pytest.approx((symbols == el).sum() / (4 * n_el))
            assert got["standard"]["n"] + got["reaction"]["n"] == 4 * n_el


def test_reaction_table_on_a_store(cuau, tmp_path, capsys):
    store = tmp_path / "f.h5"
    assert main(["featurize", str(cuau["data"]), "--spec", str(cuau["spec"]), "--out", str(store),
                 "--test-fraction", "0.5", "--snapshots", "40", "--quiet"]) == 0
    with FeatureStore(store) as s:
        test_ids, train_ids = s.frame_ids("test"), s.frame_ids("train")
        rows = {el: s.snapshots(el, "test") for el in s.elements}
        frames = [s.frame(k) for k in range(s.n_frames)]
    test_rows = np.concatenate([np.stack([r["frame"], r["atom"]], 1) for r in rows.values()])
    # reaction snapshots: two of the test rows, one test atom that was not sampled, one atom
    # of a training frame
    sampled = set(map(tuple, test_rows))
    unsampled = next((int(test_ids[0]), a) for a in range(32) if (test_ids[0], a) not in sampled)
    pairs = np.array(sorted({tuple(test_rows[0]), tuple(test_rows[-1]), unsampled,
                             (int(train_ids[0]), 4)}))
    lines = tmp_path / "r.txt"
    lines.write_text("".join(f"{f} {a}\n" for f, a in pairs))
    report = tmp_path / "r.json"
    capsys.readouterr()
    assert main(["evaluate", str(cuau["dcf"]), str(store), "--reactions", str(lines),
                 "--rotations", "0", "--report", str(report)]) == 0
    assert "1 reaction snapshot(s) lie in training frames" in capsys.readouterr().out
    rx = json.loads(report.read_text())["reactions"]
    assert rx["in_store_training_frames"] == 1
    want_s = direct_errors(cuau["dcf"], frames, without(test_rows, pairs))
    want_r = direct_errors(cuau["dcf"], frames, pairs)
    for el in want_r:
        assert_metrics_equal(rx["elements"][el]["standard"], want_s[el])
        assert_metrics_equal(rx["elements"][el]["reaction"], want_r[el])
    assert sum(rx["elements"][el]["standard"]["n"] for el in rx["elements"]) == \
        len(test_rows) - 2

    # side by side on a store: this DCF model (net force kept) uses the sampled rows, B-P every
    # atom of the test frames; the table says so
    main(["evaluate", str(cuau["dcf"]), str(cuau["bp"]), str(store), "--rotations", "0"])
    assert "different snapshots of Cu (see n)" in capsys.readouterr().out


def test_reaction_recipe_end_to_end(tmp_path, capsys):
    """dcf reactions on a trajectory with one reaction, then dcf evaluate --reactions, with the
    JSON and with the snapshot lines: the same table, the occurrence of dcf reactions."""
    rng = np.random.default_rng(3)
    frames = h2_f2_trajectory(rng)
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, forces=rng.normal(size=(len(atoms), 3)))
    traj = tmp_path / "hf.extxyz"
    write(traj, frames)
    frames = read(traj, ":")
    model = random_model(FingerprintSpec(["H", "F"], CUAU_RULES, cutoff=5.0), "paper",
                         rng).save(tmp_path / "hf.dcf")
    rjson, rtxt = tmp_path / "r.json", tmp_path / "r.txt"
    assert main(["reactions", str(traj), "--out", str(rjson), "--snapshots", str(rtxt),
                 "--window", "2"]) == 0
    found = json.loads(rjson.read_text())
    tables = []
    for source in (rjson, rtxt):
        report = tmp_path / f"{source.suffix[1:]}.report.json"
        assert main(["evaluate", str(model), str(traj), "--reactions", str(source),
                     "--rotations", "0", "--report", str(report)]) == 0
        tables.append(json.loads(report.read_text())["reactions"]["elements"])
    capsys.readouterr()
    assert tables[0].keys() == tables[1].keys() == {"H", "F"}
    for el in ("H", "F"):
        for part in ("standard", "reaction"):
            assert_metrics_equal(tables[1][el][part], tables[0][el][part])
        assert tables[1][el]["occurrence"] == pytest.approx(tables[0][el]["occurrence"])
    pairs = np.stack([found["snapshots"]["frame"], found["snapshots"]["atom"]], 1)
    want_r = direct_errors(model, frames, pairs)
    for el in ("H", "F"):
        assert tables[0][el]["reaction"]["n"] == found["occurrence"][el]["snapshots"] > 0
        assert_metrics_equal(tables[0][el]["reaction"], want_r[el])
        assert tables[0][el]["occurrence"] == found["occurrence"][el]["occurrence"]


def test_reaction_table_function():
    parity = {"Cu": {"ref": np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 3]]),
                     "pred": np.array([[1.5, 0, 0], [0, 2, 0], [0, 0, 1]]),
                     "frame": np.array([0, 0, 1]), "atom": np.array([0, 2, 1])}}
    t = reaction_table(parity, [[1, 1]], {"Cu": 0.25})["Cu"]
    assert (t["standard"]["n"], t["standard"]["mae"]) == (2, 0.25)
    assert (t["reaction"]["n"], t["reaction"]["mae"], t["occurrence"]) == (1, 2.0, 0.25)
    t = reaction_table(parity, [[1, 1]], standard=[[0, 0], [1, 1]])["Cu"]
    assert (t["standard"]["n"], t["standard"]["mae"]) == (1, 0.5)
    with pytest.raises(ValueError, match="1 reaction snapshot"):
        reaction_table(parity, [[2, 0]])


def run_error(argv, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    capsys.readouterr()
    return str(err.value)


def test_bad_reaction_input(cuau, tmp_path, capsys):
    base = ["evaluate", str(cuau["dcf"]), str(cuau["data"]), "--rotations", "0", "--reactions"]
    lines = tmp_path / "r.txt"
    assert f"{tmp_path / 'none.txt'} does not exist" in run_error(
        base + [str(tmp_path / "none.txt")], capsys)
    lines.write_text("9 0\n")
    msg = run_error(base + [str(lines)], capsys)
    assert str(lines) in msg and "frame 9" in msg and "4 frames (0..3)" in msg
    lines.write_text("1 32\n")
    msg = run_error(base + [str(lines)], capsys)
    assert str(lines) in msg and "atom 32" in msg and "has 32 atoms" in msg
    lines.write_text("1 two\n")
    assert f"{lines} line 1" in run_error(base + [str(lines)], capsys)

    cu_only = random_model(FingerprintSpec(["Cu"], CUAU_RULES, cutoff=5.0), "paper",
                           np.random.default_rng(0)).save(tmp_path / "cu.dcf")
    au_atom = read(cuau["data"], 1).get_chemical_symbols().index("Au")
    lines.write_text(f"1 {au_atom}\n")
    msg = run_error(["evaluate", str(cu_only), str(cuau["data"]), "--reactions", str(lines)],
                    capsys)
    assert str(lines) in msg and "is Au" in msg and str(cu_only) in msg

    bad_json = tmp_path / "other.json"
    bad_json.write_text(json.dumps({"format": "something"}))
    assert f"{bad_json}: not a reactions file" in run_error(base + [str(bad_json)], capsys)
    made = {"format": "dcf-reactions", "version": 1, "source": "t.xyz", "index": ":",
            "n_frames": 10, "n_atoms": 32, "snapshots": {"frame": [0], "atom": [0]},
            "occurrence": {"Cu": {"snapshots": 1, "occurrence": 0.01}}}
    other = tmp_path / "r10.json"
    other.write_text(json.dumps(made))
    msg = run_error(base + [str(other)], capsys)
    assert "found in 10 frames of t.xyz" in msg and "has 4" in msg
    made.update(n_frames=4, occurrence={"Au": {"snapshots": 1, "occurrence": 0.01}})
    other.write_text(json.dumps(made))
    if read(cuau["data"], 0).get_chemical_symbols()[0] == "Cu":
        assert "not the trajectory" in run_error(base + [str(other)], capsys)


def test_read_reaction_snapshots_sorts_and_deduplicates(tmp_path):
    p = tmp_path / "r.txt"
    p.write_text("3 1\n0 2 7.5\n3 1\n")
    info = read_reaction_snapshots(p)
    assert info["format"] == "lines" and info["occurrence"] is None
    np.testing.assert_array_equal(info["pairs"], [[0, 2], [3, 1]])


def test_axes_span_on_hand_made_axes():
    from dcf.analysis.evaluation import axes_span
    F = np.array([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0], [1.0, 0.0, 0.0]])
    # snapshot 0: axes along x and y only (z outside); 1: all three, one weak (z at 0.01);
    # 2: full and well conditioned
    A = np.zeros((3, 3, 3))
    A[0, 0] = [1, 0, 0]
    A[0, 1] = [0, 1, 0]
    A[1] = np.diag([1.0, 1.0, 0.01])
    A[2] = np.eye(3)
    r = axes_span(A, F)
    total = 9 + 25 + 1
    assert r["outside"] == pytest.approx(4 / total)
    assert r["weak"] == pytest.approx((4 + 16) / total)
    assert r["rank_deficient"] == pytest.approx(1 / 3)
    rotated = axes_span(A @ np.linalg.qr(np.arange(9.0).reshape(3, 3) + np.eye(3))[0].T,
                        F @ np.linalg.qr(np.arange(9.0).reshape(3, 3) + np.eye(3))[0].T)
    assert rotated["outside"] == pytest.approx(r["outside"])
    assert axes_span(A[:0], F[:0])["n"] == 0
