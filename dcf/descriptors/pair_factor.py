"""The G4 pair factor Q(s) = exp(-eta s) fc(sqrt s) of s = r_jk^2 as a polynomial.

The fingerprint kernels evaluate Q and dQ/ds of each G4 group (one (Rc, eta)) as polynomials
in t = 2 s / Rc^2 - 1 on 0 <= s <= Rc^2, by Estrin's scheme (vec.h `DCF_POLY11` /
`DCF_POLY15`); `pair_factor_poly` fits them once when a spec is compiled, and `estrin`
is the same evaluation in numpy, operation for operation. Units: s in Angstrom^2, eta in
1/Angstrom^2, Rc in Angstrom.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from dcf._ext.fingerprints import POLY_SIZE

#: coefficient counts the kernels evaluate: degree 11, and degree POLY_SIZE - 1 = 15
SIZES = (12, POLY_SIZE)


def estrin(c, x):
    """c[0] + c[1] x + ... for len(c) == 12 (degree 11) or 16 (degree 15), x a float or an
    array: vec.h's DCF_POLY11 / DCF_POLY15 in numpy, the same operations in the same order."""
    x2 = x * x
    x4 = x2 * x2
    x8 = x4 * x4
    lo = ((c[0] + c[1] * x) + x2 * (c[2] + c[3] * x)) + x4 * ((c[4] + c[5] * x)
                                                               + x2 * (c[6] + c[7] * x))
    if len(c) == 12:
        return lo + x8 * ((c[8] + c[9] * x) + x2 * (c[10] + c[11] * x))
    return lo + x8 * (((c[8] + c[9] * x) + x2 * (c[10] + c[11] * x))
                      + x4 * ((c[12] + c[13] * x) + x2 * (c[14] + c[15] * x)))


def pair_factor(s, rc: float, eta: float):
    """Q(s) = exp(-eta s) fc(sqrt s) and dQ/ds in long double, for 0 <= s <= rc^2 (s an array
    of any float type): the functions `pair_factor_poly` fits."""
    L = np.longdouble
    s = np.asarray(s, dtype=L)
    pi = 4 * np.arctan(L(1))
    rc2 = L(rc) * L(rc)
    x = pi * np.sqrt(s) / L(rc)
    ex = np.exp(-L(eta) * s)
    fc = (np.cos(x) + 1) / 2
    sinc = np.sin(x) / np.where(x > 0, x, 1)
    sinc[x == 0] = 1
    dfc = -pi * pi / (4 * rc2) * sinc
    return ex * fc, ex * (dfc - L(eta) * fc)


@lru_cache(maxsize=None)
def pair_factor_poly(rc: float, eta: float, tol: float = 2e-15):
    """Coefficients of Q(s) and of dQ/ds as polynomials in t = s (2 / rc^2) - 1 on
    0 <= s <= rc^2: two float64 arrays of 12 (degree 11) or 16 (degree 15) coefficients, the
    shorter where it reaches `tol` times max |Q| (and max |dQ/ds|) as `estrin` evaluates
    them; None where neither does (eta rc^2 above about 2.5).

    Chebyshev interpolation in long double, checked on a fine grid against long double;
    of each length, the number of nodes with the smallest error wins. Cached: the arrays
    returned are shared, not to be modified.
    """
    L = np.longdouble
    pi = 4 * np.arctan(L(1))
    rc2 = L(rc) * L(rc)
    s_check = np.concatenate([np.linspace(0.0, 1.0, 4097) ** 2, np.linspace(0.0, 1.0, 4097)])
    s_check *= rc * rc
    x_check = s_check * (2.0 / (rc * rc)) - 1.0
    ref = pair_factor(s_check, rc, eta)
    for size in SIZES:
        best, best_err = None, np.inf
        for n in range(8, size + 1):
            theta = pi * (np.arange(n, dtype=L) + L(0.5)) / n
            # Chebyshev -> monomial coefficients: T_{j+1} = 2 t T_j - T_{j-1}
            basis = np.zeros((n, size), dtype=L)
            basis[0, 0] = 1
            if n > 1:
                basis[1, 1] = 1
            for j in range(2, n):
                basis[j, 1:] = 2 * basis[j - 1, :size - 1]
                basis[j] -= basis[j - 2]
            fit, err = [], 0.0
            for vals, r in zip(pair_factor((np.cos(theta) + 1) * rc2 / 2, rc, eta), ref):
                cheb = np.array([2 * np.sum(vals * np.cos(j * theta)) / n for j in range(n)])
                cheb[0] /= 2
                mono = (cheb @ basis).astype(np.float64)
                fit.append(mono)
                err = max(err, float(np.max(np.abs(estrin(mono, x_check) - r))
                                     / np.max(np.abs(r))))
            if err < best_err:
                best, best_err = (fit[0], fit[1]), err
        if best_err <= tol:
            return best
    return None
