"""The input-format options shared by every command that reads frames."""
from __future__ import annotations

FORMAT_HELP = ("format of the input: deepmd/npy, deepmd/raw (a DeePMD-kit system, or a folder "
               "of them), n2p2 (input.data), dpdata:NAME (any labeled format dpdata reads, "
               "e.g. dpdata:abacus/md), or any ase.io format name (default: guessed)")


def add_format_arguments(p) -> None:
    """--format, --type-map and --units (see dcf.data.formats)."""
    p.add_argument("--format", default=None, metavar="FORMAT", help=FORMAT_HELP)
    p.add_argument("--type-map", default=None, metavar="EL,EL,...",
                   help="elements of DeePMD types 0, 1, ... for systems without type_map.raw")
    p.add_argument("--units", choices=("ev-angstrom", "hartree-bohr"), default="ev-angstrom",
                   help="units of an n2p2 input.data file (default ev-angstrom)")


def format_options(args) -> dict:
    """Keyword arguments fmt, type_map, units for dcf.data.formats.read / read_frames."""
    type_map = args.type_map.split(",") if args.type_map else None
    return {"fmt": args.format, "type_map": type_map, "units": args.units}


def read_input(command: str, path, index=":", args=None) -> list:
    """Frames `index` of one input (see dcf.data.formats.read); SystemExit naming the input."""
    from pathlib import Path

    from dcf.data.formats import FormatError, read

    if not Path(path).exists():
        raise SystemExit(f"dcf {command}: {path} does not exist")
    try:
        return read(path, index, **(format_options(args) if args is not None else {}))
    except FormatError as err:
        raise SystemExit(f"dcf {command}: {err}") from None
    except Exception as err:          # ase raises many kinds for unreadable files
        raise SystemExit(f"dcf {command}: cannot read {path}: {err}") from None
