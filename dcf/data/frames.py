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
from dcf.parallel import SerialComm, split_by_cost


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
    text = str(index)
    try:
        if ":" not in text:
            return int(text)
        return slice(*[None if part == "" else int(part) for part in text.split(":")])
    except (ValueError, TypeError):
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
    """Forces (n, 3) eV/A and energy (eV, NaN if none) of one ase.Atoms frame, after checking
    that the forces exist and are finite and that the cell makes sense for the periodic
    directions (check_arrays)."""
    return check_arrays(_frame_dict(atoms), where)


def check_arrays(frame: dict, where: str) -> tuple[np.ndarray, float]:
    """check_frame for a frame given as a dict of numbers, positions, cell, pbc, forces (or
    None) and energy (or None), as dcf.data.extxyz.parse_frame returns it."""
    positions = np.asarray(frame["positions"])
    n = len(positions)
    if n == 0:
        raise FrameError(f"{where}: no atoms")
    if not np.all(np.isfinite(positions)):
        raise FrameError(f"{where}: positions are not finite")
    forces = frame["forces"]
    if forces is None:
        raise FrameError(f"{where}: no forces (dcf needs reference forces for every frame)")
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (n, 3) or not np.all(np.isfinite(forces)):
        raise FrameError(f"{where}: forces have shape {forces.shape} or are not finite "
                         f"(expected finite ({n}, 3))")
    energy = frame["energy"]
    energy = float(energy) if energy is not None else float("nan")
    cell = np.asarray(frame["cell"], dtype=float).reshape(3, 3)
    pbc = np.asarray(frame["pbc"], dtype=bool).reshape(3)
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
                type_map=None, units: str = "ev-angstrom", comm=None) -> FrameData:
    """Read and check frames from one or more files (or DeePMD folders).

    index: ase-style selection applied to each file, or each DeePMD system of a folder ('0',
    '-1', '10:200', '::2'); every: keep every n-th of the selected frames. fmt, type_map,
    units: see dcf.data.formats.iter_frames (fmt None: guessed). Raises FrameError naming
    file and frame.

    comm: a dcf.parallel communicator (default serial). With K ranks, each rank parses only
    its share: the frames of seekable files (extxyz, .traj, n2p2; dcf.data.seek) are cut into
    K contiguous runs of near-equal cost, and each source that must be read whole goes to one
    rank. The frames are then gathered (buffer-based) so that every rank returns the same
    FrameData as a serial read, sources' hashes included. An error on any rank is raised on
    every rank: the one a serial read would have met first.
    """
    from dcf.data.seek import seek_index

    comm = comm or SerialComm()
    if isinstance(paths, (str, Path)):
        paths = [paths]
    parse_index(index)
    if every < 1:
        raise FrameError(f"--every must be >= 1, got {every}")
    found = _sources(paths, fmt, type_map, units)
    indexes = _collective(lambda: [seek_index(p, o["fmt"], units) for p, o in found], comm)
    picks = [None if ix is None else _selected(p, ix.n, index, every)
             for (p, _), ix in zip(found, indexes)]
    share = _share(indexes, picks, comm.size)
    local, error = _read_share(found, indexes, picks, share[comm.rank], index, every, comm)
    return _gather(local, error, found, index, every, comm)


def _collective(work, comm):
    """work() on every rank; a FrameError (or FormatError) on any rank is raised on all."""
    result, error = None, None
    try:
        result = work()
    except (FrameError, formats.FormatError) as err:
        error = str(err)
    errors = [e for e in comm.allgather(error) if e is not None]
    if errors:
        raise FrameError(errors[0])
    return result


def _selected(path, n: int, index: str, every: int) -> np.ndarray:
    """Frame numbers of a seekable source of n frames chosen by index and every."""
    if n == 0:
        raise FrameError(f"{path} holds no frames")
    picked = select(n, index, every)
    if len(picked) == 0:
        raise FrameError(f"{path}: --index {index} --every {every} selects none of its "
                         f"{n} frames")
    return picked


def _share(indexes, picks, size: int) -> list[list[tuple]]:
    """Per rank, its pieces: (source, lo, hi) = picks[source][lo:hi] of a seekable source, or
    (source, None, None) for a whole source. Seekable frames are cut into `size` contiguous
    runs of near-equal cost; whole sources go round-robin, rank by rank."""
    out = [[] for _ in range(size)]
    whole = [s for s, ix in enumerate(indexes) if ix is None]
    for w, s in enumerate(whole):
        out[w % size].append((s, None, None))
    seekable = [s for s, ix in enumerate(indexes) if ix is not None]
    if not seekable:
        return out
    owner = split_by_cost(np.concatenate([indexes[s].weights[picks[s]] for s in seekable]), size)
    at = 0
    for s in seekable:
        mine = owner[at:at + len(picks[s])]
        for r in np.unique(mine):
            lo, hi = np.searchsorted(mine, [r, r + 1])
            out[int(r)].append((s, int(lo), int(hi)))
        at += len(picks[s])
    return out


def _read_share(found, indexes, picks, pieces, index, every, comm):
    """This rank's frames: (list of (source, position in the source's picks, frame numbers,
    frames as dicts), first error as (source, position, message) or None) and the
    fingerprints of the sources it hashes."""
    done, error, hashed = [], None, {}
    for s, lo, hi in pieces:
        path, options = found[s]
        try:
            if lo is None:
                numbers, frames, n = _read_selected(path, index, every, options)
                if len(numbers) == 0:
                    raise FrameError(f"{path}: --index {index} --every {every} selects none "
                                     f"of its {n} frames")
                lo = 0
            else:
                numbers = picks[s][lo:hi]
                frames = _read_numbers(path, indexes[s], numbers)
            raw = [_frame_dict(f) for f in frames]
            for k, f in zip(numbers, raw):
                f["forces"], f["energy"] = check_arrays(f, f"{path} frame {k}")
            done.append((s, lo, np.asarray(numbers, np.int64), raw))
        except FrameError as err:
            error = error or (s, lo or 0, str(err))
            break
    for s in range(comm.rank, len(found), comm.size):
        hashed[s] = _fingerprint(found[s][0])
    return (done, hashed), error


def _read_numbers(path, index, numbers) -> list:
    """Frames `numbers` of a seekable source, as FrameErrors naming the file and frame."""
    from dcf.data.seek import SeekError

    try:
        return index.read(numbers)
    except SeekError as err:
        raise FrameError(f"cannot read frame {err.frame} of {path} (is the file truncated "
                         f"or damaged?): {type(err.cause).__name__}: {err.cause}") from None
    except formats.FormatError as err:
        raise FrameError(str(err)) from None


def _frame_dict(frame) -> dict:
    """numbers, positions, cell, pbc, forces (or None), energy (or None) of a frame given as
    ase.Atoms with results or already as such a dict (dcf.data.extxyz.parse_frame)."""
    if isinstance(frame, dict):
        return frame
    results = _results(frame)
    energy = results.get("energy", results.get("free_energy"))
    return {"numbers": frame.numbers, "positions": frame.positions, "cell": frame.cell.array,
            "pbc": frame.pbc, "forces": results.get("forces"),
            "energy": None if energy is None else energy}


def _gather(local, error, found, index, every, comm) -> FrameData:
    """The FrameData of all ranks' frames in serial order, on every rank."""
    (done, hashed), errors = local, comm.allgather(error)
    errors = sorted(e for e in errors if e is not None)
    if errors:
        raise FrameError(errors[0][2])
    pieces = [(s, lo, len(numbers)) for s, lo, numbers, _ in done]
    frames = [f for *_, raw in done for f in raw]
    numbers = np.concatenate([n for _, _, n, _ in done] or [np.zeros(0, np.int64)])
    source = np.concatenate([np.full(len(n), s, np.int32) for s, _, n, _ in done]
                            or [np.zeros(0, np.int32)])
    mine = _arrays(frames, source, numbers)
    everything = {key: comm.allgatherv(value) for key, value in mine.items()}
    all_pieces = [p for rank_pieces in comm.allgather(pieces) for p in rank_pieces]
    fingerprints = {s: fp for part in comm.allgather(hashed) for s, fp in part.items()}
    order = _piece_order(all_pieces)
    data = _reorder(everything, all_pieces, order)
    counts = np.bincount(data["source"], minlength=len(found))
    sources = []
    for s, (path, options) in enumerate(found):
        sources.append({"path": str(path), **fingerprints[s], "index": str(index),
                        "every": int(every), "n_frames": int(counts[s])})
        if options["fmt"]:
            sources[-1]["format"] = options["fmt"]
    return _frame_data(data, sources)


def _arrays(frames: list, source, numbers) -> dict:
    """Flat arrays of checked frame dicts (per-atom and per-frame, as FrameData)."""
    def rows(key, shape, dtype):
        parts = [np.asarray(f[key], dtype).reshape(shape) for f in frames]
        return np.concatenate(parts) if parts else np.zeros((0,) + shape[1:], dtype)
    return {"counts": np.array([len(f["numbers"]) for f in frames], np.int64),
            "numbers": rows("numbers", (-1,), np.int32),
            "positions": rows("positions", (-1, 3), np.float64),
            "forces": rows("forces", (-1, 3), np.float64),
            "cell": rows("cell", (1, 3, 3), np.float64),
            "pbc": rows("pbc", (1, 3), np.uint8),
            "energy": np.array([f["energy"] for f in frames], np.float64),
            "source": np.asarray(source, np.int32), "source_frame": numbers}


def _frame_data(data: dict, sources: list) -> FrameData:
    """FrameData of the flat arrays of _arrays."""
    return FrameData(first_atom=np.concatenate([[0], np.cumsum(data["counts"])]).astype(np.int64),
                     numbers=data["numbers"], positions=data["positions"],
                     forces=data["forces"], cell=data["cell"], pbc=data["pbc"].astype(bool),
                     energy=data["energy"], source=data["source"],
                     source_frame=data["source_frame"], sources=sources)


def _piece_order(pieces) -> np.ndarray:
    """Indices that sort pieces (source, first position, count) into serial order."""
    return np.array(sorted(range(len(pieces)), key=lambda p: pieces[p][:2]), dtype=np.intp)


_PER_ATOM = ("numbers", "positions", "forces")


def _reorder(data: dict, pieces, order) -> dict:
    """The gathered arrays with their pieces put in `order` (frames and atoms alike)."""
    sizes = np.array([p[2] for p in pieces], np.int64)
    frame_start = np.concatenate([[0], np.cumsum(sizes)])
    atom_start = np.concatenate([[0], np.cumsum(data["counts"])])
    frame_idx = np.concatenate([np.arange(frame_start[p], frame_start[p + 1]) for p in order]
                               or [np.zeros(0, np.int64)])
    atom_idx = np.concatenate([np.arange(atom_start[frame_start[p]],
                                         atom_start[frame_start[p + 1]]) for p in order]
                              or [np.zeros(0, np.int64)])
    if np.array_equal(frame_idx, np.arange(len(frame_idx))):
        return data                                  # already in order (the usual case)
    return {key: value[atom_idx if key in _PER_ATOM else frame_idx]
            for key, value in data.items()}


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
    """FrameData of (source, frame number, ase.Atoms) triples, each frame checked."""
    frames = [_frame_dict(atoms) for _, _, atoms in chosen]
    for (s, k, _), f in zip(chosen, frames):
        f["forces"], f["energy"] = check_arrays(f, f"{sources[s]['path']} frame {k}")
    data = _arrays(frames, [s for s, _, _ in chosen], np.array([k for _, k, _ in chosen],
                                                                  np.int64))
    return _frame_data(data, sources)


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
