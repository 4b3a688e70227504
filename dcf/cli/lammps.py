"""`dcf lammps`: run a LAMMPS input with a dcf model as the force field.

The input is an ordinary LAMMPS input in units metal, without a pair style for the model's
atoms: the box and atoms (read_data, create_box + create_atoms, read_restart), then any
integrators, thermostats, barostats (B–P only), computes and output. Just before the first
run or minimize command the model is attached (`dcf.dynamics.lammps.attach`): atom types
map to elements by --elements (one per type, as pair_coeff * * Li O P) or by the LAMMPS type
labels. Under `mpiexec -n K dcf lammps ...` LAMMPS decomposes the box over the K ranks.

The input runs one command at a time, so jump/label loops are not supported; include works.
Paths in the input are relative to the current directory, as for `lmp -in INPUT`.
"""
from __future__ import annotations

import shlex
import sys

from dcf.cli._model import add_precision_argument

HELP = "run a LAMMPS input (units metal) with a DCF or B–P model as the force field"

#: commands before which the model must be attached
START = ("run", "minimize", "rerun")


def add_arguments(p) -> None:
    p.add_argument("model", help="model file (.dcf) from dcf train")
    p.add_argument("input", help="LAMMPS input file (units metal)")
    p.add_argument("--elements", default=None,
                   help="element of each atom type, comma separated, e.g. Li,O,P "
                        "(default: the LAMMPS type labels)")
    p.add_argument("--var", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="define an index variable, as lmp -var NAME VALUE (repeatable)")
    p.add_argument("--log", default="log.lammps",
                   help="LAMMPS log file (default log.lammps; 'none' for no log)")
    p.add_argument("--quiet", action="store_true", help="no LAMMPS screen output")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads for fingerprints")
    add_precision_argument(p)


def logical_lines(text: str) -> list[str]:
    """The commands of a LAMMPS input: '&' continuations joined, comments and blank lines
    dropped (a '#' inside quotes is kept)."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = pending + (raw.lstrip() if pending else raw)
        pending = ""
        if line.rstrip().endswith("&"):
            pending = line.rstrip()[:-1].rstrip() + " "
            continue
        line = _strip_comment(line).strip()
        if line:
            out.append(line)
    if pending.strip():
        out.append(_strip_comment(pending).strip())
    return out


def _strip_comment(line: str) -> str:
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:k]
    return line


def neighbor_skin(commands, default: float) -> float:
    """The skin of the last `neighbor SKIN STYLE` command among `commands`, else `default`."""
    skin = default
    for line in commands:
        words = line.split()
        if len(words) >= 2 and words[0] == "neighbor":
            try:
                skin = float(words[1])
            except ValueError:
                pass
    return skin


def run(args) -> int:
    from pathlib import Path

    from dcf.cli._paths import refuse_overwriting_inputs
    from dcf.dynamics import lammps as dl
    from dcf.models import ModelFileError, load_model
    from dcf.parallel import world

    def fail(message: str, code: int = 2) -> int:
        if comm.rank == 0:
            print(f"dcf lammps: {message}", file=sys.stderr)
        return code

    comm = world()
    refuse_overwriting_inputs([("model", args.model), ("input", args.input)],
                              [("--log", None if args.log == "none" else args.log)])
    missing = dl.lammps_missing()
    if missing:
        return fail(missing)
    try:
        model = load_model(args.model)
    except (ModelFileError, FileNotFoundError) as err:
        return fail(str(err))
    try:
        model.set_precision(args.precision)
    except ValueError as err:
        return fail(f"--precision: {err}")
    path = Path(args.input)
    try:
        commands = logical_lines(path.read_text())
    except OSError as err:
        return fail(f"cannot read the LAMMPS input {args.input}: {err.strerror}")
    if model.kind != "bp":
        barostats = dl.barostats_in(commands)
        if barostats:
            return fail(f"{args.input}: {barostats[0]!r} needs the pressure, but a DCF model "
                        f"has no energy and no virial; run NVT (or train a B-P model for NPT)")
    elements = args.elements.split(",") if args.elements else None
    start = next((k for k, c in enumerate(commands) if c.split()[0] in START), len(commands))
    late = [c for c in commands[start:] if c.split()[0] in ("neighbor", "neigh_modify")]
    if late:
        return fail(f"{args.input}: {late[0]!r} comes after the first run; set the neighbor "
                    f"skin and rules before it (the model's ghost-atom cutoff uses them)")
    cmdargs = ["-log", args.log, "-nocite"] + (["-screen", "none"] if args.quiet else [])
    for name, value in args.var:
        cmdargs += ["-var", name, value]
    lmp = dl.new_lammps(cmdargs)
    coupling = None
    try:
        for k, line in enumerate(commands):
            if k == start:
                skin = neighbor_skin(commands[:start], dl.DEFAULT_SKIN)
                coupling = dl.attach(lmp, model, elements, skin=skin, comm=comm,
                                     num_threads=args.threads)
            lmp.command(line)
            if coupling is not None:
                coupling.check()
        if coupling is None:
            return fail(f"{args.input} has no run or minimize command")
    except dl.CouplingError as err:
        return fail(str(err))
    except Exception as err:          # LAMMPS raises plain Exception("ERROR: ...")
        return fail(f"{args.input}: {str(err).splitlines()[0] if str(err) else err!r}", 1)
    finally:
        lmp.close()
    if comm.rank == 0 and coupling.calls:
        print(f"dcf lammps: {coupling.calls} force calls, "
              f"{1e3 * coupling.seconds / coupling.calls:.3g} ms per call on rank 0 "
              f"({shlex.quote(args.model)}, {comm.size} rank(s))")
    return 0
