# The terms of one central element as the fingerprint kernels read them, and the kernels'
# constants. The one declaration of both: fingerprints.pyx binds the arrays (CompiledTerms)
# and exports the constants to Python; dcf.descriptors.fingerprints builds the arrays.

cdef enum:
    # what `compute` evaluates per central atom
    MODE_VALUES = 0         # G and A
    MODE_DERIVATIVES = 1    # G, A, dG/dD and dA/dD per neighbor entry
    MODE_FORCES = 2         # G and dE/dD per entry, for given dE/dG (fused B-P forces)

cdef enum:
    # kind codes in rad_kind and grp_kind
    KIND_G1 = 1
    KIND_G2 = 2
    KIND_G3 = 3
    KIND_G4 = 4
    KIND_G5 = 5

cdef enum:
    NPOLY = 16      # coefficients per pair-factor polynomial (degree 15; degree 11 padded)
    NPOW2 = 4       # the fused triplet loop takes zeta up to 2^NPOW2


cdef struct Terms:
    # Arrays are C-contiguous, owned by CompiledTerms; "per term" arrays follow the sorted
    # order of their section, and *_col is the term's column in G (or A for vectors).
    int n_species               # elements of the spec (species index of a neighbor)
    int n_rc                    # distinct cutoffs
    int n_fac                   # distinct (Rc, eta) radial factors of the angular groups
    int n_ang                   # angular terms (G4, G5)
    int n_grp                   # angular groups: (species pair, kind, Rc, eta)
    int nG                      # invariant columns
    int nA                      # vector columns
    const double* rc            # (n_rc,) the distinct cutoffs, Angstrom
    # -- radial terms G1, G2, G3, sorted by neighbor species
    const int* rad_start        # (n_species + 1,) terms of species s: rad_start[s]:[s + 1]
    const int* rad_kind         # KIND_G1, KIND_G2 or KIND_G3
    const int* rad_rc           # index into rc
    const double* rad_eta       # G2 width, 1/Angstrom^2
    const double* rad_rs        # G2 centre, Angstrom
    const double* rad_kappa     # G3 wave number, 1/Angstrom
    const int* rad_col          # column in G
    # -- radial factors exp(-eta r^2) fc(r) shared by the angular groups
    const int* fac_rc           # (n_fac,) index into rc
    const double* fac_eta       # (n_fac,) 1/Angstrom^2
    # -- angular groups, sorted by unordered species pair s1 * n_species + s2 (s1 <= s2)
    const int* pair_start       # (n_species^2 + 1,) groups of a pair: pair_start[k]:[k + 1]
    const double* pair_rc2      # (n_species^2,) triplets of a pair need r_jk^2 below this
                                # (inf where the pair has a G5 group), Angstrom^2
    const int* grp_kind         # (n_grp,) KIND_G4 or KIND_G5
    const int* grp_rc           # index into rc
    const int* grp_fac          # index of its radial factor (fac_*)
    const double* grp_eta       # 1/Angstrom^2
    const int* grp_start        # (n_grp + 1,) terms of group g: grp_start[g]:[g + 1]
    const int* grp_poly         # 11 or 15 where grp_pc, grp_pd replace exp() and fc(), else 0
    const double* grp_pc        # (n_grp, NPOLY) Q(s) = exp(-eta s) fc(sqrt s), s = r_jk^2,
                                # as a polynomial in t = 2 s / Rc^2 - 1
    const double* grp_pd        # (n_grp, NPOLY) dQ/ds the same way
    const int* grp_fused        # bit set of log2 zeta of its terms where every term has
                                # lambda = +-1, zeta in 1, 2, 4, ..., 2^NPOW2 and Q is a
                                # polynomial or 1 (G5): the group runs in triplets.h; else 0
    # -- angular terms, sorted by group
    const double* ang_zeta      # (n_ang,)
    const double* ang_lambda    # +-1 (any value in the unfused loops)
    const double* ang_coef      # 2^(1 - zeta)
    const double* ang_kzl       # coef zeta lambda
    const int* ang_izeta        # zeta as an integer, or -1
    const int* ang_mate         # a later term of the group with the same integer zeta (both
                                # |lambda| <= 1) that runs with this one; -2 for that later
                                # term, -1 if none
    const int* ang_slot         # its sum in a fused group: 2 log2(zeta) + (lambda < 0), else -1
    const int* ang_col          # column in G
    # -- vector terms V1, A1, sorted by neighbor species
    const int* vec_start        # (n_species + 1,) terms of species s: vec_start[s]:[s + 1]
    const int* vec_rc           # index into rc
    const double* vec_eta       # 1/Angstrom^2
    const double* vec_rs        # Angstrom
    const double* vec_delta     # A1 smoothing, Angstrom (0: the paper's V1 / |V1|)
    const int* vec_norm         # 1 for A1, 0 for V1
    const int* vec_col          # column in A
