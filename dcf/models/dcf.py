"""The trained DCF force field (Mailoa et al. 2019): numpy inference, model file, evaluation.

Per central element el the model maps a local environment's invariant fingerprints
G (n, nG) and covariant unit axes A (n, nA, 3) to forces F (n, 3) in eV/A, in two parts:

* NN1 ("learns quantum mechanics"): normalized G -> internal forces F_int = A_k . F, one value
  per axis k (n, nA). Either one small network per output, as in the paper ("separate"), or one
  network with nA outputs ("shared").
* the head, turning (F_int, A) back into a Cartesian vector:

  - ``"paper"``: the paper's NN2, one network per Cartesian component on the inputs
    [F_int, A flattened]. It is covariant only approximately, by rotation augmentation in training.
  - ``"covariant"``: F = s * sum_k c_k A_k with coefficients c (n, nA) from a network of
    invariant inputs only: normalized G, F_int and the Gram matrix A_k . A_l (upper triangle).
    Since c is invariant and the A_k rotate with the structure, F(T R) = T F(R) holds to
    round-off for every rotation T. An axis A_k = 0 simply contributes nothing; nothing is
    inverted, so degenerate axes (the pseudoinverse's failure in the paper) cannot blow up.

NN3 is NN1 followed by the head, trained end to end; after training the file holds its NN1 and
head weights, so inference is the same code for every stage. Training lives in
`dcf.training.dcf` (TensorFlow); this module needs numpy only, so MD never imports TensorFlow.
"""
from __future__ import annotations

import functools

import numpy as np

from dcf.models.mlp import (ACTIVATIONS, MLP, bias_activation, blas_threads,
                            precision_dtype)
from dcf.models.modelfile import (ModelFileError, register_model_kind, stored_spec,
                                  write_model_file)
from dcf.models.repulsion import add_baseline, baseline_metadata
from dcf.parallel import SerialComm
from dcf.descriptors.neighbors import resolve_threads
from dcf.descriptors.spec import FingerprintSpec, SpecError

HEADS = ("paper", "covariant")
LAYOUTS = ("separate", "shared")
STAGES = ("nn1", "nn2", "nn3")
COEFFICIENT_INPUTS = ("G", "F_int", "gram")


class NetworkStack:
    """K networks of identical shape on one shared input, evaluated together.

    Output columns k*m .. (k+1)*m - 1 belong to network k (m outputs each). The hidden layers
    of all K networks run as one batched matrix product, which keeps the per-call overhead of
    the paper's many small networks (one per F_int output, one per force component) low.
    `set_precision("float32")` evaluates them in single precision (the weights in `nets` stay
    float64, as saved): about twice as fast, forces within ~1e-6 of float64 (relative).
    """

    def __init__(self, nets: list[MLP]):
        if not nets:
            raise ValueError("a network stack needs at least one network")
        shapes = [[W.shape for W in net.weights] for net in nets]
        if any(s != shapes[0] for s in shapes) or len({n.activation for n in nets}) != 1:
            raise ValueError("the networks of a stack must have the same layers and activation")
        self.nets = list(nets)
        self.activation = nets[0].activation
        self._K = len(nets)
        self.set_precision("float64")

    def set_precision(self, precision: str) -> None:
        """Evaluate in "float64" (default) or "float32"."""
        self.precision, dt = precision, precision_dtype(precision)
        nets, depth = self.nets, len(self.nets[0].weights)
        self._W0 = np.concatenate([n.weights[0] for n in nets], axis=1).astype(dt)  # (n_in, K*h1)
        self._b0 = np.concatenate([n.biases[0] for n in nets]).astype(dt)
        self._W = [np.stack([n.weights[j] for n in nets]).astype(dt) for j in range(1, depth)]
        self._b = [np.stack([n.biases[j] for n in nets])[:, None, :].astype(dt)
                   for j in range(1, depth)]

    @property
    def n_inputs(self) -> int:
        return self.nets[0].n_inputs

    @property
    def n_outputs(self) -> int:
        return self._K * self.nets[0].n_outputs

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Outputs (n, K*m) float64 for inputs x (n, n_inputs)."""
        if self._K == 1 and self.precision == "float64":
            return self.nets[0](x)
        n = len(x)
        z = np.asarray(x, self._W0.dtype) @ self._W0                          # (n, K*h1)
        if not self._W:                                                       # linear nets
            z += self._b0
            return z.astype(np.float64, copy=False)
        h = bias_activation(z, self._b0, self.activation)
        h = h.reshape(n, self._K, self._W0.shape[1] // self._K).transpose(1, 0, 2)  # (K,n,h1)
        for W, b in zip(self._W[:-1], self._b[:-1]):
            h = bias_activation(np.matmul(h, W), b, self.activation)
        y = np.matmul(h, self._W[-1])                                         # (K, n, m)
        y += self._b[-1]
        return y.transpose(1, 0, 2).reshape(n, self.n_outputs).astype(np.float64, copy=False)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {}
        for k, net in enumerate(self.nets):
            out.update(net.to_arrays(f"{prefix}/{k}"))
        return out

    @classmethod
    def from_arrays(cls, arrays: dict, prefix: str, count: int, activation: str) -> "NetworkStack":
        return cls([MLP.from_arrays(arrays, f"{prefix}/{k}", activation) for k in range(count)])


def gram_features(A: np.ndarray) -> np.ndarray:
    """Invariants A_k . A_l, k <= l (upper triangle with diagonal), of axes A (n, nA, 3)."""
    k, l = _upper_triangle(A.shape[1])
    return np.einsum("nkc,nlc->nkl", A, A)[:, k, l]


@functools.lru_cache(maxsize=None)
def _upper_triangle(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n)


CHUNK_ROWS = 512      # atoms per network evaluation


class ElementNetworks:
    """The networks and normalization of one central element.

    Normalization (all from the training split): G_mean, G_std (nG,) so that
    Gn = (G - G_mean) / G_std; fint_scale (nA,) eV/A, so NN1 predicts F_int / fint_scale;
    force_scale (scalar) eV/A, so the head predicts F / force_scale.
    nn1: NetworkStack, Gn -> F_int / fint_scale (n, nA). head: NetworkStack, or None while
    only NN1 is trained.
    """

    def __init__(self, element, head, nG, nA, norm, nn1, head_net, coefficient_inputs):
        self.element, self.head, self.nG, self.nA = element, head, int(nG), int(nA)
        self.G_mean = np.asarray(norm["G_mean"], float)
        self.G_inv_std = 1.0 / np.asarray(norm["G_std"], float)
        self.fint_scale = np.asarray(norm["fint_scale"], float)
        self.force_scale = float(norm["force_scale"])
        self.nn1, self.head_net = nn1, head_net
        self.coefficient_inputs = tuple(coefficient_inputs)

    @property
    def norm(self) -> dict:
        return {"G_mean": self.G_mean, "G_std": 1.0 / self.G_inv_std,
                "fint_scale": self.fint_scale, "force_scale": np.array(self.force_scale)}

    def internal_forces(self, G: np.ndarray) -> np.ndarray:
        """NN1: F_int (n, nA) in eV/A from G (n, nG)."""
        return self.nn1((G - self.G_mean) * self.G_inv_std) * self.fint_scale

    def forces(self, G: np.ndarray, A: np.ndarray) -> np.ndarray:
        """F (n, 3) eV/A from G (n, nG) and A (n, nA, 3), in blocks of CHUNK_ROWS atoms (the
        layers' temporaries then stay in cache: 1.6x faster at 7000 atoms of an element)."""
        if len(G) > CHUNK_ROWS:
            return np.concatenate([self.forces(G[i:i + CHUNK_ROWS], A[i:i + CHUNK_ROWS])
                                   for i in range(0, len(G), CHUNK_ROWS)])
        Gn = (G - self.G_mean) * self.G_inv_std
        fint_n = self.nn1(Gn)
        return self.head_forces(Gn, fint_n, A)

    def head_forces(self, Gn, fint_n, A) -> np.ndarray:
        """The head on normalized G, normalized F_int (n, nA) and A: F (n, 3) eV/A."""
        n = len(A)
        if self.head == "paper":
            x = np.concatenate([fint_n, A.reshape(n, 3 * self.nA)], axis=1)
            return self.head_net(x) * self.force_scale
        c = self.head_net(coefficient_features(Gn, fint_n, A, self.coefficient_inputs))
        return np.einsum("nk,nkc->nc", c, A) * self.force_scale


def coefficient_features(Gn, fint_n, A, inputs) -> np.ndarray:
    """Invariant inputs of the covariant head's coefficient network, in the order of `inputs`."""
    parts = {"G": lambda: Gn, "F_int": lambda: fint_n, "gram": lambda: gram_features(A)}
    return np.concatenate([parts[name]() for name in inputs], axis=1)


@register_model_kind
class DCFModel:
    """A trained DCF force field for the elements of a fingerprint spec.

    Forces only: DCF predicts forces directly, not as the gradient of an energy, so there is no
    energy or stress. ``remove_net_force`` subtracts the mean force of each structure, so that the
    forces sum to zero (exact for periodic and isolated systems without external fields).
    num_threads: threads of the fingerprint kernels (OpenMP) and of the networks' BLAS during a
    force call (default: DCF_NUM_THREADS or OMP_NUM_THREADS, else 1).
    """

    kind = "dcf"
    implemented_properties = ("forces",)

    def __init__(self, spec: FingerprintSpec, networks: dict, head: str, activation: str,
                 layouts: dict, hidden: dict, stages: tuple, remove_net_force: bool = True,
                 training: dict | None = None, num_threads: int | None = None):
        if head not in HEADS:
            raise ValueError(f"unknown DCF head {head!r} (known: {', '.join(HEADS)})")
        self.spec = spec
        self.elements = spec.elements
        self.networks = networks
        self.head = head
        self.activation = activation
        self.layouts = dict(layouts)
        self.hidden = {k: list(v) for k, v in hidden.items()}
        self.stages = tuple(stages)
        self.remove_net_force = bool(remove_net_force)
        self.training = dict(training or {})
        self.num_threads = num_threads
        self._featurizer = None
        self.comm = SerialComm()
        self.baseline = None

    # ---- inference ----------------------------------------------------------------------
    @property
    def label(self) -> str:
        last = self.stages[-1].upper() if self.stages else "untrained"
        return f"DCF {self.head} {last}"

    def _require_head(self):
        if any(net.head_net is None for net in self.networks.values()):
            raise ValueError(f"this DCF model has only the stages {list(self.stages)} trained; "
                             f"it needs NN2 (or NN3) to predict forces: run "
                             f"`dcf train ... --stage nn2 --init MODEL`")

    def predict(self, el: str, G: np.ndarray, A: np.ndarray) -> np.ndarray:
        """Forces (n, 3) eV/A of n central atoms of element `el` from their stored fingerprints
        G (n, nG) and A (n, nA, 3). No net-force removal (that needs whole structures)."""
        if el not in self.networks:
            raise ValueError(f"element {el!r} is not in this model (elements: {self.elements})")
        self._require_head()
        net = self.networks[el]
        G = np.asarray(G, dtype=np.float64)
        A = np.asarray(A, dtype=np.float64)
        if G.ndim != 2 or G.shape[1] != net.nG or A.shape != (len(G), net.nA, 3):
            raise ValueError(f"{el}: fingerprints of shape G {G.shape}, A {A.shape} do not fit "
                             f"this model (G (n, {net.nG}), A (n, {net.nA}, 3)): were they "
                             f"made with the model's fingerprint spec?")
        if not len(G):
            return np.zeros((0, 3))
        with blas_threads(resolve_threads(self.num_threads)):
            return net.forces(G, A)

    def featurizer(self):
        if self._featurizer is None:
            from dcf.descriptors.fingerprints import Featurizer
            from dcf.descriptors.neighbors import MD_SKIN
            self._featurizer = Featurizer(self.spec, self.num_threads, skin=MD_SKIN)
        return self._featurizer

    def set_threads(self, num_threads: int) -> None:
        """Threads of the fingerprint kernels (OpenMP) and of the networks (BLAS)."""
        self.num_threads = num_threads
        self._featurizer = None

    def set_precision(self, precision: str) -> None:
        """Evaluate the networks in "float64" (default) or "float32" (NetworkStack)."""
        for net in self.networks.values():
            for stack in (net.nn1, net.head_net):
                if stack is not None:
                    stack.set_precision(precision)

    def set_communicator(self, comm) -> None:
        """Share every force call among MPI ranks (a `dcf.parallel` communicator): each rank
        takes a block of the central atoms and the forces are summed. Every rank must then
        call with the same atoms."""
        self.comm = comm

    def forces(self, atoms) -> np.ndarray:
        """Forces (n_atoms, 3) eV/A of an ase.Atoms: fingerprints without derivatives, then
        the numpy networks."""
        self._require_head()
        fz = self.featurizer()
        env = fz.environment(atoms, part=(self.comm.rank, self.comm.size))
        F = self.comm.sum(self.center_forces(fz.features(env), len(atoms)))
        if self.remove_net_force and len(atoms):
            F -= F.mean(axis=0)
        return add_baseline({"forces": F}, self.baseline, atoms, env.neighbors)["forces"]

    def center_forces(self, features, n_atoms: int) -> np.ndarray:
        """Forces (n_atoms, 3) eV/A on the central atoms of `features` (a Featurizer's
        `Features`), zero on the other atoms; no net-force removal."""
        F = np.zeros((n_atoms, 3))
        with blas_threads(resolve_threads(self.num_threads)):
            for el in self.elements:
                if len(features.index[el]):
                    F[features.index[el]] = self.networks[el].forces(features.G[el],
                                                                      features.A[el])
        return F

    def compute(self, atoms, properties) -> dict:
        """The ASE calculator contract: {"forces": (n, 3)}."""
        return {"forces": self.forces(atoms)}

    def missing_property_reason(self, name: str) -> str:
        return (f"a DCF model predicts forces directly; they are not the gradient of an energy, so "
                f"there is no {name!r}. Run MD with a thermostat (Langevin), or train the "
                f"Behler-Parrinello model (`dcf train --model bp`) for energies and stress.")

    def calculator(self):
        from dcf.models.calculator import ModelCalculator
        return ModelCalculator(self)

    # ---- checks ----------------------------------------------------------------------------
    def check_spec(self, spec: FingerprintSpec, source: str) -> None:
        """Refuse features made with another fingerprint spec."""
        if spec.fingerprint != self.spec.fingerprint:
            raise ValueError(f"{source} was made with fingerprint spec {spec.name!r} "
                             f"(sha256 {spec.fingerprint[:12]}), but this model uses "
                             f"{self.spec.name!r} (sha256 {self.spec.fingerprint[:12]}); "
                             f"featurize the data with the model's spec")

    # ---- model file ------------------------------------------------------------------------
    def to_file_contents(self) -> tuple[dict, dict]:
        """(metadata, arrays) as written by `save`."""
        arch, arrays = {}, {}
        for el, net in self.networks.items():
            arch[el] = {"nG": net.nG, "nA": net.nA,
                        "nn1_networks": len(net.nn1.nets),
                        "head_networks": len(net.head_net.nets) if net.head_net else 0,
                        "coefficient_inputs": list(net.coefficient_inputs)}
            for key, value in net.norm.items():
                arrays[f"{el}/norm/{key}"] = np.asarray(value, float)
            arrays.update(net.nn1.to_arrays(f"{el}/nn1"))
            if net.head_net is not None:
                arrays.update(net.head_net.to_arrays(f"{el}/head"))
        meta = {"model": "dcf", "spec": self.spec.to_dict(), "spec_sha256": self.spec.fingerprint,
                "elements": list(self.elements), "head": self.head,
                "activation": self.activation, "layouts": self.layouts, "hidden": self.hidden,
                "stages": list(self.stages), "remove_net_force": self.remove_net_force,
                "architecture": arch, "training": self.training,
                **baseline_metadata(self.baseline)}
        return meta, arrays

    def save(self, path):
        """Write the model file atomically (see docs/model-file.md)."""
        meta, arrays = self.to_file_contents()
        return write_model_file(path, meta, arrays)

    @classmethod
    def from_file(cls, metadata: dict, arrays: dict) -> "DCFModel":
        """Rebuild a model from `dcf.models.modelfile.read_model_file` output, checking consistency."""
        try:
            return cls._from_file(metadata, arrays)
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, SpecError) as err:
            raise ModelFileError(f"inconsistent DCF model file: {err}") from None

    @classmethod
    def _from_file(cls, meta: dict, arrays: dict) -> "DCFModel":
        missing = [k for k in ("spec", "spec_sha256", "head", "activation", "architecture",
                               "stages", "layouts", "hidden") if k not in meta]
        if missing:
            raise ModelFileError(f"DCF model file lacks metadata {missing}")
        spec = stored_spec(meta)
        if meta["head"] not in HEADS:
            raise ModelFileError(f"unknown DCF head {meta['head']!r} (known: {HEADS})")
        if meta["activation"] not in ACTIVATIONS:
            raise ModelFileError(f"unknown activation {meta['activation']!r}")
        networks = {}
        for el in spec.elements:
            arch = meta["architecture"].get(el)
            if arch is None:
                raise ModelFileError(f"no networks for element {el}")
            nG, nA = spec.n_features(el)
            if (arch["nG"], arch["nA"]) != (nG, nA):
                raise ModelFileError(f"{el}: networks for {arch['nG']} G and {arch['nA']} A, but "
                                     f"the spec gives {nG} G and {nA} A")
            norm = {key: arrays[f"{el}/norm/{key}"]
                    for key in ("G_mean", "G_std", "fint_scale", "force_scale")}
            for key in ("G_std", "fint_scale", "force_scale"):
                if not np.all(np.asarray(norm[key], float) > 0):
                    raise ModelFileError(f"{el}/norm/{key} holds a value <= 0 (a trainer "
                                         f"writes positive scales): the file is damaged or "
                                         f"edited; retrain or use another copy")
            nn1 = NetworkStack.from_arrays(arrays, f"{el}/nn1", arch["nn1_networks"],
                                           meta["activation"])
            head_net = None
            if arch["head_networks"]:
                head_net = NetworkStack.from_arrays(arrays, f"{el}/head", arch["head_networks"],
                                                    meta["activation"])
            net = ElementNetworks(el, meta["head"], nG, nA, norm, nn1, head_net,
                                  arch["coefficient_inputs"])
            _check_depth(el, "nn1", nn1, meta["hidden"]["nn1"])
            if head_net is not None:
                _check_depth(el, "head", head_net, meta["hidden"]["head"])
            _check_shapes(net)
            networks[el] = net
        for name, a in arrays.items():
            if not np.all(np.isfinite(a)):
                raise ModelFileError(f"array {name!r} holds NaN or infinite values")
        return cls(spec, networks, meta["head"], meta["activation"], meta["layouts"],
                   meta["hidden"], tuple(meta["stages"]), meta.get("remove_net_force", False),
                   meta.get("training"))


def head_input_size(head: str, nG: int, nA: int, coefficient_inputs) -> int:
    """Number of inputs of the head network."""
    if head == "paper":
        return 4 * nA
    sizes = {"G": nG, "F_int": nA, "gram": nA * (nA + 1) // 2}
    return sum(sizes[name] for name in coefficient_inputs)


def _check_depth(el, part, stack: NetworkStack, hidden) -> None:
    for k, mlp in enumerate(stack.nets):
        if len(mlp.weights) != len(hidden) + 1:
            raise ModelFileError(f"network {el}/{part}/{k} has {len(mlp.weights)} layers, the "
                                 f"metadata says {len(hidden) + 1} (arrays missing)")


def _check_shapes(net: ElementNetworks) -> None:
    el = net.element
    if net.G_mean.shape != (net.nG,) or net.G_inv_std.shape != (net.nG,):
        raise ModelFileError(f"{el}: normalization of G does not have {net.nG} entries")
    if net.fint_scale.shape != (net.nA,):
        raise ModelFileError(f"{el}: F_int scale does not have {net.nA} entries")
    if net.nn1.n_inputs != net.nG or net.nn1.n_outputs != net.nA:
        raise ModelFileError(f"{el}: NN1 maps {net.nn1.n_inputs} -> {net.nn1.n_outputs}, "
                             f"expected {net.nG} -> {net.nA}")
    if net.head_net is not None:
        want_in = head_input_size(net.head, net.nG, net.nA, net.coefficient_inputs)
        want_out = 3 if net.head == "paper" else net.nA
        if (net.head_net.n_inputs, net.head_net.n_outputs) != (want_in, want_out):
            raise ModelFileError(f"{el}: the {net.head} head maps {net.head_net.n_inputs} -> "
                                 f"{net.head_net.n_outputs}, expected {want_in} -> {want_out}")
