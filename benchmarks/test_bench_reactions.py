"""Reaction extraction on a 20,000-frame, 250-atom trajectory (the issue's size)."""
import numpy as np
import pytest
from ase import Atoms

from dcf.analysis.reactions import find_reactions, molecule_presence, presence_changes


@pytest.fixture(scope="module")
def hf_gas():
    """125 HF molecules in a 25 A box, thermal noise; 20,000 frames."""
    rng = np.random.default_rng(0)
    n_mol, T, box = 125, 20_000, 25.0
    grid = np.stack(np.meshgrid(*[np.arange(5)] * 3, indexing="ij"), -1).reshape(-1, 3) * 5.0
    base = np.concatenate([grid, grid + [0.0, 0.0, 0.92]])      # H then F of each molecule
    symbols = ["H"] * n_mol + ["F"] * n_mol
    frames = []
    for _ in range(T):
        frames.append(Atoms(symbols, positions=base + rng.normal(scale=0.05, size=base.shape),
                            cell=[box] * 3, pbc=True))
    return frames


@pytest.mark.benchmark(group="reactions")
def test_bond_graph_20000_frames(benchmark, hf_gas):
    presence = benchmark.pedantic(molecule_presence, args=(hf_gas,), rounds=1, iterations=1)
    assert len(presence.molecules) == 125


@pytest.mark.benchmark(group="reactions")
def test_hmm_and_reactions_20000_frames(benchmark, hf_gas):
    presence = molecule_presence(hf_gas)

    def decode():
        return find_reactions(presence, presence_changes(presence))
    reactions, _ = benchmark.pedantic(decode, rounds=3, iterations=1)
    assert reactions == []
