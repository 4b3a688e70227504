"""MPI helpers that also work without MPI.

``world()`` returns mpi4py's COMM_WORLD wrapped in ``Comm`` when the process was started by an
MPI launcher (``mpiexec -n K ...``), and a one-rank ``SerialComm`` otherwise - so mpi4py is
neither needed nor even imported in a serial run. Set ``DCF_NO_MPI=1`` to force serial mode.

Besides broadcast, barrier and a sum over ranks (forces of MPI-parallel inference), the
helpers carry small status messages to rank 0 (``report`` from any rank, ``poll``/``receive``
on rank 0): used for a live progress bar and to learn about errors on other ranks without
deadlocking.
"""
from __future__ import annotations

import os

import numpy as np

from dcf.errors import DCFError

# Variables set by MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's PMI) for each rank
_LAUNCHER_VARS = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
_TAG = 7301


class MPIUnavailable(DCFError, RuntimeError):
    """Started by an MPI launcher with several ranks, but mpi4py cannot be imported."""


def launched_by_mpi() -> bool:
    """True if an MPI launcher started this process (and DCF_NO_MPI is not set)."""
    if os.environ.get("DCF_NO_MPI", "") not in ("", "0"):
        return False
    return any(v in os.environ for v in _LAUNCHER_VARS)


def _launcher_size() -> int:
    for v in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"):
        if os.environ.get(v, "").isdigit():
            return int(os.environ[v])
    return 1


class SerialComm:
    """The one-rank stand-in for an MPI communicator."""

    rank, size = 0, 1
    distributed = False          # one process: nothing to exchange

    def bcast(self, obj, root: int = 0):
        return obj

    def barrier(self) -> None:
        """One rank is always in step with itself: returns at once."""
        return None

    def sum(self, array) -> np.ndarray:
        """The sum over ranks of a float array: the array itself."""
        return np.asarray(array, dtype=float)

    def allgather(self, obj) -> list:
        """[obj]: the one rank's object."""
        return [obj]

    def allgatherv(self, array) -> np.ndarray:
        """The rows of every rank's `array`, in rank order: the array itself."""
        return np.ascontiguousarray(array)

    def gather_bytes(self, data: bytes):
        """[data] on rank 0 (the only rank)."""
        return [bytes(data)]

    def report(self, message) -> None:
        raise RuntimeError("report() needs another rank to report to")

    def poll(self) -> list:
        return []

    def receive(self):
        raise RuntimeError("receive() with one rank would wait forever")


class Comm:
    """An mpi4py communicator with the few operations dcf needs."""

    distributed = True           # even with one rank: results go through MPI

    def __init__(self, mpi_comm):
        self._comm = mpi_comm
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()

    def bcast(self, obj, root: int = 0):
        return self._comm.bcast(obj, root=root)

    def barrier(self) -> None:
        self._comm.Barrier()

    def sum(self, array) -> np.ndarray:
        """The element-wise sum over ranks of a float array, bit-identical on every rank
        (reduced on rank 0, then broadcast: an allreduce may round differently per rank, and
        ranks that run the same MD must not drift apart)."""
        from mpi4py import MPI

        a = np.ascontiguousarray(array, dtype=float)
        out = np.empty_like(a)
        self._comm.Reduce(a, out, op=MPI.SUM, root=0)
        self._comm.Bcast(out, root=0)
        return out

    def allgather(self, obj) -> list:
        """Every rank's small picklable `obj`, in rank order, on every rank."""
        return self._comm.allgather(obj)

    def allgatherv(self, array) -> np.ndarray:
        """The rows of every rank's `array` (same dtype and row shape on every rank),
        concatenated in rank order on every rank: one buffer-based Allgatherv, no pickling."""
        a = np.ascontiguousarray(array)
        counts = self._comm.allgather(a.size)
        out = np.empty((sum(counts) // max(int(np.prod(a.shape[1:])), 1),) + a.shape[1:],
                       a.dtype)
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        if out.size:
            self._comm.Allgatherv(a.reshape(-1), [out.reshape(-1), counts, displs.tolist(),
                                                  _mpi_type(a.dtype)])
        return out

    def gather_bytes(self, data: bytes):
        """Every rank's `data` (bytes) on rank 0, as a list in rank order (None elsewhere):
        one buffer-based Gatherv."""
        from mpi4py import MPI

        buf = np.frombuffer(data, np.uint8) if len(data) else np.zeros(0, np.uint8)
        counts = self._comm.gather(len(buf), root=0)
        out = displs = None
        if self.rank == 0:
            displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
            out = np.empty(max(sum(counts), 1), np.uint8)
        self._comm.Gatherv(buf, [out, counts, displs, MPI.BYTE] if self.rank == 0 else None,
                           root=0)
        if self.rank != 0:
            return None
        return [out[d:d + c].tobytes() for d, c in zip(displs, counts)]

    def report(self, message) -> None:
        """Send a small picklable status message to rank 0."""
        self._comm.send(message, dest=0, tag=_TAG)

    def poll(self) -> list:
        """On rank 0: the status messages that have arrived, without waiting."""
        from mpi4py import MPI

        out = []
        while self._comm.iprobe(source=MPI.ANY_SOURCE, tag=_TAG):
            out.append(self._comm.recv(source=MPI.ANY_SOURCE, tag=_TAG))
        return out

    def receive(self):
        """On rank 0: the next status message, waiting for it."""
        from mpi4py import MPI

        return self._comm.recv(source=MPI.ANY_SOURCE, tag=_TAG)


def split_by_cost(cost, size: int) -> np.ndarray:
    """(n,) rank of each of n consecutive work items of `cost` (n,): `size` contiguous runs of
    near-equal total cost, rank 0 first (an item goes where its middle falls)."""
    cost = np.asarray(cost, dtype=float)
    if len(cost) == 0 or size == 1:
        return np.zeros(len(cost), dtype=np.int64)
    middle = np.cumsum(cost) - 0.5 * cost
    return np.minimum((middle * size // max(cost.sum(), 1e-300)).astype(np.int64), size - 1)


def _mpi_type(dtype):
    """The MPI datatype of a numpy dtype (bools travel as bytes)."""
    from mpi4py import MPI

    dtype = np.dtype(dtype)
    return MPI.BYTE if dtype == bool else MPI._typedict[dtype.char]


def running_rank() -> tuple[int, int]:
    """(rank, size) of COMM_WORLD if this process already uses MPI, else (0, 1); never
    imports mpi4py itself."""
    import sys

    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return 0, 1
    return mpi.COMM_WORLD.Get_rank(), mpi.COMM_WORLD.Get_size()


def abort_all(code: int) -> None:
    """End every rank of COMM_WORLD now (the launcher kills them), with exit status `code`."""
    import sys

    sys.stderr.flush()
    sys.modules["mpi4py.MPI"].COMM_WORLD.Abort(code)


def world():
    """COMM_WORLD as a Comm under an MPI launcher, else a SerialComm.

    Raises MPIUnavailable when launched with several ranks but mpi4py is not importable:
    every rank would otherwise do the whole job and write the same files.
    """
    if not launched_by_mpi():
        return SerialComm()
    try:
        from mpi4py import MPI
    except ImportError as err:
        if _launcher_size() > 1:
            raise MPIUnavailable(f"started by mpiexec with {_launcher_size()} ranks but mpi4py "
                                 f"cannot be imported ({err}); install mpi4py "
                                 f"(pip install mpi4py mpich) or run without mpiexec") from None
        return SerialComm()
    comm = MPI.COMM_WORLD
    return Comm(comm) if comm.Get_size() > 1 else SerialComm()
