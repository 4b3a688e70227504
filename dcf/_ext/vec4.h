/* 4-lane double vectors (GCC/Clang vector extensions: SSE2 pairs in the portable build,
   AVX2 in fingerprints_avx2) and the few functions the fingerprint loops need on them. */
#ifndef DCF_VEC4_H
#define DCF_VEC4_H

#include <string.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"    /* 32-byte vectors in static functions only */
#endif

typedef double dcf_v4d __attribute__((vector_size(32)));
typedef long long dcf_v4i __attribute__((vector_size(32)));            /* masks */
typedef unsigned long long dcf_v4u __attribute__((vector_size(32)));   /* bit patterns */

#define DCF_ZERO ((dcf_v4d){0.0, 0.0, 0.0, 0.0})

/* c[0] + c[1] x + ... by Estrin's scheme, for x a double or a dcf_v4d (x2 = x^2, ...): the
   one definition of the kernels' polynomials (fingerprints.pyx `_estrin` mirrors it). */
#define DCF_ESTRIN4(c, x, x2) (((c)[0] + (c)[1] * (x)) + (x2) * ((c)[2] + (c)[3] * (x)))
#define DCF_ESTRIN8(c, x, x2, x4) (DCF_ESTRIN4(c, x, x2) + (x4) * DCF_ESTRIN4((c) + 4, x, x2))
#define DCF_POLY11(c, x, x2, x4, x8) \
    (DCF_ESTRIN8(c, x, x2, x4) + (x8) * DCF_ESTRIN4((c) + 8, x, x2))
#define DCF_POLY15(c, x, x2, x4, x8) \
    (DCF_ESTRIN8(c, x, x2, x4) + (x8) * DCF_ESTRIN8((c) + 8, x, x2, x4))

static inline double dcf_poly11(const double *c, double x)
{
    double x2 = x * x, x4 = x2 * x2, x8 = x4 * x4;
    return DCF_POLY11(c, x, x2, x4, x8);
}

static inline double dcf_poly15(const double *c, double x)
{
    double x2 = x * x, x4 = x2 * x2, x8 = x4 * x4;
    return DCF_POLY15(c, x, x2, x4, x8);
}

/* cos(sqrt(y)) = sum_k (-y)^k / (2k)!, k <= 10 (error below 1e-16 on 0 <= y <= pi^2/4),
   as the 12 coefficients of DCF_POLY11 (the last one 0). */
static const double dcf_cos_sqrt_series[12] = {
    1.0, -0.5, 0.041666666666666664, -0.001388888888888889, 2.48015873015873e-05,
    -2.755731922398589e-07, 2.08767569878681e-09, -1.1470745597729725e-11,
    4.779477332387385e-14, -1.5619206968586225e-16, 4.110317623312165e-19, 0.0};

/* sin(sqrt(y)) / sqrt(y) = sum_k (-y)^k / (2k + 1)!, k <= 10, the same way. */
static const double dcf_sinc_sqrt_series[12] = {
    1.0, -0.16666666666666666, 0.008333333333333333, -0.0001984126984126984,
    2.7557319223985893e-06, -2.505210838544172e-08, 1.6059043836821613e-10,
    -7.647163731819816e-13, 2.8114572543455206e-15, -8.22063524662433e-18,
    1.9572941063391263e-20, 0.0};

static inline dcf_v4d dcf_load(const double *p)
{
    dcf_v4d v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void dcf_store(double *p, dcf_v4d v)
{
    memcpy(p, &v, sizeof v);
}

static inline dcf_v4d dcf_select(dcf_v4i mask, dcf_v4d a, dcf_v4d b)
{
    dcf_v4i ia, ib;
    dcf_v4d out;
    memcpy(&ia, &a, sizeof a);
    memcpy(&ib, &b, sizeof b);
    ia = (ia & mask) | (ib & ~mask);
    memcpy(&out, &ia, sizeof out);
    return out;
}

static inline dcf_v4d dcf_as_double(dcf_v4u v)
{
    dcf_v4d out;
    memcpy(&out, &v, sizeof out);
    return out;
}

static inline dcf_v4u dcf_as_bits(dcf_v4d v)
{
    dcf_v4u out;
    memcpy(&out, &v, sizeof out);
    return out;
}

/* exp(-a) for a >= 0 (0 from a = 708 on, like the scalar kernels), to 2 ulp:
   2^k exp(t), t = -a - k ln 2 in [-ln2/2, ln2/2], exp(t) by its Taylor series to t^13. */
static inline dcf_v4d dcf_expneg(dcf_v4d a)
{
    const double shifter = 6755399441055744.0;               /* 1.5 * 2^52 */
    dcf_v4d x = dcf_select(a < 708.0, -a, DCF_ZERO - 708.0);
    dcf_v4d kb = x * 1.4426950408889634 + shifter;            /* round(x / ln 2) + shifter */
    dcf_v4d k = kb - shifter;
    dcf_v4d t = (x - k * 0.6931471803691238) - k * 1.9082149292705877e-10;
    dcf_v4d t2 = t * t, t4 = t2 * t2, t8 = t4 * t4;
    dcf_v4d p = ((1.0 + t) + t2 * (0.5 + t * 0.16666666666666666))
                + t4 * ((0.041666666666666664 + t * 0.008333333333333333)
                        + t2 * (0.001388888888888889 + t * 0.0001984126984126984))
                + t8 * ((2.48015873015873e-05 + t * 2.7557319223985893e-06)
                        + t2 * (2.755731922398589e-07 + t * 2.505210838544172e-08)
                        + t4 * (2.08767569878681e-09 + t * 1.6059043836821613e-10));
    dcf_v4d scale = dcf_as_double((dcf_as_bits(kb) + 1023) << 52);
    return dcf_select(a < 708.0, p * scale, DCF_ZERO);
}

/* fc(r) = 0.5 (cos(pi r / rc) + 1) = cos^2(sqrt(y)), y = pi^2 r^2 / (4 rc^2), for r < rc,
   else 0 (the series `_cutoff_sq` in fingerprints.pyx uses too). */
static inline dcf_v4d dcf_cutoff(dcf_v4d s, double rc)
{
    double k = 3.141592653589793 * 3.141592653589793 / (4.0 * rc * rc);
    dcf_v4d y = k * s, y2 = y * y, y4 = y2 * y2, y8 = y4 * y4;
    dcf_v4d c = DCF_POLY11(dcf_cos_sqrt_series, y, y2, y4, y8);
    return dcf_select(s < rc * rc, c * c, DCF_ZERO);
}

#endif
