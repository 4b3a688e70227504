"""The `dcf` command line, run as a user would."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

from conftest import random_atoms
from dcf import FingerprintSpec, featurize

BUILTIN = Path(__file__).parents[1] / "dcf" / "data" / "li4p2o7_system_b.extxyz"


def dcf(*args, check=True):
    res = subprocess.run([sys.executable, "-m", "dcf", *map(str, args)],
                         capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"dcf {args} failed:\n{res.stdout}\n{res.stderr}")
    return res


def test_help_does_not_import_tensorflow():
    code = ("import sys; from dcf.cli import build_parser; build_parser().format_help(); "
            "import dcf, dcf.fingerprints; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False"
    assert "featurize" in dcf("--help").stdout


def test_spec_command_writes_a_loadable_spec(tmp_path):
    out = tmp_path / "lgps.json"
    res = dcf("spec", "--elements", "Li,Ge,P,S", "--like", "mailoa2019-S2", "--out", out)
    assert "Ge: 228 G, 8 A vectors" in res.stdout
    spec = FingerprintSpec.load(out)
    assert spec.elements == ("Li", "Ge", "P", "S")


def test_featurize_multi_frame_file(tmp_path, rng):
    frames = [random_atoms(rng) for _ in range(3)]
    data = tmp_path / "frames.extxyz"
    write(data, frames)
    out = tmp_path / "f.npz"
    res = dcf("featurize", data, "--spec", "mailoa2019-S4", "--out", out)
    assert "3 frame(s), 36 atoms" in res.stdout
    with np.load(out) as z:
        assert str(z["spec_sha256"]) == FingerprintSpec.preset("mailoa2019-S4").fingerprint
        for el in ("Li", "O", "P"):
            f = featurize(read(data, 1), "mailoa2019-S4")   # as stored in the file
            rows = z[f"frame/{el}"] == 1
            np.testing.assert_allclose(z[f"G/{el}"][rows], f.G[el])
            np.testing.assert_allclose(z[f"A/{el}"][rows], f.A[el])
            np.testing.assert_array_equal(z[f"atom/{el}"][rows], f.index[el])


def test_featurize_builtin_structure(tmp_path):
    res = dcf("featurize", BUILTIN, "--out", tmp_path / "b.npz")
    assert "208 atoms" in res.stdout


@pytest.mark.parametrize("problem", ["missing", "garbage", "element", "spec"])
def test_featurize_bad_input_leaves_nothing(tmp_path, problem):
    out = tmp_path / "f.npz"
    args = [BUILTIN, "--out", out]
    if problem == "missing":
        args[0] = tmp_path / "nope.extxyz"
    elif problem == "garbage":
        args[0] = tmp_path / "garbage.extxyz"
        args[0].write_text("this is not a structure\n")
    elif problem == "element":
        args += ["--spec", tmp_path / "spec.json"]
        FingerprintSpec.preset("mailoa2019-S4").like(["Li", "P"])[0].save(tmp_path / "spec.json")
    else:
        args += ["--spec", "no-such-preset"]
    res = dcf("featurize", *args, check=False)
    assert res.returncode != 0
    assert res.stderr.strip() and "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if "f.npz" in p.name) == []


def test_featurize_frame_selection(tmp_path, rng):
    data = tmp_path / "frames.extxyz"
    write(data, [random_atoms(rng) for _ in range(2)])
    assert "1 frame(s)" in dcf("featurize", data, "--index", "0", "--out", tmp_path / "a.npz").stdout
    assert "1 frame(s)" in dcf("featurize", data, "--index", "-1", "--out", tmp_path / "b.npz").stdout
    for bad in (["--index", "5:"], ["--threads", "-2"], ["--spec", str(tmp_path)]):
        res = dcf("featurize", data, *bad, "--out", tmp_path / "c.npz", check=False)
        assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "c.npz").exists()
