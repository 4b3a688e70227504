# The fingerprint kernels built for AVX-512F + AVX2 + FMA, with 8-lane vectors (vec.h);
# dcf.descriptors.fingerprints picks this module where the CPU supports it. The source is
# fingerprints.pyx (README.md in this folder).
include "fingerprints.pyx"
