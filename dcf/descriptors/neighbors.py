"""Neighbor lists: full lists over periodic images, in ASE's 'ijS' convention.

``D = positions[j] - positions[i] + S @ cell`` is the vector from atom i to neighbor j
(r_vec_ij = r_j - r_i), ``d = |D| < cutoff``. A small periodic cell gives several
images of one neighbor and images of the atom itself; each is its own entry.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from dcf._ext import neighbors as _kernel


def resolve_threads(num_threads: int | None) -> int:
    """`num_threads` if given (must be >= 1), else `default_threads()`."""
    if num_threads is None:
        return default_threads()
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
    return num_threads


def default_threads() -> int:
    """Threads for the kernels: ``DCF_NUM_THREADS`` or ``OMP_NUM_THREADS``, else 1."""
    for name in ("DCF_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


@dataclass(frozen=True)
class NeighborList:
    """A full neighbor list in compressed (CSR) form.

    Attributes
    ----------
    first : (n_atoms + 1,) intp. Entries of atom i are ``first[i]:first[i+1]``.
    j : (m,) intp. Neighbor atom of each entry.
    S : (m, 3) int64. Integer cell shift of each entry (0 on open axes).
    D : (m, 3) float64, Angstrom. ``r_j - r_i + S @ cell``.
    d : (m,) float64, Angstrom. ``|D|``.
    cutoff : float, Angstrom.
    """

    first: np.ndarray
    j: np.ndarray
    S: np.ndarray
    D: np.ndarray
    d: np.ndarray
    cutoff: float

    @property
    def i(self) -> np.ndarray:
        """(m,) intp: the central atom of each entry."""
        return np.repeat(np.arange(len(self.first) - 1), np.diff(self.first))

    def __len__(self) -> int:
        return len(self.j)


def complete_cell(cell, pbc) -> np.ndarray:
    """A (3, 3) invertible cell equal to `cell` on periodic axes.

    Open axes get unit vectors orthogonal to the periodic ones, so a zero or
    degenerate vector on an open axis (an isolated molecule, a slab) is fine.
    Raises ValueError if the periodic vectors are zero or linearly dependent.
    """
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    periodic = [k for k in range(3) if pbc[k]]
    vectors = cell[periodic]
    if len(periodic):
        sv = np.linalg.svd(vectors, compute_uv=False)
        if sv[-1] <= 1e-8 * max(sv[0], 1e-300) or sv[0] == 0.0:
            raise ValueError(
                f"cell vectors on the periodic axes {periodic} are zero or linearly dependent: "
                f"cell = {cell.tolist()}")
    out = cell.copy()
    open_axes = [k for k in range(3) if not pbc[k]]
    if open_axes:
        # orthonormal complement of the periodic span, via SVD of the periodic vectors
        if len(periodic):
            _, _, vt = np.linalg.svd(vectors)
            complement = vt[len(periodic):]
        else:
            complement = np.eye(3)
        for k, v in zip(open_axes, complement):
            out[k] = v
        if np.linalg.det(out) < 0:
            out[open_axes[0]] *= -1.0
    return out


def build_neighbor_list(positions, cell, pbc, cutoff: float,
                        num_threads: int | None = None, centers=None) -> NeighborList:
    """Full neighbor list of `positions` (n, 3) A within `cutoff` A.

    `cell` (3, 3) rows are lattice vectors; `pbc` three bools. Positions need not be
    inside the cell. O(n) cell list over periodic images; cells thinner than the
    cutoff, skewed triclinic cells and any mix of periodic and open axes work.
    centers: atom indices (k,) that get entries (default all); the other atoms are
    neighbors only, with no entries of their own.
    """
    positions = np.ascontiguousarray(positions, dtype=float)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (n, 3), got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain NaN or infinite values")
    cutoff = float(cutoff)
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a positive finite number of Angstrom, got {cutoff}")
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    full = complete_cell(cell, pbc)
    inverse = np.ascontiguousarray(np.linalg.inv(full))
    is_center = None
    if centers is not None:
        is_center = np.zeros(len(positions), dtype=np.uint8)
        is_center[np.asarray(centers, dtype=np.intp)] = 1
    first, j, S, D, d = _kernel.build(
        positions, np.ascontiguousarray(full), inverse, tuple(bool(p) for p in pbc), cutoff,
        resolve_threads(num_threads), is_center)
    return NeighborList(first, j, S, D, d, cutoff)


MD_SKIN = 1.0   # Angstrom: the Verlet skin of the models' featurizers (ASE, dcf md, i-PI)


class VerletList:
    """A neighbor list for MD: built within cutoff + skin and reused while no atom has moved
    more than skin / 2 since the build, so that it still holds every pair within `cutoff`
    (Angstrom); in between, D and d of its pairs are recomputed from the new positions.

    `update` returns a NeighborList whose entries reach out to cutoff + skin (its `cutoff`):
    callers keep the pairs they need by distance. A change of the number of atoms, their
    species, the cell or the periodicity rebuilds it. `builds` counts the builds.
    """

    def __init__(self, cutoff: float, skin: float, num_threads: int | None = None):
        if not (np.isfinite(skin) and skin >= 0):
            raise ValueError(f"skin must be a finite number of Angstrom >= 0, got {skin}")
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.num_threads = num_threads
        self.builds = 0
        self._key = None
        self._nl = None

    def update(self, positions, cell, pbc, numbers=None) -> NeighborList:
        positions = np.ascontiguousarray(positions, dtype=float)
        cell = np.asarray(cell, dtype=float).reshape(3, 3)
        pbc = tuple(bool(p) for p in np.asarray(pbc, dtype=bool).reshape(3))
        numbers = None if numbers is None else np.asarray(numbers)
        key = (positions.shape, cell.tobytes(), pbc,
               None if numbers is None else numbers.tobytes())
        if (self._nl is None or key != self._key or not np.all(np.isfinite(positions))
                or np.max(np.sum((positions - self._origin) ** 2, axis=1), initial=0.0)
                > (0.5 * self.skin) ** 2):
            self._nl = build_neighbor_list(positions, cell, pbc, self.cutoff + self.skin,
                                           self.num_threads)
            self._key, self._origin = key, positions.copy()
            self._shift = np.ascontiguousarray(self._nl.S @ complete_cell(cell, pbc))
            self.builds += 1
            return self._nl
        nl = self._nl
        D, d = np.empty_like(nl.D), np.empty_like(nl.d)
        _kernel.refresh(nl.first, nl.j, self._shift, positions, D, d)
        return NeighborList(nl.first, nl.j, nl.S, D, d, nl.cutoff)


def neighbor_list(quantities: str, a, cutoff, self_interaction: bool = False,
                  max_nbins: float = 1e6, *, num_threads: int | None = None):
    """Full neighbor list of an ``ase.Atoms``: a drop-in for ``ase.neighborlist.neighbor_list``.

    quantities: a string of letters, one array returned for each, in order: i (central
    atom, (m,)), j (neighbor, (m,)), S (integer cell shift, (m, 3)), D (vector
    r_j - r_i + S @ cell, (m, 3) A), d (distance |D|, (m,) A).
    cutoff: a distance in A (pairs with d < cutoff); a dict {(el1, el2): A} with element
    symbols or atomic numbers (symmetric; pairs not named are excluded); or a sequence of
    one radius per atom (pairs with d < r_i + r_j), as ASE's `natural_cutoffs` gives.
    self_interaction: also return each atom with itself (S = 0, d = 0), as ASE does.
    max_nbins: accepted for ASE compatibility; the cell list sizes its bins itself.
    Entries are ordered by i. Returns a tuple, or the array alone for one letter.
    """
    table = {"i", "j", "S", "D", "d"}
    unknown = set(quantities) - table
    if unknown:
        raise ValueError(f"unknown quantities {sorted(unknown)} in {quantities!r}; "
                         f"use i, j, S, D, d")
    numbers = a.numbers
    pair_cut = None
    if isinstance(cutoff, dict):
        from ase.data import atomic_numbers

        def z(el):
            return atomic_numbers[el] if isinstance(el, str) else int(el)
        pair_cut = {}
        for (e1, e2), c in cutoff.items():
            pair_cut[(z(e1), z(e2))] = pair_cut[(z(e2), z(e1))] = float(c)
        reach = max(pair_cut.values(), default=0.0)
    elif np.ndim(cutoff) == 1:
        radii = np.asarray(cutoff, dtype=float)
        if radii.shape != (len(a),):
            raise ValueError(f"{len(radii)} cutoff radii for {len(a)} atoms")
        reach = 2 * float(radii.max()) if len(radii) else 0.0
    else:
        reach = float(cutoff)
    nl = build_neighbor_list(a.positions, a.cell.array, a.pbc, reach, num_threads)
    i, j, S, D, d = nl.i, nl.j, nl.S, nl.D, nl.d
    keep = None
    if pair_cut is not None:
        table = np.full((119, 119), -1.0)
        for (z1, z2), c in pair_cut.items():
            table[z1, z2] = c
        keep = d < table[numbers[i], numbers[j]]
    elif np.ndim(cutoff) == 1:
        keep = d < radii[i] + radii[j]
    if keep is not None:
        i, j, S, D, d = i[keep], j[keep], S[keep], D[keep], d[keep]
    if self_interaction:
        own = np.arange(len(a))
        if pair_cut is not None:        # as ASE: an atom is its own neighbor if its pair is named
            own = own[table[numbers, numbers] > 0]
        n = len(own)
        i = np.concatenate([i, own.astype(i.dtype)])
        j = np.concatenate([j, own.astype(j.dtype)])
        S = np.concatenate([S, np.zeros((n, 3), dtype=S.dtype)])
        D = np.concatenate([D, np.zeros((n, 3))])
        d = np.concatenate([d, np.zeros(n)])
    order = np.argsort(i, kind="stable")
    values = {"i": i, "j": j, "S": S, "D": D, "d": d}
    out = tuple(values[q][order] for q in quantities)
    return out[0] if len(out) == 1 else out


def shortest_pair_distances(frames, r_max: float = 4.0) -> dict[tuple[str, str], float]:
    """The shortest distance (A) of each element pair over `frames` (ase.Atoms, periodic
    images included), for the pairs closer than `r_max` A in some frame; both orders
    (a, b) and (b, a) are keys."""
    from ase.data import chemical_symbols

    best = np.full((119, 119), np.inf)
    for atoms in frames:
        nl = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, r_max, 1)
        if len(nl):
            z = atoms.numbers
            np.minimum.at(best, (z[nl.i], z[nl.j]), nl.d)
    best = np.minimum(best, best.T)        # the two orders of a pair can differ in the last bit
    za, zb = np.nonzero(np.isfinite(best))
    return {(chemical_symbols[a], chemical_symbols[b]): float(best[a, b]) for a, b in zip(za, zb)}
