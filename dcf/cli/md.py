"""`dcf md`: thermostatted molecular dynamics with a DCF or B–P model through ASE.

Writes an ASE trajectory (positions, momenta, forces) and a text log (step, time, T, per-element
T, step time; energies for B–P). Ctrl-C stops after the current interval with the trajectory
intact; `--restart` continues from the trajectory's last frame, appending.

Under `mpiexec -n K` every rank runs the same dynamics and shares each force call (a block of
the central atoms per rank); ASE broadcasts the thermostat's random numbers from rank 0, and
rank 0 alone writes the trajectory and the log.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from dcf.cli._frames import add_format_arguments, read_input

HELP = "thermostatted MD with a model (Langevin, Bussi, Nose-Hoover chain; NVE to diagnose)"


def add_arguments(p) -> None:
    from dcf.dynamics.md import THERMOSTATS
    p.add_argument("model", help="model file (.dcf) from dcf train")
    p.add_argument("structure", help="starting structure (any file ase.io reads, a DeePMD "
                   "system or n2p2 input.data; last frame)")
    add_format_arguments(p)
    p.add_argument("--thermostat", choices=THERMOSTATS, default="langevin",
                   help="langevin (default; local: use it with DCF, whose non-conservative "
                        "forces heat species unevenly), bussi or nose-hoover (global: sound "
                        "with B-P; with DCF they let species sit at different temperatures: "
                        "measured in docs/md.md), nve (diagnostics); "
                        "check a model with `dcf check-md` first")
    p.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    p.add_argument("--steps", type=int, required=True, help="number of MD steps")
    p.add_argument("--timestep", type=float, default=1.0, help="fs (default 1)")
    p.add_argument("--damping", type=float, default=100.0,
                   help="thermostat time constant, fs (default 100; an undertrained DCF "
                        "model may need 5-10 fs Langevin to keep its species near the "
                        "target, see docs/md.md)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of velocities and thermostat (a restart derives the thermostat's "
                        "from it and the step, so no random force is replayed)")
    p.add_argument("--traj", default="md.traj", help="output ASE trajectory (default md.traj)")
    p.add_argument("--log", default=None, help="output log (default: TRAJ with .log)")
    p.add_argument("--interval", type=int, default=10,
                   help="write trajectory and log every N steps (default 10)")
    p.add_argument("--restart", action="store_true",
                   help="continue from the last frame of --traj, appending to it and the log")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads for fingerprints")


def _start(args, traj: Path):
    """The starting atoms and step number: a fresh structure or the trajectory's last frame."""
    from ase.io import read

    from dcf.dynamics.md import thermal_velocities

    if args.restart:
        if not traj.is_file():
            raise SystemExit(f"dcf md: --restart given but {traj} does not exist")
        try:
            atoms = read(traj, index=-1)
        except Exception as err:      # ase raises many kinds for damaged files
            raise SystemExit(f"dcf md: cannot read the last frame of {traj}: {err}") from None
        return atoms, int(atoms.info.get("step", 0))
    if traj.exists():
        raise SystemExit(f"dcf md: {traj} exists; pass --restart to continue it, or remove it")
    atoms = read_input("md", args.structure, -1, args)[0]
    atoms.calc = None
    if args.temperature > 0:
        thermal_velocities(atoms, args.temperature, args.seed)
    return atoms, 0


def run(args) -> int:
    from ase.io.trajectory import Trajectory

    from dcf.dynamics.md import element_temperatures, energy_drift, make_dynamics, thermostat_seed
    from dcf.models import ModelFileError, load_model
    from dcf.parallel import world

    comm = world()                  # before ASE picks its MPI world: mpi4py is then imported
    root = comm.rank == 0

    if args.steps < 0 or args.interval < 1 or args.timestep <= 0:
        raise SystemExit("dcf md: need --steps >= 0, --interval >= 1 and --timestep > 0")
    try:
        model = load_model(args.model)
    except ModelFileError as err:
        raise SystemExit(f"dcf md: {err}") from None
    if args.threads is not None:
        model.set_threads(args.threads)
    model.set_communicator(comm)
    traj_path = Path(args.traj)
    log_path = Path(args.log) if args.log else traj_path.with_suffix(".log")
    atoms, step0 = _start(args, traj_path)
    comm.barrier()                  # every rank has checked for --traj before rank 0 makes it
    try:
        model.spec.check_symbols(atoms.get_chemical_symbols(), args.structure)
    except ValueError as err:
        raise SystemExit(f"dcf md: {err}") from None
    atoms.calc = model.calculator()
    has_energy = "energy" in model.implemented_properties
    if args.thermostat == "nve" and not has_energy and root:
        print("warning: NVE with a DCF model: its forces are not an energy gradient, so nothing "
              "is conserved and the temperature will drift; use a thermostat for production",
              file=sys.stderr)
    dyn = make_dynamics(atoms, args.thermostat, args.temperature, args.timestep, args.damping,
                        thermostat_seed(args.seed, step0))

    elements = list(dict.fromkeys(atoms.get_chemical_symbols()))
    traj = log = None
    if root:
        traj_path.parent.mkdir(parents=True, exist_ok=True)
        traj = Trajectory(str(traj_path), "a" if args.restart else "w", master=True)
        log = open(log_path, "a" if args.restart else "w")
    if root and not args.restart:
        log.write("# step  time_fs  T_K  " + "  ".join(f"T_{el}_K" for el in elements)
                  + ("  E_pot_eV  E_tot_eV" if has_energy else "") + "  ms_per_step\n")

    stop = {"asked": False}

    def ask_stop(signum, frame):
        stop["asked"] = True

    previous = signal.signal(signal.SIGINT, ask_stop)
    times, totals = [], []
    clock = {"t": time.perf_counter(), "step": 0}

    def record():
        step = step0 + dyn.nsteps
        now = time.perf_counter()
        ms = 1000.0 * (now - clock["t"]) / max(dyn.nsteps - clock["step"], 1)
        clock["t"], clock["step"] = now, dyn.nsteps
        atoms.info["step"] = step
        atoms.get_forces()          # cached after a step; computed for the first frame
        temps = element_temperatures(atoms)
        T = atoms.get_temperature()
        row = f"{step:>7d} {step * args.timestep:>10.2f} {T:>8.1f} " + " ".join(
            f"{temps[el]:>8.1f}" for el in elements)
        if has_energy:
            epot = atoms.get_potential_energy()
            etot = epot + atoms.get_kinetic_energy()
            times.append(step * args.timestep)
            totals.append(etot)
            row += f" {epot:>14.6f} {etot:>14.6f}"
        if root:
            log.write(row + f" {ms:>9.3f}\n")
            log.flush()
            traj.write(atoms)
            print(f"\rstep {step:>7d}  T {T:7.1f} K  {ms:7.2f} ms/step", end="", flush=True)

    def stop_asked() -> bool:
        """Ctrl-C on any rank stops all of them after the same step."""
        return bool(comm.sum([stop["asked"]])[0])

    try:
        if not args.restart:
            record()
        done = 0
        interrupted = False
        while done < args.steps and not interrupted:
            n = min(args.interval, args.steps - done)
            dyn.run(n)
            done += n
            record()
            interrupted = stop_asked()
    finally:
        signal.signal(signal.SIGINT, previous)
        if root:
            traj.close()
            log.close()
    if not root:
        return 130 if interrupted else 0
    print()
    if interrupted:
        print(f"interrupted after {done} step(s); continue with --restart. wrote {traj_path}")
        return 130
    if args.thermostat == "nve" and has_energy and len(times) > 2:
        drift = energy_drift(times, totals, len(atoms))
        print(f"NVE energy drift: {drift:.4f} meV/atom/ps over {times[-1] - times[0]:.0f} fs")
    print(f"wrote {traj_path} and {log_path}")
    return 0
