"""The 1 + 3m argument measured: system B (208 atoms) compressed or expanded so that the mean
neighbor count m within Rc = 6.5 A runs over --m-sweep (default 30 ... 160); at each m the
fingerprints (G, G+A, G+dG/dr) and the force calls (DCF, B-P energy+forces) of random
Table S4 models. The report divides them: (G+dG/dr)/(G+A) and B-P/DCF against 1 + 3m.

Each result is checked (`check`): fingerprints against the portable kernel build, finite forces
summing to zero.

Run: .venv/bin/python -m pytest benchmarks/test_bench_scaling.py --benchmark-only \
         --benchmark-group-by=group
"""
import functools

import numpy as np
import pytest

from conftest import tag
from dcf.bench import report as q
from dcf.descriptors.spec import invariant_spec
from dcf.bench.costs import S4, bp_model, system_b_with_neighbors, table_s4_model
from dcf.descriptors.fingerprints import Featurizer


@functools.lru_cache(maxsize=None)
def compressed(m: float):
    return system_b_with_neighbors(m, S4.cutoff)


@functools.lru_cache(maxsize=None)
def models():
    return (Featurizer(invariant_spec(S4), num_threads=1), Featurizer(S4, num_threads=1),
            table_s4_model("paper"), bp_model())


def _call(quantity, atoms):
    fz_g, fz, dcf_model, bp = models()
    return {
        q.G: lambda: fz_g.features(fz_g.environment(atoms)),
        q.G_A: lambda: fz.features(fz.environment(atoms)),
        q.G_DG: lambda: fz_g.features(fz_g.environment(atoms), derivatives=True),
        q.DCF_FORCES.format(head="paper"): lambda: dcf_model.forces(atoms),
        q.BP_EF: lambda: bp.compute(atoms, ("energy", "forces")),
    }[quantity]


@functools.lru_cache(maxsize=None)
def reference_features(m: float):
    """G and A of the compressed system from the portable kernel build, once per m."""
    return Featurizer(S4, num_threads=1, kernel="portable")(compressed(m))


def check(quantity, result, m_target):
    """The timed call's result: fingerprints equal to the portable build's to round-off;
    forces finite and summing to zero (net force removed / -dE/dr); a finite energy."""
    if quantity in (q.G, q.G_A, q.G_DG):
        ref = reference_features(m_target)
        for el in S4.elements:
            np.testing.assert_allclose(result.G[el], ref.G[el], rtol=1e-9, atol=1e-10)
            if quantity == q.G_A:
                np.testing.assert_allclose(result.A[el], ref.A[el], rtol=1e-9, atol=1e-10)
        return
    F = result["forces"] if isinstance(result, dict) else result
    assert F.shape == (208, 3) and np.all(np.isfinite(F))
    np.testing.assert_allclose(F.sum(axis=0), 0.0, atol=1e-8)
    if isinstance(result, dict):
        assert np.isfinite(result["energy"])


@pytest.mark.parametrize("quantity", q.SWEEP_QUANTITIES)
def test_m_sweep(benchmark, quantity, m_target):
    atoms = compressed(m_target)
    m = atoms.info["mean_neighbors"]
    tag(benchmark, quantity, len(atoms), sweep="m", m_target=m_target, mean_neighbors=m,
        length_scale=atoms.info["scale"])
    benchmark.group = f"m sweep: m = {m:.1f}"
    check(quantity, benchmark(_call(quantity, atoms)), m_target)
