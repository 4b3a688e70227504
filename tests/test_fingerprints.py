"""Fingerprint values against the plain numpy reference, and their symmetries."""
import numpy as np
import pytest
from ase import Atoms
from ase.io import read
from hypothesis import example, given, reject, settings, strategies as st

from conftest import DATA, all_kinds_spec, random_atoms, random_cell
from dcf import FingerprintSpec, SpecError, featurize
from dcf.descriptors.fingerprints import Featurizer, kernel_module, kernels_available
from reference import reference_fingerprints

KERNELS = kernels_available()


def reference(atoms, spec):
    centers = {el: [t.to_dict() | {"neighbors": tuple(t.neighbors)} for t in spec.terms[el]]
               for el in spec.elements}
    return reference_fingerprints(atoms, centers, conditions=True)


def assert_same_features(f, G, A, index, K, elements):
    for el in elements:
        np.testing.assert_array_equal(f.index[el], index[el])
        scale = max(1.0, np.abs(G[el]).max(initial=0))
        np.testing.assert_allclose(f.G[el], G[el], rtol=1e-10, atol=1e-12 * scale)
        # V1 sums cancel; A1 = V1/|V1| amplifies that round-off by the condition number K
        np.testing.assert_array_less(np.abs(f.A[el] - A[el]), 1e-12 * K[el][..., None] + 1e-10 * np.abs(A[el]))


from dcf.rotations import random_rotation  # noqa: E402  (the one sampler)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", ["triclinic", "thin", "slab", "molecule", "wire"])
def test_every_kind_matches_reference(spec, rng, case, kernel):
    if case == "triclinic":
        atoms = random_atoms(rng)
    elif case == "thin":         # cell thinner than every Rc: many self images
        atoms = random_atoms(rng, "Li2OP", cell=random_cell(rng, thin=True), min_distance=0.7)
    elif case == "slab":
        atoms = random_atoms(rng, "Li3O4P", pbc=(True, True, False))
    elif case == "wire":
        atoms = random_atoms(rng, "Li2O3P", cell=random_cell(rng, thin=True) * [1, 3, 3],
                             pbc=(True, False, False))
    else:
        atoms = random_atoms(rng, "Li2O3P", pbc=False)
        atoms.cell[:] = 0.0
    f = featurize(atoms, spec, kernel=kernel)
    assert_same_features(f, *reference(atoms, spec), spec.elements)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("preset", ["mailoa2019-S2", "mailoa2019-S4"])
def test_paper_presets_match_reference(rng, preset, kernel):
    """Dense cells at Rc 6.5 A: long partner lists, zeta up to 16, padded power sums."""
    spec = FingerprintSpec.preset(preset)
    atoms = random_atoms(rng, "Li4O7P2", cell=np.diag([5.2, 5.6, 6.1]), min_distance=1.4)
    assert_same_features(featurize(atoms, spec, kernel=kernel), *reference(atoms, spec),
                         spec.elements)


def test_kernel_builds_agree_to_round_off(rng):
    atoms = random_atoms(rng, "Li4O7P2", cell=np.diag([5.2, 5.6, 6.1]), min_distance=1.4)
    spec = FingerprintSpec.preset("mailoa2019-S2")
    out = {k: featurize(atoms, spec, derivatives=True, kernel=k) for k in KERNELS}
    for f in out.values():
        for el in spec.elements:
            for key in ("G", "A", "dG", "dA"):
                a, b = getattr(f, key)[el], getattr(out["portable"], key)[el]
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13 * np.abs(b).max())


def test_gaussians_beyond_the_exponent_range_are_zero(rng):
    """eta r^2 above 708 (even infinite) gives exp() = 0 in every pass, not NaN."""
    spec = FingerprintSpec(["Li", "O", "P"], [
        {"kind": "G2", "neighbors": "*", "eta": [1e307, 2.0], "Rs": 0.0},
        {"kind": "G4", "neighbors": "*", "zeta": 1, "lambda": 1, "eta": 1e307},
        {"kind": "A1", "neighbors": "*", "eta": 1e307, "Rs": 0.0}], cutoff=4.0)
    atoms = random_atoms(rng)
    for kernel in KERNELS:
        f = featurize(atoms, spec, kernel=kernel)
        fd = featurize(atoms, spec, derivatives=True, kernel=kernel)
        for el in spec.elements:
            G = f.G[el]          # G2 (eta 1e307, 2) per neighbor element, then six G4
            assert np.all(G[:, [0, 2, 4]] == 0) and np.all(G[:, 6:] == 0)
            assert np.all(np.isfinite(G)) and G[:, [1, 3, 5]].max() > 0
            np.testing.assert_allclose(f.G[el], fd.G[el], rtol=1e-12, atol=0)
            np.testing.assert_array_equal(f.A[el], 0.0)


def test_kernel_choice(monkeypatch):
    monkeypatch.delenv("DCF_KERNEL", raising=False)     # the default, also in a forced run
    assert KERNELS[-1] == "portable"
    assert Featurizer("mailoa2019-S4", kernel="portable").kernel == "portable"
    assert Featurizer("mailoa2019-S4").kernel == KERNELS[0]
    monkeypatch.setenv("DCF_KERNEL", "portable")
    assert Featurizer("mailoa2019-S4").kernel == "portable"
    with pytest.raises(ValueError, match="unknown fingerprint kernel 'sse9'"):
        kernel_module("sse9")
    with pytest.raises(ValueError, match="skin"):
        Featurizer("mailoa2019-S4", skin=float("nan"))
    for name in ("avx512", "avx2"):
        if name not in KERNELS:
            with pytest.raises(ValueError, match="not available"):
                kernel_module(name)


@given(seed=st.integers(0, 2**31), pbc=st.lists(st.booleans(), min_size=3, max_size=3),
       thin=st.booleans())
@example(seed=2**31, pbc=[False, False, True], thin=True)   # A1 with a badly cancelling V1
@settings(max_examples=15)
def test_random_cells_match_reference(seed, pbc, thin):
    spec = all_kinds_spec()
    rng = np.random.default_rng(seed)
    try:
        atoms = random_atoms(rng, "Li2O2P", cell=random_cell(rng, thin=thin), pbc=pbc,
                             min_distance=0.7)
    except RuntimeError:             # a thin cell with no room for 5 atoms 0.7 A apart
        reject()
    expected = reference(atoms, spec)
    for kernel in KERNELS:
        assert_same_features(featurize(atoms, spec, kernel=kernel), *expected, spec.elements)


def test_real_dft_frames_match_reference():
    spec = FingerprintSpec(["Al", "Ti"], [
        {"kind": "G2", "neighbors": "*", "eta": [0.3, 2.0], "Rs": 0.0},
        {"kind": "G4", "neighbors": "*", "zeta": [1, 4], "lambda": [1, -1], "eta": 0.05},
        {"kind": "A1", "neighbors": "*", "eta": 0.5, "Rs": 0.0}], cutoff=4.5)
    frames = read(DATA / "TiAl_tutorial_DB_tenth.extxyz", ":")
    for atoms in [a for a in frames if len(a) <= 16][:4]:   # 2-atom cells, far below Rc
        assert_same_features(featurize(atoms, spec), *reference(atoms, spec), spec.elements)


def test_invariance_and_covariance(spec, rng):
    atoms = random_atoms(rng)
    f0 = featurize(atoms, spec)
    T = random_rotation(rng)

    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ T.T, scale_atoms=False)
    moved.positions = atoms.positions @ T.T + rng.normal(size=3) * 5.0
    f1 = featurize(moved, spec)

    wrapped = atoms.copy()
    wrapped.positions += rng.integers(-2, 3, size=(len(atoms), 3)) @ atoms.cell.array
    f2 = featurize(wrapped, spec)

    order = rng.permutation(len(atoms))          # permutation of atoms (same elements)
    f3 = featurize(atoms[order], spec)
    for el in spec.elements:
        scale = np.abs(f0.G[el]).max()
        np.testing.assert_allclose(f1.G[el], f0.G[el], rtol=1e-10, atol=1e-12 * scale)
        np.testing.assert_allclose(f2.G[el], f0.G[el], rtol=1e-10, atol=1e-12 * scale)
        # A(T R) = T A(R)
        np.testing.assert_allclose(f1.A[el], f0.A[el] @ T.T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(f2.A[el], f0.A[el], rtol=1e-10, atol=1e-12)
        # rows of the permuted structure map back to the original atoms
        rows = np.searchsorted(f0.index[el], order[f3.index[el]])
        np.testing.assert_allclose(f3.G[el], f0.G[el][rows], rtol=1e-10, atol=1e-12 * scale)
        np.testing.assert_allclose(f3.A[el], f0.A[el][rows], rtol=1e-10, atol=1e-12)


def test_supercell_gives_the_unit_cell_features(spec, rng):
    atoms = random_atoms(rng, "Li2O3P")
    f1 = featurize(atoms, spec)
    f8 = featurize(atoms.repeat(2), spec)
    for el in spec.elements:
        n = len(f1.index[el])
        # ase's repeat stacks copies of the unit cell atoms in order
        np.testing.assert_allclose(f8.G[el], np.tile(f1.G[el], (8, 1)), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(f8.A[el], np.tile(f1.A[el], (8, 1, 1)), rtol=1e-10, atol=1e-12)
        assert len(f8.index[el]) == 8 * n


def test_a1_is_zero_without_neighbors_and_smooth_variant_is_continuous():
    spec = FingerprintSpec(["O", "H"], [
        {"kind": "G1", "neighbors": "*"},
        {"kind": "A1", "neighbors": "*", "eta": 0.1, "Rs": 0.0},
        {"kind": "A1", "neighbors": "*", "eta": 0.1, "Rs": 0.0, "delta": 0.05}], cutoff=3.0)
    # a symmetric molecule: V1[H] of O vanishes, V1[O] has no O neighbor at all
    water = Atoms("OHH", positions=[[0, 0, 0], [0.9, 0, 0], [-0.9, 0, 0]])
    A = featurize(water, spec).A["O"][0]
    np.testing.assert_array_equal(A[:2], np.zeros((2, 3)))
    # the smooth variant keeps V1's round-off (fused multiply-adds in the AVX2 build)
    np.testing.assert_allclose(A[2:], np.zeros((2, 3)), rtol=0, atol=1e-13)
    # off symmetry: the hard A1 jumps to a unit vector, the smooth one grows from 0
    small = []
    for eps in (1e-6, 1e-3):
        water.positions[1, 0] = 0.9 + eps
        A = featurize(water, spec).A["O"][0]
        np.testing.assert_allclose(np.linalg.norm(A[1]), 1.0)
        small.append(np.linalg.norm(A[3]))
    assert small[0] < 1e-4 and small[1] > small[0]


def test_presets_have_the_papers_sizes():
    sizes = {"mailoa2019-S4": {"Li": (36, 6), "O": (36, 6), "P": (36, 6)},
             "mailoa2019-S2": {"Li": (144, 6), "O": (168, 10), "P": (144, 6)},
             "mailoa2019-S3": {"Al": (264, 11), "F": (248, 16), "H": (248, 16), "O": (248, 11)},
             "mailoa2019-S1": {"C": (1053, 7), "H": (1053, 6), "O": (1053, 10)}}
    for name, expected in sizes.items():
        spec = FingerprintSpec.preset(name)
        assert {el: spec.n_features(el) for el in spec.elements} == expected


def test_structure_with_an_element_the_spec_lacks(spec):
    atoms = Atoms("LiNa", positions=[[0, 0, 0], [2, 0, 0]])
    with pytest.raises(SpecError, match="Na"):
        featurize(atoms, spec)


def test_overlapping_atoms_are_rejected(spec):
    atoms = Atoms("LiO", positions=[[0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="overlap"):
        featurize(atoms, spec)


def test_threads_give_identical_results(spec, rng):
    atoms = random_atoms(rng).repeat(2)
    f1 = featurize(atoms, spec, derivatives=True, num_threads=1)
    f2 = featurize(atoms, spec, derivatives=True, num_threads=2)
    for el in spec.elements:
        np.testing.assert_array_equal(f1.G[el], f2.G[el])
        np.testing.assert_array_equal(f1.dG[el], f2.dG[el])
