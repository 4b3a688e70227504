"""B–P energy + forces per frame on system B (Table S4 G features, 2x50 tanh networks, one
thread): neighbor list, G, numpy networks with dE/dG, fused Cython force kernel.
Reference (n2p2, same features and network, this machine): 92 ms per 208-atom frame.

Run: .venv/bin/python -m pytest benchmarks/test_bench_bp.py --benchmark-only \
         --benchmark-columns=median,iqr,min,rounds
Each benchmark checks its result against system B's, computed once (replicas: the energy times
the number of cells, the forces atom by atom, the same stress).
"""
import functools

import numpy as np
import pytest

from conftest import system, tag, tiled
from dcf.bench import report as q
from dcf.bench.costs import N2P2_SECONDS_PER_208_ATOM_FRAME, bp_model

LARGEST_OPTIONAL = 2000     # energy-only and stress variants stop here, to keep `dcf bench` short


@pytest.fixture(scope="module")
def model():
    return bp_model()


@functools.lru_cache(maxsize=None)
def reference():
    """Energy (eV), forces and stress of system B, once: a replica of r^3 cells has r^3 times
    the energy, the same forces atom by atom and the same stress."""
    return bp_model().compute(system(1), ("energy", "forces", "stress"))


def check(res, n_atoms):
    ref = reference()
    assert res["energy"] == pytest.approx(ref["energy"] * (n_atoms // 208), rel=1e-9)
    if "forces" in res:
        np.testing.assert_allclose(res["forces"], tiled(ref["forces"], n_atoms), atol=1e-9)
    if "stress" in res:
        np.testing.assert_allclose(res["stress"], ref["stress"], atol=1e-9)


def test_bp_energy_and_forces(benchmark, atoms, model):
    tag(benchmark, q.BP_EF, len(atoms),
        n2p2_ms_per_208_atoms=1000 * N2P2_SECONDS_PER_208_ATOM_FRAME)
    res = benchmark(model.compute, atoms, ("energy", "forces"))
    assert res["forces"].shape == (len(atoms), 3)
    np.testing.assert_allclose(res["forces"].sum(axis=0), 0.0, atol=1e-8)     # -dE/dr
    check(res, len(atoms))


def test_bp_energy_forces_stress(benchmark, atoms, model):
    if len(atoms) > LARGEST_OPTIONAL:
        pytest.skip(f"stress variant measured up to {LARGEST_OPTIONAL} atoms only")
    tag(benchmark, q.BP_EFS, len(atoms))
    res = benchmark(model.compute, atoms, ("energy", "forces", "stress"))
    assert res["stress"].shape == (6,)
    check(res, len(atoms))


def test_bp_energy_only(benchmark, atoms, model):
    if len(atoms) > LARGEST_OPTIONAL:
        pytest.skip(f"energy-only variant measured up to {LARGEST_OPTIONAL} atoms only")
    tag(benchmark, q.BP_E, len(atoms))
    res = benchmark(model.compute, atoms, ("energy",))
    assert "forces" not in res and "stress" not in res
    check(res, len(atoms))
