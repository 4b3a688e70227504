/* The G4/G5 triplet loop of fingerprint values, in 4-lane vectors (vec4.h).

   dcf_triplet_block adds, for one central atom's entry 1 and the entries k < n of a block
   (columns X, Y, Z, R2 = r^2, IR = 1/r, P2 = radial factor, readable and finite up to the
   next multiple of 4):
       acc[2 j]     += sum_k w_k (1 + cos_k)^(2^j)
       acc[2 j + 1] += sum_k w_k (1 - cos_k)^(2^j),   j in `need` (bit j set, j <= 4),
   w_k = P1 P2_k Q(s_k) with s_k = r_jk^2, Q the polynomial pc of degree deg (11 or 15) in
   s sc - 1 and zero from rc2 on (G4), or Q = 1 for deg = 0 (G5). cos is not clamped to
   [-1, 1]: with integer powers a round-off beyond it changes a term by ~1e-16 w.
   acc holds 4 lanes per sum (acc[4 a + lane]); the caller adds them once per block pair. */
#ifndef DCF_TRIPLETS_H
#define DCF_TRIPLETS_H

#include "vec4.h"

static inline dcf_v4d dcf_poly(const double *c, int deg, dcf_v4d x)
{
    dcf_v4d x2 = x * x, x4 = x2 * x2, x8 = x4 * x4;
    if (deg == 11)
        return DCF_POLY11(c, x, x2, x4, x8);
    return DCF_POLY15(c, x, x2, x4, x8);
}

static void dcf_triplet_block(long n, const double *X, const double *Y, const double *Z,
                              const double *R2, const double *IR, const double *P2,
                              double x1, double y1, double z1, double r1s, double ir1,
                              double P1, const double *pc, int deg, double sc, double rc2,
                              int need, double *acc)
{
    const dcf_v4d lane = {0.0, 1.0, 2.0, 3.0};
    const dcf_v4d zero = DCF_ZERO;
    dcf_v4d a0 = dcf_load(acc), a1 = dcf_load(acc + 4), a2 = dcf_load(acc + 8);
    dcf_v4d a3 = dcf_load(acc + 12), a4 = dcf_load(acc + 16), a5 = dcf_load(acc + 20);
    dcf_v4d a6 = zero, a7 = zero, a8 = zero, a9 = zero;
    long c;
    if (need > 7) {
        a6 = dcf_load(acc + 24); a7 = dcf_load(acc + 28);
        a8 = dcf_load(acc + 32); a9 = dcf_load(acc + 36);
    }
    for (c = 0; c < n; c += 4) {
        dcf_v4d dot = x1 * dcf_load(X + c) + y1 * dcf_load(Y + c) + z1 * dcf_load(Z + c);
        dcf_v4d s = (r1s + dcf_load(R2 + c)) - 2.0 * dot;
        dcf_v4d cs = dot * ir1 * dcf_load(IR + c);
        dcf_v4d w = P1 * dcf_load(P2 + c);
        if (deg) {
            w = dcf_poly(pc, deg, s * sc - 1.0) * w;
            w = dcf_select(s < rc2, w, zero);
        }
        if (c + 4 > n)
            w = dcf_select((lane + (double)c) < (double)n, w, zero);
        dcf_v4d xp = 1.0 + cs, xm = 1.0 - cs;
        if (need & 1) {
            a0 += w * xp; a1 += w * xm;
        }
        xp *= xp; xm *= xm;
        if (need & 2) {
            a2 += w * xp; a3 += w * xm;
        }
        xp *= xp; xm *= xm;
        if (need & 4) {
            a4 += w * xp; a5 += w * xm;
        }
        if (need > 7) {
            xp *= xp; xm *= xm;
            a6 += w * xp; a7 += w * xm;
            xp *= xp; xm *= xm;
            a8 += w * xp; a9 += w * xm;
        }
    }
    dcf_store(acc, a0); dcf_store(acc + 4, a1); dcf_store(acc + 8, a2);
    dcf_store(acc + 12, a3); dcf_store(acc + 16, a4); dcf_store(acc + 20, a5);
    if (need > 7) {
        dcf_store(acc + 24, a6); dcf_store(acc + 28, a7);
        dcf_store(acc + 32, a8); dcf_store(acc + 36, a9);
    }
}


#endif
