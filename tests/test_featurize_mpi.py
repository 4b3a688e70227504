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


# -- each rank reads its share -----------------------------------------------------------------

SHARE_SCRIPT = """
import sys
import numpy as np
from dcf.parallel import world
comm = world()                       # first, so that ase would use MPI too (and must not here)
import dcf.data.frames as frames

seen = []
original = frames._read_share
def spy(*args, **kwargs):
    result = original(*args, **kwargs)
    seen.append(result)
    return result
frames._read_share = spy

out, cases = sys.argv[1], sys.argv[2:]
for case in cases:
    path, fmt, index, every = case.split("|")
    data = frames.read_frames(path, index, int(every), fmt=fmt or None, comm=comm)
    (done, hashed), error = seen[-1]
    own = np.concatenate([n for _, _, n, _ in done] or [np.zeros(0, np.int64)])
    src = np.concatenate([np.full(len(n), s) for s, _, n, _ in done] or [np.zeros(0, np.int64)])
    pos = np.concatenate([f["positions"] for *_, raw in done for f in raw] or [np.zeros((0, 3))])
    np.savez(f"{out}/{len(seen) - 1}-{comm.rank}.npz", own=own, src=src, pos=pos,
             positions=data.positions, forces=data.forces, cell=data.cell, pbc=data.pbc,
             energy=data.energy, numbers=data.numbers, source_frame=data.source_frame,
             sha=[s["sha256"] for s in data.sources])
"""


def _emt_inputs(tmp_path):
    """The same 7 EMT frames as extxyz, .traj, n2p2 input.data and a folder of two DeePMD
    systems."""
    from ase.io import write as ase_write

    from test_formats import emt_frames, write_deepmd, write_n2p2

    frames = emt_frames(7)
    atoms = []
    for f in frames:
        a = f["atoms"].copy()
        a.calc = SinglePointCalculator(a, energy=f["energy"], forces=f["forces"])
        atoms.append(a)
    ase_write(tmp_path / "f.extxyz", atoms)
    ase_write(tmp_path / "f.traj", atoms)
    write_n2p2(tmp_path / "input.data", frames)
    write_deepmd(tmp_path / "systems" / "a", frames[:3], ["Au", "Cu"])
    write_deepmd(tmp_path / "systems" / "b", frames[3:], ["Au", "Cu"])
    return {"extxyz": tmp_path / "f.extxyz", "traj": tmp_path / "f.traj",
            "n2p2": tmp_path / "input.data", "deepmd": tmp_path / "systems"}


@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec beside {sys.executable}")
def test_each_rank_reads_only_its_share_of_every_format(tmp_path):
    pytest.importorskip("dpdata")
    from dcf.data.frames import read_frames

    inputs = _emt_inputs(tmp_path)
    cases = [(inputs["extxyz"], "", ":", 1), (inputs["extxyz"], "", "1:", 2),
             (inputs["traj"], "", ":", 1), (inputs["n2p2"], "n2p2", "::-1", 1),
             (inputs["deepmd"], "", ":", 1), (inputs["extxyz"], "", "-2", 1)]
    script = tmp_path / "share.py"
    script.write_text(SHARE_SCRIPT)
    res = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, str(script), str(tmp_path),
                          *("|".join(map(str, c)) for c in cases)],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    for c, (path, fmt, index, every) in enumerate(cases):
        serial = read_frames(path, index, every, fmt=fmt or None)
        ranks = [np.load(tmp_path / f"{c}-{r}.npz") for r in range(2)]
        for got in ranks:                    # every rank ends with the serial frames
            for key in ("positions", "forces", "cell", "pbc", "energy", "numbers",
                        "source_frame"):
                np.testing.assert_array_equal(got[key], getattr(serial, key), err_msg=key)
            assert list(got["sha"]) == [s["sha256"] for s in serial.sources]
        # ... but each parsed only its own frames, which together are the serial ones
        own = [(int(s), int(k)) for got in ranks for s, k in zip(got["src"], got["own"])]
        want = list(zip(serial.source.tolist(), serial.source_frame.tolist()))
        assert sorted(own) == sorted(want) and len(set(own)) == len(own), (path, index)
        if len(want) > 1:
            assert all(len(got["own"]) for got in ranks), f"{path} {index}: a rank read nothing"
        for got in ranks:                    # and parsed them as the serial read did
            rows = [want.index((int(s), int(k))) for s, k in zip(got["src"], got["own"])]
            ref = np.concatenate([serial.positions[serial.first_atom[r]:serial.first_atom[r + 1]]
                                  for r in rows] or [np.zeros((0, 3))])
            np.testing.assert_array_equal(got["pos"], ref)


# -- one large frame, cut into blocks of central atoms -------------------------------------------

@pytest.fixture(scope="module")
def large_frame(tmp_path_factory):
    """One 1664-atom frame (system B replicated 2 x 2 x 2, rattled), random forces."""
    atoms = system_b(replicate=2)
    atoms.rattle(0.05, seed=4)
    atoms.calc = SinglePointCalculator(atoms, energy=1.0,
                                       forces=np.random.default_rng(5).normal(size=(1664, 3)))
    path = tmp_path_factory.mktemp("large") / "large.extxyz"
    write(path, atoms)
    return path


LARGE = ["--spec", "mailoa2019-S4", "--test-fraction", "0", "--quiet"]


def _featurize_large(path, out, *args, runner=()):
    res = subprocess.run([*runner, sys.executable, "-m", "dcf", "featurize", str(path),
                          "--out", str(out), *LARGE, *map(str, args)],
                         capture_output=True, text=True, timeout=240,
                         env={**os.environ, "DCF_NUM_THREADS": "1"})
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    return res


def test_atom_blocks_give_the_store_of_one_block(large_frame, tmp_path):
    whole = _featurize_large(large_frame, tmp_path / "whole.h5", "--block-atoms", 100000)
    cut = _featurize_large(large_frame, tmp_path / "cut.h5", "--block-atoms", 300)
    assert "1 frame(s), 1664 atoms" in whole.stdout and "1 frame(s)" in cut.stdout
    assert_same_store(tmp_path / "cut.h5", tmp_path / "whole.h5")


@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec beside {sys.executable}")
def test_one_large_frame_uses_both_ranks_with_the_serial_store(large_frame, tmp_path):
    _featurize_large(large_frame, tmp_path / "serial.h5", "--block-atoms", 100000)
    res = _featurize_large(large_frame, tmp_path / "mpi.h5", "--block-atoms", 300, "--timings",
                           runner=(str(MPIEXEC), "-n", "2"))
    assert "on 2 rank(s)" in res.stdout
    assert_same_store(tmp_path / "mpi.h5", tmp_path / "serial.h5")


@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec beside {sys.executable}")
def test_a_broken_frame_in_the_second_ranks_share_is_named_once(trajectory, tmp_path):
    """Frame 50 of 60 (rank 1 parses it) has a word where a number belongs: one clear error
    naming the file and frame, no hang, no file left."""
    lines = trajectory.read_text().splitlines(keepends=True)
    at = 50 * 210 + 2 + 7                                 # an atom line of frame 50
    lines[at] = lines[at].replace(lines[at].split()[1], "oops", 1)
    bad = tmp_path / "bad.extxyz"
    bad.write_text("".join(lines))
    res = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-m", "dcf", "featurize",
                          str(bad), "--out", str(tmp_path / "bad.h5"), *ARGS],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert res.stderr.count(f"cannot read frame 50 of {bad}") == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.extxyz"]
