"""Training of Behler–Parrinello atomic-energy networks on total energies and forces.

Model (see dcf.models.bp): E = sum_i [NN_el(i)(x_i) + e_el(i)], x_i = (G_i - mean_el) / std_el.

Loss: the Dellostritto review eq. 53, per frame with N atoms,

    C = 1/2 [(E - E_ref) / N]^2 + sum_i 1/2 (beta / N)^2 |F_i - F_ref,i|^2

averaged over the frames of a batch; beta (`force_weight`) sets the weight of the 3N force
terms against the one energy term. With `energy_only` the force term is dropped (PROPhet).

Forces during training come from the sparse per-neighbor derivatives of the fingerprints
(dcf.descriptors.fingerprints.Features.dG, pair_row, pair_atom): for each neighbor entry p of central row i
and neighbor atom j, with c_p = sum_a dE/dx_ia dx_ia/dr_j,

    F_j -= c_p,     F_i += c_p      (the center's derivative is minus its row's sum).

dE/dx comes from an inner GradientTape, so the loss is differentiated twice (forces depend on
the weights through dE/dx). The sparse dG/dr of the whole training set is kept in memory when
its exact size, counted from the neighbor lists before any dG is computed, fits in
`dgdr_memory_gb`; otherwise it is recomputed for every batch.

TensorFlow is imported inside the functions that train, so importing this module is cheap.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

ACTIVATIONS = ("tanh", "softplus", "silu")
DGDR_BYTES_PER_VALUE = 4            # training dG/dr is float32


# ---------------------------------------------------------------------------- configuration
@dataclass
class BPTrainConfig:
    """Training settings. Units: eV, eV/A; times in minutes."""
    hidden: tuple = (50, 50)
    activation: str = "tanh"
    force_weight: float = 1.0              # beta of eq. 53
    energy_only: bool = False
    epochs: int = 300
    max_minutes: float | None = None
    batch_frames: int = 8                  # frames per batch
    learning_rate: float = 3e-3
    min_learning_rate: float = 1e-5
    patience: int = 10                     # epochs without improvement before halving the rate
    validation_fraction: float = 0.1       # of the training frames, for the best-epoch choice
    seed: int = 0
    dgdr_memory_gb: float = 2.0
    num_threads: int = 1                   # featurizer threads and TensorFlow threads

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden layer widths must be positive integers, got {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.force_weight < 0:
            raise ValueError(f"force weight beta must be >= 0, got {self.force_weight}")
        if self.batch_frames < 1 or self.epochs < 1:
            raise ValueError("batch_frames and epochs must be at least 1")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation fraction must be in [0, 1), got "
                             f"{self.validation_fraction}")


def add_train_arguments(group) -> None:
    """The B–P-only flags of `dcf train`. Shared flags (--epochs, --max-minutes, --seed,
    --batch-size (frames), --learning-rate, --patience (epochs before the learning rate
    halves), --validation-fraction, --threads) are read from `args`; see `config_from_args`."""
    group.add_argument("--force-weight", type=float, default=BPTrainConfig.force_weight,
                       metavar="BETA",
                       help="B-P: beta of the loss (Dellostritto review eq. 53), the weight of "
                            "the force term against the per-atom energy term (default 1.0)")
    group.add_argument("--energy-only", action="store_true",
                       help="B-P: train on total energies only (PROPhet style)")
    group.add_argument("--dgdr-memory-gb", type=float, default=BPTrainConfig.dgdr_memory_gb,
                       metavar="GB",
                       help="B-P: keep the training set's sparse dG/dr in memory when it needs "
                            "at most this much, otherwise recompute it per batch (default 2)")
    group.add_argument("--bp-hidden", default="50,50", metavar="N,N",
                       help="B-P: hidden layer widths of each element's network (default 50,50)")
    group.add_argument("--bp-activation", default="tanh", choices=ACTIVATIONS,
                       help="B-P: hidden-layer activation (default tanh)")


def config_from_args(args) -> BPTrainConfig:
    """BPTrainConfig from parsed `dcf train` arguments (missing or None flags: defaults)."""
    def get(name, default):
        value = getattr(args, name, None)
        return default if value is None else value

    d = BPTrainConfig()
    try:
        hidden = tuple(int(h) for h in str(get("bp_hidden", "50,50")).split(",") if h.strip())
    except ValueError:
        raise ValueError(f"--bp-hidden must be comma-separated integers, got "
                         f"{args.bp_hidden!r}") from None
    return BPTrainConfig(
        hidden=hidden, activation=get("bp_activation", d.activation),
        force_weight=get("force_weight", d.force_weight),
        energy_only=bool(get("energy_only", False)), epochs=get("epochs", d.epochs),
        max_minutes=get("max_minutes", None), batch_frames=get("batch_size", d.batch_frames),
        learning_rate=get("learning_rate", d.learning_rate), patience=get("patience", d.patience),
        validation_fraction=get("validation_fraction", d.validation_fraction),
        seed=get("seed", d.seed),
        dgdr_memory_gb=get("dgdr_memory_gb", d.dgdr_memory_gb),
        num_threads=get("threads", d.num_threads))


def train_from_store(store, args, log=print):
    """Train a B–P model on the "train" split of a FeatureStore; returns the BPModel.

    The store's frames (positions, cell, reference energy and forces) are featurized here with
    derivatives: B–P training needs dG/dr, which the store does not hold.
    """
    frames = _StoreFrames(store, store.frame_ids("train"))
    if len(frames) == 0:
        raise ValueError("the feature store has no training frames")
    model, _ = train_bp(frames, store.spec, config_from_args(args), log)
    return model


class _StoreFrames:
    """A FeatureStore split as a sequence of ase.Atoms, read on access."""

    def __init__(self, store, ids):
        self.store, self.ids = store, list(ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, k):
        return self.store.frame(self.ids[k])


# ---------------------------------------------------------------------------- data
@dataclass
class FrameData:
    """One training frame. energy eV; forces (n, 3) eV/A; per element el: x[el] (n_el, nG)
    normalized inputs, index[el] (n_el,) atom indices; with derivatives dx[el] (p, nG, 3)
    float32 = dG/dr / std per neighbor entry, pair_row[el], pair_atom[el] (p,)."""
    n_atoms: int
    energy: float
    forces: np.ndarray | None
    x: dict
    index: dict
    dx: dict = field(default_factory=dict)
    pair_row: dict = field(default_factory=dict)
    pair_atom: dict = field(default_factory=dict)


def reference_labels(atoms, k, need_forces: bool):
    """(energy eV, forces (n, 3) eV/A or None) of a training frame; ValueError naming it."""
    try:
        energy = float(atoms.get_potential_energy())
    except Exception as err:     # no calculator, or one without a stored energy
        raise ValueError(f"training frame {k} has no reference energy ({err}); "
                         f"B-P training needs total energies") from None
    forces = None
    if need_forces:
        try:
            forces = np.asarray(atoms.get_forces(), dtype=float)
        except Exception as err:
            raise ValueError(f"training frame {k} has no reference forces ({err}); "
                             f"train with --energy-only or supply forces") from None
    return energy, forces


def dgdr_bytes(featurizer, env) -> int:
    """Bytes of the float32 sparse dG/dr (plus its two index arrays) of one structure."""
    spec = featurizer.spec
    return sum(len(env.entry[el]) * (spec.n_features(el)[0] * 3 * DGDR_BYTES_PER_VALUE + 16)
               for el in spec.elements)


def composition_energies(counts: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """Per-element reference energies e (n_el,) eV minimizing |counts @ e - energies|
    (least squares, minimum norm where the compositions do not determine e).
    counts (n_frames, n_el), energies (n_frames,)."""
    e, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return e


class _Normalizer:
    """mean, std (nG,) per element from the fitting frames' G (std 1 where a feature is
    constant)."""

    def __init__(self, G_blocks: dict, elements):
        self.mean, self.std = {}, {}
        for el in elements:
            G = G_blocks[el]
            if len(G) == 0:
                self.mean[el] = np.zeros(G.shape[1])
                self.std[el] = np.ones(G.shape[1])
                continue
            self.mean[el] = G.mean(axis=0)
            std = G.std(axis=0)
            self.std[el] = np.where(std > 1e-8 * (1.0 + np.abs(self.mean[el])), std, 1.0)


class _Dataset:
    """Frames featurized for training: G kept for all frames (small); sparse dG/dr kept
    (`in_memory`) or recomputed per batch."""

    def __init__(self, frames, featurizer, config: BPTrainConfig, log):
        self.frames, self.fz, self.cfg = frames, featurizer, config
        self.elements = featurizer.spec.elements
        self.need_forces = not config.energy_only
        self.G, self.index, self.energy, self.forces, self.n_atoms = [], [], [], [], []
        total_dgdr = 0
        for k in range(len(frames)):
            atoms = frames[k]
            energy, forces = reference_labels(atoms, k, self.need_forces)
            env = featurizer.environment(atoms, source=f"training frame {k}")
            f = featurizer.features(env)
            self.G.append(f.G)
            self.index.append(f.index)
            self.energy.append(energy)
            self.forces.append(forces)
            self.n_atoms.append(len(atoms))
            if self.need_forces:
                total_dgdr += dgdr_bytes(featurizer, env)
        self.dgdr_bytes = total_dgdr
        self.in_memory = total_dgdr <= config.dgdr_memory_gb * 1e9
        if self.need_forces:
            log(f"B-P: sparse dG/dr of {len(frames)} training frames needs "
                f"{total_dgdr / 1e9:.3f} GB; "
                + ("kept in memory" if self.in_memory else
                   f"over --dgdr-memory-gb {config.dgdr_memory_gb:g}: recomputed per batch"))
        self.norm = None
        self.offsets = None
        self._cache: dict[int, FrameData] = {}

    def fit_statistics(self, fit_ids) -> None:
        """Normalization and per-element reference energies from the fitting frames."""
        blocks = {el: np.concatenate([self.G[k][el] for k in fit_ids]) for el in self.elements}
        self.norm = _Normalizer(blocks, self.elements)
        counts = np.array([[len(self.index[k][el]) for el in self.elements] for k in fit_ids],
                          dtype=float)
        self.offsets = composition_energies(counts, np.array([self.energy[k] for k in fit_ids]))

    def item(self, k: int) -> FrameData:
        if k in self._cache:
            return self._cache[k]
        inv = {el: 1.0 / self.norm.std[el] for el in self.elements}
        x = {el: ((self.G[k][el] - self.norm.mean[el]) * inv[el]).astype(np.float32)
             for el in self.elements}
        d = FrameData(self.n_atoms[k], self.energy[k], self.forces[k], x, self.index[k])
        if self.need_forces:
            f = self.fz(self.frames[k], derivatives=True)
            for el in self.elements:
                d.dx[el] = (f.dG[el] * inv[el][None, :, None]).astype(np.float32)
                d.pair_row[el] = f.pair_row[el].astype(np.int32)
                d.pair_atom[el] = f.pair_atom[el].astype(np.int32)
        if self.in_memory or not self.need_forces:
            self._cache[k] = d
        return d

    def batch(self, ids) -> dict:
        """Collate frames into flat arrays (numpy) for one training step; see predict."""
        items = [self.item(k) for k in ids]
        atom_off = np.cumsum([0] + [d.n_atoms for d in items])
        counts = np.array([[len(d.index[el]) for el in self.elements] for d in items], float)
        b = {"energy": np.array([d.energy for d in items]) - counts @ self.offsets,
             "n_atoms": np.array([d.n_atoms for d in items], dtype=np.float32),
             "atom_frame": np.repeat(np.arange(len(items)), np.diff(atom_off)).astype(np.int32)}
        b["energy"] = b["energy"].astype(np.float32)
        if self.need_forces:
            b["forces"] = np.concatenate([d.forces for d in items]).astype(np.float32)
        for el in self.elements:
            n_el = [len(d.index[el]) for d in items]
            row_off = np.cumsum([0] + n_el)
            b[f"{el}/x"] = np.concatenate([d.x[el] for d in items])
            b[f"{el}/frame"] = np.repeat(np.arange(len(items)), n_el).astype(np.int32)
            b[f"{el}/atom"] = np.concatenate(
                [d.index[el] + atom_off[f] for f, d in enumerate(items)]).astype(np.int32)
            if self.need_forces:
                b[f"{el}/dx"] = np.concatenate([d.dx[el] for d in items])
                b[f"{el}/pair_row"] = np.concatenate(
                    [d.pair_row[el] + row_off[f] for f, d in enumerate(items)]).astype(np.int32)
                b[f"{el}/pair_atom"] = np.concatenate(
                    [d.pair_atom[el] + atom_off[f] for f, d in enumerate(items)]).astype(np.int32)
        return b


# ---------------------------------------------------------------------------- training
def _build_networks(keras, spec, config: BPTrainConfig) -> dict:
    nets = {}
    for el in spec.elements:
        layers = [keras.Input((spec.n_features(el)[0],))]
        layers += [keras.layers.Dense(h, activation=config.activation) for h in config.hidden]
        layers += [keras.layers.Dense(1, kernel_initializer=keras.initializers.RandomNormal(
            stddev=0.01 / np.sqrt(config.hidden[-1])))]
        nets[el] = keras.Sequential(layers, name=f"bp_{el}")
    return nets


def train_bp(frames, spec, config: BPTrainConfig | None = None, log=print):
    """Fit a B–P model to `frames` (a sequence of ase.Atoms whose calculators hold reference
    energies, eV, and forces, eV/A). Returns (BPModel, history dict).

    A fraction `validation_fraction` of the frames (at least one, when there are five or more)
    is held out to choose the best epoch; the learning rate halves after `patience` epochs
    without improvement. Training stops after `epochs` or `max_minutes`.
    """
    import tensorflow as tf
    from dcf.models.bp import invariant_spec
    from dcf.training.core import set_threads
    from dcf.descriptors.fingerprints import Featurizer
    from dcf.descriptors.spec import FingerprintSpec

    config = config or BPTrainConfig()
    set_threads(config.num_threads)
    import keras

    start = time.perf_counter()
    spec = FingerprintSpec.resolve(spec)
    fz = Featurizer(invariant_spec(spec), config.num_threads)     # B-P needs G only
    data = _Dataset(frames, fz, config, log)
    n = len(frames)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n)
    n_val = int(round(config.validation_fraction * n)) if n >= 5 else 0
    n_val = max(n_val, 1) if n >= 5 and config.validation_fraction > 0 else n_val
    val_ids, fit_ids = np.sort(order[:n_val]), np.sort(order[n_val:])
    data.fit_statistics(fit_ids)
    absent = [el for el in spec.elements if sum(len(data.index[k][el]) for k in fit_ids) == 0]
    if absent:
        log(f"B-P: no {', '.join(absent)} atoms in the training frames; their networks stay "
            f"untrained")

    keras.utils.set_random_seed(config.seed)
    nets = _build_networks(keras, spec, config)
    variables = [v for el in spec.elements for v in nets[el].trainable_variables]
    opt = keras.optimizers.Adam(learning_rate=config.learning_rate)
    beta2 = tf.constant(config.force_weight ** 2, tf.float32)
    use_forces = not config.energy_only
    elements = spec.elements

    def losses(b):
        """Per-frame energy and force terms of eq. 53 (n_frames,) each."""
        E, F = predict(tf, nets, elements, b, use_forces)
        N = b["n_atoms"]
        e_term = 0.5 * tf.square((E - b["energy"]) / N)
        if not use_forces:
            return e_term, tf.zeros_like(e_term), E, F
        sq = tf.reduce_sum(tf.square(F - b["forces"]), axis=1)
        f_sum = tf.math.unsorted_segment_sum(sq, b["atom_frame"], tf.shape(N)[0])
        return e_term, 0.5 * beta2 * f_sum / tf.square(N), E, F

    @tf.function(reduce_retracing=True)
    def train_step(b):
        with tf.GradientTape() as tape:
            e_term, f_term, _, _ = losses(b)
            loss = tf.reduce_mean(e_term + f_term)
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function(reduce_retracing=True)
    def eval_step(b):
        e_term, f_term, E, F = losses(b)
        return e_term + f_term, E, F

    def evaluate(ids) -> dict:
        """Mean eq.-53 loss, energy RMSE (eV/atom) and force-component RMSE (eV/A)."""
        loss, e_sq, f_sq, n_f, n_c = 0.0, 0.0, 0.0, 0, 0
        for s in range(0, len(ids), config.batch_frames):
            b = data.batch(ids[s:s + config.batch_frames])
            c, E, F = eval_step(_tensors(tf, b))
            loss += float(tf.reduce_sum(c))
            e_sq += float(np.sum(((E.numpy() - b["energy"]) / b["n_atoms"]) ** 2))
            n_f += len(b["energy"])
            if use_forces:
                f_sq += float(np.sum((F.numpy() - b["forces"]) ** 2))
                n_c += b["forces"].size
        return {"loss": loss / n_f, "energy_rmse": float(np.sqrt(e_sq / n_f)),
                "force_rmse": float(np.sqrt(f_sq / n_c)) if n_c else None}

    select_ids = val_ids if len(val_ids) else fit_ids
    best = {"loss": np.inf, "epoch": 0, "weights": [v.numpy() for v in variables]}
    history = {"epoch": [], "train_loss": [], "select_loss": []}
    stale = 0
    reason = "epochs"
    for epoch in range(1, config.epochs + 1):
        perm = rng.permutation(fit_ids)
        total = 0.0
        for s in range(0, len(perm), config.batch_frames):
            ids = perm[s:s + config.batch_frames]
            total += float(train_step(_tensors(tf, data.batch(ids)))) * len(ids)
        score = evaluate(select_ids)
        history["epoch"].append(epoch)
        history["train_loss"].append(total / len(perm))
        history["select_loss"].append(score["loss"])
        if score["loss"] < best["loss"]:
            best = {"loss": score["loss"], "epoch": epoch, "score": score,
                    "weights": [v.numpy() for v in variables]}
            stale = 0
        else:
            stale += 1
            if stale >= config.patience:
                opt.learning_rate = max(float(opt.learning_rate) * 0.5, config.min_learning_rate)
                stale = 0
        if epoch == 1 or epoch % 10 == 0:
            f_rmse = score["force_rmse"]
            log(f"B-P epoch {epoch}: train loss {total / len(perm):.4g}, "
                f"{'validation' if len(val_ids) else 'training'} loss {score['loss']:.4g}, "
                f"energy RMSE {1000 * score['energy_rmse']:.2f} meV/atom"
                + (f", force RMSE {f_rmse:.4f} eV/A" if f_rmse is not None else "")
                + f", lr {float(opt.learning_rate):.2g}")
        if config.max_minutes is not None and \
                time.perf_counter() - start > 60 * config.max_minutes:
            reason = "max_minutes"
            break
    for v, w in zip(variables, best["weights"]):
        v.assign(w)

    record = {"config": {**asdict(config), "hidden": list(config.hidden)},
              "frames": int(n), "fit_frames": int(len(fit_ids)),
              "validation_frames": int(len(val_ids)), "epochs_run": int(epoch),
              "stopped_by": reason, "best_epoch": int(best["epoch"]),
              "best_score": best.get("score"), "dgdr_bytes": int(data.dgdr_bytes),
              "dgdr_in_memory": bool(data.in_memory),
              "minutes": (time.perf_counter() - start) / 60, "untrained_elements": absent}
    model = export_model(spec, nets, data, config, record)
    log(f"B-P: best epoch {best['epoch']} of {epoch} ({reason}), "
        f"{record['minutes']:.1f} min")
    return model, {**history, **record}


def export_model(spec, nets: dict, data: _Dataset, config: BPTrainConfig, record: dict):
    """The numpy BPModel of trained Keras networks, with the dataset's normalization and
    reference energies."""
    import keras
    from dcf.models.bp import BPModel
    from dcf.models.mlp import MLP

    networks = {}
    for el in data.elements:
        dense = [layer for layer in nets[el].layers if isinstance(layer, keras.layers.Dense)]
        networks[el] = MLP.from_keras(dense, config.activation)
    return BPModel(spec, networks, data.norm.mean, data.norm.std,
                   dict(zip(data.elements, map(float, data.offsets))), record,
                   num_threads=config.num_threads)


def predict(tf, nets: dict, elements, b: dict, use_forces: bool = True):
    """Total energies (n_frames,) eV (without the reference energies e_el) and forces
    (n_atoms, 3) eV/A of a collated batch `b` (see _Dataset.batch), from the per-element
    Keras networks `nets` and the sparse derivatives dx = dG/dr / std."""
    n_frames = tf.shape(b["energy"])[0]
    n_atoms = tf.shape(b["atom_frame"])[0]
    E = tf.zeros([n_frames])
    F = tf.zeros([n_atoms, 3])
    for el in elements:
        x = b[f"{el}/x"]
        with tf.GradientTape() as inner:
            inner.watch(x)
            e_atom = nets[el](x)[:, 0]
        E += tf.math.unsorted_segment_sum(e_atom, b[f"{el}/frame"], n_frames)
        if use_forces:
            dEdx = inner.gradient(e_atom, x)                                   # (n_el, nG)
            rows = b[f"{el}/pair_row"]
            c = tf.einsum("pg,pgk->pk", tf.gather(dEdx, rows), b[f"{el}/dx"])   # (p, 3)
            # neighbor atom j: F_j -= c_p; central atom i: F_i += c_p
            F += (tf.math.unsorted_segment_sum(c, tf.gather(b[f"{el}/atom"], rows), n_atoms)
                  - tf.math.unsorted_segment_sum(c, b[f"{el}/pair_atom"], n_atoms))
    return E, F


def _tensors(tf, b: dict) -> dict:
    return {k: tf.convert_to_tensor(v) for k, v in b.items()}
