# cython: language_level=3
"""The pair sum of the pairwise DCF head (dcf.models.pairwise), one pass over a neighbor list.

For every entry p of atom i (first[i] <= p < first[i+1]) with neighbor j > i and distance
d_p < r_pair:

    phi_b = exp(-((d_p - start - b * width) / width)^2) * (cos(pi d_p / r_pair) + 1) / 2
    c     = sum_b phi_b [ sum_k (a_ibk b_jbk + a_jbk b_ibk) + w[s_i, s_j, b] ]
    F_i  += c D_p / d_p,      F_j -= c D_p / d_p

with u[i] = (a_i, b_i), each B x K, row-major. Entries with j <= i are skipped: their pair
is counted from the other side, and an atom's own periodic images cancel in +S/-S pairs.
"""
from libc.math cimport cos, exp, M_PI


def pair_forces(const double[:, ::1] u, const int[::1] species, const double[::1] w,
                const Py_ssize_t[::1] first, const Py_ssize_t[::1] j_of,
                const double[:, ::1] D, const double[::1] d, double r_pair, double start,
                double width, int n_el, int n_basis, int rank, Py_ssize_t atom_lo,
                Py_ssize_t atom_hi, double[:, ::1] forces):
    """Add the pair forces of atoms atom_lo <= i < atom_hi to `forces` (n, 3) eV/A.

    u (n, 2 B K): embeddings; species (n,): element index; w (n_el * n_el * B,): pair
    weights of n_el elements; first (n + 1,), j_of (m,), D (m, 3) A, d (m,) A: a full
    neighbor list.
    """
    cdef Py_ssize_t i, j, p, b, k, ab = n_basis * rank
    cdef double r, c, s, fc, x, f
    cdef const double *ai
    cdef const double *bi
    cdef const double *aj
    cdef const double *bj
    cdef const double *wij
    with nogil:
        for i in range(atom_lo, atom_hi):
            ai = &u[i, 0]
            bi = ai + ab
            for p in range(first[i], first[i + 1]):
                j = j_of[p]
                r = d[p]
                if j <= i or r >= r_pair:
                    continue
                aj = &u[j, 0]
                bj = aj + ab
                wij = &w[(species[i] * n_el + species[j]) * n_basis]
                fc = 0.5 * (cos(M_PI * r / r_pair) + 1.0)
                c = 0.0
                for b in range(n_basis):
                    s = wij[b]
                    for k in range(b * rank, (b + 1) * rank):
                        s = s + ai[k] * bj[k] + aj[k] * bi[k]
                    x = (r - start - b * width) / width
                    c = c + exp(-x * x) * s
                f = c * fc / r
                forces[i, 0] += f * D[p, 0]
                forces[i, 1] += f * D[p, 1]
                forces[i, 2] += f * D[p, 2]
                forces[j, 0] -= f * D[p, 0]
                forces[j, 1] -= f * D[p, 1]
                forces[j, 2] -= f * D[p, 2]
