"""Cost benchmarks behind `dcf bench`: what one MD step of DCF, B–P and a classical force field
costs on the paper's system B, and the markdown report and figures.

* `costs`: the measured quantities (force calls, MD steps, the classical LAMMPS baseline).
* `report`: turning pytest-benchmark results into `docs/benchmarks.md` and its figures.

The top of the library: it may import every other subpackage, and nothing imports it but
`dcf.cli.bench` and `benchmarks/`.
"""
