"""MPI-parallel inference under a real `mpiexec -n 2`: each rank takes a block of the central
atoms and the results are summed. Forces, energies and stress equal the serial ones (1e-10),
for an ASE script that every rank runs, for `dcf md`, and for the i-PI driver."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

from dcf.models import load_model
from test_md import (IPIServer, gentle_model, li_p_o_cell, li_p_o_spec,
                     recorded_forces_match_the_model)

MPIEXEC = Path(sys.executable).parent / "mpiexec"

ASE_SCRIPT = '''
import sys
import numpy as np
from ase.io import read
from dcf.dynamics.md import make_dynamics
from dcf.models import load_model
from dcf.parallel import world

comm = world()
model = load_model(sys.argv[1])
model.set_communicator(comm)
atoms = read(sys.argv[2])
atoms.calc = model.calculator()
out = {"rank": comm.rank, "size": comm.size, "forces": atoms.get_forces()}
if "energy" in model.implemented_properties:
    out["energy"] = atoms.get_potential_energy()
    out["stress"] = atoms.get_stress()
dyn = make_dynamics(atoms, "langevin", 500.0, timestep=1.0, damping=20.0, seed=7)
dyn.run(10)
out["positions_after_md"] = atoms.positions
np.savez(f"{sys.argv[3]}.{comm.rank}.npz", **out)
'''


@pytest.fixture(scope="module")
def mpiexec():
    if not MPIEXEC.exists():
        pytest.skip(f"{MPIEXEC} not found (pip install mpich)")
    return str(MPIEXEC)


@pytest.fixture(params=["bp", "dcf"])
def case(request, tmp_path):
    model = gentle_model(request.param, li_p_o_spec(), np.random.default_rng(11))
    model.save(tmp_path / "model.dcf")
    write(tmp_path / "cell.extxyz", li_p_o_cell(seed=6))
    return request.param, tmp_path


def run(cmd, cwd, timeout=240):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))}\n{res.stdout}\n{res.stderr}"
    return res


def test_ase_script_on_two_ranks_equals_serial(case, mpiexec):
    kind, tmp = case
    (tmp / "script.py").write_text(ASE_SCRIPT)
    run([sys.executable, "script.py", "model.dcf", "cell.extxyz", "serial"], tmp)
    run([mpiexec, "-n", 2, sys.executable, "script.py", "model.dcf", "cell.extxyz", "mpi"], tmp)
    serial = np.load(tmp / "serial.0.npz")
    ranks = [np.load(tmp / f"mpi.{r}.npz") for r in (0, 1)]
    assert [int(r["size"]) for r in ranks] == [2, 2]
    for key in serial.files:
        if key in ("rank", "size"):
            continue
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
        np.testing.assert_allclose(ranks[0][key], serial[key], rtol=1e-10, atol=1e-12,
                                   err_msg=key)
    model = load_model(tmp / "model.dcf")
    np.testing.assert_allclose(serial["forces"], model.forces(read(tmp / "cell.extxyz")),
                               rtol=1e-12)


@pytest.mark.slow
def test_dcf_md_on_two_ranks_equals_serial(case, mpiexec):
    kind, tmp = case
    args = ["-m", "dcf", "md", "model.dcf", "cell.extxyz", "--steps", 20, "--interval", 10,
            "--temperature", 300, "--seed", 3, "--timestep", 0.5]
    run([sys.executable, *args, "--traj", "serial.traj"], tmp)
    run([mpiexec, "-n", 2, sys.executable, *args, "--traj", "mpi.traj"], tmp)
    serial, mpi = read(tmp / "serial.traj", ":"), read(tmp / "mpi.traj", ":")
    assert [a.info["step"] for a in mpi] == [0, 10, 20]
    for a, b in zip(serial, mpi):
        np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=1e-9)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), rtol=1e-10, atol=1e-12)
    assert len((tmp / "mpi.log").read_text().splitlines()) == 4   # one writer: header + 3 rows


@pytest.mark.slow
def test_ipi_driver_on_two_ranks(mpiexec, tmp_path):
    model = gentle_model("dcf", li_p_o_spec(), np.random.default_rng(2))
    model.save(tmp_path / "model.dcf")
    write(tmp_path / "init.extxyz", li_p_o_cell())
    with IPIServer(tmp_path, "unix", steps=100) as server:
        driver = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "dcf", "ipi",
                                 str(tmp_path / "model.dcf"), "--structure",
                                 str(tmp_path / "init.extxyz"), *server.driver_args],
                                capture_output=True, text=True, timeout=300)
        server_out = server.process.communicate(timeout=120)[0]
    assert driver.returncode == 0, driver.stderr + server_out
    assert driver.stdout.count("i-PI sent EXIT after 101 force evaluation(s)") == 1
    recorded_forces_match_the_model(tmp_path, tmp_path / "model.dcf")


class OneRankOfTwo:
    """Rank k of 2 whose sum() keeps the local part: what each rank contributes."""

    def __init__(self, rank):
        self.rank, self.size = rank, 2

    def sum(self, array):
        return np.asarray(array, dtype=float)


@pytest.mark.parametrize("kind", ["bp", "dcf"])
def test_each_rank_computes_a_disjoint_part_of_the_atoms(kind):
    model = gentle_model(kind, li_p_o_spec(), np.random.default_rng(4))
    model.remove_net_force = False                 # the mean is not additive over parts
    atoms = li_p_o_cell(seed=9)
    props = ("energy", "energies", "forces", "stress") if kind == "bp" else ("forces",)
    whole = model.compute(atoms, props)
    parts = []
    for rank in (0, 1):
        model.set_communicator(OneRankOfTwo(rank))
        parts.append(model.compute(atoms, props))
    for p in props:
        np.testing.assert_allclose(parts[0][p] + parts[1][p], whole[p], rtol=1e-12, atol=1e-14)
    key = "energies" if kind == "bp" else "forces"      # B–P forces reach the neighbors too
    on_rank = [np.abs(part[key]).reshape(len(atoms), -1).sum(axis=1) > 0 for part in parts]
    assert not np.any(on_rank[0] & on_rank[1]) and np.all(on_rank[0] | on_rank[1])
    assert 0 < on_rank[0].sum() < len(atoms)
