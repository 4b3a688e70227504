"""One MD step of DCF inside LAMMPS (`dcf.dynamics.lammps`, fix external) on system B and its
replicas, at 1 rank (in this process) and 2 ranks (`mpiexec -n 2 benchmarks/lammps_md.py`,
LAMMPS's domain decomposition), random Table S4 networks (covariant head), LAMMPS Langevin
300 K, 1 fs. The same model through ASE and the classical potential in LAMMPS's loop are in
test_bench_md.py, on the same systems.

At 1 rank extra_info records the bare force call (`model.forces` on the ase.Atoms) and the
share of the step spent in the callback, so that coupling overhead = step / force call - 1.
At 2 ranks pytest-benchmark times the whole job (start-up included): the time per step is
extra_info["step_seconds"] (median over rounds, measured inside the job), with the peak
memory of each rank in extra_info["max_rss_mib_per_rank"].

Run: .venv/bin/python -m pytest benchmarks/test_bench_lammps.py --benchmark-only
     [--replicates 4,8]   (13,312 and 106,496 atoms)
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import rounds_for, tag
from dcf.bench import report as q
from dcf.bench.costs import LammpsModelMD, lammps_missing, table_s4_model

ROUND_SECONDS = 0.5
MD_IN_LAMMPS = q.MD_STEP.format(ff=f"{q.FF_DCF_COVARIANT} in LAMMPS, 1 rank")
HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _needs_lammps():
    reason = lammps_missing()
    if reason:
        pytest.skip(reason)


def test_lammps_md_step_one_rank(benchmark, request, atoms):
    model = table_s4_model("covariant")
    start = time.perf_counter()
    model.forces(atoms)
    force_call = time.perf_counter() - start
    md = LammpsModelMD(atoms, model)
    start = time.perf_counter()
    md.run(1)
    per_step = time.perf_counter() - start
    steps = max(1, min(100, int(ROUND_SECONDS / per_step)))
    tag(benchmark, MD_IN_LAMMPS, len(atoms), steps=steps, ranks=1,
        integrator="LAMMPS fix nve + fix langevin 300 K, 1 fs")
    calls, seconds = md.coupling.calls, md.coupling.seconds
    benchmark.pedantic(md.run, args=(steps,), rounds=rounds_for(request.config, steps * per_step))
    benchmark.extra_info["callback_seconds"] = ((md.coupling.seconds - seconds)
                                                / (md.coupling.calls - calls))
    benchmark.extra_info["bare_force_call_seconds"] = force_call
    md.close()


def test_lammps_md_step_two_ranks(benchmark, tmp_path, atoms):
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    if mpiexec is None:
        pytest.skip("mpiexec not found (pip install mpich)")
    replicate = round((len(atoms) / 208) ** (1 / 3))
    out = tmp_path / "lammps_md.json"
    cmd = [mpiexec, "-n", "2", sys.executable, str(HERE / "lammps_md.py"), "--replicate",
           str(replicate), "--steps", "3", "--rounds", "3", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    benchmark.group = f"MD step: DCF in LAMMPS, 2 ranks ({len(atoms)} atoms)"
    benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"check": True, "env": env,
                                                            "capture_output": True},
                       rounds=1)
    record = json.loads(out.read_text())
    benchmark.extra_info.update(n_atoms=len(atoms), ranks=2,
                                step_seconds=record["lammps_step"]["median"],
                                us_per_atom_step=record["lammps_step"]["median_us_per_atom"],
                                callback_seconds_rank0=record["callback_seconds_rank0"],
                                max_rss_mib_per_rank=record["max_rss_mib_per_rank"])
