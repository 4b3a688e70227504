"""Training of Behler–Parrinello atomic-energy networks on total energies and forces.

Model (see dcf.models.bp): E = sum_i [NN_el(i)(x_i) + e_el(i)], x_i = (G_i - mean_el) / std_el.

Loss: the Dellostritto review eq. 53, per frame with N atoms,

    C = 1/2 [(E - E_ref) / N]^2 + sum_i 1/2 (beta / N)^2 |F_i - F_ref,i|^2

averaged over the frames of a batch; beta (`force_weight`) sets the weight of the 3N force
terms against the one energy term. With `energy_only` the force term is dropped (PROPhet).

Forces during training come from the sparse per-neighbor derivatives of the fingerprints
(dcf.descriptors.fingerprints.Features.dG, pair_row, pair_atom): for each neighbor entry p of
central row i and neighbor atom j, with c_p = sum_a dE/dx_ia dx_ia/dr_j,

    F_j -= c_p,     F_i += c_p      (the center's derivative is minus its row's sum).

dE/dx comes from an inner GradientTape, so the loss is differentiated twice (forces depend on
the weights through dE/dx). The sparse dG/dr of the whole training set is kept in memory when
its exact size, counted from the neighbor lists before any dG is computed, fits in
`dgdr_memory_gb`; otherwise it is recomputed for every batch.

The validation split, early stopping, learning-rate schedule, optimizer and checkpoints are
those of `dcf.training.core`, shared with DCF training: the whole B–P model is one fit
(stage "bp", element "all"). TensorFlow is imported inside the functions that train, so
importing this module is cheap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from dcf.training.core import (Adam, Checkpoint, Clock, DataHash, DataParallel, Fit,
                               Normalizer, TrainingError, TrainingOptions, checked_network,
                               epoch_ends_fit, frame_batches, no_validation_warning, pack,
                               rank_log, rank_threads, same_on_all_ranks, serial_comm,
                               set_threads, shard, shared_options, unpack, validation_split)

DGDR_BYTES_PER_VALUE = 4            # training dG/dr is float32
CHECKPOINT_KIND = "bp-checkpoint"


# ---------------------------------------------------------------------------- configuration
@dataclass
class BPTrainConfig(TrainingOptions):
    """B–P training settings. Units: eV, eV/A; times in minutes. The shared options
    (batch_size in atoms, filled with whole frames; patience as early stopping): see
    `TrainingOptions`."""
    epochs: int = 300
    batch_size: int = 256
    learning_rate: float = 3e-3
    patience: int = 30
    hidden: tuple = (50, 50)
    activation: str = "tanh"
    force_weight: float = 1.0              # beta of eq. 53
    energy_only: bool = False
    dgdr_memory_gb: float | None = None   # None: half the memory available at the start

    def __post_init__(self):
        super().__post_init__()
        self.hidden = checked_network(self.hidden, self.activation)
        if self.force_weight < 0:
            raise TrainingError(f"force weight beta must be >= 0, got {self.force_weight}")

    def architecture(self) -> dict:
        """What fixes the networks and the loss (a checkpoint must agree on it)."""
        return {"hidden": list(self.hidden), "activation": self.activation,
                "force_weight": self.force_weight, "energy_only": self.energy_only}


def add_train_arguments(group) -> None:
    """The B–P-only flags of `dcf train` (the shared ones: dcf.training.core)."""
    group.add_argument("--force-weight", type=float, default=None, metavar="BETA",
                       help="B-P: beta of the loss (Dellostritto review eq. 53), the weight of "
                            "the force term against the per-atom energy term (default 1.0)")
    group.add_argument("--energy-only", action="store_true",
                       help="B-P: train on total energies only (PROPhet style)")
    group.add_argument("--dgdr-memory-gb", type=float, default=None, metavar="GB",
                       help="B-P: keep the training set's sparse dG/dr in memory when it needs "
                            "at most this much, otherwise recompute it per batch (default: half "
                            "the memory available when training starts)")


def dgdr_memory_limit(gb: float | None) -> float:
    """Bytes of dG/dr to keep in memory: `gb` GB, or (None) half of the memory available now
    (MemAvailable of /proc/meminfo; 2 GB where that cannot be read)."""
    if gb is not None:
        return gb * 1e9
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return 0.5 * int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2e9


def config_from_args(args) -> BPTrainConfig:
    """BPTrainConfig from parsed `dcf train` arguments (missing or None flags: defaults)."""
    opts = shared_options(args, BPTrainConfig)
    for name in ("force_weight", "dgdr_memory_gb"):
        if getattr(args, name, None) is not None:
            opts[name] = getattr(args, name)
    return BPTrainConfig(**opts, energy_only=bool(getattr(args, "energy_only", False)))


def train_from_store(store, args, log=print, comm=None):
    """Train a B–P model on the "train" split of a FeatureStore; returns the BPModel.

    The store's frames (positions, cell, reference energy and forces) are featurized here with
    derivatives: B–P training needs dG/dr, which the store does not hold. comm: the MPI ranks
    that share the training (dcf.parallel; None: this process alone).
    """
    frames = _StoreFrames(store, store.frame_ids("train"))
    if len(frames) == 0:
        raise TrainingError("the feature store has no training frames")
    return train_bp(frames, store.spec, config_from_args(args), log,
                    restart=getattr(args, "restart", False), comm=comm)


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


class _Dataset:
    """Frames featurized for training: G kept for all frames (small); sparse dG/dr kept
    (`in_memory`) or recomputed per batch. sha256: hash of the frames as read (DataHash)."""

    def __init__(self, frames, featurizer, config: BPTrainConfig, log):
        self.frames, self.fz, self.cfg = frames, featurizer, config
        self.elements = featurizer.spec.elements
        self.need_forces = not config.energy_only
        self.G, self.index, self.energy, self.forces, self.n_atoms = [], [], [], [], []
        total_dgdr, data_hash = 0, DataHash()
        for k in range(len(frames)):
            atoms = frames[k]
            energy, forces = reference_labels(atoms, k, self.need_forces)
            data_hash.add(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                          np.array(energy), np.zeros(0) if forces is None else forces)
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
        limit = dgdr_memory_limit(config.dgdr_memory_gb)
        self.in_memory = total_dgdr <= limit
        if self.need_forces:
            log(f"B-P: sparse dG/dr of {len(frames)} training frames needs "
                f"{total_dgdr / 1e9:.3f} GB; "
                + ("kept in memory" if self.in_memory else
                   f"over the {limit / 1e9:.3g} GB of --dgdr-memory-gb: recomputed per batch"))
        self.mean = self.std = None
        self.sha256 = data_hash.hexdigest()
        self.offsets = None
        self._cache: dict[int, FrameData] = {}

    def fit_statistics(self, fit_ids) -> None:
        """Normalization and per-element reference energies from the fitting frames."""
        blocks = {el: np.concatenate([self.G[k][el] for k in fit_ids]) for el in self.elements}
        self.mean, self.std = {}, {}
        for el in self.elements:
            stats = Normalizer(blocks[el].shape[1])
            stats.add(blocks[el])
            self.mean[el], self.std[el] = stats.mean_std()
        counts = np.array([[len(self.index[k][el]) for el in self.elements] for k in fit_ids],
                          dtype=float)
        self.offsets = composition_energies(counts, np.array([self.energy[k] for k in fit_ids]))

    def item(self, k: int) -> FrameData:
        if k in self._cache:
            return self._cache[k]
        inv = {el: 1.0 / self.std[el] for el in self.elements}
        x = {el: ((self.G[k][el] - self.mean[el]) * inv[el]).astype(np.float32)
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


class BPFit:
    """The B–P networks of all elements, their Adam optimizer and the compiled loss steps,
    on a `_Dataset` split into fitting frames `fit_ids` and validation frames `val_ids`;
    the steps and the validation are shared by the ranks of `comm` (core.DataParallel)."""

    def __init__(self, spec, data: _Dataset, config: BPTrainConfig, fit_ids, val_ids,
                 comm=None):
        import keras

        self.spec, self.data, self.config = spec, data, config
        self.fit_ids, self.val_ids = fit_ids, val_ids
        keras.utils.set_random_seed(config.seed)
        self.nets = _build_networks(keras, spec, config)
        self.variables = [v for el in spec.elements for v in self.nets[el].trainable_variables]
        self.opt = Adam(self.variables, config.learning_rate)
        self.dp, self.eval_step = self._compile(comm or serial_comm())

    def _compile(self, comm):
        import tensorflow as tf
        nets, elements = self.nets, self.spec.elements
        beta2 = tf.constant(self.config.force_weight ** 2, tf.float32)
        use_forces = not self.config.energy_only

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

        def shard_loss(b):
            """The shard's frames' terms over the frames of the whole batch (b["frames"])."""
            e_term, f_term, _, _ = losses(b)
            return tf.reduce_sum(e_term + f_term) / b["frames"]

        @tf.function(reduce_retracing=True)
        def eval_step(b):
            e_term, f_term, E, F = losses(b)
            return e_term + f_term, E, F

        return DataParallel(comm, shard_loss, self.variables, self.opt), eval_step

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The frame ids of every step of `epoch`: the fitting frames shuffled by (seed,
        epoch) in batches of at least batch_size atoms."""
        order = np.random.default_rng([self.config.seed, epoch]).permutation(self.fit_ids)
        return frame_batches(order, self.data.n_atoms, self.config.batch_size)

    def shard_inputs(self, ids, rank: int, size: int):
        """The step inputs of shard `rank` of `size` of the batch of frames `ids` (None: no
        frames), with the batch's frame count (the loss's normalization)."""
        import tensorflow as tf
        mine = ids[shard(len(ids), rank, size)]
        if not len(mine):
            return None
        b = self.data.batch(mine)
        b["frames"] = np.float32(len(ids))
        return (_tensors(tf, b),)

    def train_epoch(self, epoch: int) -> float:
        """One pass over the fitting frames, each batch's frames shared by the ranks; mean
        loss per frame."""
        total, n = 0.0, 0
        for ids in self.epoch_batches(epoch):
            total += self.dp.step(self.shard_inputs(ids, self.dp.rank, self.dp.size))[0] \
                * len(ids)
            n += len(ids)
        return total / n

    def evaluate(self, ids) -> dict:
        """Mean eq.-53 loss, energy RMSE (eV/atom), force-component RMSE and force MAE
        (mean |F - F_ref| per atom) in eV/A (None without forces) of frames `ids`, each rank
        evaluating its share of them."""
        import tensorflow as tf
        sums = np.zeros(6)        # loss, energy sq, force sq, |dF|, frames, atoms
        mine = np.asarray(ids)[self.dp.shard(len(ids))]
        for batch_ids in frame_batches(mine, self.data.n_atoms, self.config.batch_size):
            b = self.data.batch(batch_ids)
            c, E, F = self.eval_step(_tensors(tf, b))
            sums[0] += float(tf.reduce_sum(c))
            sums[1] += float(np.sum(((E.numpy() - b["energy"]) / b["n_atoms"]) ** 2))
            sums[4] += len(b["energy"])
            if not self.config.energy_only:
                dF = F.numpy() - b["forces"]
                sums[2] += float(np.sum(dF ** 2))
                sums[3] += float(np.linalg.norm(dF, axis=1).sum())
                sums[5] += len(dF)
        loss, e_sq, f_sq, f_abs, n_f, n_a = self.dp.sum(sums)
        return {"loss": loss / n_f, "energy_rmse": float(np.sqrt(e_sq / n_f)),
                "force_rmse": float(np.sqrt(f_sq / (3 * n_a))) if n_a else None,
                "force_mae": f_abs / n_a if n_a else None}

    def weights(self) -> list:
        return [v.numpy() for v in self.variables]

    def set_weights(self, weights) -> None:
        for v, w in zip(self.variables, weights):
            v.assign(w)

    def state(self, best) -> dict:
        """The arrays a checkpoint holds: current and best weights, optimizer state."""
        return {**pack("weights", self.weights()), **pack("best", best),
                **pack("optimizer", self.opt.state())}

    def restore(self, arrays: dict) -> list:
        """Continue from `state()`; returns the best weights so far."""
        self.set_weights(unpack("weights", arrays))
        self.opt.restore(unpack("optimizer", arrays))
        return unpack("best", arrays)


def checkpoint_identity(config: BPTrainConfig, spec, data: _Dataset, n_val: int) -> dict:
    """What a checkpoint of this run must agree on."""
    return {"model": CHECKPOINT_KIND, "spec_sha256": spec.fingerprint,
            "architecture": config.architecture(), "seed": config.seed,
            "validation_fraction": config.validation_fraction, "n_frames": len(data.n_atoms),
            "n_validation": n_val, "data_sha256": data.sha256}


def train_bp(frames, spec, config: BPTrainConfig | None = None, log=print,
             restart: bool = False, stop_after=None, comm=None):
    """Fit a B–P model to `frames` (a sequence of ase.Atoms whose calculators hold reference
    energies, eV, and forces, eV/A). Returns the BPModel; its `training` holds the run's
    record, with the learning curve in training["fits"][0]["history"].

    A fraction `validation_fraction` of the frames (`core.validation_split`) is held out for
    early stopping and the best epoch; see `TrainingOptions` for the schedule, the budget and
    the checkpoint. restart: ignore an existing checkpoint. stop_after(fit) -> bool: called
    after every epoch; True interrupts the run as a KeyboardInterrupt would (tests).
    comm: the MPI ranks sharing each step's frames (dcf.parallel; None: this process alone);
    every rank returns the same model, rank 0 alone logs and writes the checkpoint.
    """
    from dcf.descriptors.spec import FingerprintSpec

    config, comm = config or BPTrainConfig(), comm or serial_comm()
    log = rank_log(log, comm)
    clock = Clock(config.max_minutes)
    spec = FingerprintSpec.resolve(spec)
    bp, absent = prepare_fit(frames, spec, config, log, comm)
    data, val_ids = bp.data, bp.val_ids
    checkpoint = Checkpoint(config.checkpoint,
                            checkpoint_identity(config, spec, data, len(val_ids)),
                            config.checkpoint_every, restart, comm)
    fit, best = Fit("bp", "all", lr=config.learning_rate), bp.weights()
    saved = checkpoint.load()
    if saved is not None:
        meta, arrays = saved
        fit, best = Fit(**meta["fit"]), bp.restore(arrays)
        clock.before = float(meta["elapsed"])
        log(f"resuming from checkpoint {checkpoint.path}: bp after epoch {fit.epoch}")

    def save(force=False):
        checkpoint.save({"fit": asdict(fit), "elapsed": clock.elapsed()}, bp.state(best), force)

    bp.set_weights(fit_bp(bp, fit, best, clock, save, log, stop_after))
    log(f"B-P: {bp.dp.timing()}")
    record = training_record(bp, fit, clock.elapsed() / 60, absent)
    log(f"B-P: best epoch {fit.best_epoch} of {fit.epoch} ({fit.stopped}), "
        f"{record['minutes']:.1f} min")
    return export_model(spec, bp.nets, data, config, record)


def prepare_fit(frames, spec, config: BPTrainConfig, log, comm=None) -> tuple[BPFit, list]:
    """The fit of a run: frames featurized, split and normalized, networks built; and the
    elements without atoms in the fitting frames. comm: as train_bp's."""
    from dcf.descriptors.fingerprints import Featurizer
    from dcf.descriptors.spec import invariant_spec

    comm = comm or serial_comm()

    threads = rank_threads(config.threads, comm)
    set_threads(threads)
    data = _Dataset(frames, Featurizer(invariant_spec(spec), threads), config, log)
    same_on_all_ranks(comm, data.sha256, "training frames")
    fit_ids, val_ids = validation_split(np.arange(len(frames)), config.validation_fraction,
                                        config.seed)
    if len(val_ids) == 0:
        log(no_validation_warning("B-P training"))
    data.fit_statistics(fit_ids)
    absent = [el for el in spec.elements if sum(len(data.index[k][el]) for k in fit_ids) == 0]
    if absent:
        log(f"B-P: no {', '.join(absent)} atoms in the training frames; their networks stay "
            f"untrained")
    if data.in_memory:        # dG/dr of every frame now: any rank may meet any frame later
        for k in range(len(frames)):
            data.item(k)
    return BPFit(spec, data, config, fit_ids, val_ids, comm), absent


def training_record(bp: BPFit, fit: Fit, minutes: float, untrained) -> dict:
    """The run as the model's metadata keeps it (model.training), with the best weights set."""
    data, config = bp.data, bp.config
    return {"config": {**asdict(config), "hidden": list(config.hidden)},
            "frames": len(data.n_atoms), "fit_frames": int(len(bp.fit_ids)),
            "validation_frames": int(len(bp.val_ids)), "epochs_run": fit.epoch,
            "stopped_by": fit.stopped, "best_epoch": fit.best_epoch,
            "best_score": bp.evaluate(bp.val_ids if len(bp.val_ids) else bp.fit_ids),
            "dgdr_bytes": int(data.dgdr_bytes), "dgdr_in_memory": bool(data.in_memory),
            "data_sha256": data.sha256, "minutes": minutes, "untrained_elements": untrained,
            "fits": [fit.summary()]}


def fit_bp(bp: BPFit, fit: Fit, best: list, clock: Clock, save, log, stop_after=None) -> list:
    """Train to early stopping, the epoch limit or the time budget (checked after each
    epoch), continuing `fit`; returns the best weights. save(force=False) writes the
    checkpoint."""
    cfg, has_val = bp.config, len(bp.val_ids) > 0
    bp.opt.learning_rate.assign(fit.lr)
    deadline = clock.fit_deadline(1)
    while fit.epoch < cfg.epochs:
        train_loss = bp.train_epoch(fit.epoch)
        score = bp.evaluate(bp.val_ids) if has_val else None
        if fit.end_epoch(train_loss, score and score["loss"], score and score["force_mae"],
                         cfg):
            best = bp.weights()
        bp.opt.learning_rate.assign(fit.lr)
        log(_epoch_line(fit, train_loss, score))
        if epoch_ends_fit(fit, cfg, deadline, save, stop_after, "bp", bp.dp.agree):
            break
    fit.stopped = fit.stopped or "epoch limit"
    return best


def _epoch_line(fit: Fit, train_loss: float, score: dict | None) -> str:
    if score is None:
        return (f"bp epoch {fit.epoch}: loss {train_loss:.4g} (no validation) "
                f"lr {fit.lr:.2g}{' *' if fit.best_epoch == fit.epoch else ''}")
    forces = "" if score["force_mae"] is None else f" force MAE {score['force_mae']:.4f} eV/A"
    return (f"bp epoch {fit.epoch}: loss {train_loss:.4g} val {score['loss']:.4g} energy RMSE "
            f"{1000 * score['energy_rmse']:.2f} meV/atom{forces} lr {fit.lr:.2g}"
            f"{' *' if fit.best_epoch == fit.epoch else ''}")


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
    return BPModel(spec, networks, data.mean, data.std,
                   dict(zip(data.elements, map(float, data.offsets))), record,
                   num_threads=config.threads)


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
