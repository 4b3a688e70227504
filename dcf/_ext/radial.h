/* Radial parts of the fingerprint values, in vectors of DCF_LANES lanes (vec.h), over
   columns of one central atom's entries: S = r^2, R = r, FC = fc(r) and the coordinates
   X, Y, Z, each readable and finite up to the next multiple of DCF_LANES past n. */
#ifndef DCF_RADIAL_H
#define DCF_RADIAL_H

#include "vec.h"

/* out[k] = fc(r_k) for the cutoff rc, k up to the next multiple of DCF_LANES past n. */
static void dcf_cutoff_column(long n, const double *S, double rc, double *out)
{
    for (long c = 0; c < n; c += DCF_LANES)
        dcf_store(out + c, dcf_cutoff(dcf_load(S + c), rc));
}

/* out[k] = exp(-eta r_k^2) fc_k, k up to the next multiple of DCF_LANES past n. */
static void dcf_gaussian_column(long n, const double *S, const double *FC, double eta,
                                double *out)
{
    for (long c = 0; c < n; c += DCF_LANES)
        dcf_store(out + c, dcf_expneg(eta * dcf_load(S + c)) * dcf_load(FC + c));
}

static inline dcf_vd dcf_gaussian(const double *R, const double *FC, long c, long n,
                                   double eta, double rs)
{
    const dcf_vd lane = DCF_LANE_INDEX;
    dcf_vd x = dcf_load(R + c) - rs;
    dcf_vd g = dcf_expneg(eta * (x * x)) * dcf_load(FC + c);
    return dcf_select((lane + (double)c) < (double)n, g, DCF_ZERO);
}

/* G2: sum over k < n of exp(-eta (r_k - rs)^2) fc_k. */
static double dcf_gaussian_sum(long n, const double *R, const double *FC, double eta,
                               double rs)
{
    dcf_vd acc = DCF_ZERO;
    for (long c = 0; c < n; c += DCF_LANES)
        acc += dcf_gaussian(R, FC, c, n, eta, rs);
    return dcf_hsum(acc);
}

/* V1: out[0:3] += sum over k < n of g_k (x_k, y_k, z_k), out[3] += sum g_k r_k, with
   g_k = exp(-eta (r_k - rs)^2) fc_k. */
static void dcf_vector_sum(long n, const double *R, const double *X, const double *Y,
                           const double *Z, const double *FC, double eta, double rs,
                           double *out)
{
    dcf_vd vx = DCF_ZERO, vy = vx, vz = vx, vr = vx;
    for (long c = 0; c < n; c += DCF_LANES) {
        dcf_vd g = dcf_gaussian(R, FC, c, n, eta, rs);
        vx += g * dcf_load(X + c);
        vy += g * dcf_load(Y + c);
        vz += g * dcf_load(Z + c);
        vr += g * dcf_load(R + c);
    }
    out[0] += dcf_hsum(vx);
    out[1] += dcf_hsum(vy);
    out[2] += dcf_hsum(vz);
    out[3] += dcf_hsum(vr);
}

#endif
