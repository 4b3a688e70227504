"""An i-PI socket driver for dcf models.

i-PI (the server) owns the dynamics (thermostats, path integrals, multiple time stepping) and
sends positions and cells; this driver (the client) returns energy, forces and virial. The wire
protocol and the conversion to atomic units (Bohr, Hartree, cell vectors as columns) come from
ASE's implementation of it, `ase.calculators.socketio.IPIProtocol`; the loop here adds what a
production driver needs: waiting for the server to come up, a clear error when it never answers
or goes away mid-run, a clean return on EXIT, and MPI ranks that follow rank 0.

A DCF model has no energy: the driver sends 0 and a zero virial, so i-PI's potential and
conserved quantity are meaningless with it and only thermostatted NVT is sound; a B–P model
sends its energy and virial (NPT works).
"""
from __future__ import annotations

import socket
import time

import numpy as np
from ase.calculators.socketio import IPIProtocol, SocketClosed, actualunixsocketname

from dcf.errors import DCFError


class ServerError(DCFError, RuntimeError):
    """The i-PI server could not be reached, or went away without sending EXIT."""


def connect(unix: str | None = None, host: str = "localhost", port: int | None = None,
            wait: float = 60.0) -> socket.socket:
    """Connect to an i-PI server, retrying for `wait` seconds while it starts.

    unix: the socket name as given to i-PI (`<address>NAME</address>` with mode="unix"; the
    file is /tmp/ipi_NAME); otherwise host and port (mode="inet").
    """
    if unix is None and port is None:
        raise ValueError("give a UNIX socket name or a TCP port")
    where = (f"UNIX socket {actualunixsocketname(unix)}" if unix is not None
             else f"{host}:{port}")
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(socket.AF_UNIX if unix is not None else socket.AF_INET)
        try:
            sock.connect(actualunixsocketname(unix) if unix is not None else (host, port))
            if unix is None:        # small messages each step: no Nagle delay
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as err:
            sock.close()
            if time.monotonic() >= deadline:
                raise ServerError(f"no i-PI server answered at {where} within {wait:g} s "
                                  f"({err.strerror or err})") from None
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
    rank 0 talks to i-PI, every rank joins model.compute (pass `sock=None` on the others). Raises ServerError when the
    server closes the connection without EXIT.
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

    protocol = IPIProtocol(sock)
    state, results = "READY", None
    try:
        while True:
            try:
                msg = protocol.recvmsg()
            except (SocketClosed, ConnectionError, OSError):
                raise ServerError("the i-PI server closed the connection without sending "
                                  "EXIT (did it crash or time out?)") from None
            if msg == "EXIT":
                return calls
            if msg == "STATUS":
                protocol.sendmsg(state)
            elif msg == "INIT":
                protocol.recvinit()
                state = "READY"
            elif msg == "POSDATA":
                cell, _, positions = protocol.recvposdata()
                if len(positions) != len(atoms):
                    raise ServerError(f"i-PI sent {len(positions)} atoms; the structure given "
                                      f"to the driver has {len(atoms)}")
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
    finally:
        if comm is not None:
            comm.bcast("stop")
