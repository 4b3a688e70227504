"""Cost per frame of the Cython core on system B (Table S4 features, Rc 6.5, one thread).

Run: .venv/bin/python -m pytest benchmarks --benchmark-only --benchmark-group-by=func \
         --benchmark-columns=median,iqr,min,rounds --benchmark-json=out/bench-core.json
"""
import numpy as np
import pytest

from dcf import FingerprintSpec, neighbor_list
from dcf.fingerprints import Featurizer

S4 = FingerprintSpec.preset("mailoa2019-S4")
S4_G_ONLY = FingerprintSpec(S4.elements, [r for r in S4.rules if r["kind"] not in ("A1", "V1")],
                            S4.cutoff, "S4-invariant-only")


@pytest.fixture
def featurizer():
    return Featurizer(S4, num_threads=1)


def test_neighbor_list(benchmark, atoms):
    benchmark.group = f"neighbor list ({len(atoms)} atoms)"
    i, j, S = benchmark(neighbor_list, atoms, 6.5, "ijS", 1)
    benchmark.extra_info["mean_neighbors"] = len(i) / len(atoms)


def test_G(benchmark, atoms):
    """Invariant fingerprints only, from the neighbor list up (as a B-P energy needs)."""
    benchmark.group = f"G ({len(atoms)} atoms)"
    fz = Featurizer(S4_G_ONLY, num_threads=1)
    benchmark(lambda: fz.features(fz.environment(atoms)))


def test_G_and_A(benchmark, atoms, featurizer):
    """What DCF inference needs per MD step: neighbor list, G and A."""
    benchmark.group = f"G+A ({len(atoms)} atoms)"
    benchmark(lambda: featurizer.features(featurizer.environment(atoms)))


def test_G_and_dG(benchmark, atoms):
    """G with the sparse dG/dr that B-P training contracts."""
    benchmark.group = f"G+dG/dr ({len(atoms)} atoms)"
    fz = Featurizer(S4_G_ONLY, num_threads=1)
    benchmark(lambda: fz.features(fz.environment(atoms), derivatives=True))


def test_fused_bp_forces(benchmark, atoms):
    """B-P forces and virial for a given dE/dG, without materializing dG/dr
    (neighbor list and G pass included: what one B-P force call costs before the network)."""
    benchmark.group = f"B-P force kernel ({len(atoms)} atoms)"
    fz = Featurizer(S4_G_ONLY, num_threads=1)
    rng = np.random.default_rng(0)
    env = fz.environment(atoms)
    dEdG = {el: rng.normal(size=g.shape) for el, g in fz.features(env).G.items()}

    def step():
        env = fz.environment(atoms)
        fz.features(env)
        return fz.forces(env, dEdG)

    benchmark(step)
