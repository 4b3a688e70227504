"""The `dcf` command line, run as a user would."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from conftest import random_atoms
from dcf import FingerprintSpec, featurize
from dcf.data.store import FeatureStore

BUILTIN = Path(__file__).parents[1] / "dcf" / "data" / "li4p2o7_system_b.extxyz"
EMBEDDED = Path(__file__).parents[1] / "dcf" / "data" / "li4p2o7_xtb_3000K.extxyz"


def dcf(*args, check=True):
    res = subprocess.run([sys.executable, "-m", "dcf", *map(str, args)],
                         capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"dcf {args} failed:\n{res.stdout}\n{res.stderr}")
    return res


def test_help_does_not_import_tensorflow():
    code = ("import sys; from dcf.cli import build_parser; build_parser().format_help(); "
            "import dcf, dcf.descriptors.fingerprints; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False"
    assert "featurize" in dcf("--help").stdout


def test_spec_command_writes_a_loadable_spec(tmp_path):
    out = tmp_path / "lgps.json"
    res = dcf("spec", "--elements", "Li,Ge,P,S", "--like", "mailoa2019-S2", "--out", out)
    assert "Ge: 228 G, 8 A vectors" in res.stdout
    spec = FingerprintSpec.load(out)
    assert spec.elements == ("Li", "Ge", "P", "S")


def labelled(frames, rng):
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()),
                                           forces=rng.normal(size=(len(atoms), 3)))
    return frames


def test_featurize_multi_frame_file(tmp_path, rng):
    frames = labelled([random_atoms(rng) for _ in range(3)], rng)
    data = tmp_path / "frames.extxyz"
    write(data, frames)
    out = tmp_path / "f.h5"
    res = dcf("featurize", data, "--spec", "mailoa2019-S4", "--out", out, "--test-fraction", "0")
    assert "3 frame(s), 36 atoms" in res.stdout and "featurized 3 frame(s)" in res.stdout
    with FeatureStore(out) as store:
        assert store.spec.fingerprint == FingerprintSpec.preset("mailoa2019-S4").fingerprint
        assert store.provenance["sources"][0]["path"] == str(data)
        f = featurize(read(data, 1), "mailoa2019-S4")   # as stored in the file
        for el in ("Li", "O", "P"):
            s = store.snapshots(el)
            rows = s["frame"] == 1
            np.testing.assert_allclose(s["G"][rows], f.G[el])
            np.testing.assert_allclose(s["A"][rows], f.A[el])
            np.testing.assert_array_equal(s["atom"][rows], f.index[el])


def test_featurize_embedded_data_set(tmp_path):
    out = tmp_path / "b.h5"
    res = dcf("featurize", EMBEDDED, "--out", out, "--snapshots", "500", "--quiet")
    assert "frames/s" in res.stdout and "atoms/s" in res.stdout
    with FeatureStore(out) as store:
        assert store.n_snapshots("O") == 500 and store.n_snapshots("Li") == 500
        assert 0 < store.n_snapshots("P", "test") < store.n_snapshots("P", "train")


@pytest.mark.parametrize("problem", ["missing", "garbage", "element", "spec", "no-forces",
                                     "npz", "chosen"])
def test_featurize_bad_input_leaves_nothing(tmp_path, rng, problem):
    out = tmp_path / "f.h5"
    data = tmp_path / "frames.extxyz"
    write(data, labelled([random_atoms(rng) for _ in range(2)], rng))
    args = [data, "--out", out]
    expected = {"missing": "nope.extxyz", "garbage": "garbage.extxyz", "element": "contains O",
                "spec": "no-such-preset", "no-forces": "no forces", "npz": "HDF5",
                "chosen": "frame out of range"}[problem]
    if problem == "missing":
        args[0] = tmp_path / "nope.extxyz"
    elif problem == "garbage":
        args[0] = tmp_path / "garbage.extxyz"
        args[0].write_text("this is not a structure\n")
    elif problem == "element":
        args += ["--spec", tmp_path / "spec.json"]
        FingerprintSpec.preset("mailoa2019-S4").like(["Li", "P"])[0].save(tmp_path / "spec.json")
    elif problem == "spec":
        args += ["--spec", "no-such-preset"]
    elif problem == "no-forces":
        args[0] = BUILTIN                   # a structure without forces
    elif problem == "npz":
        args[2] = out = tmp_path / "f.npz"
    else:
        (tmp_path / "rare.txt").write_text("7 0\n")
        args += ["--chosen", tmp_path / "rare.txt"]
    res = dcf("featurize", *args, check=False)
    assert res.returncode != 0
    assert expected in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".f", "f."))) == []


def test_featurize_frame_selection(tmp_path, rng):
    data = tmp_path / "frames.extxyz"
    write(data, labelled([random_atoms(rng) for _ in range(4)], rng))
    assert "1 frame(s)" in dcf("featurize", data, "--index", "0", "--out", tmp_path / "a.h5").stdout
    assert "1 frame(s)" in dcf("featurize", data, "--index", "-1", "--out", tmp_path / "b.h5").stdout
    assert "2 frame(s)" in dcf("featurize", data, "--every", "2", "--out", tmp_path / "d.h5").stdout
    with FeatureStore(tmp_path / "d.h5") as store:
        assert store.frame_arrays(1)["source_frame"] == 2
    for bad in (["--index", "5:"], ["--threads", "-2"], ["--spec", str(tmp_path)],
                ["--every", "0"], ["--test-fraction", "1"], ["--snapshots", "0"]):
        res = dcf("featurize", data, *bad, "--out", tmp_path / "c.h5", check=False)
        assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "c.h5").exists()
