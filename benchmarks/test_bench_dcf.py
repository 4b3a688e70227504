"""DCF inference cost on system B (Table S4 features and network sizes, one thread).

networks: the numpy networks alone, from precomputed G and A (all elements of one frame);
forces: a full force call (fingerprints without derivatives + networks + net-force removal).
Weights are random (dcf.bench.costs.table_s4_model): the cost does not depend on their values.
Run: .venv/bin/python -m pytest benchmarks/test_bench_dcf.py --benchmark-only
"""
import numpy as np
import pytest

from conftest import system, tag
from dcf.bench import report as q
from dcf import featurize
from dcf.bench.costs import S4, table_s4_model

HEADS = ["paper", "covariant"]


@pytest.mark.parametrize("head", HEADS)
def test_networks_208_atoms(benchmark, head):
    model = table_s4_model(head)
    f = featurize(system(1), S4, num_threads=1)
    tag(benchmark, q.DCF_NETWORKS.format(head=head), 208)

    def networks():
        return [model.predict(el, f.G[el], f.A[el]) for el in S4.elements]

    out = benchmark(networks)
    assert sum(len(F) for F in out) == 208


@pytest.mark.parametrize("head", HEADS)
def test_forces(benchmark, head, atoms):
    model = table_s4_model(head)
    tag(benchmark, q.DCF_FORCES.format(head=head), len(atoms))
    F = benchmark(model.forces, atoms)
    assert F.shape == (len(atoms), 3) and np.all(np.isfinite(F))
