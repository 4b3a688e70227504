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


@dataclass
class PairwiseTrainingConfig:
    """Architecture and optimization of a pairwise model (lengths in A)."""

    pair_cutoff: float = 5.0
    n_basis: int = 8
    rank: int = 8
    basis_start: float = 0.8
    hidden: tuple = (32, 32)
    activation: str = "tanh"
    learning_rate: float = 3e-3
    batch_frames: int = 8
    epochs: int = 2000
    patience: int = 40
    lr_patience: int = 6
    validation_fraction: float = 0.1
    max_minutes: float | None = None
    seed: int = 0
    threads: int | None = None

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.pair_cutoff <= self.basis_start:
            raise ValueError(f"pair cutoff {self.pair_cutoff} A must exceed the basis start "
                             f"{self.basis_start} A")
        if self.batch_frames < 1 or self.epochs < 1 or self.rank < 1:
            raise ValueError("batch_frames, epochs and rank must be positive")


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
    g_mean, g_std, f2 = {}, {}, {}
    for s, el in enumerate(elements):
        rows = [g.G[el] for g in graphs if el in g.G and len(g.G[el])]
        if not rows:
            raise ValueError(f"the training frames have no {el} atoms")
        G = np.concatenate(rows)
        g_mean[el] = G.mean(axis=0)
        std = G.std(axis=0)
        g_std[el] = np.where(std > 1e-8 * max(1.0, float(np.abs(G).max())), std, 1.0)
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
                   sources=None) -> PairwiseModel:
    """Train a pairwise model on `frames` (ase.Atoms with reference forces).

    spec: the FingerprintSpec (or preset name / path) whose G terms are the atoms'
    inputs. sources: a name per frame for error messages. Returns the PairwiseModel with the
    best validation weights; its `training` record holds the history.
    """
    import tensorflow as tf

    from dcf.training.core import set_threads

    config = config or PairwiseTrainingConfig()
    spec = FingerprintSpec.resolve(spec)
    set_threads(config.threads)
    elements = tuple(spec.elements)
    frames = list(frames)
    if len(frames) < 2:
        raise ValueError(f"pairwise training needs at least 2 frames, got {len(frames)}")
    sources = sources or [f"frame {k}" for k in range(len(frames))]
    featurizer = Featurizer(invariant_spec(spec), config.threads)
    t0 = time.perf_counter()
    graphs = [frame_graph(featurizer, a, config.pair_cutoff, s) for a, s in zip(frames, sources)]
    log(f"pairwise: {len(graphs)} frames, {sum(len(g.i) for g in graphs)} pairs within "
        f"{config.pair_cutoff:g} A ({time.perf_counter() - t0:.1f} s)")

    rng = np.random.default_rng(config.seed)
    n_val = max(1, int(round(config.validation_fraction * len(graphs))))
    val = set(rng.choice(len(graphs), n_val, replace=False).tolist())
    fit = [k for k in range(len(graphs)) if k not in val]
    g_mean, g_std, f2 = _normalization([graphs[k] for k in fit], elements)
    weight = np.array([1.0 / max(f2[el], 1e-12) for el in elements])
    n_batches = max(1, len(fit) // config.batch_frames)
    order = rng.permutation(fit)
    batches = [_batch([graphs[k] for k in part], elements, g_mean, g_std, weight)
               for part in np.array_split(order, n_batches)]
    val_batch = _batch([graphs[k] for k in sorted(val)], elements, g_mean, g_std, weight)

    basis = PairBasis(config.pair_cutoff, config.n_basis, config.basis_start)
    B, K, n_el = config.n_basis, config.rank, len(elements)
    tf.random.set_seed(config.seed)
    keras = tf.keras
    nets = []
    for el in elements:
        layers = [keras.Input((len(g_mean[el]),))]
        layers += [keras.layers.Dense(h, activation=config.activation) for h in config.hidden]
        layers += [keras.layers.Dense(2 * B * K)]
        nets.append(keras.Sequential(layers, name=f"pairwise_{el}"))
    pair_w = tf.Variable(tf.zeros((n_el, n_el, B), tf.float64), name="pair_weights")
    variables = [v for net in nets for v in net.trainable_variables] + [pair_w]
    centers = tf.constant(basis.centers, tf.float64)

    def forces(G, pos, I, J, D, d, species, n):
        u = tf.zeros((n, 2 * B * K), tf.float64)
        for s in range(n_el):
            u = tf.tensor_scatter_nd_update(u, pos[s][:, None], tf.cast(nets[s](G[s]),
                                                                          tf.float64))
        u = tf.reshape(u, (n, 2, B, K))
        fc = 0.5 * (tf.cos(np.pi * d / basis.r_pair) + 1.0)
        phi = tf.exp(-tf.square((d[:, None] - centers) / basis.width)) * fc[:, None]
        ui, uj = tf.gather(u, I), tf.gather(u, J)
        s = tf.reduce_sum(ui[:, 0] * uj[:, 1] + uj[:, 0] * ui[:, 1], axis=-1)
        sym = 0.5 * (pair_w + tf.transpose(pair_w, (1, 0, 2)))
        s += tf.gather_nd(sym, tf.stack([tf.gather(species, I), tf.gather(species, J)], 1))
        c = tf.reduce_sum(phi * s, axis=1)
        f = (c / d)[:, None] * D
        return (tf.math.unsorted_segment_sum(f, I, n)
                - tf.math.unsorted_segment_sum(f, J, n))

    optimizer = keras.optimizers.Adam(config.learning_rate)
    spec_in = ([tf.TensorSpec((None, len(g_mean[el])), tf.float32) for el in elements],
               [tf.TensorSpec((None,), tf.int64) for _ in elements],
               tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.int64),
               tf.TensorSpec((None, 3), tf.float64), tf.TensorSpec((None,), tf.float64),
               tf.TensorSpec((None,), tf.int64), tf.TensorSpec((), tf.int64),
               tf.TensorSpec((None, 3), tf.float64), tf.TensorSpec((None,), tf.float64))

    @tf.function(input_signature=spec_in)
    def step(G, pos, I, J, D, d, species, n, F, w):
        with tf.GradientTape() as tape:
            P = forces(G, pos, I, J, D, d, species, n)
            loss = tf.reduce_mean(w * tf.reduce_sum(tf.square(P - F), axis=1))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    @tf.function(input_signature=spec_in[:8])
    def predict(G, pos, I, J, D, d, species, n):
        return forces(G, pos, I, J, D, d, species, n)

    def args_of(b):
        return ([tf.constant(x, tf.float32) for x in b["G"]],
                [tf.constant(x, tf.int64) for x in b["pos"]],
                tf.constant(b["I"], tf.int64), tf.constant(b["J"], tf.int64),
                tf.constant(b["D"], tf.float64), tf.constant(b["d"], tf.float64),
                tf.constant(b["species"], tf.int64), tf.constant(b["n"], tf.int64))

    train_args = [(args_of(b), tf.constant(b["F"], tf.float64), tf.constant(b["w"], tf.float64))
                  for b in batches]
    val_args = args_of(val_batch)
    deadline = (time.perf_counter() + 60 * config.max_minutes
                if config.max_minutes is not None else np.inf)
    best, best_weights, stale, lr_stale = np.inf, None, 0, 0
    history = []
    epoch = 0
    t_fit = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        losses = []
        for q in rng.permutation(len(train_args)):
            a, F, w = train_args[q]
            losses.append(float(step(*a, F, w)))
            if time.perf_counter() > deadline:
                break
        pred = predict(*val_args).numpy()
        errors = relative_errors(pred, val_batch["F"], val_batch["species"], elements)
        score = float(np.mean([rel for _, rel in errors.values()]))
        lr = float(optimizer.learning_rate.numpy())
        history.append({"epoch": epoch, "loss": float(np.mean(losses)),
                        "validation_relative_mae": score, "learning_rate": lr})
        if score < best:
            best, best_weights, stale, lr_stale = score, [v.numpy() for v in variables], 0, 0
        else:
            stale += 1
            lr_stale += 1
            if lr_stale >= config.lr_patience:
                optimizer.learning_rate.assign(lr * 0.5)
                lr_stale = 0
        if epoch == 1 or epoch % 10 == 0:
            log(f"pairwise epoch {epoch}: loss {np.mean(losses):.4f}, validation "
                + ", ".join(f"{el} {100 * rel:.1f}%" for el, (_, rel) in errors.items())
                + f", lr {lr:.2e}")
        if stale >= config.patience or time.perf_counter() > deadline:
            break
    for v, value in zip(variables, best_weights):
        v.assign(value)
    record = {"config": {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in asdict(config).items()},
              "epochs": epoch, "seconds": time.perf_counter() - t_fit,
              "best_validation_relative_mae": best, "n_frames": len(graphs),
              "n_validation_frames": len(val), "history": history}
    log(f"pairwise: {epoch} epochs in {record['seconds']:.0f} s, best validation "
        f"MAE/<|F|> {100 * best:.1f}% (mean over elements)")
    return export_model(spec, nets, pair_w.numpy(), g_mean, g_std, basis, config, record)


def export_model(spec, nets, pair_weights, g_mean, g_std, basis, config, record):
    """The numpy PairwiseModel of trained Keras networks."""
    elements = tuple(spec.elements)
    networks = {el: MLP.from_keras([l for l in net.layers], config.activation)
                for el, net in zip(elements, nets)}
    sym = 0.5 * (pair_weights + pair_weights.transpose(1, 0, 2))
    return PairwiseModel(spec, networks, g_mean, g_std, sym, basis, config.rank, record)
