"""Training on top of a short-range baseline (`dcf train --baseline zbl`).

The baseline (dcf.models.repulsion.ZBL) is fixed before training from the training frames'
shortest pair distances; every trainer then fits the residual, reference minus baseline
(energy and forces), through `ResidualStore`, a feature store whose forces and energies are
the residuals; the trained model carries the baseline and adds it back at inference.
"""
from __future__ import annotations

import numpy as np

from dcf.descriptors.neighbors import shortest_pair_distances
from dcf.models.repulsion import ZBL

BASELINES = ("none", "zbl")


def add_baseline_arguments(group) -> None:
    group.add_argument("--baseline", choices=BASELINES, default="zbl",
                       help="a short-range repulsive baseline the networks learn on top of: "
                            "zbl = ZBL screened nuclear repulsion, switched off at each element "
                            "pair's shortest distance in the training frames (zero where the "
                            "data lie, repulsive closer in: it keeps MD from fusing atoms where "
                            "the networks extrapolate; docs/md.md); none = networks alone. "
                            "Default: zbl")
    group.add_argument("--zbl-outer", type=float, default=None, metavar="A",
                       help="the ZBL outer radius of every pair (A; default: each pair's "
                            "shortest distance in the training frames)")
    group.add_argument("--zbl-inner-fraction", type=float, default=0.5, metavar="X",
                       help="the ZBL inner radius as a fraction of the outer one (the "
                            "switching region is inner..outer); default 0.5")


def choose_baseline(frames, elements, kind: str = "zbl", outer: float | None = None,
                    inner_fraction: float = 0.5) -> ZBL | None:
    """The baseline for training on `frames` (ase.Atoms): None for kind "none"; for "zbl",
    radii from the frames' shortest pair distances (`ZBL.from_min_distances`)."""
    if kind == "none":
        return None
    if kind != "zbl":
        raise ValueError(f"unknown baseline {kind!r} (known: {', '.join(BASELINES)})")
    if outer is not None and not (np.isfinite(outer) and outer > 0):
        raise ValueError(f"--zbl-outer must be a positive distance in A, got {outer}")
    shortest = shortest_pair_distances(frames, 4.0) if outer is None else {}
    return ZBL.from_min_distances(tuple(elements), shortest, inner_fraction, outer)


def baseline_from_args(store, args) -> ZBL | None:
    """`choose_baseline` from `dcf train`'s arguments, on the store's training frames."""
    kind = getattr(args, "baseline", "zbl") or "none"
    if kind == "none":
        return None
    frames = (store.frame(int(k)) for k in store.frame_ids("train"))
    return choose_baseline(frames, store.elements, kind, getattr(args, "zbl_outer", None),
                           getattr(args, "zbl_inner_fraction", 0.5))


class ResidualStore:
    """A FeatureStore (or MemoryFeatures) whose reference forces and energies are minus the
    baseline's: snapshots' F, and frames' forces and energy. Everything else is the store's.
    The baseline of every frame is computed once, at construction."""

    def __init__(self, store, baseline: ZBL):
        self.store, self.baseline = store, baseline
        forces, self._energy = [], np.zeros(store.n_frames)
        for k in range(store.n_frames):
            t = baseline.atoms_terms(store.frame(k))
            forces.append(t.forces)
            self._energy[k] = t.energy
        self._first = np.cumsum([0] + [len(f) for f in forces])
        self._forces = np.concatenate(forces) if forces else np.zeros((0, 3))

    def __getattr__(self, name):
        return getattr(self.store, name)

    def _residual_rows(self, batch: dict) -> dict:
        out = dict(batch)
        rows = self._first[np.asarray(batch["frame"], np.intp)] + np.asarray(batch["atom"], np.intp)
        out["F"] = np.asarray(batch["F"], float) - self._forces[rows]
        return out

    def snapshots(self, el, split=None) -> dict:
        return self._residual_rows(self.store.snapshots(el, split))

    def batches(self, el, batch_size, *args, **kwargs):
        for batch in self.store.batches(el, batch_size, *args, **kwargs):
            yield self._residual_rows(batch)

    def frame(self, k):
        """Frame k as an ase.Atoms whose calculator holds the residual forces (and energy)."""
        from ase.calculators.singlepoint import SinglePointCalculator

        original = self.store.frame(k)
        ref, atoms = original.calc.results, original.copy()     # the store's own stays as is
        k = int(k)
        results = {"forces": ref["forces"] - self._forces[self._first[k]:self._first[k + 1]]}
        if "energy" in ref:
            results["energy"] = ref["energy"] - self._energy[k]
        atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    def frames(self, split=None):
        for k in self.store.frame_ids(split):
            yield int(k), self.frame(int(k))
