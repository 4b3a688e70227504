"""Dynamics: running a trained model as a force field.

* `md`: thermostatted MD through ASE (Langevin, Bussi, Nose–Hoover chain, NVE), starting
  velocities, per-element temperatures.
* `ipi`: the i-PI socket driver (UNIX or TCP) that serves a model's forces (and B–P energy
  and virial).
* `ipi_pes`: the model as an i-PI 3 PES class, for `i-pi-py_driver -m custom` and the
  in-process `<ffdirect>` (drivers/dcf_pes.py points i-PI at it).

Imports `dcf.models` and below.
"""
