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

TensorFlow is imported inside the functions here, never at module import (the CLI imports this
module for its arguments). Data come from any object with the feature-store interface
(`dcf.data.store.FeatureStore`, or `MemoryFeatures` below for arrays in memory); batches are streamed,
so the data set never has to fit in memory. Checkpoints (atomic, no pickle) hold the weights,
optimizer state and position, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dcf.rotations import random_rotations
from dcf.training.core import set_threads
from dcf.models.dcf import (COEFFICIENT_INPUTS, HEADS, LAYOUTS, STAGES, DCFModel, ElementNetworks,
                           NetworkStack)

CHECKPOINT_KIND = "dcf-checkpoint"


class TrainingError(ValueError):
    """Training cannot start or continue (no data for an element, an incompatible checkpoint)."""


# ---- configuration -----------------------------------------------------------------------------
@dataclass
class DCFTrainingConfig:
    """Options of a DCF training run (defaults: the paper's Table S4 sizes, laptop-friendly).

    hidden: NN1 hidden widths (per network); head_hidden: NN2 / coefficient-network widths.
    rotations: rotated copies per sample for the paper head (None: 10 below 100,000 training
    snapshots per element, else 1, as the paper's systems A vs. B and C).
    max_minutes: wall-clock budget of the whole run (None: none); the best weights found are kept.
    """
    head: str = "covariant"
    layout: str = "separate"
    hidden: tuple = (50, 50)
    head_hidden: tuple = (40, 40)
    activation: str = "tanh"
    coefficient_inputs: tuple = COEFFICIENT_INPUTS
    rotations: int | None = None
    stages: tuple = STAGES
    epochs: int = 200
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 15
    seed: int = 0
    validation_fraction: float = 0.1
    max_validation: int = 20000
    max_minutes: float | None = None
    remove_net_force: bool = True
    checkpoint: str | None = None
    checkpoint_every: float = 30.0
    threads: int | None = None

    def __post_init__(self):
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
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise TrainingError("epochs and batch size must be >= 1, the learning rate > 0")
        if not 0 <= self.validation_fraction < 1:
            raise TrainingError("the validation fraction must be in [0, 1)")
        self.hidden, self.head_hidden = tuple(self.hidden), tuple(self.head_hidden)
        self.stages, self.coefficient_inputs = tuple(self.stages), tuple(self.coefficient_inputs)

    def architecture(self) -> dict:
        """The options that fix the networks' shapes (a checkpoint must agree on them)."""
        return {"head": self.head, "layout": self.layout, "hidden": list(self.hidden),
                "head_hidden": list(self.head_hidden), "activation": self.activation,
                "coefficient_inputs": list(self.coefficient_inputs)}


def add_train_arguments(group) -> None:
    """DCF options of `dcf train` (the common ones are defined by dcf.cli.train)."""
    group.add_argument("--head", choices=HEADS, default="covariant",
                       help="force head: the paper's NN2, or the exactly covariant "
                            "F = sum_k c_k A_k (default)")
    group.add_argument("--stage", choices=(*STAGES, "all"), default="all",
                       help="train one stage (needs --init with the earlier ones) or all")
    group.add_argument("--layout", choices=LAYOUTS, default="separate",
                       help="one network per F_int output / force component as in the paper "
                            "(separate, default), or one network with several outputs (shared)")
    group.add_argument("--head-hidden", default=None,
                       help="hidden widths of NN2 / the coefficient network (default 40,40)")
    group.add_argument("--rotations", type=int, default=None,
                       help="rotated copies per sample for the paper head (default: 10 below "
                            "100000 snapshots per element, else 1)")
    group.add_argument("--coefficient-inputs", default=",".join(COEFFICIENT_INPUTS),
                       help="invariant inputs of the covariant head (default G,F_int,gram)")
    group.add_argument("--keep-net-force", action="store_true",
                       help="do not subtract each structure's mean force at inference")
    group.add_argument("--init", default=None,
                       help="start from this DCF model file (weights and normalization)")


def _widths(text, default) -> tuple:
    if text is None:
        return tuple(default)
    try:
        widths = tuple(int(w) for w in str(text).split(",") if w.strip())
    except ValueError:
        raise TrainingError(f"hidden widths must be integers separated by commas, got {text!r}")
    if not widths or min(widths) < 1:
        raise TrainingError(f"hidden widths must be positive, got {text!r}")
    return widths


def _names(value) -> tuple:
    if isinstance(value, str):
        return tuple(c.strip() for c in value.split(",") if c.strip())
    return tuple(value)


def config_from_args(args) -> DCFTrainingConfig:
    """A DCFTrainingConfig from `dcf train`'s parsed arguments (None: the default)."""
    defaults = DCFTrainingConfig()
    pick = lambda name: getattr(args, name, None) if getattr(args, name, None) is not None \
        else getattr(defaults, name)
    stage = getattr(args, "stage", "all") or "all"
    return DCFTrainingConfig(
        head=pick("head"), layout=pick("layout"),
        hidden=_widths(getattr(args, "hidden", None), defaults.hidden),
        head_hidden=_widths(getattr(args, "head_hidden", None), defaults.head_hidden),
        activation=pick("activation"),
        coefficient_inputs=_names(pick("coefficient_inputs")),
        rotations=getattr(args, "rotations", None),
        stages=STAGES if stage == "all" else (stage,),
        epochs=pick("epochs"), batch_size=pick("batch_size"),
        learning_rate=pick("learning_rate"), patience=pick("patience"), seed=pick("seed"),
        validation_fraction=pick("validation_fraction"), max_minutes=pick("max_minutes"),
        remove_net_force=not getattr(args, "keep_net_force", False),
        checkpoint=getattr(args, "checkpoint", None),
        checkpoint_every=pick("checkpoint_every"), threads=getattr(args, "threads", None))


def train_from_store(store, args, log=print) -> DCFModel:
    """`dcf train --model dcf`: train on a feature store from parsed CLI arguments."""
    config = config_from_args(args)
    init = None
    if getattr(args, "init", None):
        from dcf.models import load_model
        init = load_model(args.init)
        if init.kind != "dcf":
            raise TrainingError(f"--init {args.init} is a {init.kind} model, not a DCF model")
    return train(store, config, log, init=init, restart=getattr(args, "restart", False))


# ---- in-memory features (tests, small scripts) ---------------------------------------------------
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
    train = np.asarray(store.frame_ids("train"))
    n_val = int(round(fraction * len(train)))
    if fraction > 0 and len(train) > 1:
        n_val = min(max(n_val, 1), len(train) - 1)
    else:
        n_val = 0
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(train, n_val, replace=False)) if n_val else np.zeros(0, int)


def scan_training_data(store, el, val_frames, batch_size, max_validation, seed):
    """One streamed pass over an element's training split.

    Returns (norm, validation, n_train): norm = {"G_mean", "G_std" (nG,), "fint_scale" (nA,),
    "force_scale"} from the training frames; validation = the held-out frames' snapshots
    (at most max_validation, chosen at random), dict of G, A, F, weight.
    """
    nG, nA = store.spec.n_features(el)
    s1, s2 = np.zeros(nG), np.zeros(nG)
    fint2, f2, n = np.zeros(nA), 0.0, 0
    val = {"G": [], "A": [], "F": [], "weight": []}
    for batch in store.batches(el, 8192, split="train", shuffle=False):
        in_val = np.isin(batch["frame"], val_frames)
        keep = ~in_val
        G, A, F = (np.asarray(batch[k], float)[keep] for k in ("G", "A", "F"))
        s1 += G.sum(0)
        s2 += (G * G).sum(0)
        fint2 += (internal_forces(A, F) ** 2).sum(0)
        f2 += float((F * F).sum())
        n += len(G)
        if in_val.any():
            for key in val:
                value = batch.get(key, np.ones(len(batch["F"]))) if key == "weight" else batch[key]
                val[key].append(np.asarray(value, float)[in_val])
    if n == 0:
        raise TrainingError(f"the feature store has no training snapshots of element {el}")
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    force_scale = np.sqrt(f2 / (3 * n))
    fint_scale = np.sqrt(fint2 / n)
    # floors: constant fingerprints and axes that never occur must not divide by zero
    std = np.where(std > 1e-6 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    force_scale = force_scale if force_scale > 0 else 1.0
    fint_scale = np.where(fint_scale > 1e-3 * force_scale, fint_scale, force_scale)
    norm = {"G_mean": mean, "G_std": std, "fint_scale": fint_scale,
            "force_scale": np.array(force_scale)}
    validation = {k: (np.concatenate(v) if v else None) for k, v in val.items()}
    if validation["F"] is not None and len(validation["F"]) > max_validation:
        rows = np.sort(np.random.default_rng(seed).choice(len(validation["F"]), max_validation,
                                                          replace=False))
        validation = {k: v[rows] for k, v in validation.items()}
    return norm, (validation if validation["F"] is not None else None), n


# ---- Keras networks ------------------------------------------------------------------------------
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
class Adam:
    """Adam (Kingma & Ba 2015) on a list of variables, as small TensorFlow ops.

    Used instead of keras.optimizers.Adam because its graph traces several times faster (one
    trace per stage and element) and its whole state is `variables`, which checkpoints save.
    """

    def __init__(self, variables, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        import tensorflow as tf
        self.params = list(variables)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.learning_rate = tf.Variable(float(learning_rate), dtype=tf.float32, trainable=False)
        self.iterations = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        self.m = [tf.Variable(tf.zeros(p.shape, tf.float32), trainable=False) for p in self.params]
        self.v = [tf.Variable(tf.zeros(p.shape, tf.float32), trainable=False) for p in self.params]

    @property
    def variables(self) -> list:
        return [self.iterations, self.learning_rate, *self.m, *self.v]

    def apply(self, grads) -> None:
        import tensorflow as tf
        t = self.iterations.assign_add(1.0)
        lr = self.learning_rate * tf.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.assign(self.beta_1 * m + (1.0 - self.beta_1) * g)
            v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g))
            p.assign_sub(lr * m / (tf.sqrt(v) + self.epsilon))


@dataclass
class _Fit:
    """Progress of one (stage, element) fit, as saved in a checkpoint."""
    stage: str
    element: str
    epoch: int = 0                       # epochs completed
    best: float = float("inf")           # best validation loss
    best_epoch: int = 0
    wait: int = 0                        # epochs since the last improvement
    lr: float = 0.0
    history: list = field(default_factory=list)
    stopped: str = ""


def train(store, config: DCFTrainingConfig, log=print, init: DCFModel | None = None,
          restart: bool = False, stop_after=None) -> DCFModel:
    """Train a DCF model on `store` (feature-store interface); returns the numpy DCFModel.

    init: a DCF model to start from (its architecture and normalization are used; needed for a
    single stage after nn1). restart: ignore an existing checkpoint. stop_after(fit) -> bool:
    called after every epoch; True interrupts the run as a KeyboardInterrupt would (tests).
    """
    return _Trainer(store, config, log, init, restart, stop_after).run()


class _Trainer:
    def __init__(self, store, config, log, init, restart, stop_after):
        if init is not None:
            init.check_spec(store.spec, "the feature store")
            config = config_of_model(init, config)
        self.store, self.config, self.log, self.init = store, config, log, init
        self.spec = store.spec
        self.stop_after = stop_after
        self.ckpt_path = Path(config.checkpoint) if config.checkpoint else None
        self.restart = restart
        self.norms, self.validation, self.n_train = {}, {}, {}
        self.weights = {el: {"nn1": None, "head": None} for el in self.spec.elements}
        self.done: dict[str, list] = {el: [] for el in self.spec.elements}
        self.fits: list[dict] = []           # summaries of finished fits
        self.current: _Fit | None = None
        self.current_arrays: dict = {}
        self.elapsed_before = 0.0
        self.prior_stages: tuple = ()
        self._last_ckpt = 0.0

    # -- setup --
    def _plan(self) -> list[tuple[str, str]]:
        return [(stage, el) for stage in self.config.stages for el in self.spec.elements]

    def _setup(self):
        import keras
        set_threads(self.config.threads)
        keras.utils.set_random_seed(self.config.seed)
        cfg = self.config
        self.val_frames = choose_validation_frames(self.store, cfg.validation_fraction, cfg.seed)
        for el in self.spec.elements:
            norm, val, n = scan_training_data(self.store, el, self.val_frames, 8192,
                                              cfg.max_validation, cfg.seed)
            self.n_train[el] = n
            self.validation[el] = val
            if self.init is not None:          # keep the normalization the weights were made for
                norm = self.init.networks[el].norm
            self.norms[el] = {k: np.asarray(v, float) for k, v in norm.items()}
        if self.init is not None:
            self.weights = keras_weights_from_model(self.init, cfg)
            self.prior_stages = tuple(self.init.stages)
        if cfg.rotations is None:
            small = min(self.n_train.values()) < 100_000
            self.rotations = 10 if small else 1
        else:
            self.rotations = int(cfg.rotations)
        if "nn3" in cfg.stages:
            for part, stage in (("nn1", "nn1"), ("head", "nn2")):
                if stage not in cfg.stages and any(self.weights[el][part] is None
                                                   for el in self.spec.elements):
                    raise TrainingError(f"stage nn3 starts from trained NN1 and NN2 weights: "
                                        f"give --init MODEL with {stage} trained, or train "
                                        f"all stages")

    # -- checkpoints --
    def _checkpoint_meta(self) -> dict:
        return {"model": CHECKPOINT_KIND, "spec": self.spec.to_dict(),
                "spec_sha256": self.spec.fingerprint, "architecture": self.config.architecture(),
                "stages": list(self.config.stages), "seed": self.config.seed,
                "n_train": self.n_train, "val_frames": [int(k) for k in self.val_frames],
                "rotations": self.rotations, "done": self.done, "fits": self.fits,
                "current": asdict(self.current) if self.current else None,
                "elapsed": self.elapsed_before + time.monotonic() - self.t0}

    def _save_checkpoint(self, force=False):
        if self.ckpt_path is None:
            return
        now = time.monotonic()
        if not force and now - self._last_ckpt < self.config.checkpoint_every:
            return
        from dcf.models.modelfile import write_model_file
        arrays = {}
        for el in self.spec.elements:
            for key, value in self.norms[el].items():
                arrays[f"{el}/norm/{key}"] = value
            for part in ("nn1", "head"):
                for i, w in enumerate(self.weights[el][part] or []):
                    arrays[f"{el}/{part}/{i}"] = w
        for group, ws in self.current_arrays.items():
            for i, w in enumerate(ws):
                arrays[f"current/{group}/{i}"] = w
        write_model_file(self.ckpt_path, self._checkpoint_meta(), arrays)
        self._last_ckpt = now

    def _load_checkpoint(self) -> bool:
        if self.ckpt_path is None or self.restart or not self.ckpt_path.exists():
            return False
        from dcf.models.modelfile import ModelFileError, read_model_file
        try:
            meta, arrays = read_model_file(self.ckpt_path)
        except ModelFileError as err:
            raise TrainingError(f"checkpoint {self.ckpt_path} is unreadable ({err}); "
                                f"delete it or pass --restart") from None
        mismatch = [key for key, want in (("model", CHECKPOINT_KIND),
                                          ("spec_sha256", self.spec.fingerprint),
                                          ("architecture", self.config.architecture()),
                                          ("stages", list(self.config.stages)),
                                          ("seed", self.config.seed), ("n_train", self.n_train))
                    if meta.get(key) != want]
        if mismatch:
            raise TrainingError(f"checkpoint {self.ckpt_path} belongs to another run (differs "
                                f"in {', '.join(mismatch)}); delete it or pass --restart")
        self.val_frames = np.asarray(meta["val_frames"], int)
        self.rotations = meta["rotations"]
        self.done, self.fits = meta["done"], meta["fits"]
        self.elapsed_before = float(meta["elapsed"])
        for el in self.spec.elements:
            self.norms[el] = {k: arrays[f"{el}/norm/{k}"]
                              for k in ("G_mean", "G_std", "fint_scale", "force_scale")}
            for part in ("nn1", "head"):
                ws, i = [], 0
                while f"{el}/{part}/{i}" in arrays:
                    ws.append(arrays[f"{el}/{part}/{i}"])
                    i += 1
                self.weights[el][part] = ws or None
        if meta["current"]:
            self.current = _Fit(**meta["current"])
            self.current_arrays = {}
            for group in ("weights", "best", "optimizer"):
                ws, i = [], 0
                while f"current/{group}/{i}" in arrays:
                    ws.append(arrays[f"current/{group}/{i}"])
                    i += 1
                self.current_arrays[group] = ws
        return True

    # -- the run --
    def run(self) -> DCFModel:
        self.t0 = time.monotonic()
        self._setup()
        if self._load_checkpoint():
            where = (f"{self.current.stage} {self.current.element} after epoch "
                     f"{self.current.epoch}" if self.current else "between stages")
            self.log(f"resuming from checkpoint {self.ckpt_path}: {where}")
        cfg = self.config
        deadline = None if cfg.max_minutes is None else \
            self.t0 + 60 * cfg.max_minutes - self.elapsed_before
        n_val = {el: 0 if v is None else len(v["F"]) for el, v in self.validation.items()}
        self.log(f"DCF training, {cfg.head} head, stages {', '.join(cfg.stages)}; "
                 + ", ".join(f"{el}: {self.n_train[el]} train / {n_val[el]} validation snapshots"
                             for el in self.spec.elements))
        plan = [(s, el) for s, el in self._plan() if s not in self.done[el]]
        for i, (stage, el) in enumerate(plan):
            fit_deadline = None
            if deadline is not None:
                left = max(deadline - time.monotonic(), 0.0)
                fit_deadline = time.monotonic() + left / (len(plan) - i)
            self._fit(stage, el, fit_deadline)
            self.done[el].append(stage)
            self.current, self.current_arrays = None, {}
            self._save_checkpoint(force=True)
        stages = [s for s in STAGES if s in self.prior_stages
                  or all(s in self.done[el] for el in self.spec.elements)]
        training = {"config": {**asdict(cfg), "rotations": self.rotations},
                    "n_train": self.n_train,
                    "n_validation": {el: 0 if v is None else int(len(v["F"]))
                                     for el, v in self.validation.items()},
                    "validation_frames": len(self.val_frames), "fits": self.fits,
                    "seconds": round(self.elapsed_before + time.monotonic() - self.t0, 1)}
        return export_model(self.spec, cfg, self.norms, self.weights, stages, training)

    def _batch_inputs(self, stage, el, batch, rng):
        """Normalized (inputs, target, weight) of a batch for a stage, augmented for the paper
        head by random rotations."""
        norm = self.norms[el]
        G = np.asarray(batch["G"], float)
        A = np.asarray(batch["A"], float)
        F = np.asarray(batch["F"], float)
        w = np.asarray(batch["weight"], float) if batch.get("weight") is not None \
            else np.ones(len(F))
        augment = self.config.head == "paper" and stage != "nn1" and self.rotations > 0
        if augment and rng is not None:
            r = self.rotations
            T = random_rotations(len(F) * r, rng)
            A = np.concatenate([A, np.einsum("nij,nkj->nki", T, np.tile(A, (r, 1, 1)))])
            F = np.concatenate([F, np.einsum("nij,nj->ni", T, np.tile(F, (r, 1)))])
            G, w = np.tile(G, (r + 1, 1)), np.tile(w, r + 1)
        Gn = ((G - norm["G_mean"]) / norm["G_std"]).astype("float32")
        fint = (internal_forces(A, F) / norm["fint_scale"]).astype("float32")
        Fn = (F / float(norm["force_scale"])).astype("float32")
        A32 = A.astype("float32")
        w = w.astype("float32")
        if stage == "nn1":
            return (Gn,), fint, w
        if stage == "nn2":
            return (Gn, fint, A32), Fn, w
        return (Gn, A32), Fn, w

    def _build(self, stage, el):
        """The Keras model trained in `stage` and a function collecting its parts' weights."""
        nG, nA = self.spec.n_features(el)
        if stage == "nn1":
            model = build_nn1(self.config, nG, nA)
            if self.weights[el]["nn1"] is not None:
                model.set_weights(self.weights[el]["nn1"])
            return model, lambda: {"nn1": model.get_weights()}
        if stage == "nn2":
            model = build_head(self.config, nG, nA)
            if self.weights[el]["head"] is not None:
                model.set_weights(self.weights[el]["head"])
            return model, lambda: {"head": model.get_weights()}
        model, nn1, head = build_nn3(self.config, nG, nA, self.weights[el]["nn1"],
                                     self.weights[el]["head"])
        return model, lambda: {"nn1": nn1.get_weights(), "head": head.get_weights()}

    def _fit(self, stage, el, deadline):
        import keras
        import tensorflow as tf
        cfg = self.config
        stage_index = STAGES.index(stage)
        el_index = self.spec.elements.index(el)
        # initial weights depend on (seed, stage, element) only, so a resumed run matches
        keras.utils.set_random_seed(int(np.random.default_rng(
            [cfg.seed, stage_index, el_index]).integers(2**31)))
        model, parts = self._build(stage, el)
        opt = Adam(model.trainable_variables, cfg.learning_rate)
        fit = self.current if (self.current and (self.current.stage, self.current.element)
                               == (stage, el)) else _Fit(stage, el, lr=cfg.learning_rate)
        best = model.get_weights()
        if fit.epoch > 0:
            model.set_weights(self.current_arrays["weights"])
            best = self.current_arrays["best"]
            for var, value in zip(opt.variables, self.current_arrays["optimizer"]):
                var.assign(value)
        self.current = fit

        nG, nA = self.spec.n_features(el)
        shapes = {"nn1": [(nG,)], "nn2": [(nG,), (nA,), (nA, 3)], "nn3": [(nG,), (nA, 3)]}[stage]
        inputs_spec = tuple(tf.TensorSpec((None, *shape), tf.float32) for shape in shapes)
        target_spec = tf.TensorSpec((None, nA if stage == "nn1" else 3), tf.float32)

        @tf.function(input_signature=[inputs_spec, target_spec, tf.TensorSpec((None,), tf.float32)],
                     autograph=False)
        def step(inputs, target, w):
            with tf.GradientTape() as tape:
                pred = model(list(inputs) if len(inputs) > 1 else inputs[0], training=True)
                loss = tf.reduce_sum(w * tf.reduce_mean(tf.square(pred - target), axis=1)) \
                    / tf.reduce_sum(w)
            opt.apply(tape.gradient(loss, model.trainable_variables))
            return loss

        @tf.function(input_signature=[inputs_spec], autograph=False)
        def predict(inputs):
            return model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)

        val = self.validation[el]
        if val is not None:
            # fixed validation inputs; the paper head also sees one rotated copy of each sample
            saved = self.rotations
            self.rotations = min(self.rotations, 1)
            val_inputs = self._batch_inputs(stage, el, val, np.random.default_rng([cfg.seed, 99]))
            self.rotations = saved
        scale = (self.norms[el]["fint_scale"] if stage == "nn1"
                 else float(self.norms[el]["force_scale"]))
        patience_lr = max(2, cfg.patience // 3)
        out_of_time = False
        while fit.epoch < cfg.epochs and not out_of_time:
            start = time.monotonic()
            seed = [cfg.seed, stage_index, el_index, fit.epoch]
            rng = np.random.default_rng(seed)
            losses, weights = [], []
            for batch in self.store.batches(el, cfg.batch_size, split="train", shuffle=True,
                                            seed=int(np.random.default_rng(seed).integers(2**31))):
                keep = ~np.isin(batch["frame"], self.val_frames)
                if not keep.any():
                    continue
                batch = {k: np.asarray(v)[keep] for k, v in batch.items()}
                inputs, target, w = self._batch_inputs(stage, el, batch, rng)
                losses.append(float(step(tuple(tf.constant(x) for x in inputs),
                                         tf.constant(target), tf.constant(w))))
                weights.append(len(target))
                if deadline is not None and time.monotonic() > deadline:
                    out_of_time = True
                    break
            fit.epoch += 1
            train_loss = float(np.average(losses, weights=weights)) if losses else float("nan")
            if val is not None:
                val_loss, val_mae = self._validate(predict, val_inputs, stage, scale)
            else:
                val_loss, val_mae = train_loss, float("nan")
            improved = val_loss < fit.best * (1 - 1e-4)
            if improved:
                fit.best, fit.best_epoch, fit.wait = val_loss, fit.epoch, 0
                best = model.get_weights()
            else:
                fit.wait += 1
                if fit.wait % patience_lr == 0:
                    fit.lr = max(fit.lr * 0.5, cfg.learning_rate * 1e-3)
                    opt.learning_rate.assign(fit.lr)
            unit = "F_int MAE" if stage == "nn1" else "force MAE"
            fit.history.append([fit.epoch, train_loss, val_loss, val_mae, fit.lr])
            self.log(f"{stage} {el} epoch {fit.epoch}/{cfg.epochs}: loss {train_loss:.4g} "
                     f"val {val_loss:.4g} {unit} {val_mae:.4f} eV/A lr {fit.lr:.2g} "
                     f"({time.monotonic() - start:.1f} s){' *' if improved else ''}")
            self.current_arrays = {"weights": model.get_weights(), "best": best,
                                   "optimizer": [v.numpy() for v in opt.variables]}
            if fit.wait >= cfg.patience:
                fit.stopped = "early stopping"
                break
            self._save_checkpoint()
            if self.stop_after is not None and self.stop_after(fit):
                self._save_checkpoint(force=True)
                raise KeyboardInterrupt(f"stopped after {stage} {el} epoch {fit.epoch}")
        fit.stopped = fit.stopped or ("time limit" if out_of_time else "epoch limit")
        model.set_weights(best)
        self.weights[el].update(parts())
        self.fits.append({"stage": stage, "element": el, "epochs": fit.epoch,
                          "best_epoch": fit.best_epoch, "best_val_loss": fit.best,
                          "stopped": fit.stopped, "history": fit.history})
        self.log(f"{stage} {el}: {fit.stopped} after {fit.epoch} epochs, best validation loss "
                 f"{fit.best:.4g} at epoch {fit.best_epoch}")

    @staticmethod
    def _validate(predict, val_inputs, stage, scale) -> tuple[float, float]:
        """Validation loss (normalized units) and MAE (eV/A; F_int for NN1, |dF| otherwise)."""
        import tensorflow as tf
        inputs, target, w = val_inputs
        preds = [predict(tuple(tf.constant(x[s:s + 8192]) for x in inputs)).numpy()
                 for s in range(0, len(target), 8192)]
        pred = np.concatenate(preds)
        sq = ((pred - target) ** 2).mean(axis=1)
        loss = float((w * sq).sum() / w.sum())
        if stage == "nn1":
            mae = float(np.abs((pred - target) * scale).mean())
        else:
            mae = float(np.linalg.norm(pred - target, axis=1).mean() * scale)
        return loss, mae

