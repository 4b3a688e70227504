"""ModelCalculator against ASE's calculator conventions and ASE's own checks: one pass gives
every property it computed, a model file's path and hash in `parameters`, `todict()` in
trajectories, `check_state`/`reset`, and finite differences from ASE's FiniteDifferenceCalculator.
"""
import hashlib
import json

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import FiniteDifferenceCalculator
from ase.io import Trajectory, read

from dcf.descriptors.spec import FingerprintSpec
from dcf.models import ModelCalculator, ModelFileError, load_model
from test_bp_model import random_bp_model
from test_md import gentle_model, li_p_o_cell, li_p_o_spec


class CountingModel:
    """The model, counting its force-field passes."""

    def __init__(self, model):
        self.model, self.passes = model, 0

    def compute(self, atoms, properties):
        self.passes += 1
        return self.model.compute(atoms, properties)

    def __getattr__(self, name):
        return getattr(self.model, name)


@pytest.fixture
def bp_file(tmp_path, rng):
    model = gentle_model("bp", li_p_o_spec(), rng)
    return model, model.save(tmp_path / "bp.dcf")


def test_one_pass_serves_every_property_it_computed(bp_file):
    model, _ = bp_file
    counting = CountingModel(model)
    atoms = li_p_o_cell()
    atoms.calc = ModelCalculator(counting)
    forces = atoms.get_forces()
    energy = atoms.get_potential_energy()           # an MD logger after the step's forces
    stress = atoms.get_stress()
    energies = atoms.get_potential_energies()
    assert counting.passes == 1
    assert not atoms.calc.calculation_required(atoms, ["energy", "forces", "stress"])
    assert energy == pytest.approx(model.energy(atoms), rel=1e-12)
    assert energies.sum() == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(forces, model.forces(atoms), rtol=1e-12)
    np.testing.assert_allclose(stress, model.compute(atoms, ["stress"])["stress"], rtol=1e-12)
    atoms.positions[0, 0] += 0.01
    atoms.get_potential_energy()                    # energy alone: no force pass needed ...
    assert counting.passes == 2
    atoms.get_forces()                              # ... so forces then take one
    assert counting.passes == 3


def test_a_model_file_is_recorded_in_parameters_and_trajectories(bp_file, tmp_path):
    model, path = bp_file
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    for calc in (ModelCalculator(path), ModelCalculator(str(path)),
                 load_model(path).calculator()):
        assert calc.parameters["model_path"] == str(path.resolve())
        assert calc.parameters["model_sha256"] == sha
        assert calc.parameters["model_kind"] == "bp"
        assert calc.parameters["spec_sha256"] == model.spec.fingerprint
        assert json.loads(json.dumps(calc.todict())) == dict(calc.parameters)
    in_memory = model.calculator().todict()
    assert in_memory["model_path"] is None and in_memory["model_kind"] == "bp"
    atoms = li_p_o_cell()
    atoms.calc = ModelCalculator(path)
    with Trajectory(tmp_path / "md.traj", "w") as traj:
        atoms.get_forces()
        traj.write(atoms)
    back = read(tmp_path / "md.traj")
    assert back.calc.name == "dcf"
    assert back.calc.parameters["model_sha256"] == sha
    assert back.calc.parameters["model_path"] == str(path.resolve())
    np.testing.assert_allclose(back.get_forces(), atoms.get_forces(), rtol=1e-12)
    with pytest.raises(ModelFileError, match="does not exist"):
        ModelCalculator(tmp_path / "missing.dcf")


def test_conventions_implemented_properties_check_state_reset(rng):
    dcf_model = gentle_model("dcf", li_p_o_spec(), rng)
    calc = ModelCalculator(dcf_model)
    assert calc.implemented_properties == ["forces"]
    atoms = li_p_o_cell()
    atoms.calc = calc
    forces = atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="not the gradient of an energy"):
        atoms.get_potential_energy()
    assert calc.check_state(atoms) == []
    moved = atoms.copy()
    moved.positions[3] += 1e-7
    assert "positions" in calc.check_state(moved)
    strained = atoms.copy()
    strained.set_cell(atoms.cell * 1.001)
    assert "cell" in calc.check_state(strained)
    calc.reset()
    assert calc.results == {} and calc.atoms is None
    assert calc.calculation_required(atoms, ["forces"])
    np.testing.assert_allclose(atoms.get_forces(), forces, rtol=1e-12)


def test_forces_and_stress_agree_with_ases_finite_differences(bp_file):
    """ASE's FiniteDifferenceCalculator (its test_fd.py check) around the B–P calculator."""
    model, path = bp_file
    atoms = li_p_o_cell()
    atoms.calc = ModelCalculator(path)
    forces, stress = atoms.get_forces(), atoms.get_stress()
    numeric = atoms.copy()
    numeric.calc = FiniteDifferenceCalculator(ModelCalculator(path), eps_disp=1e-4,
                                              eps_strain=1e-5)
    np.testing.assert_allclose(numeric.get_forces(), forces, atol=2e-6 * np.abs(forces).max())
    np.testing.assert_allclose(numeric.get_stress(), stress, atol=1e-5 * np.abs(stress).max())


def test_ases_own_trajectory_test_passes(tmp_path, monkeypatch, rng):
    """ase/test/calculator/test_traj.py::test_h2_traj, run on a B–P model for H."""
    from ase.test.calculator.test_traj import test_h2_traj

    spec = FingerprintSpec(["H"], [{"kind": "G2", "neighbors": "*", "eta": [0.5, 2.0],
                                    "Rs": 0.0}], cutoff=3.0)
    path = random_bp_model(rng, spec, hidden=(4,)).save(tmp_path / "h.dcf")

    class Factory:
        def calc(self):
            return ModelCalculator(path)

    monkeypatch.chdir(tmp_path)
    assert molecule("H2").get_chemical_symbols() == ["H", "H"]
    test_h2_traj(Factory(), tmp_path)
