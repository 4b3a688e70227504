"""The i-PI driver against a fake i-PI server (a thread of this test on a UNIX socket) that
sends bad messages: every one gives one line saying what the server sent, exit code 1, and no
traceback or allocation of the server's choosing. A good exchange checks the fake server.
"""
import os
import socket
import threading
import time
import uuid

import numpy as np
import pytest
from ase import units
from ase.calculators.socketio import actualunixsocketname
from ase.io import write

from dcf.models import load_model
from test_errors import cli  # noqa: F401 - the fixture
from test_md import gentle_model, li_p_o_cell, li_p_o_spec


@pytest.fixture(scope="module")
def driver_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ipi")
    gentle_model("bp", li_p_o_spec(), np.random.default_rng(0)).save(folder / "bp.dcf")
    write(folder / "init.extxyz", li_p_o_cell())
    return folder


def header(text) -> bytes:
    return (text if isinstance(text, bytes) else text.encode()).ljust(12)


def posdata(cell, positions, natoms=None) -> bytes:
    """A POSDATA message in i-PI's units (Bohr, cell vectors as columns)."""
    cell = np.asarray(cell, float) / units.Bohr
    icell = np.linalg.pinv(cell) if np.all(np.isfinite(cell)) else cell
    n = len(positions) if natoms is None else natoms
    return (header("POSDATA") + cell.T.tobytes() + icell.T.tobytes()
            + np.int32(n).tobytes() + (np.asarray(positions, float) / units.Bohr).tobytes())


class FakeServer:
    """Listens on a fresh UNIX socket; on connection sends `messages` (bytes) one by one,
    reading what the driver answers; keeps what it received; closes after `linger` s, or at
    once at a message None."""

    def __init__(self, messages, linger=10.0):
        self.name = f"dcf-test-{uuid.uuid4().hex[:10]}"
        self.path = actualunixsocketname(self.name)
        self.received = b""
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.listener.settimeout(30)
        self.thread = threading.Thread(target=self._serve, args=(messages, linger), daemon=True)
        self.thread.start()

    def _serve(self, messages, linger):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.settimeout(0.3)
        end = time.monotonic() + linger
        with conn:
            for m in messages:
                if m is None:
                    return
                try:
                    conn.sendall(m)
                except OSError:
                    return
                self._read(conn, time.monotonic() + 0.3)
            self._read(conn, end)

    def _read(self, conn, until):
        while time.monotonic() < until:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.received += chunk

    def close(self):
        self.listener.close()
        self.thread.join(15)
        if os.path.exists(self.path):
            os.unlink(self.path)


def drive(cli, driver_files, messages):  # noqa: F811
    server = FakeServer(messages)
    try:
        res = cli("ipi", driver_files / "bp.dcf", "--structure", driver_files / "init.extxyz",
                  "--unix", server.name, "--wait", 5)
    finally:
        server.close()
    return res, server


def test_a_good_exchange_returns_the_model_forces(cli, driver_files):  # noqa: F811
    atoms = li_p_o_cell()
    atoms.rattle(0.01, seed=1)
    res, server = drive(cli, driver_files, [
        header("STATUS"), posdata(atoms.cell, atoms.positions), header("STATUS"),
        header("GETFORCE"), header("EXIT")])
    assert res.returncode == 0, res.stderr
    assert "i-PI sent EXIT after 1 force evaluation(s)" in res.stdout
    got = server.received
    assert got[:12] == header("READY") and got[12:24] == header("HAVEDATA")
    assert got[24:36] == header("FORCEREADY")
    n = len(atoms)
    assert np.frombuffer(got[44:48], np.int32)[0] == n
    forces = np.frombuffer(got[48:48 + 24 * n], float).reshape(n, 3) * units.Ha / units.Bohr
    np.testing.assert_allclose(forces, load_model(driver_files / "bp.dcf").forces(atoms),
                               rtol=1e-10, atol=1e-12)


def bad_cases():
    atoms = li_p_o_cell()
    n = len(atoms)
    nan_positions = atoms.positions.copy()
    nan_positions[2, 0] = np.nan
    return {
        "non-ASCII header": ([header(b"\xff\xfe\x00POSDATA")],
                             "a header that is not ASCII text"),
        "NaN positions": ([posdata(atoms.cell, nan_positions)], "non-finite numbers"),
        "NaN cell": ([posdata(np.full((3, 3), np.nan), atoms.positions)], "non-finite numbers"),
        "negative natoms": ([posdata(atoms.cell, atoms.positions, natoms=-5)],
                            f"i-PI sent -5 atoms; the structure given to the driver has {n}"),
        "huge natoms": ([posdata(atoms.cell, atoms.positions[:1], natoms=2**31 - 1)],
                        f"i-PI sent 2147483647 atoms; the structure given to the driver has {n}"),
        "degenerate cell": ([posdata(np.diag([7.0, 7.0, 0.0]), atoms.positions)],
                            "a cell without volume"),
        "huge INIT": ([header("INIT") + np.int32(0).tobytes() + np.int32(2**30).tobytes()],
                      "INIT announces 1073741824 bytes"),
        "unknown message": ([header("HELLO")], "unexpected message 'HELLO'"),
        "forces before positions": ([header("GETFORCE")], "asked for forces before sending"),
        "closed mid-message": ([header("POSDATA") + b"\x00" * 20, None],
                               "closed the connection without sending EXIT"),
    }


@pytest.mark.parametrize("case", sorted(bad_cases()))
def test_a_bad_message_is_refused_with_one_line(cli, driver_files, case):  # noqa: F811
    messages, words = bad_cases()[case]
    start = time.monotonic()
    res, _ = drive(cli, driver_files, messages)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dcf ipi: ") and words in lines[0], lines
    assert time.monotonic() - start < 15


def test_permanent_connection_errors_are_not_retried(cli, driver_files):  # noqa: F811
    model, structure = driver_files / "bp.dcf", driver_files / "init.extxyz"
    start = time.monotonic()
    res = cli("ipi", model, "--structure", structure, "--unix", "x" * 200, "--wait", 60)
    assert res.returncode == 1 and "cannot connect to UNIX socket" in res.stderr
    assert "not a passing condition" in res.stderr and "Traceback" not in res.stderr
    assert time.monotonic() - start < 30          # not the whole --wait
    for port in (0, 70000, -1):
        res = cli("ipi", model, "--structure", structure, "--port", port, "--wait", 60)
        assert res.returncode == 1 and f"--port {port}: a TCP port is 1..65535" in res.stderr
