"""The i-PI PES (dcf.dynamics.ipi_pes): units at the boundary against ASE's units and the ASE
calculator, then real i-PI runs: in-process `<ffdirect>` with the shipped example input, and
i-PI's own `i-pi-py_driver -m custom -P drivers/dcf_pes.py` over a UNIX socket."""
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write
from ase.units import Bohr, Hartree

from dcf.dynamics.ipi_pes import DCFDriver
from dcf.models import ModelCalculator
from test_md import gentle_model, li_p_o_cell, li_p_o_spec

DRIVERS = Path(__file__).parents[1] / "drivers"


def ipi_tool(name):
    path = shutil.which(name, path=os.path.dirname(sys.executable))
    if path is None:
        pytest.skip(f"{name} (pip install ipi) is not installed")
    return path


@pytest.fixture(params=["bp", "dcf"])
def files(request, tmp_path, rng):
    """A gentle model file of each kind and a periodic 24-atom Li-P-O template."""
    path = gentle_model(request.param, li_p_o_spec(), rng).save(tmp_path / "model.dcf")
    write(tmp_path / "init.extxyz", li_p_o_cell())
    return request.param, path, tmp_path / "init.extxyz"


def test_pes_returns_the_calculators_results_in_atomic_units(files, rng):
    kind, model, template = files
    driver = DCFDriver(model=str(model), template=str(template), verbosity=0)
    atoms = read(template)
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))),
                   scale_atoms=True)
    energy, forces, vir, extras = driver(atoms.cell.array.T / Bohr, atoms.positions / Bohr)
    atoms.calc = ModelCalculator(model)
    # i-PI's Bohr and Hartree are ASE's to ~1e-9: sums that cancel feel it at 1e-9 eV
    np.testing.assert_allclose(forces * Hartree / Bohr, atoms.get_forces(), rtol=1e-7,
                               atol=1e-8)
    if kind == "bp":
        assert energy * Hartree == pytest.approx(atoms.get_potential_energy(), rel=1e-7)
        xx, yy, zz, yz, xz, xy = atoms.get_stress()
        sigma = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        np.testing.assert_allclose(vir * Hartree, -atoms.get_volume() * sigma, rtol=1e-7,
                                   atol=1e-8)
    else:
        assert energy == 0.0 and not vir.any()
    assert extras == ""
    with pytest.raises(ValueError, match="i-PI sent 3 atoms; the template"):
        driver(atoms.cell.array.T / Bohr, atoms.positions[:3] / Bohr)


def check_recorded_forces(workdir: Path, prefix: str, model: Path, steps: int):
    """i-PI's recorded positions (A) and forces (eV/A) against the ASE calculator."""
    rows = [r for r in (workdir / f"{prefix}.out").read_text().splitlines()
            if r.strip() and not r.startswith("#")]
    assert int(float(rows[-1].split()[0])) == steps
    positions = read(workdir / f"{prefix}.pos_0.extxyz", ":")
    forces = read(workdir / f"{prefix}.for_0.extxyz", ":")
    assert len(positions) == len(forces) >= 2
    calc = ModelCalculator(model)
    for atoms, recorded in zip(positions, forces):
        atoms.calc = calc
        np.testing.assert_allclose(recorded.get_forces(), atoms.get_forces(), atol=2e-6)


@pytest.mark.slow
def test_real_ipi_runs_the_shipped_ffdirect_input(files):
    kind, model, template = files
    workdir = template.parent
    text = (DRIVERS / "ipi-ffdirect.xml").read_text()
    text = text.replace(text[text.index("<total_steps>"):text.index("</total_steps>")],
                        "<total_steps>20").replace('stride="10"', 'stride="5"')
    (workdir / "input.xml").write_text(text)
    shutil.copy(DRIVERS / "dcf_pes.py", workdir)
    res = subprocess.run([ipi_tool("i-pi"), "input.xml"], cwd=workdir, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    check_recorded_forces(workdir, "direct", model, 20)


SOCKET_INPUT = """<simulation verbosity="low">
  <output prefix="sim">
    <properties stride="1" filename="out">[ step, temperature{{kelvin}} ]</properties>
    <trajectory filename="pos" stride="5" format="ase">positions{{ase}}</trajectory>
    <trajectory filename="for" stride="5" format="ase">forces{{ase}}</trajectory>
  </output>
  <total_steps>20</total_steps>
  <prng><seed>4</seed></prng>
  <ffsocket name="dcf" mode="unix" pbc="false"><address>{address}</address></ffsocket>
  <system>
    <initialize nbeads="1">
      <file mode="ase">init.extxyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces><force forcefield="dcf"/></forces>
    <motion mode="dynamics">
      <dynamics mode="nvt">
        <timestep units="femtosecond">0.5</timestep>
        <thermostat mode="langevin"><tau units="femtosecond">20</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
  </system>
</simulation>
"""


@pytest.mark.slow
@pytest.mark.parametrize("files", ["bp"], indirect=True)
def test_real_ipi_with_its_own_python_driver_in_custom_mode(files):
    _, model, template = files
    workdir = template.parent
    address = f"dcf-pes-{uuid.uuid4().hex[:8]}"
    (workdir / "input.xml").write_text(SOCKET_INPUT.format(address=address))
    server = subprocess.Popen([ipi_tool("i-pi"), "input.xml"], cwd=workdir, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):                       # the socket appears once i-PI is up
            if Path(f"/tmp/ipi_{address}").exists() or server.poll() is not None:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        driver = subprocess.run(
            [ipi_tool("i-pi-py_driver"), "-m", "custom", "-P", str(DRIVERS / "dcf_pes.py"),
             "-u", "-a", address, "-o", f"model={model},template={template}"],
            cwd=workdir, capture_output=True, text=True, timeout=300)
        server_out = server.communicate(timeout=120)[0]
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=30)
        Path(f"/tmp/ipi_{address}").unlink(missing_ok=True)
    assert server.returncode == 0, server_out[-3000:] + driver.stderr[-3000:]
    check_recorded_forces(workdir, "sim", model, 20)
