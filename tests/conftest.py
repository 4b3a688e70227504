"""Shared fixtures: a spec using every fingerprint kind, random structures, real data."""
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from hypothesis import HealthCheck, settings

from dcf import FingerprintSpec

DATA = Path(__file__).parent / "data"

settings.register_profile("default", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

ALL_KINDS_RULES = [
    {"kind": "G1", "neighbors": "*"},
    {"kind": "G2", "neighbors": "*", "eta": [0.5, 4.0], "Rs": [0.0, 1.5]},
    {"kind": "G3", "neighbors": "*", "kappa": 1.3, "Rc": 3.5},
    {"kind": "G4", "neighbors": "*", "zeta": [1, 2.5, 4], "lambda": [1, -1], "eta": [0.01, 0.1]},
    {"kind": "G4", "neighbors": ["Li-O"], "zeta": 2, "lambda": 1, "eta": 0.05, "Rc": 3.2},
    {"kind": "G5", "neighbors": "*", "zeta": [1, 4], "lambda": [1, -1], "eta": 0.05, "Rc": 3.5},
    {"kind": "V1", "neighbors": "*", "eta": 1.0, "Rs": 1.0},
    {"kind": "A1", "neighbors": "*", "eta": 1.0, "Rs": [0.0, 2.0]},
    {"kind": "A1", "neighbors": ["P"], "eta": 1.0, "Rs": 0.5, "delta": 0.3},
]


def all_kinds_spec(cutoff: float = 4.0) -> FingerprintSpec:
    """Every kind, several cutoffs, a non-integer zeta and the smooth A1 variant."""
    return FingerprintSpec(["Li", "O", "P"], ALL_KINDS_RULES, cutoff=cutoff, name="all-kinds")


@pytest.fixture
def spec():
    return all_kinds_spec()


def random_cell(rng, thin: bool = False) -> np.ndarray:
    """A random, possibly very skewed, right-handed triclinic cell (rows)."""
    diag = rng.uniform(1.2, 2.5, 3) if thin else rng.uniform(3.5, 6.0, 3)
    cell = np.diag(diag)
    cell[1, 0], cell[2, 0], cell[2, 1] = rng.uniform(-1.5, 1.5, 3) * diag[[0, 0, 1]]
    return cell


def random_atoms(rng, symbols="Li4O6P2", cell=None, pbc=True, min_distance=0.9) -> Atoms:
    """Random positions with a minimum distance (periodic images included)."""
    from dcf.descriptors.neighbors import build_neighbor_list
    atoms = Atoms(symbols, cell=random_cell(rng) if cell is None else cell, pbc=pbc)
    for _ in range(1000):
        atoms.set_scaled_positions(rng.uniform(size=(len(atoms), 3)))
        nl = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, min_distance)
        if len(nl) == 0:
            return atoms
    raise RuntimeError("could not place atoms")


@pytest.fixture
def rng():
    return np.random.default_rng(20190605)
