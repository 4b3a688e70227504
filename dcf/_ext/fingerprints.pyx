"""Fingerprint kernels: G1..G5 invariants, V1/A1 covariant vectors, their derivatives,
and the fused B-P force contraction.

All work for one central atom happens in `_center`; central atoms run in parallel
(OpenMP) since each writes only its own rows and its own block of neighbor entries.
Formulas (Angstrom; D = r_j - r_i, r = |D|; fc(r) = 0.5 (cos(pi r / Rc) + 1) for r < Rc):
  G1 = sum fc(r_ij)            G2 = sum exp(-eta (r_ij - Rs)^2) fc(r_ij)
  G3 = sum cos(kappa r_ij) fc(r_ij)
  G4 = 2^(1-zeta) sum_{unordered pairs {j,k}} (1 + lambda cos theta)^zeta
       exp(-eta (r_ij^2 + r_ik^2 + r_jk^2)) fc(r_ij) fc(r_ik) fc(r_jk)
  G5 = G4 without the r_jk factors
  V1 = sum D_ij exp(-eta (r_ij - Rs)^2) fc(r_ij)        A1 = V1 / sqrt(|V1|^2 + delta^2)
Derivatives are taken with respect to each neighbor vector D_n (the neighbor entry's
atom moves by +dD, the central atom by -dD).
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange, parallel
from libc.math cimport exp, cos, sin, sqrt, pow, M_PI
from libc.stdlib cimport malloc, free

cnp.import_array()

DEF MODE_VALUES = 0
DEF MODE_DERIVATIVES = 1
DEF MODE_FORCES = 2


cdef struct Terms:
    int n_species, n_rc, n_fac, nG, nA
    const double* rc            # (n_rc,) distinct cutoffs
    # radial terms, sorted by neighbor species: rad_start (n_species + 1)
    const int* rad_start
    const int* rad_kind         # 1, 2, 3 for G1, G2, G3
    const int* rad_rc
    const double* rad_eta
    const double* rad_rs
    const double* rad_kappa
    const int* rad_col
    # radial factors exp(-eta r^2) fc(r) of the angular groups, distinct (Rc, eta)
    const int* fac_rc
    const double* fac_eta
    # angular groups (kind, Rc, eta) per unordered species pair: pair_start (n_species^2 + 1)
    const int* pair_start
    const double* pair_rc2      # per species pair: r_jk^2 bound for triplets (inf with G5)
    const int* grp_kind         # 4 or 5
    const int* grp_rc
    const int* grp_fac
    const double* grp_eta
    const int* grp_start        # terms of group g: grp_start[g]:grp_start[g+1]
    const double* ang_zeta
    const double* ang_lambda
    const double* ang_coef      # 2^(1 - zeta)
    const int* ang_izeta        # zeta as an integer, or -1
    const int* ang_col
    # vector terms, sorted by neighbor species: vec_start (n_species + 1)
    const int* vec_start
    const int* vec_rc
    const double* vec_eta
    const double* vec_rs
    const double* vec_delta
    const int* vec_norm         # 1 for A1, 0 for V1
    const int* vec_col


cdef class CompiledTerms:
    """The terms of one central element as flat arrays (built by dcf.fingerprints)."""
    cdef Terms t
    cdef object keep
    cdef public int nG, nA
    cdef public double max_rc

    def __init__(self, dict a, int n_species, int nG, int nA):
        self.keep = {k: np.ascontiguousarray(v, dtype=np.float64 if np.asarray(v).dtype.kind == "f"
                                             else np.intc) for k, v in a.items()}
        self.nG = nG
        self.nA = nA
        self.max_rc = float(np.max(a["rc"]))
        self.t.n_species = n_species
        self.t.n_rc = len(a["rc"])
        self.t.n_fac = len(a["fac_rc"])
        self.t.nG = nG
        self.t.nA = nA
        self.t.rc = self._d("rc")
        self.t.rad_start = self._i("rad_start")
        self.t.rad_kind = self._i("rad_kind")
        self.t.rad_rc = self._i("rad_rc")
        self.t.rad_eta = self._d("rad_eta")
        self.t.rad_rs = self._d("rad_rs")
        self.t.rad_kappa = self._d("rad_kappa")
        self.t.rad_col = self._i("rad_col")
        self.t.fac_rc = self._i("fac_rc")
        self.t.fac_eta = self._d("fac_eta")
        self.t.pair_start = self._i("pair_start")
        self.t.pair_rc2 = self._d("pair_rc2")
        self.t.grp_kind = self._i("grp_kind")
        self.t.grp_rc = self._i("grp_rc")
        self.t.grp_fac = self._i("grp_fac")
        self.t.grp_eta = self._d("grp_eta")
        self.t.grp_start = self._i("grp_start")
        self.t.ang_zeta = self._d("ang_zeta")
        self.t.ang_lambda = self._d("ang_lambda")
        self.t.ang_coef = self._d("ang_coef")
        self.t.ang_izeta = self._i("ang_izeta")
        self.t.ang_col = self._i("ang_col")
        self.t.vec_start = self._i("vec_start")
        self.t.vec_rc = self._i("vec_rc")
        self.t.vec_eta = self._d("vec_eta")
        self.t.vec_rs = self._d("vec_rs")
        self.t.vec_delta = self._d("vec_delta")
        self.t.vec_norm = self._i("vec_norm")
        self.t.vec_col = self._i("vec_col")

    cdef const double* _d(self, str key):
        cdef cnp.ndarray arr = self.keep[key]
        return <const double*>cnp.PyArray_DATA(arr)

    cdef const int* _i(self, str key):
        cdef cnp.ndarray arr = self.keep[key]
        return <const int*>cnp.PyArray_DATA(arr)


cdef inline double _ipow(double x, int n) noexcept nogil:
    cdef double r = 1.0
    while n > 0:
        if n & 1:
            r *= x
        x *= x
        n >>= 1
    return r


cdef inline void _cutoff(double r, double rc, double* fc, double* dfc) noexcept nogil:
    cdef double x
    if r < rc:
        x = M_PI * r / rc
        fc[0] = 0.5 * (cos(x) + 1.0)
        dfc[0] = -0.5 * M_PI / rc * sin(x)
    else:
        fc[0] = 0.0
        dfc[0] = 0.0


cdef inline void _cutoff_sq(double s, double rc, double* fc, double* dfc_ds) noexcept nogil:
    """fc and dfc/ds as functions of s = r^2 (r < rc), with no sqrt and no cos:
    fc = cos^2(sqrt(y)), y = pi^2 s / (4 rc^2), from the Taylor series of cos(sqrt(y)) and
    sin(sqrt(y))/sqrt(y) to y^10 (error below 1e-16 on 0 <= y <= pi^2/4), evaluated by
    Estrin's scheme for a short dependency chain."""
    cdef double k = M_PI * M_PI / (4.0 * rc * rc)
    cdef double y = k * s
    cdef double y2 = y * y
    cdef double y4 = y2 * y2
    cdef double y8 = y4 * y4
    cdef double c = ((((1.0 + -0.5 * y) + y2 * (0.041666666666666664 + -0.001388888888888889 * y)) + y4 * ((2.48015873015873e-05 + -2.755731922398589e-07 * y) + y2 * (2.08767569878681e-09 + -1.1470745597729725e-11 * y))) + y8 * ((4.779477332387385e-14 + -1.5619206968586225e-16 * y) + y2 * 4.110317623312165e-19))
    fc[0] = c * c
    if dfc_ds != NULL:
        dfc_ds[0] = -c * k * ((((1.0 + -0.16666666666666666 * y) + y2 * (0.008333333333333333 + -0.0001984126984126984 * y)) + y4 * ((2.7557319223985893e-06 + -2.505210838544172e-08 * y) + y2 * (1.6059043836821613e-10 + -7.647163731819816e-13 * y))) + y8 * ((2.8114572543455206e-15 + -8.22063524662433e-18 * y) + y2 * 1.9572941063391263e-20))


cdef inline int _partners(int n1, int lo, int hi, const double* r, const double* D,
                          double rc2, int* partner, double* pdot, double* prjk2) noexcept nogil:
    """Entries n2 in [lo, hi) with r_jk^2 < rc2 (branch-free), with D1.D2 and r_jk^2."""
    cdef int n2, cnt = 0
    cdef double x1 = D[3 * n1], y1 = D[3 * n1 + 1], z1 = D[3 * n1 + 2]
    cdef double r1s = r[n1] * r[n1], dot, sjk
    for n2 in range(lo, hi):
        dot = x1 * D[3 * n2] + y1 * D[3 * n2 + 1] + z1 * D[3 * n2 + 2]
        sjk = r1s + r[n2] * r[n2] - 2.0 * dot
        partner[cnt] = n2
        pdot[cnt] = dot
        prjk2[cnt] = sjk
        cnt = cnt + (sjk < rc2)
    return cnt


cdef void _angular_values(const Terms* t, int nblock, const int* bstart, const int* sp,
                          const double* r, const double* ir, const double* D, const double* P,
                          int* partner, double* pdot, double* prjk2, double* G) noexcept nogil:
    """G4/G5 values only (no derivatives): the hot loop of DCF inference."""
    cdef const int* pair_start = t.pair_start
    cdef const double* pair_rc2 = t.pair_rc2
    cdef const int* grp_kind = t.grp_kind
    cdef const int* grp_fac = t.grp_fac
    cdef const int* grp_rc = t.grp_rc
    cdef const double* grp_eta = t.grp_eta
    cdef const int* grp_start = t.grp_start
    cdef const double* lam = t.ang_lambda
    cdef const double* zeta = t.ang_zeta
    cdef const double* coef = t.ang_coef
    cdef const int* izeta = t.ang_izeta
    cdef const int* col = t.ang_col
    cdef const double* rc = t.rc
    cdef int n_fac = t.n_fac, ns = t.n_species
    cdef int b1, b2, key, g, q, cnt, c, tt, t0, t1, kind, n1, n2
    cdef double ir1, rc2, rcg, rcg2, eta, P1, P2, sjk, fjk, base, cs, xa, pz
    for b1 in range(nblock):
        for b2 in range(b1, nblock):
            key = sp[bstart[b1]] * ns + sp[bstart[b2]]
            if pair_start[key] == pair_start[key + 1]:
                continue
            rc2 = pair_rc2[key]
            for n1 in range(bstart[b1], bstart[b1 + 1]):
                ir1 = ir[n1]
                cnt = _partners(n1, n1 + 1 if b1 == b2 else bstart[b2], bstart[b2 + 1], r, D,
                                rc2, partner, pdot, prjk2)
                for g in range(pair_start[key], pair_start[key + 1]):
                    q = grp_fac[g]
                    P1 = P[n1 * n_fac + q]
                    if P1 == 0.0:
                        continue
                    kind = grp_kind[g]
                    rcg = rc[grp_rc[g]]
                    rcg2 = rcg * rcg
                    eta = grp_eta[g]
                    t0 = grp_start[g]
                    t1 = grp_start[g + 1]
                    for c in range(cnt):
                        n2 = partner[c]
                        P2 = P[n2 * n_fac + q]
                        if P2 == 0.0:
                            continue
                        base = P1 * P2
                        if kind == 4:
                            sjk = prjk2[c]
                            if sjk >= rcg2:
                                continue
                            _cutoff_sq(sjk, rcg, &fjk, NULL)
                            base = base * exp(-eta * sjk) * fjk
                        cs = pdot[c] * ir1 * ir[n2]
                        for tt in range(t0, t1):
                            xa = 1.0 + lam[tt] * cs
                            if xa <= 0.0:
                                continue
                            if izeta[tt] >= 0:
                                pz = _ipow(xa, izeta[tt])
                            else:
                                pz = pow(xa, zeta[tt])
                            G[col[tt]] += coef[tt] * pz * base


cdef void _angular_gradients(const Terms* t, bint forces, int nblock, const int* bstart,
                             const int* sp, const double* r, const double* ir, const double* D,
                             const double* P, const double* dP, int* partner, double* pdot,
                             double* prjk2, double* G, double* dG, const double* w,
                             double* gp) noexcept nogil:
    """G4/G5 values with derivatives: dG (m, nG, 3) blocks, or, with `forces`, the
    contraction gp (m, 3) += sum_a w_a dG_a/dD_n."""
    cdef const int* pair_start = t.pair_start
    cdef const double* pair_rc2 = t.pair_rc2
    cdef const int* grp_kind = t.grp_kind
    cdef const int* grp_fac = t.grp_fac
    cdef const int* grp_rc = t.grp_rc
    cdef const double* grp_eta = t.grp_eta
    cdef const int* grp_start = t.grp_start
    cdef const double* lam = t.ang_lambda
    cdef const double* zeta = t.ang_zeta
    cdef const double* coef = t.ang_coef
    cdef const int* izeta = t.ang_izeta
    cdef const int* col = t.ang_col
    cdef const double* rc = t.rc
    cdef int n_fac = t.n_fac, ns = t.n_species, nG = t.nG
    cdef int b1, b2, key, g, q, cnt, c, tt, t0, t1, kind, n1, n2, k
    cdef double ir1, rc2, rcg, rcg2, eta, P1, dP1, P2, dP2, sjk
    cdef double fjk, dfjk, ex, Q, dQ, base, cs, xa, pz, pzm1, alpha, beta, asum, bsum, ir2, a
    cdef double u1[3]
    cdef double u2[3]
    cdef double w1[3]
    cdef double w2[3]
    for b1 in range(nblock):
        for b2 in range(b1, nblock):
            key = sp[bstart[b1]] * ns + sp[bstart[b2]]
            if pair_start[key] == pair_start[key + 1]:
                continue
            rc2 = pair_rc2[key]
            for n1 in range(bstart[b1], bstart[b1 + 1]):
                ir1 = ir[n1]
                cnt = _partners(n1, n1 + 1 if b1 == b2 else bstart[b2], bstart[b2 + 1], r, D,
                                rc2, partner, pdot, prjk2)
                for g in range(pair_start[key], pair_start[key + 1]):
                    q = grp_fac[g]
                    P1 = P[n1 * n_fac + q]
                    dP1 = dP[n1 * n_fac + q]
                    if P1 == 0.0 and dP1 == 0.0:
                        continue
                    kind = grp_kind[g]
                    rcg = rc[grp_rc[g]]
                    rcg2 = rcg * rcg
                    eta = grp_eta[g]
                    t0 = grp_start[g]
                    t1 = grp_start[g + 1]
                    for c in range(cnt):
                        n2 = partner[c]
                        P2 = P[n2 * n_fac + q]
                        dP2 = dP[n2 * n_fac + q]
                        if P2 == 0.0 and dP2 == 0.0:
                            continue
                        Q = 1.0
                        dQ = 0.0
                        if kind == 4:
                            sjk = prjk2[c]
                            if sjk >= rcg2:
                                continue
                            _cutoff_sq(sjk, rcg, &fjk, &dfjk)
                            ex = exp(-eta * sjk)
                            Q = ex * fjk
                            dQ = ex * (dfjk - eta * fjk)     # dQ / d(r_jk^2)
                        ir2 = ir[n2]
                        cs = pdot[c] * ir1 * ir2
                        base = P1 * P2 * Q
                        # d cos / dD1 = D2/(r1 r2) - cos D1/r1^2 (and 1 <-> 2);
                        # d r_jk^2 / dD2 = -d r_jk^2 / dD1 = 2 (D2 - D1)
                        for k in range(3):
                            u1[k] = base * (D[3 * n2 + k] * ir1 * ir2 - cs * D[3 * n1 + k] * ir1 * ir1)
                            u2[k] = base * (D[3 * n1 + k] * ir1 * ir2 - cs * D[3 * n2 + k] * ir2 * ir2)
                            a = 2.0 * P1 * P2 * dQ * (D[3 * n2 + k] - D[3 * n1 + k])
                            w1[k] = dP1 * P2 * Q * D[3 * n1 + k] * ir1 - a
                            w2[k] = P1 * dP2 * Q * D[3 * n2 + k] * ir2 + a
                        asum = 0.0
                        bsum = 0.0
                        for tt in range(t0, t1):
                            xa = 1.0 + lam[tt] * cs
                            if xa < 0.0:
                                xa = 0.0
                            if izeta[tt] >= 0:
                                pzm1 = _ipow(xa, izeta[tt] - 1)
                            elif xa > 0.0:
                                pzm1 = pow(xa, zeta[tt] - 1.0)
                            else:
                                pzm1 = 0.0
                            pz = pzm1 * xa
                            G[col[tt]] += coef[tt] * pz * base
                            alpha = coef[tt] * zeta[tt] * lam[tt] * pzm1
                            beta = coef[tt] * pz
                            if forces:
                                asum += w[col[tt]] * alpha
                                bsum += w[col[tt]] * beta
                            else:
                                for k in range(3):
                                    dG[(n1 * nG + col[tt]) * 3 + k] += alpha * u1[k] + beta * w1[k]
                                    dG[(n2 * nG + col[tt]) * 3 + k] += alpha * u2[k] + beta * w2[k]
                        if forces:
                            for k in range(3):
                                gp[3 * n1 + k] += asum * u1[k] + bsum * w1[k]
                                gp[3 * n2 + k] += asum * u2[k] + bsum * w2[k]


cdef void _center(const Terms* t, int mode, Py_ssize_t m, const Py_ssize_t* entry,
                  const Py_ssize_t* nl_j, const double* nl_D, const double* nl_d,
                  const int* species, double* G, double* A, double* dG, double* dA,
                  const double* w, double* gp, double* buf, int* sp) noexcept nogil:
    """Fingerprints of one central atom with `m` neighbor entries `entry[0:m]`.

    G (nG,), A (nA, 3) are its output rows; in MODE_DERIVATIVES dG (m, nG, 3) and
    dA (m, nA, 3, 3) its zeroed derivative blocks; in MODE_FORCES w (nG,) is dE/dG and
    gp (m, 3) receives dE/dD_n.
    """
    cdef int nG = t.nG, nA = t.nA, n_rc = t.n_rc, n_fac = t.n_fac, ns = t.n_species
    cdef double* r = buf
    cdef double* D = r + m
    cdef double* fc = D + 3 * m
    cdef double* dfc = fc + m * n_rc
    cdef double* P = dfc + m * n_rc
    cdef double* dP = P + m * n_fac
    cdef double* V = dP + m * n_fac
    cdef double* J = V + 3 * nA
    cdef double* pdot = J + 9 * nA
    cdef double* prjk2 = pdot + m
    cdef double* ir = prjk2 + m
    cdef int* partner = sp + m
    cdef int* bstart = partner + m
    cdef int nblock
    cdef Py_ssize_t n, e
    cdef int k, a, b, c, q, tt, col
    cdef double x, ex, f, df, v, dv, coef, den, vv
    cdef double M[9]
    cdef bint derivs = mode == MODE_DERIVATIVES
    cdef bint forces = mode == MODE_FORCES

    for n in range(m):
        e = entry[n]
        r[n] = nl_d[e]
        ir[n] = 1.0 / r[n]
        for k in range(3):
            D[3 * n + k] = nl_D[3 * e + k]
        sp[n] = species[nl_j[e]]
        for q in range(n_rc):
            _cutoff(r[n], t.rc[q], &fc[n * n_rc + q], &dfc[n * n_rc + q])
        for q in range(n_fac):
            f = fc[n * n_rc + t.fac_rc[q]]
            df = dfc[n * n_rc + t.fac_rc[q]]
            if f != 0.0 or df != 0.0:
                ex = exp(-t.fac_eta[q] * r[n] * r[n])
                P[n * n_fac + q] = ex * f
                dP[n * n_fac + q] = ex * (df - 2.0 * t.fac_eta[q] * r[n] * f)
            else:
                P[n * n_fac + q] = 0.0
                dP[n * n_fac + q] = 0.0

    # ---- radial terms G1, G2, G3
    for n in range(m):
        for tt in range(t.rad_start[sp[n]], t.rad_start[sp[n] + 1]):
            q = t.rad_rc[tt]
            if r[n] >= t.rc[q]:
                continue
            f = fc[n * n_rc + q]
            df = dfc[n * n_rc + q]
            if t.rad_kind[tt] == 1:
                v = f
                dv = df
            elif t.rad_kind[tt] == 2:
                x = r[n] - t.rad_rs[tt]
                ex = exp(-t.rad_eta[tt] * x * x)
                v = ex * f
                dv = ex * (df - 2.0 * t.rad_eta[tt] * x * f)
            else:
                x = cos(t.rad_kappa[tt] * r[n])
                v = x * f
                dv = x * df - t.rad_kappa[tt] * sin(t.rad_kappa[tt] * r[n]) * f
            col = t.rad_col[tt]
            G[col] += v
            if derivs:
                for k in range(3):
                    dG[(n * nG + col) * 3 + k] += dv * D[3 * n + k] / r[n]
            elif forces:
                coef = w[col] * dv / r[n]
                for k in range(3):
                    gp[3 * n + k] += coef * D[3 * n + k]

    # ---- angular terms G4, G5 over unordered pairs of neighbor entries.
    # Entries come sorted by species, so each pair of species blocks has one group list;
    # a branch-free first pass keeps the partners within the block pair's r_jk bound.
    nblock = 0
    for n in range(m):
        if n == 0 or sp[n] != sp[n - 1]:
            bstart[nblock] = n
            nblock += 1
    bstart[nblock] = m
    if derivs or forces:
        _angular_gradients(t, forces, nblock, bstart, sp, r, ir, D, P, dP, partner, pdot, prjk2,
                           G, dG, w, gp)
    else:
        _angular_values(t, nblock, bstart, sp, r, ir, D, P, partner, pdot, prjk2, G)

    if forces or nA == 0:
        return

    # ---- covariant vectors V1, A1
    for a in range(3 * nA):
        V[a] = 0.0
    for a in range(nA):
        J[9 * a] = 0.0      # J[9a] holds sum |D| g: the scale of V's round-off
    for n in range(m):
        for tt in range(t.vec_start[sp[n]], t.vec_start[sp[n] + 1]):
            q = t.vec_rc[tt]
            if r[n] >= t.rc[q]:
                continue
            x = r[n] - t.vec_rs[tt]
            v = exp(-t.vec_eta[tt] * x * x) * fc[n * n_rc + q]
            col = t.vec_col[tt]
            for k in range(3):
                V[3 * col + k] += v * D[3 * n + k]
            J[9 * col] += v * r[n]
    for tt in range(nA):
        col = t.vec_col[tt]
        vv = V[3 * col] ** 2 + V[3 * col + 1] ** 2 + V[3 * col + 2] ** 2
        den = sqrt(vv + t.vec_delta[tt] ** 2)
        if t.vec_delta[tt] == 0.0 and sqrt(vv) <= 1e-10 * J[9 * col]:
            den = 0.0       # V vanishes (by symmetry) up to round-off: A1 = 0
        for a in range(3):
            for b in range(3):
                if not t.vec_norm[tt]:
                    J[9 * col + 3 * a + b] = 1.0 if a == b else 0.0
                elif den > 0.0:     # dA/dV = (I - V V^T / den^2) / den
                    J[9 * col + 3 * a + b] = ((1.0 if a == b else 0.0)
                                              - V[3 * col + a] * V[3 * col + b] / (den * den)) / den
                else:
                    J[9 * col + 3 * a + b] = 0.0
            if not t.vec_norm[tt]:
                A[3 * col + a] = V[3 * col + a]
            elif den > 0.0:
                A[3 * col + a] = V[3 * col + a] / den
            else:
                A[3 * col + a] = 0.0
    if not derivs:
        return
    for n in range(m):
        for tt in range(t.vec_start[sp[n]], t.vec_start[sp[n] + 1]):
            q = t.vec_rc[tt]
            if r[n] >= t.rc[q]:
                continue
            x = r[n] - t.vec_rs[tt]
            ex = exp(-t.vec_eta[tt] * x * x)
            v = ex * fc[n * n_rc + q]
            dv = ex * (dfc[n * n_rc + q] - 2.0 * t.vec_eta[tt] * x * fc[n * n_rc + q])
            # dV/dD_n = v I + (dv / r) D D^T
            for a in range(3):
                for b in range(3):
                    M[3 * a + b] = dv / r[n] * D[3 * n + a] * D[3 * n + b]
                M[4 * a] += v
            col = t.vec_col[tt]
            for a in range(3):
                for b in range(3):
                    x = 0.0
                    for c in range(3):
                        x = x + J[9 * col + 3 * a + c] * M[3 * c + b]
                    dA[((n * nA + col) * 3 + a) * 3 + b] += x


def select_entries(const Py_ssize_t[::1] first, const double[::1] d, const Py_ssize_t[::1] nl_j,
                   const int[::1] species, int n_species,
                   const Py_ssize_t[::1] centers, double cutoff):
    """Neighbor entries of `centers` closer than `cutoff`, each center's sorted by the
    neighbor's species (stable): (pfirst (n_c + 1,), entry (p,))."""
    cdef Py_ssize_t nc = centers.shape[0], c, e, p = 0
    cdef int s
    pfirst_np = np.zeros(nc + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] pfirst = pfirst_np
    for c in range(nc):
        for e in range(first[centers[c]], first[centers[c] + 1]):
            if d[e] < cutoff:
                p += 1
        pfirst[c + 1] = p
    entry_np = np.empty(p, dtype=np.intp)
    cdef Py_ssize_t[::1] entry = entry_np
    p = 0
    for c in range(nc):
        for s in range(n_species):
            for e in range(first[centers[c]], first[centers[c] + 1]):
                if d[e] < cutoff and species[nl_j[e]] == s:
                    entry[p] = e
                    p += 1
    return pfirst_np, entry_np


cdef inline double* _ptr(double[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


def compute(CompiledTerms terms, int mode, const Py_ssize_t[::1] pfirst,
            const Py_ssize_t[::1] entry, const Py_ssize_t[::1] nl_j, const double[:, ::1] nl_D,
            const double[::1] nl_d, const int[::1] species,
            double[::1] G, double[::1] A, double[::1] dG, double[::1] dA,
            const double[::1] weights, double[::1] gpair, int num_threads=1):
    """Run `_center` over the centers described by (pfirst, entry).

    Flat, C-ordered, zero-initialized outputs: G (n_c*nG), A (n_c*nA*3); MODE_DERIVATIVES:
    dG (p*nG*3), dA (p*nA*9); MODE_FORCES: weights (n_c*nG) = dE/dG in, gpair (p*3) out.
    """
    cdef Py_ssize_t nc = pfirst.shape[0] - 1, c, m, mmax = 0
    for c in range(nc):
        mmax = max(mmax, pfirst[c + 1] - pfirst[c])
    cdef Py_ssize_t nbuf = (mmax * (7 + 2 * terms.t.n_rc + 2 * terms.t.n_fac)
                            + 12 * terms.t.nA + 1)
    cdef int nG = terms.t.nG, nA = terms.t.nA
    cdef const Terms* t = &terms.t
    cdef double* buf
    cdef int* sp
    cdef double* pG = _ptr(G)
    cdef double* pA = _ptr(A)
    cdef double* pdG = _ptr(dG)
    cdef double* pdA = _ptr(dA)
    cdef double* pgp = _ptr(gpair)
    cdef const double* pw = &weights[0] if weights.shape[0] > 0 else NULL
    cdef const Py_ssize_t* pentry = &entry[0] if entry.shape[0] > 0 else NULL
    cdef const Py_ssize_t* pj = &nl_j[0] if nl_j.shape[0] > 0 else NULL
    cdef const double* pD = &nl_D[0, 0] if nl_D.shape[0] > 0 else NULL
    cdef const double* pd = &nl_d[0] if nl_d.shape[0] > 0 else NULL
    cdef Py_ssize_t p0
    cdef int failed[1]
    failed[0] = 0
    with nogil, parallel(num_threads=num_threads):
        buf = <double*>malloc(nbuf * sizeof(double))
        sp = <int*>malloc((3 * mmax + 2) * sizeof(int))
        if buf == NULL or sp == NULL:
            failed[0] = 1     # an element write: shared, not thread-private
        for c in prange(nc, schedule="dynamic", chunksize=4):
            if buf == NULL or sp == NULL:
                continue
            p0 = pfirst[c]
            m = pfirst[c + 1] - p0
            _center(t, mode, m, pentry + p0, pj, pD, pd, &species[0],
                    pG + c * nG if pG != NULL else NULL,
                    pA + c * nA * 3 if pA != NULL else NULL,
                    pdG + p0 * nG * 3 if mode == MODE_DERIVATIVES else NULL,
                    pdA + p0 * nA * 9 if (mode == MODE_DERIVATIVES and nA > 0) else NULL,
                    pw + c * nG if mode == MODE_FORCES else NULL,
                    pgp + p0 * 3 if mode == MODE_FORCES else NULL,
                    buf, sp)
        free(buf)
        free(sp)
    if failed[0]:
        raise MemoryError(f"fingerprints: cannot allocate scratch for {mmax} neighbors per atom")


def scatter_forces(const Py_ssize_t[::1] centers, const Py_ssize_t[::1] pfirst,
                   const Py_ssize_t[::1] entry, const Py_ssize_t[::1] nl_j,
                   const double[:, ::1] nl_D, const double[:, ::1] gpair,
                   double[:, ::1] forces, double[:, ::1] virial):
    """Add -dE/dr to `forces` (n_atoms, 3) and -dE/d(strain) to `virial` (3, 3) from the
    per-entry gradients gpair = dE/dD_n (p, 3)."""
    cdef Py_ssize_t nc = centers.shape[0], c, p, e, i, j
    cdef int a, b
    with nogil:
        for c in range(nc):
            i = centers[c]
            for p in range(pfirst[c], pfirst[c + 1]):
                e = entry[p]
                j = nl_j[e]
                for a in range(3):
                    forces[i, a] += gpair[p, a]
                    forces[j, a] -= gpair[p, a]
                    for b in range(3):
                        virial[a, b] -= gpair[p, a] * nl_D[e, b]
