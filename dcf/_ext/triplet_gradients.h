/* The G4/G5 triplet loop of the derivative and force passes, in vectors of DCF_LANES lanes
   (vec.h): the gradients of the groups the values loop of triplets.h takes (`grp_fused`).

   For one central atom, one group and entries j in [a0, a1), k in [b0, b1) (k > j within one
   species block), with base = P_j P_k Q(s), s = r_jk^2, cos = D_j.D_k / (r_j r_k) and, per
   term a, x_a = 1 + lambda_a cos:
       G_a         = coef_a sum_jk base x_a^zeta_a
       dG_a/dD_j   = c11_a D_j + c12_a D_k,     dG_a/dD_k = c12_a D_j + c22_a D_k,
   where, with A_a = coef_a zeta_a lambda_a x_a^(zeta_a - 1), B_a = coef_a x_a^zeta_a,
       e = 2 P_j P_k dQ/ds,  h = base / (r_j r_k),
       c12 = A h - B e,
       c11 = B (dP_j/dr P_k Q / r_j + e) - A base cos / r_j^2,
       c22 = B (P_j dP_k/dr Q / r_k + e) - A base cos / r_k^2.
   The force pass needs only sum_a w_a dG_a/dD (w = dE/dG): A and B enter linearly, so the
   terms first sum into A = sum_a w_a A_a and B = sum_a w_a B_a, per lane.

   The columns of W, of stride mp, are X, Y, Z, R2 = r^2, IR = 1/r, P_q (n_fac columns), then
   dP_q/dr (n_fac columns): readable and finite up to the next multiple of DCF_LANES past b1.
   Gradients with respect to D_k add into columns of stride mp too: GX, GY, GZ (force pass)
   or, per term, 3 columns of its own (derivative pass); the caller adds them to its outputs.
   cos is not clamped to [-1, 1], as in triplets.h. */
#ifndef DCF_TRIPLET_GRADIENTS_H
#define DCF_TRIPLET_GRADIENTS_H

#include "triplets.h"

/* The most terms of a fused group: one per (lambda = +-1, zeta = 2^p), p <= 4. */
#define DCF_FUSED_SLOTS 10

/* The highest p with bit p set in need (need > 0, p <= 4). */
DCF_INLINE int dcf_top_power(int need)
{
    return need >= 16 ? 4 : need >= 8 ? 3 : need >= 4 ? 2 : need >= 2 ? 1 : 0;
}

/* pw[2p + i] = x_i^(2^p), pw1[2p + i] = x_i^(2^p - 1) for x_0 = 1 + cs, x_1 = 1 - cs and every
   p up to the top one of need. */
DCF_INLINE void dcf_slot_powers(dcf_vd cs, int need, dcf_vd *pw, dcf_vd *pw1)
{
    dcf_vd xp = 1.0 + cs, xm = 1.0 - cs, qp = DCF_ZERO + 1.0, qm = DCF_ZERO + 1.0;
    int top = dcf_top_power(need);
    for (int p = 0; p <= top; p++) {
        if (p) {
            qp *= xp; qm *= xm;
            xp *= xp; xm *= xm;
        }
        pw[2 * p] = xp; pw[2 * p + 1] = xm;
        pw1[2 * p] = qp; pw1[2 * p + 1] = qm;
    }
}

/* The pair quantities of one chunk of lanes c .. c + DCF_LANES - 1 of row j, zero in the
   lanes outside [lo, hi) and (G4) beyond rc2. */
typedef struct {
    dcf_vd Xk, Yk, Zk, cs;
    dcf_vd base, h, e, f1e, f2e, h1, h2;     /* f1e = dP_j P_k Q / r_j + e, h1 = base cos / r_j^2 */
} dcf_pair_chunk;

DCF_INLINE void dcf_pair_chunk_at(long c, long lo, long hi, const double *W, long mp,
                                  const double *P, const double *DP, double xj, double yj,
                                  double zj, double r2j, double irj, double Pj, double dPj,
                                  const double *pc, const double *pd, int deg, double sc,
                                  double rc2, dcf_pair_chunk *o)
{
    const dcf_vd lane = DCF_LANE_INDEX;
    const dcf_vd zero = DCF_ZERO;
    o->Xk = dcf_load(W + c);
    o->Yk = dcf_load(W + mp + c);
    o->Zk = dcf_load(W + 2 * mp + c);
    dcf_vd irk = dcf_load(W + 4 * mp + c);
    dcf_vd dot = xj * o->Xk + yj * o->Yk + zj * o->Zk;
    dcf_vd cs = dot * irj * irk;
    dcf_vd Pk = dcf_load(P + c), dPk = dcf_load(DP + c);
    dcf_vd Q = zero + 1.0, dQ = zero;
    dcf_vi keep = (dcf_vi)(zero == zero);
    int masked = 0;
    if (deg) {
        dcf_vd s = (r2j + dcf_load(W + 3 * mp + c)) - 2.0 * dot;
        dcf_vd x = s * sc - 1.0, x2 = x * x, x4 = x2 * x2, x8 = x4 * x4;
        Q = deg == 11 ? DCF_POLY11(pc, x, x2, x4, x8) : DCF_POLY15(pc, x, x2, x4, x8);
        dQ = deg == 11 ? DCF_POLY11(pd, x, x2, x4, x8) : DCF_POLY15(pd, x, x2, x4, x8);
        keep = s < rc2;
        masked = 1;
    }
    if (c + DCF_LANES > hi) {
        keep &= (lane + (double)(c - lo)) < (double)(hi - lo);
        masked = 1;
    }
    dcf_vd PQ = Pk * Q;
    dcf_vd base = Pj * PQ;
    dcf_vd e = 2.0 * Pj * Pk * dQ;
    dcf_vd bc = base * cs;
    o->cs = cs;
    o->base = base;
    o->h = base * irj * irk;
    o->e = e;
    o->f1e = dPj * PQ * irj + e;
    o->f2e = Pj * dPk * Q * irk + e;
    o->h1 = bc * (irj * irj);
    o->h2 = bc * irk * irk;
    if (masked) {
        o->base = dcf_select(keep, o->base, zero);
        o->h = dcf_select(keep, o->h, zero);
        o->e = dcf_select(keep, o->e, zero);
        o->f1e = dcf_select(keep, o->f1e, zero);
        o->f2e = dcf_select(keep, o->f2e, zero);
        o->h1 = dcf_select(keep, o->h1, zero);
        o->h2 = dcf_select(keep, o->h2, zero);
    }
}

/* Force pass, one row j: GX, GY, GZ (columns of stride mp) += sum_a w_a dG_a/dD over the
   pairs (j, k), k in [lo, hi); wa[slot] = sum of w_a coef_a zeta_a lambda_a and
   wb[slot] = sum of w_a coef_a over the terms of each slot (2 p + (lambda < 0)). */
DCF_INLINE void dcf_gradient_row_forces(long lo, long hi, const double *W, long mp,
                                        const double *P, const double *DP, long j,
                                        const double *pc, const double *pd, int deg, double sc,
                                        double rc2, int need, const double *wa,
                                        const double *wb, double *GX)
{
    double *GY = GX + mp, *GZ = GX + 2 * mp;
    double xj = W[j], yj = W[mp + j], zj = W[2 * mp + j], r2j = W[3 * mp + j];
    double irj = W[4 * mp + j], Pj = P[j], dPj = DP[j];
    int top = dcf_top_power(need);
    dcf_vd s11 = DCF_ZERO, sx = DCF_ZERO, sy = DCF_ZERO, sz = DCF_ZERO;
    dcf_vd pw[DCF_FUSED_SLOTS], pw1[DCF_FUSED_SLOTS];
    dcf_pair_chunk o;
    for (long c = lo; c < hi; c += DCF_LANES) {
        dcf_pair_chunk_at(c, lo, hi, W, mp, P, DP, xj, yj, zj, r2j, irj, Pj, dPj, pc, pd, deg,
                          sc, rc2, &o);
        dcf_slot_powers(o.cs, need, pw, pw1);
        dcf_vd A = DCF_ZERO, B = DCF_ZERO;
        for (int p = 0; p <= top; p++) {
            if (need & (1 << p)) {
                A += wa[2 * p] * pw1[2 * p] + wa[2 * p + 1] * pw1[2 * p + 1];
                B += wb[2 * p] * pw[2 * p] + wb[2 * p + 1] * pw[2 * p + 1];
            }
        }
        dcf_vd c12 = A * o.h - B * o.e;
        dcf_vd c11 = B * o.f1e - A * o.h1;
        dcf_vd c22 = B * o.f2e - A * o.h2;
        s11 += c11;
        sx += c12 * o.Xk;
        sy += c12 * o.Yk;
        sz += c12 * o.Zk;
        dcf_store(GX + c, dcf_load(GX + c) + (c12 * xj + c22 * o.Xk));
        dcf_store(GY + c, dcf_load(GY + c) + (c12 * yj + c22 * o.Yk));
        dcf_store(GZ + c, dcf_load(GZ + c) + (c12 * zj + c22 * o.Zk));
    }
    double t11 = dcf_hsum(s11);
    GX[j] += t11 * xj + dcf_hsum(sx);
    GY[j] += t11 * yj + dcf_hsum(sy);
    GZ[j] += t11 * zj + dcf_hsum(sz);
}

/* Derivative pass, one row j: per slot s (2 p + (lambda < 0)) of need, the term's
   G[s] += its values and its columns DG[s] (3 of stride mp: DG[s][i mp + n] = dG/dD_n,i)
   += its gradients; coef[s], kzl[s] = coef zeta lambda (0 where the group has no term in a
   slot of need: G[s] and DG[s] then point to spare space). */
DCF_INLINE void dcf_gradient_row_derivatives(long lo, long hi, const double *W, long mp,
                                             const double *P, const double *DP, long j,
                                             const double *pc, const double *pd, int deg,
                                             double sc, double rc2, int need,
                                             const double *coef, const double *kzl,
                                             double *const *G, double *const *DG)
{
    double xj = W[j], yj = W[mp + j], zj = W[2 * mp + j], r2j = W[3 * mp + j];
    double irj = W[4 * mp + j], Pj = P[j], dPj = DP[j];
    int top = dcf_top_power(need);
    dcf_vd pw[DCF_FUSED_SLOTS], pw1[DCF_FUSED_SLOTS];
    dcf_vd acc[5 * DCF_FUSED_SLOTS];    /* per slot: G, then s11, sx, sy, sz of the j side */
    dcf_pair_chunk o;
#pragma GCC unroll 10
    for (int a = 0; a < 5 * DCF_FUSED_SLOTS; a++)
        acc[a] = DCF_ZERO;
    for (long c = lo; c < hi; c += DCF_LANES) {
        dcf_pair_chunk_at(c, lo, hi, W, mp, P, DP, xj, yj, zj, r2j, irj, Pj, dPj, pc, pd, deg,
                          sc, rc2, &o);
        dcf_slot_powers(o.cs, need, pw, pw1);
#pragma GCC unroll 10
        for (int a = 0; a < 2 * top + 2; a++) {
            if (!(need & (1 << (a >> 1))))
                continue;
            dcf_vd A = kzl[a] * pw1[a];
            dcf_vd B = coef[a] * pw[a];
            dcf_vd c12 = A * o.h - B * o.e;
            dcf_vd c11 = B * o.f1e - A * o.h1;
            dcf_vd c22 = B * o.f2e - A * o.h2;
            dcf_vd *s = acc + 5 * a;
            s[0] += B * o.base;
            s[1] += c11;
            s[2] += c12 * o.Xk;
            s[3] += c12 * o.Yk;
            s[4] += c12 * o.Zk;
            double *dx = DG[a], *dy = dx + mp, *dz = dy + mp;
            dcf_store(dx + c, dcf_load(dx + c) + (c12 * xj + c22 * o.Xk));
            dcf_store(dy + c, dcf_load(dy + c) + (c12 * yj + c22 * o.Yk));
            dcf_store(dz + c, dcf_load(dz + c) + (c12 * zj + c22 * o.Zk));
        }
    }
#pragma GCC unroll 10
    for (int a = 0; a < 2 * top + 2; a++) {
        if (!(need & (1 << (a >> 1))))
            continue;
        dcf_vd *s = acc + 5 * a;
        double t11 = dcf_hsum(s[1]);
        double *dx = DG[a];
        *G[a] += dcf_hsum(s[0]);
        dx[j] += t11 * xj + dcf_hsum(s[2]);
        dx[mp + j] += t11 * yj + dcf_hsum(s[3]);
        dx[2 * mp + j] += t11 * zj + dcf_hsum(s[4]);
    }
}

/* Every row j of [a0, a1) against its k in [b0, b1); DG == NULL: the force pass (wa, wb),
   else the derivative pass (coef, kzl, G, DG per slot). deg, need constant per instance
   below. */
DCF_INLINE void dcf_gradient_rows(long a0, long a1, long b0, long b1, int same,
                                  const double *W, long mp, const double *P, const double *DP,
                                  const double *pc, const double *pd, int deg, double sc,
                                  double rc2, int need, const double *wa, const double *wb,
                                  double *GX, const double *coef, const double *kzl,
                                  double *const *G, double *const *DG)
{
    for (long j = a0; j < a1; j++) {
        long lo = same ? j + 1 : b0;
        if (lo >= b1 || (P[j] == 0.0 && DP[j] == 0.0))
            continue;
        if (DG == NULL)
            dcf_gradient_row_forces(lo, b1, W, mp, P, DP, j, pc, pd, deg, sc, rc2, need, wa,
                                    wb, GX);
        else
            dcf_gradient_row_derivatives(lo, b1, W, mp, P, DP, j, pc, pd, deg, sc, rc2, need,
                                         coef, kzl, G, DG);
    }
}

#define DCF_GRADIENT_ROWS(deg, need)                                                        \
    dcf_gradient_rows(a0, a1, b0, b1, same, W, mp, P, DP, pc, pd, deg, sc, rc2, need, wa,    \
                      wb, GX, coef, kzl, G, DG)

/* One group, one pair of species blocks (see dcf_gradient_rows). */
static void dcf_gradient_pairs(long a0, long a1, long b0, long b1, int same, const double *W,
                               long mp, const double *P, const double *DP, const double *pc,
                               const double *pd, int deg, double sc, double rc2, int need,
                               const double *wa, const double *wb, double *GX,
                               const double *coef, const double *kzl, double *const *G,
                               double *const *DG)
{
    DCF_CONSTANT_DEG_NEED(DCF_GRADIENT_ROWS)
}

#endif
