"""B–P energy + forces per frame on system B (Table S4 G features, 2x50 tanh networks, one
thread): neighbor list, G, numpy networks with dE/dG, fused Cython force kernel.
Reference (n2p2, same features and network, this machine): 92 ms per 208-atom frame.

Run: .venv/bin/python -m pytest benchmarks/test_bench_bp.py --benchmark-only \
         --benchmark-columns=median,iqr,min,rounds
"""
import pytest

from conftest import tag
from dcf.bench import report as q
from dcf.bench.costs import N2P2_SECONDS_PER_208_ATOM_FRAME, bp_model

LARGEST_OPTIONAL = 2000     # energy-only and stress variants stop here, to keep `dcf bench` short


@pytest.fixture(scope="module")
def model():
    return bp_model()


def test_bp_energy_and_forces(benchmark, atoms, model):
    tag(benchmark, q.BP_EF, len(atoms),
        n2p2_ms_per_208_atoms=1000 * N2P2_SECONDS_PER_208_ATOM_FRAME)
    res = benchmark(model.compute, atoms, ("energy", "forces"))
    assert res["forces"].shape == (len(atoms), 3)


def test_bp_energy_forces_stress(benchmark, atoms, model):
    if len(atoms) > LARGEST_OPTIONAL:
        pytest.skip(f"stress variant measured up to {LARGEST_OPTIONAL} atoms only")
    tag(benchmark, q.BP_EFS, len(atoms))
    benchmark(model.compute, atoms, ("energy", "forces", "stress"))


def test_bp_energy_only(benchmark, atoms, model):
    if len(atoms) > LARGEST_OPTIONAL:
        pytest.skip(f"energy-only variant measured up to {LARGEST_OPTIONAL} atoms only")
    tag(benchmark, q.BP_E, len(atoms))
    benchmark(model.compute, atoms, ("energy",))
