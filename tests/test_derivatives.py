"""Analytic dG/dr, dA/dr, the fused force kernel and the virial against finite differences."""
import numpy as np
import pytest

from conftest import all_kinds_spec, random_atoms, random_cell
from dcf import Featurizer, featurize
from reference import finite_difference


def assert_close_relative(analytic, numeric, rtol=1e-6):
    scale = np.abs(numeric).max()
    assert np.abs(analytic - numeric).max() <= rtol * scale, (
        f"max error {np.abs(analytic - numeric).max():.3g} vs scale {scale:.3g}")


@pytest.mark.parametrize("case", ["periodic", "thin", "molecule"])
def test_dG_and_dA_equal_finite_differences(spec, rng, case):
    if case == "periodic":
        atoms = random_atoms(rng)
    elif case == "thin":
        atoms = random_atoms(rng, "Li2OP", cell=random_cell(rng, thin=True), min_distance=0.7)
    else:
        atoms = random_atoms(rng, "Li2O3P", pbc=False)
    f = featurize(atoms, spec, derivatives=True)
    for el in spec.elements:
        if not len(f.index[el]):
            continue
        dG = f.dense_dG(el)
        assert_close_relative(dG, finite_difference(lambda a: featurize(a, spec).G[el], atoms))
        # translation invariance: for each G_i the derivatives over all atoms sum to zero
        np.testing.assert_allclose(dG.sum(axis=2), 0.0, atol=1e-10 * np.abs(dG).max())
        # A1 jumps where V1 = 0; away from that its derivative is well defined
        dA = f.dense_dA(el)
        assert_close_relative(dA, finite_difference(lambda a: featurize(a, spec).A[el], atoms))
        np.testing.assert_allclose(dA.sum(axis=3), 0.0, atol=1e-10 * max(np.abs(dA).max(), 1))


def test_sparse_layout_names_rows_and_atoms(spec, rng):
    atoms = random_atoms(rng)
    f = featurize(atoms, spec, derivatives=True)
    for el in spec.elements:
        p = len(f.pair_row[el])
        assert f.dG[el].shape == (p, spec.n_features(el)[0], 3)
        assert f.dA[el].shape == (p, spec.n_features(el)[1], 3, 3)
        assert np.all(np.diff(f.pair_row[el]) >= 0)
        assert f.pair_atom[el].max() < len(atoms)


def linear_energy(weights, featurizer):
    """E = sum_i sum_a w_ia G_ia: an energy whose dE/dG is `weights`."""
    def energy(atoms):
        G = featurizer(atoms).G
        return sum(float(np.sum(weights[el] * G[el])) for el in G)
    return energy


@pytest.mark.parametrize("thin", [False, True])
def test_fused_forces_and_virial(rng, thin):
    spec = all_kinds_spec()
    fz = Featurizer(spec)
    atoms = random_atoms(rng, "Li3O3P2", cell=random_cell(rng, thin=thin) * (1.6 if thin else 1),
                         min_distance=0.8)
    env = fz.environment(atoms)
    f = fz.features(env, derivatives=True)
    weights = {el: rng.normal(size=f.G[el].shape) for el in spec.elements}
    forces, virial = fz.forces(env, weights)

    # equals the contraction of the sparse dG/dr
    contracted = np.zeros_like(forces)
    for el in spec.elements:
        contracted -= np.einsum("ia,iajk->jk", weights[el], f.dense_dG(el))
    np.testing.assert_allclose(forces, contracted, rtol=1e-10, atol=1e-10 * np.abs(forces).max())

    # forces are -dE/dr by finite differences, and sum to zero
    energy = linear_energy(weights, fz)
    numeric = -finite_difference(lambda a: np.array(energy(a)), atoms)
    assert_close_relative(forces, numeric)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-10 * np.abs(forces).max())

    # virial is -dE/d(strain): positions and cell deformed by (1 + eps)
    h = 1e-6
    numeric_virial = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            values = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[a, b] += sign * h
                deformed = atoms.copy()
                deformed.set_cell(atoms.cell.array @ strain.T, scale_atoms=False)
                deformed.positions = atoms.positions @ strain.T
                values.append(energy(deformed))
            numeric_virial[a, b] = -(values[0] - values[1]) / (2 * h)
    assert_close_relative(virial, numeric_virial)


def test_parts_of_the_centers_sum_to_the_whole(rng):
    """MPI split: K parts' features partition the rows, and their forces and virials add up."""
    spec = all_kinds_spec()
    fz = Featurizer(spec)
    atoms = random_atoms(rng, "Li3O3P2", min_distance=0.8)
    env = fz.environment(atoms)
    whole = fz.features(env)
    weights = {el: rng.normal(size=whole.G[el].shape) for el in spec.elements}
    forces, virial = fz.forces(env, weights)
    parts_f, parts_v = np.zeros_like(forces), np.zeros_like(virial)
    for k in range(3):
        env_k = fz.environment(atoms, part=(k, 3))
        f_k = fz.features(env_k)
        rows = {el: np.searchsorted(whole.index[el], f_k.index[el]) for el in spec.elements}
        for el in spec.elements:
            np.testing.assert_array_equal(f_k.G[el], whole.G[el][rows[el]])
        fk, vk = fz.forces(env_k, {el: weights[el][rows[el]] for el in spec.elements})
        parts_f += fk
        parts_v += vk
    np.testing.assert_allclose(parts_f, forces, atol=1e-12 * np.abs(forces).max())
    np.testing.assert_allclose(parts_v, virial, atol=1e-12 * np.abs(virial).max())
    with pytest.raises(ValueError, match="part"):
        fz.environment(atoms, part=(3, 3))
