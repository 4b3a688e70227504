# The scratch memory of one central atom: the one computation of its regions, which sizes the
# per-thread buffers (`compute`) and carves them (`_center`), so the two cannot disagree.
from dcf._ext.terms cimport Terms

cdef extern from "vec.h":
    const int DCF_LANES         # vector lanes: 8 in the AVX-512 build, else 4

cdef enum:
    # regions of doubles, in buffer order; m = the central atom's neighbor entries
    S_R             # (m,) r = |D|
    S_D             # (m, 3) D = r_j - r_i
    S_FC            # (m, n_rc) fc
    S_DFC           # (m, n_rc) dfc/dr
    S_P             # (m, n_fac) exp(-eta r^2) fc
    S_DP            # (m, n_fac) its d/dr
    S_V             # (nA, 3) sums V1
    S_J             # (nA, 9) dA/dV (J[9 a]: sum |D| g, the scale of V's round-off)
    S_PCS           # (m + 4,) cos theta of the partners (padded for the 4-lane power sums)
    S_PRJK2         # (m + 4,) r_jk^2 of the partners
    S_IR            # (m + 4,) 1 / r
    S_Q             # (m + 4,) pair factor Q(r_jk^2)
    S_DQ            # (m + 4,) dQ/d(r_jk^2)
    S_TW            # work space, one view per pass (below): the larger of the two
    N_REGIONS

cdef enum:
    # regions of ints, in buffer order
    S_SP            # (m,) neighbor species
    S_PARTNER       # (m,) partner entries
    S_BSTART        # (m + 1,) species blocks
    N_INT_REGIONS

cdef enum:
    # views of S_TW in the derivative and force passes (`_angular_gradients`): per partner
    # c of the first entry of a triplet, arrays (k, m) indexed [k * m + c]
    G_BASE          # (m,) P1 P2 Q
    G_U1            # (3, m) base d cos / dD1
    G_U2            # (3, m) base d cos / dD2
    G_W1            # (3, m) d(P1 P2 Q) / dD1
    G_W2            # (3, m) d(P1 P2 Q) / dD2
    G_ASUM          # (m,) forces: sum_a w_a coef zeta lambda x^(zeta - 1)
    G_BSUM          # (m,) forces: sum_a w_a coef x^zeta
    G_P1            # (m, 2) x^(zeta - 1) of two terms
    G_P             # (m, 2) x^zeta of two terms
    G_COLUMNS       # (8 + 2 n_fac, stride) for triplet_gradients.h: x, y, z, r^2, 1/r, P_q
                    # (n_fac), dP_q/dr (n_fac), then the force pass's sums GX, GY, GZ
    G_DG            # (3 nG + 3, stride) the derivative pass's sums dG_col/dD_n,i at
                    # [(3 col + i) stride + n], then 3 spare columns
    N_GRADIENT_VIEWS

cdef enum:
    # views of S_TW in the values pass (`_values`)
    V_COLUMNS       # (6 + n_fac + n_rc, stride): x, y, z, r^2, 1/r, P_q (n_fac), r, fc_q (n_rc),
                    # the first 5 + n_fac in the order triplets.h reads them
    V_LANES         # (n_grp, 10, DCF_LANES) the fused triplet sums of `_angular_values`
    N_VALUE_VIEWS


cdef struct Scratch:
    Py_ssize_t start[N_REGIONS]         # first double of each region
    Py_ssize_t length[N_REGIONS]        # its doubles
    Py_ssize_t size                     # doubles in all, guards included
    Py_ssize_t istart[N_INT_REGIONS]    # the same for the int regions
    Py_ssize_t ilength[N_INT_REGIONS]
    Py_ssize_t isize
    Py_ssize_t gstart[N_GRADIENT_VIEWS] # views of S_TW: first double, from the region's start
    Py_ssize_t glength[N_GRADIENT_VIEWS]
    Py_ssize_t vstart[N_VALUE_VIEWS]
    Py_ssize_t vlength[N_VALUE_VIEWS]
    Py_ssize_t stride                   # of the V_COLUMNS, G_COLUMNS and G_DG columns: m +
                                        # lanes, each readable to the next multiple of
                                        # DCF_LANES past m
    Py_ssize_t guard                    # unused elements after each region and view (0, or a
                                        # debug band)


cdef inline Scratch scratch_layout(const Terms* t, Py_ssize_t m, Py_ssize_t guard) noexcept nogil:
    """The regions (and the views of S_TW) for a central atom with m entries, each followed
    by `guard` spare elements. Every start and size grows with m: a buffer laid out for the
    largest m holds every central atom's."""
    cdef Scratch s
    cdef Py_ssize_t k, gradients = 0, values = 0
    s.guard = guard
    s.glength[G_BASE] = m
    for k in range(G_U1, G_W2 + 1):
        s.glength[k] = 3 * m
    s.glength[G_ASUM] = m
    s.glength[G_BSUM] = m
    s.glength[G_P1] = 2 * m
    s.glength[G_P] = 2 * m
    s.stride = m + DCF_LANES
    s.glength[G_COLUMNS] = (8 + 2 * t.n_fac) * s.stride
    s.glength[G_DG] = 3 * (t.nG + 1) * s.stride
    for k in range(N_GRADIENT_VIEWS):
        s.gstart[k] = gradients
        gradients += s.glength[k] + guard
    s.vlength[V_COLUMNS] = (6 + t.n_fac + t.n_rc) * s.stride
    s.vlength[V_LANES] = 10 * DCF_LANES * t.n_grp
    for k in range(N_VALUE_VIEWS):
        s.vstart[k] = values
        values += s.vlength[k] + guard
    s.length[S_R] = m
    s.length[S_D] = 3 * m
    s.length[S_FC] = m * t.n_rc
    s.length[S_DFC] = m * t.n_rc
    s.length[S_P] = m * t.n_fac
    s.length[S_DP] = m * t.n_fac
    s.length[S_V] = 3 * t.nA
    s.length[S_J] = 9 * t.nA
    for k in range(S_PCS, S_DQ + 1):
        s.length[k] = m + 4
    s.length[S_TW] = gradients if gradients > values else values
    s.ilength[S_SP] = m
    s.ilength[S_PARTNER] = m
    s.ilength[S_BSTART] = m + 1
    s.size = 0
    for k in range(N_REGIONS):
        s.start[k] = s.size
        s.size += s.length[k] + guard
    s.isize = 0
    for k in range(N_INT_REGIONS):
        s.istart[k] = s.isize
        s.isize += s.ilength[k] + guard
    return s
