"""An ASE calculator around any dcf model (DCF: forces; B–P: energy, forces, stress).

The model provides the physics through a small contract:

* ``model.implemented_properties``: the ASE property names it computes;
* ``model.compute(atoms, properties) -> dict``: at least those properties, in ASE units
  (energy eV, forces eV/A (n, 3), stress eV/A^3 in Voigt order xx, yy, zz, yz, xz, xy), and
  every other one the same pass produced (B–P's energy with its forces), which the calculator
  keeps until the atoms change;
* ``model.missing_property_reason(name) -> str``: why a property is not provided.
"""
from __future__ import annotations

import os

import numpy as np
from ase.calculators.calculator import (Calculator, PropertyNotImplementedError,
                                        all_changes)

from dcf.models.modelfile import load_model


class ModelCalculator(Calculator):
    """ASE calculator for a dcf model, or for a model file: ``ModelCalculator("model.dcf")``.

    ``parameters`` (and ``todict()``, which ASE stores in trajectories) name the model: its
    kind, file path and the sha256 of the file's bytes (None for a model not read from a
    file), and its fingerprint spec. Results are cached until the atoms change.
    """

    name = "dcf"

    def __init__(self, model, **kwargs):
        if isinstance(model, (str, os.PathLike)):
            model = load_model(model)
        self.model = model
        self.implemented_properties = list(model.implemented_properties)
        super().__init__(**kwargs)
        source = getattr(model, "source", None) or {}
        self.parameters.update(model_kind=model.kind, model_path=source.get("path"),
                               model_sha256=source.get("sha256"), spec=model.spec.name,
                               spec_sha256=model.spec.fingerprint)

    def calculate(self, atoms=None, properties=("forces",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        wanted = [p for p in properties if p in self.implemented_properties] or ["forces"]
        self.results.update(self.model.compute(self.atoms, wanted))

    def check_state(self, atoms, tol=1e-15):
        """ASE's check, after quick exact ones: MD asks for the forces several times per step,
        and ASE's tolerant comparison costs more than a network evaluation. New positions
        give ["positions"] at once (whatever else changed, everything is recomputed)."""
        old = self.atoms
        if old is not None and len(old) == len(atoms):
            if not np.array_equal(old.positions, atoms.positions):
                return ["positions"]
            if (np.array_equal(old.numbers, atoms.numbers)
                    and np.array_equal(old.cell.array, atoms.cell.array)
                    and np.array_equal(old.pbc, atoms.pbc)
                    and all(_same_array(old.arrays.get(k), atoms.arrays.get(k))
                            for k in ("initial_charges", "initial_magmoms"))):
                return []
        return super().check_state(atoms, tol)

    def get_property(self, name, atoms=None, allow_calculation=True):
        if name not in self.implemented_properties:
            raise PropertyNotImplementedError(self.model.missing_property_reason(name))
        return super().get_property(name, atoms, allow_calculation)


def _same_array(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None
                                         and np.array_equal(a, b))
