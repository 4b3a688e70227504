"""Dynamics: running a trained model as a force field.

* `md`: thermostatted MD through ASE (Langevin, Bussi, Nose–Hoover chain, NVE), starting
  velocities, per-element temperatures.
* `ipi`: the i-PI socket driver (UNIX or TCP) that serves a model's forces (and B–P energy
  and virial).

Imports `dcf.models` and below.
"""
