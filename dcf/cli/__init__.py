"""The `dcf` command line. Printing and file handling live here; the library returns data.

Each command is a module of this package defining HELP, add_arguments(parser) and run(args).
Command modules import heavy libraries (TensorFlow, h5py, mpi4py) inside run(), so that
`dcf --help` stays fast.

`main` is the one place where errors become messages: a user-caused error (`dcf.errors.DCFError`)
or an operating-system one (a full disk, a missing permission) is printed on one line, with exit
code 2 or 1; any other exception is printed on one line as an internal error. ``--debug`` or
``DCF_DEBUG=1`` shows the traceback instead. Under MPI, a rank that fails alone ends all ranks.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time

# the order commands are listed in `dcf --help`; modules not named here follow, sorted
ORDER = ("spec", "generate", "featurize", "train", "evaluate", "check-forces", "md", "check-md",
         "ipi", "lammps", "bench", "reactions")


def commands() -> list[str]:
    """Names of the available commands (module names with '_' written as '-')."""
    found = [m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__)
             if not m.name.startswith("_")]
    return sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with `only` of that command alone (importing one
    command module instead of all: a shorter start, which every MPI rank pays)."""
    parser = argparse.ArgumentParser(
        prog="dcf", description="Direct Covariant Forces and Behler-Parrinello force fields.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the traceback of an error (also DCF_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ([only] if only else commands()):
        module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error (also DCF_DEBUG=1)")
        p.set_defaults(run=module.run)
    return parser


def _version() -> str:
    from dcf import __version__
    return f"dcf {__version__}"


def _command_in(argv) -> str | None:
    """The command named in argv (the first word that is not an option), if it is one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in commands() else None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser(_command_in(argv)).parse_args(argv)
    debug = args.debug or os.environ.get("DCF_DEBUG", "") not in ("", "0")
    try:
        return args.run(args)
    except SystemExit as stop:        # a command's own check, the same on every MPI rank
        if isinstance(stop.code, str) and _rank() != 0:
            raise SystemExit(1) from None
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\ndcf {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:          # noqa: BLE001 - the one handler of the command line
        if debug:
            raise
        return _fail(args.command, err)


def _rank() -> int:
    from dcf.parallel import running_rank

    return running_rank()[0]


def _fail(command: str, err: Exception) -> int:
    """Print `err` on one line and return the exit code; a rank failing alone under MPI ends
    the whole job (the other ranks would wait for it forever)."""
    from dcf.errors import DCFError, describe
    from dcf.parallel import abort_all, running_rank

    code = 2 if isinstance(err, (DCFError, OSError)) else 1
    rank, size = running_rank()
    if size > 1 and getattr(err, "collective", False):
        if rank == 0:
            print(f"dcf {command}: {describe(err)}", file=sys.stderr)
        return code
    if size > 1 and rank != 0:
        time.sleep(1.0)               # rank 0, if it failed too, ends the job with its message
    where = f" (rank {rank} of {size})" if size > 1 else ""
    print(f"dcf {command}{where}: {describe(err)}", file=sys.stderr, flush=True)
    if size > 1:
        abort_all(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
