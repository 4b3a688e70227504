"""Cost per frame of the Cython core on system B (Table S4 features, Rc 6.5, one thread).

Run: .venv/bin/python -m pytest benchmarks/test_bench_fingerprints.py --benchmark-only \
         --benchmark-group-by=group --benchmark-columns=median,iqr,min,rounds
"""
import numpy as np
import pytest

from conftest import tag
from dcf import neighbor_list
from dcf.bench import report as q
from dcf.models.bp import invariant_spec
from dcf.bench.costs import S4, mean_neighbors
from dcf.descriptors.fingerprints import Featurizer

S4_G_ONLY = invariant_spec(S4)


@pytest.fixture
def featurizer():
    return Featurizer(S4, num_threads=1)


def test_neighbor_list(benchmark, atoms):
    tag(benchmark, q.NEIGHBOR_LIST, len(atoms), mean_neighbors=mean_neighbors(atoms, S4.cutoff))
    benchmark(neighbor_list, "ijS", atoms, S4.cutoff, num_threads=1)


def test_G(benchmark, atoms):
    """Invariant fingerprints only, from the neighbor list up (as a B-P energy needs)."""
    tag(benchmark, q.G, len(atoms))
    fz = Featurizer(S4_G_ONLY, num_threads=1)
    benchmark(lambda: fz.features(fz.environment(atoms)))


def test_G_and_A(benchmark, atoms, featurizer):
    """What DCF inference needs per MD step: neighbor list, G and A."""
    tag(benchmark, q.G_A, len(atoms))
    benchmark(lambda: featurizer.features(featurizer.environment(atoms)))


def test_G_and_dG(benchmark, atoms):
    """G with the sparse dG/dr that B-P training contracts."""
    tag(benchmark, q.G_DG, len(atoms))
    fz = Featurizer(S4_G_ONLY, num_threads=1)
    benchmark(lambda: fz.features(fz.environment(atoms), derivatives=True))


def test_fused_bp_forces(benchmark, atoms):
    """B-P forces and virial for a given dE/dG, without materializing dG/dr
    (neighbor list and G pass included: what one B-P force call costs before the network)."""
    tag(benchmark, q.BP_KERNEL, len(atoms))
    fz = Featurizer(S4_G_ONLY, num_threads=1)
    rng = np.random.default_rng(0)
    env = fz.environment(atoms)
    dEdG = {el: rng.normal(size=g.shape) for el, g in fz.features(env).G.items()}

    def step():
        env = fz.environment(atoms)
        fz.features(env)
        return fz.forces(env, dEdG)

    benchmark(step)
