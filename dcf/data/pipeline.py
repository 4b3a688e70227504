"""Featurize frames into a feature store: in blocks, restartable, shared across MPI ranks.

``featurize_to_store(out, spec, frames, plan, provenance)`` computes G and A of every sampled
snapshot (dcf.data.sampling.SamplingPlan) and writes the store (dcf.data.store) to `out`.

How it stays restartable and identical across rank counts:

* The frames to featurize, in store order, are cut into blocks of a fixed number of frames.
  Each finished block is saved as ``block-NNNNNN.npz`` in a checkpoint folder
  ``.<out name>.partial.d/`` beside `out` (written under a temporary name, then renamed: a
  block file is complete or absent, even if the process is killed).
* The folder's ``manifest.json`` holds a digest of everything that determines the result (spec,
  frames, sampling plan, block size). A later run with the same inputs finds the folder and
  featurizes only the missing blocks; with other inputs it starts afresh.
* A frame of more than `block_atoms` atoms (a few large structures) is cut into blocks of
  central atoms, each featurized with its full neighbor environment
  (``Featurizer.environment(centers=...)``), so that one 100k-atom frame also uses every rank.
* Rank r of K featurizes one contiguous run of the missing blocks (near-equal in atoms). Then
  every rank compresses its share of the store's chunks (dcf.data.store.encode_chunk: HDF5's
  own shuffle + deflate bytes), rank 0 gathers them (one buffer-based Gatherv) and writes them
  as they are (direct chunk writes) into the HDF5 store under a temporary name, and renames
  it; the checkpoint folder is removed. The result depends only on the inputs, never on K,
  the block schedule or interruptions.

How it fails: an exception of any type on any rank (a frame that cannot be featurized, a full
disk, a MemoryError, a damaged block file) is caught, sent to rank 0 with the rank's other
messages and broadcast, so that every rank raises the same `FeaturizeError` together; none is
left waiting for another. Ctrl-C ends every rank the same way with KeyboardInterrupt and keeps
the finished blocks for a resume.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dcf.descriptors.spec import FingerprintSpec
from dcf.errors import CollectiveError, describe
from dcf.files import write_atomic
from dcf.parallel import SerialComm, split_by_cost

MANIFEST = "manifest.json"
INTERRUPTED = "interrupted"


class FeaturizeError(CollectiveError, ValueError):
    """Featurizing failed on some rank; raised on every rank with that rank's message."""


@dataclass
class RunSummary:
    """What a featurize_to_store call did (rank 0; other ranks get the same counts).

    frames_featurized, atoms_featurized: work done in this run (resumed blocks excluded);
    seconds: wall time of the featurization phase; assemble_seconds: making the store
    (compressing, gathering and writing); resumed_blocks / n_blocks: blocks found from an
    earlier, interrupted run; phases: seconds of "featurize", "compress" (this rank's chunks),
    "gather" (waiting for and receiving the other ranks' chunks) and "write" (rank 0).
    """

    frames_featurized: int
    atoms_featurized: int
    seconds: float
    assemble_seconds: float
    n_blocks: int
    resumed_blocks: int
    ranks: int
    phases: dict = field(default_factory=dict)


def checkpoint_dir(out) -> Path:
    """The checkpoint folder of output `out`."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial.d")


def job_digest(spec: FingerprintSpec, frames, plan, layout: str) -> str:
    """sha256 of everything that determines the store's contents and the block layout
    (`layout`: the block sizes, as text)."""
    h = hashlib.sha256()
    h.update(spec.fingerprint.encode())
    h.update(plan.sha256.encode())
    h.update(layout.encode())
    for key in ("first_atom", "numbers", "positions", "forces", "cell", "pbc", "energy"):
        h.update(np.ascontiguousarray(getattr(frames, key)).tobytes())
    return h.hexdigest()


def default_block_frames(frames, work: np.ndarray) -> int:
    """Frames per checkpoint block: 64+ blocks for load balance, at most ~50k atoms each."""
    if len(work) == 0:
        return 1
    mean_atoms = max(frames.n_atoms / max(len(frames), 1), 1.0)
    return int(max(1, min(-(-len(work) // 64), -(-50_000 // mean_atoms))))


def default_block_atoms(frames, work: np.ndarray) -> int:
    """Central atoms per block of a frame too large for one block: 1/64 of the atoms to
    featurize (at least 256, at most 50k), so that a few large frames still give 64 blocks;
    frames of typical trajectories stay whole."""
    atoms = int(np.diff(frames.first_atom)[work].sum()) if len(work) else 0
    return int(min(50_000, max(256, -(-atoms // 64))))


class _Blocks:
    """The block layout: per block, its pieces (frame, first atom, end atom) in store order,
    and each element's row ranges. Frames of more than block_atoms atoms are cut into pieces
    of near-equal numbers of central atoms, one block each; the others are grouped
    block_frames to a block."""

    def __init__(self, frames, plan, block_frames: int, block_atoms: int):
        self.counts = np.diff(frames.first_atom)
        work = plan.order[plan.needed()[plan.order]]              # frames to featurize
        self.pieces, group = [], []
        for k in map(int, work):
            n = int(self.counts[k])
            if n > block_atoms:
                self.pieces += [[(k, int(a), int(b))] for a, b in _cuts(n, block_atoms)]
                continue
            group.append((k, 0, n))
            if len(group) == block_frames:
                self.pieces.append(group)
                group = []
        if group:
            self.pieces.append(group)
        self.n = len(self.pieces)
        pos = np.empty(plan.n_frames, np.int64)
        pos[plan.order] = np.arange(plan.n_frames)
        width = int(self.counts.max(initial=0)) + 1
        starts = np.array([pos[p[0][0]] * width + p[0][1] for p in self.pieces], np.int64)
        self.rows = {}
        for el, r in plan.rows.items():
            keys = pos[r["frame"]] * width + r["atom"]
            self.rows[el] = np.concatenate([np.searchsorted(keys, starts), [len(keys)]])

    def frames(self, b: int) -> list[int]:
        return [k for k, _, _ in self.pieces[b]]

    def atoms(self, b: int) -> int:
        """Central atoms of block b."""
        return sum(hi - lo for _, lo, hi in self.pieces[b])

    def frames_done(self, b: int) -> int:
        """Frames that block b completes (a cut frame counts with its last piece)."""
        return sum(1 for k, _, hi in self.pieces[b] if hi == self.counts[k])

    def row_range(self, el: str, b: int) -> tuple[int, int]:
        return int(self.rows[el][b]), int(self.rows[el][b + 1])


def _cuts(n: int, block_atoms: int) -> list[tuple[int, int]]:
    """[lo, hi) atom ranges cutting n atoms into ceil(n / block_atoms) near-equal pieces."""
    m = -(-n // block_atoms)
    edges = np.arange(m + 1) * n // m
    return list(zip(edges[:-1], edges[1:]))


def _block_path(folder: Path, b: int) -> Path:
    return folder / f"block-{b:06d}.npz"


def _featurize_block(b, blocks, featurizer, frames, plan, folder) -> tuple[int, int, dict]:
    """Featurize block b's pieces, keep the sampled rows, save them. Returns (frames
    completed, atoms, {"El.G": (n, nG), "El.A": (n, nA, 3)})."""
    spec = featurizer.spec
    parts = {el: {"G": [], "A": []} for el in spec.elements}
    for k, lo, hi in blocks.pieces[b]:
        atoms = frames.atoms(k)
        whole = lo == 0 and hi == len(atoms)
        try:
            f = featurizer.features(featurizer.environment(
                atoms, centers=None if whole else np.arange(lo, hi)))
        except ValueError as err:
            raise ValueError(f"{frames.label(k)}: {err}") from None
        for el in spec.elements:
            rlo, rhi = blocks.row_range(el, b)
            r = plan.rows[el]
            wanted = r["atom"][rlo:rhi][r["frame"][rlo:rhi] == k]   # ascending atom indices
            if len(wanted) == 0:
                continue
            rows = np.searchsorted(f.index[el], wanted)
            parts[el]["G"].append(f.G[el][rows])
            parts[el]["A"].append(f.A[el][rows])
    arrays = {}
    for el in spec.elements:
        nG, nA = spec.n_features(el)
        empty = {"G": np.zeros((0, nG)), "A": np.zeros((0, nA, 3))}
        for key, chunks in parts[el].items():
            arrays[f"{el}.{key}"] = np.concatenate(chunks) if chunks else empty[key]
        lo, hi = blocks.row_range(el, b)
        if len(arrays[f"{el}.G"]) != hi - lo:     # the plan and the features must agree
            raise RuntimeError(f"block {b}: {len(arrays[f'{el}.G'])} {el} rows, expected {hi - lo}")
    write_atomic(_block_path(folder, b), lambda tmp: np.savez(tmp, **arrays))
    return blocks.frames_done(b), blocks.atoms(b), arrays


def _failure(err: BaseException, comm) -> str:
    """The message of an error on this rank, naming the rank when there are several."""
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(err, FeaturizeError):         # already says where (a rank or a file)
        return str(err)
    where = f"rank {comm.rank} of {comm.size}: " if comm.size > 1 else ""
    return where + (str(err) if isinstance(err, ValueError) and not isinstance(err, OSError)
                    else describe(err))


def _on_rank0(work, comm):
    """Run work() on rank 0 only; every rank then raises its error (FeaturizeError) or returns
    its result (None elsewhere)."""
    result = error = None
    if comm.rank == 0:
        try:
            result = work()
        except (Exception, KeyboardInterrupt) as err:     # noqa: BLE001 - shared with all ranks
            error = _failure(err, comm)
    error = comm.bcast(error)
    if error == INTERRUPTED:
        raise KeyboardInterrupt
    if error is not None:
        raise FeaturizeError(error)
    return result


def _prepare_folder(folder: Path, digest: str, resume: bool, comm) -> None:
    """Rank 0: keep the folder if it belongs to this job (and resume), else start it afresh."""
    def prepare():
        manifest = folder / MANIFEST
        same = False
        if resume and manifest.is_file():
            try:
                same = json.loads(manifest.read_text()).get("digest") == digest
            except (OSError, ValueError):
                same = False
        if not same:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            manifest.write_text(json.dumps({"digest": digest}))
    _on_rank0(prepare, comm)


def featurize_to_store(out, spec: FingerprintSpec, frames, plan, provenance: dict, comm=None,
                       num_threads: int | None = None, block_frames: int | None = None,
                       resume: bool = True, on_progress=None,
                       compression: str = "gzip", block_atoms: int | None = None) -> RunSummary:
    """Featurize the sampled snapshots of `frames` and write the feature store `out`.

    frames: dcf.data.frames.FrameData; plan: dcf.data.sampling.SamplingPlan over those frames;
    provenance: JSON-serializable dict stored in the file; comm: dcf.parallel communicator
    (default serial); block_frames: frames per checkpoint block (default from
    default_block_frames); block_atoms: frames with more atoms are cut into blocks of that
    many central atoms (default from default_block_atoms); resume: reuse finished blocks of
    an interrupted run of the same job; on_progress(frames, atoms): called on rank 0 as blocks
    finish on any rank (including, once, the blocks resumed); compression: of the store
    (dcf.data.store.StoreWriter).
    Raises FeaturizeError (a ValueError, on every rank) if any rank fails, with that rank's
    message; the checkpoint folder is then removed, as it is after success. KeyboardInterrupt
    on any rank is raised on every rank, and the folder is kept for a resume.
    """
    from dcf.descriptors.fingerprints import Featurizer

    comm = comm or SerialComm()
    out = Path(out)
    folder = checkpoint_dir(out)
    featurizer = Featurizer(spec, num_threads=num_threads)
    work = plan.order[plan.needed()[plan.order]]
    block_frames = block_frames or default_block_frames(frames, work)
    block_atoms = block_atoms or default_block_atoms(frames, work)
    blocks = _Blocks(frames, plan, block_frames, block_atoms)
    _prepare_folder(folder, job_digest(spec, frames, plan, f"{block_frames} {block_atoms}"),
                    resume, comm)

    done = comm.bcast([b for b in range(blocks.n) if _block_path(folder, b).is_file()]
                      if comm.rank == 0 else None)
    todo = np.array(sorted(set(range(blocks.n)) - set(done)), dtype=np.int64)
    if comm.rank == 0 and on_progress and done:
        on_progress(sum(blocks.frames_done(b) for b in done), sum(blocks.atoms(b) for b in done))

    start = time.perf_counter()
    owner = split_by_cost([blocks.atoms(int(b)) for b in todo], comm.size)
    tally, computed = _Tally(comm, on_progress), {}
    for b in map(int, todo[owner == comm.rank]):
        try:
            nf, na, computed[b] = _featurize_block(b, blocks, featurizer, frames, plan, folder)
            tally.block_done(nf, na)
        except (Exception, KeyboardInterrupt) as err:     # noqa: BLE001 - shared with all ranks
            tally.error = tally.error or _failure(err, comm)
            break
    frames_done, atoms_done, error = tally.finish()
    seconds = time.perf_counter() - start
    if error == INTERRUPTED:
        raise KeyboardInterrupt
    if error is not None:
        if comm.rank == 0:
            shutil.rmtree(folder, ignore_errors=True)
        raise FeaturizeError(error)

    t0 = time.perf_counter()
    block_owner = np.full(blocks.n, -1, np.int64)
    block_owner[todo] = owner
    chunks = _ChunkPlan(spec, frames, plan, blocks, block_owner, comm.size)
    payload = _encode_share(chunks, comm, frames, plan, blocks, computed, folder, spec,
                            compression)
    t1 = time.perf_counter()
    gathered = comm.gather_bytes(payload)
    t2 = time.perf_counter()

    def assemble():
        try:
            _assemble(out, spec, frames, plan, provenance, chunks, gathered, compression)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        shutil.rmtree(folder, ignore_errors=True)

    _on_rank0(assemble, comm)
    t3 = time.perf_counter()
    return RunSummary(frames_done, atoms_done, seconds, t3 - t0, blocks.n, len(done), comm.size,
                      {"featurize": seconds, "compress": t1 - t0, "gather": t2 - t1,
                       "write": t3 - t2})


class _ChunkPlan:
    """Which rank compresses which chunk of the store: the chunks of G and A go to the rank
    that featurized the block holding their first row (so it mostly has them in memory), the
    rest to the least loaded rank by bytes, in file order. Deterministic on every rank."""

    def __init__(self, spec, frames, plan, blocks, block_owner, size: int):
        from dcf.data.store import store_layout

        self.datasets = store_layout(spec, frames, plan)
        self.tasks = [(d, c) for d in range(len(self.datasets))
                      for c in range(self.datasets[d].n_chunks)]
        cost = np.zeros(len(self.tasks))
        self.rank = np.full(len(self.tasks), -1, np.int64)
        for t, (d, c) in enumerate(self.tasks):
            ds = self.datasets[d]
            lo, hi = ds.rows(c)
            cost[t] = (hi - lo) * np.prod(ds.shape[1:], dtype=np.int64)
            _, el, key = (ds.name.split("/") + ["", ""])[:3]
            if key in ("G", "A") and blocks.n:
                self.rank[t] = block_owner[np.searchsorted(blocks.rows[el], lo, side="right") - 1]
        load = np.bincount(self.rank[self.rank >= 0], cost[self.rank >= 0], minlength=size)
        for t in np.flatnonzero(self.rank < 0):
            self.rank[t] = int(np.argmin(load))
            load[self.rank[t]] += cost[t]


def _chunk_rows(ds, c: int, frames, plan, blocks, computed: dict, folder, spec) -> np.ndarray:
    """The rows of chunk c of dataset `ds` (dcf.data.store.ChunkedDataset)."""
    lo, hi = ds.rows(c)
    group, *rest = ds.name.split("/")
    if group == "frames":
        return getattr(frames, rest[0])[lo:hi]
    el, key = rest
    r = plan.rows[el]
    if key in ("frame", "atom", "weight"):
        return r[key][lo:hi]
    if key == "F":
        return frames.forces[frames.first_atom[r["frame"][lo:hi]] + r["atom"][lo:hi]]
    edges = blocks.rows[el]
    parts, b = [], int(np.searchsorted(edges, lo, side="right") - 1)
    while b < blocks.n and edges[b] < hi:
        if b not in computed:
            computed[b] = _read_block(folder, b, spec, blocks)
        rows = computed[b][f"{el}.{key}"]
        parts.append(rows[max(lo - edges[b], 0):hi - edges[b]])
        b += 1
    return np.concatenate(parts)


def _encode_share(chunks, comm, frames, plan, blocks, computed, folder, spec,
                  compression) -> bytes:
    """This rank's chunks, compressed and packed for gather_bytes: an int64 header (count,
    then task and length of each) and the bytes; on an error, a header of -1 and the message."""
    from dcf.data.store import encode_chunk

    try:
        mine = np.flatnonzero(chunks.rank == comm.rank)
        blobs = []
        for t in mine:
            d, c = chunks.tasks[t]
            ds = chunks.datasets[d]
            rows = _chunk_rows(ds, c, frames, plan, blocks, computed, folder, spec)
            blobs.append(encode_chunk(rows, ds, compression))
        header = np.array([len(mine), *[v for t, blob in zip(mine, blobs)
                                        for v in (t, len(blob))]], np.int64)
        return header.tobytes() + b"".join(blobs)
    except (Exception, KeyboardInterrupt) as err:     # noqa: BLE001 - shared with all ranks
        message = _failure(err, comm)
        return np.array([-1], np.int64).tobytes() + message.encode()


def _unpack(payload: bytes) -> list[tuple[int, bytes]]:
    """(task, bytes) of one rank's packed chunks; raises FeaturizeError with its message."""
    n = int(np.frombuffer(payload[:8], np.int64)[0])
    if n < 0:
        message = payload[8:].decode()
        if message == INTERRUPTED:
            raise KeyboardInterrupt
        raise FeaturizeError(message)
    header = np.frombuffer(payload[8:8 * (1 + 2 * n)], np.int64).reshape(n, 2)
    out, at = [], 8 * (1 + 2 * n)
    for t, length in header:
        out.append((int(t), payload[at:at + int(length)]))
        at += int(length)
    return out


def _assemble(out: Path, spec, frames, plan, provenance, chunks, gathered,
              compression) -> None:
    """Rank 0: write the store from every rank's compressed chunks, under a temporary name,
    then rename it."""
    from dcf.data.store import StoreWriter

    pieces = [piece for payload in gathered for piece in _unpack(payload)]

    def write(tmp):
        writer = StoreWriter(tmp, spec, frames, plan, provenance, compression)
        try:
            for t, blob in pieces:
                d, c = chunks.tasks[t]
                writer.write_chunk(chunks.datasets[d].name, c, blob)
            writer.finish()
        finally:
            writer.close()

    write_atomic(out, write)


def _read_block(folder: Path, b: int, spec, blocks) -> dict:
    """Block b's rows, {"El.G": ..., "El.A": ...}, checked against the layout; a damaged or
    foreign block file is a FeaturizeError that names it."""
    path = _block_path(folder, b)
    out = {}
    try:
        with np.load(path) as z:
            for el in spec.elements:
                lo, hi = blocks.row_range(el, b)
                for key in ("G", "A"):
                    out[f"{el}.{key}"] = z[f"{el}.{key}"]
                    if len(out[f"{el}.{key}"]) != hi - lo:
                        raise ValueError(f"{len(out[f'{el}.{key}'])} {el} rows, expected "
                                         f"{hi - lo}")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise FeaturizeError(f"checkpoint block {path} is damaged ({type(err).__name__}: "
                             f"{err}); the store was not written: run again with --fresh") \
            from None
    return out


class _Tally:
    """Counts finished work across ranks. Other ranks report each block and their end (with
    their error, if any) to rank 0; rank 0 calls on_progress and, at the end, waits for every
    rank and broadcasts the totals and the first error."""

    def __init__(self, comm, on_progress):
        self.comm, self.on_progress = comm, on_progress
        self.frames = self.atoms = 0
        self.ended = 1
        self.error = None

    def _count(self, nf: int, na: int) -> None:
        self.frames, self.atoms = self.frames + nf, self.atoms + na
        if self.on_progress:
            self.on_progress(nf, na)

    def _apply(self, message) -> None:
        kind, *payload = message
        if kind == "block":
            self._count(*payload)
        else:                                      # ("end", error or None)
            self.ended += 1
            self.error = self.error or payload[0]

    def block_done(self, nf: int, na: int) -> None:
        if self.comm.rank == 0:
            self._count(nf, na)
            for message in self.comm.poll():
                self._apply(message)
        else:
            self.comm.report(("block", nf, na))

    def finish(self) -> tuple[int, int, str | None]:
        """Wait for all ranks; returns (frames, atoms, first error) on every rank."""
        if self.comm.rank == 0:
            while self.ended < self.comm.size:
                self._apply(self.comm.receive())
            result = (self.frames, self.atoms, self.error)
        else:
            self.comm.report(("end", self.error))
            result = None
        return self.comm.bcast(result)
