"""Time per MD step of a dcf model inside LAMMPS (fix external), on the ranks of this job.

    [mpiexec -n K] .venv/bin/python benchmarks/lammps_md.py --replicate 4 [--model dcf|bp]
        [--steps 5] [--rounds 3] [--compare] [--classical] [--out FILE.json]

System B replicated n^3 times (13,312 atoms for 4, 106,496 for 8), random Table S4 networks
(the cost does not depend on the weights), LAMMPS Langevin 300 K, 1 fs. Records per round
the seconds per step, the share of the step spent in the dcf callback (the rest is LAMMPS:
integrator, thermostat, communication of the ghost atoms), the peak memory (max RSS) of
every rank, and on one rank with --compare: the bare force call (`model.forces` on the
whole ase.Atoms), one Langevin step through ASE and the classical Li-P-O potential in
LAMMPS's own loop (--classical). Rank 0 prints (and writes with --out) a JSON record.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from dcf.bench.costs import (LammpsModelMD, LammpsNativeMD, bp_model, md_step_cost, summarize,
                             table_s4_model)
from dcf.data.structures import system_b
from dcf.files import write_atomic
from dcf.parallel import world


def _per_step(run, steps: int, rounds: int, comm) -> np.ndarray:
    out = np.empty(rounds)
    for r in range(rounds):
        comm.barrier()
        start = time.perf_counter()
        run(steps)
        out[r] = (time.perf_counter() - start) / steps
    return comm.bcast(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicate", type=int, default=4)
    p.add_argument("--model", choices=("dcf", "bp"), default="dcf")
    p.add_argument("--steps", type=int, default=5, help="MD steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compare", action="store_true",
                   help="one rank only: also the bare force call and the step through ASE")
    p.add_argument("--classical", action="store_true",
                   help="one rank only: also the classical potential in LAMMPS's own loop")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    comm = world()
    atoms = system_b(replicate=args.replicate, seed=0)
    model = table_s4_model("covariant") if args.model == "dcf" else bp_model()
    n = len(atoms)
    md = LammpsModelMD(atoms, model)
    md.run(1)                                       # warm-up
    calls, seconds = md.coupling.calls, md.coupling.seconds
    per_step = _per_step(md.run, args.steps, args.rounds, comm)
    callback = (md.coupling.seconds - seconds) / (md.coupling.calls - calls)
    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0      # MiB
    ranks_rss = [mine] if comm.size == 1 else _gather(comm, mine)
    record = {"model": args.model, "n_atoms": n, "ranks": comm.size, "steps": args.steps,
              "lammps_step": summarize(per_step, n),
              "callback_seconds_rank0": callback,
              "max_rss_mib_per_rank": ranks_rss}
    md.close()
    if args.compare and comm.size == 1:
        force = np.array([_seconds(model.forces, atoms) for _ in range(args.rounds)])
        record["bare_force_call"] = summarize(force, n)
        record["coupling_overhead"] = record["lammps_step"]["median"] / float(
            np.median(force)) - 1.0
        record["ase_step"] = md_step_cost(atoms, model.calculator(), steps=args.steps,
                                          repeats=args.rounds, warmup=1)
    if args.classical and comm.size == 1:
        native = LammpsNativeMD(atoms)
        native.run(1)
        record["classical_lammps_step"] = summarize(
            _per_step(native.run, 10 * args.steps, args.rounds, comm), n)
        native.close()
    if comm.rank == 0:
        text = json.dumps(record, indent=1)
        print(text)
        if args.out:
            write_atomic(args.out, lambda tmp: Path(tmp).write_text(text + "\n"))


def _seconds(fn, *a) -> float:
    start = time.perf_counter()
    fn(*a)
    return time.perf_counter() - start


def _gather(comm, value: float) -> list[float]:
    values = np.zeros(comm.size)
    values[comm.rank] = value
    return [float(v) for v in comm.sum(values)]


if __name__ == "__main__":
    main()
