/* Double vectors of DCF_LANES lanes (GCC/Clang vector extensions) and the few functions the
   fingerprint loops need on them: 4 lanes in the portable build (SSE2 pairs) and in
   fingerprints_avx2, 8 in fingerprints_avx512 (built with AVX-512F). */
#ifndef DCF_VEC_H
#define DCF_VEC_H

#include <string.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"    /* wide vectors in static functions only */
#endif

#if defined(__AVX512F__)
#define DCF_LANES 8
#define DCF_LANE_INDEX {0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0}
#else
#define DCF_LANES 4
#define DCF_LANE_INDEX {0.0, 1.0, 2.0, 3.0}
#endif

typedef double dcf_vd __attribute__((vector_size(8 * DCF_LANES)));
typedef long long dcf_vi __attribute__((vector_size(8 * DCF_LANES)));           /* masks */
typedef unsigned long long dcf_vu __attribute__((vector_size(8 * DCF_LANES)));  /* bits */

#define DCF_ZERO ((dcf_vd){0.0})

/* The sum of the lanes, pairwise. */
static inline double dcf_hsum(dcf_vd v)
{
#if DCF_LANES == 8
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
#else
    return (v[0] + v[1]) + (v[2] + v[3]);
#endif
}

/* The same for lanes stored at p[0 .. DCF_LANES - 1]. */
static inline double dcf_hsum_at(const double *p)
{
    dcf_vd v;
    memcpy(&v, p, sizeof v);
    return dcf_hsum(v);
}

/* c[0] + c[1] x + ... by Estrin's scheme, for x a double or a dcf_vd (x2 = x^2, ...): the
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

static inline dcf_vd dcf_load(const double *p)
{
    dcf_vd v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void dcf_store(double *p, dcf_vd v)
{
    memcpy(p, &v, sizeof v);
}

static inline dcf_vd dcf_select(dcf_vi mask, dcf_vd a, dcf_vd b)
{
    dcf_vi ia, ib;
    dcf_vd out;
    memcpy(&ia, &a, sizeof a);
    memcpy(&ib, &b, sizeof b);
    ia = (ia & mask) | (ib & ~mask);
    memcpy(&out, &ia, sizeof out);
    return out;
}

static inline dcf_vd dcf_as_double(dcf_vu v)
{
    dcf_vd out;
    memcpy(&out, &v, sizeof out);
    return out;
}

static inline dcf_vu dcf_as_bits(dcf_vd v)
{
    dcf_vu out;
    memcpy(&out, &v, sizeof out);
    return out;
}

/* exp(-a) for a >= 0 (0 from a = 708 on, like the scalar kernels), to 2 ulp:
   2^k exp(t), t = -a - k ln 2 in [-ln2/2, ln2/2], exp(t) by its Taylor series to t^13. */
static inline dcf_vd dcf_expneg(dcf_vd a)
{
    const double shifter = 6755399441055744.0;               /* 1.5 * 2^52 */
    dcf_vd x = dcf_select(a < 708.0, -a, DCF_ZERO - 708.0);
    dcf_vd kb = x * 1.4426950408889634 + shifter;            /* round(x / ln 2) + shifter */
    dcf_vd k = kb - shifter;
    dcf_vd t = (x - k * 0.6931471803691238) - k * 1.9082149292705877e-10;
    dcf_vd t2 = t * t, t4 = t2 * t2, t8 = t4 * t4;
    dcf_vd p = ((1.0 + t) + t2 * (0.5 + t * 0.16666666666666666))
                + t4 * ((0.041666666666666664 + t * 0.008333333333333333)
                        + t2 * (0.001388888888888889 + t * 0.0001984126984126984))
                + t8 * ((2.48015873015873e-05 + t * 2.7557319223985893e-06)
                        + t2 * (2.755731922398589e-07 + t * 2.505210838544172e-08)
                        + t4 * (2.08767569878681e-09 + t * 1.6059043836821613e-10));
    dcf_vd scale = dcf_as_double((dcf_as_bits(kb) + 1023) << 52);
    return dcf_select(a < 708.0, p * scale, DCF_ZERO);
}

/* fc(r) = 0.5 (cos(pi r / rc) + 1) = cos^2(sqrt(y)), y = pi^2 r^2 / (4 rc^2), for r < rc,
   else 0 (the series `_cutoff_sq` in fingerprints.pyx uses too). */
static inline dcf_vd dcf_cutoff(dcf_vd s, double rc)
{
    double k = 3.141592653589793 * 3.141592653589793 / (4.0 * rc * rc);
    dcf_vd y = k * s, y2 = y * y, y4 = y2 * y2, y8 = y4 * y4;
    dcf_vd c = DCF_POLY11(dcf_cos_sqrt_series, y, y2, y4, y8);
    return dcf_select(s < rc * rc, c * c, DCF_ZERO);
}

#endif
