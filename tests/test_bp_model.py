"""B–P inference (numpy network + fused Cython force kernel): forces, stress and invariances
checked against finite differences of the energy, and the model file round trip."""
import numpy as np
import pytest
from ase import Atoms

from dcf.models.bp import BPModel, finite_difference_forces, invariant_spec
from dcf.models.mlp import MLP
from dcf.models import ModelFileError, load_model
from dcf.models.modelfile import read_model_file, write_model_file
from dcf.descriptors.spec import FingerprintSpec
from dcf.data.structures import random_packing

from conftest import random_atoms


def random_bp_model(rng, spec, hidden=(12, 8), activation="tanh") -> BPModel:
    """Random weights and a normalization in the range of real G values (a trained model
    is not needed to test the physics of inference)."""
    nets, mean, std = {}, {}, {}
    for el in spec.elements:
        sizes = [spec.n_features(el)[0], *hidden, 1]
        nets[el] = MLP([rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])],
                       [rng.normal(size=b) * 0.1 for b in sizes[1:]], activation)
        mean[el] = rng.uniform(0.0, 2.0, sizes[0])
        std[el] = rng.uniform(0.5, 3.0, sizes[0])
    energies = {el: -float(k + 1) for k, el in enumerate(spec.elements)}
    return BPModel(spec, nets, mean, std, energies)


@pytest.fixture
def model(rng, spec):
    return random_bp_model(rng, spec)


def dense_cell(rng, symbols="Li4O6P2"):
    """A periodic three-element cell with neighbors inside every cutoff."""
    return random_atoms(rng, symbols, min_distance=1.1)


@pytest.mark.parametrize("activation", ["tanh", "softplus", "silu"])
def test_forces_are_minus_energy_gradient(rng, spec, activation):
    model = random_bp_model(rng, spec, activation=activation)
    for _ in range(3):
        atoms = dense_cell(rng)
        F = model.forces(atoms)
        fd = finite_difference_forces(model.energy, atoms, delta=1e-4)
        scale = np.abs(F).max()
        assert scale > 1e-2                       # a non-trivial test
        np.testing.assert_allclose(F, fd, rtol=0, atol=1e-6 * scale)


def test_forces_sum_to_zero(rng, model):
    atoms = random_packing({"Li": 8, "O": 12, "P": 4}, (6.0, 6.5, 7.0), 1.1, seed=3)
    F = model.forces(atoms)
    assert np.abs(F.sum(axis=0)).max() < 1e-10 * np.abs(F).max() * len(atoms)


def test_energy_invariances(rng, model):
    atoms = dense_cell(rng)
    E = model.energy(atoms)
    rattled = atoms.copy()
    rattled.rattle(0.05, seed=1)
    assert abs(model.energy(rattled) - E) > 1e-6          # the energy does see the geometry

    moved = atoms.copy()
    moved.translate(rng.normal(size=3) * 3.0)
    assert model.energy(moved) == pytest.approx(E, rel=1e-12)

    rotated = atoms.copy()
    rotated.rotate(37.0, v=rng.normal(size=3), rotate_cell=True)
    assert model.energy(rotated) == pytest.approx(E, rel=1e-12)

    perm = rng.permutation(len(atoms))
    permuted = atoms[perm]
    assert model.energy(permuted) == pytest.approx(E, rel=1e-12)
    np.testing.assert_allclose(model.forces(permuted), model.forces(atoms)[perm], atol=1e-12)


def test_rotated_forces_rotate(rng, model):
    atoms = dense_cell(rng)
    rotated = atoms.copy()
    rotated.rotate(120.0, v=(1, 1, 1), rotate_cell=True)
    R = np.linalg.lstsq(atoms.cell.array, rotated.cell.array, rcond=None)[0]
    np.testing.assert_allclose(model.forces(rotated), model.forces(atoms) @ R, atol=1e-10)


def test_stress_is_strain_derivative(rng, model):
    atoms = dense_cell(rng)
    stress = model.compute(atoms, ("stress",))["stress"]
    h = 1e-5
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            e = []
            for sign in (1, -1):
                eps = np.eye(3)
                eps[a, b] += sign * h
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ eps, scale_atoms=True)
                e.append(model.energy(strained))
            fd[a, b] = (e[0] - e[1]) / (2 * h) / atoms.get_volume()
    fd = 0.5 * (fd + fd.T)
    voigt = fd[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    assert np.abs(voigt).max() > 1e-3
    np.testing.assert_allclose(stress, voigt, rtol=0, atol=1e-6 * np.abs(voigt).max())


def test_ase_calculator(rng, model):
    atoms = dense_cell(rng)
    atoms.calc = model.calculator()
    E = atoms.get_potential_energy()
    assert E == pytest.approx(model.energy(atoms))
    assert atoms.get_potential_energies().sum() == pytest.approx(E, rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), model.forces(atoms))
    assert atoms.get_stress().shape == (6,)
    from ase.calculators.calculator import PropertyNotImplementedError
    with pytest.raises(PropertyNotImplementedError, match="B-P model provides"):
        atoms.get_dipole_moment()


def test_cluster_without_stress(rng, model):
    atoms = dense_cell(rng)
    atoms.pbc = False
    assert np.isfinite(model.energy(atoms))
    with pytest.raises(ValueError, match="periodic"):
        model.compute(atoms, ("stress",))


def test_save_load_identical(tmp_path, rng, model):
    atoms = dense_cell(rng)
    path = model.save(tmp_path / "bp.dcf")
    loaded = load_model(path)
    assert isinstance(loaded, BPModel) and loaded.spec == model.spec
    res, ref = (m.compute(atoms, ("energy", "forces", "stress")) for m in (loaded, model))
    for key in ref:
        np.testing.assert_array_equal(res[key], ref[key])


def test_load_rejects_mismatched_files(tmp_path, rng, model):
    meta, arrays = model.metadata(), model.to_arrays()

    other = FingerprintSpec(["Li", "O", "P"], [{"kind": "G1", "neighbors": "*"}], cutoff=4.0)
    bad = {**meta, "spec": other.to_dict()}              # spec edited, weights unchanged
    write_model_file(tmp_path / "a.dcf", bad, arrays)
    with pytest.raises(ModelFileError, match="spec_sha256"):
        load_model(tmp_path / "a.dcf")

    bad = {**meta, "spec": other.to_dict(), "spec_sha256": other.fingerprint}
    write_model_file(tmp_path / "b.dcf", bad, arrays)
    with pytest.raises(ModelFileError, match="G features"):
        load_model(tmp_path / "b.dcf")

    missing = {k: v for k, v in arrays.items() if not k.startswith("O/")}
    write_model_file(tmp_path / "c.dcf", meta, missing)
    with pytest.raises(ModelFileError, match="O"):
        load_model(tmp_path / "c.dcf")

    (tmp_path / "d.dcf").write_text("not a model")
    with pytest.raises(ModelFileError, match="d.dcf"):
        load_model(tmp_path / "d.dcf")


def test_unknown_element_is_named(rng, model):
    atoms = Atoms("LiCu", positions=[(0, 0, 0), (2, 0, 0)], cell=[6, 6, 6], pbc=True)
    with pytest.raises(ValueError, match="Cu"):
        model.energy(atoms)


@pytest.mark.parametrize("name", ["mailoa2019-S1", "mailoa2019-S4"])
def test_invariant_spec_keeps_the_G_columns(rng, spec, name):
    from dcf.descriptors.fingerprints import featurize
    for full in (spec, FingerprintSpec.preset(name)):
        atoms = dense_cell(rng) if full is spec else random_packing(
            {el: 3 for el in full.elements}, (7.0, 7.5, 8.0), 1.2, seed=2)
        g_only = invariant_spec(full)
        assert all(g_only.n_features(el) == (full.n_features(el)[0], 0) for el in full.elements)
        a, b = featurize(atoms, full), featurize(atoms, g_only)
        for el in full.elements:
            np.testing.assert_array_equal(a.G[el], b.G[el])


def test_preset_spec_round_trip(tmp_path, rng):
    spec = FingerprintSpec.preset("mailoa2019-S4")
    model = random_bp_model(rng, spec, hidden=(6,))
    meta, _ = read_model_file(model.save(tmp_path / "s4.dcf"))
    assert meta["model"] == "bp" and meta["spec_sha256"] == spec.fingerprint


def test_check_forces_command(tmp_path, rng, model, capsys):
    from ase.io import write

    from dcf.cli import main
    model_path = model.save(tmp_path / "bp.dcf")
    write(tmp_path / "s.extxyz", [dense_cell(rng), dense_cell(rng)])
    args = ["check-forces", str(model_path), str(tmp_path / "s.extxyz"), "--max-atoms", "4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "s.extxyz[1]" in out and "OK" in out
    assert main(args + ["--tolerance", "0"]) == 1              # finite differences are not exact
    with pytest.raises(SystemExit, match="missing.xyz"):
        main(["check-forces", str(model_path), str(tmp_path / "missing.xyz")])
    with pytest.raises(SystemExit, match="nope.dcf"):
        main(["check-forces", str(tmp_path / "nope.dcf"), str(tmp_path / "s.extxyz")])


def test_untrained_element_is_refused(rng, spec, model):
    untrained = BPModel(spec, model.networks, model.g_mean, model.g_std, model.atom_energy,
                        training={"untrained_elements": ["P"]})
    with pytest.raises(ValueError, match="no P atoms"):
        untrained.energy(dense_cell(rng))
    assert np.isfinite(untrained.energy(dense_cell(rng, "Li4O6")))
