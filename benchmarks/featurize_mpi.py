"""End-to-end `dcf featurize` under 1 and K MPI ranks: process start to exit, reading included.

Two inputs, made here: 200 frames of system B (208 atoms, rattled by 0.05 A, random forces and
energies; as docs/data.md) and one frame of system B repeated 5 x 5 x 4 (20,800 atoms, cut
into blocks of central atoms). Each command runs `--runs` times per rank count; the report
gives min and median wall time, the speed-up of the medians and of the minima, and rank 0's
per-phase seconds (`--timings`) of the fastest run. Start-up (interpreter, imports, MPI_Init)
and exit are the wall time minus the phases.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/featurize_mpi.py --runs 5 --out mpi.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def make_inputs(folder: Path) -> dict:
    """{name: (path, extra featurize arguments)} of the two benchmark inputs."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from dcf.data.structures import system_b

    rng = np.random.default_rng(0)
    frames = []
    for k in range(200):
        atoms = system_b()
        atoms.rattle(0.05, seed=k)
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()),
                                           forces=rng.normal(size=(len(atoms), 3)))
        frames.append(atoms)
    write(folder / "b200.extxyz", frames)
    big = system_b().repeat((5, 5, 4))
    big.rattle(0.05, seed=1)
    big.calc = SinglePointCalculator(big, energy=0.0, forces=rng.normal(size=(len(big), 3)))
    write(folder / "b20800.extxyz", big)
    return {"200 frames x 208 atoms": (folder / "b200.extxyz", []),
            "1 frame x 20800 atoms": (folder / "b20800.extxyz", ["--test-fraction", "0"])}


def run_once(path: Path, extra: list, ranks: int, out: Path) -> tuple[float, dict]:
    """(wall seconds, rank 0's phases) of one `dcf featurize`."""
    launcher = [str(BIN / "mpiexec"), "-n", str(ranks)] if ranks > 1 else []
    cmd = [*launcher, str(BIN / "dcf"), "featurize", str(path), "--out", str(out), "--quiet",
           "--threads", "1", "--fresh", "--timings", *extra]
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr}")
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("phases"))
    phases = {k: float(v) for k, v in re.findall(r"(\w+) ([0-9.]+) s", line)}
    return wall, phases


def measure(inputs: dict, rank_counts, runs: int, folder: Path) -> dict:
    """Per input and rank count: walls, min, median, phases of the fastest run."""
    report = {}
    for name, (path, extra) in inputs.items():
        report[name] = {}
        for ranks in rank_counts:
            results = [run_once(path, extra, ranks, folder / f"out{ranks}.h5")
                       for _ in range(runs)]
            walls = [w for w, _ in results]
            best = min(range(runs), key=lambda i: walls[i])
            phases = results[best][1]
            report[name][ranks] = {"walls": walls, "min": min(walls),
                                   "median": statistics.median(walls), "phases": phases,
                                   "startup_and_exit": walls[best] - sum(phases.values())}
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--ranks", type=int, default=2, help="the rank count compared with 1")
    p.add_argument("--out", default=None, help="JSON report")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        report = measure(make_inputs(folder), (1, args.ranks), args.runs, folder)
    load = os.getloadavg()
    print(f"load average before the last run: {load[0]:.2f} (cores: {os.cpu_count()})")
    for name, by_ranks in report.items():
        one, k = by_ranks[1], by_ranks[args.ranks]
        print(f"{name}: 1 rank min {one['min']:.2f} s median {one['median']:.2f} s; "
              f"{args.ranks} ranks min {k['min']:.2f} s median {k['median']:.2f} s; "
              f"speed-up {one['median'] / k['median']:.2f}x (medians), "
              f"{one['min'] / k['min']:.2f}x (minima)")
        for ranks, r in by_ranks.items():
            print(f"  {ranks} rank(s), fastest run: start-up+exit {r['startup_and_exit']:.3f} s, "
                  + ", ".join(f"{ph} {v:.3f} s" for ph, v in r["phases"].items()))
    if args.out:
        Path(args.out).write_text(json.dumps({"load": load, "report": report}, indent=1))


if __name__ == "__main__":
    main()
