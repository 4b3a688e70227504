"""Multiple time stepping through i-PI: DCF as the fast force, B–P as the slow correction
(drivers/ipi-mts.xml), against B–P alone. A reproducible measurement, not a test.

For each setting a real i-PI server runs NVT (SVR thermostat, tau 100 fs) on the last frame of
the data, with `dcf ipi` drivers over UNIX sockets (one per model). Measured: the drift of
i-PI's conserved quantity (which includes the heat the thermostat took out, so it measures the
integrator's and the forces' non-conservative work), as the least-squares slope in
meV/atom/ps; the wall time per simulated ps between the first and the last record (i-PI's
start-up excluded); the force calls per simulated ps of each model.

Run (models from `dcf train`, e.g. as scripts/main_job.py trains them):
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ipi_mts.py --bp bp.dcf --dcf dcf.dcf \\
      --data dcf/data/li4p2o7_xtb_3000K.extxyz --temperature 3000 --ps 0.5 --out mts.json
"""
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
from ase.io import read, write

from dcf.dynamics.md import energy_drift

FORCE = """  <ffsocket name="{name}" mode="unix" pbc="false">
    <address>{address}</address><latency>1e-4</latency>
  </ffsocket>
"""

INPUT = """<simulation verbosity="low">
  <output prefix="run">
    <properties stride="{stride}" filename="out">
      [ step, time{{picosecond}}, conserved{{electronvolt}}, temperature{{kelvin}} ]
    </properties>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>27182</seed></prng>
{sockets}  <system>
    <initialize nbeads="1">
      <file mode="ase">init.extxyz</file>
      <velocities mode="thermal" units="kelvin">{T}</velocities>
    </initialize>
    <forces>
{forces}    </forces>
    <motion mode="dynamics">
      <dynamics mode="nvt">
        <timestep units="femtosecond">{dt}</timestep>
{nmts}        <thermostat mode="svr"><tau units="femtosecond">100</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units="kelvin">{T}</temperature></ensemble>
  </system>
</simulation>
"""

# (label, outer time step fs, inner steps per outer step or None for B–P alone)
SETTINGS = [("B-P 0.25 fs", 0.25, None), ("B-P 0.5 fs", 0.5, None), ("B-P 1 fs", 1.0, None),
            ("MTS 1 fs / 2", 1.0, 2), ("MTS 2 fs / 4", 2.0, 4), ("MTS 2 fs / 8", 2.0, 8),
            ("MTS 3 fs / 6", 3.0, 6)]


def ipi_input(dt: float, inner: int | None, steps: int, T: float, stride: int,
              addresses: dict) -> str:
    """i-PI input: B–P alone, or drivers/ipi-mts.xml's split F = F_DCF + (F_BP - F_DCF)."""
    sockets = "".join(FORCE.format(name=n, address=a) for n, a in addresses.items())
    if inner is None:
        forces, nmts = '      <force forcefield="bp-slow"/>\n', ""
    else:
        forces = ('      <force forcefield="bp-slow"><mts_weights>[1, 0]</mts_weights></force>\n'
                  '      <force forcefield="dcf-fast"><mts_weights>[-1, 1]</mts_weights>'
                  '</force>\n')
        nmts = f"        <nmts>[1, {inner}]</nmts>\n"
    return INPUT.format(stride=stride, steps=steps, sockets=sockets, T=T, forces=forces,
                        dt=dt, nmts=nmts)


def run_setting(ipi: str, models: dict, atoms, dt: float, inner, ps: float, T: float) -> dict:
    steps = int(round(1000.0 * ps / dt))
    stride = max(1, int(round(5.0 / dt)))              # a record every ~5 fs
    tag = uuid.uuid4().hex[:8]
    addresses = {"bp-slow": f"mts-bp-{tag}"}
    if inner is not None:
        addresses["dcf-fast"] = f"mts-dcf-{tag}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write(tmp / "init.extxyz", atoms)
        (tmp / "input.xml").write_text(ipi_input(dt, inner, steps, T, stride, addresses))
        server = subprocess.Popen([ipi, "input.xml"], cwd=tmp, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.STDOUT)
        drivers = []
        stamps = {}
        try:
            for name, address in addresses.items():
                model = models["bp" if name == "bp-slow" else "dcf"]
                drivers.append(subprocess.Popen(
                    [sys.executable, "-m", "dcf", "ipi", str(model), "--structure",
                     "init.extxyz", "--unix", address, "--threads", "1"], cwd=tmp,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            out = tmp / "run.out"
            deadline = time.monotonic() + 900
            while server.poll() is None and time.monotonic() < deadline:
                n = len(data_lines(out))
                if n >= 2 and "first" not in stamps:
                    stamps["first"], stamps["n_first"] = time.perf_counter(), n
                time.sleep(0.05)
            stamps["last"] = time.perf_counter()
            rows = np.array([list(map(float, line.split())) for line in data_lines(out)])
        finally:
            for p in [server, *drivers]:
                if p.poll() is None:
                    p.kill()
                p.wait()
            for a in addresses.values():
                Path(f"/tmp/ipi_{a}").unlink(missing_ok=True)
    t_fs, conserved, temp = 1000.0 * rows[:, 1], rows[:, 2], rows[:, 3]
    done_fs = t_fs[-1] - t_fs[stamps["n_first"] - 1]
    calls = {"bp": 1000.0 / dt, "dcf": 0.0 if inner is None else 1000.0 / dt * inner}   # nominal
    return {"dt_fs": dt, "inner": inner, "inner_dt_fs": dt / inner if inner else dt,
            "steps": steps, "simulated_fs": float(t_fs[-1]),
            "drift_meV_atom_ps": energy_drift(t_fs, conserved, len(atoms)),
            "mean_T_K": float(temp[len(temp) // 2:].mean()),
            "wall_s_per_ps": (stamps["last"] - stamps["first"]) / done_fs * 1000.0,
            "bp_calls_per_ps": calls["bp"], "dcf_calls_per_ps": calls["dcf"],
            "completed": bool(t_fs[-1] >= 0.99 * 1000 * ps)}


def data_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [ln for ln in path.read_text().splitlines()
            if ln.strip() and not ln.startswith("#") and len(ln.split()) == 4]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bp", required=True)
    p.add_argument("--dcf", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--temperature", type=float, default=3000.0)
    p.add_argument("--ps", type=float, default=0.5, help="simulated ps per setting")
    p.add_argument("--only", default=None, help="comma-separated labels of SETTINGS to run")
    p.add_argument("--out", default="mts.json")
    args = p.parse_args()
    ipi = shutil.which("i-pi", path=os.path.dirname(sys.executable)) or shutil.which("i-pi")
    if ipi is None:
        raise SystemExit("the i-pi command is not installed (pip install ipi)")
    atoms = read(args.data, index=-1)
    models = {"bp": Path(args.bp).resolve(), "dcf": Path(args.dcf).resolve()}
    chosen = SETTINGS if args.only is None else \
        [s for s in SETTINGS if s[0] in args.only.split(",")]
    results = []
    print(f"{'setting':<14} {'drift meV/atom/ps':>18} {'<T> K':>7} {'wall s/ps':>10} "
          f"{'B-P calls/ps':>13} {'DCF calls/ps':>13}")
    for label, dt, inner in chosen:
        r = {"setting": label, **run_setting(ipi, models, atoms, dt, inner, args.ps,
                                             args.temperature)}
        results.append(r)
        print(f"{label:<14} {r['drift_meV_atom_ps']:>18.2f} {r['mean_T_K']:>7.0f} "
              f"{r['wall_s_per_ps']:>10.1f} {r['bp_calls_per_ps']:>13.0f} "
              f"{r['dcf_calls_per_ps']:>13.0f}" + ("" if r["completed"] else "  (incomplete)"),
              flush=True)
    Path(args.out).write_text(json.dumps({"data": args.data, "T_K": args.temperature,
                                          "ps": args.ps, "results": results}, indent=1))


if __name__ == "__main__":
    main()
