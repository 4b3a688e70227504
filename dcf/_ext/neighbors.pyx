"""Cell-list neighbor search over explicit periodic images.

Full list with ASE's 'ijS' meaning: for every ordered pair (i, j, S) with
D = r_j - r_i + S @ cell and |D| < cutoff, excluding i == j with S == 0.

Method: atoms are wrapped into the cell along periodic axes; every image of every
atom that can lie within the cutoff of the wrapped cell (a slab test per periodic
axis on fractional coordinates) becomes a point; points are binned on a Cartesian
grid with bins of about half the cutoff and stored in bin order; each central atom scans
the bins within the cutoff of its own (5 x 5 x 5), a contiguous run of points per row.
Two passes (count, fill) let central atoms run in parallel without locks.
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport floor, ceil, sqrt, fabs
from libc.stdlib cimport malloc, free

cnp.import_array()


cdef inline Py_ssize_t _bin_of(double x, double lo, double width, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t b = <Py_ssize_t>((x - lo) / width)
    if b < 0:
        return 0
    if b >= nb:
        return nb - 1
    return b


cdef Py_ssize_t _scan(Py_ssize_t i, const double[:, ::1] wrapped, const double[:, ::1] points,
                      const Py_ssize_t[::1] point_atom, const int[:, ::1] point_shift,
                      const Py_ssize_t[::1] self_point, const Py_ssize_t[::1] bin_start,
                      const Py_ssize_t* nb, const double* lo, const double* width, int reach,
                      double cutoff2, const cnp.int64_t[:, ::1] offset,
                      Py_ssize_t out, Py_ssize_t end, Py_ssize_t[::1] j_out,
                      cnp.int64_t[:, ::1] S_out, double[:, ::1] D_out, double[::1] d_out,
                      bint fill) noexcept nogil:
    """Count (fill=0) or write (fill=1, to entries out:end) the neighbors of atom i; return
    the count.

    Points are sorted by bin, so the bins c2 - reach .. c2 + reach of one (c0, c1) are one
    contiguous range."""
    cdef Py_ssize_t b0, b1, b2, c0, c1, lo2, hi2, p, q, a, count = 0, me = self_point[i]
    cdef double x = wrapped[i, 0], y = wrapped[i, 1], z = wrapped[i, 2], dx, dy, dz, r2
    b0 = _bin_of(x, lo[0], width[0], nb[0])
    b1 = _bin_of(y, lo[1], width[1], nb[1])
    b2 = _bin_of(z, lo[2], width[2], nb[2])
    lo2 = max(b2 - reach, 0)
    hi2 = min(b2 + reach, nb[2] - 1)
    for c0 in range(max(b0 - reach, 0), min(b0 + reach, nb[0] - 1) + 1):
        for c1 in range(max(b1 - reach, 0), min(b1 + reach, nb[1] - 1) + 1):
            q = (c0 * nb[1] + c1) * nb[2]
            if not fill:
                for p in range(bin_start[q + lo2], bin_start[q + hi2 + 1]):
                    dx = points[p, 0] - x
                    dy = points[p, 1] - y
                    dz = points[p, 2] - z
                    count += (dx * dx + dy * dy + dz * dz) < cutoff2
                continue
            for p in range(bin_start[q + lo2], bin_start[q + hi2 + 1]):
                dx = points[p, 0] - x
                dy = points[p, 1] - y
                dz = points[p, 2] - z
                r2 = dx * dx + dy * dy + dz * dz
                if not (r2 < cutoff2) or p == me:        # the count pass's test
                    continue
                if out + count >= end:                  # never past the counted entries
                    count += 1
                    continue
                a = point_atom[p]
                j_out[out + count] = a
                S_out[out + count, 0] = point_shift[p, 0] - offset[a, 0] + offset[i, 0]
                S_out[out + count, 1] = point_shift[p, 1] - offset[a, 1] + offset[i, 1]
                S_out[out + count, 2] = point_shift[p, 2] - offset[a, 2] + offset[i, 2]
                D_out[out + count, 0] = dx
                D_out[out + count, 1] = dy
                D_out[out + count, 2] = dz
                d_out[out + count] = sqrt(r2)
                count += 1
    if not fill:        # the count took in atom i itself (r2 = 0), the fill skips it
        count -= (me >= 0) & (0.0 < cutoff2)
    return count


def build(const double[:, ::1] positions, const double[:, ::1] cell,
          const double[:, ::1] inverse, pbc, double cutoff, int num_threads=1,
          const unsigned char[::1] is_center=None):
    """Full neighbor list of `positions` (n, 3) A in a complete, invertible `cell` (3, 3).

    `inverse` is inv(cell) (fractional = positions @ inverse); `pbc` three bools.
    Returns (first, j, S, D, d): CSR offsets (n+1,), neighbor atoms (m,), integer shifts
    (m, 3), vectors D = r_j - r_i + S @ cell (m, 3) A and distances (m,) A. Entries of
    atom i are first[i]:first[i+1], in a deterministic order. With `is_center` (n,) only
    the atoms where it is nonzero get entries (the others still count as neighbors).
    """
    cdef Py_ssize_t n = positions.shape[0]
    cdef Py_ssize_t i, k, a, s0, s1, s2, m, p, q, r
    cdef int[3] periodic
    cdef long[3] nshift
    cdef double[3] reach, lo, hi, width
    cdef Py_ssize_t[3] nb
    cdef double norm, s, x
    for k in range(3):
        periodic[k] = 1 if pbc[k] else 0
        norm = sqrt(inverse[0, k] ** 2 + inverse[1, k] ** 2 + inverse[2, k] ** 2)
        reach[k] = cutoff * norm          # cutoff in units of the lattice-plane spacing
        reach[k] += 1e-9 * (1.0 + reach[k])  # admit borderline images; distances decide
        nshift[k] = <long>ceil(reach[k]) if periodic[k] else 0

    frac_np = np.asarray(positions) @ np.asarray(inverse)
    cdef double[:, ::1] frac = frac_np
    offset_np = np.zeros((n, 3), dtype=np.int64)
    cdef cnp.int64_t[:, ::1] offset = offset_np
    for i in range(n):
        for k in range(3):
            if periodic[k]:
                if not fabs(frac[i, k]) < 4503599627370496.0:      # 2^52
                    raise ValueError(
                        f"atom {i} lies {frac[i, k]:.3g} cell lengths along periodic axis "
                        f"{k}: too far from the cell to wrap")
                offset[i, k] = <cnp.int64_t>floor(frac[i, k])
                frac[i, k] -= offset[i, k]
                if frac[i, k] >= 1.0:      # floor rounding at the upper face
                    frac[i, k] -= 1.0
                    offset[i, k] += 1
    wrapped_np = frac_np @ np.asarray(cell)
    cdef double[:, ::1] wrapped = wrapped_np

    # periodic images that can lie within the cutoff of the wrapped cell
    cdef Py_ssize_t npts = 0
    for a in range(n):
        for s0 in range(-nshift[0], nshift[0] + 1):
            for s1 in range(-nshift[1], nshift[1] + 1):
                for s2 in range(-nshift[2], nshift[2] + 1):
                    if _image_inside(frac, a, s0, s1, s2, periodic, reach):
                        npts += 1
    image_np = np.empty((npts, 3))
    image_atom_np = np.empty(npts, dtype=np.intp)
    image_shift_np = np.empty((npts, 3), dtype=np.intc)
    cdef double[:, ::1] image = image_np
    cdef Py_ssize_t[::1] image_atom = image_atom_np
    cdef int[:, ::1] image_shift = image_shift_np
    p = 0
    for a in range(n):
        for s0 in range(-nshift[0], nshift[0] + 1):
            for s1 in range(-nshift[1], nshift[1] + 1):
                for s2 in range(-nshift[2], nshift[2] + 1):
                    if _image_inside(frac, a, s0, s1, s2, periodic, reach):
                        for k in range(3):
                            image[p, k] = (wrapped[a, k] + s0 * cell[0, k]
                                           + s1 * cell[1, k] + s2 * cell[2, k])
                        image_atom[p] = a
                        image_shift[p, 0] = s0
                        image_shift[p, 1] = s1
                        image_shift[p, 2] = s2
                        p += 1

    # Cartesian bins of about half the cutoff (at most ~4 per point); a central atom scans
    # the bins within `bin_reach` of its own
    for k in range(3):
        lo[k] = 0.0
        hi[k] = 0.0
    if npts > 0:
        for k in range(3):
            lo[k] = image[0, k]
            hi[k] = image[0, k]
        for p in range(npts):
            for k in range(3):
                x = image[p, k]
                if x < lo[k]:
                    lo[k] = x
                if x > hi[k]:
                    hi[k] = x
    cdef bint all_centers = is_center is None
    if not all_centers and is_center.shape[0] != n:
        raise ValueError(f"is_center has {is_center.shape[0]} entries for {n} atoms")
    cdef double max_bins = 4.0 * npts + 64.0, nbk
    for k in range(3):            # in floating point: a wide spread must not overflow
        nbk = floor((hi[k] - lo[k]) / (0.5 * cutoff))
        nb[k] = <Py_ssize_t>min(max(nbk, 1.0), max_bins)
    while <double>nb[0] * <double>nb[1] * <double>nb[2] > max_bins:
        for k in range(3):
            nb[k] = max(1, nb[k] // 2)
    cdef int bin_reach = 1
    for k in range(3):
        width[k] = max((hi[k] - lo[k]) / nb[k], 0.5 * cutoff)
        if nb[k] > 1:
            bin_reach = max(bin_reach, <int>ceil(cutoff / width[k]))
    cdef Py_ssize_t nbins = nb[0] * nb[1] * nb[2]
    bin_start_np = np.zeros(nbins + 1, dtype=np.intp)
    image_bin_np = np.empty(npts, dtype=np.intp)
    cdef Py_ssize_t[::1] bin_start = bin_start_np
    cdef Py_ssize_t[::1] image_bin = image_bin_np
    for p in range(npts):
        q = ((_bin_of(image[p, 0], lo[0], width[0], nb[0]) * nb[1]
              + _bin_of(image[p, 1], lo[1], width[1], nb[1])) * nb[2]
             + _bin_of(image[p, 2], lo[2], width[2], nb[2]))
        image_bin[p] = q
        bin_start[q + 1] += 1
    for q in range(nbins):
        bin_start[q + 1] += bin_start[q]

    # the images in bin order: points, their atoms and shifts; self_point[a] is atom a itself
    fill_np = bin_start_np[:-1].copy()
    cdef Py_ssize_t[::1] fill = fill_np
    points_np = np.empty((npts, 3))
    point_atom_np = np.empty(npts, dtype=np.intp)
    point_shift_np = np.empty((npts, 3), dtype=np.intc)
    self_point_np = np.full(n, -1, dtype=np.intp)
    cdef double[:, ::1] points = points_np
    cdef Py_ssize_t[::1] point_atom = point_atom_np
    cdef int[:, ::1] point_shift = point_shift_np
    cdef Py_ssize_t[::1] self_point = self_point_np
    for p in range(npts):
        q = image_bin[p]
        r = fill[q]
        fill[q] += 1
        a = image_atom[p]
        point_atom[r] = a
        for k in range(3):
            points[r, k] = image[p, k]
            point_shift[r, k] = image_shift[p, k]
        if image_shift[p, 0] == 0 and image_shift[p, 1] == 0 and image_shift[p, 2] == 0:
            self_point[a] = r

    # pass 1: count; pass 2: fill
    first_np = np.zeros(n + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] first = first_np
    cdef double cutoff2 = cutoff * cutoff
    j_np = np.empty(0, dtype=np.intp)
    S_np = np.empty((0, 3), dtype=np.int64)
    D_np = np.empty((0, 3))
    d_np = np.empty(0)
    cdef Py_ssize_t[::1] j_out = j_np
    cdef cnp.int64_t[:, ::1] S_out = S_np
    cdef double[:, ::1] D_out = D_np
    cdef double[::1] d_out = d_np
    for i in prange(n, nogil=True, num_threads=num_threads, schedule="static"):
        if all_centers or is_center[i]:
            first[i + 1] = _scan(i, wrapped, points, point_atom, point_shift, self_point,
                                 bin_start, nb, lo, width, bin_reach, cutoff2, offset, 0, 0,
                                 j_out, S_out, D_out, d_out, 0)
    for i in range(n):
        first[i + 1] += first[i]
    m = first[n]
    j_np = np.empty(m, dtype=np.intp)
    S_np = np.empty((m, 3), dtype=np.int64)
    D_np = np.empty((m, 3))
    d_np = np.empty(m)
    j_out = j_np
    S_out = S_np
    D_out = D_np
    d_out = d_np
    found_np = np.empty(n, dtype=np.intp)
    cdef Py_ssize_t[::1] found = found_np
    for i in prange(n, nogil=True, num_threads=num_threads, schedule="static"):
        found[i] = 0
        if all_centers or is_center[i]:
            found[i] = _scan(i, wrapped, points, point_atom, point_shift, self_point,
                             bin_start, nb, lo, width, bin_reach, cutoff2, offset, first[i],
                             first[i + 1], j_out, S_out, D_out, d_out, 1)
    if not np.array_equal(found_np, np.diff(first_np)):
        raise RuntimeError("neighbor search: the count and fill passes disagree "
                           "(non-finite coordinates?)")
    return first_np, j_np, S_np, D_np, d_np


cdef inline bint _image_inside(const double[:, ::1] frac, Py_ssize_t a, long s0, long s1, long s2,
                               const int* periodic, const double* reach) noexcept nogil:
    cdef double f
    if periodic[0]:
        f = frac[a, 0] + s0
        if f <= -reach[0] or f >= 1.0 + reach[0]:
            return 0
    if periodic[1]:
        f = frac[a, 1] + s1
        if f <= -reach[1] or f >= 1.0 + reach[1]:
            return 0
    if periodic[2]:
        f = frac[a, 2] + s2
        if f <= -reach[2] or f >= 1.0 + reach[2]:
            return 0
    return 1


def refresh(const Py_ssize_t[::1] first, const Py_ssize_t[::1] j, const double[:, ::1] shift,
            const double[:, ::1] positions, double[:, ::1] D, double[::1] d):
    """D[e] = positions[j[e]] - positions[i] + shift[e] and d[e] = |D[e]| for every entry e
    of every atom i (entries first[i]:first[i+1]); shift (m, 3) is S @ cell in Angstrom."""
    cdef Py_ssize_t n = first.shape[0] - 1, i, e
    cdef int k
    with nogil:
        for i in range(n):
            for e in range(first[i], first[i + 1]):
                for k in range(3):
                    D[e, k] = positions[j[e], k] - positions[i, k] + shift[e, k]
        for e in range(first[n]):       # a separate loop: vector square roots
            d[e] = sqrt(D[e, 0] * D[e, 0] + D[e, 1] * D[e, 1] + D[e, 2] * D[e, 2])
