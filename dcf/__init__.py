"""dcf: Direct Covariant Forces and Behler-Parrinello neural network force fields.

The public names load their subpackage on first use, so ``import dcf`` is cheap and never
imports TensorFlow (the trainers live in `dcf.training`).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "FingerprintSpec": "dcf.descriptors.spec", "SpecError": "dcf.descriptors.spec",
    "neighbor_list": "dcf.descriptors.neighbors",
    "Featurizer": "dcf.descriptors.fingerprints", "Features": "dcf.descriptors.fingerprints",
    "featurize": "dcf.descriptors.fingerprints",
    "load_model": "dcf.models", "DCFModel": "dcf.models.dcf", "BPModel": "dcf.models.bp",
    "ModelCalculator": "dcf.models.calculator", "ModelFileError": "dcf.models.modelfile",
    "FeatureStore": "dcf.data.store",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dcf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))
