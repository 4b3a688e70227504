/* The G4/G5 triplet loop of fingerprint values, in vectors of DCF_LANES lanes (vec.h).

   dcf_triplet_pairs adds, for one central atom, one group of terms and two species blocks
   of its entries, entries j in [a0, a1) and k in [b0, b1) (k > j within one block):
       acc[2 p]     += sum_jk w_jk (1 + cos_jk)^(2^p)
       acc[2 p + 1] += sum_jk w_jk (1 - cos_jk)^(2^p),   p in `need` (bit p set, p <= 4),
   w_jk = P_j P_k Q(s_jk) with s_jk = r_jk^2, Q the polynomial pc of degree deg (11 or 15)
   in s sc - 1 and zero from rc2 on (G4), or Q = 1 for deg = 0 (G5). The columns of W, of
   stride mp, are X, Y, Z, R2 = r^2, IR = 1/r, then the radial factors P_q: readable and
   finite up to the next multiple of DCF_LANES past b1. cos is not clamped to [-1, 1]: with integer
   powers a round-off beyond it changes a term by ~1e-16 w.
   acc holds the lanes of each sum (acc[DCF_LANES a + lane]); the caller adds them at the
   end. */
#ifndef DCF_TRIPLETS_H
#define DCF_TRIPLETS_H

#include "vec.h"

#if defined(__GNUC__) || defined(__clang__)
#define DCF_INLINE static inline __attribute__((always_inline))
#else
#define DCF_INLINE static inline
#endif

/* One row j: the sums over k in [lo, hi), lanes counted from lo. */
DCF_INLINE void dcf_triplet_row(long lo, long hi, const double *W, long mp, const double *P2,
                                long j, double P1, const double *pc, int deg, double sc,
                                double rc2, int need, dcf_vd *a)
{
    const dcf_vd lane = DCF_LANE_INDEX;
    const dcf_vd zero = DCF_ZERO;
    const double *X = W, *Y = W + mp, *Z = W + 2 * mp, *R2 = W + 3 * mp, *IR = W + 4 * mp;
    double x1 = X[j], y1 = Y[j], z1 = Z[j], r1s = R2[j], ir1 = IR[j];
    for (long c = lo; c < hi; c += DCF_LANES) {
        dcf_vd dot = x1 * dcf_load(X + c) + y1 * dcf_load(Y + c) + z1 * dcf_load(Z + c);
        dcf_vd s = (r1s + dcf_load(R2 + c)) - 2.0 * dot;
        dcf_vi inside = s < rc2;
        dcf_vd cs = dot * ir1 * dcf_load(IR + c);
        dcf_vd w = P1 * dcf_load(P2 + c);
        if (deg) {
            dcf_vd x = s * sc - 1.0, x2 = x * x, x4 = x2 * x2, x8 = x4 * x4;
            w = (deg == 11 ? DCF_POLY11(pc, x, x2, x4, x8) : DCF_POLY15(pc, x, x2, x4, x8)) * w;
            w = dcf_select(inside, w, zero);
        }
        if (c + DCF_LANES > hi)
            w = dcf_select((lane + (double)(c - lo)) < (double)(hi - lo), w, zero);
        dcf_vd xp = 1.0 + cs, xm = 1.0 - cs;
        if (need & 1) {
            a[0] += w * xp; a[1] += w * xm;
        }
        xp *= xp; xm *= xm;
        if (need & 2) {
            a[2] += w * xp; a[3] += w * xm;
        }
        xp *= xp; xm *= xm;
        if (need & 4) {
            a[4] += w * xp; a[5] += w * xm;
        }
        if (need > 7) {
            xp *= xp; xm *= xm;
            a[6] += w * xp; a[7] += w * xm;
            xp *= xp; xm *= xm;
            a[8] += w * xp; a[9] += w * xm;
        }
    }
}

/* All rows j of [a0, a1); deg and need are constants in each instance below, so that the
   polynomial and the sums not needed fold away. */
DCF_INLINE void dcf_triplet_rows(long a0, long a1, long b0, long b1, int same,
                                 const double *W, long mp, int q, const double *pc, int deg,
                                 double sc, double rc2, int need, double *acc)
{
    const double *P = W + (5 + q) * mp;
    dcf_vd a[10];
    for (int k = 0; k < 10; k++)
        a[k] = dcf_load(acc + DCF_LANES * k);
    for (long j = a0; j < a1; j++) {
        long lo = same ? j + 1 : b0;
        if (lo < b1 && P[j] != 0.0)
            dcf_triplet_row(lo, b1, W, mp, P, j, P[j], pc, deg, sc, rc2, need, a);
    }
    for (int k = 0; k < 10; k++)
        dcf_store(acc + DCF_LANES * k, a[k]);
}

/* ROWS(deg, need) with deg (11, 15 or 0) and, in the common cases, need as constants, so
   that each instance folds its polynomial and the sums it does not need away: the one
   dispatch of the fused loops here and in triplet_gradients.h. */
#define DCF_NEED_CASES(ROWS, deg)                      \
    switch (need) {                                    \
    case 1: ROWS(deg, 1); break;                       \
    case 5: ROWS(deg, 5); break;                       \
    case 7: ROWS(deg, 7); break;                       \
    default: ROWS(deg, need);                          \
    }
#define DCF_CONSTANT_DEG_NEED(ROWS)                    \
    if (deg == 11) {                                   \
        DCF_NEED_CASES(ROWS, 11)                       \
    } else if (deg == 15) {                            \
        DCF_NEED_CASES(ROWS, 15)                       \
    } else {                                           \
        DCF_NEED_CASES(ROWS, 0)                        \
    }

#define DCF_TRIPLET_ROWS(deg, need) \
    dcf_triplet_rows(a0, a1, b0, b1, same, W, mp, q, pc, deg, sc, rc2, need, acc)

static void dcf_triplet_pairs(long a0, long a1, long b0, long b1, int same, const double *W,
                              long mp, int q, const double *pc, int deg, double sc, double rc2,
                              int need, double *acc)
{
    DCF_CONSTANT_DEG_NEED(DCF_TRIPLET_ROWS)
}

#endif
