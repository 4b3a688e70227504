"""Training of the pairwise DCF head (dcf.models.pairwise) on whole frames' forces.

The model's forces are a sum over pairs, so training sees whole structures, as B–P does, but
needs no fingerprint derivatives: per frame the G of every atom and the pairs within the pair
cutoff are computed once and kept in memory. The loss is the mean over atoms of

    |F_pred,i - F_ref,i|^2 / <|F_ref|^2>_el(i)

so each element's force error counts relative to its own force scale (what MAE / <|F|>
measures). Adam; the learning rate is halved after `lr_patience` epochs without a better
validation error, training stops after `patience` such epochs, `epochs` or the time budget,
and the best weights are kept. The validation frames are a random `validation_fraction` of
the training frames.

TensorFlow is imported inside the functions that train, so importing this module is cheap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dcf.descriptors.fingerprints import Featurizer
from dcf.descriptors.spec import FingerprintSpec, invariant_spec
from dcf.models.mlp import MLP
from dcf.models.pairwise import PairBasis, PairwiseModel, half_pairs
from dcf.training.core import (Adam, Checkpoint, Clock, DataHash, DataParallel, Fit,
                               Normalizer, TrainingError, TrainingOptions, serial_comm,
                               checked_network, epoch_ends_fit, frame_batches, shard,
                               no_validation_warning, pack, rank_log, rank_threads,
                               same_on_all_ranks, set_threads, shared_options, unpack,
                               validation_split)


@dataclass
class PairwiseTrainingConfig(TrainingOptions):
    """Pairwise-head settings (lengths in A). The shared options (batch_size in atoms, filled
    with whole frames; patience as early stopping): see `TrainingOptions`."""

    epochs: int = 2000
    batch_size: int = 256
    learning_rate: float = 3e-3
    patience: int = 40
    lr_patience: int | None = 6
    pair_cutoff: float = 5.0
    n_basis: int = 8
    rank: int = 8
    basis_start: float = 0.8
    hidden: tuple = (32, 32)
    activation: str = "tanh"

    def __post_init__(self):
        super().__post_init__()
        self.hidden = checked_network(self.hidden, self.activation)
        if self.pair_cutoff <= self.basis_start:
            raise TrainingError(f"the pair cutoff {self.pair_cutoff} A must exceed the basis "
                                f"start {self.basis_start} A")
        if self.n_basis < 2 or self.rank < 1:
            raise TrainingError("the pair basis needs >= 2 functions and a rank >= 1")

    def architecture(self) -> dict:
        """What fixes the networks (a checkpoint must agree on it)."""
        return {"hidden": list(self.hidden), "activation": self.activation,
                "pair_cutoff": self.pair_cutoff, "n_basis": self.n_basis, "rank": self.rank,
                "basis_start": self.basis_start}


def add_pair_arguments(group) -> None:
    """The pairwise head's options of `dcf train --head pairwise`."""
    group.add_argument("--pair-cutoff", type=float, default=None, metavar="A",
                       help="pairwise head: pairs closer than this contribute c_ij r_ij "
                            "(default 5.0 A)")
    group.add_argument("--pair-basis", type=int, default=None, metavar="B",
                       help="pairwise head: radial Gaussians of c_ij (default 8)")
    group.add_argument("--pair-rank", type=int, default=None, metavar="K",
                       help="pairwise head: embedding width per radial function (default 8)")


def config_from_args(args) -> PairwiseTrainingConfig:
    """A PairwiseTrainingConfig from `dcf train`'s parsed arguments (None: the default)."""
    opts = shared_options(args, PairwiseTrainingConfig)
    for flag, name in (("pair_cutoff", "pair_cutoff"), ("pair_basis", "n_basis"),
                       ("pair_rank", "rank")):
        if getattr(args, flag, None) is not None:
            opts[name] = getattr(args, flag)
    return PairwiseTrainingConfig(**opts)


def train_from_store(store, args, log=print, comm=None) -> PairwiseModel:
    """`dcf train --model dcf --head pairwise`: train on a FeatureStore's training frames
    (read whole: the pairs need every atom's fingerprints); comm: the MPI ranks sharing the
    training (None: this process alone)."""
    ids = list(store.frame_ids("train"))
    if not ids:
        raise TrainingError("the feature store has no training frames")
    frames = [store.frame(int(k)) for k in ids]
    return train_pairwise(frames, store.spec, config_from_args(args), log,
                          [f"frame {k} of the store" for k in ids],
                          restart=getattr(args, "restart", False), comm=comm)


@dataclass
class FrameGraph:
    """One frame as the trainer sees it: G of its atoms per element, its half pair list and
    reference forces. G[el] (n_el, nG_el), index[el] (n_el,), species (n,), i, j (m,),
    D (m, 3) A, d (m,) A, F (n, 3) eV/A."""

    G: dict
    index: dict
    species: np.ndarray
    i: np.ndarray
    j: np.ndarray
    D: np.ndarray
    d: np.ndarray
    F: np.ndarray

    @property
    def n_atoms(self) -> int:
        return len(self.species)


def frame_graph(featurizer: Featurizer, atoms, pair_cutoff: float, source: str) -> FrameGraph:
    """G, pairs and reference forces of one ``ase.Atoms`` with forces."""
    env = featurizer.environment(atoms, source)
    feats = featurizer.features(env)
    nl = env.neighbors
    if pair_cutoff > featurizer.spec.max_cutoff:
        from dcf.descriptors.neighbors import build_neighbor_list
        nl = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, pair_cutoff)
    i, j, D, d = half_pairs(nl.i, nl.j, nl.D, nl.d, pair_cutoff)
    try:
        F = np.asarray(atoms.get_forces(), dtype=float)
    except Exception as err:
        raise ValueError(f"{source} has no reference forces ({err})") from None
    return FrameGraph(dict(feats.G), dict(feats.index), env.species.astype(np.int64),
                      i, j, D, d, F)


def _batch(graphs: list[FrameGraph], elements, g_mean, g_std, weight):
    """Concatenate frames into one graph (numpy arrays, atom indices offset per frame)."""
    G = {el: [] for el in elements}
    pos = {el: [] for el in elements}
    I, J, D, d, F, sp = [], [], [], [], [], []
    off = 0
    for g in graphs:
        for el in elements:
            if el in g.G and len(g.index[el]):
                G[el].append((g.G[el] - g_mean[el]) / g_std[el])
                pos[el].append(g.index[el] + off)
        I.append(g.i + off)
        J.append(g.j + off)
        D.append(g.D)
        d.append(g.d)
        F.append(g.F)
        sp.append(g.species)
        off += g.n_atoms
    species = np.concatenate(sp)
    nG = {el: len(g_mean[el]) for el in elements}
    return {"G": [np.concatenate(G[el]) if G[el] else np.zeros((0, nG[el]))
                  for el in elements],
            "pos": [np.concatenate(pos[el]) if pos[el] else np.zeros(0, np.int64)
                    for el in elements],
            "I": np.concatenate(I), "J": np.concatenate(J), "D": np.concatenate(D),
            "d": np.concatenate(d), "F": np.concatenate(F), "species": species,
            "w": weight[species], "n": off}


def _normalization(graphs, elements):
    """Per element: G mean and std (core.Normalizer) and <|F|^2> (eV/A)^2 of `graphs`."""
    g_mean, g_std, f2 = {}, {}, {}
    for s, el in enumerate(elements):
        rows = [g.G[el] for g in graphs if el in g.G and len(g.G[el])]
        if not rows:
            raise TrainingError(f"the training frames have no {el} atoms")
        norm = Normalizer(rows[0].shape[1])
        for G in rows:
            norm.add(G)
        g_mean[el], g_std[el] = norm.mean_std()
        F = np.concatenate([g.F[g.species == s] for g in graphs])
        f2[el] = float(np.mean(np.sum(F ** 2, axis=1)))
    return g_mean, g_std, f2


def error_sums(pred: np.ndarray, ref: np.ndarray, species: np.ndarray, n_elements: int):
    """Per element s: [sum |F_pred - F_ref| eV/A, sum |F_ref| eV/A, atoms] (3, n_elements)
    of atoms with species s (pred, ref (n, 3)); sums over ranks add up."""
    out = np.zeros((3, n_elements))
    for s in range(n_elements):
        m = species == s
        out[:, s] = (np.linalg.norm(pred[m] - ref[m], axis=1).sum(),
                     np.linalg.norm(ref[m], axis=1).sum(), m.sum())
    return out


def relative_errors(pred: np.ndarray, ref: np.ndarray, species: np.ndarray, elements) -> dict:
    """Per element: (MAE of |F_pred - F_ref| eV/A, that MAE / <|F_ref|>)."""
    return errors_from_sums(error_sums(pred, ref, species, len(elements)), elements)


def errors_from_sums(sums: np.ndarray, elements) -> dict:
    """`relative_errors` from `error_sums` (summed over the ranks' shares of the frames)."""
    out = {}
    for s, el in enumerate(elements):
        err, ref, n = sums[:, s]
        if n > 0:
            out[el] = (float(err / n), float(err / max(ref, 1e-12 * n)))
    return out


def train_pairwise(frames, spec, config: PairwiseTrainingConfig | None = None, log=print,
                   sources=None, restart: bool = False, stop_after=None,
                   comm=None) -> PairwiseModel:
    """Train a pairwise model on `frames` (ase.Atoms with reference forces).

    spec: the FingerprintSpec (or preset name / path) whose G terms are the atoms' inputs.
    sources: a name per frame for error messages. A fraction `validation_fraction` of the
    frames is held out for early stopping (`core.validation_split`); see `TrainingOptions`
    for the schedule, the budget and the checkpoint. restart: ignore an existing
    checkpoint. stop_after(fit) -> bool: called after every epoch; True interrupts the run as
    a KeyboardInterrupt would (tests). comm: the MPI ranks sharing each step's frames
    (dcf.parallel; None: this process alone); rank 0 alone logs and writes the checkpoint.
    Returns the PairwiseModel with the best validation weights; its `training` holds the
    run's record and learning curve.
    """
    config, comm = config or PairwiseTrainingConfig(), comm or serial_comm()
    log = rank_log(log, comm)
    clock = Clock(config.max_minutes)
    spec = FingerprintSpec.resolve(spec)
    threads = rank_threads(config.threads, comm)
    set_threads(threads)
    elements = tuple(spec.elements)
    frames = list(frames)
    if len(frames) == 0:
        raise TrainingError("pairwise training needs at least one frame")
    sources = sources or [f"frame {k}" for k in range(len(frames))]
    featurizer = Featurizer(invariant_spec(spec), threads)
    graphs = [frame_graph(featurizer, a, config.pair_cutoff, s) for a, s in zip(frames, sources)]
    log(f"pairwise: {len(graphs)} frames, {sum(len(g.i) for g in graphs)} pairs within "
        f"{config.pair_cutoff:g} A ({clock.elapsed():.1f} s)")
    fit_ids, val_ids = validation_split(np.arange(len(graphs)), config.validation_fraction,
                                        config.seed)
    if len(val_ids) == 0:
        log(no_validation_warning("pairwise training"))
    pf = PairwiseFit(graphs, elements, config, fit_ids, val_ids, comm)
    net, optimizer, dp = pf.net, pf.optimizer, pf.dp
    data_hash = DataHash()
    for g in graphs:
        data_hash.add(*[g.G[el] for el in elements if el in g.G], g.D, g.F)
    same_on_all_ranks(comm, data_hash.hexdigest(), "training frames")
    identity = {"model": "pairwise-checkpoint", "spec_sha256": spec.fingerprint,
                "architecture": config.architecture(), "seed": config.seed,
                "validation_fraction": config.validation_fraction, "n_frames": len(graphs),
                "data_sha256": data_hash.hexdigest()}
    checkpoint = Checkpoint(config.checkpoint, identity, config.checkpoint_every, restart, comm)
    fit, best = Fit("pair", "all", lr=config.learning_rate), net.weights()
    saved = checkpoint.load()
    if saved is not None:
        meta, arrays = saved
        fit = Fit(**meta["fit"])
        net.set_weights(unpack("weights", arrays))
        optimizer.restore(unpack("adam", arrays))
        best = unpack("best", arrays)
        clock.before = float(meta["elapsed"])
        log(f"resuming from checkpoint {checkpoint.path}: pairwise after epoch {fit.epoch}")

    def save(force=False):
        checkpoint.save({"fit": asdict(fit), "elapsed": clock.elapsed()},
                        {**pack("weights", net.weights()), **pack("best", best),
                         **pack("adam", optimizer.state())}, force)

    deadline = clock.fit_deadline(1)
    optimizer.learning_rate.assign(fit.lr)
    while fit.epoch < config.epochs:
        train_loss = pf.train_epoch(fit.epoch)
        errors = pf.validate()
        score = None if errors is None else float(np.mean([r for _, r in errors.values()]))
        mae = None if errors is None else float(np.mean([m for m, _ in errors.values()]))
        if fit.end_epoch(train_loss, score, mae, config):
            best = net.weights()
        optimizer.learning_rate.assign(fit.lr)
        log(f"pairwise epoch {fit.epoch}: loss {train_loss:.4g}"
            + ("" if errors is None else " validation MAE/<|F|> " + ", ".join(
                f"{el} {100 * rel:.1f}%" for el, (_, rel) in errors.items()))
            + f" lr {fit.lr:.2g}{' *' if fit.best_epoch == fit.epoch else ''}")
        if epoch_ends_fit(fit, config, deadline, save, stop_after, "pairwise", dp.agree):
            break
    fit.stopped = fit.stopped or "epoch limit"
    net.set_weights(best)
    log(f"pairwise: {dp.timing()}")
    record = {"config": {**asdict(config), "hidden": list(config.hidden)},
              "frames": len(graphs), "fit_frames": int(len(fit_ids)),
              "validation_frames": int(len(val_ids)), "epochs_run": fit.epoch,
              "stopped_by": fit.stopped, "best_epoch": fit.best_epoch,
              "best_validation_relative_mae": fit.best if len(val_ids) else None,
              "data_sha256": identity["data_sha256"], "minutes": clock.elapsed() / 60,
              "fits": [fit.summary()]}
    log(f"pairwise: best epoch {fit.best_epoch} of {fit.epoch} ({fit.stopped}), "
        f"{record['minutes']:.1f} min")
    return export_model(spec, net, pf.g_mean, pf.g_std, config, record)


class PairwiseFit:
    """The networks, the optimizer and the batches of a pairwise fit on `graphs`, split into
    fitting frames `fit_ids` and validation frames `val_ids`, the steps and the validation
    shared by the ranks of `comm` (core.DataParallel): each rank keeps, as tensors, its
    shard of every batch and of the validation frames."""

    def __init__(self, graphs, elements, config: PairwiseTrainingConfig, fit_ids, val_ids,
                 comm=None):
        import tensorflow as tf
        self.graphs, self.elements, self.config = graphs, elements, config
        self.g_mean, self.g_std, f2 = _normalization([graphs[k] for k in fit_ids], elements)
        self.weight = np.array([1.0 / max(f2[el], 1e-12) for el in elements])
        self.net = PairNetworks(tf, elements, {el: len(self.g_mean[el]) for el in elements},
                                config)
        self.optimizer = Adam(self.net.variables, config.learning_rate)
        self.dp = DataParallel(comm or serial_comm(), self.net.loss, self.net.variables,
                               self.optimizer, self.net.loss_signature)
        self.batches = frame_batches(fit_ids, [g.n_atoms for g in graphs], config.batch_size)
        self.train_args = [self.shard_inputs(part, self.dp.rank, self.dp.size)
                           for part in self.batches]
        self.has_validation = len(val_ids) > 0
        self.val_batch = self._batch(val_ids[self.dp.shard(len(val_ids))])
        self.val_args = None if self.val_batch is None else self.net.inputs(self.val_batch)
        self.predict = self.net.predict_function()

    def _batch(self, ids):
        """The frames `ids` as one graph (None: no frames)."""
        if not len(ids):
            return None
        return _batch([self.graphs[k] for k in ids], self.elements, self.g_mean, self.g_std,
                      self.weight)

    def shard_inputs(self, part, rank: int, size: int):
        """The step inputs of shard `rank` of `size` of the batch of frames `part` (None: no
        frames), with the whole batch's atom count (the loss's normalization)."""
        tf = self.net.tf
        b = self._batch(part[shard(len(part), rank, size)])
        if b is None:
            return None
        atoms = sum(self.graphs[k].n_atoms for k in part)
        return (*self.net.inputs(b), tf.constant(b["F"], tf.float32),
                tf.constant(b["w"], tf.float32), tf.constant(atoms, tf.float32))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order of the batches in `epoch` (seeded by (seed, epoch))."""
        return np.random.default_rng([self.config.seed, epoch]).permutation(len(self.batches))

    def train_epoch(self, epoch: int) -> float:
        """One pass over the batches; the mean of their losses."""
        return float(np.mean([self.dp.step(self.train_args[q])[0]
                              for q in self.epoch_order(epoch)]))

    def validate(self) -> dict | None:
        """Per element (MAE eV/A, MAE / <|F_ref|>) of the validation frames (None: none)."""
        if not self.has_validation:
            return None
        sums = np.zeros((3, len(self.elements)))
        if self.val_args is not None:
            sums = error_sums(self.predict(*self.val_args).numpy(), self.val_batch["F"],
                              self.val_batch["species"], len(self.elements))
        return errors_from_sums(self.dp.sum(sums), self.elements)


class PairNetworks:
    """The Keras side of the pairwise head: per-element embedding networks, the symmetric
    pair-weight table, and the force function of a batch (float32)."""

    def __init__(self, tf, elements, n_inputs: dict, config: PairwiseTrainingConfig):
        import keras
        self.tf, self.elements, self.config = tf, elements, config
        self.basis = PairBasis(config.pair_cutoff, config.n_basis, config.basis_start)
        B, K = config.n_basis, config.rank
        keras.utils.set_random_seed(config.seed)
        self.nets = []
        for el in elements:
            layers = [keras.Input((n_inputs[el],))]
            layers += [keras.layers.Dense(h, activation=config.activation)
                       for h in config.hidden]
            layers += [keras.layers.Dense(2 * B * K)]
            self.nets.append(keras.Sequential(layers, name=f"pairwise_{el}"))
        n_el = len(elements)
        self.pair_w = tf.Variable(tf.zeros((n_el, n_el, B), tf.float32), name="pair_weights")
        self.variables = [v for net in self.nets for v in net.trainable_variables] + \
            [self.pair_w]
        self.centers = tf.constant(self.basis.centers, tf.float32)
        self.signature = (
            [tf.TensorSpec((None, n_inputs[el]), tf.float32) for el in elements],
            [tf.TensorSpec((None,), tf.int64) for _ in elements],
            tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.int64),
            tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.float32),
            tf.TensorSpec((None,), tf.int64), tf.TensorSpec((), tf.int64))

    def inputs(self, b: dict) -> tuple:
        tf = self.tf
        return ([tf.constant(x, tf.float32) for x in b["G"]],
                [tf.constant(x, tf.int64) for x in b["pos"]],
                tf.constant(b["I"], tf.int64), tf.constant(b["J"], tf.int64),
                tf.constant(b["D"], tf.float32), tf.constant(b["d"], tf.float32),
                tf.constant(b["species"], tf.int64), tf.constant(b["n"], tf.int64))

    def forces(self, G, pos, I, J, D, d, species, n):
        """F (n, 3): the model's formula (dcf.models.pairwise) on a batch of pairs."""
        tf, B, K = self.tf, self.config.n_basis, self.config.rank
        u = tf.zeros((n, 2 * B * K), tf.float32)
        for s, net in enumerate(self.nets):
            u = tf.tensor_scatter_nd_update(u, pos[s][:, None], net(G[s]))
        u = tf.reshape(u, (n, 2, B, K))
        fc = 0.5 * (tf.cos(np.pi * d / self.basis.r_pair) + 1.0)
        phi = tf.exp(-tf.square((d[:, None] - self.centers) / self.basis.width)) * fc[:, None]
        ui, uj = tf.gather(u, I), tf.gather(u, J)
        s = tf.reduce_sum(ui[:, 0] * uj[:, 1] + uj[:, 0] * ui[:, 1], axis=-1)
        sym = 0.5 * (self.pair_w + tf.transpose(self.pair_w, (1, 0, 2)))
        s += tf.gather_nd(sym, tf.stack([tf.gather(species, I), tf.gather(species, J)], 1))
        f = (tf.reduce_sum(phi * s, axis=1) / d)[:, None] * D
        return (tf.math.unsorted_segment_sum(f, I, n)
                - tf.math.unsorted_segment_sum(f, J, n))

    @property
    def loss_signature(self) -> tuple:
        """Inputs of `loss`: the batch's (`signature`), F (n, 3), w (n,), the atoms of the
        whole batch ()."""
        tf = self.tf
        return (*self.signature, tf.TensorSpec((None, 3), tf.float32),
                tf.TensorSpec((None,), tf.float32), tf.TensorSpec((), tf.float32))

    def loss(self, G, pos, I, J, D, d, species, n, F, w, atoms):
        """sum_i w_i |F_pred,i - F_i|^2 over this shard's atoms / the whole batch's atoms."""
        P = self.forces(G, pos, I, J, D, d, species, n)
        return self.tf.reduce_sum(w * self.tf.reduce_sum(self.tf.square(P - F), axis=1)) / atoms

    def predict_function(self):
        return self.tf.function(self.forces, input_signature=self.signature)

    def weights(self) -> list:
        return [v.numpy() for v in self.variables]

    def set_weights(self, values) -> None:
        for v, value in zip(self.variables, values):
            v.assign(value)


def export_model(spec, net: PairNetworks, g_mean, g_std, config, record) -> PairwiseModel:
    """The numpy PairwiseModel of trained Keras networks (weights in float64)."""
    import keras
    networks = {}
    for el, model in zip(spec.elements, net.nets):
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        networks[el] = MLP([np.asarray(l.get_weights()[0], float) for l in dense],
                           [np.asarray(l.get_weights()[1], float) for l in dense],
                           config.activation)
    w = np.asarray(net.pair_w.numpy(), float)
    return PairwiseModel(spec, networks, g_mean, g_std, 0.5 * (w + w.transpose(1, 0, 2)),
                         net.basis, config.rank, record, num_threads=config.threads)
