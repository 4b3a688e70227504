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

import time
from dataclasses import asdict, dataclass

import numpy as np

from dcf.descriptors.fingerprints import Featurizer
from dcf.descriptors.spec import FingerprintSpec, invariant_spec
from dcf.models.mlp import MLP
from dcf.models.pairwise import PairBasis, PairwiseModel, half_pairs
from dcf.training.core import (Adam, Checkpoint, Clock, DataHash, Fit, Normalizer,
                               TrainingError, TrainingOptions, checked_network, epoch_ends_fit,
                               no_validation_warning, pack, set_threads, shared_options, unpack,
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


def train_from_store(store, args, log=print) -> PairwiseModel:
    """`dcf train --model dcf --head pairwise`: train on a FeatureStore's training frames
    (read whole: the pairs need every atom's fingerprints)."""
    ids = list(store.frame_ids("train"))
    if not ids:
        raise TrainingError("the feature store has no training frames")
    frames = [store.frame(int(k)) for k in ids]
    return train_pairwise(frames, store.spec, config_from_args(args), log,
                          [f"frame {k} of the store" for k in ids],
                          restart=getattr(args, "restart", False))


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


def relative_errors(pred: np.ndarray, ref: np.ndarray, species: np.ndarray, elements) -> dict:
    """Per element: (MAE of |F_pred - F_ref| eV/A, that MAE / <|F_ref|>)."""
    out = {}
    for s, el in enumerate(elements):
        m = species == s
        if not m.any():
            continue
        err = np.linalg.norm(pred[m] - ref[m], axis=1).mean()
        out[el] = (float(err), float(err / max(np.linalg.norm(ref[m], axis=1).mean(), 1e-12)))
    return out


def train_pairwise(frames, spec, config: PairwiseTrainingConfig | None = None, log=print,
                   sources=None, restart: bool = False, stop_after=None) -> PairwiseModel:
    """Train a pairwise model on `frames` (ase.Atoms with reference forces).

    spec: the FingerprintSpec (or preset name / path) whose G terms are the atoms' inputs.
    sources: a name per frame for error messages. A fraction `validation_fraction` of the
    frames is held out for early stopping (`core.validation_split`); see `TrainingOptions`
    for the schedule, the budget and the checkpoint. restart: ignore an existing
    checkpoint. stop_after(fit) -> bool: called after every epoch; True interrupts the run as
    a KeyboardInterrupt would (tests). Returns the PairwiseModel with the best validation
    weights; its `training` holds the run's record and learning curve.
    """
    import tensorflow as tf

    config = config or PairwiseTrainingConfig()
    clock = Clock(config.max_minutes)
    spec = FingerprintSpec.resolve(spec)
    set_threads(config.threads)
    elements = tuple(spec.elements)
    frames = list(frames)
    if len(frames) == 0:
        raise TrainingError("pairwise training needs at least one frame")
    sources = sources or [f"frame {k}" for k in range(len(frames))]
    featurizer = Featurizer(invariant_spec(spec), config.threads)
    graphs = [frame_graph(featurizer, a, config.pair_cutoff, s) for a, s in zip(frames, sources)]
    log(f"pairwise: {len(graphs)} frames, {sum(len(g.i) for g in graphs)} pairs within "
        f"{config.pair_cutoff:g} A ({clock.elapsed():.1f} s)")
    fit_ids, val_ids = validation_split(np.arange(len(graphs)), config.validation_fraction,
                                        config.seed)
    if len(val_ids) == 0:
        log(no_validation_warning("pairwise training"))
    g_mean, g_std, f2 = _normalization([graphs[k] for k in fit_ids], elements)
    weight = np.array([1.0 / max(f2[el], 1e-12) for el in elements])
    batches = [_batch([graphs[k] for k in part], elements, g_mean, g_std, weight)
               for part in _frame_batches(graphs, fit_ids, config.batch_size)]
    val_batch = _batch([graphs[k] for k in val_ids], elements, g_mean, g_std, weight) \
        if len(val_ids) else None

    net = PairNetworks(tf, elements, {el: len(g_mean[el]) for el in elements}, config)
    optimizer = Adam(net.variables, config.learning_rate)
    train_args = [(net.inputs(b), tf.constant(b["F"], tf.float32),
                   tf.constant(b["w"], tf.float32)) for b in batches]
    val_args = net.inputs(val_batch) if val_batch is not None else None
    step, predict = net.step_function(optimizer), net.predict_function()

    data_hash = DataHash()
    for g in graphs:
        data_hash.add(*[g.G[el] for el in elements if el in g.G], g.D, g.F)
    identity = {"model": "pairwise-checkpoint", "spec_sha256": spec.fingerprint,
                "architecture": config.architecture(), "seed": config.seed,
                "validation_fraction": config.validation_fraction, "n_frames": len(graphs),
                "data_sha256": data_hash.hexdigest()}
    checkpoint = Checkpoint(config.checkpoint, identity, config.checkpoint_every, restart)
    fit, best = Fit("pair", "all", lr=config.learning_rate), net.weights()
    saved = checkpoint.load()
    if saved is not None:
        meta, arrays = saved
        fit = Fit(**meta["fit"])
        net.set_weights(unpack("weights", arrays))
        for v, value in zip(optimizer.variables, unpack("adam", arrays)):
            v.assign(value)
        best = unpack("best", arrays)
        clock.before = float(meta["elapsed"])
        log(f"resuming from checkpoint {checkpoint.path}: pairwise after epoch {fit.epoch}")

    def save(force=False):
        checkpoint.save({"fit": asdict(fit), "elapsed": clock.elapsed()},
                        {**pack("weights", net.weights()), **pack("best", best),
                         **pack("adam", [v.numpy() for v in optimizer.variables])}, force)

    deadline = clock.fit_deadline(1)
    optimizer.learning_rate.assign(fit.lr)
    while fit.epoch < config.epochs:
        rng = np.random.default_rng([config.seed, fit.epoch])
        losses = [float(step(*train_args[q][0], train_args[q][1], train_args[q][2]))
                  for q in rng.permutation(len(train_args))]
        train_loss = float(np.mean(losses))
        errors = score = None
        if val_args is not None:
            pred = predict(*val_args).numpy()
            errors = relative_errors(pred, val_batch["F"], val_batch["species"], elements)
            score = float(np.mean([rel for _, rel in errors.values()]))
        mae = None if errors is None else float(np.mean([m for m, _ in errors.values()]))
        if fit.end_epoch(train_loss, score, mae, config):
            best = net.weights()
        optimizer.learning_rate.assign(fit.lr)
        log(f"pairwise epoch {fit.epoch}: loss {train_loss:.4g}"
            + ("" if errors is None else " validation MAE/<|F|> " + ", ".join(
                f"{el} {100 * rel:.1f}%" for el, (_, rel) in errors.items()))
            + f" lr {fit.lr:.2g}{' *' if fit.best_epoch == fit.epoch else ''}")
        if epoch_ends_fit(fit, config, deadline, save, stop_after, "pairwise"):
            break
    fit.stopped = fit.stopped or "epoch limit"
    net.set_weights(best)
    record = {"config": {**asdict(config), "hidden": list(config.hidden)},
              "frames": len(graphs), "fit_frames": int(len(fit_ids)),
              "validation_frames": int(len(val_ids)), "epochs_run": fit.epoch,
              "stopped_by": fit.stopped, "best_epoch": fit.best_epoch,
              "best_validation_relative_mae": fit.best if len(val_ids) else None,
              "data_sha256": identity["data_sha256"], "minutes": clock.elapsed() / 60,
              "fits": [fit.summary()]}
    log(f"pairwise: best epoch {fit.best_epoch} of {fit.epoch} ({fit.stopped}), "
        f"{record['minutes']:.1f} min")
    return export_model(spec, net, g_mean, g_std, config, record)


def _frame_batches(graphs, ids, atoms_per_batch: int) -> list[list[int]]:
    """Consecutive frames of `ids`, filled until a batch holds >= atoms_per_batch atoms."""
    out, part, n = [], [], 0
    for k in ids:
        part.append(int(k))
        n += graphs[k].n_atoms
        if n >= atoms_per_batch:
            out.append(part)
            part, n = [], 0
    if part:
        out.append(part)
    return out


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

    def step_function(self, optimizer):
        tf = self.tf

        @tf.function(input_signature=(*self.signature, tf.TensorSpec((None, 3), tf.float32),
                                      tf.TensorSpec((None,), tf.float32)))
        def step(G, pos, I, J, D, d, species, n, F, w):
            with tf.GradientTape() as tape:
                P = self.forces(G, pos, I, J, D, d, species, n)
                loss = tf.reduce_mean(w * tf.reduce_sum(tf.square(P - F), axis=1))
            optimizer.apply(tape.gradient(loss, self.variables))
            return loss
        return step

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
