"""The Behler–Parrinello (B–P) potential: E = sum_i NN_el(i)(G_i), evaluated in numpy.

Each element el has a small network NN_el mapping the normalized fingerprints of an atom,
x_i = (G_i - mean_el) / std_el, to its atomic energy, plus a fixed per-element reference energy
e_el (a least-squares fit of the training energies on composition):

    E_i = NN_el(x_i) + e_el,        E = sum_i E_i                                   (eV)

Forces and the virial follow from dE/dG_i = dNN/dx_i / std_el, contracted with dG/dr inside the
fused Cython kernel (`Featurizer.forces`), so no dG/dr array is ever formed:

    F_j = -sum_i sum_a dE/dG_ia dG_ia/dr_j      (eV/A),   W = -dE/dstrain (eV),   stress = -W/V

Training lives in `dcf.training.bp` (TensorFlow); this module needs only numpy and the core.
"""
from __future__ import annotations

import numpy as np

from dcf.descriptors.fingerprints import Featurizer
from dcf.models.mlp import MLP, blas_threads
from dcf.models.modelfile import (ModelFileError, register_model_kind, stored_spec,
                                  write_model_file)
from dcf.descriptors.neighbors import MD_SKIN, resolve_threads
from dcf.models.repulsion import add_baseline, baseline_metadata, virial_stress
from dcf.parallel import SerialComm
from dcf.descriptors.spec import FingerprintSpec, invariant_spec


@register_model_kind
class BPModel:
    """A trained B–P potential.

    spec: the FingerprintSpec the networks were trained on; networks[el]: MLP with
    spec.n_features(el)[0] inputs and one output (eV); g_mean[el], g_std[el] (nG_el,):
    input normalization; atom_energy[el]: reference energy e_el (eV); training: a
    JSON-serializable record of how the model was trained (saved in the model file).
    The Featurizer (compiled spec, buffers) is kept between calls, for MD. num_threads:
    threads of the fingerprint kernels (OpenMP) and of the networks' BLAS during a call
    (default: DCF_NUM_THREADS or OMP_NUM_THREADS, else 1).
    """

    kind = "bp"
    implemented_properties = ("energy", "free_energy", "energies", "forces", "stress")

    def __init__(self, spec, networks: dict, g_mean: dict, g_std: dict, atom_energy: dict,
                 training: dict | None = None, num_threads: int | None = None):
        self.spec = FingerprintSpec.resolve(spec)
        self.elements = tuple(self.spec.elements)
        self.networks = dict(networks)
        self.g_mean = {el: np.asarray(v, dtype=float) for el, v in g_mean.items()}
        self.g_std = {el: np.asarray(v, dtype=float) for el, v in g_std.items()}
        self.atom_energy = {el: float(v) for el, v in atom_energy.items()}
        self.training = dict(training or {})
        self._check()
        self._inv_std = {el: 1.0 / self.g_std[el] for el in self.elements}
        self.untrained = tuple(self.training.get("untrained_elements", ()))
        self._featurizer = Featurizer(invariant_spec(self.spec), num_threads, skin=MD_SKIN)
        self.comm = SerialComm()
        self.baseline = None

    def set_threads(self, num_threads: int) -> None:
        """Threads of the fingerprint kernels (OpenMP) and of the networks (BLAS)."""
        self._featurizer.num_threads = resolve_threads(num_threads)

    def set_precision(self, precision: str) -> None:
        """B-P networks run in "float64" only: the forces are the energy's gradient, and NVE
        energy conservation (docs/md.md) is measured at that precision."""
        if precision != "float64":
            raise ValueError(f"network precision {precision!r}: a B-P model evaluates its "
                             f"networks in float64 only (its forces are the gradient of its "
                             f"energy); float32 is for DCF models")

    def set_communicator(self, comm) -> None:
        """Share every energy/force call among MPI ranks (a `dcf.parallel` communicator): each
        rank takes a block of the central atoms; energies, forces and virial are summed.
        Every rank must then call with the same atoms."""
        self.comm = comm

    def _check(self) -> None:
        for el in self.elements:
            n_g = self.spec.n_features(el)[0]
            for what, table in (("network", self.networks), ("feature mean", self.g_mean),
                                ("feature std", self.g_std), ("reference energy",
                                                              self.atom_energy)):
                if el not in table:
                    raise ValueError(f"B-P model: no {what} for element {el}")
            net = self.networks[el]
            if net.n_inputs != n_g or net.n_outputs != 1:
                raise ValueError(f"B-P model: the {el} network maps {net.n_inputs} -> "
                                 f"{net.n_outputs}; the spec has {n_g} G features for {el} "
                                 f"and a B-P network has one output")
            if self.g_mean[el].shape != (n_g,) or self.g_std[el].shape != (n_g,):
                raise ValueError(f"B-P model: normalization of {el} has shape "
                                 f"{self.g_mean[el].shape}/{self.g_std[el].shape}, "
                                 f"expected ({n_g},)")
            if not np.all(self.g_std[el] > 0):
                raise ValueError(f"B-P model: feature std of {el} must be positive")

    # ---------------------------------------------------------------- physics
    def compute(self, atoms, properties=("energy", "forces")) -> dict:
        """ASE properties of `atoms`: energy, free_energy (eV), energies (n,) eV,
        forces (n, 3) eV/A, stress (6,) eV/A^3 in Voigt order xx, yy, zz, yz, xz, xy.

        Returns every property the pass computed, not only those asked for: the energies
        always; forces and (for a cell periodic in all directions) stress when either of
        them is asked for."""
        unknown = set(properties) - set(self.implemented_properties)
        if unknown:
            raise ValueError(f"B-P model cannot compute {sorted(unknown)}")
        if "stress" in properties and not all(atoms.pbc):
            raise ValueError("B-P model: stress needs a cell periodic in all three directions")
        present = set(atoms.get_chemical_symbols())
        for el in self.untrained:
            if el in present:
                raise ValueError(f"B-P model: the structure contains {el}, but the training "
                                 f"data had no {el} atoms; its network is untrained")
        fz = self._featurizer
        env = fz.environment(atoms, part=(self.comm.rank, self.comm.size))
        feats = fz.features(env)
        n = len(atoms)
        energies, dEdG = self.atomic_energies(feats, n)
        want_forces = "forces" in properties or "stress" in properties
        if want_forces:
            forces, virial = fz.forces(env, dEdG)
        if self.comm.size > 1:
            parts = [energies, forces.ravel(), virial.ravel()] if want_forces else [energies]
            total = self.comm.sum(np.concatenate(parts))
            energies = total[:n]
            if want_forces:
                forces, virial = total[n:4 * n].reshape(n, 3), total[4 * n:].reshape(3, 3)
        energy = float(energies.sum())
        out = {"energy": energy, "free_energy": energy, "energies": energies}
        if want_forces:
            out["forces"] = forces
            if all(atoms.pbc):
                out["stress"] = virial_stress(virial, env.volume)
        return add_baseline(out, self.baseline, atoms, env.neighbors)

    def atomic_energies(self, features, n_atoms: int) -> tuple[np.ndarray, dict]:
        """Atomic energies E_i (n_atoms,) eV of the central atoms of `features` (zero on the
        other atoms) and their gradients dE/dG[el] (n_el, nG_el) for `Featurizer.forces`."""
        energies = np.zeros(n_atoms)
        dEdG = {}
        with blas_threads(self._featurizer.num_threads):
            for el in self.elements:
                x = (features.G[el] - self.g_mean[el]) * self._inv_std[el]
                e, dEdx = self.networks[el].value_and_input_gradient(x)
                energies[features.index[el]] = e + self.atom_energy[el]
                dEdG[el] = dEdx * self._inv_std[el]
        return energies, dEdG

    def energy(self, atoms) -> float:
        """Total energy (eV)."""
        return self.compute(atoms, ("energy",))["energy"]

    def forces(self, atoms) -> np.ndarray:
        """Forces (n, 3) eV/A, -dE/dr."""
        return self.compute(atoms, ("forces",))["forces"]

    def missing_property_reason(self, name: str) -> str:
        return (f"the B-P model provides {', '.join(self.implemented_properties)}; "
                f"{name!r} is not one of them")

    def calculator(self):
        """An ASE calculator (energy, free_energy, energies, forces, stress)."""
        from dcf.models.calculator import ModelCalculator
        return ModelCalculator(self)

    # ---------------------------------------------------------------- files
    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {}
        for el in self.elements:
            arrays.update(self.networks[el].to_arrays(f"{el}/nn"))
            arrays[f"{el}/g_mean"] = self.g_mean[el]
            arrays[f"{el}/g_std"] = self.g_std[el]
        return arrays

    def metadata(self) -> dict:
        act = {self.networks[el].activation for el in self.elements}
        return {"model": self.kind, "spec": self.spec.to_dict(),
                "spec_sha256": self.spec.fingerprint, "activation": act.pop(),
                "atom_energy": self.atom_energy, "training": self.training,
                **baseline_metadata(self.baseline)}

    def save(self, path):
        """Write the model file (see dcf.models.modelfile); returns its path."""
        return write_model_file(path, self.metadata(), self.to_arrays())

    @classmethod
    def from_file(cls, metadata: dict, arrays: dict, num_threads: int | None = None):
        """Rebuild a model from `dcf.models.modelfile.read_model_file` output; raises ModelFileError
        for a file that is not a consistent B–P model."""
        if metadata.get("model") != cls.kind:
            raise ModelFileError(f"not a B-P model file (model {metadata.get('model')!r})")
        try:
            spec = stored_spec(metadata)
            act = metadata["activation"]
            networks = {el: MLP.from_arrays(arrays, f"{el}/nn", act) for el in spec.elements}
            g_mean = {el: arrays[f"{el}/g_mean"] for el in spec.elements}
            g_std = {el: arrays[f"{el}/g_std"] for el in spec.elements}
            return cls(spec, networks, g_mean, g_std, metadata["atom_energy"],
                       metadata.get("training"), num_threads)
        except ModelFileError:
            raise
        except (KeyError, ValueError, TypeError) as err:
            raise ModelFileError(f"inconsistent B-P model file: {err!s}") from None


def finite_difference_forces(energy, atoms, delta: float = 1e-4, indices=None) -> np.ndarray:
    """-dE/dr by central differences of `energy(atoms) -> float` (eV), step `delta` (A).

    indices: the atoms to differentiate (default all). Returns (len(indices), 3) eV/A.
    `atoms` is left unchanged.
    """
    indices = np.arange(len(atoms)) if indices is None else np.asarray(indices)
    work = atoms.copy()
    work.calc = None
    pos0 = atoms.positions.copy()
    out = np.zeros((len(indices), 3))
    for row, a in enumerate(indices):
        for c in range(3):
            pos = pos0.copy()
            pos[a, c] += delta
            work.positions = pos
            e_plus = energy(work)
            pos[a, c] -= 2 * delta
            work.positions = pos
            e_minus = energy(work)
            out[row, c] = -(e_plus - e_minus) / (2 * delta)
    return out
