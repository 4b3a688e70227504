"""The kernels' single sources: the scratch layout against what the kernels write (guard
bands, NaN-filled scratch), the constants every build exports, the binding of the term
arrays, and the pair-factor polynomial fit against long double."""

import numpy as np
import pytest

from conftest import all_kinds_spec, random_atoms, random_cell
from dcf import FingerprintSpec
from dcf.descriptors.fingerprints import Featurizer, kernels_available, term_arrays
from dcf.descriptors.pair_factor import estrin, pair_factor, pair_factor_poly

KERNELS = kernels_available()
ELEMENTS = ["Li", "O", "P"]

# odd mixes of terms: each leaves some scratch regions empty and stresses others
MIXES = {
    "G1 only": [{"kind": "G1", "neighbors": "*"}],
    "radial, three cutoffs": [
        {"kind": "G2", "neighbors": ["O"], "eta": 0.5, "Rs": 1.0, "Rc": 2.5},
        {"kind": "G3", "neighbors": "*", "kappa": 2.0, "Rc": 3.1},
        {"kind": "G1", "neighbors": "*"}],
    "fused G4, zeta to 16": [
        {"kind": "G4", "neighbors": "*", "zeta": [1, 2, 4, 8, 16], "lambda": [1, -1],
         "eta": 0.01}],
    "G4 with no polynomial": [
        {"kind": "G4", "neighbors": ["Li-O"], "zeta": [1, 3], "lambda": 1, "eta": 2.0}],
    "G5 with non-integer zeta": [
        {"kind": "G5", "neighbors": "*", "zeta": [1.5, 3], "lambda": [1, -1], "eta": 0.2,
         "Rc": 3.3}],
    "vectors only": [{"kind": "V1", "neighbors": ["P"], "eta": 0.3, "Rs": 0.0},
                     {"kind": "A1", "neighbors": "*", "eta": 1.0, "Rs": [0.0, 1.0, 2.0]}],
    "all kinds": None,
}


def mix_spec(name):
    rules = MIXES[name]
    return all_kinds_spec() if rules is None else FingerprintSpec(ELEMENTS, rules, cutoff=4.0)


def structures(rng):
    thin = random_atoms(rng, "Li2OP", cell=random_cell(rng, thin=True), min_distance=0.7)
    isolated = random_atoms(rng, "Li2O3P", pbc=False)      # some atoms with no neighbor
    isolated.positions[0] += 40.0
    isolated.cell[:] = 0.0
    return [random_atoms(rng, "Li4O7P2", cell=np.diag([5.2, 5.6, 6.1]), min_distance=1.4),
            thin, isolated]


def run_all_modes(fz, atoms):
    env = fz.environment(atoms)
    f = fz.features(env, derivatives=True)
    v = fz.features(env)
    dEdG = {el: np.linspace(-1.0, 1.0, f.G[el].size).reshape(f.G[el].shape)
            for el in fz.spec.elements}
    forces, virial = fz.forces(env, dEdG)
    return [v.G, v.A, f.G, f.A, f.dG, f.dA, {"F": forces, "W": virial}]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mix", list(MIXES))
def test_kernels_stay_in_their_scratch_regions(mix, kernel, rng):
    """With NaN-filled scratch and a guard band after each region, every pass (values,
    derivatives, fused forces) leaves the guards untouched and gives the same bits as a
    normal run: each region is as large as its kernel needs and nothing reads unset
    scratch."""
    spec = mix_spec(mix)
    normal, checked = Featurizer(spec, kernel=kernel), Featurizer(spec, kernel=kernel)
    checked.check_scratch = True
    for atoms in structures(rng):
        for a, b in zip(run_all_modes(normal, atoms), run_all_modes(checked, atoms)):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("kernel", KERNELS)
def test_scratch_check_catches_a_region_too_small(kernel, rng):
    """Terms that claim fewer vector columns than they write overrun the V region: the
    guard band after it reports it (the overrun stays inside the guard bands)."""
    module = Featurizer("mailoa2019-S4", kernel=kernel)._kernel
    spec = FingerprintSpec(ELEMENTS, [{"kind": "A1", "neighbors": ["P"], "eta": 1.0,
                                       "Rs": [0.0, 1.0]}], cutoff=4.0)
    fz = Featurizer(spec, kernel=kernel)
    arrays, ns, nG, nA = term_arrays(spec, "Li", module)
    assert nA == 2
    fz._compiled["Li"] = module.CompiledTerms(arrays, ns, nG, 1)
    env = fz.environment(random_atoms(rng))
    fz.check_scratch = True
    with pytest.raises(RuntimeError, match="past scratch region 'V'"):
        fz.features(env)


@pytest.mark.parametrize("kernel", KERNELS)
def test_scratch_layout_is_contiguous_and_grows_with_m(kernel):
    """Regions follow each other without overlap, and every start grows with the entries m,
    so the buffer `compute` sizes for the largest m holds each central atom's layout."""
    fz = Featurizer(all_kinds_spec(), kernel=kernel)
    terms = fz._compiled["Li"]
    previous = None
    for m in (0, 1, 2, 7, 64, 300):
        lay = terms.scratch(m)
        for kind, total in (("double", lay["size"]), ("int", lay["isize"])):
            regions = [v for v in lay.values() if isinstance(v, tuple) and v[0] == kind]
            end = 0
            for _, start, length in regions:
                assert start == end and length >= 0
                end = start + length
            assert end == total
        if previous is not None:
            assert all(lay[k][1] >= previous[k][1] and lay[k][2] >= previous[k][2]
                       for k in lay if isinstance(lay[k], tuple))
            assert lay["size"] >= previous["size"] and lay["isize"] >= previous["isize"]
        previous = lay
    assert lay["r"][2] == 300 and lay["D"][2] == 900 and lay["bstart"][2] == 301
    for kind in ("tw-gradients", "tw-values"):       # each pass's views fit in region tw
        views = [v for v in lay.values() if isinstance(v, tuple) and v[0] == kind]
        end = 0
        for _, start, length in views:
            assert start == end
            end = start + length
        assert end <= lay["tw"][2]
    n_rc, n_fac = lay["fc"][2] // 300, lay["P"][2] // 300
    assert lay["tw.u1"][2] == 900 and lay["tw.columns"][2] == lay["stride"] * (6 + n_fac + n_rc)


def test_every_build_exports_the_same_constants():
    """One declaration (terms.pxd) for all builds: the mode and kind codes Python uses."""
    modules = [Featurizer("mailoa2019-S4", kernel=k)._kernel for k in KERNELS]
    for module in modules:
        assert module.MODES == {"values": 0, "derivatives": 1, "forces": 2}
        assert module.KINDS == {f"G{k}": k for k in range(1, 6)}
        assert (module.POLY_SIZE, module.FUSED_MAX_LOG2_ZETA) == (16, 4)


def test_term_arrays_bind_by_name():
    module = Featurizer("mailoa2019-S4", kernel="portable")._kernel
    arrays, ns, nG, nA = term_arrays(all_kinds_spec(), "O", module)
    terms = module.CompiledTerms(arrays, ns, nG, nA)
    assert (terms.nG, terms.nA, terms.max_rc) == (nG, nA, 4.0)
    with pytest.raises(ValueError, match="array 'ang_slot' missing"):
        module.CompiledTerms({k: v for k, v in arrays.items() if k != "ang_slot"}, ns, nG, nA)
    with pytest.raises(ValueError, match=r"no Terms field for arrays \['ang_mystery'\]"):
        module.CompiledTerms(arrays | {"ang_mystery": np.zeros(3)}, ns, nG, nA)


@pytest.mark.parametrize("rc, eta, degree", [(6.5, 0.0, 11), (3.0, 0.01, 11), (4.0, 0.05, 15),
                                             (6.5, 0.01, 15), (6.5, 0.05, 15), (4.0, 0.5, None),
                                             (6.5, 1.0, None)])
def test_pair_factor_poly_matches_long_double(rc, eta, degree):
    """The fit reaches 2e-15 relative on points the fit never saw; where eta Rc^2 is too
    large for degree 15 it declines (the kernels then call exp())."""
    fit = pair_factor_poly(rc, eta)
    if degree is None:
        assert fit is None
        return
    pc, pd = fit
    assert len(pc) == len(pd) == degree + 1
    s = np.random.default_rng(5).uniform(0.0, rc * rc, 20000)
    q, dq = pair_factor(s, rc, eta)
    x = s * (2.0 / (rc * rc)) - 1.0
    for c, ref in ((pc, q), (pd, dq)):
        err = np.max(np.abs(estrin(c, x) - ref)) / np.max(np.abs(ref))
        assert err < 3e-15


def test_pair_factor_is_the_g4_triplet_factor():
    """Q(s) = exp(-eta s) fc(sqrt s) and dQ/ds (finite differences) in float64 terms."""
    rc, eta = 4.0, 0.3
    s = np.linspace(0.0, rc * rc, 101)[1:-1]
    q, dq = (np.asarray(a, dtype=float) for a in pair_factor(s, rc, eta))
    np.testing.assert_allclose(q, np.exp(-eta * s) * 0.5 * (np.cos(np.pi * np.sqrt(s) / rc) + 1),
                               rtol=1e-14, atol=1e-16)
    h = 1e-5
    qp, qm = (np.asarray(pair_factor(s + d, rc, eta)[0], dtype=float) for d in (h, -h))
    np.testing.assert_allclose(dq, (qp - qm) / (2 * h), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_numpy_estrin_mirrors_the_kernels_polynomial(kernel):
    """`estrin` evaluates as vec.h does: bit for bit where the build does not contract
    multiply-adds (portable), to round-off where it fuses them (AVX2, AVX-512)."""
    module = Featurizer("mailoa2019-S4", kernel=kernel)._kernel
    rng = np.random.default_rng(9)
    for size in (12, 16):
        c = rng.normal(size=size)
        for x in rng.uniform(-1.0, 1.0, 200):
            got, want = module.poly(c, x), estrin(c, x)
            if kernel == "portable":
                assert got == want
            else:
                assert abs(got - want) <= 1e-14 * np.sum(np.abs(c))
    with pytest.raises(ValueError, match="13 coefficients"):
        module.poly(np.zeros(13), 0.5)
