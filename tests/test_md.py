"""MD front ends with real models: ASE calculator, thermostats, `dcf md` (restart, NVE drift),
and the i-PI driver against real i-pi server processes over UNIX and TCP sockets."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import read, write

from dcf.dynamics.md import make_dynamics, thermal_velocities, thermostat_seed
from dcf.models import load_model
from dcf.descriptors.spec import FingerprintSpec
from dcf.data.structures import random_packing
from test_bp_model import random_bp_model
from test_dcf_model import random_model

DRIVERS = Path(__file__).parents[1] / "drivers"


@pytest.fixture
def small_spec():
    return li_p_o_spec()


def li_p_o_spec():
    """G2, G4 and A1 terms over Li, O, P with Rc 4 A: cheap enough for long test runs."""
    return FingerprintSpec(["Li", "O", "P"], [
        {"kind": "G2", "neighbors": "*", "eta": [0.5, 2.0], "Rs": 0.0},
        {"kind": "G4", "neighbors": "*", "zeta": 1, "lambda": [1, -1], "eta": 0.1},
        {"kind": "A1", "neighbors": "*", "eta": 1.0, "Rs": [0.0, 1.5]},
    ], cutoff=4.0)


def gentle_model(kind: str, spec, rng):
    """A random model with soft forces (a stable test trajectory): B–P or covariant DCF."""
    if kind == "bp":
        model = random_bp_model(rng, spec, hidden=(6,))
        for net in model.networks.values():
            net.weights[-1] *= 0.05
        return model
    model = random_model(spec, "covariant", rng, remove_net_force=True)
    for net in model.networks.values():
        net.force_scale = 0.2
    return model


def li_p_o_cell(seed=3):
    return random_packing({"Li": 8, "P": 4, "O": 12}, np.eye(3) * 7.0, min_distance=1.6,
                          seed=seed)


@pytest.fixture(params=["bp"])
def setup(request, tmp_path, rng, small_spec):
    """A gentle random model file (B–P unless parametrized) and a 24-atom Li-P-O cell."""
    model = gentle_model(request.param, small_spec, rng)
    model.save(tmp_path / f"{request.param}.dcf")
    atoms = li_p_o_cell()
    structure = tmp_path / "init.extxyz"
    write(structure, atoms)
    return model, tmp_path / f"{request.param}.dcf", atoms, structure


def dcf(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dcf", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_calculator_gives_the_model_forces_energy_and_stress(setup):
    model, _, atoms, _ = setup
    atoms.calc = model.calculator()
    np.testing.assert_allclose(atoms.get_forces(), model.forces(atoms), rtol=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(model.energy(atoms), rel=1e-12)
    assert atoms.get_stress().shape == (6,)
    calls = atoms.calc.results
    atoms.get_forces()                               # cached: same results object content
    assert atoms.calc.results is calls
    # any change ASE tracks gives a new calculation
    for change in ("positions", "cell", "numbers", "initial_charges"):
        moved = atoms.copy()
        if change == "positions":
            moved.positions[5, 1] += 1e-9
        elif change == "cell":
            moved.set_cell(moved.cell.array * (1 + 1e-9), scale_atoms=False)
        elif change == "numbers":
            moved.numbers[[0, -1]] = moved.numbers[[-1, 0]]
        else:
            moved.set_initial_charges(np.full(len(moved), 0.1))
        assert atoms.calc.check_state(moved) != [], change
        np.testing.assert_allclose(atoms.calc.get_forces(moved), model.forces(moved),
                                   rtol=1e-12, atol=1e-12)
    atoms.calc.get_forces(atoms)
    assert atoms.calc.check_state(atoms.copy()) == []


@pytest.mark.parametrize("setup", ["dcf"], indirect=True)
def test_dcf_calculator_gives_forces_and_refuses_energy(setup):
    model, _, atoms, _ = setup
    atoms.calc = model.calculator()
    np.testing.assert_allclose(atoms.get_forces(), model.forces(atoms), rtol=1e-12)
    with pytest.raises(PropertyNotImplementedError, match="not the gradient of an energy"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("kind, thermostat", [("bp", "langevin"), ("bp", "bussi"),
                                              ("dcf", "langevin")])
def test_thermostat_holds_the_target_temperature(kind, thermostat, small_spec):
    """<T> over 2000 steps of a 96-atom cell within 4 % of the target (the standard error of
    the mean is ~1 % for strong coupling). With DCF forces only the local Langevin thermostat
    holds it: the random DCF model's non-conservative work heats a Bussi run by ~10 %."""
    model = gentle_model(kind, small_spec, np.random.default_rng(5))
    atoms = li_p_o_cell(seed=4).repeat((2, 2, 1))
    atoms.calc = model.calculator()
    target = 600.0
    thermal_velocities(atoms, target, seed=1)
    dyn = make_dynamics(atoms, thermostat, target, timestep=1.0, damping=10.0, seed=2)
    dyn.run(200)
    temps = []
    dyn.attach(lambda: temps.append(atoms.get_temperature()), interval=2)
    dyn.run(2000)
    assert np.mean(temps) == pytest.approx(target, rel=0.04)
    assert np.std(temps) > 0.02 * target             # a canonical ensemble fluctuates


@pytest.mark.parametrize("setup", ["dcf", "bp"], indirect=True)
def test_md_precision_float32_runs_dcf_and_refuses_bp(setup, tmp_path):
    model, model_path, _, structure = setup
    traj = tmp_path / "md.traj"
    res = dcf("md", model_path, structure, "--precision", "float32", "--steps", 10,
              "--interval", 5, "--seed", 1, "--traj", traj)
    if model.kind == "bp":
        assert res.returncode != 0 and "float64 only" in res.stderr
        assert not traj.exists()
        return
    assert res.returncode == 0, res.stderr
    assert read(traj, ":")[-1].info["step"] == 10


def test_md_runs_writes_log_and_restarts(setup, tmp_path):
    _, model_path, atoms, structure = setup
    traj, log = tmp_path / "md.traj", tmp_path / "md.log"
    res = dcf("md", model_path, structure, "--thermostat", "langevin", "--temperature", 300,
              "--steps", 20, "--interval", 5, "--timestep", 0.5, "--seed", 1, "--traj", traj)
    assert res.returncode == 0, res.stderr
    frames = read(traj, ":")
    assert len(frames) == 5                          # step 0 and every 5 steps
    assert frames[-1].info["step"] == 20
    rows = [line.split() for line in log.read_text().splitlines() if not line.startswith("#")]
    assert [int(r[0]) for r in rows] == [0, 5, 10, 15, 20]
    assert len(rows[0]) == 3 + 3 + 2 + 1             # step, time, T, T_el x3, E_pot, E_tot, ms

    again = dcf("md", model_path, structure, "--steps", 10, "--interval", 5, "--timestep", 0.5,
                "--traj", traj)
    assert again.returncode != 0 and "--restart" in again.stderr
    res = dcf("md", model_path, structure, "--restart", "--steps", 10, "--interval", 5,
              "--timestep", 0.5, "--seed", 2, "--traj", traj)
    assert res.returncode == 0, res.stderr
    frames = read(traj, ":")
    assert [f.info["step"] for f in frames] == [0, 5, 10, 15, 20, 25, 30]


def test_a_restart_draws_a_new_thermostat_stream():
    draw = lambda seed: np.random.default_rng(seed).normal(size=8)  # noqa: E731
    assert np.array_equal(draw(thermostat_seed(3, 0)), draw(3))   # fresh runs as before
    assert thermostat_seed(None, 40) is None
    restarted = draw(thermostat_seed(3, 40))
    assert np.array_equal(restarted, draw(thermostat_seed(3, 40)))   # reproducible
    assert not np.allclose(restarted, draw(3))
    assert not np.allclose(restarted, draw(thermostat_seed(3, 20)))


def test_md_nve_reports_energy_drift(setup, tmp_path):
    _, model_path, _, structure = setup
    res = dcf("md", model_path, structure, "--thermostat", "nve", "--temperature", 100,
              "--steps", 30, "--interval", 5, "--timestep", 0.5, "--traj", tmp_path / "nve.traj")
    assert res.returncode == 0, res.stderr
    assert "NVE energy drift" in res.stdout


IPI_INPUT = """<simulation verbosity="low">
  <output prefix="sim">
    <properties stride="1" filename="out">[ step, temperature{{kelvin}} ]</properties>
    <trajectory filename="pos" stride="10" format="ase">positions{{ase}}</trajectory>
    <trajectory filename="for" stride="10" format="ase">forces{{ase}}</trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>12345</seed></prng>
  <ffsocket name="dcf" mode="{mode}" pbc="false">
    <address>{address}</address>{port}
    <latency>1e-4</latency>
  </ffsocket>
  <system>
    <initialize nbeads="1">
      <file mode="ase">init.extxyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces><force forcefield="dcf"/></forces>
    <motion mode="dynamics">
      <dynamics mode="nvt">
        <timestep units="femtosecond">0.5</timestep>
        <thermostat mode="svr"><tau units="femtosecond">50</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
  </system>
</simulation>
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ipi_command():
    ipi = shutil.which("i-pi", path=os.path.dirname(sys.executable))
    if ipi is None:
        pytest.skip("the i-pi command (pip install ipi) is not installed")
    return ipi


class IPIServer:
    """A real i-pi process in `workdir`, on a fresh UNIX socket or localhost TCP port; killed
    and its socket file removed on exit."""

    def __init__(self, workdir, transport: str, steps: int):
        self.workdir = Path(workdir)
        if transport == "unix":
            self.address, port = f"dcf-test-{uuid.uuid4().hex[:8]}", ""
            self.driver_args = ["--unix", self.address]
        else:
            self.address, number = "localhost", free_port()
            port = f"<port>{number}</port>"
            self.driver_args = ["--port", str(number)]
        (self.workdir / "input.xml").write_text(IPI_INPUT.format(
            steps=steps, mode="unix" if transport == "unix" else "inet", address=self.address,
            port=port))

    def __enter__(self):
        self.process = subprocess.Popen([ipi_command(), "input.xml"], cwd=self.workdir,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)
        Path(f"/tmp/ipi_{self.address}").unlink(missing_ok=True)

    def steps_done(self) -> int:
        out = self.workdir / "sim.out"
        rows = [r for r in out.read_text().splitlines() if r.strip() and not r.startswith("#")] \
            if out.exists() else []
        return int(float(rows[-1].split()[0])) if rows else -1


def recorded_forces_match_the_model(workdir, model_path):
    """i-PI's recorded positions (A) and forces (eV/A) every 10 steps against the model."""
    model = load_model(model_path)
    positions = read(Path(workdir) / "sim.pos_0.extxyz", ":")
    forces = read(Path(workdir) / "sim.for_0.extxyz", ":")
    assert len(positions) == len(forces) >= 10
    for atoms, recorded in zip(positions, forces):
        np.testing.assert_allclose(recorded.get_forces(), model.forces(atoms), atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("setup, transport", [("dcf", "unix"), ("dcf", "tcp"), ("bp", "tcp")],
                         indirect=["setup"])
def test_ipi_server_runs_nvt_with_the_driver(setup, transport, tmp_path, runner=()):
    _, model_path, _, structure = setup
    with IPIServer(tmp_path, transport, steps=100) as server:
        driver = subprocess.run([*runner, sys.executable, "-m", "dcf", "ipi", model_path,
                                 "--structure", structure, *server.driver_args, "--wait", "60"],
                                capture_output=True, text=True, timeout=300)
        server_out = server.process.communicate(timeout=120)[0]
    assert driver.returncode == 0, driver.stderr + server_out
    assert "i-PI sent EXIT after 101 force evaluation(s)" in driver.stdout
    assert server.steps_done() == 100
    recorded_forces_match_the_model(tmp_path, model_path)


def test_ipi_driver_without_server_fails_clearly(setup):
    _, model_path, _, structure = setup
    res = dcf("ipi", model_path, "--structure", structure, "--unix",
              f"nobody-{uuid.uuid4().hex[:8]}", "--wait", 0.5, timeout=60)
    assert res.returncode == 1
    assert "no i-PI server answered" in res.stderr
    res = dcf("ipi", model_path, "--structure", structure, "--port", free_port(), "--wait", 0.5,
              timeout=60)
    assert res.returncode == 1
    assert "no i-PI server answered at localhost:" in res.stderr


@pytest.mark.parametrize("setup", ["dcf", "bp"], indirect=True)
def test_ipi_driver_precision_float32_is_taken_by_dcf_and_refused_by_bp(setup):
    model, model_path, _, structure = setup
    res = dcf("ipi", model_path, "--structure", structure, "--precision", "float32", "--unix",
              f"nobody-{uuid.uuid4().hex[:8]}", "--wait", 0.5, timeout=60)
    assert res.returncode == 1
    expected = "float64 only" if model.kind == "bp" else "no i-PI server answered"
    assert expected in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_ipi_driver_exits_with_an_error_when_the_server_is_killed(setup, tmp_path):
    _, model_path, _, structure = setup
    with IPIServer(tmp_path, "unix", steps=10**6) as server:
        driver = subprocess.Popen([sys.executable, "-m", "dcf", "ipi", model_path,
                                   "--structure", structure, *server.driver_args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while server.steps_done() < 20 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert server.steps_done() >= 20, "i-PI did not start stepping"
            server.process.send_signal(signal.SIGKILL)
            out, err = driver.communicate(timeout=60)
        finally:
            if driver.poll() is None:
                driver.kill()
    assert driver.returncode == 1
    assert "closed the connection without sending EXIT" in err


@pytest.mark.slow
@pytest.mark.parametrize("name, drivers", [
    ("ipi-nvt-svr.xml", {"dcf-nvt": "dcf"}),
    ("ipi-mts.xml", {"dcf-fast": "dcf", "bp-slow": "bp"}),
])
def test_shipped_ipi_inputs_run(name, drivers, tmp_path, rng, small_spec):
    """The example inputs in drivers/ as shipped, shortened to 20 steps, on fresh sockets."""
    text = (DRIVERS / name).read_text()
    text = text.replace(text[text.index("<total_steps>"):text.index("</total_steps>")],
                        "<total_steps>20")
    addresses = {}
    for address, kind in drivers.items():
        addresses[address] = f"{address}-{uuid.uuid4().hex[:8]}"
        text = text.replace(f"<address>{address}</address>",
                            f"<address>{addresses[address]}</address>")
        gentle_model(kind, small_spec, rng).save(tmp_path / f"{kind}.dcf")
    (tmp_path / "input.xml").write_text(text)
    write(tmp_path / "init.extxyz", li_p_o_cell())
    server = subprocess.Popen([ipi_command(), "input.xml"], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    clients = [subprocess.Popen([sys.executable, "-m", "dcf", "ipi", tmp_path / f"{kind}.dcf",
                                 "--structure", tmp_path / "init.extxyz", "--unix",
                                 addresses[address], "--wait", "30"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for address, kind in drivers.items()]
    try:
        outs = [c.communicate(timeout=180) for c in clients]
        server_out = server.communicate(timeout=60)[0]
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
        for a in addresses.values():
            Path(f"/tmp/ipi_{a}").unlink(missing_ok=True)
    for c, (out, err) in zip(clients, outs):
        assert c.returncode == 0, err + server_out
        assert "i-PI sent EXIT" in out
    prefix = text.split('<output prefix="')[1].split('"')[0]
    rows = [r.split() for r in (tmp_path / f"{prefix}.out").read_text().splitlines()
            if r.strip() and not r.startswith("#")]
    assert int(float(rows[-1][0])) == 20
    assert len(read(tmp_path / f"{prefix}.pos_0.extxyz", ":")) >= 1
