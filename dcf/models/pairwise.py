"""Pairwise direct forces, a DCF head beyond the paper: F_i = sum_j c_ij r̂_ij with c_ij = c_ji.

Each atom's invariant fingerprints G_i (the spec's G terms, normalized per element as in B–P)
go through a small network of its element, giving two embeddings a_i, b_i, each (B, K). For
every pair closer than the pair cutoff r_p:

    c_ij = sum_b phi_b(r_ij) [ sum_k (a_ibk b_jbk + a_jbk b_ibk) + w_b(el_i, el_j) ]   (eV/A)
    phi_b(r) = exp(-((r - mu_b) / sigma)^2) fc(r),   fc(r) = (cos(pi r / r_p) + 1) / 2
    F_i = sum_j c_ij r̂_ij,   r̂_ij = (r_j - r_i) / r_ij                                 (eV/A)

with B Gaussians mu_b evenly from `basis_start` to r_p (sigma their spacing) and w a symmetric
table per element pair. c_ij is invariant and symmetric in i and j, r̂_ij rotates with the
structure and r̂_ji = -r̂_ij, so

* F(T R) = T F(R) for every rotation T (exactly covariant);
* sum_i F_i = 0 and sum_i r_i x F_i = 0 (Newton's third law, to round-off).

The force on i depends on the environments of i and of its neighbors within r_p, as a B–P
force does (reach Rc + r_p), yet no fingerprint derivative is computed: one G pass, one network
per atom and a sum over pairs. Periodic images of an atom itself come in +S/-S pairs whose
terms cancel, so they are skipped. Training lives in `dcf.training.pairwise`.
"""
from __future__ import annotations

import numpy as np

from dcf._ext import pairs as _pairs
from dcf.descriptors.fingerprints import Featurizer
from dcf.descriptors.neighbors import MD_SKIN, build_neighbor_list, resolve_threads
from dcf.descriptors.spec import FingerprintSpec, invariant_spec
from dcf.models.mlp import MLP, blas_threads
from dcf.models.modelfile import (ModelFileError, register_model_kind, stored_spec,
                                  write_model_file)
from dcf.models.repulsion import add_baseline, baseline_metadata
from dcf.parallel import SerialComm


class PairBasis:
    """The radial functions phi_b(r) (m, B) of the pair coefficients, r in A."""

    def __init__(self, r_pair: float, n_basis: int, start: float):
        if not 0 < start < r_pair:
            raise ValueError(f"pair basis: need 0 < start ({start}) < pair cutoff ({r_pair})")
        if n_basis < 2:
            raise ValueError(f"pair basis: need at least 2 radial functions, got {n_basis}")
        self.r_pair, self.n_basis, self.start = float(r_pair), int(n_basis), float(start)
        self.centers = np.linspace(self.start, self.r_pair, self.n_basis)
        self.width = (self.r_pair - self.start) / (self.n_basis - 1)

    def __call__(self, r: np.ndarray) -> np.ndarray:
        fc = 0.5 * (np.cos(np.pi * r / self.r_pair) + 1.0)
        return np.exp(-((r[:, None] - self.centers) / self.width) ** 2) * fc[:, None]


def half_pairs(i, j, D, d, r_pair):
    """Entries (i < j, d < r_pair) of a full neighbor list: each pair of distinct atoms once
    per periodic image. Returns (i, j, D (m, 3) A, d (m,) A)."""
    keep = (i < j) & (d < r_pair)
    return i[keep], j[keep], D[keep], d[keep]


@register_model_kind
class PairwiseModel:
    """A trained pairwise direct-force model.

    spec: the FingerprintSpec of the data (only its G terms are used); networks[el]: MLP
    from the nG_el normalized fingerprints to 2 B K outputs (a, then b, each (B, K));
    g_mean[el], g_std[el] (nG_el,); pair_weights (n_el, n_el, B) eV/A, symmetric;
    basis: PairBasis; rank: K; training: a JSON-serializable record.
    """

    kind = "dcf-pairwise"
    label = "DCF pairwise"
    implemented_properties = ("forces",)

    def __init__(self, spec, networks: dict, g_mean: dict, g_std: dict,
                 pair_weights: np.ndarray, basis: PairBasis, rank: int,
                 training: dict | None = None, num_threads: int | None = None):
        self.spec = FingerprintSpec.resolve(spec)
        self.elements = tuple(self.spec.elements)
        self.networks = dict(networks)
        self.g_mean = {el: np.asarray(v, dtype=float) for el, v in g_mean.items()}
        self.g_std = {el: np.asarray(v, dtype=float) for el, v in g_std.items()}
        self.pair_weights = np.asarray(pair_weights, dtype=float)
        self.basis, self.rank = basis, int(rank)
        self.training = dict(training or {})
        self._check()
        self._inv_std = {el: 1.0 / self.g_std[el] for el in self.elements}
        self._featurizer = Featurizer(invariant_spec(self.spec), num_threads, skin=MD_SKIN)
        self._reuse_list = self.basis.r_pair <= self._featurizer.spec.max_cutoff
        self.comm = SerialComm()
        self.baseline = None

    def _check(self) -> None:
        n_el, B, K = len(self.elements), self.basis.n_basis, self.rank
        if self.pair_weights.shape != (n_el, n_el, B):
            raise ValueError(f"pairwise model: pair weights of shape {self.pair_weights.shape},"
                             f" expected {(n_el, n_el, B)}")
        if not np.array_equal(self.pair_weights, self.pair_weights.transpose(1, 0, 2)):
            raise ValueError("pairwise model: the pair weights must be symmetric in the "
                             "two elements")
        for el in self.elements:
            n_g = self.spec.n_features(el)[0]
            for what, table in (("network", self.networks), ("feature mean", self.g_mean),
                                ("feature std", self.g_std)):
                if el not in table:
                    raise ValueError(f"pairwise model: no {what} for element {el}")
            net = self.networks[el]
            if net.n_inputs != n_g or net.n_outputs != 2 * B * K:
                raise ValueError(f"pairwise model: the {el} network maps {net.n_inputs} -> "
                                 f"{net.n_outputs}; expected {n_g} -> {2 * B * K}")
            if self.g_mean[el].shape != (n_g,) or self.g_std[el].shape != (n_g,):
                raise ValueError(f"pairwise model: normalization of {el} has the wrong shape")
            if not np.all(np.isfinite(self.g_std[el])) or not np.all(self.g_std[el] > 0):
                raise ValueError(f"pairwise model: feature std of {el} must be positive")

    def set_threads(self, num_threads: int) -> None:
        """OpenMP threads of the fingerprint kernels."""
        self._featurizer.num_threads = resolve_threads(num_threads)

    def set_precision(self, precision: str) -> None:
        """Evaluate the embedding networks in "float64" (default) or "float32" (MLP)."""
        for net in self.networks.values():
            net.set_precision(precision)

    def set_communicator(self, comm) -> None:
        """Share every force call among MPI ranks (a `dcf.parallel` communicator): each rank
        embeds a block of the atoms and sums a block of the pairs. Every rank must then call
        with the same atoms."""
        self.comm = comm

    # ---- inference --------------------------------------------------------------------
    def embeddings(self, feats, n_atoms: int) -> np.ndarray:
        """(n_atoms, 2, B, K) embeddings a, b of the atoms in `feats` (zero for the others)."""
        B, K = self.basis.n_basis, self.rank
        u = np.zeros((n_atoms, 2 * B * K))
        with blas_threads(self._featurizer.num_threads):
            for el in self.elements:
                if len(feats.index[el]):
                    x = (feats.G[el] - self.g_mean[el]) * self._inv_std[el]
                    u[feats.index[el]] = self.networks[el](x)
        return u.reshape(n_atoms, 2, B, K)

    def forces(self, atoms) -> np.ndarray:
        """Forces (n, 3) eV/A."""
        fz = self._featurizer
        comm = self.comm
        env = fz.environment(atoms, part=(comm.rank, comm.size))
        n = len(atoms)
        u = self.embeddings(fz.features(env), n)
        if comm.size > 1:
            u = comm.sum(u.ravel()).reshape(u.shape)
        nl = env.neighbors if self._reuse_list else build_neighbor_list(
            atoms.positions, atoms.cell.array, atoms.pbc, self.basis.r_pair, fz.num_threads)
        bounds = np.linspace(0, n, comm.size + 1).astype(int)
        F = self.pair_forces(u, env.species, nl, bounds[comm.rank], bounds[comm.rank + 1])
        F = comm.sum(F) if comm.size > 1 else F
        return add_baseline({"forces": F}, self.baseline, atoms, env.neighbors)["forces"]

    def pair_forces(self, u, species, nl, lo: int, hi: int) -> np.ndarray:
        """Forces (n, 3) eV/A of the pairs (i, j > i) of atoms lo <= i < hi in neighbor list
        `nl`, from embeddings u (n, 2, B, K) and species (n,) (indices into elements)."""
        n = len(u)
        F = np.zeros((n, 3))
        _pairs.pair_forces(u.reshape(n, -1), species, self.pair_weights.ravel(), nl.first,
                           nl.j, nl.D, nl.d, self.basis.r_pair, self.basis.start,
                           self.basis.width, len(self.elements), self.basis.n_basis, self.rank,
                           lo, hi, F)
        return F

    def compute(self, atoms, properties=("forces",)) -> dict:
        """The ASE calculator contract: {"forces": (n, 3)}."""
        return {"forces": self.forces(atoms)}

    def missing_property_reason(self, name: str) -> str:
        return (f"a pairwise DCF model predicts forces directly; they are not the gradient of "
                f"an energy, so there is no {name!r}. Run MD with a thermostat, or train the "
                f"Behler-Parrinello model (`dcf train --model bp`) for energies and stress.")

    def calculator(self):
        from dcf.models.calculator import ModelCalculator
        return ModelCalculator(self)

    # ---- model file -------------------------------------------------------------------
    def metadata(self) -> dict:
        act = {self.networks[el].activation for el in self.elements}
        return {"model": self.kind, "spec": self.spec.to_dict(),
                "spec_sha256": self.spec.fingerprint, "activation": act.pop(),
                "pair_cutoff": self.basis.r_pair, "n_basis": self.basis.n_basis,
                "basis_start": self.basis.start, "rank": self.rank,
                "training": self.training, **baseline_metadata(self.baseline)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"pair_weights": self.pair_weights}
        for el in self.elements:
            arrays.update(self.networks[el].to_arrays(f"{el}/nn"))
            arrays[f"{el}/g_mean"] = self.g_mean[el]
            arrays[f"{el}/g_std"] = self.g_std[el]
        return arrays

    def save(self, path):
        """Write the model file (see dcf.models.modelfile); returns its path."""
        return write_model_file(path, self.metadata(), self.to_arrays())

    @classmethod
    def from_file(cls, metadata: dict, arrays: dict, num_threads: int | None = None):
        """Rebuild a model from `read_model_file` output; raises ModelFileError for a file
        that is not a consistent pairwise model."""
        if metadata.get("model") != cls.kind:
            raise ModelFileError(f"not a pairwise model file (model {metadata.get('model')!r})")
        try:
            spec = stored_spec(metadata)
            act = metadata["activation"]
            networks = {el: MLP.from_arrays(arrays, f"{el}/nn", act) for el in spec.elements}
            basis = PairBasis(metadata["pair_cutoff"], metadata["n_basis"],
                              metadata["basis_start"])
            return cls(spec, networks, {el: arrays[f"{el}/g_mean"] for el in spec.elements},
                       {el: arrays[f"{el}/g_std"] for el in spec.elements},
                       arrays["pair_weights"], basis, metadata["rank"],
                       metadata.get("training"), num_threads)
        except ModelFileError:
            raise
        except (KeyError, ValueError, TypeError) as err:
            raise ModelFileError(f"inconsistent pairwise model file: {err!s}") from None
