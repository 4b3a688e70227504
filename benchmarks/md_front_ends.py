"""Time per MD step of DCF and B–P through ASE and through i-PI (system B, Table S4 models).

ASE: Langevin steps of `dcf.dynamics.md.make_dynamics` with the model's calculator, in this
process. i-PI: a real `i-pi` server (NVT, SVR thermostat) and `dcf.dynamics.ipi.serve` in this
process over a UNIX socket; the time per step is the spacing of the driver's force calls, so it
includes the server's own work per step. One thread; weights are random (cost does not depend
on them).

Run: .venv/bin/python benchmarks/md_front_ends.py [--out out/md_front_ends.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from ase.io import write

from dcf.bench.costs import bp_model, summarize, table_s4_model
from dcf.dynamics.ipi import connect, serve
from dcf.dynamics.md import make_dynamics, thermal_velocities
from dcf.data.structures import system_b

IPI_INPUT = """<simulation verbosity="low">
  <output prefix="sim"><properties stride="1000" filename="out">[ step ]</properties></output>
  <total_steps>{steps}</total_steps>
  <prng><seed>1</seed></prng>
  <ffsocket name="dcf" mode="unix" pbc="false"><address>{address}</address>
    <latency>1e-4</latency></ffsocket>
  <system>
    <initialize nbeads="1"><file mode="ase">init.extxyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities></initialize>
    <forces><force forcefield="dcf"/></forces>
    <motion mode="dynamics"><dynamics mode="nvt"><timestep units="femtosecond">0.5</timestep>
      <thermostat mode="svr"><tau units="femtosecond">100</tau></thermostat></dynamics></motion>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
  </system>
</simulation>
"""


def ase_step_seconds(model, atoms, steps: int) -> np.ndarray:
    """Seconds of each of `steps` Langevin steps after one warm-up step."""
    atoms = atoms.copy()
    atoms.calc = model.calculator()
    thermal_velocities(atoms, 300.0, seed=0)
    dyn = make_dynamics(atoms, "langevin", 300.0, timestep=0.5, damping=100.0, seed=0)
    dyn.run(1)
    stamps = [time.perf_counter()]
    dyn.attach(lambda: stamps.append(time.perf_counter()), interval=1)
    dyn.run(steps)
    return np.diff(stamps)[1:]          # the first stamp of attach is at the start


def ipi_step_seconds(model, atoms, steps: int) -> np.ndarray:
    """Seconds between consecutive force calls of a real i-PI NVT run."""
    ipi = shutil.which("i-pi", path=os.path.dirname(sys.executable))
    if ipi is None:
        raise SystemExit("the i-pi command is not installed (pip install ipi)")
    address = f"dcf-bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "init.extxyz", atoms)
        (Path(tmp) / "input.xml").write_text(IPI_INPUT.format(steps=steps, address=address))
        server = subprocess.Popen([ipi, "input.xml"], cwd=tmp, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        stamps = []
        try:
            sock = connect(unix=address, wait=60)
            serve(model, atoms, sock, on_step=lambda n: stamps.append(time.perf_counter()))
            sock.close()
            server.wait(timeout=60)
        finally:
            if server.poll() is None:
                server.kill()
            Path(f"/tmp/ipi_{address}").unlink(missing_ok=True)
    return np.diff(stamps)[2:]          # skip i-PI's start-up calls


def stats(seconds: np.ndarray, n_atoms: int) -> dict:
    """Per-step figures in ms and us/atom/step, from `dcf.bench.costs.summarize`."""
    t = summarize(seconds, n_atoms)
    return {"n_steps": t["rounds"], "median_ms": 1e3 * t["median"], "iqr_ms": 1e3 * t["iqr"],
            "min_ms": 1e3 * t["min"], "us_per_atom_step": t["median_us_per_atom"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/md_front_ends.json")
    p.add_argument("--steps", type=int, default=60, help="steps at 208 atoms (8x fewer at 1664)")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    models = {"DCF": table_s4_model("paper"), "B-P": bp_model()}
    rows = []
    for replicate in (1, 2):
        atoms = system_b(replicate=replicate, seed=0)
        steps = max(args.steps // replicate ** 3, 8)
        for name, model in models.items():
            for front, timer in (("ASE", ase_step_seconds), ("i-PI", ipi_step_seconds)):
                row = {"model": name, "front_end": front, "n_atoms": len(atoms),
                       **stats(timer(model, atoms, steps), len(atoms))}
                rows.append(row)
                print(f"{name:4s} {front:5s} {len(atoms):5d} atoms: "
                      f"{row['median_ms']:8.2f} ms/step "
                      f"(IQR {row['iqr_ms']:.2f}, min {row['min_ms']:.2f}, {row['n_steps']} steps)"
                      f"  {row['us_per_atom_step']:7.1f} us/atom/step", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
