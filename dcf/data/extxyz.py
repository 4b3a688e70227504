"""A fast reader for plain extended-XYZ files, equal to ase.io's to the bit, and the frame index
that lets each MPI rank parse only its own frames.

``scan(data)`` finds where every frame starts from the atom-count lines alone (one pass over
the newlines, no number parsed but the counts). ``parse_frame(data, start, end)`` parses one
frame into arrays. A frame is *plain* when its comment line is ``key=value`` pairs (values bare
or in double quotes) with ``Properties`` naming ``species:S:1`` and ``pos:R:3`` (and optionally
``forces:R:3``; other columns are skipped), and every atom line has those columns. Anything
else (``Z`` columns, JSON, escapes, bare flags, VEC lines, a symbol that is not an element)
makes ``parse_frame`` return None, and the caller lets ase.io read that frame: the results
are ase's either way. Numbers are converted as ase converts them (Python's correctly rounded
``float``), so positions, forces, cells and energies are bit-identical to ``ase.io.read``.
"""
from __future__ import annotations

import re

import numpy as np

_PAIR = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"([^"\\{}\[\]]*)"|([^\s"\'\\{}\[\]]+))')
_BOOLS = {"T": True, "F": False, "True": True, "False": False, "true": True, "false": False}
_KNOWN = {"species": ("S", 1), "pos": ("R", 3), "forces": ("R", 3)}
_TYPES = ("R", "I", "L", "S")


def scan(data: bytes):
    """(starts, counts) of the frames of an extxyz file's bytes: frame k is
    data[starts[k]:starts[k + 1]] with counts[k] atoms; starts has n_frames + 1 entries.
    None if the file does not look like plain extxyz (a header that is not a count, a frame
    cut short, VEC lines): then ase.io reads it."""
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    line_start = np.concatenate([[0], ends + 1])
    n_lines = len(ends) + (1 if len(data) and data[-1:] != b"\n" else 0)
    starts, counts, line = [], [], 0
    while line < n_lines:
        a = int(line_start[line])
        b = int(ends[line]) if line < len(ends) else len(data)
        header = data[a:b]
        if not header.strip():
            break                                  # ase stops at a blank line
        try:
            natoms = int(header)
        except ValueError:
            return None
        if natoms < 0 or line + natoms + 2 > n_lines:
            return None
        starts.append(a)
        counts.append(natoms)
        line += natoms + 2
        if line < n_lines and data[line_start[line]:line_start[line] + 64].lstrip() \
                .startswith(b"VEC"):
            return None
    end = int(line_start[line]) if line < len(line_start) else len(data)
    return (np.array(starts + [end], dtype=np.int64), np.array(counts, dtype=np.int64))


def parse_comment(line: str) -> dict | None:
    """The key=value pairs of a plain comment line as strings, or None if it is not plain."""
    out, pos, line = {}, 0, line.rstrip()
    while pos < len(line):
        m = _PAIR.match(line, pos)
        if m is None:
            return None
        out.setdefault(m.group(1), m.group(2) if m.group(2) is not None else m.group(3))
        pos = m.end()
    return out


def _columns(properties: str):
    """{name: (first column, count)} and the number of columns, or None if not plain."""
    parts = properties.split(":")
    if len(parts) % 3:
        return None
    cols, at = {}, 0
    for name, kind, count in zip(parts[0::3], parts[1::3], parts[2::3]):
        if kind not in _TYPES or not count.isdigit() or int(count) < 1 or name in cols:
            return None
        if name in _KNOWN and _KNOWN[name] != (kind, int(count)) or name == "Z":
            return None
        cols[name] = (at, int(count))
        at += int(count)
    if "species" not in cols or "pos" not in cols:
        return None
    return cols, at


def _cell_pbc(info: dict):
    """(cell (3, 3) rows in Angstrom, pbc (3,) bool) as ase sets them, or None."""
    cell, pbc = np.zeros((3, 3)), np.zeros(3, bool)
    if "Lattice" in info:
        values = info["Lattice"].split()
        if len(values) != 9:
            return None
        try:
            cell = np.array([float(v) for v in values]).reshape(3, 3)
        except ValueError:
            return None
        pbc[:] = True
    if "pbc" in info:
        flags = info["pbc"].split()
        if len(flags) != 3 or any(f not in _BOOLS for f in flags):
            return None
        pbc = np.array([_BOOLS[f] for f in flags])
    return cell, pbc


def _numbers(symbols: np.ndarray):
    """Atomic numbers (n,) of the symbol column (bytes), capitalized as ase does; None if
    one is not an element."""
    from ase.data import atomic_numbers

    unique, inverse = np.unique(symbols, return_inverse=True)
    table = [atomic_numbers.get(s.decode(errors="replace").capitalize()) for s in unique]
    if any(z is None for z in table):
        return None
    return np.array(table, dtype=np.int64)[inverse.reshape(-1)]


def parse_frame(data: bytes, start: int, end: int) -> dict | None:
    """Frame data[start:end] as arrays, or None if it is not plain (ase.io should read it).

    Returns numbers (n,) int, positions (n, 3) Angstrom, cell (3, 3) Angstrom (rows), pbc (3,)
    bool, forces (n, 3) eV/Angstrom or None, energy (eV, from ``energy`` or ``free_energy``)
    or None.
    """
    first = data.index(b"\n", start)
    second = data.find(b"\n", first + 1, end)
    second = end if second < 0 else second
    natoms = int(data[start:first])
    info = parse_comment(data[first + 1:second].decode(errors="replace"))
    if info is None:
        return None
    layout = _columns(info.get("Properties", "species:S:1:pos:R:3"))
    geometry = _cell_pbc(info)
    if layout is None or geometry is None:
        return None
    (cols, n_cols), (cell, pbc) = layout, geometry
    body = data[second + 1:end]
    if body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0) != natoms:
        return None
    tokens = body.split()
    if len(tokens) != natoms * n_cols:
        return None
    table = np.array(tokens, dtype=bytes).reshape(natoms, n_cols)
    numbers = _numbers(table[:, cols["species"][0]])
    if numbers is None:
        return None
    try:
        positions = _real(table, cols["pos"])
        forces = _real(table, cols["forces"]) if "forces" in cols else None
        energy = next((float(info[k]) for k in ("energy", "free_energy") if k in info), None)
    except ValueError:
        return None
    return {"numbers": numbers, "positions": positions, "cell": cell, "pbc": pbc,
            "forces": forces, "energy": energy}


def _real(table: np.ndarray, where: tuple[int, int]) -> np.ndarray:
    """Columns where = (first, count) of the token table as float64 (n, count). numpy's
    conversion rounds correctly, as Python's float (ase's) does: the same doubles."""
    a, n = where
    return np.ascontiguousarray(table[:, a:a + n]).astype(np.float64)
