"""Descriptors: what the networks see of an atom's environment.

* `spec`: the declarative fingerprint spec (terms G1–G5 and A1 per central element, their
  parameters and cutoffs), its JSON file and the shipped presets (the paper's Tables S1–S4,
  in `presets/`).
* `neighbors`: full neighbor lists with periodic images (cell lists in `dcf._ext.neighbors`),
  and the Verlet list with a skin used in MD.
* `fingerprints`: the `Featurizer` that turns an `ase.Atoms` into invariant fingerprints G,
  covariant axes A, and, for B–P, dG/dr or the fused dE/dG·dG/dr force pass, by calling the
  compiled kernels in `dcf._ext` (the portable, AVX2 or AVX-512 build).

Imports only `dcf._ext` and the leaf modules.
"""
