"""An i-PI socket driver for dcf models.

i-PI (the server) owns the dynamics (thermostats, path integrals, multiple time stepping) and
sends positions and cells; this driver (the client) returns energy, forces and virial. The wire
protocol and the conversion to atomic units (Bohr, Hartree, cell vectors as columns) come from
ASE's implementation of it, `ase.calculators.socketio.IPIProtocol`; the loop here adds what a
production driver needs: waiting for the server to come up (retrying only transient connection
errors), a clear error when it never answers or goes away mid-run, a clean return on EXIT, and
MPI ranks that follow rank 0. Every message received is checked before it is acted on (an ASCII
header, sizes in range, finite numbers, a cell with volume), so that a bad server gives a
ServerError that says what it sent, never an allocation of its choosing or a traceback.

A DCF model has no energy: the driver sends 0 and a zero virial, so i-PI's potential and
conserved quantity are meaningless with it and only thermostatted NVT is sound; a B–P model
sends its energy and virial (NPT works).
"""
from __future__ import annotations

import errno
import socket
import time

import numpy as np
from ase.calculators.socketio import IPIProtocol, SocketClosed, actualunixsocketname

from dcf.errors import DCFError


class ServerError(DCFError, RuntimeError):
    """The i-PI server could not be reached, went away without sending EXIT, or sent a message
    that breaks the protocol."""


#: connection errors worth retrying while a server starts; any other is reported at once
TRANSIENT = {errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR,
             errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH}
#: the largest INIT payload accepted (i-PI sends a short string), bytes
MAX_INIT_BYTES = 1 << 20


def transient(err: OSError) -> bool:
    """Whether a failed connect may succeed when retried (the server is not up yet)."""
    if isinstance(err, socket.gaierror):
        return err.errno == socket.EAI_AGAIN
    return err.errno in TRANSIENT


class CheckedProtocol(IPIProtocol):
    """ASE's i-PI protocol with every received message checked (ServerError, never an
    assertion): headers ASCII, sizes in range, numbers finite, the cell with volume.

    n_atoms: the atoms of the driver's structure, the only count POSDATA may carry;
    periodic: whether the structure is periodic, so that its cell must have a volume.
    """

    def __init__(self, sock, n_atoms: int, periodic: bool = True):
        super().__init__(sock)
        self.n_atoms, self.periodic = n_atoms, periodic

    def recvmsg(self) -> str:
        raw = self._recvall(12)
        try:
            return raw.rstrip().decode("ascii")
        except UnicodeDecodeError:
            raise ServerError(f"the i-PI server sent a header that is not ASCII text ({raw!r}); "
                              f"is an i-PI server listening at that address?") from None

    def recv(self, shape, dtype):
        a = np.frombuffer(self._recvall(int(np.dtype(dtype).itemsize * np.prod(shape))),
                          dtype=dtype).reshape(shape).copy()
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise ServerError("the i-PI server sent non-finite numbers (NaN or infinity)")
        return a

    def recvinit(self):
        bead = int(self.recv(1, np.int32)[0])
        nbytes = int(self.recv(1, np.int32)[0])
        if not 0 <= nbytes <= MAX_INIT_BYTES:
            raise ServerError(f"the i-PI server's INIT announces {nbytes} bytes; expected "
                              f"0..{MAX_INIT_BYTES}")
        return bead, self._recvall(nbytes)

    def recvposdata(self):
        """(cell (3, 3) A, inverse cell (3, 3) 1/A, positions (n_atoms, 3) A), checked."""
        from ase import units

        cell = self.recv((3, 3), np.float64).T.copy()
        icell = self.recv((3, 3), np.float64).T.copy()
        natoms = int(self.recv(1, np.int32)[0])
        if natoms != self.n_atoms:
            raise ServerError(f"i-PI sent {natoms} atoms; the structure given to the driver "
                              f"has {self.n_atoms}")
        positions = self.recv((natoms, 3), np.float64)
        cell = cell * units.Bohr
        if self.periodic and not abs(np.linalg.det(cell)) > 1e-6:
            raise ServerError(f"i-PI sent a cell without volume ({cell.round(6).tolist()} A); "
                              f"check the cell in its input")
        return cell, icell / units.Bohr, positions * units.Bohr


def connect(unix: str | None = None, host: str = "localhost", port: int | None = None,
            wait: float = 60.0) -> socket.socket:
    """Connect to an i-PI server, retrying for `wait` seconds while it starts.

    unix: the socket name as given to i-PI (`<address>NAME</address>` with mode="unix"; the
    file is /tmp/ipi_NAME); otherwise host and port (mode="inet").
    """
    if unix is None and port is None:
        raise ValueError("give a UNIX socket name or a TCP port")
    if unix is None and not 0 < port < 65536:
        raise ServerError(f"--port {port}: a TCP port is 1..65535")
    where = (f"UNIX socket {actualunixsocketname(unix)}" if unix is not None
             else f"{host}:{port}")
    deadline = time.monotonic() + wait
    while True:
        sock = None
        try:
            if unix is not None:
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(actualunixsocketname(unix))
            else:
                family, kind, proto, _, address = socket.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM)[0]
                sock = socket.socket(family, kind, proto)
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # no Nagle delay
            return sock
        except OSError as err:
            if sock is not None:
                sock.close()
            reason = err.strerror or str(err)
            if not transient(err):
                raise ServerError(f"cannot connect to {where}: {reason} (not a passing "
                                  f"condition: check the address)") from None
            if time.monotonic() >= deadline:
                raise ServerError(f"no i-PI server answered at {where} within {wait:g} s "
                                  f"({reason})") from None
            time.sleep(0.2)


def virial(results: dict, atoms) -> np.ndarray:
    """Virial (3, 3) eV from an ASE stress (Voigt, eV/A^3): W = -V sigma."""
    if "stress" not in results:
        return np.zeros((3, 3))
    xx, yy, zz, yz, xz, xy = results["stress"]
    sigma = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return -atoms.get_volume() * sigma


def serve(model, atoms, sock: socket.socket | None, comm=None, on_step=None) -> int:
    """Answer i-PI's requests with `model` until EXIT; returns the number of force calls.

    atoms: a template with the right species in i-PI's atom order (positions and cell are
    overwritten by each request). comm: a `dcf.parallel` communicator with several ranks;
    rank 0 talks to i-PI, every rank joins model.compute (pass `sock=None` on the others).
    Raises ServerError when the server closes the connection without EXIT or sends a message
    that breaks the protocol (CheckedProtocol).
    """
    rank = comm.rank if comm is not None else 0
    props = [p for p in ("energy", "forces", "stress") if p in model.implemented_properties]
    if not all(atoms.pbc):          # a virial needs a cell periodic in all directions
        props = [p for p in props if p != "stress"]
    atoms = atoms.copy()
    calls = 0

    def compute() -> dict:
        if comm is not None:
            positions, cell = comm.bcast((atoms.positions, atoms.cell.array) if rank == 0
                                         else None)
            atoms.positions[:], atoms.cell[:] = positions, cell
        return model.compute(atoms, props)

    if rank != 0:
        while comm.bcast(None) == "compute":
            compute()
        return 0

    protocol = CheckedProtocol(sock, len(atoms), bool(atoms.pbc.any()))
    state, results = "READY", None
    try:
        while True:
            try:
                msg = protocol.recvmsg()
                if msg == "EXIT":
                    return calls
                if msg == "STATUS":
                    protocol.sendmsg(state)
                elif msg == "INIT":
                    protocol.recvinit()
                    state = "READY"
                elif msg == "POSDATA":
                    cell, _, positions = protocol.recvposdata()
                    atoms.cell[:] = cell
                    atoms.positions[:] = positions
                    if comm is not None:
                        comm.bcast("compute")
                    results = compute()
                    calls += 1
                    if on_step is not None:
                        on_step(calls)
                    state = "HAVEDATA"
                elif msg == "GETFORCE":
                    if state != "HAVEDATA":
                        raise ServerError("i-PI asked for forces before sending positions")
                    protocol.sendforce(results.get("energy", 0.0), results["forces"],
                                       virial(results, atoms))
                    state = "READY"
                else:
                    raise ServerError(f"unexpected message {msg!r} from the i-PI server")
            except (SocketClosed, ConnectionError):
                raise ServerError("the i-PI server closed the connection without sending "
                                  "EXIT (did it crash or time out?)") from None
            except OSError as err:
                raise ServerError(f"the connection to the i-PI server failed "
                                  f"({err.strerror or err})") from None
    finally:
        if comm is not None:
            comm.bcast("stop")
