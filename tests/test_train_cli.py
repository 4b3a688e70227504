"""`dcf train` and `dcf evaluate` as a user runs them: featurize -> train -> evaluate, resume."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ase.io import write

from test_dcf_model import cuau_spec, emt_frames

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
       "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def dcf(*args, check=True):
    res = subprocess.run([sys.executable, "-m", "dcf", *map(str, args)], capture_output=True,
                         text=True, timeout=300, env=ENV)
    if check and res.returncode != 0:
        raise AssertionError(f"dcf {args} failed:\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "cuau.extxyz"
    write(data, emt_frames(15, seed=4))
    spec = tmp / "spec.json"
    cuau_spec().save(spec)
    out = tmp / "f.h5"
    dcf("featurize", data, "--spec", spec, "--out", out, "--test-fraction", "0.2", "--seed", "0",
        "--quiet")
    return out


def test_train_and_evaluate(store, tmp_path):
    model = tmp_path / "m.dcf"
    res = dcf("train", store, "--model", "dcf", "--head", "paper", "--out", model,
              "--epochs", "2", "--hidden", "8,8", "--head-hidden", "8,8", "--rotations", "1",
              "--threads", "1")
    assert "nn3 Au epoch 2/2" in res.stdout and f"wrote {model}" in res.stdout
    assert model.exists() and not (tmp_path / "m.dcf.ckpt").exists()
    curve = (tmp_path / "m.lcurve.txt").read_text().splitlines()
    assert curve[0].split() == ["#", "epoch", "stage", "element", "train_loss", "val_loss",
                                "val_force_mae", "lr"]
    epochs = [line.split(":")[0].split() for line in res.stdout.splitlines()
              if " epoch " in line and "/2:" in line]
    assert [line.split()[:3] for line in curve[1:]] == [[e.split("/")[0], s, el]
                                                         for s, el, _, e in epochs]
    assert (tmp_path / "m.lcurve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report, plots = tmp_path / "r.json", tmp_path / "plots"
    res = dcf("evaluate", model, store, "--report", report, "--plots", plots, "--rotations", "1",
              "--covariance-frames", "1")
    assert "MAE/<|F|>" in res.stdout and "covariance error" in res.stdout
    r = json.loads(report.read_text())
    assert set(r["forces"]) == {"Cu", "Au"} and r["forces"]["Cu"]["n"] > 0
    assert r["covariance"]["covariance_error"] > 0          # the paper head is not exact
    assert sorted(p.name for p in plots.iterdir()) == [
        "error_by_F_DCF_paper_NN3_Au.png", "error_by_F_DCF_paper_NN3_Cu.png",
        "parity_DCF_paper_NN3_Au.png", "parity_DCF_paper_NN3_Cu.png"]


def test_user_errors(store, tmp_path):
    res = dcf("train", tmp_path / "missing.h5", "--out", tmp_path / "m.dcf", check=False)
    assert res.returncode != 0 and "missing.h5 does not exist" in res.stderr
    bad = tmp_path / "bad.dcf"
    bad.write_bytes(b"not a zip")
    res = dcf("evaluate", bad, store, check=False)
    assert res.returncode != 0 and "bad.dcf is not a dcf model file" in res.stderr
    assert not (tmp_path / "m.dcf").exists()


def test_killed_training_resumes(store, tmp_path):
    model, ckpt = tmp_path / "m.dcf", tmp_path / "m.dcf.ckpt"
    args = [sys.executable, "-m", "dcf", "train", str(store), "--out", str(model),
            "--head", "covariant", "--epochs", "500", "--patience", "500", "--hidden", "8", "--head-hidden", "8",
            "--checkpoint-every", "0", "--threads", "1"]
    kill_after(args, "nn1 Cu epoch 5/")
    assert ckpt.exists() and not model.exists()
    res = dcf(*args[3:], "--max-minutes", "0.1", check=False)   # the same run, now time-limited
    assert "resuming from checkpoint" in res.stdout, res.stdout + res.stderr
    first = next(line for line in res.stdout.splitlines() if line.startswith("nn1 Cu epoch"))
    assert int(first.split("epoch ")[1].split("/")[0]) >= 6
    assert res.returncode == 0 and model.exists() and not ckpt.exists()


def kill_after(args, first_line: str):
    """Start `args`, SIGKILL it once a line starting with `first_line` is printed."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=ENV)
    try:
        for line in proc.stdout:                     # wait until a few epochs are saved
            if line.startswith(first_line):
                break
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)


def test_killed_bp_training_resumes(store, tmp_path):
    model, ckpt = tmp_path / "bp.dcf", tmp_path / "bp.dcf.ckpt"
    args = [sys.executable, "-m", "dcf", "train", str(store), "--model", "bp", "--out",
            str(model), "--epochs", "500", "--patience", "500", "--hidden", "6",
            "--checkpoint-every", "0", "--threads", "1"]
    kill_after(args, "bp epoch 3:")
    assert ckpt.exists() and not model.exists()
    res = dcf(*args[3:], "--max-minutes", "0.1", check=False)
    assert "resuming from checkpoint" in res.stdout, res.stdout + res.stderr
    first = next(line for line in res.stdout.splitlines() if line.startswith("bp epoch"))
    assert int(first.split()[2].rstrip(":")) >= 4
    assert res.returncode == 0 and model.exists() and not ckpt.exists()
    curve = (tmp_path / "bp.lcurve.txt").read_text().splitlines()[1:]
    assert [int(line.split()[0]) for line in curve] == list(range(1, len(curve) + 1))
    assert {tuple(line.split()[1:3]) for line in curve} == {("bp", "all")}
