"""Faults under a real `mpiexec -n 2 dcf featurize`: an exception of any type on one rank ends
every rank within seconds, with one message from the failing rank, and leaves no file behind.

The fault is injected by a small runner that wraps one library function on one rank, then
runs the real command line (`dcf.cli.main`) on every rank.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from dcf.data.pipeline import checkpoint_dir
from dcf.data.structures import random_packing
from test_errors import files  # noqa: F401 - the fixture

MPIEXEC = Path(sys.executable).parent / "mpiexec"
ARGS = ["--spec", "mailoa2019-S4", "--block", "1", "--quiet"]

RUNNER = """
import sys
import dcf.data.pipeline as pipeline
from dcf.cli import main
from dcf.parallel import world

fault, rank, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
original, calls = pipeline.{target}, []

def faulty(*args, **kwargs):
    calls.append(1)
    if world().rank == rank and len(calls) > after:
        if fault == "OSError":
            raise OSError(28, "No space left on device", "/scratch/block.npz")
        if fault == "MemoryError":
            raise MemoryError("cannot allocate 48 GiB")
        if fault == "KeyError":
            raise KeyError("a bug")
        raise KeyboardInterrupt
    return original(*args, **kwargs)

pipeline.{target} = faulty
sys.exit(main(sys.argv[4:]))
"""


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    """8 frames of a 26-atom Li-P-O packing with random forces."""
    rng = np.random.default_rng(1)
    base = random_packing({"Li": 8, "P": 4, "O": 14}, [8.0, 8.0, 8.0], 1.6, seed=2)
    frames = []
    for k in range(8):
        atoms = base.copy()
        atoms.rattle(0.05, seed=k)
        atoms.calc = SinglePointCalculator(atoms, forces=rng.normal(size=(len(atoms), 3)))
        frames.append(atoms)
    path = tmp_path_factory.mktemp("traj") / "lipo.extxyz"
    write(path, frames)
    return path


def run_with_fault(tmp_path, fault, rank, args, n=2, after=1, target="_featurize_block",
                   timeout=90):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(target=target))
    launcher = [str(MPIEXEC), "-n", str(n)] if n > 1 else []
    return subprocess.run([*launcher, sys.executable, str(script), fault, str(rank), str(after),
                           "featurize", *map(str, args), *ARGS], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "DCF_NUM_THREADS": "1"})


def dcf_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dcf featurize")]


needs_mpiexec = pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec beside python")


@needs_mpiexec
@pytest.mark.parametrize("fault, rank, words", [
    ("OSError", 1, "/scratch/block.npz: No space left"),
    ("OSError", 0, "/scratch/block.npz: No space left"),
    ("MemoryError", 1, "out of memory (cannot allocate"),
    ("KeyError", 1, "internal error KeyError")])
def test_a_fault_on_one_rank_ends_both_with_one_message(trajectory, tmp_path, fault, words,
                                                        rank):
    out = tmp_path / "features.h5"
    out.write_bytes(b"an older store, to be kept")
    res = run_with_fault(tmp_path, fault, rank, [trajectory, "--out", out])
    assert res.returncode != 0
    lines = dcf_lines(res.stderr)
    assert len(lines) == 1, res.stderr
    assert f"rank {rank} of 2: {words}" in lines[0]
    assert "Traceback" not in res.stderr
    assert out.read_bytes() == b"an older store, to be kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.h5", "runner.py"]


@needs_mpiexec
def test_a_fault_while_rank0_writes_the_store_ends_both(trajectory, tmp_path):
    out = tmp_path / "features.h5"
    res = run_with_fault(tmp_path, "OSError", 0, [trajectory, "--out", out], after=0,
                         target="_assemble")
    assert res.returncode != 0
    lines = dcf_lines(res.stderr)
    assert len(lines) == 1 and "rank 0 of 2: /scratch/block.npz: No space left" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runner.py"]


@pytest.mark.slow
@needs_mpiexec
def test_interrupt_on_one_rank_ends_both_and_keeps_the_blocks(trajectory, tmp_path):
    out = tmp_path / "features.h5"
    res = run_with_fault(tmp_path, "KeyboardInterrupt", 1, [trajectory, "--out", out])
    assert res.returncode == 130, res.stderr
    assert "interrupted; the finished blocks are kept" in res.stderr
    assert "Traceback" not in res.stderr
    blocks = sorted(checkpoint_dir(out).glob("block-*.npz"))
    assert 1 <= len(blocks) < 8 and not out.exists()

    # a damaged block is named, with what to do; nothing is written
    blocks[0].write_bytes(blocks[0].read_bytes()[:100])
    res = subprocess.run([sys.executable, "-m", "dcf", "featurize", str(trajectory), "--out",
                          str(out), *ARGS], capture_output=True, text=True, timeout=90)
    assert res.returncode != 0
    assert f"checkpoint block {blocks[0]} is damaged" in res.stderr
    assert "run again with --fresh" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()
    res = subprocess.run([sys.executable, "-m", "dcf", "featurize", str(trajectory), "--out",
                          str(out), *ARGS, "--fresh"], capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr
    assert out.is_file() and not checkpoint_dir(out).exists()


@pytest.mark.slow
def test_ctrl_c_in_featurize_keeps_the_blocks_and_says_how_to_resume(tmp_path):
    """A real SIGINT to a serial `dcf featurize`: exit 130, one message, no traceback."""
    import signal
    import time

    from dcf.data.structures import system_b

    rng = np.random.default_rng(0)
    frames = []
    for k in range(60):             # 1664-atom frames: seconds of work to interrupt
        atoms = system_b().repeat((2, 2, 2))
        atoms.rattle(0.05, seed=k)
        atoms.calc = SinglePointCalculator(atoms, forces=rng.normal(size=(len(atoms), 3)))
        frames.append(atoms)
    write(tmp_path / "b.extxyz", frames)
    out = tmp_path / "b.h5"
    folder = checkpoint_dir(out)
    whole = ["--block-atoms", "100000"]      # one block per frame
    proc = subprocess.Popen([sys.executable, "-m", "dcf", "featurize", str(tmp_path / "b.extxyz"),
                             "--out", str(out), *ARGS, *whole], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # Ctrl-C's default action, as a terminal gives it, whatever the
                            # test runner's own disposition is
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not list(folder.glob("block-*.npz")):
            assert proc.poll() is None, "finished before it could be interrupted"
            assert time.monotonic() < deadline, "no checkpoint blocks appeared"
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.strip() == (f"dcf featurize: interrupted; the finished blocks are kept in "
                              f"{folder}: run the same command again to resume")
    done = len(list(folder.glob("block-*.npz")))
    assert 1 <= done < 60 and not out.exists()
    res = subprocess.run([sys.executable, "-m", "dcf", "featurize", str(tmp_path / "b.extxyz"),
                          "--out", str(out), *ARGS, *whole], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and f"{done} of 60 blocks resumed" in res.stdout


@needs_mpiexec
def test_md_errors_under_mpiexec_are_printed_once(files, tmp_path):
    """`mpiexec -n 2 dcf md`: a refused output, a refused start and a runaway stop end both
    ranks with one message from rank 0 and no MPI abort."""
    from ase.io import read

    def md(structure, *options):
        return subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-m", "dcf", "md",
                               str(files / "bp.dcf"), str(files / structure), "--interval", "5",
                               "--seed", "1", *map(str, options)], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "DCF_NUM_THREADS": "1"})

    traj = tmp_path / "md.traj"
    cases = [(md("init.extxyz", "--steps", 5, "--traj", files / "init.extxyz"),
              "is the same file as structure"),
             (md("close.extxyz", "--steps", 5, "--traj", traj), "are 0.300 A apart"),
             (md("init.extxyz", "--steps", 30, "--traj", traj, "--max-temperature", 270),
              "above --max-temperature 270 K; stopped")]
    for res, words in cases:
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("dcf md") == 1 and words in res.stderr, res.stderr
        assert "Abort" not in res.stderr and "Traceback" not in res.stderr
    assert [f.info["step"] for f in read(traj, ":")] == [0]
