"""The trained potentials: numpy inference, the ASE calculator and the model file.

* `mlp`: the small dense networks both potentials are made of (numpy forward and backward).
* `dcf`: the Direct Covariant Forces model (Mailoa et al. 2019): NN1 maps invariant
  fingerprints G to internal forces F_int = A·F; a head (the paper's NN2, or the exactly
  covariant least-squares head) maps them back to a Cartesian force.
* `bp`: the Behler–Parrinello reference, E = sum_i NN_el(G_i), forces and stress from the fused
  dE/dG · dG/dr kernel.
* `pairwise`: the pairwise direct-force head beyond the paper, F_i = sum_j c_ij r̂_ij with
  c_ij = c_ji from both atoms' fingerprints: exactly covariant, Newton's third law exact.
* `calculator`: `ModelCalculator`, the ASE calculator around either model.
* `modelfile`: the versioned, pickle-free model file; `load_model` picks the class by kind
  (`MODEL_KINDS`, filled by `@register_model_kind` as bp, dcf and pairwise are imported
  here).

Imports only `dcf.descriptors` and the leaf modules (`dcf.files`, `dcf.parallel`); no
TensorFlow.
"""
from __future__ import annotations

from dcf.models.bp import BPModel
from dcf.models.calculator import ModelCalculator
from dcf.models.dcf import DCFModel
from dcf.models.modelfile import MODEL_KINDS, ModelFileError, load_model
from dcf.models.pairwise import PairwiseModel


__all__ = ["BPModel", "DCFModel", "ModelCalculator", "ModelFileError", "MODEL_KINDS",
           "PairwiseModel", "load_model"]
