"""Cost per frame of the Cython core on system B (Table S4 features, Rc 6.5, one thread).

Every benchmark checks what it timed against system B's reference, computed once (the
portable kernel build, ASE's neighbor list, dG/dr contracted in numpy) and tiled over the
replicas (`conftest.tiled`).

Run: .venv/bin/python -m pytest benchmarks/test_bench_fingerprints.py --benchmark-only \
         --benchmark-group-by=group --benchmark-columns=median,iqr,min,rounds
"""
import functools

import numpy as np
import pytest
from ase.neighborlist import neighbor_list as ase_neighbor_list

from conftest import system, tag, tiled
from dcf import neighbor_list
from dcf.bench import report as q
from dcf.descriptors.spec import invariant_spec
from dcf.bench.costs import S4, mean_neighbors
from dcf.descriptors.fingerprints import Featurizer

S4_G_ONLY = invariant_spec(S4)
ROUND_OFF = {"rtol": 1e-9, "atol": 1e-10}       # kernel builds agree to round-off


@functools.lru_cache(maxsize=None)
def reference():
    """System B (208 atoms): neighbors per atom (ASE), G and A, G with dG/dr (portable
    kernels), and random dE/dG with the B-P forces they give, from the sparse dG/dr."""
    atoms = system(1)
    counts = np.bincount(ase_neighbor_list("i", atoms, S4.cutoff), minlength=len(atoms))
    features = Featurizer(S4, num_threads=1, kernel="portable")(atoms)
    with_dG = Featurizer(S4_G_ONLY, num_threads=1, kernel="portable")(atoms, derivatives=True)
    rng = np.random.default_rng(0)
    dEdG = {el: rng.normal(size=g.shape) for el, g in with_dG.G.items()}
    forces = np.zeros((len(atoms), 3))
    for el, w in dEdG.items():      # F_j = -sum_ia dE/dG_ia dG_ia/dr_j
        push = np.einsum("pa,pac->pc", w[with_dG.pair_row[el]], with_dG.dG[el])
        np.add.at(forces, with_dG.pair_atom[el], -push)
        np.add.at(forces, with_dG.index[el][with_dG.pair_row[el]], push)
    return counts, features, with_dG, dEdG, forces


def check_G(features, n_atoms):
    _, ref, _, _, _ = reference()
    for el in S4.elements:
        np.testing.assert_allclose(features.G[el], tiled(ref.G[el], n_atoms), **ROUND_OFF)


@pytest.fixture
def featurizer():
    return Featurizer(S4, num_threads=1)


def test_neighbor_list(benchmark, atoms):
    tag(benchmark, q.NEIGHBOR_LIST, len(atoms), mean_neighbors=mean_neighbors(atoms, S4.cutoff))
    i, j, S = benchmark(neighbor_list, "ijS", atoms, S4.cutoff, num_threads=1)
    counts = reference()[0]
    np.testing.assert_array_equal(np.bincount(i, minlength=len(atoms)),
                                  tiled(counts, len(atoms)))
    assert len(j) == len(S) == len(i)


def test_G(benchmark, atoms):
    """Invariant fingerprints only, from the neighbor list up (as a B-P energy needs)."""
    tag(benchmark, q.G, len(atoms))
    fz = Featurizer(S4_G_ONLY, num_threads=1)
    check_G(benchmark(lambda: fz.features(fz.environment(atoms))), len(atoms))


def test_G_and_A(benchmark, atoms, featurizer):
    """What DCF inference needs per MD step: neighbor list, G and A."""
    tag(benchmark, q.G_A, len(atoms))
    f = benchmark(lambda: featurizer.features(featurizer.environment(atoms)))
    check_G(f, len(atoms))
    ref = reference()[1]
    for el in S4.elements:
        np.testing.assert_allclose(f.A[el], tiled(ref.A[el], len(atoms)), **ROUND_OFF)


def test_G_and_dG(benchmark, atoms):
    """G with the sparse dG/dr that B-P training contracts."""
    tag(benchmark, q.G_DG, len(atoms))
    fz = Featurizer(S4_G_ONLY, num_threads=1)
    f = benchmark(lambda: fz.features(fz.environment(atoms), derivatives=True))
    check_G(f, len(atoms))
    ref = reference()[2]
    for el in S4.elements:          # every replica pair has the derivative of its original
        assert f.dG[el].shape == (len(ref.dG[el]) * (len(atoms) // 208),) + ref.dG[el].shape[1:]
        np.testing.assert_allclose(np.abs(f.dG[el]).sum(),
                                   np.abs(ref.dG[el]).sum() * (len(atoms) // 208), rtol=1e-9)
        if len(atoms) == 208:
            np.testing.assert_allclose(f.dG[el], ref.dG[el], **ROUND_OFF)


def test_fused_bp_forces(benchmark, atoms):
    """B-P forces and virial for a given dE/dG, without materializing dG/dr
    (neighbor list and G pass included: what one B-P force call costs before the network)."""
    tag(benchmark, q.BP_KERNEL, len(atoms))
    fz = Featurizer(S4_G_ONLY, num_threads=1)
    _, _, _, dEdG_b, forces_b = reference()
    dEdG = {el: tiled(w, len(atoms)) for el, w in dEdG_b.items()}

    def step():
        env = fz.environment(atoms)
        fz.features(env)
        return fz.forces(env, dEdG)

    forces, virial = benchmark(step)
    np.testing.assert_allclose(forces, tiled(forces_b, len(atoms)), rtol=1e-9, atol=1e-9)
    assert virial.shape == (3, 3) and np.all(np.isfinite(virial))
