"""`dcf generate`: reference data (extxyz with energies and forces) from thermostatted MD with an
ASE calculator: EMT (fast, alloys) or GFN1-xTB via tblite (e.g. Li4P2O7)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

HELP = "reference data: Langevin MD with EMT or GFN1-xTB, extxyz with energies and forces"


def add_arguments(p) -> None:
    p.add_argument("--calculator", required=True, choices=("emt", "xtb"),
                   help="emt: ASE's EMT (Al Cu Ag Au Ni Pd Pt); xtb: GFN1-xTB via tblite")
    p.add_argument("--structure", required=True,
                   help="li4p2o7 (26 atoms), system-b (208 atoms), cu3au (32 atoms) or a file")
    p.add_argument("--temperature", type=float, required=True, help="thermostat temperature, K")
    p.add_argument("--steps", type=int, required=True, help="recorded MD steps")
    p.add_argument("--out", required=True, help="output .extxyz")
    p.add_argument("--timestep", type=float, default=1.0, help="fs (default 1)")
    p.add_argument("--interval", type=int, default=10, help="steps between frames (default 10)")
    p.add_argument("--friction", type=float, default=0.02, help="Langevin friction, 1/fs")
    p.add_argument("--relax-steps", type=int, default=50,
                   help="FIRE steps before MD to remove bad contacts (default 50)")
    p.add_argument("--equilibration", type=int, default=0, help="unrecorded MD steps first")
    p.add_argument("--seed", type=int, default=0, help="structure and thermostat seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _fail(message: str):
    raise SystemExit(f"dcf generate: {message}")


def run(args) -> int:
    from ase.io import write

    from dcf.data import generate
    from dcf.cli._paths import refuse_overwriting_inputs
    from dcf.files import write_atomic

    out = Path(args.out)
    refuse_overwriting_inputs([("--structure", args.structure)], [("--out", out)])
    if out.suffix not in (".extxyz", ".xyz"):
        _fail(f"--out {out}: write an .extxyz file")
    if args.interval < 1 or args.steps < args.interval:
        _fail(f"--steps ({args.steps}) must be at least --interval ({args.interval}) >= 1")
    try:
        atoms = generate.structure(args.structure, args.seed)
        generate.check_supported(atoms, args.calculator)
        calc = generate.calculator(args.calculator)
    except ValueError as err:
        _fail(str(err))
    command = shlex.join([
        "dcf", "generate", "--calculator", args.calculator, "--structure", args.structure,
        "--temperature", f"{args.temperature:g}", "--steps", str(args.steps),
        "--timestep", f"{args.timestep:g}", "--interval", str(args.interval),
        "--friction", f"{args.friction:g}", "--relax-steps", str(args.relax_steps),
        "--equilibration", str(args.equilibration), "--seed", str(args.seed), "--out", str(out)])
    info = {"command": command, "calculator": args.calculator,
            "target_temperature_K": args.temperature}
    frames = generate.run_md(atoms, calc, args.temperature, args.steps, args.timestep,
                             args.interval, args.friction, args.relax_steps, args.equilibration,
                             args.seed, info)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.steps // args.interval, unit="frame", desc="generate",
                   file=sys.stderr)
    temperatures = []

    def write_frames(tmp):
        with open(tmp, "w") as fh:
            for frame in frames:
                write(fh, frame, format="extxyz")
                fh.flush()
                temperatures.append(frame.info["temperature_K"])
                if bar is not None:
                    bar.update(1)

    try:
        write_atomic(out, write_frames)
    except ValueError as err:
        _fail(str(err))
    finally:
        if bar is not None:
            bar.close()
    print(f"{atoms.get_chemical_formula()} ({len(atoms)} atoms), {args.calculator}, "
          f"{args.temperature:g} K: {len(temperatures)} frames, mean T "
          f"{sum(temperatures) / len(temperatures):.0f} K")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0
