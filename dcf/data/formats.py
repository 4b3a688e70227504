"""Input formats beyond ase.io's guess: DeePMD-kit systems and n2p2 ``input.data``.

* ``deepmd/npy`` and ``deepmd/raw``: a DeePMD-kit system, the folder DP-GEN writes
  (``type.raw``, ``type_map.raw``, ``set.*/{coord,box,energy,force,virial}.npy`` or the
  ``*.raw`` text files). Read with dpdata (``pip install 'dcf-forces[deepmd]'``), the
  DeePMD-kit project's own reader. A folder holding several systems at any depth is read as
  all of them, in sorted order (:func:`deepmd_systems`). Units are DeePMD's: Angstrom, eV,
  eV/Angstrom, virial in eV; dpdata's conversion gives the stress as ``-virial / volume``
  (ASE's sign: negative under compression). A ``nopbc`` file marks a non-periodic system.
* ``n2p2``: n2p2/RuNNer ``input.data`` (``begin``, ``lattice``, ``atom x y z El q n fx fy fz``,
  ``energy``, ``charge``, ``end``), read by ase.io's RuNNer reader (ASE >= 3.29), which takes
  isolated and periodic frames of any composition (dpdata's n2p2 reader assumes periodic
  cells and one composition). The format carries no units: ``units="hartree-bohr"``
  converts a file in atomic units, the default ``"ev-angstrom"`` takes the numbers as
  they are.

* ``dpdata:NAME``: any other labeled format dpdata reads (``dpdata:abacus/md``,
  ``dpdata:cp2k/aimd_output``, ``dpdata:pwmat/movement``, ``dpdata:qe/cp/traj``,
  ``dpdata:deepmd/hdf5``, ...), a file or a folder as dpdata takes it.

Every frame comes back as an ase.Atoms with a SinglePointCalculator holding the reference
energy (eV), forces (eV/A) and, where the file has a virial, stress (eV/A^3). Any other format
name is ase.io's (see :func:`iter_frames`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ase import Atoms
from ase.data import chemical_symbols

DEEPMD = ("deepmd/npy", "deepmd/raw")
N2P2 = "n2p2"
FORMATS = (*DEEPMD, N2P2)
DPDATA = "dpdata:"

#: units an n2p2 file may be in (the format does not say)
N2P2_UNITS = ("ev-angstrom", "hartree-bohr")


class FormatError(ValueError):
    """A file or folder that is not what its format says, or a format option that is wrong."""


def read_here(fmt: str | None) -> bool:
    """Whether `fmt` is read by this module (else by ase.io)."""
    return fmt in FORMATS or (fmt or "").startswith(DPDATA)


def deepmd_kind(folder: Path) -> str | None:
    """'deepmd/npy' or 'deepmd/raw' if `folder` is one DeePMD system, else None."""
    if not (folder / "type.raw").is_file():
        return None
    if any(folder.glob("set.*/coord.npy")):
        return "deepmd/npy"
    return "deepmd/raw" if (folder / "coord.raw").is_file() else None


def deepmd_systems(root: Path) -> list[Path]:
    """The DeePMD systems in `root`: itself, or every folder below it with a type.raw."""
    root = Path(root)
    if deepmd_kind(root):
        return [root]
    return sorted(p.parent for p in root.rglob("type.raw") if deepmd_kind(p.parent))


def guess_format(path: Path) -> str | None:
    """A dcf-read format for `path`, or None to let ase.io guess."""
    path = Path(path)
    if path.is_dir():
        systems = deepmd_systems(path)
        return deepmd_kind(systems[0]) if systems else None
    if path.name == "input.data" or path.suffix == ".data":
        with open(path, errors="replace") as fh:
            for line in fh:
                if line.strip():
                    return N2P2 if line.split()[0].lower() == "begin" else None
    return None


def expand(path: Path, fmt: str | None) -> list[tuple[Path, str | None]]:
    """(source, format) pairs of one input: a folder of DeePMD systems gives each system."""
    path = Path(path)
    given, fmt = fmt, fmt or guess_format(path)
    if fmt and fmt.startswith(DPDATA):
        return [(path, fmt)]
    if path.is_dir():
        if fmt is not None and fmt not in DEEPMD:
            raise FormatError(f"{path} is a folder; only the DeePMD formats "
                              f"({', '.join(DEEPMD)}) are folders")
        systems = deepmd_systems(path)
        if not systems:
            raise FormatError(f"{path}: a folder without DeePMD systems (no type.raw with "
                              f"set.*/coord.npy or coord.raw found)")
        return [(s, given or deepmd_kind(s)) for s in systems]
    if fmt in DEEPMD:
        raise FormatError(f"{path}: --format {fmt} reads a folder (type.raw, set.*/), "
                          f"not a file")
    return [(path, fmt)]


def iter_frames(path, fmt: str | None = None, type_map=None, units: str = "ev-angstrom"):
    """The frames of one source as ase.Atoms with reference results, in file order.

    fmt: one of FORMATS, an ase.io format name, or None (guessed: a DeePMD folder, an n2p2
    ``input.data``, else ase.io's guess). type_map: element names for DeePMD types when the
    system has no type_map.raw. units: of an n2p2 file, one of N2P2_UNITS.
    """
    path = Path(path)
    fmt = fmt or guess_format(path)
    if fmt in DEEPMD:
        yield from read_deepmd(path, fmt, type_map)
    elif fmt is not None and fmt.startswith(DPDATA):
        yield from read_dpdata(path, fmt[len(DPDATA):], type_map)
    elif fmt == N2P2:
        yield from read_n2p2(path, units)
    else:
        from ase.io import iread
        yield from iread(path, index=":", format=fmt, parallel=False)   # no rank-0 broadcast


def read_deepmd(folder, fmt: str = "deepmd/npy", type_map=None) -> list[Atoms]:
    """The frames of one DeePMD system (through dpdata), type map and virials honoured."""
    folder = Path(folder)
    if deepmd_kind(folder) != fmt:
        raise FormatError(f"{folder} is not a {fmt} system (type.raw and "
                          f"{'set.*/coord.npy' if fmt == 'deepmd/npy' else 'coord.raw'})")
    return read_dpdata(folder, fmt, type_map)


def read_dpdata(path, fmt: str, type_map=None) -> list[Atoms]:
    """The frames of a labeled system in dpdata's format `fmt` (a file or folder)."""
    try:
        import dpdata
    except ImportError:
        raise FormatError(f"{path}: reading {fmt} needs dpdata "
                          f"(pip install 'dcf-forces[deepmd]')") from None
    if fmt not in dpdata.format.Format.get_formats():
        raise FormatError(f"{path}: dpdata has no format {fmt!r}")
    folder = Path(path)
    try:
        system = dpdata.LabeledSystem(str(folder), fmt=fmt,
                                      type_map=list(type_map) if type_map else None)
    except Exception as err:          # dpdata raises many kinds for broken systems
        raise FormatError(f"cannot read {folder} as {fmt}: {type(err).__name__}: "
                          f"{err}") from None
    data = system.data
    names = list(data["atom_names"])
    unknown = [n for n in names if n not in chemical_symbols[1:]]
    if unknown:
        raise FormatError(f"{folder}: type names {unknown} are not elements (for a DeePMD "
                          f"system without type_map.raw give --type-map, e.g. O,H)")
    if data.get("nopbc"):                 # a virial needs a volume
        data.pop("virials", None)
    return system.to("ase/structure")     # stress = -virial / volume, as ASE's sign


def read_n2p2(path, units: str = "ev-angstrom"):
    """The frames of an n2p2/RuNNer ``input.data`` file in Angstrom and eV, read by ase.io's
    RuNNer reader (format ``runnerdata``). A frame without ``lattice`` lines is isolated.

    units: of the numbers in the file (the format does not say); "hartree-bohr" converts from
    atomic units with ASE's constants. (ase.io's own default is atomic units; dcf's is to take
    the numbers as they are unless told.)
    """
    if units not in N2P2_UNITS:
        raise FormatError(f"unknown n2p2 units {units!r} (known: {', '.join(N2P2_UNITS)})")
    from ase.io import iread
    from ase.io.runner.runneratoms import Units

    given = Units.ATOMIC if units == "hartree-bohr" else Units.ASE
    yield from iread(path, index=":", format="runnerdata", input_units=given, parallel=False)


def tree_sha256(folder: Path) -> str:
    """sha256 over the relative names and bytes of every file below `folder`, sorted."""
    h = hashlib.sha256()
    for p in sorted(q for q in Path(folder).rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def read(path, index=":", fmt: str | None = None, type_map=None,
         units: str = "ev-angstrom") -> list[Atoms]:
    """Frames `index` (ase syntax: 0, -1, 10:200, ::2) of one input as a list of ase.Atoms.

    A folder of several DeePMD systems counts its frames system after system, in the order of
    :func:`deepmd_systems`. Other formats are read by ase.io.
    """
    from ase.io.formats import string2index

    selection = string2index(str(index)) if isinstance(index, str) else index
    sources = expand(path, fmt)
    if len(sources) == 1 and not read_here(sources[0][1]):
        from ase.io import read as ase_read
        frames = ase_read(sources[0][0], index=selection, format=sources[0][1])
        return [frames] if isinstance(frames, Atoms) else list(frames)
    frames = [a for p, f in sources for a in iter_frames(p, f, type_map, units)]
    return [frames[selection]] if isinstance(selection, int) else frames[selection]
