"""Training (the only part of dcf that imports TensorFlow, and only inside functions).

* `core`: the training core both trainers share (options and flags, validation split,
  normalizer, early stopping and schedule, Adam, checkpoints, learning curves).
* `dcf`: DCF training, the paper's staggered NN1 -> NN2 -> NN3 plan and the covariant head.
* `bp`: Behler–Parrinello training on energies and forces.

``from dcf.training import train_dcf, train_bp`` costs no TensorFlow import until a model is
trained.
"""
from __future__ import annotations

import importlib

_LAZY = {"train_dcf": ("dcf.training.dcf", "train"), "train_bp": ("dcf.training.bp", "train_bp"),
         "DCFTrainingConfig": ("dcf.training.dcf", "DCFTrainingConfig"),
         "BPTrainConfig": ("dcf.training.bp", "BPTrainConfig")}


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'dcf.training' has no attribute {name!r}")


__all__ = sorted(_LAZY)
