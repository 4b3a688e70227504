"""Featurization into a store: 20 rattled frames of system B (208 atoms), Table S4, one rank.

Times `featurize_to_store` (fingerprints, checkpoint blocks, the HDF5 store); extra_info
"steps" is the frame count, so the report reads seconds per frame. The store is checked
against `featurize` frame by frame.

Run: .venv/bin/python -m pytest benchmarks/test_bench_featurize.py --benchmark-only
Scaling over MPI ranks is measured with the command line (docs/data.md, "MPI").
"""
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import system, tag
from dcf import FingerprintSpec, featurize
from dcf.bench import report as q
from dcf.data.frames import FrameData
from dcf.data.pipeline import featurize_to_store
from dcf.data.sampling import plan_snapshots
from dcf.data.store import FeatureStore

N_FRAMES = 20
SPEC = FingerprintSpec.preset("mailoa2019-S4")


@pytest.fixture(scope="module")
def rattled():
    """System B rattled by 0.05 A, random forces (featurization does not look at them)."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(N_FRAMES):
        atoms = system(1).copy()
        atoms.rattle(0.05, seed=k)
        atoms.calc = SinglePointCalculator(atoms, forces=rng.normal(size=(len(atoms), 3)))
        out.append(atoms)
    return out


def check_store(path, frames):
    """Every snapshot's G, A and F equal those of its frame from `featurize`."""
    reference = [featurize(atoms, SPEC, num_threads=1) for atoms in frames]
    with FeatureStore(path) as store:
        for el in SPEC.elements:
            snaps = store.snapshots(el)
            assert len(snaps["G"]) == sum(len(f.index[el]) for f in reference)
            for k, f in enumerate(reference):
                mine = snaps["frame"] == k
                row = np.searchsorted(f.index[el], snaps["atom"][mine])
                np.testing.assert_allclose(snaps["G"][mine], f.G[el][row], rtol=1e-6)
                np.testing.assert_allclose(snaps["A"][mine], f.A[el][row], rtol=1e-6,
                                           atol=1e-7)
                np.testing.assert_allclose(snaps["F"][mine],
                                           frames[k].get_forces()[snaps["atom"][mine]],
                                           rtol=1e-6)


def test_featurize_to_store(benchmark, rattled, tmp_path):
    frames = FrameData.from_atoms(rattled)
    plan = plan_snapshots(frames.numbers, frames.first_atom, SPEC.elements, 0.2, 0)
    out = tmp_path / "bench.h5"
    tag(benchmark, q.FEATURIZE_STORE, 208, steps=N_FRAMES, ranks=1)
    summary = benchmark.pedantic(featurize_to_store, args=(out, SPEC, frames, plan, {}),
                                 kwargs={"num_threads": 1}, rounds=3, iterations=1)
    assert summary.frames_featurized == N_FRAMES
    check_store(out, rattled)
    benchmark.extra_info["featurize_frames_per_s"] = summary.frames_featurized / summary.seconds
    benchmark.extra_info["featurize_atoms_per_s"] = summary.atoms_featurized / summary.seconds
    benchmark.extra_info["store_seconds"] = summary.assemble_seconds
    benchmark.extra_info["bytes_per_snapshot"] = out.stat().st_size / frames.n_atoms
