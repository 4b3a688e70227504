"""A short-range repulsive baseline under a model: ZBL screened nuclear repulsion.

The networks learn the reference minus the baseline, and the model returns networks plus
baseline, so at distances the training data never reached (where a network's output is
anything) the nuclei still repel. This is the role of DeePMD-kit's short-range pair table and
of NEP-ZBL.

For a pair of elements a, b at distance r < outer_ab (Ziegler, Biersack, Littmark 1985)::

    phi_ab(r) = k_e Z_a Z_b / r * sum_k c_k exp(-d_k r / s_ab) + S_ab(r)
    s_ab      = 0.46850 A / (Z_a^0.23 + Z_b^0.23)
    (c_k) = (0.02817, 0.28022, 0.50986, 0.18175), (d_k) = (0.20162, 0.40290, 0.94229, 3.19980)

k_e = e^2 / (4 pi eps0) = 14.399645 eV A. S_ab is LAMMPS ``pair_style zbl``'s switching
function: for r > inner_ab, S = A/3 t^3 + B/4 t^4 + C with t = r - inner_ab, below it S = C;
A, B, C make phi, phi' and phi'' vanish at outer_ab. With one (inner, outer) for every pair
this is ``pair_style zbl inner outer`` exactly; here each element pair has its own.
The total energy is E = sum over pairs i < j (periodic images included) of phi(r_ij).

Default cutoffs (`ZBL.from_min_distances`): outer_ab = the shortest a-b distance in the
training data, inner_ab = outer_ab / 2, so the baseline is zero wherever the data lie and only
repels closer than the data ever came.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import atomic_numbers, covalent_radii

from dcf.descriptors.neighbors import build_neighbor_list

KIND = "zbl"
COULOMB = 14.399645           # e^2 / (4 pi eps0), eV A (LAMMPS metal units' qqr2e)
SCREENING_LENGTH = 0.46850    # A
SCREENING_POWER = 0.23
C = np.array([0.02817, 0.28022, 0.50986, 0.18175])
D = np.array([0.20162, 0.40290, 0.94229, 3.19980])


def virial_stress(virial: np.ndarray, volume: float) -> np.ndarray:
    """ASE's stress (6,) eV/A^3, Voigt order xx, yy, zz, yz, xz, xy, of a virial W (3, 3) eV
    (W = -sum D (x) dE/dD): sigma = -W / V."""
    sigma = -np.asarray(virial) / volume
    return sigma[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


@dataclass
class BaselineTerms:
    """What a baseline adds to a model's output on n atoms: energies (n,) eV per atom (half of
    each pair's energy on each end), forces (n, 3) eV/A, virial (3, 3) eV
    (W = -sum_pairs D (x) dphi/dD, the convention of `Featurizer.forces`)."""
    energies: np.ndarray
    forces: np.ndarray
    virial: np.ndarray

    @property
    def energy(self) -> float:
        return float(self.energies.sum())


def _screened(r, zz, inv_s):
    """The unswitched ZBL energy (eV) and its first two r-derivatives at r (A)."""
    e = np.exp(-np.multiply.outer(r * inv_s, D)) * C           # (..., 4)
    k = np.multiply.outer(inv_s, D) if np.ndim(inv_s) else inv_s * D
    s0, s1, s2 = e.sum(-1), -(e * k).sum(-1), (e * k * k).sum(-1)
    rinv = 1.0 / r
    phi = zz * s0 * rinv
    dphi = zz * (s1 - s0 * rinv) * rinv
    d2phi = zz * (s2 - 2.0 * s1 * rinv + 2.0 * s0 * rinv * rinv) * rinv
    return phi, dphi, d2phi


class ZBL:
    """ZBL repulsion with per-element-pair switching radii.

    elements: the model's elements, in its order; inner, outer (n_el, n_el) symmetric, A, with
    0 < inner <= outer (an outer of 0 switches the pair off).
    """

    kind = KIND

    def __init__(self, elements, inner, outer):
        self.elements = tuple(elements)
        n = len(self.elements)
        self.inner = np.array(inner, dtype=float).reshape(n, n)
        self.outer = np.array(outer, dtype=float).reshape(n, n)
        for name, m in (("inner", self.inner), ("outer", self.outer)):
            if not np.array_equal(m, m.T) or not np.all(np.isfinite(m)):
                raise ValueError(f"ZBL {name} radii must be a finite symmetric table, got "
                                 f"{m.tolist()}")
        on = self.outer > 0
        if np.any(self.inner[on] <= 0) or np.any(self.inner[on] > self.outer[on]):
            raise ValueError(f"ZBL radii need 0 < inner <= outer for every pair, got inner "
                             f"{self.inner.tolist()}, outer {self.outer.tolist()}")
        z = np.array([atomic_numbers[e] for e in self.elements], dtype=float)
        self._zz = COULOMB * np.outer(z, z)
        self._inv_s = np.add.outer(z ** SCREENING_POWER, z ** SCREENING_POWER) / SCREENING_LENGTH
        self._switch = self._switch_coefficients()
        table = np.full(119, -1, dtype=np.intp)
        table[[atomic_numbers[e] for e in self.elements]] = np.arange(n)
        self._species_of = table

    @classmethod
    def from_min_distances(cls, elements, min_distances: dict, inner_fraction: float = 0.5,
                           outer: float | None = None):
        """Radii from the shortest distance of each pair in the training data,
        {(a, b): A} (either order; a pair absent or inf gets the sum of the two covalent
        radii): outer_ab = that distance (or `outer` A for every pair), inner_ab =
        inner_fraction * outer_ab."""
        if not 0 < inner_fraction <= 1:
            raise ValueError(f"the ZBL inner fraction must be in (0, 1], got {inner_fraction}")
        n = len(elements)
        out = np.zeros((n, n))
        for a, ea in enumerate(elements):
            for b, eb in enumerate(elements):
                r = min_distances.get((ea, eb), min_distances.get((eb, ea), np.inf))
                if not np.isfinite(r):
                    r = covalent_radii[atomic_numbers[ea]] + covalent_radii[atomic_numbers[eb]]
                out[a, b] = r if outer is None else outer
        return cls(elements, inner_fraction * out, out)

    def _switch_coefficients(self) -> np.ndarray:
        """(n_el, n_el, 3): LAMMPS's A, B, C of each pair (zero for a switched-off pair)."""
        coef = np.zeros(self.outer.shape + (3,))
        on = self.outer > 0
        rc, tc = self.outer[on], (self.outer - self.inner)[on]
        fc, fcp, fcpp = _screened(rc, self._zz[on], self._inv_s[on])
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(tc > 0, (-3.0 * fcp + tc * fcpp) / tc ** 2, 0.0)
            b = np.where(tc > 0, (2.0 * fcp - tc * fcpp) / tc ** 3, 0.0)
        coef[on] = np.stack([a, b, -fc + tc / 2 * fcp - tc ** 2 / 12 * fcpp], axis=1)
        return coef

    @property
    def cutoff(self) -> float:
        """The longest outer radius (A): the neighbor-list cutoff the baseline needs."""
        return float(self.outer.max())

    def pair_energy(self, r, a, b) -> tuple[np.ndarray, np.ndarray]:
        """phi_ab(r) (eV) and dphi/dr (eV/A) for distances r (m,) A and element indices
        a, b (m,) into `elements`; zero at r >= outer_ab."""
        r = np.asarray(r, dtype=float)
        a, b = np.asarray(a, dtype=np.intp), np.asarray(b, dtype=np.intp)
        phi, dphi = np.zeros_like(r), np.zeros_like(r)
        near = r < self.outer[a, b]
        if not near.any():
            return phi, dphi
        r, a, b = r[near], a[near], b[near]
        e, de, _ = _screened(r, self._zz[a, b], self._inv_s[a, b])
        A, B, Cc = np.moveaxis(self._switch[a, b], -1, 0)
        t = np.maximum(r - self.inner[a, b], 0.0)
        phi[near] = e + t ** 3 * (A / 3 + B / 4 * t) + Cc
        dphi[near] = de + t ** 2 * (A + B * t)
        return phi, dphi

    def species(self, numbers) -> np.ndarray:
        """Element index (n,) of each atomic number; ValueError for one the baseline lacks."""
        numbers = np.asarray(numbers, dtype=np.intp)
        sp = self._species_of[np.clip(numbers, 0, 118)]
        if np.any(sp < 0):
            z = int(numbers[np.flatnonzero(sp < 0)[0]])
            raise ValueError(f"ZBL baseline: atomic number {z} is not one of its elements "
                             f"{list(self.elements)}")
        return sp

    def terms(self, positions, numbers, cell=None, pbc=(False, False, False),
              centers=None) -> BaselineTerms:
        """Energies, forces and virial of `positions` (n, 3) A with atomic `numbers` (n,), in
        `cell` (3, 3) A periodic along `pbc`. centers (k,): compute only the terms of these
        atoms (the rest are neighbors: a LAMMPS rank's ghosts); each pair contributes half its
        energy and virial to each central end and its whole force to each central end."""
        positions = np.asarray(positions, dtype=float)
        if len(positions) == 0 or self.cutoff <= 0:
            return self.list_terms(None, numbers, len(positions))
        cell = np.zeros((3, 3)) if cell is None else cell
        nl = build_neighbor_list(positions, cell, pbc, self.cutoff, 1, centers)
        return self.list_terms(nl, numbers, len(positions))

    def list_terms(self, nl, numbers, n_atoms: int) -> BaselineTerms:
        """`terms` from a full neighbor list `nl` (dcf.descriptors.neighbors.NeighborList,
        reaching at least `cutoff`; a model's own list) of n_atoms atoms with atomic
        `numbers`: the pairs closer than their outer radius."""
        energies, forces = np.zeros(n_atoms), np.zeros((n_atoms, 3))
        if nl is None or len(nl) == 0 or nl.d.min() >= self.cutoff:
            return BaselineTerms(energies, forces, np.zeros((3, 3)))
        if nl.cutoff < self.cutoff:
            raise ValueError(f"ZBL baseline: a neighbor list to {nl.cutoff:g} A is shorter "
                             f"than its cutoff {self.cutoff:g} A")
        near = np.flatnonzero(nl.d < self.cutoff)
        sp = self.species(numbers)
        i, j, D, d = nl.i[near], nl.j[near], nl.D[near], nl.d[near]
        phi, dphi = self.pair_energy(d, sp[i], sp[j])
        g = (dphi / d)[:, None] * D                        # dphi/dD: the force on j, minus on i
        np.add.at(energies, i, 0.5 * phi)
        np.add.at(forces, i, g)
        return BaselineTerms(energies, forces, -0.5 * D.T @ g)

    def atoms_terms(self, atoms) -> BaselineTerms:
        """`terms` of an ase.Atoms (its cell and periodicity)."""
        return self.terms(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "elements": list(self.elements),
                "inner": self.inner.tolist(), "outer": self.outer.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "ZBL":
        if d.get("kind") != KIND:
            raise ValueError(f"unknown baseline kind {d.get('kind')!r} (known: {KIND!r})")
        return cls(d["elements"], d["inner"], d["outer"])

    def describe(self) -> str:
        """One line per pair: 'a-b inner..outer A'."""
        els = self.elements
        return "; ".join(f"{els[a]}-{els[b]} {self.inner[a, b]:.2f}..{self.outer[a, b]:.2f} A"
                         for a in range(len(els)) for b in range(a, len(els)))


def baseline_from_metadata(meta: dict) -> ZBL | None:
    """The baseline a model file's metadata names (its "baseline" entry), or None."""
    d = meta.get("baseline")
    return None if d is None else ZBL.from_dict(d)


def baseline_metadata(baseline: ZBL | None) -> dict:
    """The model-file metadata entry of a baseline: {"baseline": {...}}, or {} for none."""
    return {} if baseline is None else {"baseline": baseline.to_dict()}


def add_baseline(results: dict, baseline: ZBL | None, atoms, neighbors=None) -> dict:
    """`results` of a model's compute() on `atoms` plus the baseline: energy, free_energy,
    energies, forces and stress, whichever `results` holds (stress eV/A^3, Voigt order).
    neighbors: a full neighbor list of `atoms` reaching the baseline's cutoff (the model's
    own), or None to build one."""
    if baseline is None:
        return results
    t = baseline.atoms_terms(atoms) if neighbors is None else \
        baseline.list_terms(neighbors, atoms.numbers, len(atoms))
    out = dict(results)
    if "forces" in out:
        out["forces"] = out["forces"] + t.forces
    if "energies" in out:
        out["energies"] = out["energies"] + t.energies
    for key in ("energy", "free_energy"):
        if key in out:
            out[key] = out[key] + t.energy
    if "stress" in out:
        out["stress"] = out["stress"] + virial_stress(t.virial, atoms.get_volume())
    return out
