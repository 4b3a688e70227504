"""DCF inference cost on system B (Table S4 features and network sizes, one thread).

networks: the numpy networks alone, from precomputed G and A (all elements of one frame);
forces: a full force call (fingerprints without derivatives + networks + net-force removal).
Weights are random (dcf.bench.costs.table_s4_model): the cost does not depend on their values.
Each benchmark checks its forces against every network evaluated on its own, layer by layer
(`reference_forces`), on system B's fingerprints (tiled over the replicas). The float32
variants (`DCFModel.set_precision`, system B only) are held to 1e-5 of the mean force.
Run: .venv/bin/python -m pytest benchmarks/test_bench_dcf.py --benchmark-only
"""
import functools

import numpy as np
import pytest

from conftest import system, tag, tiled
from dcf.bench import report as q
from dcf import featurize
from dcf.bench.costs import S4, table_s4_model
from dcf.models.dcf import coefficient_features

HEADS = ["paper", "covariant"]
PRECISIONS = ["float64", "float32"]


def dense(x, mlp):
    """One network, layer by layer, in float64 (tanh hidden layers, linear output)."""
    for W, b in zip(mlp.weights[:-1], mlp.biases[:-1]):
        x = np.tanh(x @ W + b)
    return x @ mlp.weights[-1] + mlp.biases[-1]


def reference_forces(net, G, A):
    """F (n, 3) eV/A of one element's networks from G (n, nG) and A (n, nA, 3)."""
    Gn = (G - net.G_mean) * net.G_inv_std
    fint = np.hstack([dense(Gn, m) for m in net.nn1.nets])
    if net.head == "paper":
        x = np.hstack([fint, A.reshape(len(A), -1)])
        return np.hstack([dense(x, m) for m in net.head_net.nets]) * net.force_scale
    c = dense(coefficient_features(Gn, fint, A, net.coefficient_inputs), net.head_net.nets[0])
    return np.einsum("nk,nkc->nc", c, A) * net.force_scale


@functools.lru_cache(maxsize=None)
def reference(head):
    """System B: its fingerprints, and per element and in all the reference forces with the
    net force removed."""
    model = table_s4_model(head)
    f = featurize(system(1), S4, num_threads=1)
    per_element = {el: reference_forces(model.networks[el], f.G[el], f.A[el])
                   for el in S4.elements}
    F = np.zeros((208, 3))
    for el in S4.elements:
        F[f.index[el]] = per_element[el]
    return f, per_element, F - F.mean(axis=0)


def model_and_tolerance(head, precision):
    """The random Table S4 model in `precision` and the force deviation allowed (eV/A)."""
    model = table_s4_model(head)
    model.set_precision(precision)
    F = reference(head)[2]
    return model, 1e-9 if precision == "float64" else 1e-5 * np.linalg.norm(F, axis=1).mean()


def quantity(name, head, precision):
    name = name.format(head=head)
    return name if precision == "float64" else q.FLOAT32.format(quantity=name)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("head", HEADS)
def test_networks_208_atoms(benchmark, head, precision):
    model, tolerance = model_and_tolerance(head, precision)
    f, per_element, _ = reference(head)
    tag(benchmark, quantity(q.DCF_NETWORKS, head, precision), 208)

    def networks():
        return [model.predict(el, f.G[el], f.A[el]) for el in S4.elements]

    out = benchmark(networks)
    for el, F in zip(S4.elements, out):
        np.testing.assert_allclose(F, per_element[el], rtol=0, atol=tolerance)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("head", HEADS)
def test_forces(benchmark, head, precision, atoms):
    if precision != "float64" and len(atoms) != 208:
        pytest.skip("float32 networks: system B only")
    model, tolerance = model_and_tolerance(head, precision)
    tag(benchmark, quantity(q.DCF_FORCES, head, precision), len(atoms))
    F = benchmark(model.forces, atoms)
    np.testing.assert_allclose(F, tiled(reference(head)[2], len(atoms)), rtol=0, atol=tolerance)
