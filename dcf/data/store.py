"""The feature store: one HDF5 file of per-element atomic snapshots and the frames they came from.

A *snapshot* is one atom of one frame: its invariant fingerprint G, its covariant axes A and the
reference force F on it (Mailoa et al. 2019, section 2). Layout (format "dcf-feature-store",
version 1; see docs/data.md)::

    /                       attrs: format, version, spec (JSON), spec_sha256, plan_sha256,
                                   provenance (JSON), complete (True once fully written)
    /frames/first_atom      (n_frames + 1,) int64   frame k: atoms first_atom[k]:first_atom[k+1]
    /frames/numbers         (n_atoms_total,) int32  atomic numbers
    /frames/positions       (n_atoms_total, 3) f8   Angstrom
    /frames/forces          (n_atoms_total, 3) f8   eV/Angstrom
    /frames/cell            (n_frames, 3, 3) f8     Angstrom, rows are the cell vectors
    /frames/pbc             (n_frames, 3) bool
    /frames/energy          (n_frames,) f8          eV; NaN where the source had none
    /frames/test            (n_frames,) bool        True: test frame, False: training frame
    /frames/source          (n_frames,) int32       index into provenance["sources"]
    /frames/source_frame    (n_frames,) int64       frame number within that source file
    /snapshots/<el>/G       (n, nG) f8              attrs: n_train (rows [0, n_train) are training)
    /snapshots/<el>/A       (n, nA, 3) f8
    /snapshots/<el>/F       (n, 3) f8               eV/Angstrom
    /snapshots/<el>/frame   (n,) int64              frame id
    /snapshots/<el>/atom    (n,) int64              atom index within the frame
    /snapshots/<el>/weight  (n,) f8                 loss weight (1, or more for chosen snapshots)

Snapshot rows are ordered training rows first, then test rows, each by (frame, atom): a split is
one contiguous range, read chunk by chunk. Large datasets are chunked and compressed (gzip
level 1 with the shuffle filter by default).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcf.descriptors.spec import FingerprintSpec, SpecError
from dcf.errors import DCFError

FORMAT = "dcf-feature-store"
VERSION = 1
SNAPSHOT_KEYS = ("G", "A", "F", "frame", "atom", "weight")
COMPRESSIONS = ("gzip", "lzf", "none")
_SPLITS = (None, "train", "test")


class StoreError(DCFError, ValueError):
    """A feature store that is missing, unreadable, incomplete, of another format or version."""


def chunk_rows(row_bytes: int, target_bytes: int = 1 << 19) -> int:
    """Rows per HDF5 chunk: about `target_bytes` (512 KiB) per chunk, between 64 and 16384."""
    return int(np.clip(target_bytes // max(row_bytes, 1), 64, 16384))


class FeatureStore:
    """Read-only access to a feature store.

    >>> with FeatureStore("features.h5") as store:
    ...     for batch in store.batches("Li", 256, seed=epoch): ...

    Arrays come back as numpy arrays: G (n, nG) float64, A (n, nA, 3) float64, F (n, 3) eV/A,
    frame (n,) int64, atom (n,) int64, weight (n,) float64.
    """

    def __init__(self, path):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no such feature store")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as err:
            raise StoreError(f"{self.path}: not a readable HDF5 file ({err})") from None
        try:
            self._check()
        except Exception:
            self._h5.close()
            raise

    def _check(self) -> None:
        attrs = self._h5.attrs
        if attrs.get("format") != FORMAT:
            raise StoreError(f"{self.path}: not a dcf feature store (format "
                             f"{attrs.get('format')!r})")
        version = int(attrs.get("version", -1))
        if version != VERSION:
            raise StoreError(f"{self.path}: feature store version {version}; this dcf reads "
                             f"version {VERSION}")
        if not attrs.get("complete", False):
            raise StoreError(f"{self.path}: feature store is incomplete (interrupted write)")
        try:
            self.spec = FingerprintSpec.from_dict(json.loads(attrs["spec"]), str(self.path))
        except (KeyError, ValueError, SpecError) as err:
            raise StoreError(f"{self.path}: bad fingerprint spec inside ({err})") from None
        if self.spec.fingerprint != attrs.get("spec_sha256"):
            raise StoreError(f"{self.path}: the stored spec does not match its sha256")
        self.provenance = json.loads(attrs.get("provenance", "{}"))
        self.plan_sha256 = str(attrs.get("plan_sha256", ""))
        frames = self._h5["frames"]
        self._first_atom = frames["first_atom"][()]
        self._test = frames["test"][()].astype(bool)
        self._n_train = {el: int(self._h5["snapshots"][el].attrs["n_train"])
                         for el in self.spec.elements}

    # -- the file ------------------------------------------------------------------------------
    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        counts = ", ".join(f"{el}: {self.n_snapshots(el)}" for el in self.elements)
        return f"FeatureStore({str(self.path)!r}, {self.n_frames} frames, snapshots {counts})"

    @property
    def elements(self) -> tuple:
        return self.spec.elements

    def content_sha256(self) -> str:
        """sha256 of everything but the provenance (spec, split, frames, snapshots): equal for
        stores made from the same inputs and options, however many ranks or restarts.
        Reads the whole file, 65536 rows at a time."""
        import hashlib

        h = hashlib.sha256()
        h.update(self.spec.fingerprint.encode())

        def visit(name, obj):
            if hasattr(obj, "dtype"):
                h.update(name.encode())
                h.update(str(obj.dtype).encode() + str(obj.shape).encode())
                if obj.ndim == 0:
                    h.update(np.ascontiguousarray(obj[()]).tobytes())
                for lo in range(0, len(obj) if obj.ndim else 0, 1 << 16):   # piece by piece
                    h.update(np.ascontiguousarray(obj[lo:lo + (1 << 16)]).tobytes())
            else:
                h.update(name.encode() + json.dumps({k: str(v) for k, v in
                                                     sorted(obj.attrs.items())}).encode())
        self._h5.visititems(visit)
        return h.hexdigest()

    # -- snapshots -----------------------------------------------------------------------------
    def _group(self, el: str):
        if el not in self._n_train:
            raise KeyError(f"{self.path}: no element {el!r} (elements: {', '.join(self.elements)})")
        return self._h5["snapshots"][el]

    def _range(self, el: str, split) -> tuple[int, int]:
        if split not in _SPLITS:
            raise ValueError(f"split must be None, 'train' or 'test', not {split!r}")
        n, n_train = len(self._group(el)["frame"]), self._n_train[el]
        return {None: (0, n), "train": (0, n_train), "test": (n_train, n)}[split]

    def n_snapshots(self, el: str, split=None) -> int:
        """Number of snapshots of element `el` in `split` (None: all, "train", "test")."""
        lo, hi = self._range(el, split)
        return hi - lo

    def n_features(self, el: str) -> tuple[int, int]:
        """(nG, nA) of element `el`."""
        return self.spec.n_features(el)

    def _read(self, el: str, lo: int, hi: int) -> dict:
        g = self._group(el)
        return {key: g[key][lo:hi] for key in SNAPSHOT_KEYS}

    def snapshots(self, el: str, split=None) -> dict:
        """All snapshots of `el` in `split`, in memory: dict of G, A, F, frame, atom, weight."""
        lo, hi = self._range(el, split)
        return self._read(el, lo, hi)

    def snapshot_ids(self, el: str, split=None) -> np.ndarray:
        """(frame, atom) (n, 2) int64 of `el`'s snapshots in `split`, without reading G, A, F."""
        lo, hi = self._range(el, split)
        g = self._group(el)
        return np.stack([g["frame"][lo:hi], g["atom"][lo:hi]], axis=1).astype(np.int64)

    def chunk_rows(self, el: str) -> int:
        """Rows per HDF5 chunk of element `el` (the unit batches() reads)."""
        chunks = self._group(el)["G"].chunks
        return int(chunks[0]) if chunks else max(self.n_snapshots(el), 1)

    def batches(self, el: str, batch_size: int, split="train", shuffle: bool = True,
                seed: int = 0, buffer_chunks: int = 16, drop_last: bool = False):
        """Iterate over `el`'s snapshots of `split` in batches (dicts as in snapshots()).

        Reads chunk by chunk, never the whole element: with `shuffle`, the chunks are visited in
        a random order and rows are shuffled within a buffer of `buffer_chunks` chunks (a block
        shuffle; memory ~ buffer_chunks * 512 KiB per array). Pass a different `seed` each epoch
        (e.g. the epoch number). The last, smaller batch is dropped with `drop_last`.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        lo, hi = self._range(el, split)
        step = self.chunk_rows(el)
        # chunk-aligned pieces of [lo, hi)
        edges = np.unique(np.concatenate([[lo, hi], np.arange((lo // step + 1) * step, hi, step)]))
        pieces = list(zip(edges[:-1], edges[1:]))
        rng = np.random.default_rng(seed)
        if shuffle:
            pieces = [pieces[i] for i in rng.permutation(len(pieces))]
        pending: dict | None = None
        for start in range(0, len(pieces), max(buffer_chunks, 1)):
            parts = [self._read(el, a, b) for a, b in pieces[start:start + buffer_chunks]]
            if pending is not None:
                parts.insert(0, pending)
            buf = {k: np.concatenate([p[k] for p in parts]) for k in SNAPSHOT_KEYS}
            if shuffle:
                perm = rng.permutation(len(buf["frame"]))
                buf = {k: v[perm] for k, v in buf.items()}
            n = len(buf["frame"])
            full = n - n % batch_size
            for b in range(0, full, batch_size):
                yield {k: v[b:b + batch_size] for k, v in buf.items()}
            pending = {k: v[full:] for k, v in buf.items()} if full < n else None
        if pending is not None and not drop_last:
            yield pending

    # -- frames --------------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return len(self._test)

    def frame_ids(self, split=None) -> np.ndarray:
        """int64 ids of the frames in `split` (None: all, "train", "test"), ascending."""
        if split not in _SPLITS:
            raise ValueError(f"split must be None, 'train' or 'test', not {split!r}")
        ids = np.arange(self.n_frames, dtype=np.int64)
        return ids if split is None else ids[self._test == (split == "test")]

    def frame_arrays(self, k: int) -> dict:
        """Frame `k` as arrays: numbers (n,), positions (n, 3) A, forces (n, 3) eV/A,
        cell (3, 3) A, pbc (3,), energy (float eV, NaN if absent), test (bool)."""
        if not 0 <= k < self.n_frames:
            raise IndexError(f"{self.path}: frame {k} out of range (0..{self.n_frames - 1})")
        f = self._h5["frames"]
        a, b = self._first_atom[k], self._first_atom[k + 1]
        return {"numbers": f["numbers"][a:b], "positions": f["positions"][a:b],
                "forces": f["forces"][a:b], "cell": f["cell"][k], "pbc": f["pbc"][k],
                "energy": float(f["energy"][k]), "test": bool(self._test[k]),
                "source": int(f["source"][k]), "source_frame": int(f["source_frame"][k])}

    def frame(self, k: int):
        """Frame `k` as an ase.Atoms with a SinglePointCalculator holding its forces (eV/A)
        and, if the source had one, its energy (eV)."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        d = self.frame_arrays(int(k))
        atoms = Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"],
                      pbc=d["pbc"])
        results = {"forces": d["forces"]}
        if np.isfinite(d["energy"]):
            results["energy"] = d["energy"]
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["frame"] = int(k)
        return atoms

    def frames(self, split=None):
        """Iterate over (k, Atoms) of the frames in `split`."""
        for k in self.frame_ids(split):
            yield int(k), self.frame(int(k))


@dataclass(frozen=True)
class ChunkedDataset:
    """One chunked dataset of a store: name ("frames/positions", "snapshots/Li/G", ...),
    shape, dtype and rows per chunk (chunks are whole rows)."""

    name: str
    shape: tuple
    dtype: str
    chunk_rows: int

    @property
    def n_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_rows)

    def rows(self, c: int) -> tuple[int, int]:
        """Rows [lo, hi) of chunk c."""
        return c * self.chunk_rows, min((c + 1) * self.chunk_rows, self.shape[0])


def store_layout(spec: FingerprintSpec, frames, plan) -> list[ChunkedDataset]:
    """The chunked datasets of a store of `frames` under `plan`, in file order: frames/numbers,
    positions, forces (8192 atoms a chunk), then per element G, A, F, frame, atom, weight
    (about 512 KiB of G a chunk). Datasets with a zero dimension are not chunked."""
    n_atoms = int(frames.first_atom[-1])
    atom_chunk = min(max(n_atoms, 1), 8192)
    out = [ChunkedDataset("frames/numbers", (n_atoms,), "int32", atom_chunk),
           ChunkedDataset("frames/positions", (n_atoms, 3), "float64", atom_chunk),
           ChunkedDataset("frames/forces", (n_atoms, 3), "float64", atom_chunk)]
    for el in spec.elements:
        nG, nA = spec.n_features(el)
        n = len(plan.rows[el]["frame"])
        c = min(chunk_rows(8 * max(nG, 3 * nA, 3)), max(n, 1))
        for key, shape, dtype in (("G", (n, nG), "float64"), ("A", (n, nA, 3), "float64"),
                                  ("F", (n, 3), "float64"), ("frame", (n,), "int64"),
                                  ("atom", (n,), "int64"), ("weight", (n,), "float64")):
            if 0 not in shape[1:]:
                out.append(ChunkedDataset(f"snapshots/{el}/{key}", shape, dtype, c))
    return out


def encode_chunk(rows: np.ndarray, dataset: ChunkedDataset, compression: str = "gzip",
                 level: int = 1) -> bytes:
    """One chunk's bytes as HDF5 stores them, so that any rank can compress a chunk and rank 0
    only writes it (StoreWriter.write_chunk): rows (<= chunk_rows, *row shape) padded with
    zeros to a whole chunk; for "gzip" byte-shuffled and deflated at `level` (HDF5's shuffle
    and deflate filters: the bytes h5py would write), for "none" as they are; for "lzf" raw
    too (rank 0 compresses it through h5py)."""
    full = np.zeros((dataset.chunk_rows,) + tuple(dataset.shape[1:]), dataset.dtype)
    full[:len(rows)] = rows
    if compression != "gzip":
        return full.tobytes()
    import zlib

    size = full.dtype.itemsize
    shuffled = full.view(np.uint8).reshape(-1, size).T.tobytes() if size > 1 else full.tobytes()
    return zlib.compress(shuffled, level)


class StoreWriter:
    """Writes a store: the small frame datasets and attributes at creation, every chunked
    dataset (store_layout) chunk by chunk (write_chunk, with bytes from encode_chunk on any
    rank), and marks it complete on finish(). Used by dcf.data.pipeline.

    frames: dcf.data.frames.FrameData; plan: dcf.data.sampling.SamplingPlan (rows in store order).
    compression: "gzip" (any HDF5 reader; `level` 1-9), "lzf" (h5py only, ~3x faster) or "none".
    Fingerprints of real trajectories compress by only ~10-15%, so the fast gzip level 1 is
    the default.
    """

    def __init__(self, path, spec: FingerprintSpec, frames, plan, provenance: dict,
                 compression: str = "gzip", level: int = 1):
        import h5py

        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}")
        self.path, self.compression = Path(path), compression
        self.h5 = h5py.File(self.path, "w")
        comp = {} if compression == "none" else {"compression": compression, "shuffle": True}
        if compression == "gzip":
            comp["compression_opts"] = level
        a = self.h5.attrs
        a["format"], a["version"], a["complete"] = FORMAT, VERSION, False
        a["spec"], a["spec_sha256"] = spec.to_json(), spec.fingerprint
        a["plan_sha256"] = plan.sha256
        a["provenance"] = json.dumps(provenance, sort_keys=True)

        g = self.h5.create_group("frames")
        g.create_dataset("first_atom", data=frames.first_atom.astype(np.int64))
        g.create_dataset("cell", data=frames.cell.astype(np.float64))
        g.create_dataset("pbc", data=frames.pbc.astype(bool))
        g.create_dataset("energy", data=frames.energy.astype(np.float64))
        g.create_dataset("test", data=plan.test.astype(bool))
        g.create_dataset("source", data=frames.source.astype(np.int32))
        g.create_dataset("source_frame", data=frames.source_frame.astype(np.int64))
        s = self.h5.create_group("snapshots")
        for el in spec.elements:
            s.create_group(el).attrs["n_train"] = int(plan.n_train[el])
        self.layout = {d.name: d for d in store_layout(spec, frames, plan)}
        for el in spec.elements:                 # a spec with no G or no A terms
            nG, nA = spec.n_features(el)
            n = len(plan.rows[el]["frame"])
            for key, shape in (("G", (n, nG)), ("A", (n, nA, 3))):
                if 0 in shape[1:]:
                    s[el].create_dataset(key, shape, np.float64)
        self._datasets = {}
        for name, d in self.layout.items():
            self._datasets[name] = self.h5.create_dataset(
                name, d.shape, d.dtype, chunks=(d.chunk_rows,) + tuple(d.shape[1:]), **comp)

    def write_chunk(self, name: str, c: int, payload: bytes) -> None:
        """Chunk c of dataset `name` from encode_chunk's bytes (written as they are for gzip
        and none; for lzf, h5py compresses the rows)."""
        d, dset = self.layout[name], self._datasets[name]
        lo, hi = d.rows(c)
        if self.compression == "lzf":
            rows = np.frombuffer(payload, d.dtype).reshape((d.chunk_rows,) + tuple(d.shape[1:]))
            dset[lo:hi] = rows[:hi - lo]
        else:
            dset.id.write_direct_chunk((lo,) + (0,) * (len(d.shape) - 1), payload)

    def finish(self) -> None:
        self.h5.attrs["complete"] = True
        self.h5.close()

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.close()
