"""Built-in structures: random packings such as the paper's system B geometry."""
from __future__ import annotations

import numpy as np
from ase import Atoms

from dcf.descriptors.neighbors import build_neighbor_list

SYSTEM_B_CELL = (10.4, 14.0, 16.0)
SYSTEM_B_COUNTS = {"Li": 64, "O": 112, "P": 32}


def random_packing(counts: dict, cell, min_distance: float, seed: int = 0,
                   max_tries: int = 200_000) -> Atoms:
    """Atoms placed uniformly at random in a periodic `cell` with all pair distances
    (periodic images included) >= `min_distance` Angstrom, by sequential insertion.

    counts: element -> number of atoms. Raises RuntimeError if the packing is too dense.
    """
    rng = np.random.default_rng(seed)
    cell = np.asarray(cell, dtype=float)
    cell = np.diag(cell) if cell.ndim == 1 else cell
    symbols = [el for el, n in counts.items() for _ in range(n)]
    rng.shuffle(symbols)
    positions = np.zeros((0, 3))
    tries = 0
    for _ in symbols:
        while True:
            tries += 1
            if tries > max_tries:
                raise RuntimeError(f"could not place {len(symbols)} atoms with minimum distance "
                                   f"{min_distance} A in cell {cell.tolist()}")
            trial = np.vstack([positions, rng.uniform(size=3) @ cell])
            nl = build_neighbor_list(trial, cell, (True, True, True), min_distance)
            if len(nl) == 0:
                positions = trial
                break
    return Atoms(symbols, positions=positions, cell=cell, pbc=True)


def system_b(replicate: int = 1, seed: int = 0) -> Atoms:
    """The paper's system B geometry: 208 atoms (64 Li, 112 O, 32 P) in a periodic
    10.4 x 14.0 x 16.0 A cell, random positions with minimum distance 1.6 A;
    `replicate` > 1 gives the replicate^3 supercell (1664 atoms for 2)."""
    atoms = random_packing(SYSTEM_B_COUNTS, SYSTEM_B_CELL, 1.6, seed)
    return atoms.repeat(replicate) if replicate > 1 else atoms
