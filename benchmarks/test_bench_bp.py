"""B–P energy + forces per frame on system B (Table S4 G features, 2x50 tanh networks, one
thread): neighbor list, G, numpy networks with dE/dG, fused Cython force kernel.
Reference (n2p2, same features and network, this machine): 92 ms per 208-atom frame.

Run: .venv/bin/python -m pytest benchmarks/test_bench_bp.py --benchmark-only \
         --benchmark-columns=median,iqr,min,rounds
"""
import numpy as np
import pytest

from dcf.bp import BPModel
from dcf.mlp import MLP
from dcf.spec import FingerprintSpec

S4 = FingerprintSpec.preset("mailoa2019-S4")


def bp_model(hidden=(50, 50), seed=0) -> BPModel:
    """Random 2x50 networks: the cost does not depend on the weights' values."""
    rng = np.random.default_rng(seed)
    nets, mean, std = {}, {}, {}
    for el in S4.elements:
        sizes = [S4.n_features(el)[0], *hidden, 1]
        nets[el] = MLP([rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])],
                       [np.zeros(b) for b in sizes[1:]], "tanh")
        mean[el], std[el] = np.zeros(sizes[0]), np.ones(sizes[0])
    return BPModel(S4, nets, mean, std, {el: 0.0 for el in S4.elements}, num_threads=1)


@pytest.fixture(scope="module")
def model():
    return bp_model()


def test_bp_energy_and_forces(benchmark, atoms, model):
    benchmark.group = f"B-P energy+forces ({len(atoms)} atoms)"
    res = benchmark(model.compute, atoms, ("energy", "forces"))
    assert res["forces"].shape == (len(atoms), 3)
    benchmark.extra_info["n2p2_ms_per_208_atoms"] = 92.0


def test_bp_energy_forces_stress(benchmark, atoms, model):
    benchmark.group = f"B-P energy+forces+stress ({len(atoms)} atoms)"
    benchmark(model.compute, atoms, ("energy", "forces", "stress"))


def test_bp_energy_only(benchmark, atoms, model):
    benchmark.group = f"B-P energy ({len(atoms)} atoms)"
    benchmark(model.compute, atoms, ("energy",))
