"""MD front ends with a real model: ASE calculator, `dcf md` (thermostat, restart), and the
i-PI driver against a real i-pi server process on a UNIX socket."""
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write
from ase.io.trajectory import Trajectory

from dcf.spec import FingerprintSpec
from dcf.structures import random_packing
from test_bp_model import random_bp_model

DRIVERS = Path(__file__).parents[1] / "drivers"


@pytest.fixture
def small_spec():
    return FingerprintSpec(["Li", "O", "P"], [
        {"kind": "G2", "neighbors": "*", "eta": [0.5, 2.0], "Rs": 0.0},
        {"kind": "G4", "neighbors": "*", "zeta": 1, "lambda": [1, -1], "eta": 0.1},
    ], cutoff=4.0)


@pytest.fixture
def setup(tmp_path, rng, small_spec):
    """A gentle random B–P model file and a 24-atom Li-P-O cell."""
    model = random_bp_model(rng, small_spec, hidden=(6,))
    for net in model.networks.values():
        net.weights[-1] *= 0.05                     # soft forces: a stable test trajectory
    model.save(tmp_path / "bp.dcf")
    atoms = random_packing({"Li": 8, "P": 4, "O": 12}, np.eye(3) * 7.0, min_distance=1.6,
                           seed=3)
    structure = tmp_path / "init.extxyz"
    write(structure, atoms)
    return model, tmp_path / "bp.dcf", atoms, structure


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


def test_md_nve_reports_energy_drift(setup, tmp_path):
    _, model_path, _, structure = setup
    res = dcf("md", model_path, structure, "--thermostat", "nve", "--temperature", 100,
              "--steps", 30, "--interval", 5, "--timestep", 0.5, "--traj", tmp_path / "nve.traj")
    assert res.returncode == 0, res.stderr
    assert "NVE energy drift" in res.stdout


IPI_INPUT = """<simulation verbosity="low">
  <output prefix="sim">
    <properties stride="1" filename="out">[ step, temperature{{kelvin}} ]</properties>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>12345</seed></prng>
  <ffsocket name="dcf" mode="unix" pbc="false">
    <address>{address}</address>
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


@pytest.mark.slow
def test_ipi_server_runs_nvt_with_the_driver(setup, tmp_path):
    ipi = shutil.which("i-pi", path=os.path.dirname(sys.executable))
    if ipi is None:
        pytest.skip("the i-pi command (pip install ipi) is not installed")
    _, model_path, _, structure = setup
    address = f"dcf-test-{uuid.uuid4().hex[:8]}"
    (tmp_path / "input.xml").write_text(IPI_INPUT.format(steps=100, address=address))
    server = subprocess.Popen([ipi, "input.xml"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        driver = dcf("ipi", model_path, "--structure", structure, "--unix", address,
                     "--wait", 60, timeout=300)
        server_out = server.communicate(timeout=120)[0]
    finally:
        if server.poll() is None:
            server.kill()
        Path(f"/tmp/ipi_{address}").unlink(missing_ok=True)
    assert driver.returncode == 0, driver.stderr + server_out
    assert "i-PI sent EXIT after" in driver.stdout
    steps = [line.split() for line in (tmp_path / "sim.out").read_text().splitlines()
             if not line.startswith("#")]
    assert int(float(steps[-1][0])) == 100


def test_ipi_driver_without_server_fails_clearly(setup):
    _, model_path, _, structure = setup
    res = dcf("ipi", model_path, "--structure", structure, "--unix",
              f"nobody-{uuid.uuid4().hex[:8]}", "--wait", 0.5, timeout=60)
    assert res.returncode == 1
    assert "no i-PI server answered" in res.stderr
