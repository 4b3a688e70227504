"""The 1 + 3m argument measured: system B (208 atoms) compressed or expanded so that the mean
neighbor count m within Rc = 6.5 A runs over --m-sweep (default 30 ... 160); at each m the
fingerprints (G, G+A, G+dG/dr) and the force calls (DCF, B-P energy+forces) of random
Table S4 models. The report divides them: (G+dG/dr)/(G+A) and B-P/DCF against 1 + 3m.

Run: .venv/bin/python -m pytest benchmarks/test_bench_scaling.py --benchmark-only \
         --benchmark-group-by=group
"""
import functools

import pytest

from conftest import tag
from dcf.bench import report as q
from dcf.models.bp import invariant_spec
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


@pytest.mark.parametrize("quantity", q.SWEEP_QUANTITIES)
def test_m_sweep(benchmark, quantity, m_target):
    atoms = compressed(m_target)
    m = atoms.info["mean_neighbors"]
    tag(benchmark, quantity, len(atoms), sweep="m", m_target=m_target, mean_neighbors=m,
        length_scale=atoms.info["scale"])
    benchmark.group = f"m sweep: m = {m:.1f}"
    benchmark(_call(quantity, atoms))
