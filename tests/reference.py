"""Plain-numpy reference implementation of atomic fingerprints (tests only).

Slow but simple: brute-force neighbor enumeration over an explicit box of
lattice shifts, then straightforward Python loops that mirror the formulas.

Conventions
-----------
* Neighbor list is a FULL list of ordered entries (i, j, S): D = x_j - x_i + S @ cell,
  |D| < cutoff (strict), excluding only i == j with S == 0. Periodic images of the
  center itself, and repeated images of the same atom j, are distinct neighbors.
* r_vec_ij = D (neighbor minus center), r_ij = |D|.
* fc(r) = 0.5 (cos(pi r / Rc) + 1) for r < Rc else 0, with each term's own Rc.
* G4 / G5 sum over UNORDERED pairs {j, k} of distinct neighbor entries of center i
  whose elements, as a multiset, equal {el1, el2}. For el1 == el2 each unordered pair
  is counted once (not twice), and G4[a, b] == G4[b, a]. Prefactor 2**(1 - zeta).
* A1 = V / sqrt(|V|^2 + delta^2) with V the V1 vector; A1 = 0 when delta == 0 and V is
  numerically zero: |V| <= 1e-10 * sum_j |D_j| g(r_j) (round-off of a vanishing sum).
"""
import math

import numpy as np

INVARIANT_KINDS = ("G1", "G2", "G3", "G4", "G5")
VECTOR_KINDS = ("V1", "A1")


# ----------------------------------------------------------------------------- neighbors
def _full_rank_cell(cell, pbc):
    """Return a nonsingular cell: non-periodic rows that make the cell singular are
    replaced by an orthonormal basis of the complement of the periodic rows. Any such
    completion gives valid bounds on the shifts along the periodic axes."""
    cell = np.array(cell, dtype=float).reshape(3, 3)
    if abs(np.linalg.det(cell)) > 1e-12 * max(1.0, np.abs(cell).max()) ** 3:
        return cell
    periodic = [k for k in range(3) if pbc[k]]
    per_rows = cell[periodic]
    if per_rows.shape[0] and np.linalg.matrix_rank(per_rows) < per_rows.shape[0]:
        raise ValueError("periodic cell vectors are linearly dependent")
    # orthonormal complement of the periodic rows via SVD
    _, _, vt = np.linalg.svd(np.vstack([per_rows, np.zeros((1, 3))]))
    complement = vt[len(periodic):]
    full = cell.copy()
    for n, k in enumerate(k for k in range(3) if not pbc[k]):
        full[k] = complement[n]
    return full


def brute_force_neighbors(positions, cell, pbc, cutoff, self_interaction=False):
    """All ordered entries (i, j, S) with |x_j - x_i + S @ cell| < cutoff.

    Returns (i, j, S, D, d) sorted lexicographically by (i, j, S0, S1, S2).
    With self_interaction=True the (i, i, 0) entries are kept too.
    """
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    n = len(pos)

    ranges = [[0], [0], [0]]
    if pbc.any():
        full = _full_rank_cell(cell, pbc)
        inv = np.linalg.inv(full)  # columns are reciprocal vectors b_k
        frac = pos @ inv
        for k in range(3):
            if not pbc[k]:
                continue
            bk = np.linalg.norm(inv[:, k])
            extent = frac[:, k].max() - frac[:, k].min() if n else 0.0
            nk = math.ceil(cutoff * bk) + math.ceil(extent) + 1
            ranges[k] = list(range(-nk, nk + 1))
    shifts = np.array([(a, b, c) for a in ranges[0] for b in ranges[1] for c in ranges[2]],
                      dtype=np.int64)
    offsets = shifts @ cell  # (ns, 3)

    I, J, S, Dl = [], [], [], []
    for i in range(n):
        # D[j, s] = x_j - x_i + S_s @ cell
        D = pos[:, None, :] - pos[i] + offsets[None, :, :]
        d = np.linalg.norm(D, axis=2)
        mask = d < cutoff
        if not self_interaction:
            zero = np.all(shifts == 0, axis=1)
            mask[i, zero] = False
        js, ss = np.nonzero(mask)
        I.append(np.full(len(js), i, dtype=np.int64))
        J.append(js.astype(np.int64))
        S.append(shifts[ss])
        Dl.append(D[js, ss])
    I = np.concatenate(I) if I else np.zeros(0, np.int64)
    J = np.concatenate(J) if J else np.zeros(0, np.int64)
    S = np.concatenate(S).reshape(-1, 3) if S else np.zeros((0, 3), np.int64)
    D = np.concatenate(Dl).reshape(-1, 3) if Dl else np.zeros((0, 3))
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], J, I))
    I, J, S, D = I[order], J[order], S[order], D[order]
    return I, J, S, D, np.linalg.norm(D, axis=1)


# ----------------------------------------------------------------------------- terms
def fc(r, Rc):
    return 0.5 * (math.cos(math.pi * r / Rc) + 1.0) if r < Rc else 0.0


def g1(nbrs, t):
    (el,) = t["neighbors"]
    return sum(fc(r, t["Rc"]) for e, D, r in nbrs if e == el)


def g2(nbrs, t):
    (el,) = t["neighbors"]
    eta, Rs, Rc = t["eta"], t["Rs"], t["Rc"]
    return sum(math.exp(-eta * (r - Rs) ** 2) * fc(r, Rc) for e, D, r in nbrs if e == el)


def g3(nbrs, t):
    (el,) = t["neighbors"]
    kappa, Rc = t["kappa"], t["Rc"]
    return sum(math.cos(kappa * r) * fc(r, Rc) for e, D, r in nbrs if e == el)


def _pair_ok(ej, ek, t):
    """Elements of the two entries equal {el1, el2} as a multiset."""
    return sorted([ej, ek]) == sorted(t["neighbors"])


def g4(nbrs, t):
    """Unordered pairs {j, k} of distinct entries (a < b), with r_jk factors."""
    eta, zeta, lam, Rc = t["eta"], t["zeta"], t["lambda"], t["Rc"]
    total = 0.0
    for a in range(len(nbrs)):
        ej, Dj, rij = nbrs[a]
        for b in range(a + 1, len(nbrs)):
            ek, Dk, rik = nbrs[b]
            if rij >= Rc or rik >= Rc or not _pair_ok(ej, ek, t):
                continue
            cos_t = float(np.dot(Dj, Dk)) / (rij * rik)
            rjk = float(np.linalg.norm(Dk - Dj))
            ang = max(1.0 + lam * cos_t, 0.0) ** zeta  # clamp only guards round-off
            rad = math.exp(-eta * (rij ** 2 + rik ** 2 + rjk ** 2))
            total += ang * rad * fc(rij, Rc) * fc(rik, Rc) * fc(rjk, Rc)
    return 2.0 ** (1.0 - zeta) * total


def g5(nbrs, t):
    """Same as G4 without the r_jk factors."""
    eta, zeta, lam, Rc = t["eta"], t["zeta"], t["lambda"], t["Rc"]
    total = 0.0
    for a in range(len(nbrs)):
        ej, Dj, rij = nbrs[a]
        for b in range(a + 1, len(nbrs)):
            ek, Dk, rik = nbrs[b]
            if rij >= Rc or rik >= Rc or not _pair_ok(ej, ek, t):
                continue
            cos_t = float(np.dot(Dj, Dk)) / (rij * rik)
            ang = max(1.0 + lam * cos_t, 0.0) ** zeta  # clamp only guards round-off
            rad = math.exp(-eta * (rij ** 2 + rik ** 2))
            total += ang * rad * fc(rij, Rc) * fc(rik, Rc)
    return 2.0 ** (1.0 - zeta) * total


def v1(nbrs, t):
    (el,) = t["neighbors"]
    eta, Rs, Rc = t["eta"], t["Rs"], t["Rc"]
    V = np.zeros(3)
    for e, D, r in nbrs:
        if e == el:
            V += D * math.exp(-eta * (r - Rs) ** 2) * fc(r, Rc)
    return V


def v1_scale(nbrs, t):
    """Sum of |contributions| to V1: the size of its round-off."""
    el, eta, Rs, Rc = t["neighbors"][0], t["eta"], t["Rs"], t["Rc"]
    return sum(r * math.exp(-eta * (r - Rs) ** 2) * fc(r, Rc) for e, _, r in nbrs if e == el)


def a1(nbrs, t):
    V = v1(nbrs, t)
    delta = t.get("delta", 0.0)
    # V is numerically zero when it is round-off relative to its summed contributions
    if delta == 0.0 and np.linalg.norm(V) <= 1e-10 * v1_scale(nbrs, t):
        return np.zeros(3)
    return V / math.sqrt(float(np.dot(V, V)) + delta ** 2)


def vector_condition(nbrs, t):
    """Condition number of a V1/A1 term: how much round-off in V1 is amplified.

    V1 itself has absolute error ~ eps * scale; A1 = V1 / |V1| has error ~ eps * scale / |V1|.
    """
    if t["kind"] == "V1":
        return max(1.0, v1_scale(nbrs, t))
    V = v1(nbrs, t)
    norm = math.sqrt(float(np.dot(V, V)) + t.get("delta", 0.0) ** 2)
    return max(1.0, v1_scale(nbrs, t) / norm) if norm > 0.0 else 1.0


TERM_FUNCTIONS = {"G1": g1, "G2": g2, "G3": g3, "G4": g4, "G5": g5, "V1": v1, "A1": a1}


# ----------------------------------------------------------------------------- driver
def reference_fingerprints(atoms, centers, conditions=False):
    """Return (G, A, index), dicts keyed by center element symbol.

    With conditions=True also return K[el] (n_el, nA): the condition number of each vector
    term (see vector_condition), so a comparison can scale its tolerance to it.
    """
    symbols = atoms.get_chemical_symbols()
    rc_max = max(t["Rc"] for terms in centers.values() for t in terms)
    I, J, S, D, d = brute_force_neighbors(atoms.positions, atoms.cell.array, atoms.pbc, rc_max)

    G, A, index, K = {}, {}, {}, {}
    for el, terms in centers.items():
        for t in terms:
            if t["kind"] not in TERM_FUNCTIONS:
                raise ValueError(f"unknown term kind {t['kind']!r}")
        inv_terms = [t for t in terms if t["kind"] in INVARIANT_KINDS]
        vec_terms = [t for t in terms if t["kind"] in VECTOR_KINDS]
        idx = np.array([a for a, s in enumerate(symbols) if s == el], dtype=np.int64)
        index[el] = idx
        G[el] = np.zeros((len(idx), len(inv_terms)))
        A[el] = np.zeros((len(idx), len(vec_terms), 3))
        K[el] = np.ones((len(idx), len(vec_terms)))
        for row, i in enumerate(idx):
            sel = np.nonzero(I == i)[0]
            nbrs = [(symbols[J[m]], D[m], float(d[m])) for m in sel]
            for col, t in enumerate(inv_terms):
                G[el][row, col] = TERM_FUNCTIONS[t["kind"]](nbrs, t)
            for col, t in enumerate(vec_terms):
                A[el][row, col] = TERM_FUNCTIONS[t["kind"]](nbrs, t)
                K[el][row, col] = vector_condition(nbrs, t)
    return (G, A, index, K) if conditions else (G, A, index)


def finite_difference(fun, atoms, h=1e-5):
    """Central differences of array-valued fun(atoms) w.r.t. all positions.

    Returns an array of shape np.shape(fun(atoms)) + (n_atoms, 3).
    """
    f0 = np.asarray(fun(atoms), dtype=float)
    n = len(atoms)
    out = np.zeros(f0.shape + (n, 3))
    for a in range(n):
        for c in range(3):
            plus = atoms.copy()
            pos = plus.get_positions()
            pos[a, c] += h
            plus.set_positions(pos)
            minus = atoms.copy()
            pos = minus.get_positions()
            pos[a, c] -= h
            minus.set_positions(pos)
            diff = np.asarray(fun(plus), dtype=float) - np.asarray(fun(minus), dtype=float)
            out[..., a, c] = diff / (2.0 * h)
    return out
