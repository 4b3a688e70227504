"""Staggered training of the DCF networks (Mailoa et al. 2019, Figure 2), in TensorFlow/Keras.

Per central element, three stages, each trained to early stopping on held-out frames:

1. NN1: normalized G -> F_int / fint_scale, with F_int = A_k . F the internal forces (one value
   per covariant axis k).
2. NN2 (the head): (normalized G, true F_int, A) -> F / force_scale. For the paper's head each
   sample is joined by `rotations` randomly rotated copies (F_int, T A) -> T F, the paper's data
   augmentation; the exactly covariant head needs none.
3. NN3: NN1 and the head joined, F_int now hidden nodes; initialized by transfer of the trained
   NN1 and NN2 weights (so NN3 starts as NN2(NN1(G), A) exactly) and trained end to end on
   (G, A) -> F.

The run, in the order a reader meets it at the end of this file: `prepare` scans the store
once (normalization, validation snapshots, the data hash); `StageFit` is one (stage, element)
fit, its Keras model, optimizer and compiled steps; `fit_stage` runs it to early stopping;
`Progress` is what a checkpoint holds; `train` runs the plan. Early stopping, the schedule,
checkpoints and the validation split come from `dcf.training.core`, shared with B–P.

TensorFlow is imported inside the functions here, never at module import (the CLI imports this
module for its arguments). Data come from any object with the feature-store interface
(`dcf.data.store.FeatureStore`, or `MemoryFeatures` below for arrays in memory); batches are
streamed, so the data set never has to fit in memory.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from dcf.models.dcf import (COEFFICIENT_INPUTS, HEADS, LAYOUTS, STAGES, DCFModel, ElementNetworks,
                            NetworkStack)
from dcf.rotations import random_rotations
from dcf.training import pairwise
from dcf.training.core import (Adam, Checkpoint, Clock, DataHash, DataParallel, Fit,
                               Normalizer, TrainingError, TrainingOptions, serial_comm,
                               no_validation_warning, pack, parse_widths, rank_log,
                               rank_threads, same_on_all_ranks, set_threads, shard,
                               shared_options, unpack, validation_split)

__all__ = ["DCFTrainingConfig", "MemoryFeatures", "TrainingError", "train", "set_threads"]

CHECKPOINT_KIND = "dcf-checkpoint"


# ---- configuration -----------------------------------------------------------------------------
@dataclass
class DCFTrainingConfig(TrainingOptions):
    """Options of a DCF training run (defaults: the paper's Table S4 sizes, laptop-friendly).

    The shared options (epochs per stage and element, batch_size in snapshots, learning rate
    and schedule, patience, validation, budget, checkpoint, threads): `TrainingOptions`.
    hidden: NN1 hidden widths (per network); head_hidden: NN2 / coefficient-network widths.
    rotations: rotated copies per sample for the paper head (None: 10 below 100,000 training
    snapshots per element, else 1, as the paper's systems A vs. B and C).
    max_validation: most validation snapshots per element (chosen at random).
    """
    head: str = "covariant"
    layout: str = "separate"
    hidden: tuple = (50, 50)
    head_hidden: tuple = (40, 40)
    activation: str = "tanh"
    coefficient_inputs: tuple = COEFFICIENT_INPUTS
    rotations: int | None = None
    stages: tuple = STAGES
    max_validation: int = 20000
    remove_net_force: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.head not in HEADS:
            raise TrainingError(f"unknown head {self.head!r} (known: {', '.join(HEADS)})")
        if self.layout not in LAYOUTS:
            raise TrainingError(f"unknown layout {self.layout!r} (known: {', '.join(LAYOUTS)})")
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise TrainingError(f"unknown stage(s) {bad} (known: {', '.join(STAGES)})")
        bad = [c for c in self.coefficient_inputs if c not in COEFFICIENT_INPUTS]
        if bad or not self.coefficient_inputs:
            raise TrainingError(f"unknown coefficient inputs {bad} (known: {COEFFICIENT_INPUTS})")
        self.hidden, self.head_hidden = tuple(self.hidden), tuple(self.head_hidden)
        self.stages, self.coefficient_inputs = tuple(self.stages), tuple(self.coefficient_inputs)

    def architecture(self) -> dict:
        """The options that fix the networks' shapes (a checkpoint must agree on them)."""
        return {"head": self.head, "layout": self.layout, "hidden": list(self.hidden),
                "head_hidden": list(self.head_hidden), "activation": self.activation,
                "coefficient_inputs": list(self.coefficient_inputs)}


def add_train_arguments(group) -> None:
    """DCF-only options of `dcf train` (the shared ones: dcf.training.core)."""
    group.add_argument("--head", choices=(*HEADS, "pairwise"), default=None,
                       help="force head: pairwise F_i = sum_j c_ij r_ij (default; beyond the "
                            "paper, trained on whole frames, the most accurate: "
                            "docs/accuracy.md), the paper's NN2, or the exactly covariant "
                            "F = sum_k c_k A_k on the spec's axes")
    group.add_argument("--stage", choices=(*STAGES, "all"), default="all",
                       help="train one stage (needs --init with the earlier ones) or all")
    group.add_argument("--layout", choices=LAYOUTS, default=None,
                       help="one network per F_int output / force component as in the paper "
                            "(separate, default), or one network with several outputs (shared)")
    group.add_argument("--head-hidden", default=None,
                       help="hidden widths of NN2 / the coefficient network (default 40,40)")
    group.add_argument("--rotations", type=int, default=None,
                       help="rotated copies per sample for the paper head (default: 10 below "
                            "100000 snapshots per element, else 1)")
    group.add_argument("--coefficient-inputs", default=None,
                       help="invariant inputs of the covariant head (default G,F_int,gram)")
    group.add_argument("--keep-net-force", action="store_true",
                       help="do not subtract each structure's mean force at inference")
    group.add_argument("--init", default=None,
                       help="start from this DCF model file (weights and normalization)")
    pairwise.add_pair_arguments(group)


def _names(text: str) -> tuple:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def config_from_args(args) -> DCFTrainingConfig:
    """A DCFTrainingConfig from `dcf train`'s parsed arguments (None: the default)."""
    opts = shared_options(args, DCFTrainingConfig)
    for name in ("head", "layout", "rotations"):
        if getattr(args, name, None) is not None:
            opts[name] = getattr(args, name)
    if getattr(args, "head_hidden", None) is not None:
        opts["head_hidden"] = parse_widths(args.head_hidden, "--head-hidden")
    if getattr(args, "coefficient_inputs", None) is not None:
        opts["coefficient_inputs"] = _names(args.coefficient_inputs)
    stage = getattr(args, "stage", "all") or "all"
    return DCFTrainingConfig(**opts, stages=STAGES if stage == "all" else (stage,),
                             remove_net_force=not getattr(args, "keep_net_force", False))


def train_from_store(store, args, log=print, comm=None) -> DCFModel:
    """`dcf train --model dcf`: train on a feature store from parsed CLI arguments; comm: the
    MPI ranks sharing the training (None: this process alone)."""
    if getattr(args, "head", None) in (None, "pairwise"):
        return pairwise.train_from_store(store, args, log, comm)
    config = config_from_args(args)
    init = None
    if getattr(args, "init", None):
        from dcf.models import load_model
        init = load_model(args.init)
        if init.kind != "dcf":
            raise TrainingError(f"--init {args.init} is a {init.kind} model, not a DCF model")
    return train(store, config, log, init=init, restart=getattr(args, "restart", False),
                 comm=comm)


# ---- in-memory features (tests, small scripts) ----------------------------------------------
class MemoryFeatures:
    """Fingerprints of a list of frames held in memory, with the feature store's reading interface
    (spec, elements, n_snapshots, snapshots, batches, n_frames, frame_ids, frame).

    Frames are split into train and test by frame (test_fraction of them, chosen with `seed`).
    Every frame needs reference forces (atoms.get_forces()).
    """

    def __init__(self, frames, spec, test_fraction: float = 0.2, seed: int = 0):
        from dcf.descriptors.fingerprints import Featurizer
        featurizer = Featurizer(spec)
        self.spec = featurizer.spec
        self.elements = self.spec.elements
        self._frames = list(frames)
        n = len(self._frames)
        n_test = int(round(test_fraction * n))
        order = np.random.default_rng(seed).permutation(n)
        self._split = {"test": np.sort(order[:n_test]), "train": np.sort(order[n_test:])}
        parts = {el: {"G": [], "A": [], "F": [], "frame": [], "atom": []} for el in self.elements}
        for k, atoms in enumerate(self._frames):
            f = featurizer(atoms, derivatives=False)
            F = atoms.get_forces()
            for el in self.elements:
                idx = f.index[el]
                for key, value in (("G", f.G[el]), ("A", f.A[el]), ("F", F[idx]),
                                   ("frame", np.full(len(idx), k)), ("atom", idx)):
                    parts[el][key].append(value)
        self._data = {}
        for el, p in parts.items():
            d = {key: np.concatenate(v) for key, v in p.items()}
            d["weight"] = np.ones(len(d["F"]))
            self._data[el] = d

    @property
    def n_frames(self) -> int:
        return len(self._frames)

    def frame_ids(self, split=None) -> np.ndarray:
        return np.arange(self.n_frames) if split is None else self._split[split]

    def frame(self, k):
        return self._frames[int(k)]

    def _rows(self, el, split):
        d = self._data[el]
        return np.arange(len(d["F"])) if split is None else \
            np.flatnonzero(np.isin(d["frame"], self._split[split]))

    def n_snapshots(self, el, split=None) -> int:
        return len(self._rows(el, split))

    def snapshots(self, el, split=None) -> dict:
        rows = self._rows(el, split)
        return {key: v[rows] for key, v in self._data[el].items()}

    def batches(self, el, batch_size, split="train", shuffle=True, seed=0):
        rows = self._rows(el, split)
        if shuffle:
            rows = np.random.default_rng(seed).permutation(rows)
        for start in range(0, len(rows), batch_size):
            r = rows[start:start + batch_size]
            yield {key: v[r] for key, v in self._data[el].items()}


# ---- geometry helpers ---------------------------------------------------------------------------
def internal_forces(A: np.ndarray, F: np.ndarray) -> np.ndarray:
    """F_int (n, nA) = A_k . F for axes A (n, nA, 3) and forces F (n, 3)."""
    return np.einsum("nkc,nc->nk", A, F)


# ---- normalization and validation data -------------------------------------------------------
def choose_validation_frames(store, fraction: float, seed: int) -> np.ndarray:
    """Frame ids of the training split held out for early stopping (a random `fraction`)."""
    return validation_split(store.frame_ids("train"), fraction, seed)[1]


def scan_training_data(store, el, val_frames, batch_size, max_validation, seed,
                       data_hash: DataHash | None = None):
    """One streamed pass over an element's training split.

    Returns (norm, validation, n_train): norm = {"G_mean", "G_std" (nG,), "fint_scale" (nA,),
    "force_scale"} from the training frames; validation = the held-out frames' snapshots
    (at most max_validation, chosen at random), dict of G, A, F, weight, or None if there are
    none. Every row read goes into `data_hash`.
    """
    nG, nA = store.spec.n_features(el)
    G_stats = Normalizer(nG)
    fint2, f2 = np.zeros(nA), 0.0
    val = {"G": [], "A": [], "F": [], "weight": []}
    for batch in store.batches(el, batch_size, split="train", shuffle=False):
        if data_hash is not None:
            data_hash.add(*(np.asarray(batch[k]) for k in sorted(batch)))
        in_val = np.isin(batch["frame"], val_frames)
        keep = ~in_val
        G, A, F = (np.asarray(batch[k], float)[keep] for k in ("G", "A", "F"))
        G_stats.add(G)
        fint2 += (internal_forces(A, F) ** 2).sum(0)
        f2 += float((F * F).sum())
        if in_val.any():
            for key in val:
                value = batch.get(key, np.ones(len(batch["F"]))) if key == "weight" else batch[key]
                val[key].append(np.asarray(value, float)[in_val])
    n = G_stats.n
    if n == 0:
        raise TrainingError(f"the feature store has no training snapshots of element {el}")
    mean, std = G_stats.mean_std()
    force_scale = np.sqrt(f2 / (3 * n))
    fint_scale = np.sqrt(fint2 / n)
    # floors: axes that never occur and force-free data must not divide by zero
    force_scale = force_scale if force_scale > 0 else 1.0
    fint_scale = np.where(fint_scale > 1e-3 * force_scale, fint_scale, force_scale)
    norm = {"G_mean": mean, "G_std": std, "fint_scale": fint_scale,
            "force_scale": np.array(force_scale)}
    if not val["F"]:
        return norm, None, n
    validation = {k: np.concatenate(v) for k, v in val.items()}
    if len(validation["F"]) > max_validation:
        rows = np.sort(np.random.default_rng(seed).choice(len(validation["F"]), max_validation,
                                                          replace=False))
        validation = {k: v[rows] for k, v in validation.items()}
    return norm, validation, n


# ---- Keras networks ---------------------------------------------------
def _keras():
    import keras
    return keras


def _dense_stack(x, count, hidden, n_out, activation, name):
    """`count` networks with the same input; returns their outputs concatenated."""
    keras = _keras()
    outs = []
    for k in range(count):
        h = x
        for j, width in enumerate(hidden):
            h = keras.layers.Dense(width, activation=activation, name=f"{name}_{k}_{j}")(h)
        outs.append(keras.layers.Dense(n_out, name=f"{name}_{k}_{len(hidden)}")(h))
    return outs[0] if count == 1 else keras.layers.Concatenate(name=f"{name}_outputs")(outs)


def nn1_counts(config, nA) -> tuple[int, int]:
    """(number of NN1 networks, outputs per network)."""
    return (nA, 1) if config.layout == "separate" else (1, nA)


def head_counts(config, nA) -> tuple[int, int]:
    """(number of head networks, outputs per network)."""
    if config.head == "covariant":
        return 1, nA
    return (3, 1) if config.layout == "separate" else (1, 3)


def build_nn1(config, nG, nA):
    """NN1: normalized G (n, nG) -> F_int / fint_scale (n, nA)."""
    keras = _keras()
    G = keras.Input((nG,), name="G")
    count, m = nn1_counts(config, nA)
    return keras.Model(G, _dense_stack(G, count, config.hidden, m, config.activation, "nn1"),
                       name="nn1")


def build_head(config, nG, nA):
    """The head: [normalized G (n, nG), F_int / fint_scale (n, nA), A (n, nA, 3)]
    -> F / force_scale (n, 3). See dcf.models.dcf.ElementNetworks.head_forces."""
    keras = _keras()
    ops = keras.ops
    G = keras.Input((nG,), name="G")
    fint = keras.Input((nA,), name="F_int")
    A = keras.Input((nA, 3), name="A")
    count, m = head_counts(config, nA)
    if config.head == "paper":
        x = keras.layers.Concatenate(name="nn2_inputs")([fint, ops.reshape(A, (-1, 3 * nA))])
        F = _dense_stack(x, count, config.head_hidden, m, config.activation, "head")
    else:
        parts = {"G": G, "F_int": fint}
        if "gram" in config.coefficient_inputs:
            k, l = np.triu_indices(nA)
            gram = ops.reshape(ops.einsum("nkc,nlc->nkl", A, A), (-1, nA * nA))
            parts["gram"] = ops.take(gram, (k * nA + l).astype("int32"), axis=1)
        chosen = [parts[name] for name in config.coefficient_inputs]
        x = chosen[0] if len(chosen) == 1 else \
            keras.layers.Concatenate(name="coefficient_inputs")(chosen)
        c = _dense_stack(x, count, config.head_hidden, m, config.activation, "head")
        F = ops.einsum("nk,nkc->nc", c, A)
    return keras.Model([G, fint, A], F, name="head")


def build_nn3(config, nG, nA, nn1_weights, head_weights):
    """NN3: NN1 and the head joined, F_int as hidden nodes, initialized by transfer of the
    given NN1 and head weights. Returns (nn3, nn1, head), the latter two its parts."""
    keras = _keras()
    nn1 = build_nn1(config, nG, nA)
    nn1.set_weights(nn1_weights)
    head = build_head(config, nG, nA)
    head.set_weights(head_weights)
    G = keras.Input((nG,), name="G")
    A = keras.Input((nA, 3), name="A")
    return keras.Model([G, A], head([G, nn1(G), A]), name="nn3"), nn1, head


def stack_from_keras(model, name, count, depth, activation) -> NetworkStack:
    """The numpy NetworkStack of networks `name`_k (k < count) of a Keras model."""
    from dcf.models.mlp import MLP
    return NetworkStack([MLP.from_keras([model.get_layer(f"{name}_{k}_{j}")
                                         for j in range(depth)], activation)
                         for k in range(count)])


def stack_to_keras(model, name, stack: NetworkStack) -> None:
    """Copy a numpy NetworkStack into the Keras networks `name`_k of `model`."""
    for k, net in enumerate(stack.nets):
        for j, (W, b) in enumerate(zip(net.weights, net.biases)):
            model.get_layer(f"{name}_{k}_{j}").set_weights([W, b])


def export_model(spec, config, norms, weights, stages, training=None) -> DCFModel:
    """A numpy DCFModel from per-element Keras weight lists.

    norms[el]: normalization dict; weights[el] = {"nn1": list, "head": list or None}.
    """
    networks = {}
    for el in spec.elements:
        nG, nA = spec.n_features(el)
        nn1 = build_nn1(config, nG, nA)
        nn1.set_weights(weights[el]["nn1"])
        stack1 = stack_from_keras(nn1, "nn1", nn1_counts(config, nA)[0], len(config.hidden) + 1,
                                  config.activation)
        stack2 = None
        if weights[el].get("head") is not None:
            head = build_head(config, nG, nA)
            head.set_weights(weights[el]["head"])
            stack2 = stack_from_keras(head, "head", head_counts(config, nA)[0],
                                      len(config.head_hidden) + 1, config.activation)
        inputs = config.coefficient_inputs if config.head == "covariant" else ()
        networks[el] = ElementNetworks(el, config.head, nG, nA, norms[el], stack1, stack2, inputs)
    return DCFModel(spec, networks, config.head, config.activation,
                    {"nn1": config.layout, "head": config.layout if config.head == "paper"
                     else "shared"},
                    {"nn1": list(config.hidden), "head": list(config.head_hidden)},
                    tuple(stages), config.remove_net_force, training)


def keras_weights_from_model(model: DCFModel, config) -> dict:
    """Per element {"nn1": weights, "head": weights or None} of Keras networks holding the
    numpy model's parameters (to continue training from a model file)."""
    out = {}
    for el, net in model.networks.items():
        nn1 = build_nn1(config, net.nG, net.nA)
        stack_to_keras(nn1, "nn1", net.nn1)
        entry = {"nn1": nn1.get_weights(), "head": None}
        if net.head_net is not None:
            head = build_head(config, net.nG, net.nA)
            stack_to_keras(head, "head", net.head_net)
            entry["head"] = head.get_weights()
        out[el] = entry
    return out


def config_of_model(model: DCFModel, config) -> DCFTrainingConfig:
    """`config` with the architecture of an existing model (for --init)."""
    net = next(iter(model.networks.values()))
    cfg = asdict(config)
    cfg.update(head=model.head, layout=model.layouts["nn1"], hidden=tuple(model.hidden["nn1"]),
               head_hidden=tuple(model.hidden["head"]), activation=model.activation,
               coefficient_inputs=net.coefficient_inputs or config.coefficient_inputs)
    return DCFTrainingConfig(**cfg)


# ---- the training run ---------------------------------------------------------------------------
@dataclass
class TrainingSet:
    """What one scan of the store gives a run; a resumed run rescans to the same values.

    norms[el]: G_mean, G_std (nG,), fint_scale (nA,), force_scale; validation[el]: held-out
    snapshots (G, A, F, weight) or None; n_train[el]: training snapshots; val_frames: the
    held-out frame ids; rotations: copies per sample for the paper head; data_sha256: the
    training split's hash (DataHash).
    """
    spec: object
    val_frames: np.ndarray
    norms: dict
    validation: dict
    n_train: dict
    rotations: int
    data_sha256: str


def prepare(store, config: DCFTrainingConfig, init: DCFModel | None, log) -> TrainingSet:
    """Scan the store: normalization (the init model's if given), validation snapshots, hash."""
    spec = store.spec
    val_frames = choose_validation_frames(store, config.validation_fraction, config.seed)
    data_hash = DataHash()
    norms, validation, n_train = {}, {}, {}
    for el in spec.elements:
        norm, validation[el], n_train[el] = scan_training_data(
            store, el, val_frames, 8192, config.max_validation, config.seed, data_hash)
        if init is not None:              # keep the normalization the weights were made for
            norm = init.networks[el].norm
        norms[el] = {k: np.asarray(v, float) for k, v in norm.items()}
        if validation[el] is None:
            log(no_validation_warning(f"element {el}"))
    if config.rotations is None:
        rotations = 10 if min(n_train.values()) < 100_000 else 1
    else:
        rotations = int(config.rotations)
    return TrainingSet(spec, val_frames, norms, validation, n_train, rotations,
                       data_hash.hexdigest())


def checkpoint_identity(config: DCFTrainingConfig, data: TrainingSet) -> dict:
    """What a checkpoint of this run must agree on."""
    return {"model": CHECKPOINT_KIND, "spec_sha256": data.spec.fingerprint,
            "architecture": config.architecture(), "stages": list(config.stages),
            "seed": config.seed, "validation_fraction": config.validation_fraction,
            "n_train": data.n_train, "data_sha256": data.data_sha256}


@dataclass
class Progress:
    """What a checkpoint holds: per element the trained weights ({"nn1", "head"}: Keras
    weight lists or None) and finished stages, the finished fits' summaries, and the running
    fit with its arrays ("weights", "best", "optimizer")."""
    weights: dict
    done: dict
    fits: list = field(default_factory=list)
    current: Fit | None = None
    current_arrays: dict = field(default_factory=dict)

    def meta(self, elapsed: float) -> dict:
        return {"done": self.done, "fits": self.fits, "elapsed": elapsed,
                "current": asdict(self.current) if self.current else None}

    def arrays(self) -> dict:
        out = {}
        for el, parts in self.weights.items():
            for part, ws in parts.items():
                out.update(pack(f"{el}/{part}", ws))
        for group, ws in self.current_arrays.items():
            out.update(pack(f"current/{group}", ws))
        return out

    @classmethod
    def from_checkpoint(cls, meta: dict, arrays: dict, elements) -> "Progress":
        weights = {el: {part: unpack(f"{el}/{part}", arrays) or None for part in ("nn1", "head")}
                   for el in elements}
        current = Fit(**meta["current"]) if meta["current"] else None
        groups = {g: unpack(f"current/{g}", arrays) for g in ("weights", "best", "optimizer")}
        return cls(weights, meta["done"], meta["fits"], current, groups if current else {})

    def finish(self, fit: Fit, weights: dict) -> None:
        """Fit `fit` is done: keep its parts' weights and summary, clear the running fit."""
        self.weights[fit.element].update(weights)
        self.done[fit.element].append(fit.stage)
        self.fits.append(fit.summary())
        self.current, self.current_arrays = None, {}


def copies(stage, rotations: int) -> int:
    """Rows per sample of a stage's batches: the sample and its rotated copies."""
    return 1 + (rotations if rotations > 0 and stage != "nn1" else 0)


def batch_inputs(stage, norm, batch, rotations: int, rng, rows: slice = slice(None)):
    """Normalized (inputs, target, weight) of the samples `rows` of a batch for a stage; with
    rotations > 0 (paper head, NN2 and NN3) each sample is joined by that many randomly
    rotated copies (drawn for the whole batch, so that every choice of rows advances `rng`
    alike and sample s gets the same rotations)."""
    n = len(batch["F"])
    G = np.asarray(batch["G"], float)[rows]
    A = np.asarray(batch["A"], float)[rows]
    F = np.asarray(batch["F"], float)[rows]
    w = np.asarray(batch["weight"], float)[rows] if batch.get("weight") is not None \
        else np.ones(len(F))
    if copies(stage, rotations) > 1:
        r = rotations
        T = random_rotations(n * r, rng).reshape(r, n, 3, 3)[:, rows].reshape(-1, 3, 3)
        A = np.concatenate([A, np.einsum("nij,nkj->nki", T, np.tile(A, (r, 1, 1)))])
        F = np.concatenate([F, np.einsum("nij,nj->ni", T, np.tile(F, (r, 1)))])
        G, w = np.tile(G, (r + 1, 1)), np.tile(w, r + 1)
    Gn = ((G - norm["G_mean"]) / norm["G_std"]).astype("float32")
    fint = (internal_forces(A, F) / norm["fint_scale"]).astype("float32")
    Fn = (F / float(norm["force_scale"])).astype("float32")
    A32, w = A.astype("float32"), w.astype("float32")
    if stage == "nn1":
        return (Gn,), fint, w
    if stage == "nn2":
        return (Gn, fint, A32), Fn, w
    return (Gn, A32), Fn, w


def build_stage(config, nG, nA, stage, weights):
    """The Keras model trained in `stage` (from the element's `weights` where present) and a
    function collecting its parts' weights ({"nn1": ..., "head": ...})."""
    if stage == "nn1":
        model = build_nn1(config, nG, nA)
        if weights["nn1"] is not None:
            model.set_weights(weights["nn1"])
        return model, lambda: {"nn1": model.get_weights()}
    if stage == "nn2":
        model = build_head(config, nG, nA)
        if weights["head"] is not None:
            model.set_weights(weights["head"])
        return model, lambda: {"head": model.get_weights()}
    model, nn1, head = build_nn3(config, nG, nA, weights["nn1"], weights["head"])
    return model, lambda: {"nn1": nn1.get_weights(), "head": head.get_weights()}


def compile_steps(model, stage, nG, nA):
    """A stage's loss loss(inputs, target, w, total_w) -> sum_n w_n mean_c (pred - target)^2
    over these rows / total_w (the weight of the whole batch), its input signature, and the
    tf.function predict(inputs)."""
    import tensorflow as tf
    shapes = {"nn1": [(nG,)], "nn2": [(nG,), (nA,), (nA, 3)], "nn3": [(nG,), (nA, 3)]}[stage]
    inputs_spec = tuple(tf.TensorSpec((None, *shape), tf.float32) for shape in shapes)
    target_spec = tf.TensorSpec((None, nA if stage == "nn1" else 3), tf.float32)
    call = (lambda x, training: model(list(x), training=training)) if len(shapes) > 1 else \
        (lambda x, training: model(x[0], training=training))

    def loss(inputs, target, w, total_w):
        pred = call(inputs, True)
        return tf.reduce_sum(w * tf.reduce_mean(tf.square(pred - target), axis=1)) / total_w

    @tf.function(input_signature=[inputs_spec], autograph=False)
    def predict(inputs):
        return call(inputs, False)

    signature = (inputs_spec, target_spec, tf.TensorSpec((None,), tf.float32),
                 tf.TensorSpec((), tf.float32))
    return loss, signature, predict


class StageFit:
    """One (stage, element) fit: its Keras model, Adam optimizer and compiled steps, shared
    by the ranks of `comm` (core.DataParallel)."""

    def __init__(self, config: DCFTrainingConfig, data: TrainingSet, stage: str, el: str,
                 weights: dict, comm=None):
        import keras
        self.config, self.data, self.stage, self.el = config, data, stage, el
        self.index = (STAGES.index(stage), data.spec.elements.index(el))
        # initial weights depend on (seed, stage, element) only, so a resumed run matches
        keras.utils.set_random_seed(int(np.random.default_rng(
            [config.seed, *self.index]).integers(2**31)))
        nG, nA = data.spec.n_features(el)
        self.model, self.parts = build_stage(config, nG, nA, stage, weights)
        self.opt = Adam(self.model.trainable_variables, config.learning_rate)
        loss, signature, self.predict = compile_steps(self.model, stage, nG, nA)
        self.dp = DataParallel(comm or serial_comm(), loss, self.model.trainable_variables,
                               self.opt, signature)
        self.rotations = data.rotations if config.head == "paper" else 0

    def state(self, best) -> dict:
        """The running fit's arrays, as a checkpoint holds them."""
        return {"weights": self.model.get_weights(), "best": best,
                "optimizer": self.opt.state()}

    def restore(self, state: dict) -> list:
        """Continue from `state()`; returns the best weights so far."""
        self.model.set_weights(state["weights"])
        self.opt.restore(state["optimizer"])
        return state["best"]

    def epoch_batches(self, store, epoch: int, rank: int = 0, size: int = 1):
        """Shard `rank` of `size` of every step of `epoch` as the step's loss inputs (None:
        an empty shard): the training snapshots outside the validation frames, shuffled by
        (seed, stage, element, epoch), normalized (for the paper head joined by rotated
        copies), with the whole batch's weight, and the batch's rows (all shards). Each shard
        holds whole samples."""
        import tensorflow as tf
        seed = [self.config.seed, *self.index, epoch]
        rng = np.random.default_rng(seed)
        rows_per_sample = copies(self.stage, self.rotations)
        for batch in store.batches(self.el, self.config.batch_size, split="train", shuffle=True,
                                   seed=int(np.random.default_rng(seed).integers(2**31))):
            keep = ~np.isin(batch["frame"], self.data.val_frames)
            if not keep.any():
                continue
            batch = {k: np.asarray(v)[keep] for k, v in batch.items()}
            w = np.asarray(batch.get("weight", np.ones(len(batch["F"]))), np.float32)
            total_w = np.sum(np.tile(w, rows_per_sample), dtype=np.float32)
            rows = shard(len(w), rank, size)
            inputs, target, w = batch_inputs(self.stage, self.data.norms[self.el], batch,
                                             self.rotations, rng, rows)
            step = None
            if len(target):
                step = (tuple(tf.constant(x) for x in inputs), tf.constant(target),
                        tf.constant(w), tf.constant(total_w))
            yield step, int(keep.sum()) * rows_per_sample

    def train_epoch(self, store, epoch: int, deadline) -> tuple[float, bool]:
        """One pass over the epoch's batches, each batch's samples shared by the ranks.
        Returns (mean loss, whether the deadline passed: rank 0's clock decides for all)."""
        losses, sizes = [], []
        for inputs, rows in self.epoch_batches(store, epoch, self.dp.rank, self.dp.size):
            late = deadline is not None and time.monotonic() > deadline
            loss, stop = self.dp.step(inputs, late)
            losses.append(loss)
            sizes.append(rows)
            if stop:
                return float(np.average(losses, weights=sizes)), True
        return (float(np.average(losses, weights=sizes)) if losses else float("nan")), False

    def validation_inputs(self):
        """This rank's share of the fixed validation inputs (the paper head: one rotated copy
        of each sample), or None."""
        val = self.data.validation[self.el]
        if val is None:
            return None
        inputs, target, w = batch_inputs(self.stage, self.data.norms[self.el], val,
                                          min(self.rotations, 1),
                                          np.random.default_rng([self.config.seed, 99]))
        rows = self.dp.shard(len(target))
        return tuple(x[rows] for x in inputs), target[rows], w[rows]

    def validate(self, val_inputs) -> tuple[float, float]:
        """Validation loss (normalized units) and MAE (eV/A; F_int for NN1, |dF| otherwise),
        from the sums of every rank's share."""
        import tensorflow as tf
        inputs, target, w = val_inputs
        pred = np.concatenate([self.predict(tuple(tf.constant(x[s:s + 8192]) for x in inputs))
                               .numpy() for s in range(0, len(target), 8192)] or
                              [np.zeros((0, target.shape[1]), np.float32)])
        norm = self.data.norms[self.el]
        if self.stage == "nn1":
            err, count = np.abs((pred - target) * norm["fint_scale"]).sum(), pred.size
        else:
            err, count = np.linalg.norm(pred - target, axis=1).sum(), len(pred)
        sums = self.dp.sum([(w * ((pred - target) ** 2).mean(axis=1)).sum(), w.sum(), err,
                            count])
        scale = 1.0 if self.stage == "nn1" else float(norm["force_scale"])
        return float(sums[0] / sums[1]), float(sums[2] / sums[3] * scale)


def fit_stage(sf: StageFit, store, progress: Progress, deadline, save, log,
              stop_after=None) -> None:
    """Train `sf` to early stopping, the epoch limit or `deadline`, resuming the running fit
    of `progress` if it is this one; keeps the best weights in `progress`.

    save(force=False) writes the checkpoint; stop_after(fit) -> True interrupts the run after
    an epoch, as a KeyboardInterrupt would (tests)."""
    cfg, current = sf.config, progress.current
    resumed = current is not None and (current.stage, current.element) == (sf.stage, sf.el)
    fit = current if resumed else Fit(sf.stage, sf.el, lr=cfg.learning_rate)
    best = sf.restore(progress.current_arrays) if resumed and fit.epoch > 0 \
        else sf.model.get_weights()
    progress.current = fit
    val_inputs = sf.validation_inputs()
    out_of_time = False
    while fit.epoch < cfg.epochs and not out_of_time:
        start = time.monotonic()
        train_loss, out_of_time = sf.train_epoch(store, fit.epoch, deadline)
        val_loss, val_mae = (None, None) if val_inputs is None else sf.validate(val_inputs)
        if fit.end_epoch(train_loss, val_loss, val_mae, cfg):
            best = sf.model.get_weights()
        sf.opt.learning_rate.assign(fit.lr)
        log(epoch_line(fit, cfg.epochs, time.monotonic() - start))
        progress.current_arrays = sf.state(best)
        if fit.out_of_patience(cfg):
            fit.stopped = "early stopping"
            break
        save()
        if stop_after is not None and stop_after(fit):
            save(force=True)
            raise KeyboardInterrupt(f"stopped after {fit.stage} {fit.element} epoch {fit.epoch}")
    fit.stopped = fit.stopped or ("time limit" if out_of_time else "epoch limit")
    sf.model.set_weights(best)
    progress.finish(fit, sf.parts())
    log(f"{fit.stage} {fit.element}: {fit.stopped} after {fit.epoch} epochs, best "
        f"{'validation' if val_inputs is not None else 'training'} loss {fit.best:.4g} at "
        f"epoch {fit.best_epoch}; {sf.dp.timing()}")


def epoch_line(fit: Fit, epochs: int, seconds: float) -> str:
    """The progress line of the epoch `fit` just recorded."""
    _, train_loss, val_loss, val_mae, lr = fit.history[-1]
    improved = " *" if fit.best_epoch == fit.epoch else ""
    if val_mae is None:
        scores = "(no validation)"
    else:
        unit = "F_int MAE" if fit.stage == "nn1" else "force MAE"
        scores = f"val {val_loss:.4g} {unit} {val_mae:.4f} eV/A"
    return (f"{fit.stage} {fit.element} epoch {fit.epoch}/{epochs}: loss {train_loss:.4g} "
            f"{scores} lr {lr:.2g} ({seconds:.1f} s){improved}")


def check_stage_inputs(config: DCFTrainingConfig, weights: dict) -> None:
    """NN3 starts from trained NN1 and head weights: trained in this run or given by init."""
    if "nn3" not in config.stages:
        return
    for part, stage in (("nn1", "nn1"), ("head", "nn2")):
        if stage not in config.stages and any(w[part] is None for w in weights.values()):
            raise TrainingError(f"stage nn3 starts from trained NN1 and NN2 weights: give "
                                f"--init MODEL with {stage} trained, or train all stages")


def train(store, config: DCFTrainingConfig, log=print, init: DCFModel | None = None,
          restart: bool = False, stop_after=None, comm=None) -> DCFModel:
    """Train a DCF model on `store` (feature-store interface); returns the numpy DCFModel,
    with the run's record (config, counts, every fit's learning curve) in `model.training`.

    init: a DCF model to start from (its architecture and normalization are used; needed for a
    single stage after nn1). restart: ignore an existing checkpoint. stop_after(fit) -> bool:
    called after every epoch; True interrupts the run as a KeyboardInterrupt would (tests).
    comm: the MPI ranks sharing each step's snapshots (dcf.parallel; None: this process
    alone); every rank returns the same model, rank 0 alone logs and writes the checkpoint.
    """
    import keras
    comm = comm or serial_comm()
    log = rank_log(log, comm)
    clock = Clock(config.max_minutes)
    if init is not None:
        init.check_spec(store.spec, "the feature store")
        config = config_of_model(init, config)
    set_threads(rank_threads(config.threads, comm))
    keras.utils.set_random_seed(config.seed)
    data = prepare(store, config, init, log)
    same_on_all_ranks(comm, data.data_sha256, "training snapshots")
    elements = data.spec.elements
    weights = keras_weights_from_model(init, config) if init is not None else \
        {el: {"nn1": None, "head": None} for el in elements}
    check_stage_inputs(config, weights)
    progress = Progress(weights, {el: [] for el in elements})
    checkpoint = Checkpoint(config.checkpoint, checkpoint_identity(config, data),
                            config.checkpoint_every, restart, comm)
    progress = resume(checkpoint, progress, clock, log)
    log(f"DCF training, {config.head} head, stages {', '.join(config.stages)}; "
        + ", ".join(f"{el}: {data.n_train[el]} train / {_n_rows(data.validation[el])} "
                    f"validation snapshots" for el in elements))

    def save(force=False):
        checkpoint.save(progress.meta(clock.elapsed()), progress.arrays(), force)

    plan = [(s, el) for s in config.stages for el in elements if s not in progress.done[el]]
    for i, (stage, el) in enumerate(plan):
        sf = StageFit(config, data, stage, el, progress.weights[el], comm)
        fit_stage(sf, store, progress, clock.fit_deadline(len(plan) - i), save, log, stop_after)
        save(force=True)
    prior = tuple(init.stages) if init is not None else ()
    stages = [s for s in STAGES if s in prior or all(s in progress.done[el] for el in elements)]
    return export_model(data.spec, config, data.norms, progress.weights, stages,
                        training_record(config, data, progress, clock.elapsed()))


def resume(checkpoint: Checkpoint, progress: Progress, clock: Clock, log) -> Progress:
    """The run's progress: from the checkpoint if there is one of this run (its time then
    counts on `clock`), else `progress`."""
    saved = checkpoint.load()
    if saved is None:
        return progress
    progress = Progress.from_checkpoint(*saved, list(progress.weights))
    fit = progress.current
    log(f"resuming from checkpoint {checkpoint.path}: "
        + (f"{fit.stage} {fit.element} after epoch {fit.epoch}" if fit else "between stages"))
    clock.before = float(saved[0]["elapsed"])
    return progress


def training_record(config, data: TrainingSet, progress: Progress, seconds: float) -> dict:
    """The run as the model's metadata keeps it (model.training)."""
    return {"config": {**asdict(config), "rotations": data.rotations}, "n_train": data.n_train,
            "n_validation": {el: _n_rows(v) for el, v in data.validation.items()},
            "validation_frames": len(data.val_frames), "data_sha256": data.data_sha256,
            "fits": progress.fits, "seconds": round(seconds, 1)}


def _n_rows(validation) -> int:
    return 0 if validation is None else int(len(validation["F"]))
