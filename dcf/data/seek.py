"""Random access into frame files, so that each MPI rank parses only its own frames.

``seek_index(path, fmt, units)`` returns a ``SeekIndex`` for the formats that can be read by
frame number without parsing the frames before it, or None (the source is then read whole,
by one rank):

* extxyz (``.extxyz``, ``.xyz`` or ``--format extxyz``): the frame offsets from the atom-count
  lines (dcf.data.extxyz.scan); plain frames are parsed by dcf's own reader, the others by
  ase.io from the frame's own text.
* ASE trajectories (``.traj``): ase's random access (``Trajectory(path)[k]``).
* n2p2 ``input.data``: the offsets of the ``begin`` lines (found as ase's RuNNer reader finds
  them); each rank passes only its own frames' text to that reader.

DeePMD systems, dpdata formats and the other ase.io formats are read whole (a folder of
DeePMD systems gives one source per system, so its systems are still shared among ranks).
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dcf.data import extxyz

_EXTXYZ_SUFFIXES = (".extxyz", ".xyz")
_N2P2_BEGIN = re.compile(rb"begin.*\n")       # ase.io.runner.reader's frame separator


class SeekError(Exception):
    """Frame `frame` of a source could not be read; `cause` is the reader's exception."""

    def __init__(self, frame: int, cause: BaseException):
        super().__init__(f"frame {frame}: {type(cause).__name__}: {cause}")
        self.frame, self.cause = frame, cause


@dataclass
class SeekIndex:
    """n frames; weights (n,) the relative cost of parsing each (atoms or bytes);
    read(numbers) -> the frames with those numbers (ascending int array), as dicts of
    dcf.data.extxyz.parse_frame or ase.Atoms with reference results; raises SeekError."""

    n: int
    weights: np.ndarray
    read: Callable


def seek_index(path: Path, fmt: str | None, units: str = "ev-angstrom") -> SeekIndex | None:
    """A SeekIndex of one source file, or None if it must be read whole."""
    path = Path(path)
    if path.is_dir():
        return None
    if fmt == "extxyz" or (fmt is None and path.suffix.lower() in _EXTXYZ_SUFFIXES):
        return _extxyz_index(path)
    if fmt == "traj" or (fmt is None and path.suffix.lower() == ".traj"):
        return _traj_index(path)
    if fmt == "n2p2":
        return _n2p2_index(path, units)
    return None


def _extxyz_index(path: Path) -> SeekIndex | None:
    data = path.read_bytes()
    found = extxyz.scan(data)
    if found is None:
        return None
    starts, counts = found

    def read(numbers):
        out = []
        for k in numbers:
            a, b = int(starts[k]), int(starts[k + 1])
            try:
                frame = extxyz.parse_frame(data, a, b)
                out.append(frame if frame is not None else _ase_extxyz(data[a:b]))
            except Exception as err:              # ase raises many kinds for broken frames
                raise SeekError(int(k), err) from None
        return out
    return SeekIndex(len(counts), counts.astype(float) + 1.0, read)


def _ase_extxyz(text: bytes):
    """One frame's text, read by ase.io (its results for what dcf's reader does not take)."""
    from ase.io import read

    return read(io.StringIO(text.decode()), format="extxyz", index=0, parallel=False)


def _traj_index(path: Path) -> SeekIndex:
    from ase.io.trajectory import Trajectory

    traj = Trajectory(str(path))
    n = len(traj)

    def read(numbers):
        out = []
        for k in numbers:
            try:
                out.append(traj[int(k)])
            except Exception as err:              # ulm raises many kinds for broken files
                raise SeekError(int(k), err) from None
        return out
    return SeekIndex(n, np.ones(n), read)


def _n2p2_index(path: Path, units: str) -> SeekIndex:
    from dcf.data.formats import FormatError, N2P2_UNITS

    if units not in N2P2_UNITS:
        raise FormatError(f"unknown n2p2 units {units!r} (known: {', '.join(N2P2_UNITS)})")
    data = path.read_bytes()
    starts = np.array([m.start() for m in _N2P2_BEGIN.finditer(data)] + [len(data)], np.int64)

    def read(numbers):
        from ase.io.runner.reader import read_runnerdata
        from ase.io.runner.runneratoms import Units

        given = Units.ATOMIC if units == "hartree-bohr" else Units.ASE
        out = []
        for k in numbers:
            text = data[int(starts[k]):int(starts[k + 1])].decode(errors="replace")
            try:
                out += list(read_runnerdata(io.StringIO(text), slice(None), given))
            except Exception as err:              # ase raises many kinds for broken frames
                raise SeekError(int(k), err) from None
        return out
    return SeekIndex(len(starts) - 1, np.diff(starts).astype(float), read)
