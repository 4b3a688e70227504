"""An ASE calculator around any dcf model (DCF: forces; B–P: energy, forces, stress).

The model provides the physics through a small contract:

* ``model.implemented_properties``: the ASE property names it computes;
* ``model.compute(atoms, properties) -> dict``: those properties in ASE units
  (energy eV, forces eV/A (n, 3), stress eV/A^3 in Voigt order xx, yy, zz, yz, xz, xy);
* ``model.missing_property_reason(name) -> str``: why a property is not provided.
"""
from __future__ import annotations

from ase.calculators.calculator import (Calculator, PropertyNotImplementedError,
                                        all_changes)


class ModelCalculator(Calculator):
    """ASE calculator for a dcf model; results are cached until the atoms change."""

    def __init__(self, model, **kwargs):
        self.model = model
        self.implemented_properties = list(model.implemented_properties)
        super().__init__(**kwargs)

    def calculate(self, atoms=None, properties=("forces",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        wanted = [p for p in properties if p in self.implemented_properties] or ["forces"]
        self.results.update(self.model.compute(self.atoms, wanted))

    def get_property(self, name, atoms=None, allow_calculation=True):
        if name not in self.implemented_properties:
            raise PropertyNotImplementedError(self.model.missing_property_reason(name))
        return super().get_property(name, atoms, allow_calculation)
