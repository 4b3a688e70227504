/* Radial parts of the fingerprint values, in 4-lane vectors (vec4.h), over columns of one
   central atom's entries: S = r^2, R = r, FC = fc(r) and the coordinates X, Y, Z, each
   readable and finite up to the next multiple of 4 past n. */
#ifndef DCF_RADIAL_H
#define DCF_RADIAL_H

#include "vec4.h"

/* out[k] = fc(r_k) for the cutoff rc, k up to the next multiple of 4 past n. */
static void dcf_cutoff_column(long n, const double *S, double rc, double *out)
{
    for (long c = 0; c < n; c += 4)
        dcf_store(out + c, dcf_cutoff(dcf_load(S + c), rc));
}

/* out[k] = exp(-eta r_k^2) fc_k, k up to the next multiple of 4 past n. */
static void dcf_gaussian_column(long n, const double *S, const double *FC, double eta,
                                double *out)
{
    for (long c = 0; c < n; c += 4)
        dcf_store(out + c, dcf_expneg(eta * dcf_load(S + c)) * dcf_load(FC + c));
}

static inline dcf_v4d dcf_gaussian(const double *R, const double *FC, long c, long n,
                                   double eta, double rs)
{
    const dcf_v4d lane = {0.0, 1.0, 2.0, 3.0};
    dcf_v4d x = dcf_load(R + c) - rs;
    dcf_v4d g = dcf_expneg(eta * (x * x)) * dcf_load(FC + c);
    return dcf_select((lane + (double)c) < (double)n, g, DCF_ZERO);
}

/* G2: sum over k < n of exp(-eta (r_k - rs)^2) fc_k. */
static double dcf_gaussian_sum(long n, const double *R, const double *FC, double eta,
                               double rs)
{
    dcf_v4d acc = {0.0, 0.0, 0.0, 0.0};
    for (long c = 0; c < n; c += 4)
        acc += dcf_gaussian(R, FC, c, n, eta, rs);
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/* V1: out[0:3] += sum over k < n of g_k (x_k, y_k, z_k), out[3] += sum g_k r_k, with
   g_k = exp(-eta (r_k - rs)^2) fc_k. */
static void dcf_vector_sum(long n, const double *R, const double *X, const double *Y,
                           const double *Z, const double *FC, double eta, double rs,
                           double *out)
{
    dcf_v4d vx = {0.0, 0.0, 0.0, 0.0}, vy = vx, vz = vx, vr = vx;
    for (long c = 0; c < n; c += 4) {
        dcf_v4d g = dcf_gaussian(R, FC, c, n, eta, rs);
        vx += g * dcf_load(X + c);
        vy += g * dcf_load(Y + c);
        vz += g * dcf_load(Z + c);
        vr += g * dcf_load(R + c);
    }
    out[0] += (vx[0] + vx[1]) + (vx[2] + vx[3]);
    out[1] += (vy[0] + vy[1]) + (vy[2] + vy[3]);
    out[2] += (vz[0] + vz[1]) + (vz[2] + vz[3]);
    out[3] += (vr[0] + vr[1]) + (vr[2] + vr[3]);
}

#endif
