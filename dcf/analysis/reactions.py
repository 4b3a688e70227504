"""Chemical reactions in an MD trajectory: bond graph, HMM-denoised molecules, balanced events.

The method of Mailoa et al. (2019), Methods, "Hidden Markov Model Reaction Snapshot Extraction":

1. Atoms i, j are bonded when R_ij < factor * (r_cov,i + r_cov,j) (factor 1.4, ASE's covalent
   radii, periodic images included). Molecules are the connected components of the bond graph.
2. Each molecule (a set of atoms) that ever appears has a binary presence series over the frames,
   denoised by a two-state hidden Markov model decoded with Viterbi (state-change probability
   1e-5 per frame, P(observed = hidden) = 0.6, initial probability 0.5).
3. A reaction is a change of the denoised molecules: molecules that vanish (reactants) and appear
   (products) on shared atoms, kept only if reactants and products are made of exactly the same
   atoms. Two successive changes of one atom belong to one reaction when they lie within
   `max_lag` frames, or, however far apart, when the atom spends the time between them in no
   lasting molecule (it left one and joins the next through intermediates too short-lived for
   the HMM to keep: a bond broken at frame 53 and a product formed at frame 65).
4. The reacting atoms in a window of frames around each event form the reaction test set, or the
   chosen snapshots to add to training.

Frames are numbered 0..T-1 in the order given. Distances in A.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from ase.data import chemical_symbols, covalent_radii
from ase.formula import Formula
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dcf.descriptors.neighbors import build_neighbor_list


@dataclass(frozen=True)
class HMM:
    """Two-state hidden Markov model of a molecule's presence (the paper's values)."""
    p_change: float = 1e-5      # probability that the hidden state flips between frames
    p_match: float = 0.6        # probability that the observation equals the hidden state
    p_init: float = 0.5         # probability that the molecule is present at frame 0

    def __post_init__(self):
        for name in ("p_change", "p_match", "p_init"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"HMM {name} must lie strictly between 0 and 1 (got {value})")
        if self.p_match <= 0.5:
            raise ValueError(f"HMM p_match must exceed 0.5 (got {self.p_match}): "
                             f"observations must be more likely right than wrong")


def bonds(positions, numbers, cell, pbc, factor: float = 1.4, radii=None):
    """Bonded pairs (i, j), i < j, of one frame: R_ij < factor (r_i + r_j), periodic images included.

    positions (n, 3) A; numbers (n,) atomic numbers; radii (max Z + 1,) A, default ASE's
    covalent radii. A bond to an atom's own periodic image is dropped (it joins nothing).
    """
    radii = covalent_radii if radii is None else np.asarray(radii, float)
    r = radii[np.asarray(numbers)]
    nl = build_neighbor_list(positions, cell, pbc, cutoff=2.0 * factor * float(r.max()))
    i, j = nl.i, nl.j
    keep = (i < j) & (nl.d < factor * (r[i] + r[j]))
    return i[keep], j[keep]


def molecule_labels(n_atoms: int, i, j) -> np.ndarray:
    """Connected-component label (n_atoms,) of each atom for the bonds (i, j)."""
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n_atoms, n_atoms))
    return connected_components(graph, directed=False)[1]


@dataclass
class Presence:
    """Which molecules exist in which frames, stored sparsely.

    molecules: list of sorted atom-index arrays, one per distinct molecule ever seen;
    molecule, frame: (m,) int64 pairs, molecule `molecule[k]` exists in frame `frame[k]`.
    """
    molecules: list
    molecule: np.ndarray
    frame: np.ndarray
    n_frames: int

    def observed(self, first: int = 0, stop: int | None = None) -> np.ndarray:
        """Presence series (stop - first, n_frames) bool of molecules first..stop-1."""
        stop = len(self.molecules) if stop is None else stop
        out = np.zeros((stop - first, self.n_frames), dtype=bool)
        sel = (self.molecule >= first) & (self.molecule < stop)
        out[self.molecule[sel] - first, self.frame[sel]] = True
        return out


def molecule_presence(frames, factor: float = 1.4, radii=None) -> Presence:
    """Bond graph and molecules of every frame (ase.Atoms, same atoms in the same order)."""
    labels = []
    for t, atoms in enumerate(frames):
        if t == 0:
            numbers = atoms.numbers.copy()
        elif len(atoms) != len(numbers) or not np.array_equal(atoms.numbers, numbers):
            raise ValueError(f"frame {t} has different atoms than frame 0; "
                             f"reaction analysis needs a trajectory of fixed composition")
        labels.append(molecule_labels(len(numbers), *bonds(
            atoms.positions, numbers, atoms.cell.array, atoms.pbc, factor, radii)))
    if not labels:
        raise ValueError("no frames to analyse")
    labels = np.array(labels)                       # (T, n)
    T, n = labels.shape
    # a molecule's identity: the sum (mod 2^64) of random odd 64-bit keys of its atoms
    keys = np.random.default_rng(0x5EED).integers(0, 2**63, size=n, dtype=np.uint64) * 2 + 1
    n_labels = labels.max(axis=1) + 1
    offset = np.concatenate([[0], np.cumsum(n_labels)])
    sig = np.zeros(offset[-1], dtype=np.uint64)
    np.add.at(sig, (labels + offset[:-1, None]).ravel(), np.tile(keys, T))
    frame = np.repeat(np.arange(T), n_labels)
    unique, first, ids = np.unique(sig, return_index=True, return_inverse=True)
    molecules = [np.flatnonzero(labels[frame[k]] == k - offset[frame[k]]) for k in first]
    return Presence(molecules, ids.astype(np.int64), frame.astype(np.int64), T)


def viterbi(observed, hmm: HMM = HMM()) -> np.ndarray:
    """Most probable hidden presence (n_series, T) bool for binary observations (n_series, T).

    Every series is decoded at once: the loop runs over frames, each step a few vector
    operations over all series.
    """
    obs = np.asarray(observed, dtype=bool)
    if obs.ndim != 2:
        raise ValueError(f"observations must be (n_series, n_frames), got shape {obs.shape}")
    n, T = obs.shape
    states = np.zeros((n, T), dtype=bool)
    if n == 0 or T == 0:
        return states
    stay, change = np.log1p(-hmm.p_change), np.log(hmm.p_change)
    hit, miss = np.log(hmm.p_match), np.log1p(-hmm.p_match)
    seen = np.ascontiguousarray(obs.T)               # (T, n): one frame per row
    # back-pointers: whether the best path into each state at frame t came from "present"
    into_absent = np.zeros((T, n), dtype=bool)
    into_present = np.zeros((T, n), dtype=bool)
    absent = np.log1p(-hmm.p_init) + np.where(seen[0], miss, hit)
    present = np.log(hmm.p_init) + np.where(seen[0], hit, miss)
    for t in range(1, T):
        a_from_p = np.greater(present + change, absent + stay, out=into_absent[t])
        p_from_p = np.greater_equal(present + stay, absent + change, out=into_present[t])
        absent, present = (np.where(a_from_p, present + change, absent + stay)
                           + np.where(seen[t], miss, hit),
                           np.where(p_from_p, present + stay, absent + change)
                           + np.where(seen[t], hit, miss))
    path = np.empty((T, n), dtype=bool)
    path[T - 1] = present > absent
    for t in range(T - 1, 0, -1):
        path[t - 1] = np.where(path[t], into_present[t], into_absent[t])
    states[:] = path.T
    return states


@dataclass
class Reaction:
    """A balanced change of molecules: reactants -> products on the same atoms."""
    frame: int                  # first frame at which a product is present
    frames: tuple               # (first, last) frame of the molecule changes grouped here
    reactants: list             # sorted atom-index arrays
    products: list
    atoms: np.ndarray = field(repr=False)   # all atoms involved, sorted

    def equation(self, numbers) -> str:
        def side(mols):
            counts = Counter(_formula(numbers, m) for m in mols)
            return " + ".join(f"{c} {f}" if c > 1 else f for f, c in sorted(counts.items()))
        return f"{side(self.reactants)} -> {side(self.products)}"

    def to_dict(self, numbers) -> dict:
        return {"frame": self.frame, "frames": list(self.frames),
                "equation": self.equation(numbers),
                "reactants": [{"formula": _formula(numbers, m), "atoms": m.tolist()}
                              for m in self.reactants],
                "products": [{"formula": _formula(numbers, m), "atoms": m.tolist()}
                             for m in self.products],
                "atoms": self.atoms.tolist()}


def _formula(numbers, atoms) -> str:
    return Formula.from_list([chemical_symbols[z] for z in np.asarray(numbers)[atoms]]).format(
        "hill")


@dataclass
class Events:
    """Changes of the denoised presence: molecule `molecule[k]` appears (appears[k]) or
    vanishes at frame `frame[k]`, the first frame of its new state."""
    molecule: np.ndarray
    frame: np.ndarray
    appears: np.ndarray


def presence_changes(presence: Presence, hmm: HMM = HMM(), block: int = 2048) -> Events:
    """Denoise every molecule's presence with `viterbi` and return where it changes.

    Molecules are decoded `block` at a time so memory stays bounded for long trajectories.
    """
    mols, frames, appears = [], [], []
    for first in range(0, len(presence.molecules), block):
        states = viterbi(presence.observed(first, first + block), hmm)
        change = np.diff(states.astype(np.int8), axis=1)
        m, c = np.nonzero(change)
        mols.append(m + first)
        frames.append(c + 1)
        appears.append(change[m, c] > 0)
    if not mols:
        return Events(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
    return Events(np.concatenate(mols).astype(np.int64), np.concatenate(frames).astype(np.int64),
                  np.concatenate(appears))


def find_reactions(presence: Presence, events: Events, max_lag: int = 10,
                   dropped: list | None = None) -> tuple[list, int]:
    """Balanced reactions from the changes of the denoised molecules.

    Successive changes of one atom are grouped when they lie within `max_lag` frames, or
    whatever their distance when the first is the atom leaving a molecule and the second its
    joining one (in between it was in intermediates only). Molecules both formed and consumed
    inside a group are intermediates and cancel. A group is a reaction when its net reactants
    and products hold the same atoms. Returns (reactions sorted by frame, number of unbalanced
    groups dropped); `dropped`, if given, receives one dict per dropped group (frames, atoms,
    net reactant and product atoms) to explain them.
    """
    mol, frame, appears = events.molecule, events.frame, events.appears
    n_events = len(mol)
    parent = np.arange(n_events)

    def root(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    # link consecutive events on the same atom: within max_lag frames, or a leaving followed
    # by a joining (at one frame, vanishings sort first: the atom leaves, then joins)
    per_atom: dict[int, list] = {}
    for e in np.lexsort((appears, frame)):
        for a in presence.molecules[mol[e]]:
            per_atom.setdefault(int(a), []).append(e)
    for chain in per_atom.values():
        for prev, nxt in zip(chain[:-1], chain[1:]):
            through_intermediates = not appears[prev] and appears[nxt]
            if through_intermediates or frame[nxt] - frame[prev] <= max_lag:
                parent[root(prev)] = root(nxt)

    groups: dict[int, list] = {}
    for e in range(n_events):
        groups.setdefault(root(e), []).append(e)

    reactions, unbalanced = [], 0
    for group in groups.values():
        made = Counter(int(mol[e]) for e in group if appears[e])
        used = Counter(int(mol[e]) for e in group if not appears[e])
        net_made, net_used = made - used, used - made
        if not net_made and not net_used:
            continue                       # something formed and vanished again: no net change
        products = [presence.molecules[m] for m in sorted(net_made.elements())]
        reactants = [presence.molecules[m] for m in sorted(net_used.elements())]
        atoms_in = np.sort(np.concatenate(reactants)) if reactants else np.zeros(0, int)
        atoms_out = np.sort(np.concatenate(products)) if products else np.zeros(0, int)
        if not (len(atoms_in) and np.array_equal(atoms_in, atoms_out)):
            unbalanced += 1
            if dropped is not None:
                dropped.append({"frames": [int(frame[group].min()), int(frame[group].max())],
                                "reactant_atoms": atoms_in.tolist(),
                                "product_atoms": atoms_out.tolist()})
            continue
        frames = frame[group]
        first_product = int(min(frame[e] for e in group if appears[e]))
        reactions.append(Reaction(first_product, (int(frames.min()), int(frames.max())),
                                  reactants, products, atoms_in))
    reactions.sort(key=lambda r: (r.frame, int(r.atoms[0])))
    return reactions, unbalanced


def reaction_snapshots(reactions, n_frames: int, window: int = 10) -> np.ndarray:
    """(frame, atom) pairs (m, 2) int64 of the reacting atoms within `window` frames of each event.

    Sorted and unique: the reaction test set, or the chosen snapshots to add to training.
    """
    pairs = []
    for r in reactions:
        lo, hi = max(0, r.frames[0] - window), min(n_frames - 1, r.frames[1] + window)
        f = np.arange(lo, hi + 1)
        pairs.append(np.stack(np.broadcast_arrays(f[:, None], r.atoms[None, :]), -1).reshape(-1, 2))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs).astype(np.int64), axis=0)


def rare_event_occurrence(snapshots, numbers, n_frames: int) -> dict:
    """Per element: reaction snapshots / all snapshots of the trajectory, and the count."""
    numbers = np.asarray(numbers)
    out = {}
    for z in np.unique(numbers):
        el = chemical_symbols[z]
        count = int(np.sum(numbers[snapshots[:, 1]] == z)) if len(snapshots) else 0
        out[el] = {"snapshots": count,
                   "occurrence": count / (n_frames * int(np.sum(numbers == z)))}
    return out
