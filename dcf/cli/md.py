"""`dcf md`: thermostatted molecular dynamics with a DCF or B–P model through ASE.

Writes an ASE trajectory (positions, momenta, forces) and a text log (step, time, T, per-element
T, step time; energies for B–P). Ctrl-C stops after the current interval with the trajectory
intact; `--restart` continues from the trajectory's last frame, appending.

The run is watched: a step with non-finite or exploding forces (--max-force), atoms closer
than --min-distance, or a temperature above --max-temperature stops it with the step and the
reason; the trajectory then ends at its last good frame, which --restart continues from.

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
from dcf.cli._model import add_precision_argument, set_precision

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
    add_precision_argument(p)
    p.add_argument("--max-force", type=float, default=50.0, metavar="EV_PER_A",
                   help="stop when an atomic force exceeds this, eV/A (default 50)")
    p.add_argument("--min-distance", type=float, default=0.5, metavar="A",
                   help="refuse a start, and stop a run, with atoms closer than this, A "
                        "(default 0.5)")
    p.add_argument("--max-temperature", type=float, default=None, metavar="K",
                   help="stop when the kinetic temperature exceeds this, K (default "
                        "5 T + 2000)")


def _start(args, traj: Path, log: Path):
    """The starting atoms and step number: a fresh structure or the trajectory's last frame."""
    import numpy as np
    from ase.io import read

    from dcf.dynamics.md import check_start, thermal_velocities

    if args.restart:
        if not traj.is_file():
            raise SystemExit(f"dcf md: --restart given but {traj} does not exist")
        try:
            atoms = read(traj, index=-1)
        except Exception as err:      # ase raises many kinds for damaged files
            raise SystemExit(f"dcf md: cannot read the last frame of {traj}: {err}") from None
        return atoms, int(atoms.info.get("step", 0))
    for path, what in ((traj, "--traj"), (log, "--log")):
        if path.exists():
            raise SystemExit(f"dcf md: {what} {path} exists; pass --restart to continue the "
                             f"run, or remove it")
    atoms = read_input("md", args.structure, -1, args)[0]
    atoms.calc = None
    check_start(atoms, args.min_distance, args.structure)
    if args.temperature > 0:
        thermal_velocities(atoms, args.temperature, args.seed)
    else:
        atoms.set_momenta(np.zeros((len(atoms), 3)))      # from rest, whatever the file had
    return atoms, 0


def run(args) -> int:
    from ase.io.trajectory import Trajectory

    from dcf.cli._paths import refuse_overwriting_inputs
    from dcf.dynamics.md import (Runaway, Watch, check_settings, element_temperatures,
                                 energy_drift, make_dynamics, out_of_band, thermostat_seed,
                                 watch_dynamics)
    from dcf.models import ModelFileError, load_model
    from dcf.parallel import world

    comm = world()                  # before ASE picks its MPI world: mpi4py is then imported
    root = comm.rank == 0

    if args.steps < 0 or args.interval < 1:
        raise SystemExit("dcf md: need --steps >= 0 and --interval >= 1")
    check_settings(args.thermostat, args.temperature, args.timestep, args.damping)
    max_temperature = (5 * args.temperature + 2000 if args.max_temperature is None
                       else args.max_temperature)
    watch = Watch(args.max_force, args.min_distance, max_temperature)
    for name in ("max_force", "min_distance", "max_temperature"):
        if not getattr(watch, name) > 0:
            raise SystemExit(f"dcf md: --{name.replace('_', '-')} must be > 0")
    traj_path = Path(args.traj)
    log_path = Path(args.log) if args.log else traj_path.with_suffix(".log")
    refuse_overwriting_inputs([("model", args.model), ("structure", args.structure)],
                              [("--traj", traj_path), ("--log", log_path)])
    try:
        model = load_model(args.model)
    except ModelFileError as err:
        raise SystemExit(f"dcf md: {err}") from None
    if args.threads is not None:
        model.set_threads(args.threads)
    set_precision(model, args.precision, "md")
    model.set_communicator(comm)
    atoms, step0 = _start(args, traj_path, log_path)
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

    if not args.restart:            # a start that goes wrong at once writes nothing
        reason = watch.problem(atoms)
        if reason is not None:
            raise Runaway(0, f"{reason} in {args.structure}, before any step")
    watch_dynamics(dyn, watch, step0)

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
    warned = {"hot": False}

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
        if root and not warned["hot"] and out_of_band(T, args.temperature, args.thermostat):
            warned["hot"] = True
            print(f"\nwarning: step {step}: T = {T:.0f} K, far from the thermostat's "
                  f"{args.temperature:g} K; the run stops above --max-temperature "
                  f"{watch.max_temperature:g} K", file=sys.stderr)
        row = f"{step:>7d} {step * args.timestep:>10.2f} {T:>8.1f} " + " ".join(
            f"{temps[el]:>8.1f}" for el in elements)
        if has_energy:
            epot = atoms.get_potential_energy()
            etot = epot + atoms.get_kinetic_energy()
            times.append(step * args.timestep)
            totals.append(etot)
            row += f" {epot:>14.6f} {etot:>14.6f}"
        if root:                    # the frame first: a log row always has its frame
            traj.write(atoms)
            log.write(row + f" {ms:>9.3f}\n")
            log.flush()
            print(f"\rstep {step:>7d}  T {T:7.1f} K  {ms:7.2f} ms/step", end="", flush=True)

    def stop_asked() -> bool:
        """Ctrl-C on any rank stops all of them after the same step."""
        return bool(comm.sum([stop["asked"]])[0])

    done = 0
    interrupted = False
    try:
        if not args.restart:
            record()
        while done < args.steps and not interrupted:
            n = min(args.interval, args.steps - done)
            dyn.run(n)
            done += n
            record()
            interrupted = stop_asked()
    except Runaway as err:
        last = step0 + done
        raise Runaway(err.step, f"{err.reason}; stopped. {traj_path} ends at the last good "
                      f"frame (step {last}): --restart continues from it (try a smaller "
                      f"--timestep or check the model)") from None
    finally:
        signal.signal(signal.SIGINT, previous)
        if root:
            traj.close()
            log.close()
            print(file=sys.stdout)
    if not root:
        return 130 if interrupted else 0
    if interrupted:
        print(f"interrupted after {done} step(s); continue with --restart. wrote {traj_path}")
        return 130
    if args.thermostat == "nve" and has_energy and len(times) > 2:
        drift = energy_drift(times, totals, len(atoms))
        print(f"NVE energy drift: {drift:.4f} meV/atom/ps over {times[-1] - times[0]:.0f} fs")
    print(f"wrote {traj_path} and {log_path}")
    return 0
