"""The `dcf` command line. Printing and file handling live here; the library returns data.

Each command is a module of this package defining HELP, add_arguments(parser) and run(args).
Command modules import heavy libraries (TensorFlow, h5py, mpi4py) inside run(), so that
`dcf --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

# the order commands are listed in `dcf --help`; modules not named here follow, sorted
ORDER = ("spec", "generate", "featurize", "train", "evaluate", "check-forces", "md", "ipi",
         "lammps", "bench", "reactions")


def commands() -> list[str]:
    """Names of the available commands (module names with '_' written as '-')."""
    found = [m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__)
             if not m.name.startswith("_")]
    return sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcf", description="Direct Covariant Forces and Behler-Parrinello force fields.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands():
        module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def _version() -> str:
    from dcf import __version__
    return f"dcf {__version__}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from dcf.parallel import MPIUnavailable
    from dcf.descriptors.spec import SpecError
    try:
        return args.run(args)
    except (SpecError, MPIUnavailable) as err:
        print(f"dcf {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
