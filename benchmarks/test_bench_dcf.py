"""DCF inference cost on the paper's system B (208 atoms, Table S4 features and network sizes).

network: the numpy networks alone, from precomputed G and A (all elements of one frame);
forces: a full force call (fingerprints without derivatives + networks + net-force removal).
Weights are random: the cost does not depend on their values.
Run: .venv/bin/python -m pytest benchmarks/test_bench_dcf.py --benchmark-only
"""
import numpy as np
import pytest

from dcf import FingerprintSpec, featurize
from dcf.dcf_model import DCFModel, ElementNetworks, NetworkStack, head_input_size
from dcf.mlp import MLP

from conftest import system

SPEC = FingerprintSpec.preset("mailoa2019-S4")
NN1_HIDDEN, HEAD_HIDDEN = [50, 50], [40, 40]     # Table S4: NN1 2 x 50, NN2 2 x 40


def _stack(rng, n_in, n_out, count, hidden):
    sizes = [n_in, *hidden, n_out]
    return NetworkStack([MLP([rng.normal(size=(a, b)) / np.sqrt(a) for a, b in
                              zip(sizes[:-1], sizes[1:])], [np.zeros(b) for b in sizes[1:]])
                         for _ in range(count)])


def table_s4_model(head: str, seed: int = 0) -> DCFModel:
    """Per element: 6 NN1 networks 36-50-50-1; paper head 3 networks 24-40-40-1, covariant head
    one network (G, F_int, Gram: 63 inputs)-40-40-6."""
    rng = np.random.default_rng(seed)
    nets = {}
    inputs = ("G", "F_int", "gram") if head == "covariant" else ()
    for el in SPEC.elements:
        nG, nA = SPEC.n_features(el)
        norm = {"G_mean": np.zeros(nG), "G_std": np.ones(nG), "fint_scale": np.ones(nA),
                "force_scale": 1.0}
        n_in = head_input_size(head, nG, nA, inputs)
        head_net = _stack(rng, n_in, 1, 3, HEAD_HIDDEN) if head == "paper" else \
            _stack(rng, n_in, nA, 1, HEAD_HIDDEN)
        nets[el] = ElementNetworks(el, head, nG, nA, norm, _stack(rng, nG, 1, nA, NN1_HIDDEN),
                                   head_net, inputs)
    return DCFModel(SPEC, nets, head, "tanh", {"nn1": "separate", "head": "separate"},
                    {"nn1": NN1_HIDDEN, "head": HEAD_HIDDEN}, ("nn1", "nn2", "nn3"), True,
                    num_threads=1)


@pytest.mark.parametrize("head", ["paper", "covariant"])
def test_network_208_atoms(benchmark, head):
    model = table_s4_model(head)
    f = featurize(system(1), SPEC, num_threads=1)

    def networks():
        return [model.predict(el, f.G[el], f.A[el]) for el in SPEC.elements]

    out = benchmark(networks)
    assert sum(len(F) for F in out) == 208


@pytest.mark.parametrize("replicate", [1, 2], ids=["208", "1664"])
@pytest.mark.parametrize("head", ["paper", "covariant"])
def test_forces(benchmark, head, replicate):
    model = table_s4_model(head)
    atoms = system(replicate)
    F = benchmark(model.forces, atoms)
    assert F.shape == (len(atoms), 3) and np.all(np.isfinite(F))
