"""Featurization into a store: 20 rattled frames of system B (208 atoms), Table S4, one rank.

Run: .venv/bin/python -m pytest benchmarks/test_bench_featurize.py --benchmark-only
Scaling over MPI ranks is measured with the command line (docs/data.md, "MPI").
"""
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import system
from dcf import FingerprintSpec
from dcf.data.frames import FrameData
from dcf.data.pipeline import featurize_to_store
from dcf.data.sampling import plan_snapshots

N_FRAMES = 20


@pytest.fixture(scope="module")
def frames():
    """System B rattled by 0.05 A, random forces (featurization does not look at them)."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(N_FRAMES):
        atoms = system(1).copy()
        atoms.rattle(0.05, seed=k)
        atoms.calc = SinglePointCalculator(atoms, forces=rng.normal(size=(len(atoms), 3)))
        out.append(atoms)
    return FrameData.from_atoms(out)


def test_featurize_to_store(benchmark, frames, tmp_path):
    spec = FingerprintSpec.preset("mailoa2019-S4")
    plan = plan_snapshots(frames.numbers, frames.first_atom, spec.elements, 0.2, 0)
    out = tmp_path / "bench.h5"
    benchmark.group = f"featurize to store ({N_FRAMES} x 208 atoms, S4, 1 rank)"
    summary = benchmark.pedantic(featurize_to_store, args=(out, spec, frames, plan, {}),
                                 kwargs={"num_threads": 1}, rounds=3, iterations=1)
    assert summary.frames_featurized == N_FRAMES
    benchmark.extra_info["featurize_frames_per_s"] = summary.frames_featurized / summary.seconds
    benchmark.extra_info["featurize_atoms_per_s"] = summary.atoms_featurized / summary.seconds
    benchmark.extra_info["store_seconds"] = summary.assemble_seconds
    benchmark.extra_info["bytes_per_snapshot"] = out.stat().st_size / frames.n_atoms
