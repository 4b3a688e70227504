"""Fingerprints of atomic environments: invariant G (G1..G5) and covariant A (V1, A1).

``featurize(atoms, spec)`` returns, per central element ``el``:
  G[el] (n_el, nG_el), A[el] (n_el, nA_el, 3) Angstrom-free numbers (V1 in Angstrom),
  index[el] (n_el,) atom indices.
With ``derivatives=True`` it adds a sparse per-neighbor layout of dG/dr and dA/dr:
  dG[el] (p_el, nG_el, 3) 1/Angstrom, dA[el] (p_el, nA_el, 3, 3), pair_row[el] (p_el,)
  the row in G[el] and pair_atom[el] (p_el,) the neighbor atom. Entry e holds the
  derivative with respect to the position of atom pair_atom[e]; the central atom's own
  derivative is minus the sum of its row's entries (translation invariance).

``Featurizer.forces(env, dEdG)`` is the fused kernel of B-P inference:
  F = -sum_i sum_a (dE/dG_ia) dG_ia/dr and the virial -dE/d(strain), without
  materializing dG/dr.

A1 is V1 / |V1| and, as in the paper, 0 where V1 = 0: a direction that jumps as V1
passes through zero. V1 counts as zero when |V1| <= 1e-10 sum_j |D_j| g(r_j), i.e. when
it vanishes by symmetry (perfect crystals, thin periodic cells) up to round-off, whose
direction would be noise. Setting ``delta > 0`` in a spec's A1 rule gives the smooth
variant V1 / sqrt(|V1|^2 + delta^2), continuous everywhere.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from dcf._ext import fingerprints as _portable
from dcf.descriptors.pair_factor import POLY_SIZE, pair_factor_poly
from dcf.descriptors.neighbors import (NeighborList, VerletList, build_neighbor_list,
                                      resolve_threads)
from dcf.descriptors.spec import FingerprintSpec, SpecError

_MODES = _portable.MODES         # the kernels' constants (dcf/_ext/terms.pxd)
_KINDS = _portable.KINDS
KERNELS = ("auto", "avx512", "avx2", "portable")
_MODULES = {"avx512": "fingerprints_avx512", "avx2": "fingerprints_avx2",
            "portable": "fingerprints"}


def kernels_available() -> list[str]:
    """The kernel builds this machine can run, fastest first: "avx512" and "avx2" where they
    were built (x86-64) and the CPU has AVX-512F, AVX2 and FMA (resp. AVX2 and FMA), and
    "portable" always."""
    out = []
    for name, usable in (("avx512", _portable.cpu_has_avx512f),
                         ("avx2", _portable.cpu_has_avx2_fma)):
        if usable():
            try:
                importlib.import_module(f"dcf._ext.{_MODULES[name]}")
                out.append(name)
            except ImportError:
                pass
    return out + ["portable"]


def kernel_module(name: str | None = None):
    """The fingerprint kernel module: `name` "avx512", "avx2", "portable" or "auto" (default:
    the DCF_KERNEL environment variable, else "auto", the fastest available)."""
    name = name or os.environ.get("DCF_KERNEL") or "auto"
    if name not in KERNELS:
        raise ValueError(f"unknown fingerprint kernel {name!r} (DCF_KERNEL); "
                         f"choose one of {', '.join(KERNELS)}")
    available = kernels_available()
    if name == "auto":
        name = available[0]
    elif name not in available:
        raise ValueError(f"fingerprint kernel {name!r} is not available here "
                         f"(available: {', '.join(available)})")
    return importlib.import_module(f"dcf._ext.{_MODULES[name]}")


_RADIAL = ("G1", "G2", "G3")


def _compile(spec: FingerprintSpec, center: str, kernel):
    """The terms of one central element bound for `kernel` (its CompiledTerms)."""
    return kernel.CompiledTerms(*term_arrays(spec, center, kernel))


def term_arrays(spec: FingerprintSpec, center: str, kernel=_portable):
    """The terms of one central element flattened into the arrays of the kernels' `Terms`
    (dcf/_ext/terms.pxd, one per pointer field, by name) and the counts
    (n_species, nG, nA) that go with them."""
    species = {el: s for s, el in enumerate(spec.elements)}
    ns = len(species)
    g_terms, a_terms = spec.invariant_terms(center), spec.vector_terms(center)
    rcs = sorted({t.Rc for t in spec.terms[center]})
    rc_index = {rc: q for q, rc in enumerate(rcs)}

    radial = sorted(((species[t.neighbors[0]], col, t) for col, t in enumerate(g_terms)
                     if t.kind in _RADIAL), key=lambda x: (x[0], x[1]))
    rad_start = np.searchsorted([s for s, _, _ in radial], np.arange(ns + 1))

    # angular terms grouped by (pair, kind, Rc, eta); radial factors shared by (Rc, eta)
    groups: dict[tuple, list] = {}
    for col, t in enumerate(g_terms):
        if t.kind in ("G4", "G5"):
            s1, s2 = sorted(species[e] for e in t.neighbors)
            groups.setdefault((s1 * ns + s2, t.kind, t.Rc, t["eta"]), []).append((col, t))
    group_keys = sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3]))
    factors = sorted({(rc_index[k[2]], k[3]) for k in group_keys})
    pair_start = np.searchsorted([k[0] for k in group_keys], np.arange(ns * ns + 1))
    pair_rc2 = np.zeros(ns * ns)     # triplets of a species pair need r_jk below this
    for key, kind, rc, _ in group_keys:
        pair_rc2[key] = np.inf if kind == "G5" else max(pair_rc2[key], rc * rc)
    ang = [ct for k in group_keys for ct in groups[k]]
    grp_start = np.concatenate([[0], np.cumsum([len(groups[k]) for k in group_keys])])

    vector = sorted(((species[t.neighbors[0]], col, t) for col, t in enumerate(a_terms)),
                    key=lambda x: (x[0], x[1]))
    vec_start = np.searchsorted([s for s, _, _ in vector], np.arange(ns + 1))

    def zeta_int(z):
        return int(z) if float(z).is_integer() and z < 2 ** 30 else -1

    arrays = {
        "rc": np.array(rcs, float),
        "rad_start": rad_start,
        "rad_kind": [_KINDS[t.kind] for _, _, t in radial],
        "rad_rc": [rc_index[t.Rc] for _, _, t in radial],
        "rad_eta": [dict(t.params).get("eta", 0.0) for _, _, t in radial],
        "rad_rs": [dict(t.params).get("Rs", 0.0) for _, _, t in radial],
        "rad_kappa": [dict(t.params).get("kappa", 0.0) for _, _, t in radial],
        "rad_col": [col for _, col, _ in radial],
        "fac_rc": [f[0] for f in factors],
        "fac_eta": [f[1] for f in factors],
        "pair_start": pair_start,
        "pair_rc2": pair_rc2,
        "grp_kind": [_KINDS[k[1]] for k in group_keys],
        "grp_rc": [rc_index[k[2]] for k in group_keys],
        "grp_fac": [factors.index((rc_index[k[2]], k[3])) for k in group_keys],
        "grp_eta": [k[3] for k in group_keys],
        "grp_start": grp_start,
        "ang_zeta": [t["zeta"] for _, t in ang],
        "ang_lambda": [t["lambda"] for _, t in ang],
        "ang_coef": [2.0 ** (1.0 - t["zeta"]) for _, t in ang],
        "ang_izeta": [zeta_int(t["zeta"]) for _, t in ang],
        "ang_col": [col for col, _ in ang],
        "vec_start": vec_start,
        "vec_rc": [rc_index[t.Rc] for _, _, t in vector],
        "vec_eta": [t["eta"] for _, _, t in vector],
        "vec_rs": [t["Rs"] for _, _, t in vector],
        "vec_delta": [dict(t.params).get("delta", 0.0) for _, _, t in vector],
        "vec_norm": [1 if t.kind == "A1" else 0 for _, _, t in vector],
        "vec_col": [col for _, col, _ in vector],
    }
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    arrays["grp_poly"], arrays["grp_pc"], arrays["grp_pd"] = _pair_polynomials(arrays)
    arrays["ang_kzl"] = arrays["ang_coef"] * arrays["ang_zeta"] * arrays["ang_lambda"]
    arrays["ang_mate"] = _mates(arrays)
    arrays["grp_fused"], arrays["ang_slot"] = _fused_slots(arrays, kernel.FUSED_MAX_LOG2_ZETA)
    return arrays, ns, len(g_terms), len(a_terms)


def _pair_polynomials(k: dict):
    """grp_poly (n_grp,): the degree (11, 15) of each G4 group's pair-factor polynomials, 0
    where none fits (and for G5); grp_pc, grp_pd (n_grp, POLY_SIZE) their coefficients."""
    n_grp = len(k["grp_kind"])
    degree = np.zeros(n_grp, dtype=np.intc)
    pc = np.zeros((n_grp, POLY_SIZE))
    pd = np.zeros((n_grp, POLY_SIZE))
    for g in range(n_grp):
        if k["grp_kind"][g] != _KINDS["G4"]:
            continue
        fit = pair_factor_poly(float(k["rc"][k["grp_rc"][g]]), float(k["grp_eta"][g]))
        if fit is not None:
            degree[g] = len(fit[0]) - 1
            pc[g, :len(fit[0])], pd[g, :len(fit[1])] = fit
    return degree, pc, pd


def _mates(k: dict) -> np.ndarray:
    """ang_mate (n_ang,): pairs the terms of a group that share an integer zeta (both
    |lambda| <= 1), so the kernels run them as two lanes: the first gets the index of the
    second, the second -2; -1 for a term alone."""
    izeta, lam, start = k["ang_izeta"], k["ang_lambda"], k["grp_start"]
    mate = np.full(len(izeta), -1, dtype=np.intc)
    for g in range(len(start) - 1):
        for a in range(start[g], start[g + 1]):
            if mate[a] != -1 or izeta[a] < 1 or abs(lam[a]) > 1:
                continue
            for b in range(a + 1, start[g + 1]):
                if mate[b] == -1 and izeta[b] == izeta[a] and abs(lam[b]) <= 1:
                    mate[a], mate[b] = b, -2
                    break
    return mate


def _fused_slots(k: dict, max_log2_zeta: int):
    """grp_fused (n_grp,), ang_slot (n_ang,): the groups the fused triplet loop takes (every
    term lambda = +-1, zeta = 2^j with j <= max_log2_zeta, Q a polynomial or G5) as the bit
    set of their j, and each such term's sum, 2 j + (lambda < 0); 0 and -1 elsewhere."""
    n_grp = len(k["grp_kind"])
    fused = np.zeros(n_grp, dtype=np.intc)
    slot = np.full(len(k["ang_col"]), -1, dtype=np.intc)
    for g in range(n_grp):
        terms = range(k["grp_start"][g], k["grp_start"][g + 1])
        if k["grp_kind"][g] == _KINDS["G4"] and k["grp_poly"][g] == 0:
            continue
        pows = [int(k["ang_izeta"][a]).bit_length() - 1 for a in terms]
        if all(abs(k["ang_lambda"][a]) == 1.0 and k["ang_izeta"][a] == 1 << j
               and j <= max_log2_zeta for a, j in zip(terms, pows)):
            for a, j in zip(terms, pows):
                fused[g] |= 1 << j
                slot[a] = 2 * j + (k["ang_lambda"][a] < 0)
    return fused, slot


@dataclass
class Environment:
    """One structure's neighbor list and, per central element, its atoms and entries.

    species (n_atoms,) index into spec.elements; centers[el] (n_el,) atom indices;
    pfirst[el] (n_el + 1,) and entry[el] (p_el,): the neighbor-list entries of each
    center within that element's largest Rc.
    """

    n_atoms: int
    volume: float
    neighbors: NeighborList
    species: np.ndarray
    centers: dict = field(default_factory=dict)
    pfirst: dict = field(default_factory=dict)
    entry: dict = field(default_factory=dict)


@dataclass
class Features:
    """Per central element: G (n_el, nG), A (n_el, nA, 3), index (n_el,).

    With derivatives: dG (p, nG, 3), dA (p, nA, 3, 3), pair_row (p,), pair_atom (p,).
    """

    G: dict
    A: dict
    index: dict
    dG: dict = field(default_factory=dict)
    dA: dict = field(default_factory=dict)
    pair_row: dict = field(default_factory=dict)
    pair_atom: dict = field(default_factory=dict)
    n_atoms: int = 0

    def dense_dG(self, element: str) -> np.ndarray:
        """dG/dr as a dense (n_el, nG, n_atoms, 3) array (small systems and tests)."""
        return self._dense(self.dG[element], element)

    def dense_dA(self, element: str) -> np.ndarray:
        """dA/dr as a dense (n_el, nA, 3, n_atoms, 3) array (small systems and tests)."""
        dA = self.dA[element]
        out = self._dense(dA.reshape(len(dA), -1, 3), element)
        n_el, _, n_atoms, _ = out.shape
        return out.reshape(n_el, dA.shape[1], 3, n_atoms, 3)

    def _dense(self, d: np.ndarray, element: str) -> np.ndarray:
        n_el, k = len(self.index[element]), d.shape[1]
        out = np.zeros((n_el, k, self.n_atoms, 3))
        rows, atoms = self.pair_row[element], self.pair_atom[element]
        np.add.at(out, (rows, slice(None), atoms), d)
        np.add.at(out, (rows, slice(None), self.index[element][rows]), -d)
        return out


class Featurizer:
    """Computes a spec's fingerprints; holds the compiled terms between calls (MD).

    num_threads: OpenMP threads over central atoms (default: DCF_NUM_THREADS or
    OMP_NUM_THREADS, else 1). kernel: "auto" (default, or DCF_KERNEL), "avx512", "avx2" or
    "portable" (`kernel_module`); the builds agree to round-off. skin (Angstrom): with
    skin > 0 the neighbor list is a `VerletList`, rebuilt only once some atom has moved
    skin / 2 (MD, where one Featurizer sees the same atoms step after step).
    check_scratch: set True for a debug run of the kernels (`compute(check=True)`: NaN-filled
    scratch with guard bands), which raises RuntimeError if a kernel oversteps its scratch.
    """

    def __init__(self, spec: FingerprintSpec | str, num_threads: int | None = None,
                 kernel: str | None = None, skin: float = 0.0):
        self.spec = FingerprintSpec.resolve(spec)
        self.num_threads = resolve_threads(num_threads)
        self.skin = float(skin)
        self._verlet = (VerletList(self.spec.max_cutoff, self.skin, self.num_threads)
                        if self.skin != 0.0 else None)       # VerletList checks the skin
        self._kernel = kernel_module(kernel)
        self._cutoffs = [self.spec.element_cutoff(el) for el in self.spec.elements]
        # atomic number -> index in spec.elements, -1 for elements the spec lacks
        self._species_of = np.full(max(atomic_numbers[el] for el in self.spec.elements) + 2,
                                   -1, dtype=np.intc)
        for s, el in enumerate(self.spec.elements):
            self._species_of[atomic_numbers[el]] = s
        self.kernel = self._kernel.simd()
        self._compiled = {el: _compile(self.spec, el, self._kernel) for el in self.spec.elements}
        self.check_scratch = False

    def environment(self, atoms, source: str = "structure",
                    part: tuple[int, int] = (0, 1), centers=None) -> Environment:
        """Neighbor list and per-element central atoms of an ``ase.Atoms``.

        part = (k, K) keeps the k-th of K near-equal blocks of each element's central atoms
        (MPI rank k of K): features cover only those atoms, and `forces` returns their
        contribution, so the K parts' forces and virials sum to the whole.
        centers: ascending atom indices (k,) that alone are central atoms (a block of a large
        frame): only they get neighbor-list entries, each with its full environment, so their
        features are those of the whole frame's, to the bit. Not with a Verlet skin.
        """
        k, n_parts = part
        if not 0 <= k < n_parts:
            raise ValueError(f"part {part}: need 0 <= k < K")
        numbers = np.asarray(atoms.numbers)
        species = self._species_of[np.clip(numbers, 0, len(self._species_of) - 1)]
        if np.any(species < 0):
            self.spec.check_symbols(atoms.get_chemical_symbols(), source)
        if centers is not None and self._verlet is not None:
            raise ValueError("centers= needs a Featurizer without a Verlet skin")
        if self._verlet is not None:
            self._verlet.num_threads = self.num_threads
            nl = self._verlet.update(atoms.positions, atoms.cell.array, atoms.pbc, numbers)
        else:
            present = np.flatnonzero(np.bincount(species, minlength=len(self._cutoffs)))
            nl = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc,
                                     max((self._cutoffs[s] for s in present), default=1.0),
                                     self.num_threads, centers)
        if len(nl) and nl.d.min() < 1e-8:
            k = int(np.argmin(nl.d))
            raise ValueError(f"{source}: atoms {int(nl.i[k])} and {int(nl.j[k])} overlap "
                             f"(distance {nl.d[k]:.3g} A)")
        volume = abs(float(np.linalg.det(atoms.cell.array))) if all(atoms.pbc) else 0.0
        env = Environment(len(atoms), volume, nl, species)
        if centers is not None:
            return self.select(env, centers)
        for s, el in enumerate(self.spec.elements):
            mine = np.flatnonzero(species == s).astype(np.intp)
            mine = np.array_split(mine, n_parts)[k] if n_parts > 1 else mine
            env.centers[el] = mine
            env.pfirst[el], env.entry[el] = self._kernel.select_entries(
                nl.first, nl.d, nl.j, species, len(self.spec.elements), mine,
                self._cutoffs[s])
        return env

    def domain_environment(self, positions, numbers, centers,
                           source: str = "domain") -> Environment:
        """Neighbor list of explicit atoms without periodic images, central atoms `centers`.

        For a domain of a decomposed system (LAMMPS): positions (n, 3) A of its owned atoms
        and of the ghost copies around it, numbers (n,) atomic numbers, centers (k,) the
        atoms whose fingerprints are wanted (the only atoms with neighbor-list entries);
        their environments must lie inside the domain.
        """
        positions = np.ascontiguousarray(positions, dtype=float)
        numbers = np.asarray(numbers)
        species = self._species_of[np.clip(numbers, 0, len(self._species_of) - 1)]
        if np.any(species < 0):
            self.spec.check_symbols([chemical_symbols[z] for z in numbers], source)
        nl = build_neighbor_list(positions, np.eye(3), (False, False, False),
                                 self.spec.max_cutoff, self.num_threads, centers)
        if len(nl) and nl.d.min() < 1e-8:
            k = int(np.argmin(nl.d))
            raise ValueError(f"{source}: atoms {int(nl.i[k])} and {int(nl.j[k])} overlap "
                             f"(distance {nl.d[k]:.3g} A)")
        return self.select(Environment(len(positions), 0.0, nl, species), centers)

    def select(self, env: Environment, centers) -> Environment:
        """`env` with the central atoms `centers` (atom indices), on the same neighbor list."""
        centers = np.asarray(centers, dtype=np.intp)
        out = Environment(env.n_atoms, env.volume, env.neighbors, env.species)
        nl, species = env.neighbors, env.species
        for s, el in enumerate(self.spec.elements):
            mine = np.ascontiguousarray(centers[species[centers] == s])
            out.centers[el] = mine
            out.pfirst[el], out.entry[el] = self._kernel.select_entries(
                nl.first, nl.d, nl.j, species, len(self.spec.elements), mine, self._cutoffs[s])
        return out

    def features(self, env: Environment, derivatives: bool = False) -> Features:
        """G and A (and, with `derivatives`, dG/dr and dA/dr) of every central atom."""
        nl = env.neighbors
        out = Features({}, {}, {}, n_atoms=env.n_atoms)
        empty = np.zeros(0)
        for el, terms in self._compiled.items():
            n_c, p = len(env.centers[el]), len(env.entry[el])
            G = np.zeros((n_c, terms.nG))
            A = np.zeros((n_c, terms.nA, 3))
            dG = np.zeros((p, terms.nG, 3)) if derivatives else empty
            dA = np.zeros((p, terms.nA, 3, 3)) if derivatives else empty
            self._kernel.compute(terms, _MODES["derivatives" if derivatives else "values"],
                                 env.pfirst[el], env.entry[el], nl.j, nl.D, nl.d, env.species,
                                 G.reshape(-1), A.reshape(-1), dG.reshape(-1), dA.reshape(-1),
                                 empty, empty, self.num_threads, self.check_scratch)
            out.G[el], out.A[el], out.index[el] = G, A, env.centers[el]
            if derivatives:
                out.dG[el], out.dA[el] = dG, dA
                out.pair_row[el] = np.repeat(np.arange(n_c), np.diff(env.pfirst[el]))
                out.pair_atom[el] = nl.j[env.entry[el]]
        return out

    def forces(self, env: Environment, dEdG: dict) -> tuple[np.ndarray, np.ndarray]:
        """Fused B-P force kernel.

        dEdG[el] (n_el, nG_el): dE/dG in eV per unit of G. Returns forces (n_atoms, 3)
        eV/A, F = -dE/dr, and virial (3, 3) eV, W = -dE/d(strain) (ASE stress = -W / V).
        """
        nl = env.neighbors
        forces = np.zeros((env.n_atoms, 3))
        virial = np.zeros((3, 3))
        empty = np.zeros(0)
        for el, terms in self._compiled.items():
            n_c = len(env.centers[el])
            if n_c == 0:
                continue
            w = np.ascontiguousarray(dEdG[el], dtype=float)
            if w.shape != (n_c, terms.nG):
                raise ValueError(f"dE/dG of {el} has shape {w.shape}, expected {(n_c, terms.nG)}")
            gpair = np.zeros((len(env.entry[el]), 3))
            scratch = np.zeros(n_c * terms.nG)
            self._kernel.compute(terms, _MODES["forces"], env.pfirst[el], env.entry[el], nl.j,
                                 nl.D, nl.d, env.species, scratch, empty, empty, empty,
                                 w.reshape(-1), gpair.reshape(-1), self.num_threads,
                                 self.check_scratch)
            self._kernel.scatter_forces(env.centers[el], env.pfirst[el], env.entry[el], nl.j,
                                        nl.D, gpair, forces, virial)
        return forces, virial

    def __call__(self, atoms, derivatives: bool = False) -> Features:
        return self.features(self.environment(atoms), derivatives)


def featurize(atoms, spec: FingerprintSpec | str, derivatives: bool = False,
              num_threads: int | None = None, kernel: str | None = None) -> Features:
    """Fingerprints of an ``ase.Atoms`` under `spec` (a FingerprintSpec, preset name or
    JSON path). See the module docstring for the arrays returned."""
    return Featurizer(spec, num_threads, kernel)(atoms, derivatives)


__all__ = ["Featurizer", "Features", "Environment", "featurize", "SpecError"]
