"""Reading reference frames (positions, cell, forces, energy) from anything ase.io reads, and
from DeePMD-kit systems and n2p2 ``input.data`` (dcf.data.formats).

``read_frames(paths, index, every)`` reads extxyz, VASP OUTCAR and vasprun.xml, ASE databases
(.db) and trajectories (.traj), DeePMD ``deepmd/npy`` and ``deepmd/raw`` folders, n2p2
``input.data``, ... and returns a ``FrameData``: the frames as flat arrays,
every frame checked (forces present and finite, a sensible cell). ``check_elements`` checks
the elements against a fingerprint spec. Errors are ``FrameError`` naming the file and frame.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dcf.data import formats
from dcf.descriptors.spec import FingerprintSpec
from dcf.errors import DCFError


class FrameError(DCFError, ValueError):
    """A source file or frame that cannot be used: unreadable, without forces, bad cell, ..."""


@dataclass
class FrameData:
    """Frames as flat arrays (n_frames frames, n_atoms atoms in all).

    first_atom (n_frames + 1,): frame k holds atoms first_atom[k]:first_atom[k + 1];
    numbers (n_atoms,) atomic numbers; positions (n_atoms, 3) Angstrom; forces (n_atoms, 3)
    eV/Angstrom; cell (n_frames, 3, 3) Angstrom (rows are cell vectors); pbc (n_frames, 3);
    energy (n_frames,) eV, NaN where the source had none; source (n_frames,) index into
    `sources`; source_frame (n_frames,) frame number within that source.
    sources: one dict per file: path, sha256, bytes, index, every, n_frames.
    """

    first_atom: np.ndarray
    numbers: np.ndarray
    positions: np.ndarray
    forces: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: np.ndarray
    source: np.ndarray
    source_frame: np.ndarray
    sources: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.cell)

    @property
    def n_atoms(self) -> int:
        """Atoms in all frames together."""
        return int(self.first_atom[-1])

    def atoms(self, k: int):
        """Frame `k` as an ase.Atoms (no calculator attached)."""
        from ase import Atoms

        a, b = self.first_atom[k], self.first_atom[k + 1]
        return Atoms(numbers=self.numbers[a:b], positions=self.positions[a:b],
                     cell=self.cell[k], pbc=self.pbc[k])

    def label(self, k: int) -> str:
        """'path frame n' of frame k, for messages."""
        return f"{self.sources[self.source[k]]['path']} frame {self.source_frame[k]}"

    @classmethod
    def from_atoms(cls, frames, source: dict | None = None) -> "FrameData":
        """FrameData from a list of ase.Atoms with forces (as read_frames checks them)."""
        source = source or {"path": "<memory>", "sha256": "", "bytes": 0, "index": ":",
                            "every": 1}
        return _collect([(0, k, a) for k, a in enumerate(frames)],
                        [{**source, "n_frames": len(frames)}])


def file_sha256(path) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_index(index: str):
    """An ase-style frame selection: '5', '-1', '10:200', '::2' -> int or slice."""
    from ase.io.formats import string2index

    try:
        return string2index(str(index))
    except ValueError:
        raise FrameError(f"bad frame selection {index!r} (use e.g. 0, -1, 10:200, ::2)") from None


def select(n: int, index: str = ":", every: int = 1) -> np.ndarray:
    """Frame numbers 0..n-1 chosen by `index` (ase syntax), then every `every`-th of those."""
    if every < 1:
        raise FrameError(f"--every must be >= 1, got {every}")
    idx = parse_index(index)
    numbers = np.arange(n)
    if isinstance(idx, int):
        if not -n <= idx < n:
            raise FrameError(f"frame {idx} does not exist ({n} frames)")
        return numbers[[idx]]
    return numbers[idx][::every]


def _read_selected(path: Path, index: str, every: int,
                   options: dict | None = None) -> tuple[np.ndarray, list, int]:
    """(frame numbers, their Atoms, frames read) of one file. A selection without negative
    numbers streams the file, keeping only the chosen frames and stopping after the last one
    (a slice of a long OUTCAR neither parses nor holds the rest); otherwise every frame is
    read, since the count must be known. options: fmt, type_map, units of
    dcf.data.formats.iter_frames."""
    if every < 1:
        raise FrameError(f"--every must be >= 1, got {every}")
    idx = parse_index(index)
    streaming = (idx >= 0) if isinstance(idx, int) else \
        all(v is None or v >= 0 for v in (idx.start, idx.stop)) and (idx.step or 1) > 0
    if streaming:
        first, stop, step = (idx, idx + 1, 1) if isinstance(idx, int) else \
            (idx.start or 0, idx.stop, (idx.step or 1) * every)
    kept, frames, n = [], [], 0
    try:
        for atoms in formats.iter_frames(path, **(options or {})):
            if not streaming or (n >= first and (n - first) % step == 0):
                kept.append(n)
                frames.append(atoms)
            n += 1
            if streaming and stop is not None and n >= stop:
                break
    except formats.FormatError as err:
        raise FrameError(str(err)) from None
    except Exception as err:        # ase raises many kinds for unreadable files
        raise FrameError(f"cannot read frame {n} of {path} ({n} frame(s) before it read "
                         f"fine; is the file truncated?): {type(err).__name__}: {err}") from None
    if n == 0:
        raise FrameError(f"{path} holds no frames")
    if streaming:
        if isinstance(idx, int) and not kept:
            raise FrameError(f"frame {idx} does not exist ({n} frames)")
        return np.array(kept, dtype=np.int64), frames, n
    picked = select(n, index, every)
    return picked, [frames[k] for k in picked], n


def _results(atoms) -> dict:
    calc = atoms.calc
    results = dict(getattr(calc, "results", {}) or {})
    if "forces" not in results and "forces" in atoms.arrays:
        results["forces"] = atoms.arrays["forces"]
    return results


def check_frame(atoms, where: str) -> tuple[np.ndarray, float]:
    """Forces (n, 3) eV/A and energy (eV, NaN if none) of one frame, after checking that the
    forces exist and are finite and that the cell makes sense for the periodic directions."""
    n = len(atoms)
    if n == 0:
        raise FrameError(f"{where}: no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise FrameError(f"{where}: positions are not finite")
    results = _results(atoms)
    forces = results.get("forces")
    if forces is None:
        raise FrameError(f"{where}: no forces (dcf needs reference forces for every frame)")
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (n, 3) or not np.all(np.isfinite(forces)):
        raise FrameError(f"{where}: forces have shape {forces.shape} or are not finite "
                         f"(expected finite ({n}, 3))")
    energy = results.get("energy", results.get("free_energy"))
    energy = float(energy) if energy is not None else float("nan")
    cell, pbc = atoms.cell.array, atoms.pbc
    lengths = np.linalg.norm(cell, axis=1)
    for d in range(3):
        if pbc[d] and lengths[d] < 1e-6:
            raise FrameError(f"{where}: periodic along cell vector {d} but that vector is zero "
                             f"(cell {cell.round(6).tolist()})")
    if pbc.any() and np.linalg.matrix_rank(cell[pbc], tol=1e-6 * lengths.max()) < pbc.sum():
        raise FrameError(f"{where}: the periodic cell vectors are linearly dependent "
                         f"(cell {cell.round(6).tolist()})")
    return forces, energy


def read_frames(paths, index: str = ":", every: int = 1, fmt: str | None = None,
                type_map=None, units: str = "ev-angstrom") -> FrameData:
    """Read and check frames from one or more files (or DeePMD folders).

    index: ase-style selection applied to each file, or each DeePMD system of a folder ('0',
    '-1', '10:200', '::2'); every: keep every n-th of the selected frames. fmt, type_map,
    units: see dcf.data.formats.iter_frames (fmt None: guessed). Raises FrameError naming
    file and frame.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    parse_index(index)
    chosen, sources = [], []
    for path, options in _sources(paths, fmt, type_map, units):
        s = len(sources)
        picked, frames, n = _read_selected(path, index, every, options)
        if len(picked) == 0:
            raise FrameError(f"{path}: --index {index} --every {every} selects none of its "
                             f"{n} frames")
        sources.append({"path": str(path), **_fingerprint(path), "index": str(index),
                        "every": int(every), "n_frames": int(len(picked))})
        if options["fmt"]:
            sources[-1]["format"] = options["fmt"]
        chosen += [(s, int(k), atoms) for k, atoms in zip(picked, frames)]
    return _collect(chosen, sources)


def _sources(paths, fmt, type_map, units) -> list[tuple[Path, dict]]:
    """(file or DeePMD system, reader options) of every input, a folder giving its systems."""
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise FrameError(f"{path}: no such file")
        try:
            found += [(p, {"fmt": f, "type_map": type_map, "units": units})
                      for p, f in formats.expand(path, fmt)]
        except formats.FormatError as err:
            raise FrameError(str(err)) from None
    return found


def _fingerprint(path: Path) -> dict:
    if path.is_dir():
        return {"sha256": formats.tree_sha256(path),
                "bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file())}
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def _collect(chosen, sources) -> FrameData:
    forces, energy = [], []
    for s, k, atoms in chosen:
        f, e = check_frame(atoms, f"{sources[s]['path']} frame {k}")
        forces.append(f)
        energy.append(e)
    counts = [len(a) for _, _, a in chosen]
    return FrameData(
        first_atom=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        numbers=np.concatenate([a.numbers for _, _, a in chosen]).astype(np.int32),
        positions=np.concatenate([a.positions for _, _, a in chosen]).astype(np.float64),
        forces=np.concatenate(forces).astype(np.float64),
        cell=np.array([a.cell.array for _, _, a in chosen], dtype=np.float64).reshape(-1, 3, 3),
        pbc=np.array([a.pbc for _, _, a in chosen], dtype=bool).reshape(-1, 3),
        energy=np.array(energy, dtype=np.float64),
        source=np.array([s for s, _, _ in chosen], dtype=np.int32),
        source_frame=np.array([k for _, k, _ in chosen], dtype=np.int64),
        sources=sources)


def check_elements(frames: FrameData, spec: FingerprintSpec) -> None:
    """Raise FrameError naming the first frame with an element the spec does not cover."""
    from ase.data import chemical_symbols

    known = {chemical_symbols.index(el) for el in spec.elements}
    bad = ~np.isin(frames.numbers, list(known))
    if bad.any():
        atom = int(np.argmax(bad))
        k = int(np.searchsorted(frames.first_atom, atom, side="right") - 1)
        missing = sorted({chemical_symbols[z] for z in np.unique(frames.numbers[bad])})
        raise FrameError(f"{frames.label(k)} contains {', '.join(missing)}, which the "
                         f"fingerprint spec {spec.name or ''} does not cover (elements: "
                         f"{', '.join(spec.elements)})")
