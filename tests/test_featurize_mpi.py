"""`dcf featurize` as users run it: under mpiexec, killed and restarted, without mpi4py."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from dcf.data.pipeline import checkpoint_dir
from dcf.data.store import FeatureStore
from dcf.data.structures import system_b
from test_store import store_arrays

MPIEXEC = Path(sys.executable).parent / "mpiexec"
ARGS = ["--spec", "mailoa2019-S4", "--test-fraction", "0.25", "--seed", "3", "--quiet"]


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    """60 rattled frames of the 208-atom system B with random forces and energies."""
    rng = np.random.default_rng(0)
    base = system_b()
    frames = []
    for k in range(60):
        atoms = base.copy()
        atoms.rattle(0.05, seed=k)
        atoms.calc = SinglePointCalculator(atoms, energy=float(k),
                                           forces=rng.normal(size=(len(atoms), 3)))
        frames.append(atoms)
    path = tmp_path_factory.mktemp("traj") / "b60.extxyz"
    write(path, frames)
    return path


@pytest.fixture(scope="module")
def serial_store(trajectory, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "serial.h5"
    featurize(trajectory, "--out", out, "--snapshots", "3000", "--block", "2")
    return out


def featurize(*args, runner=(), env=None, timeout=240):
    res = subprocess.run([*runner, sys.executable, "-m", "dcf", "featurize", *map(str, args),
                          *ARGS], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    return res


def assert_same_store(a, b):
    got, ref = store_arrays(a), store_arrays(b)
    assert got.keys() == ref.keys()
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    with FeatureStore(a) as sa, FeatureStore(b) as sb:
        assert sa.content_sha256() == sb.content_sha256()
        assert sa.spec == sb.spec
        pa, pb = sa.provenance, sb.provenance
        for volatile in ("created", "command", "ranks"):
            pa.pop(volatile), pb.pop(volatile)
        assert pa == pb


@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec beside {sys.executable}")
def test_two_ranks_equal_one(trajectory, serial_store, tmp_path):
    out = tmp_path / "mpi.h5"
    # a different block size too: the result may not depend on the work layout
    res = featurize(trajectory, "--out", out, "--snapshots", "3000",
                    runner=(str(MPIEXEC), "-n", "2"), env={"DCF_NUM_THREADS": "1"})
    assert "on 2 rank(s)" in res.stdout
    assert res.stdout.count("wrote") == 1                  # rank 0 alone reports
    assert_same_store(out, serial_store)
    with FeatureStore(out) as store:
        assert store.provenance["ranks"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mpi.h5"]


def test_killed_run_resumes_to_the_same_store(trajectory, serial_store, tmp_path):
    out = tmp_path / "resumed.h5"
    folder = checkpoint_dir(out)
    cmd = [sys.executable, "-m", "dcf", "featurize", str(trajectory), "--out", str(out),
           "--snapshots", "3000", "--block", "2", *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("block-*.npz"))) < 3:
            assert proc.poll() is None, "finished before it could be interrupted"
            assert time.monotonic() < deadline, "no checkpoint blocks appeared"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = len(list(folder.glob("block-*.npz")))
    assert not out.exists() and 3 <= done < 30
    res = featurize(trajectory, "--out", out, "--snapshots", "3000", "--block", "2")
    assert f"{done} of 30 blocks resumed" in res.stdout
    assert_same_store(out, serial_store)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resumed.h5"]


def test_changed_inputs_do_not_resume(trajectory, serial_store, tmp_path):
    """Checkpoints of another job (here: another seed) are discarded, not mixed in."""
    out = tmp_path / "s.h5"
    featurize(trajectory, "--out", out, "--snapshots", "3000", "--block", "2")
    folder = checkpoint_dir(out)
    folder.mkdir()
    (folder / "manifest.json").write_text('{"digest": "another job"}')
    (folder / "block-000000.npz").write_bytes(b"stale")
    res = featurize(trajectory, "--out", out, "--snapshots", "3000", "--block", "2")
    assert "resumed" not in res.stdout
    assert_same_store(out, serial_store)
    assert not folder.exists()


def test_runs_without_mpi4py(trajectory, serial_store, tmp_path):
    """mpi4py made unimportable: a serial run works; under a launcher with 2 ranks it refuses."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "mpi4py.py").write_text("raise ImportError('mpi4py blocked for this test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "nompi.h5"
    featurize(trajectory, "--out", out, "--snapshots", "3000", "--block", "5", env=env)
    assert_same_store(out, serial_store)
    res = subprocess.run([sys.executable, "-m", "dcf", "featurize", str(trajectory), "--out",
                          str(tmp_path / "x.h5"), *ARGS], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **env, "PMI_SIZE": "2", "PMI_RANK": "0"})
    assert res.returncode != 0 and "mpi4py" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.h5").exists()


def test_mpi_error_on_one_rank_is_reported_once(tmp_path, rng):
    """A frame with overlapping atoms: a clear error, no output, no hang, under 2 ranks."""
    if not MPIEXEC.exists() or shutil.which(str(MPIEXEC)) is None:
        pytest.skip("no mpiexec")
    frames = []
    for k in range(6):
        atoms = system_b()
        atoms.calc = SinglePointCalculator(atoms, forces=np.zeros((len(atoms), 3)))
        frames.append(atoms)
    frames[5].positions[1] = frames[5].positions[0]
    write(tmp_path / "bad.extxyz", frames)
    res = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-m", "dcf", "featurize",
                          str(tmp_path / "bad.extxyz"), "--out", str(tmp_path / "bad.h5"),
                          "--block", "1", *ARGS], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert res.stderr.count("bad.extxyz frame 5") == 1 and "overlap" in res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.extxyz"]
