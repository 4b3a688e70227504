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
* Rank r of K featurizes every K-th missing block. Rank 0 then assembles all blocks, in order,
  into the HDF5 store under a temporary name and renames it; the checkpoint folder is removed.
  The result depends only on the inputs, never on K, the block schedule or interruptions.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcf.descriptors.spec import FingerprintSpec
from dcf.errors import CollectiveError, describe
from dcf.files import write_atomic
from dcf.parallel import SerialComm

MANIFEST = "manifest.json"
INTERRUPTED = "interrupted"


class FeaturizeError(CollectiveError, ValueError):
    """Featurizing failed on some rank; raised on every rank with that rank's message."""


@dataclass
class RunSummary:
    """What a featurize_to_store call did (rank 0; other ranks get the same counts).

    frames_featurized, atoms_featurized: work done in this run (resumed blocks excluded);
    seconds: wall time of the featurization phase; assemble_seconds: writing the store;
    resumed_blocks / n_blocks: blocks found from an earlier, interrupted run.
    """

    frames_featurized: int
    atoms_featurized: int
    seconds: float
    assemble_seconds: float
    n_blocks: int
    resumed_blocks: int
    ranks: int


def checkpoint_dir(out) -> Path:
    """The checkpoint folder of output `out`."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial.d")


def job_digest(spec: FingerprintSpec, frames, plan, block_frames: int) -> str:
    """sha256 of everything that determines the store's contents and the block layout."""
    h = hashlib.sha256()
    h.update(spec.fingerprint.encode())
    h.update(plan.sha256.encode())
    h.update(str(block_frames).encode())
    for key in ("first_atom", "numbers", "positions", "forces", "cell", "pbc", "energy"):
        h.update(np.ascontiguousarray(getattr(frames, key)).tobytes())
    return h.hexdigest()


def default_block_frames(frames, work: np.ndarray) -> int:
    """Frames per checkpoint block: 64+ blocks for load balance, at most ~50k atoms each."""
    if len(work) == 0:
        return 1
    mean_atoms = max(frames.n_atoms / max(len(frames), 1), 1.0)
    return int(max(1, min(-(-len(work) // 64), -(-50_000 // mean_atoms))))


class _Blocks:
    """The block layout: frames to featurize (store order) and each element's row ranges."""

    def __init__(self, plan, block_frames: int):
        self.work = plan.order[plan.needed()[plan.order]]         # frames to featurize
        self.size = block_frames
        self.n = -(-len(self.work) // block_frames)
        pos = np.empty(plan.n_frames, np.int64)
        pos[plan.order] = np.arange(plan.n_frames)
        starts = pos[self.work[::block_frames]]
        edges = np.concatenate([starts, [plan.n_frames]])
        self.rows = {el: np.searchsorted(pos[r["frame"]], edges) for el, r in plan.rows.items()}

    def frames(self, b: int) -> np.ndarray:
        return self.work[b * self.size:(b + 1) * self.size]

    def row_range(self, el: str, b: int) -> tuple[int, int]:
        return int(self.rows[el][b]), int(self.rows[el][b + 1])


def _block_path(folder: Path, b: int) -> Path:
    return folder / f"block-{b:06d}.npz"


def _featurize_block(b, blocks, featurizer, frames, plan, folder) -> tuple[int, int]:
    """Featurize block b's frames, keep the sampled rows, save them. Returns (frames, atoms)."""
    spec = featurizer.spec
    parts = {el: {"G": [], "A": [], "F": []} for el in spec.elements}
    n_atoms = 0
    for k in blocks.frames(b):
        atoms = frames.atoms(int(k))
        try:
            f = featurizer(atoms)
        except ValueError as err:
            raise ValueError(f"{frames.label(int(k))}: {err}") from None
        n_atoms += len(atoms)
        for el in spec.elements:
            lo, hi = blocks.row_range(el, b)
            r = plan.rows[el]
            wanted = r["atom"][lo:hi][r["frame"][lo:hi] == k]       # ascending atom indices
            if len(wanted) == 0:
                continue
            rows = np.searchsorted(f.index[el], wanted)
            parts[el]["G"].append(f.G[el][rows])
            parts[el]["A"].append(f.A[el][rows])
            parts[el]["F"].append(frames.forces[frames.first_atom[k] + wanted])
    arrays = {}
    for el in spec.elements:
        nG, nA = spec.n_features(el)
        empty = {"G": np.zeros((0, nG)), "A": np.zeros((0, nA, 3)), "F": np.zeros((0, 3))}
        for key, chunks in parts[el].items():
            arrays[f"{el}.{key}"] = np.concatenate(chunks) if chunks else empty[key]
        lo, hi = blocks.row_range(el, b)
        if len(arrays[f"{el}.G"]) != hi - lo:     # the plan and the features must agree
            raise RuntimeError(f"block {b}: {len(arrays[f'{el}.G'])} {el} rows, expected {hi - lo}")
    write_atomic(_block_path(folder, b), lambda tmp: np.savez(tmp, **arrays))
    return len(blocks.frames(b)), n_atoms


def _failure(err: BaseException, comm) -> str:
    """The message of an error on this rank, naming the rank when there are several."""
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED
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
                       compression: str = "gzip") -> RunSummary:
    """Featurize the sampled snapshots of `frames` and write the feature store `out`.

    frames: dcf.data.frames.FrameData; plan: dcf.data.sampling.SamplingPlan over those frames;
    provenance: JSON-serializable dict stored in the file; comm: dcf.parallel communicator
    (default serial); block_frames: frames per checkpoint block (default from
    default_block_frames); resume: reuse finished blocks of an interrupted run of the same job;
    on_progress(frames, atoms): called on rank 0 as blocks finish on any rank (including, once,
    the blocks resumed); compression: of the store (dcf.data.store.StoreWriter).
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
    blocks = _Blocks(plan, block_frames)
    _prepare_folder(folder, job_digest(spec, frames, plan, block_frames), resume, comm)

    done = comm.bcast([b for b in range(blocks.n) if _block_path(folder, b).is_file()]
                      if comm.rank == 0 else None)
    todo = sorted(set(range(blocks.n)) - set(done))
    if comm.rank == 0 and on_progress and done:
        on_progress(sum(len(blocks.frames(b)) for b in done),
                    sum(int(frames.first_atom[k + 1] - frames.first_atom[k])
                        for b in done for k in blocks.frames(b)))

    start = time.perf_counter()
    tally = _Tally(comm, on_progress)
    for b in todo[comm.rank::comm.size]:
        try:
            nf, na = _featurize_block(b, blocks, featurizer, frames, plan, folder)
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

    def assemble():
        try:
            _assemble(out, spec, frames, plan, provenance, blocks, folder, compression)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        shutil.rmtree(folder, ignore_errors=True)

    _on_rank0(assemble, comm)
    return RunSummary(frames_done, atoms_done, seconds, time.perf_counter() - t0, blocks.n,
                      len(done), comm.size)


def _assemble(out: Path, spec, frames, plan, provenance, blocks, folder, compression) -> None:
    """Write the store from the block files, under a temporary name, then rename it."""
    from dcf.data.store import StoreWriter

    def write(tmp):
        writer = StoreWriter(tmp, spec, frames, plan, provenance, compression)
        try:
            for b in range(blocks.n):
                for el, (G, A, F) in _read_block(folder, b, spec, blocks).items():
                    writer.write_features(el, blocks.row_range(el, b)[0], G, A, F)
            writer.finish()
        finally:
            writer.close()

    write_atomic(out, write)


def _read_block(folder: Path, b: int, spec, blocks) -> dict:
    """Block b's rows per element, {el: (G, A, F)}, checked against the layout; a damaged or
    foreign block file is a FeaturizeError that names it."""
    path = _block_path(folder, b)
    out = {}
    try:
        with np.load(path) as z:
            for el in spec.elements:
                lo, hi = blocks.row_range(el, b)
                if hi > lo:
                    out[el] = z[f"{el}.G"], z[f"{el}.A"], z[f"{el}.F"]
                    if any(len(x) != hi - lo for x in out[el]):
                        raise ValueError(f"{len(out[el][0])} {el} rows, expected {hi - lo}")
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
