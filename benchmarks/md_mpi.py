"""Strong scaling of `dcf md` under MPI: one system of 13,312 atoms (system B repeated
4 x 4 x 4), the same run on 1 and K ranks (`mpiexec -n K dcf md`), process start to exit.

The models are those of `dcf bench` (`dcf.bench.costs`: Table S4, random weights; the cost
does not depend on them): DCF with the covariant head, and B–P. Each run
makes `--steps` Langevin steps in one logged interval; the figure is its ms per step from the
`dcf md` log (the force calls, the integrator and the MPI sums; not the start-up), and the
wall time of the whole command beside it.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/md_mpi.py --runs 3 --out md-mpi.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "DCF_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


def make_inputs(folder: Path, replicate: int) -> tuple[Path, dict]:
    """(structure file, {name: model file}) for the benchmark."""
    from ase.io import write

    from dcf.bench.costs import bp_model, table_s4_model
    from dcf.data.structures import system_b

    atoms = system_b().repeat((replicate,) * 3)
    atoms.rattle(0.02, seed=1)
    structure = folder / f"b{len(atoms)}.extxyz"
    write(structure, atoms)
    models = {"DCF (covariant head)": table_s4_model("covariant"), "B-P": bp_model()}
    files = {}
    for k, (name, model) in enumerate(models.items()):
        files[name] = model.save(folder / f"model{k}.dcf")
    return structure, files


def run_once(model: Path, structure: Path, ranks: int, steps: int, folder: Path) -> dict:
    """{"ms_per_step", "wall_s"} of one `dcf md` run."""
    launcher = [str(BIN / "mpiexec"), "-n", str(ranks)] if ranks > 1 else []
    traj = folder / f"md{ranks}.traj"
    traj.unlink(missing_ok=True)
    traj.with_suffix(".log").unlink(missing_ok=True)
    cmd = [*launcher, str(BIN / "dcf"), "md", str(model), str(structure), "--steps", str(steps),
           "--interval", str(steps), "--temperature", "300", "--seed", "0", "--threads", "1",
           "--traj", str(traj)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD},
                         timeout=1800)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    rows = [line.split() for line in traj.with_suffix(".log").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    return {"ms_per_step": float(rows[-1][-1]), "wall_s": wall}


def measure(structure, models: dict, ranks, steps: int, runs: int, folder: Path) -> dict:
    out = {}
    for name, model in models.items():
        out[name] = {}
        for k in ranks:
            results = [run_once(model, structure, k, steps, folder) for _ in range(runs)]
            ms = [r["ms_per_step"] for r in results]
            out[name][k] = {"ms_per_step_min": min(ms), "ms_per_step_median": statistics.median(ms),
                            "wall_s_median": statistics.median(r["wall_s"] for r in results)}
            print(f"{name:>22s}  {k} rank(s): {min(ms):9.1f} ms/step (min), "
                  f"{statistics.median(ms):9.1f} (median) of {runs}", flush=True)
        base = out[name][1]["ms_per_step_median"]
        for k in ranks:
            out[name][k]["speedup_median"] = base / out[name][k]["ms_per_step_median"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--ranks", type=int, default=2, help="the rank count compared with 1")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--replicate", type=int, default=4, help="system B repeated n x n x n")
    p.add_argument("--out", default=None, help="JSON report")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        structure, models = make_inputs(folder, args.replicate)
        result = measure(structure, models, (1, args.ranks), args.steps, args.runs, folder)
    for name, rows in result.items():
        print(f"{name}: {args.ranks} ranks / 1 rank = {rows[args.ranks]['speedup_median']:.2f}x "
              f"(medians)")
    if args.out:
        Path(args.out).write_text(json.dumps({"steps": args.steps, "runs": args.runs,
                                              "load_average": os.getloadavg(),
                                              "results": result}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
