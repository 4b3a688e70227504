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

In G4, exp(-eta r_ij^2) fc(r_ij) is a per-entry factor P_i, and Q(s) = exp(-eta s) fc(sqrt s)
of s = r_jk^2 is a polynomial fitted once per (Rc, eta) to ~1e-15
(dcf.descriptors.pair_factor; exp() and a cutoff series where eta Rc^2 is too large for that).
The term arrays are declared in terms.pxd, the scratch regions in scratch.pxd; README.md
in this folder says what each file does. The triplet loops run
over arrays of partners, so that gcc vectorizes them (SSE2, two terms as lanes).
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange, parallel
from libc.math cimport exp, cos, sin, sqrt, pow, M_PI
from libc.stdlib cimport malloc, free
from libc.stdint cimport uint64_t

from dcf._ext.terms cimport (Terms, MODE_VALUES, MODE_DERIVATIVES, MODE_FORCES, KIND_G1,
                             KIND_G2, KIND_G3, KIND_G4, KIND_G5, NPOLY, NPOW2)
from dcf._ext.scratch cimport (DCF_LANES, Scratch, scratch_layout, N_REGIONS, N_INT_REGIONS,
                               S_R, S_D, S_FC, S_DFC, S_P, S_DP, S_V, S_J, S_PCS, S_PRJK2,
                               S_IR, S_Q, S_DQ, S_TW, S_SP, S_PARTNER, S_BSTART,
                               N_GRADIENT_VIEWS, G_BASE, G_U1, G_U2, G_W1, G_W2, G_ASUM,
                               G_BSUM, G_P1, G_P, G_COLUMNS, G_DG, N_VALUE_VIEWS, V_COLUMNS,
                               V_LANES)

cnp.import_array()

cdef extern from *:
    # pointers that alias no other argument: lets gcc vectorize loops over several arrays
    ctypedef const double* cdouble_r "const double * CYTHON_RESTRICT"

cdef extern from "vec.h":
    double _hsum_at "dcf_hsum_at"(const double* p) noexcept nogil
    double _poly11 "dcf_poly11"(const double* c, double x) noexcept nogil
    double _poly15 "dcf_poly15"(const double* c, double x) noexcept nogil
    const double* COS_SQRT_SERIES "dcf_cos_sqrt_series"
    const double* SINC_SQRT_SERIES "dcf_sinc_sqrt_series"

cdef extern from *:
    """
    #if defined(__AVX2__)
    #define DCF_AVX2 1
    #else
    #define DCF_AVX2 0
    #endif
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    #define DCF_CPU_HAS(feature) (__builtin_cpu_init(), __builtin_cpu_supports(feature))
    #else
    #define DCF_CPU_HAS(feature) 0
    #endif
    static int dcf_cpu_has_avx2_fma(void)
    {
        return DCF_CPU_HAS("avx2") && DCF_CPU_HAS("fma");
    }
    static int dcf_cpu_has_avx512f(void)
    {
        return dcf_cpu_has_avx2_fma() && DCF_CPU_HAS("avx512f");
    }
    """
    const int DCF_AVX2      # 1 in the builds for AVX2 (fingerprints_avx2, fingerprints_avx512)
    int dcf_cpu_has_avx2_fma() noexcept nogil
    int dcf_cpu_has_avx512f() noexcept nogil

cdef extern from "radial.h":
    void _cutoff_column "dcf_cutoff_column"(long n, const double* S, double rc,
                                            double* out) noexcept nogil
    void _gaussian_column "dcf_gaussian_column"(long n, const double* S, const double* FC,
                                                double eta, double* out) noexcept nogil
    double _gaussian_sum "dcf_gaussian_sum"(long n, const double* R, const double* FC,
                                            double eta, double rs) noexcept nogil
    void _vector_sum "dcf_vector_sum"(long n, const double* R, const double* X,
                                      const double* Y, const double* Z, const double* FC,
                                      double eta, double rs, double* out) noexcept nogil

cdef extern from "triplets.h":
    void _triplet_pairs "dcf_triplet_pairs"(
        long a0, long a1, long b0, long b1, int same, const double* W, long mp, int q,
        const double* pc, int deg, double sc, double rc2, int need, double* acc) noexcept nogil

cdef extern from "triplet_gradients.h":
    void _gradient_pairs "dcf_gradient_pairs"(
        long a0, long a1, long b0, long b1, int same, const double* W, long mp,
        const double* P, const double* DP, const double* pc, const double* pd, int deg,
        double sc, double rc2, int need, const double* wa, const double* wb, double* GX,
        const double* coef, const double* kzl, double** G, double** DG) noexcept nogil

# the constants for Python: dcf.descriptors.fingerprints reads them from here
MODES = {"values": MODE_VALUES, "derivatives": MODE_DERIVATIVES, "forces": MODE_FORCES}
KINDS = {"G1": KIND_G1, "G2": KIND_G2, "G3": KIND_G3, "G4": KIND_G4, "G5": KIND_G5}
POLY_SIZE = NPOLY
FUSED_MAX_LOG2_ZETA = NPOW2


cdef class CompiledTerms:
    """The terms of one central element bound to the kernels' `Terms` (terms.pxd).

    arrays: one array per pointer field of Terms, by its name (built by
    dcf.descriptors.fingerprints); they are copied to float64 or C int as the field is, and
    kept alive here. n_species, nG, nA: the counts the arrays do not give."""
    cdef Terms t
    cdef dict keep
    cdef object _arrays     # the arrays given, while they are bound
    cdef public int nG, nA
    cdef public double max_rc

    def __init__(self, dict arrays, int n_species, int nG, int nA):
        self.keep = {}
        self._arrays = arrays
        self.nG = nG
        self.nA = nA
        self.t.n_species = n_species
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
        self.t.grp_poly = self._i("grp_poly")
        self.t.grp_pc = self._d("grp_pc")
        self.t.grp_pd = self._d("grp_pd")
        self.t.grp_fused = self._i("grp_fused")
        self.t.ang_zeta = self._d("ang_zeta")
        self.t.ang_lambda = self._d("ang_lambda")
        self.t.ang_coef = self._d("ang_coef")
        self.t.ang_kzl = self._d("ang_kzl")
        self.t.ang_izeta = self._i("ang_izeta")
        self.t.ang_mate = self._i("ang_mate")
        self.t.ang_slot = self._i("ang_slot")
        self.t.ang_col = self._i("ang_col")
        self.t.vec_start = self._i("vec_start")
        self.t.vec_rc = self._i("vec_rc")
        self.t.vec_eta = self._d("vec_eta")
        self.t.vec_rs = self._d("vec_rs")
        self.t.vec_delta = self._d("vec_delta")
        self.t.vec_norm = self._i("vec_norm")
        self.t.vec_col = self._i("vec_col")
        extra = set(arrays) - set(self.keep)
        if extra:
            raise ValueError(f"CompiledTerms: no Terms field for arrays {sorted(extra)}")
        self._arrays = None
        self.t.n_rc = len(self.keep["rc"])
        self.t.n_fac = len(self.keep["fac_rc"])
        self.t.n_grp = len(self.keep["grp_kind"])
        self.t.n_ang = len(self.keep["ang_col"])
        self.max_rc = float(np.max(self.keep["rc"]))

    cdef object _keep(self, str name, dtype):
        if name not in self._arrays:
            raise ValueError(f"CompiledTerms: array {name!r} missing")
        arr = np.ascontiguousarray(self._arrays[name], dtype=dtype).reshape(-1)
        self.keep[name] = arr
        return arr

    cdef const double* _d(self, str name):
        cdef cnp.ndarray arr = self._keep(name, np.float64)
        return <const double*>cnp.PyArray_DATA(arr)

    cdef const int* _i(self, str name):
        cdef cnp.ndarray arr = self._keep(name, np.intc)
        return <const int*>cnp.PyArray_DATA(arr)

    def scratch(self, Py_ssize_t m):
        """The scratch layout (scratch.pxd) of a central atom with m entries in this build:
        {region name: ("double" or "int", start, length)}, the views of region "tw"
        {"tw.NAME": ("tw-gradients" or "tw-values", start within tw, length)}, the totals
        "size" (doubles), "isize" (ints) and the values columns' "stride"."""
        cdef Scratch s = scratch_layout(&self.t, m, 0)
        cdef int k
        out = {SCRATCH_REGIONS[k]: ("double", s.start[k], s.length[k]) for k in range(N_REGIONS)}
        out.update({SCRATCH_REGIONS[N_REGIONS + k]: ("int", s.istart[k], s.ilength[k])
                    for k in range(N_INT_REGIONS)})
        out.update({f"tw.{name}": ("tw-gradients", s.gstart[k], s.glength[k])
                    for k, name in enumerate(SCRATCH_VIEWS["gradients"])})
        out.update({f"tw.{name}": ("tw-values", s.vstart[k], s.vlength[k])
                    for k, name in enumerate(SCRATCH_VIEWS["values"])})
        out["size"], out["isize"], out["stride"] = s.size, s.isize, s.stride
        return out


cdef inline double _ipow(double x, int n) noexcept nogil:
    cdef double r = 1.0
    while n > 0:
        if n & 1:
            r *= x
        x *= x
        n >>= 1
    return r


cdef inline double _expneg(double a) noexcept nogil:
    """exp(-a), flushed to 0 below the normal range (libm's underflow path is slow)."""
    return exp(-a) if a < 708.0 else 0.0


cdef inline void _cutoff_sq(double s, double rc, double* fc, double* dfc_ds) noexcept nogil:
    """fc and dfc/ds as functions of s = r^2 (r < rc), with no sqrt and no cos:
    fc = cos^2(sqrt(y)), y = pi^2 s / (4 rc^2), from the Taylor series of cos(sqrt(y)) and
    sin(sqrt(y))/sqrt(y) to y^10 (error below 1e-16 on 0 <= y <= pi^2/4, vec.h), evaluated
    by Estrin's scheme for a short dependency chain."""
    cdef double k = M_PI * M_PI / (4.0 * rc * rc)
    cdef double y = k * s
    cdef double c = _poly11(COS_SQRT_SERIES, y)
    fc[0] = c * c
    if dfc_ds != NULL:
        dfc_ds[0] = -c * k * _poly11(SINC_SQRT_SERIES, y)


cdef inline void _cutoff(double r, double rc, double* fc, double* dfc) noexcept nogil:
    """fc(r) and dfc/dr, from `_cutoff_sq` (no cos, no sin)."""
    cdef double dfds
    if r < rc:
        _cutoff_sq(r * r, rc, fc, &dfds)
        dfc[0] = 2.0 * r * dfds
    else:
        fc[0] = 0.0
        dfc[0] = 0.0


cdef inline double _sq(double x) noexcept nogil:
    return x * x


cdef inline double _pos(double x) noexcept nogil:
    return x if x > 0.0 else 0.0


cdef inline double _zpow(double x, int iz, double zeta) noexcept nogil:
    """x^zeta for x >= 0; iz is zeta as an integer, or -1."""
    if iz > 0:
        return _ipow(x, iz)
    return pow(x, zeta) if x > 0.0 else 0.0


cdef inline double _zpow1(double x, int iz, double zeta) noexcept nogil:
    """x^(zeta - 1) for x >= 0."""
    if iz > 0:
        return _ipow(x, iz - 1)
    return pow(x, zeta - 1.0) if x > 0.0 else 0.0


cdef inline int _partners(int n1, int lo, int hi, const double* r, const double* ir,
                          const double* D, double rc2, int* partner, double* pcs,
                          double* prjk2) noexcept nogil:
    """Entries n2 in [lo, hi) with r_jk^2 < rc2 (branch-free), with cos theta (within
    [-1, 1], so that 1 + lambda cos >= 0 for |lambda| <= 1) and r_jk^2."""
    cdef int n2, cnt = 0
    cdef double x1 = D[3 * n1], y1 = D[3 * n1 + 1], z1 = D[3 * n1 + 2]
    cdef double r1s = r[n1] * r[n1], ir1 = ir[n1], dot, sjk, cs
    for n2 in range(lo, hi):
        dot = x1 * D[3 * n2] + y1 * D[3 * n2 + 1] + z1 * D[3 * n2 + 2]
        sjk = r1s + r[n2] * r[n2] - 2.0 * dot
        cs = dot * ir1 * ir[n2]
        partner[cnt] = n2
        pcs[cnt] = -1.0 if cs < -1.0 else (1.0 if cs > 1.0 else cs)
        prjk2[cnt] = sjk
        cnt = cnt + (sjk < rc2)
    return cnt


cdef void _pair_factors(const Terms* t, int g, double rc2, int cnt, const double* prjk2,
                        double* Q, double* dQ) noexcept nogil:
    """Q = exp(-eta r_jk^2) fc(r_jk) of group g (1 for G5) per partner and, unless dQ is
    NULL, dQ/d(r_jk^2). The partners have r_jk^2 < rc2."""
    cdef int c, deg = t.grp_poly[g]
    cdef double rcg = t.rc[t.grp_rc[g]]
    cdef double rcg2 = rcg * rcg, sc = 2.0 / (rcg * rcg), eta = t.grp_eta[g]
    cdef const double* pc = t.grp_pc + NPOLY * g
    cdef const double* pd = t.grp_pd + NPOLY * g
    cdef double s, f, df, ex
    if t.grp_kind[g] == KIND_G5:
        for c in range(cnt):
            Q[c] = 1.0
        if dQ != NULL:
            for c in range(cnt):
                dQ[c] = 0.0
        return
    # the polynomials on [0, rc^2], as straight loops that gcc vectorizes
    if deg == 11:
        for c in range(cnt):
            Q[c] = _poly11(pc, prjk2[c] * sc - 1.0)
        if dQ != NULL:
            for c in range(cnt):
                dQ[c] = _poly11(pd, prjk2[c] * sc - 1.0)
    elif deg == 15:
        for c in range(cnt):
            Q[c] = _poly15(pc, prjk2[c] * sc - 1.0)
        if dQ != NULL:
            for c in range(cnt):
                dQ[c] = _poly15(pd, prjk2[c] * sc - 1.0)
    if deg == 0 or rcg2 < rc2:
        for c in range(cnt):
            s = prjk2[c]
            if s >= rcg2:
                Q[c] = 0.0
                if dQ != NULL:
                    dQ[c] = 0.0
            elif deg == 0:
                _cutoff_sq(s, rcg, &f, &df)
                ex = exp(-eta * s)
                Q[c] = ex * f
                if dQ != NULL:
                    dQ[c] = ex * (df - eta * f)


cdef double _angsum(int cnt, const double* B, const double* cs, double lam, int iz,
                    double zeta) noexcept nogil:
    """sum_c B_c max(1 + lam cs_c, 0)^zeta, in two partial sums."""
    cdef double s0 = 0.0, s1 = 0.0
    cdef int c
    for c in range(0, cnt - 1, 2):
        s0 += B[c] * _zpow(_pos(1.0 + lam * cs[c]), iz, zeta)
        s1 += B[c + 1] * _zpow(_pos(1.0 + lam * cs[c + 1]), iz, zeta)
    if cnt & 1:
        s0 += B[cnt - 1] * _zpow(_pos(1.0 + lam * cs[cnt - 1]), iz, zeta)
    return s0 + s1


cdef void _angsum2(Py_ssize_t cnt, cdouble_r B, cdouble_r cs, double la, double lb, int iz,
                   double* sa, double* sb) noexcept nogil:
    """sum_c B_c (1 + la cs_c)^iz and sum_c B_c (1 + lb cs_c)^iz for |la|, |lb| <= 1 and
    |cs| <= 1, iz >= 1: four partial sums of each, as the lanes of vectorized loops."""
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0, b0 = 0.0, b1 = 0.0, b2 = 0.0, b3 = 0.0
    cdef Py_ssize_t c, n4 = cnt - cnt % 4
    if iz == 1:
        for c in range(0, n4, 4):
            a0 = a0 + B[c] * (1.0 + la * cs[c])
            a1 = a1 + B[c + 1] * (1.0 + la * cs[c + 1])
            a2 = a2 + B[c + 2] * (1.0 + la * cs[c + 2])
            a3 = a3 + B[c + 3] * (1.0 + la * cs[c + 3])
            b0 = b0 + B[c] * (1.0 + lb * cs[c])
            b1 = b1 + B[c + 1] * (1.0 + lb * cs[c + 1])
            b2 = b2 + B[c + 2] * (1.0 + lb * cs[c + 2])
            b3 = b3 + B[c + 3] * (1.0 + lb * cs[c + 3])
    elif iz == 4:
        for c in range(0, n4, 4):
            a0 = a0 + B[c] * _sq(_sq(1.0 + la * cs[c]))
            a1 = a1 + B[c + 1] * _sq(_sq(1.0 + la * cs[c + 1]))
            a2 = a2 + B[c + 2] * _sq(_sq(1.0 + la * cs[c + 2]))
            a3 = a3 + B[c + 3] * _sq(_sq(1.0 + la * cs[c + 3]))
            b0 = b0 + B[c] * _sq(_sq(1.0 + lb * cs[c]))
            b1 = b1 + B[c + 1] * _sq(_sq(1.0 + lb * cs[c + 1]))
            b2 = b2 + B[c + 2] * _sq(_sq(1.0 + lb * cs[c + 2]))
            b3 = b3 + B[c + 3] * _sq(_sq(1.0 + lb * cs[c + 3]))
    else:
        n4 = 0
    for c in range(n4, cnt):
        a0 = a0 + B[c] * _ipow(1.0 + la * cs[c], iz)
        b0 = b0 + B[c] * _ipow(1.0 + lb * cs[c], iz)
    sa[0] = (a0 + a1) + (a2 + a3)
    sb[0] = (b0 + b1) + (b2 + b3)


cdef void _angular_values(const Terms* t, int nblock, const int* bstart, const int* sp,
                          const double* r, const double* ir, const double* D, const double* P,
                          Py_ssize_t mp, const double* W, double* acc, int* partner,
                          double* pcs, double* prjk2, double* B, double* G) noexcept nogil:
    """G4/G5 values only (no derivatives): the hot loop of DCF inference.

    In the AVX2 and AVX-512 builds, groups whose terms all have lambda = +-1 and
    zeta = 1, 2, 4, ... (`grp_fused`) run in `triplet_pairs` (triplets.h), one call per pair
    of species blocks, with the sums kept in lanes acc (n_grp, 10 lanes) until the end. W
    holds its columns, of stride mp (entries, then zeros): x, y, z, r^2, 1/r and the radial
    factors P_q. Other groups keep the partners within r_jk < Rc first (about half in a
    dense system) and sum term by term: with SSE2's two lanes, skipping the other half pays
    more than wider vectors."""
    cdef const int* pair_start = t.pair_start
    cdef const int* grp_fac = t.grp_fac
    cdef const int* grp_start = t.grp_start
    cdef int n_fac = t.n_fac, ns = t.n_species
    cdef int b1, b2, key, g, q, cnt, c, tt, n1, mt, lo, hi, l
    cdef double P1, sa, sb, rcg
    cdef bint have_partners, have_slow
    cdef int nacc = 10 * DCF_LANES
    for g in range(t.n_grp):
        for c in range(nacc):
            acc[nacc * g + c] = 0.0
    for b1 in range(nblock):
        for b2 in range(b1, nblock):
            key = sp[bstart[b1]] * ns + sp[bstart[b2]]
            have_slow = False
            for g in range(pair_start[key], pair_start[key + 1]):
                if DCF_AVX2 and t.grp_fused[g]:
                    rcg = t.rc[t.grp_rc[g]]
                    _triplet_pairs(bstart[b1], bstart[b1 + 1], bstart[b2], bstart[b2 + 1],
                                   b1 == b2, W, mp, grp_fac[g], t.grp_pc + NPOLY * g,
                                   t.grp_poly[g] if t.grp_kind[g] == KIND_G4 else 0,
                                   2.0 / (rcg * rcg), rcg * rcg, t.grp_fused[g], acc + nacc * g)
                else:
                    have_slow = True
            if not have_slow:
                continue
            hi = bstart[b2 + 1]
            for n1 in range(bstart[b1], bstart[b1 + 1]):
                lo = n1 + 1 if b1 == b2 else bstart[b2]
                if lo >= hi:
                    continue
                have_partners = False
                for g in range(pair_start[key], pair_start[key + 1]):
                    if DCF_AVX2 and t.grp_fused[g]:
                        continue
                    q = grp_fac[g]
                    P1 = P[n1 * n_fac + q]
                    if P1 == 0.0:
                        continue
                    if not have_partners:
                        cnt = _partners(n1, lo, hi, r, ir, D, t.pair_rc2[key], partner, pcs,
                                        prjk2)
                        have_partners = True
                    _pair_factors(t, g, t.pair_rc2[key], cnt, prjk2, B, NULL)
                    for c in range(cnt):
                        B[c] = B[c] * P[partner[c] * n_fac + q]
                    for tt in range(grp_start[g], grp_start[g + 1]):
                        mt = t.ang_mate[tt]
                        if mt >= 0:
                            _angsum2(cnt, B, pcs, t.ang_lambda[tt], t.ang_lambda[mt],
                                     t.ang_izeta[tt], &sa, &sb)
                            G[t.ang_col[tt]] += t.ang_coef[tt] * P1 * sa
                            G[t.ang_col[mt]] += t.ang_coef[mt] * P1 * sb
                        elif mt == -1:
                            G[t.ang_col[tt]] += t.ang_coef[tt] * P1 * _angsum(
                                cnt, B, pcs, t.ang_lambda[tt], t.ang_izeta[tt], t.ang_zeta[tt])
    for g in range(t.n_grp):
        if DCF_AVX2 and t.grp_fused[g]:
            for tt in range(grp_start[g], grp_start[g + 1]):
                G[t.ang_col[tt]] += t.ang_coef[tt] * _hsum_at(
                    acc + nacc * g + DCF_LANES * t.ang_slot[tt])


cdef void _powers2(int cnt, const double* cs, double la, double lb, int iz, double zeta,
                   double* p1, double* p) noexcept nogil:
    """p1[2c + i] = x^(zeta - 1) and p[2c + i] = x^zeta for x = max(1 + lambda_i cs_c, 0),
    lambda_0 = la, lambda_1 = lb (|cs| <= 1): two terms as the lanes of one loop."""
    cdef double xa, xb, qa, qb
    cdef Py_ssize_t c
    cdef int j, k = 0
    cdef bint unit = -1.0 <= la <= 1.0 and -1.0 <= lb <= 1.0     # then x >= 0 unclamped
    if unit and iz == 1:
        for c in range(cnt):
            p1[2 * c] = 1.0
            p1[2 * c + 1] = 1.0
            p[2 * c] = 1.0 + la * cs[c]
            p[2 * c + 1] = 1.0 + lb * cs[c]
    elif unit and iz == 4:
        for c in range(cnt):
            xa = 1.0 + la * cs[c]
            xb = 1.0 + lb * cs[c]
            p1[2 * c] = xa * xa * xa
            p1[2 * c + 1] = xb * xb * xb
            p[2 * c] = (xa * xa) * (xa * xa)
            p[2 * c + 1] = (xb * xb) * (xb * xb)
    elif unit and iz > 1 and (iz & (iz - 1)) == 0:
        while (1 << k) < iz:
            k += 1
        for c in range(cnt):
            xa = 1.0 + la * cs[c]
            xb = 1.0 + lb * cs[c]
            qa = 1.0
            qb = 1.0
            for j in range(k):
                qa = qa * xa
                qb = qb * xb
                xa = xa * xa
                xb = xb * xb
            p1[2 * c] = qa
            p1[2 * c + 1] = qb
            p[2 * c] = xa
            p[2 * c + 1] = xb
    else:
        for c in range(cnt):
            xa = _pos(1.0 + la * cs[c])
            xb = _pos(1.0 + lb * cs[c])
            p1[2 * c] = _zpow1(xa, iz, zeta)
            p1[2 * c + 1] = _zpow1(xb, iz, zeta)
            p[2 * c] = p1[2 * c] * xa
            p[2 * c + 1] = p1[2 * c + 1] * xb


cdef void _angular_gradients(const Terms* t, bint forces, int nblock, const int* bstart,
                             const int* sp, const double* r, const double* ir, const double* D,
                             const double* P, const double* dP, int* partner, double* pcs,
                             double* prjk2, double* Q, double* dQ, double* tw,
                             const Scratch* lay, double* G, double* dG, const double* w,
                             double* gp) noexcept nogil:
    """G4/G5 values with derivatives: dG (m, nG, 3) blocks, or, with `forces`, the
    contraction gp (m, 3) += sum_a w_a dG_a/dD_n. tw: the work region, in the G_* views
    of `lay`.

    Per (n1, group) and partner n2, with base = P1 P2 Q, x = 1 + lambda cos:
      dG_a/dD1 = coef (zeta lambda x^(zeta-1) u1 + x^zeta w1), u1 = base d cos/dD1,
      w1 = d(P1 P2 Q)/dD1 (and 1 <-> 2). The terms run two at a time where they share an
    integer zeta (`ang_mate`), as the lanes of vectorizable loops over the partners, from
    tables of their powers of x. With `forces` the terms first sum into
    asum = sum_a w_a coef zeta lambda x^(zeta-1), bsum = sum_a w_a coef x^zeta;
    otherwise u and w of both ends are stored once per group, for all its terms.

    In the AVX2 and AVX-512 builds the groups of the values pass's fused loop (`grp_fused`)
    run instead in `gradient_pairs` (triplet_gradients.h), one call per pair of species
    blocks, on columns of the entries (G_COLUMNS) whose gradient sums (GX, GY, GZ, or G_DG per
    feature) are added to gp or dG at the end.
    """
    cdef const int* pair_start = t.pair_start
    cdef const int* grp_fac = t.grp_fac
    cdef const int* grp_start = t.grp_start
    cdef const double* coef = t.ang_coef
    cdef const double* kzl = t.ang_kzl
    cdef const int* col = t.ang_col
    cdef int n_fac = t.n_fac, ns = t.n_species, nG = t.nG
    cdef int b1, b2, key, g, q, cnt, tt, mt, n1, n2, k, ca, cb
    cdef Py_ssize_t c, m = bstart[nblock]      # wide: no wrapping (-fwrapv) for the vectorizer
    cdef double ir1, ir2, P1, dP1, P2, Qc, cs, h, h1, h2, a, f1, f2
    cdef double kza, kzb, cfa, cfb, aa, ab, ba, bb, ga, gb, x1, x2, c11, c12, c22
    cdef double s0a, s1a, s2a, s0b, s1b, s2b
    cdef double* base = tw + lay.gstart[G_BASE]
    cdef double* u1 = tw + lay.gstart[G_U1]         # u1[k * m + c]
    cdef double* u2 = tw + lay.gstart[G_U2]
    cdef double* w1 = tw + lay.gstart[G_W1]
    cdef double* w2 = tw + lay.gstart[G_W2]
    cdef double* asum = tw + lay.gstart[G_ASUM]
    cdef double* bsum = tw + lay.gstart[G_BSUM]
    cdef double* p1 = tw + lay.gstart[G_P1]         # p1[2c + i] = x_i^(zeta-1),
    cdef double* p = tw + lay.gstart[G_P]           # p[2c + i] = x_i^zeta
    cdef double* d1
    cdef double* d2
    cdef Py_ssize_t mp = lay.stride
    cdef double* W = tw + lay.gstart[G_COLUMNS]
    cdef double* GX = W + (5 + 2 * n_fac) * mp
    cdef double* DG = tw + lay.gstart[G_DG]
    cdef double wa[10]          # per slot (triplet_gradients.h), force pass: the sums of
    cdef double wb[10]          # w coef zeta lambda and w coef; derivative pass: coef
    cdef double* gs_at[10]      # zeta lambda, coef; and where the slot's G and dG go
    cdef double* dg_at[10]
    cdef double spare_G
    cdef bint fused = False, have_slow
    cdef int deg
    cdef double rcg
    if DCF_AVX2:
        for g in range(t.n_grp):
            fused = fused or t.grp_fused[g] != 0
    if fused:
        _gradient_columns(t, forces, m, mp, r, ir, D, P, dP, W, DG)
    for b1 in range(nblock):
        for b2 in range(b1, nblock):
            key = sp[bstart[b1]] * ns + sp[bstart[b2]]
            if pair_start[key] == pair_start[key + 1]:
                continue
            have_slow = False
            for g in range(pair_start[key], pair_start[key + 1]):
                if not (fused and t.grp_fused[g]):
                    have_slow = True
                    continue
                for k in range(10):
                    wa[k] = 0.0
                    wb[k] = 0.0
                    gs_at[k] = &spare_G
                    dg_at[k] = DG + 3 * nG * mp      # the spare columns
                for tt in range(grp_start[g], grp_start[g + 1]):
                    k = t.ang_slot[tt]
                    if forces:
                        wa[k] += w[col[tt]] * kzl[tt]
                        wb[k] += w[col[tt]] * coef[tt]
                    else:
                        wa[k] = kzl[tt]
                        wb[k] = coef[tt]
                        gs_at[k] = &G[col[tt]]
                        dg_at[k] = DG + 3 * col[tt] * mp
                q = grp_fac[g]
                rcg = t.rc[t.grp_rc[g]]
                deg = t.grp_poly[g] if t.grp_kind[g] == KIND_G4 else 0
                _gradient_pairs(bstart[b1], bstart[b1 + 1], bstart[b2], bstart[b2 + 1],
                                b1 == b2, W, mp, W + (5 + q) * mp, W + (5 + n_fac + q) * mp,
                                t.grp_pc + NPOLY * g, t.grp_pd + NPOLY * g, deg,
                                2.0 / (rcg * rcg), rcg * rcg, t.grp_fused[g], wa, wb, GX,
                                wb, wa, gs_at, NULL if forces else dg_at)
            if not have_slow:
                continue
            for n1 in range(bstart[b1], bstart[b1 + 1]):
                ir1 = ir[n1]
                cnt = _partners(n1, n1 + 1 if b1 == b2 else bstart[b2], bstart[b2 + 1], r, ir,
                                D, t.pair_rc2[key], partner, pcs, prjk2)
                for g in range(pair_start[key], pair_start[key + 1]):
                    if fused and t.grp_fused[g]:
                        continue
                    q = grp_fac[g]
                    P1 = P[n1 * n_fac + q]
                    dP1 = dP[n1 * n_fac + q]
                    if P1 == 0.0 and dP1 == 0.0:
                        continue
                    _pair_factors(t, g, t.pair_rc2[key], cnt, prjk2, Q, dQ)
                    if forces:
                        for c in range(cnt):
                            base[c] = P1 * P[partner[c] * n_fac + q] * Q[c]
                            asum[c] = 0.0
                            bsum[c] = 0.0
                    else:
                        # d cos / dD1 = D2/(r1 r2) - cos D1/r1^2 (and 1 <-> 2);
                        # d r_jk^2 / dD2 = -d r_jk^2 / dD1 = 2 (D2 - D1)
                        for c in range(cnt):
                            n2 = partner[c]
                            ir2 = ir[n2]
                            P2 = P[n2 * n_fac + q]
                            Qc = Q[c]
                            cs = pcs[c]
                            base[c] = P1 * P2 * Qc
                            h = base[c] * ir1 * ir2
                            h1 = base[c] * cs * ir1 * ir1
                            h2 = base[c] * cs * ir2 * ir2
                            a = 2.0 * P1 * P2 * dQ[c]
                            f1 = dP1 * P2 * Qc * ir1
                            f2 = P1 * dP[n2 * n_fac + q] * Qc * ir2
                            for k in range(3):
                                x1 = D[3 * n1 + k]
                                x2 = D[3 * n2 + k]
                                u1[k * m + c] = h * x2 - h1 * x1
                                u2[k * m + c] = h * x1 - h2 * x2
                                w1[k * m + c] = f1 * x1 - a * (x2 - x1)
                                w2[k * m + c] = f2 * x2 + a * (x2 - x1)
                    for tt in range(grp_start[g], grp_start[g + 1]):
                        mt = t.ang_mate[tt]
                        if mt == -2:
                            continue
                        kza = kzl[tt]
                        cfa = coef[tt]
                        if mt >= 0:
                            kzb = kzl[mt]
                            cfb = coef[mt]
                            _powers2(cnt, pcs, t.ang_lambda[tt], t.ang_lambda[mt],
                                     t.ang_izeta[tt], t.ang_zeta[tt], p1, p)
                        else:       # a term alone: lane 1 repeats it with weight 0
                            mt = tt
                            kzb = 0.0
                            cfb = 0.0
                            _powers2(cnt, pcs, t.ang_lambda[tt], t.ang_lambda[tt],
                                     t.ang_izeta[tt], t.ang_zeta[tt], p1, p)
                        ga = 0.0
                        gb = 0.0
                        if forces:
                            aa = w[col[tt]] * kza
                            ab = w[col[mt]] * kzb
                            ba = w[col[tt]] * cfa
                            bb = w[col[mt]] * cfb
                            for c in range(cnt):
                                ga = ga + p[2 * c] * base[c]
                                gb = gb + p[2 * c + 1] * base[c]
                                asum[c] += aa * p1[2 * c] + ab * p1[2 * c + 1]
                                bsum[c] += ba * p[2 * c] + bb * p[2 * c + 1]
                        else:
                            s0a = s1a = s2a = s0b = s1b = s2b = 0.0
                            ca = 3 * col[tt]
                            cb = 3 * col[mt]
                            for c in range(cnt):
                                aa = kza * p1[2 * c]
                                ab = kzb * p1[2 * c + 1]
                                ba = cfa * p[2 * c]
                                bb = cfb * p[2 * c + 1]
                                ga = ga + p[2 * c] * base[c]
                                gb = gb + p[2 * c + 1] * base[c]
                                s0a = s0a + (aa * u1[c] + ba * w1[c])
                                s0b = s0b + (ab * u1[c] + bb * w1[c])
                                s1a = s1a + (aa * u1[m + c] + ba * w1[m + c])
                                s1b = s1b + (ab * u1[m + c] + bb * w1[m + c])
                                s2a = s2a + (aa * u1[2 * m + c] + ba * w1[2 * m + c])
                                s2b = s2b + (ab * u1[2 * m + c] + bb * w1[2 * m + c])
                                d2 = dG + partner[c] * nG * 3
                                d2[ca] += aa * u2[c] + ba * w2[c]
                                d2[ca + 1] += aa * u2[m + c] + ba * w2[m + c]
                                d2[ca + 2] += aa * u2[2 * m + c] + ba * w2[2 * m + c]
                                d2[cb] += ab * u2[c] + bb * w2[c]
                                d2[cb + 1] += ab * u2[m + c] + bb * w2[m + c]
                                d2[cb + 2] += ab * u2[2 * m + c] + bb * w2[2 * m + c]
                            d1 = dG + n1 * nG * 3
                            d1[ca] += s0a
                            d1[ca + 1] += s1a
                            d1[ca + 2] += s2a
                            d1[cb] += s0b
                            d1[cb + 1] += s1b
                            d1[cb + 2] += s2b
                        G[col[tt]] += cfa * ga
                        G[col[mt]] += cfb * gb
                    if forces:
                        # gp1 += asum u1 + bsum w1 = c12 D2 + c11 D1,
                        # gp2 += asum u2 + bsum w2 = c12 D1 + c22 D2
                        s0a = s1a = s2a = s0b = 0.0
                        for c in range(cnt):
                            n2 = partner[c]
                            ir2 = ir[n2]
                            P2 = P[n2 * n_fac + q]
                            Qc = Q[c]
                            aa = asum[c]
                            ba = bsum[c]
                            h = aa * base[c] * pcs[c]
                            a = ba * 2.0 * P1 * P2 * dQ[c]
                            c12 = aa * base[c] * ir1 * ir2 - a
                            c11 = ba * dP1 * P2 * Qc * ir1 + a - h * ir1 * ir1
                            c22 = ba * P1 * dP[n2 * n_fac + q] * Qc * ir2 + a - h * ir2 * ir2
                            s0b += c11
                            s0a += c12 * D[3 * n2]
                            s1a += c12 * D[3 * n2 + 1]
                            s2a += c12 * D[3 * n2 + 2]
                            gp[3 * n2] += c12 * D[3 * n1] + c22 * D[3 * n2]
                            gp[3 * n2 + 1] += c12 * D[3 * n1 + 1] + c22 * D[3 * n2 + 1]
                            gp[3 * n2 + 2] += c12 * D[3 * n1 + 2] + c22 * D[3 * n2 + 2]
                        s0a += s0b * D[3 * n1]
                        s1a += s0b * D[3 * n1 + 1]
                        s2a += s0b * D[3 * n1 + 2]
                        gp[3 * n1] += s0a
                        gp[3 * n1 + 1] += s1a
                        gp[3 * n1 + 2] += s2a
    if fused:
        _add_gradient_columns(t, forces, m, mp, GX, DG, gp, dG)


cdef void _gradient_columns(const Terms* t, bint forces, Py_ssize_t m, Py_ssize_t mp,
                            const double* r, const double* ir, const double* D,
                            const double* P, const double* dP, double* W,
                            double* DG) noexcept nogil:
    """The G_COLUMNS of triplet_gradients.h from the entries (zero past m, so that every
    lane is finite), with zero sums: GX, GY, GZ (force pass) or, in G_DG, the columns of the
    fused groups' features (derivative pass)."""
    cdef int n_fac = t.n_fac, q, k, g, tt
    cdef Py_ssize_t n
    for k in range(8 + 2 * n_fac):
        for n in range(m, mp):
            W[k * mp + n] = 0.0
    for n in range(m):
        for k in range(3):
            W[k * mp + n] = D[3 * n + k]
        W[3 * mp + n] = r[n] * r[n]
        W[4 * mp + n] = ir[n]
    for q in range(n_fac):
        for n in range(m):
            W[(5 + q) * mp + n] = P[n * n_fac + q]
            W[(5 + n_fac + q) * mp + n] = dP[n * n_fac + q]
    if forces:
        for n in range(3 * mp):
            W[(5 + 2 * n_fac) * mp + n] = 0.0
        return
    for n in range(3 * mp):
        DG[3 * t.nG * mp + n] = 0.0
    for g in range(t.n_grp):
        if t.grp_fused[g]:
            for tt in range(t.grp_start[g], t.grp_start[g + 1]):
                for n in range(3 * mp):
                    DG[3 * t.ang_col[tt] * mp + n] = 0.0


cdef void _add_gradient_columns(const Terms* t, bint forces, Py_ssize_t m, Py_ssize_t mp,
                                const double* GX, const double* DG, double* gp,
                                double* dG) noexcept nogil:
    """gp (m, 3) += GX, GY, GZ (force pass), or dG (m, nG, 3) += the fused groups' G_DG."""
    cdef int nG = t.nG, k, g, tt, col
    cdef Py_ssize_t n
    if forces:
        for n in range(m):
            for k in range(3):
                gp[3 * n + k] += GX[k * mp + n]
        return
    for g in range(t.n_grp):
        if t.grp_fused[g]:
            for tt in range(t.grp_start[g], t.grp_start[g + 1]):
                col = t.ang_col[tt]
                for n in range(m):
                    for k in range(3):
                        dG[(n * nG + col) * 3 + k] += DG[(3 * col + k) * mp + n]


cdef inline double _vector_weight(const Terms* t, int tt, double r, double fc, double dfc,
                                  double* dv) noexcept nogil:
    """g = exp(-eta (r - Rs)^2) fc of vector term tt, and dv = dg/dr given dfc = dfc/dr."""
    cdef double x = r - t.vec_rs[tt]
    cdef double ex = _expneg(t.vec_eta[tt] * x * x)
    dv[0] = ex * (dfc - 2.0 * t.vec_eta[tt] * x * fc)
    return ex * fc


cdef void _values(const Terms* t, Py_ssize_t m, int nblock, const int* bstart, const int* sp,
                  const double* r, const double* ir, const double* D, double* P, double* work,
                  const Scratch* lay, int* partner, double* pcs, double* prjk2, double* Q,
                  double* G, double* V, double* J) noexcept nogil:
    """Fingerprint values of one central atom (no derivatives), column by column in the
    vector loops of radial.h and triplets.h: G, and the sums V (nA, 3) of V1 and J[9 a] =
    sum |D| g of the covariant vectors. P (m, n_fac) receives the radial factors. work, the
    work region, holds the V_* views of `lay`: the columns x, y, z, r^2, 1/r, P_q (n_fac), r,
    fc_q (n_rc) of stride mp, then the lanes of `_angular_values`. Past the m entries, x,
    y, z, r^2, 1/r and r are 0, so fc and P there are 1: finite, and every loop masks the
    lanes past its entries."""
    cdef Py_ssize_t mp = lay.stride, n
    cdef int n_fac = t.n_fac, n_rc = t.n_rc, ncol = 6 + t.n_fac + t.n_rc
    cdef int c, k, q, b, s, tt, col, lo, cnt
    cdef double* acc = work + lay.vstart[V_LANES]
    cdef double* tw = work + lay.vstart[V_COLUMNS]
    cdef double* R2 = tw + 3 * mp
    cdef double* PT = tw + 5 * mp
    cdef double* R = PT + n_fac * mp
    cdef double* FC = R + mp
    cdef double sums[4]
    for c in range(ncol):
        for n in range(m, mp):
            tw[c * mp + n] = 0.0
    for n in range(m):
        for k in range(3):
            tw[k * mp + n] = D[3 * n + k]
        R2[n] = r[n] * r[n]
        tw[4 * mp + n] = ir[n]
        R[n] = r[n]
    for q in range(n_rc):
        _cutoff_column(m, R2, t.rc[q], FC + q * mp)
    for q in range(n_fac):
        _gaussian_column(m, R2, FC + t.fac_rc[q] * mp, t.fac_eta[q], PT + q * mp)
        for n in range(m):
            P[n * n_fac + q] = PT[q * mp + n]
    for c in range(3 * t.nA):
        V[c] = 0.0
    for c in range(t.nA):
        J[9 * c] = 0.0      # J[9a] holds sum |D| g: the scale of V's round-off
    for b in range(nblock):
        s = sp[bstart[b]]
        lo = bstart[b]
        cnt = bstart[b + 1] - lo
        for tt in range(t.rad_start[s], t.rad_start[s + 1]):
            q = t.rad_rc[tt]
            col = t.rad_col[tt]
            if t.rad_kind[tt] == KIND_G2:
                G[col] += _gaussian_sum(cnt, R + lo, FC + q * mp + lo, t.rad_eta[tt],
                                        t.rad_rs[tt])
            elif t.rad_kind[tt] == KIND_G1:
                for n in range(lo, lo + cnt):
                    G[col] += FC[q * mp + n]
            else:
                for n in range(lo, lo + cnt):
                    G[col] += cos(t.rad_kappa[tt] * r[n]) * FC[q * mp + n]
        for tt in range(t.vec_start[s], t.vec_start[s + 1]):
            q = t.vec_rc[tt]
            col = t.vec_col[tt]
            sums[0] = sums[1] = sums[2] = sums[3] = 0.0
            _vector_sum(cnt, R + lo, tw + lo, tw + mp + lo, tw + 2 * mp + lo, FC + q * mp + lo,
                        t.vec_eta[tt], t.vec_rs[tt], sums)
            for k in range(3):
                V[3 * col + k] += sums[k]
            J[9 * col] += sums[3]
    _angular_values(t, nblock, bstart, sp, r, ir, D, P, mp, tw, acc, partner, pcs, prjk2, Q, G)


cdef void _center(const Terms* t, int mode, Py_ssize_t m, const Py_ssize_t* entry,
                  const Py_ssize_t* nl_j, const double* nl_D, const double* nl_d,
                  const int* species, double* G, double* A, double* dG, double* dA,
                  const double* w, double* gp, const Scratch* s, double* buf,
                  int* ibuf) noexcept nogil:
    """Fingerprints of one central atom with `m` neighbor entries `entry[0:m]`.

    G (nG,), A (nA, 3) are its output rows; in MODE_DERIVATIVES dG (m, nG, 3) and
    dA (m, nA, 3, 3) its zeroed derivative blocks; in MODE_FORCES w (nG,) is dE/dG and
    gp (m, 3) receives dE/dD_n. buf and ibuf are scratch laid out as s (scratch.pxd).
    """
    cdef int nG = t.nG, nA = t.nA, n_rc = t.n_rc, n_fac = t.n_fac, ns = t.n_species
    cdef double* r = buf + s.start[S_R]
    cdef double* D = buf + s.start[S_D]
    cdef double* fc = buf + s.start[S_FC]
    cdef double* dfc = buf + s.start[S_DFC]
    cdef double* P = buf + s.start[S_P]
    cdef double* dP = buf + s.start[S_DP]
    cdef double* V = buf + s.start[S_V]
    cdef double* J = buf + s.start[S_J]
    cdef double* pcs = buf + s.start[S_PCS]
    cdef double* prjk2 = buf + s.start[S_PRJK2]
    cdef double* ir = buf + s.start[S_IR]
    cdef double* Q = buf + s.start[S_Q]
    cdef double* dQ = buf + s.start[S_DQ]
    cdef double* tw = buf + s.start[S_TW]
    cdef int* sp = ibuf + s.istart[S_SP]
    cdef int* partner = ibuf + s.istart[S_PARTNER]
    cdef int* bstart = ibuf + s.istart[S_BSTART]
    cdef int nblock
    cdef Py_ssize_t n, e
    cdef int k, a, b, c, q, tt, col
    cdef double x, ex, f, df, v, dv, coef, den, vv
    cdef double M[9]
    cdef bint derivs = mode == MODE_DERIVATIVES
    cdef bint forces = mode == MODE_FORCES
    cdef bint values = mode == MODE_VALUES

    for n in range(m):
        e = entry[n]
        r[n] = nl_d[e]
        ir[n] = 1.0 / r[n]
        for k in range(3):
            D[3 * n + k] = nl_D[3 * e + k]
        sp[n] = species[nl_j[e]]
        if values:
            continue
        for q in range(n_rc):
            _cutoff(r[n], t.rc[q], &fc[n * n_rc + q], &dfc[n * n_rc + q])
        for q in range(n_fac):
            f = fc[n * n_rc + t.fac_rc[q]]
            df = dfc[n * n_rc + t.fac_rc[q]]
            if f != 0.0 or df != 0.0:
                ex = _expneg(t.fac_eta[q] * r[n] * r[n])
                P[n * n_fac + q] = ex * f
                dP[n * n_fac + q] = ex * (df - 2.0 * t.fac_eta[q] * r[n] * f)
            else:
                P[n * n_fac + q] = 0.0
                dP[n * n_fac + q] = 0.0
    # entries come sorted by species: blocks bstart[b]:bstart[b + 1]
    nblock = 0
    for n in range(m):
        if n == 0 or sp[n] != sp[n - 1]:
            bstart[nblock] = n
            nblock += 1
    bstart[nblock] = m
    if values:      # G and the sums V1, J[9 a] of the covariant vectors
        _values(t, m, nblock, bstart, sp, r, ir, D, P, tw, s, partner, pcs, prjk2, Q, G, V, J)
    else:
        # ---- radial terms G1, G2, G3
        for n in range(m):
            for tt in range(t.rad_start[sp[n]], t.rad_start[sp[n] + 1]):
                q = t.rad_rc[tt]
                if r[n] >= t.rc[q]:
                    continue
                f = fc[n * n_rc + q]
                df = dfc[n * n_rc + q]
                if t.rad_kind[tt] == KIND_G1:
                    v = f
                    dv = df
                elif t.rad_kind[tt] == KIND_G2:
                    x = r[n] - t.rad_rs[tt]
                    ex = _expneg(t.rad_eta[tt] * x * x)
                    v = ex * f
                    dv = ex * (df - 2.0 * t.rad_eta[tt] * x * f)
                else:
                    x = cos(t.rad_kappa[tt] * r[n])
                    v = x * f
                    dv = x * df - t.rad_kappa[tt] * sin(t.rad_kappa[tt] * r[n]) * f
                col = t.rad_col[tt]
                G[col] += v
                if derivs:
                    coef = dv * ir[n]
                    for k in range(3):
                        dG[(n * nG + col) * 3 + k] += coef * D[3 * n + k]
                elif forces:
                    coef = w[col] * dv * ir[n]
                    for k in range(3):
                        gp[3 * n + k] += coef * D[3 * n + k]

        # ---- angular terms G4, G5 over unordered pairs of neighbor entries.
        _angular_gradients(t, forces, nblock, bstart, sp, r, ir, D, P, dP, partner, pcs, prjk2,
                           Q, dQ, tw, s, G, dG, w, gp)

    if forces or nA == 0:
        return

    # ---- covariant vectors V1, A1
    if not values:
        for a in range(3 * nA):
            V[a] = 0.0
        for a in range(nA):
            J[9 * a] = 0.0      # J[9a] holds sum |D| g: the scale of V's round-off
        for n in range(m):
            for tt in range(t.vec_start[sp[n]], t.vec_start[sp[n] + 1]):
                q = t.vec_rc[tt]
                if r[n] >= t.rc[q]:
                    continue
                v = _vector_weight(t, tt, r[n], fc[n * n_rc + q], 0.0, &dv)
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
                    J[9 * col + 3 * a + b] = (
                        (1.0 if a == b else 0.0)
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
            v = _vector_weight(t, tt, r[n], fc[n * n_rc + q], dfc[n * n_rc + q], &dv)
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


def simd() -> str:
    """The instruction set this module was built for: "avx512", "avx2" or "portable"."""
    return "avx512" if DCF_LANES == 8 else "avx2" if DCF_AVX2 else "portable"


def poly(const double[::1] c, double x) -> float:
    """DCF_POLY11 (12 coefficients) or DCF_POLY15 (16) of vec.h at x, as the kernels evaluate
    the pair factor (dcf.descriptors.pair_factor mirrors it in numpy)."""
    if c.shape[0] == 12:
        return _poly11(&c[0], x)
    if c.shape[0] == NPOLY:
        return _poly15(&c[0], x)
    raise ValueError(f"poly: {c.shape[0]} coefficients, expected 12 or {NPOLY}")


def cpu_has_avx2_fma() -> bool:
    """Whether the CPU running this (and its OS) supports AVX2 and FMA."""
    return bool(dcf_cpu_has_avx2_fma())


def cpu_has_avx512f() -> bool:
    """Whether the CPU running this (and its OS) supports AVX-512F, AVX2 and FMA."""
    return bool(dcf_cpu_has_avx512f())


def select_entries(const Py_ssize_t[::1] first, const double[::1] d, const Py_ssize_t[::1] nl_j,
                   const int[::1] species, int n_species,
                   const Py_ssize_t[::1] centers, double cutoff):
    """Neighbor entries of `centers` closer than `cutoff`, each center's sorted by the
    neighbor's species (stable): (pfirst (n_c + 1,), entry (p,)).

    Branch-free (a counting sort whose entries beyond the cutoff go to a spare last slot):
    in MD about a third of the Verlet list's entries lie beyond the cutoff, in no pattern."""
    cdef Py_ssize_t nc = centers.shape[0], c, e, p = 0, k
    cdef int s
    cdef bint inside
    pfirst_np = np.zeros(nc + 1, dtype=np.intp)
    count_np = np.zeros((nc, n_species), dtype=np.intp)
    cdef Py_ssize_t[::1] pfirst = pfirst_np
    cdef Py_ssize_t[:, ::1] count = count_np
    with nogil:
        for c in range(nc):
            for e in range(first[centers[c]], first[centers[c] + 1]):
                count[c, species[nl_j[e]]] += d[e] < cutoff
            for s in range(n_species):      # count[c, s] becomes the slot of species s
                e = count[c, s]
                count[c, s] = p
                p += e
            pfirst[c + 1] = p
    entry_np = np.empty(p + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] entry = entry_np
    with nogil:
        for c in range(nc):
            for e in range(first[centers[c]], first[centers[c] + 1]):
                s = species[nl_j[e]]
                inside = d[e] < cutoff
                k = count[c, s] if inside else p
                entry[k] = e
                count[c, s] += inside
    return pfirst_np, entry_np[:p]


cdef inline double* _ptr(double[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


# names of the scratch regions and views (scratch.pxd), in their order, for messages
SCRATCH_REGIONS = ("r", "D", "fc", "dfc", "P", "dP", "V", "J", "pcs", "prjk2", "ir", "Q", "dQ",
                   "tw", "sp", "partner", "bstart")
SCRATCH_VIEWS = {"gradients": ("base", "u1", "u2", "w1", "w2", "asum", "bsum", "p1", "p",
                               "gradient_columns", "dG"),
                 "values": ("columns", "lanes")}

cdef enum:
    GUARD = 16      # elements of the guard band after each region in `compute(check=True)`

cdef uint64_t CANARY = 0x7ff4dcf0dcf0dcf0ULL       # a quiet NaN: reading it shows in results
cdef int ICANARY = -0x2dcf0dcf


cdef void _fill_canary(double* buf, int* ibuf, const Scratch* s) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(s.size):
        (<uint64_t*>buf)[k] = CANARY
    for k in range(s.isize):
        ibuf[k] = ICANARY


cdef int _overrun(const double* buf, const int* ibuf, const Scratch* s,
                  bint values) noexcept nogil:
    """1 + the first region, or N_REGIONS + N_INT_REGIONS + 1 + the first view of S_TW in the
    pass that ran (`values` or not), whose guard band no longer holds the canary; else 0."""
    cdef Py_ssize_t k, e
    cdef const uint64_t* work = <const uint64_t*>buf + s.start[S_TW]
    cdef int nviews = N_VALUE_VIEWS if values else N_GRADIENT_VIEWS
    cdef const Py_ssize_t* vstart = &s.gstart[0]
    cdef const Py_ssize_t* vlength = &s.glength[0]
    if values:
        vstart = &s.vstart[0]
        vlength = &s.vlength[0]
    for k in range(N_REGIONS):
        for e in range(s.start[k] + s.length[k], s.start[k] + s.length[k] + s.guard):
            if (<const uint64_t*>buf)[e] != CANARY:
                return 1 + k
    for k in range(N_INT_REGIONS):
        for e in range(s.istart[k] + s.ilength[k], s.istart[k] + s.ilength[k] + s.guard):
            if ibuf[e] != ICANARY:
                return 1 + N_REGIONS + k
    for k in range(nviews):
        for e in range(vstart[k] + vlength[k], vstart[k] + vlength[k] + s.guard):
            if work[e] != CANARY:
                return 1 + N_REGIONS + N_INT_REGIONS + k
    return 0


def compute(CompiledTerms terms, int mode, const Py_ssize_t[::1] pfirst,
            const Py_ssize_t[::1] entry, const Py_ssize_t[::1] nl_j, const double[:, ::1] nl_D,
            const double[::1] nl_d, const int[::1] species,
            double[::1] G, double[::1] A, double[::1] dG, double[::1] dA,
            const double[::1] weights, double[::1] gpair, int num_threads=1,
            bint check=False):
    """Run `_center` over the centers described by (pfirst, entry).

    Flat, C-ordered, zero-initialized outputs: G (n_c*nG), A (n_c*nA*3); MODE_DERIVATIVES:
    dG (p*nG*3), dA (p*nA*9); MODE_FORCES: weights (n_c*nG) = dE/dG in, gpair (p*3) out.
    check: a debug run that fills the scratch with NaN before each central atom and keeps
    a guard band after each region; RuntimeError if a kernel wrote past its region.
    """
    cdef Py_ssize_t nc = pfirst.shape[0] - 1, c, m, mmax = 0
    for c in range(nc):
        mmax = max(mmax, pfirst[c + 1] - pfirst[c])
    cdef Py_ssize_t guard = GUARD if check else 0
    cdef const Terms* t = &terms.t
    cdef Scratch whole = scratch_layout(t, mmax, guard)    # holds every center's layout
    cdef Scratch lay
    cdef int nG = terms.t.nG, nA = terms.t.nA
    cdef double* buf
    cdef int* ibuf
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
    cdef int failed[2]      # element writes: shared, not thread-private
    cdef int over
    failed[0] = 0
    failed[1] = 0
    buf = NULL      # set in each thread; initialized for the compiler's firstprivate copy
    ibuf = NULL
    with nogil, parallel(num_threads=num_threads):
        buf = <double*>malloc(whole.size * sizeof(double))
        ibuf = <int*>malloc(whole.isize * sizeof(int))
        if buf == NULL or ibuf == NULL:
            failed[0] = 1
        for c in prange(nc, schedule="dynamic", chunksize=4):
            if buf == NULL or ibuf == NULL:
                continue
            p0 = pfirst[c]
            m = pfirst[c + 1] - p0
            lay = scratch_layout(t, m, guard)
            if guard:
                _fill_canary(buf, ibuf, &lay)
            _center(t, mode, m, pentry + p0, pj, pD, pd, &species[0],
                    pG + c * nG if pG != NULL else NULL,
                    pA + c * nA * 3 if pA != NULL else NULL,
                    pdG + p0 * nG * 3 if mode == MODE_DERIVATIVES else NULL,
                    pdA + p0 * nA * 9 if (mode == MODE_DERIVATIVES and nA > 0) else NULL,
                    pw + c * nG if mode == MODE_FORCES else NULL,
                    pgp + p0 * 3 if mode == MODE_FORCES else NULL,
                    &lay, buf, ibuf)
            if guard:
                over = _overrun(buf, ibuf, &lay, mode == MODE_VALUES)
                if over:
                    failed[1] = over
        free(buf)
        free(ibuf)
    if failed[0]:
        raise MemoryError(f"fingerprints: cannot allocate scratch for {mmax} neighbors per atom")
    if failed[1]:
        names = SCRATCH_REGIONS + tuple(
            f"tw.{v}" for v in SCRATCH_VIEWS["values" if mode == MODE_VALUES else "gradients"])
        raise RuntimeError(f"fingerprints: a kernel wrote past scratch region "
                           f"{names[failed[1] - 1]!r}")


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
