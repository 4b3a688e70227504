"""A dcf model as an i-PI 3 PES, for i-PI's own Python driver and for ``<ffdirect>``.

i-PI loads a user PES from a Python file that names its class in ``__DRIVER_CLASS__``; this
module is such a file (so is ``drivers/dcf_pes.py``, which imports it). Parameters are the
model file and a template structure with i-PI's atoms in i-PI's order (e.g. its init file):

    i-pi-py_driver -m custom -P drivers/dcf_pes.py -u -a NAME \\
        -o model=model.dcf,template=init.extxyz

    <ffdirect name="dcf" pbc="false">
      <pes>custom</pes> <pes_path>dcf_pes.py</pes_path>
      <parameters>{model: model.dcf, template: init.extxyz}</parameters>
    </ffdirect>

``<ffdirect>`` evaluates the model inside the i-PI process, with no socket round trip. Units
are converted here, at the i-PI boundary: i-PI sends Bohr (cell vectors as columns) and takes
Hartree, Hartree/Bohr and a virial in Hartree. As with the socket driver (dcf.dynamics.ipi),
a DCF model has no energy: it returns 0 and a zero virial, so use a thermostat; a B–P model
returns its energy and, for a cell periodic in all directions, its virial.
"""
from __future__ import annotations

import numpy as np
from ipi.pes.dummy import Dummy_driver
from ipi.utils.units import unit_to_internal, unit_to_user

from dcf.data.formats import read
from dcf.dynamics.ipi import virial
from dcf.models import load_model

__DRIVER_NAME__ = "dcf"
__DRIVER_CLASS__ = "DCFDriver"


class DCFDriver(Dummy_driver):
    """i-PI PES around a dcf model file.

    model: the model file (.dcf); template: a structure file with i-PI's atoms in i-PI's
    order (its last frame is used; pbc comes from it); threads: OpenMP threads of the
    fingerprint kernels (default: the model's).
    """

    def __init__(self, model, template, threads=None, *args, **kwargs):
        self.model_path, self.template_path, self.threads = str(model), str(template), threads
        super().__init__(*args, **kwargs)

    def check_parameters(self):
        """Load the model and the template (i-PI calls this from the constructor)."""
        self.model = load_model(self.model_path)
        if self.threads is not None:
            self.model.set_threads(int(self.threads))
        self.atoms = read(self.template_path, -1)[0]
        self.atoms.calc = None
        self.model.spec.check_symbols(self.atoms.get_chemical_symbols(), self.template_path)
        self.properties = [p for p in ("energy", "forces", "stress")
                           if p in self.model.implemented_properties
                           and (p != "stress" or all(self.atoms.pbc))]

    def compute_structure(self, cell, pos):
        """(energy Ha, forces Ha/Bohr (n, 3), virial Ha (3, 3), extras "") of one structure
        given as i-PI's cell (3, 3) Bohr, vectors as columns, and positions (n, 3) Bohr."""
        pos = np.asarray(pos, dtype=float).reshape(-1, 3)
        if len(pos) != len(self.atoms):
            raise ValueError(f"i-PI sent {len(pos)} atoms; the template {self.template_path} "
                             f"has {len(self.atoms)}")
        self.atoms.cell[:] = unit_to_user("length", "angstrom", np.asarray(cell).T)
        self.atoms.positions[:] = unit_to_user("length", "angstrom", pos)
        results = self.model.compute(self.atoms, self.properties)
        energy = unit_to_internal("energy", "electronvolt", results.get("energy", 0.0))
        forces = unit_to_internal("force", "ev/ang", results["forces"])
        w = unit_to_internal("energy", "electronvolt", virial(results, self.atoms))
        return float(energy), np.asarray(forces, dtype=np.float64), np.asarray(w), ""
