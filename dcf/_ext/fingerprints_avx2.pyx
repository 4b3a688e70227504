# The fingerprint kernels built for AVX2 + FMA (x86-64-v3); dcf.descriptors.fingerprints picks this
# module where the CPU supports it. The source is fingerprints.pyx (README.md in this folder).
include "fingerprints.pyx"
