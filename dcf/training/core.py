"""The training core that DCF and B–P training share.

* `TrainingOptions`: the settings both trainers have, with one meaning each (a trainer's
  config adds its own fields and defaults); `add_shared_arguments` and `shared_options` map
  `dcf train`'s flags onto them.
* `validation_split`: the training frames held out for early stopping.
* `Normalizer`: mean and std of the inputs.
* `Fit`: one fit's progress: early stopping, the learning-rate schedule and its learning curve.
* `Adam`: the optimizer, whose whole state checkpoints save.
* `Checkpoint` and `DataHash`: atomic save / resume, refused for another run or another store.
* `frame_batches`: whole frames in batches of at least a number of atoms (B–P, pairwise).
* `DataParallel`: the optimizer steps of one network, shared by MPI ranks (`mpiexec -n K dcf
  train`): each rank takes its `shard` of every batch, the gradients are summed over the
  ranks in one reduction per step, and every rank applies the same update.
* `set_threads`, `rank_threads`: TensorFlow's thread pools (one thread per rank under MPI).

A "fit" is one network trained to early stopping: a (stage, element) of the DCF plan, or the
one B–P fit of all elements together. TensorFlow is imported inside the functions only.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from dcf.errors import DCFError

#: the columns of a learning curve (`Fit.history` rows, and the lcurve file's header)
CURVE_COLUMNS = ("epoch", "stage", "element", "train_loss", "val_loss", "val_force_mae", "lr")


class TrainingError(DCFError, ValueError):
    """Training cannot start or continue (no data for an element, an incompatible checkpoint)."""


# ---- settings -------------------------------------------------------------------------------
@dataclass
class TrainingOptions:
    """What every trainer has, in the same meaning (a trainer's config sets its defaults).

    epochs: most epochs of each fit. batch_size: atoms (snapshots) per optimizer step; B–P
    batches are whole frames, filled until they hold at least batch_size atoms.
    learning_rate: initial Adam step; it halves after lr_patience epochs without validation
    improvement (None: max(2, patience // 3)), never below min_learning_rate (None:
    learning_rate / 1000). patience: a fit stops after this many epochs without validation
    improvement, and its best weights are kept. validation_fraction: of the training frames,
    held out for early stopping. max_minutes: wall-clock budget of the run (None: none).
    checkpoint: file to save progress in (None: no checkpoint), at most every
    checkpoint_every seconds. threads: CPU threads of TensorFlow (and of B–P's featurizer);
    None: their defaults.
    """
    epochs: int = 200
    batch_size: int = 64
    learning_rate: float = 2e-3
    min_learning_rate: float | None = None
    patience: int = 15
    lr_patience: int | None = None
    validation_fraction: float = 0.1
    seed: int = 0
    max_minutes: float | None = None
    checkpoint: str | None = None
    checkpoint_every: float = 30.0
    threads: int | None = None

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise TrainingError("epochs, batch size and patience must be >= 1")
        if self.learning_rate <= 0:
            raise TrainingError(f"the learning rate must be > 0, got {self.learning_rate}")
        if self.lr_patience is not None and self.lr_patience < 1:
            raise TrainingError(f"the learning-rate patience must be >= 1, got "
                                f"{self.lr_patience}")
        if not 0 <= self.validation_fraction < 1:
            raise TrainingError(f"the validation fraction must be in [0, 1), got "
                                f"{self.validation_fraction}")

    @property
    def lr_wait(self) -> int:
        """Epochs without improvement before the learning rate halves."""
        return self.lr_patience or max(2, self.patience // 3)

    @property
    def lr_floor(self) -> float:
        """The smallest learning rate the schedule reaches."""
        return self.min_learning_rate or self.learning_rate * 1e-3


#: hidden-layer activations every trainer offers
ACTIVATIONS = ("tanh", "softplus", "silu")


def checked_network(hidden, activation: str) -> tuple:
    """Hidden widths as a tuple of ints, TrainingError unless they are positive and the
    activation is one of ACTIVATIONS."""
    hidden = tuple(int(h) for h in hidden)
    if not hidden or min(hidden) < 1:
        raise TrainingError(f"hidden layer widths must be positive integers, got {hidden}")
    if activation not in ACTIVATIONS:
        raise TrainingError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return hidden


def parse_widths(text: str, flag: str = "--hidden") -> tuple:
    """Hidden-layer widths from "50,50"; TrainingError naming `flag` otherwise."""
    try:
        widths = tuple(int(w) for w in str(text).split(",") if w.strip())
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise TrainingError(f"{flag}: widths must be positive integers separated by commas, "
                            f"got {text!r}")
    return widths


def add_shared_arguments(p) -> None:
    """The flags of `dcf train` that DCF and B–P share (defaults: DCF / B–P)."""
    p.add_argument("--epochs", type=int, default=None,
                   help="most epochs of each fit: each DCF stage and element, or the one B-P "
                        "fit (200 / 300)")
    p.add_argument("--batch-size", type=int, default=None, metavar="ATOMS",
                   help="atoms (snapshots) per optimizer step; B-P steps take whole frames "
                        "until they hold at least this many atoms (64 / 256)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="initial Adam learning rate (2e-3 / 3e-3)")
    p.add_argument("--min-learning-rate", type=float, default=None,
                   help="floor of the learning-rate schedule (default learning rate / 1000)")
    p.add_argument("--patience", type=int, default=None, metavar="EPOCHS",
                   help="early stopping: a fit stops after this many epochs without "
                        "improvement of the validation loss and keeps its best weights "
                        "(15 / 30)")
    p.add_argument("--lr-patience", type=int, default=None, metavar="EPOCHS",
                   help="the learning rate halves after this many epochs without validation "
                        "improvement (default max(2, patience // 3))")
    p.add_argument("--validation-fraction", type=float, default=None,
                   help="fraction of the training frames held out for early stopping (0.1)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed of weights, validation frames and batch order (0)")
    p.add_argument("--hidden", "--bp-hidden", dest="hidden", default=None, metavar="N,N",
                   help="hidden widths of each element's network: DCF NN1, the pairwise "
                        "embedding, or the B-P atomic-energy network (50,50; pairwise 32,32)")
    p.add_argument("--activation", "--bp-activation", dest="activation", default=None,
                   choices=("tanh", "softplus", "silu"),
                   help="hidden-layer activation of every network (tanh)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-clock budget of the run; the best model found within it is "
                        "written")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file for resuming (default OUT.ckpt)")
    p.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                   help="write the checkpoint at most this often (default 30 s)")
    p.add_argument("--restart", action="store_true",
                   help="ignore an existing checkpoint and start over")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of TensorFlow and of the B-P featurizer (default: "
                        "TensorFlow's choice; DCF_NUM_THREADS or OMP_NUM_THREADS, else 1, "
                        "for the featurizer)")


def shared_options(args, config_class) -> dict:
    """The `TrainingOptions` fields (and hidden, activation) of `config_class` given on the
    command line (`args` from `add_shared_arguments`), the class defaults elsewhere."""
    names = [f.name for f in fields(TrainingOptions)] + ["hidden", "activation"]
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        out[name] = parse_widths(value) if name == "hidden" else value
    return {k: v for k, v in out.items() if k in {f.name for f in fields(config_class)}}


# ---- data -----------------------------------------------------------------------------------
def validation_split(frame_ids, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit ids, validation ids) of training frames `frame_ids`, both sorted: a random
    `fraction` held out, at least one frame when fraction > 0 and there are two or more."""
    ids = np.asarray(frame_ids, dtype=np.int64)
    n_val = 0
    if fraction > 0 and len(ids) > 1:
        n_val = min(max(int(round(fraction * len(ids))), 1), len(ids) - 1)
    val = np.sort(np.random.default_rng([seed, 7]).choice(ids, n_val, replace=False)) \
        if n_val else np.zeros(0, np.int64)
    return np.setdiff1d(ids, val), val


def no_validation_warning(what: str) -> str:
    return (f"warning: no validation snapshots for {what}: early stopping and the best "
            f"weights are judged on the training loss (use --validation-fraction > 0 with "
            f"more than one training frame)")


class Normalizer:
    """Running mean and std (nG,) of input rows; std 1 where a feature is (nearly) constant."""

    def __init__(self, n_features: int):
        self.n = 0
        self.s1, self.s2 = np.zeros(n_features), np.zeros(n_features)

    def add(self, G: np.ndarray) -> None:
        G = np.asarray(G, float)
        self.n += len(G)
        self.s1 += G.sum(0)
        self.s2 += (G * G).sum(0)

    def mean_std(self, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        if self.n == 0:
            return np.zeros_like(self.s1), np.ones_like(self.s1)
        mean = self.s1 / self.n
        std = np.sqrt(np.maximum(self.s2 / self.n - mean * mean, 0.0))
        return mean, np.where(std > rtol * np.maximum(np.abs(mean), 1.0), std, 1.0)


class DataHash:
    """sha256 of the training data as a trainer reads it, naming the store in a checkpoint:
    two stores with the same counts but other frames or features hash differently."""

    def __init__(self):
        self._h = hashlib.sha256()

    def add(self, *arrays) -> None:
        for a in arrays:
            a = np.ascontiguousarray(a)
            self._h.update(str((a.dtype.str, a.shape)).encode())
            self._h.update(a.view(np.uint8) if a.ndim else a.tobytes())     # no copy

    def hexdigest(self) -> str:
        return self._h.hexdigest()


# ---- one fit: early stopping, the learning-rate schedule, the learning curve ----------------
@dataclass
class Fit:
    """Progress of one fit, as saved in a checkpoint. history rows: CURVE_COLUMNS[0] and
    [3:] (epoch, train loss, validation loss, validation force MAE eV/A, learning rate)."""
    stage: str
    element: str
    epoch: int = 0                       # epochs completed
    best: float = float("inf")           # best validation loss
    best_epoch: int = 0
    wait: int = 0                        # epochs since the last improvement
    lr: float = 0.0
    history: list = field(default_factory=list)
    stopped: str = ""

    def end_epoch(self, train_loss, val_loss, val_mae, options: TrainingOptions) -> bool:
        """Record an epoch (val_loss, val_mae None: no validation data, the training loss
        decides); the schedule halves `lr` after options.lr_wait epochs without improvement.
        Returns whether the loss improved (keep these weights)."""
        self.epoch += 1
        score = train_loss if val_loss is None else val_loss
        improved = score < self.best * (1 - 1e-4)
        if improved:
            self.best, self.best_epoch, self.wait = float(score), self.epoch, 0
        else:
            self.wait += 1
            if self.wait % options.lr_wait == 0:
                self.lr = max(self.lr * 0.5, options.lr_floor)
        self.history.append([self.epoch, float(train_loss), _finite_or_none(val_loss),
                             _finite_or_none(val_mae), self.lr])
        return improved

    def out_of_patience(self, options: TrainingOptions) -> bool:
        return self.wait >= options.patience

    def summary(self) -> dict:
        """The fit as the model's training metadata keeps it."""
        return {"stage": self.stage, "element": self.element, "epochs": self.epoch,
                "best_epoch": self.best_epoch, "best_val_loss": self.best,
                "stopped": self.stopped, "history": self.history}


def epoch_ends_fit(fit: Fit, options: TrainingOptions, deadline, save, stop_after=None,
                   what: str = "", agree=bool) -> bool:
    """After an epoch of `fit`: True (fit.stopped set) on early stopping or past `deadline`
    (time.monotonic(), None: none; agree(flag): the one decision of all MPI ranks, rank 0's,
    see DataParallel.agree); otherwise write the checkpoint (`save()`) and, if
    stop_after(fit) says so (tests), save it at once and raise KeyboardInterrupt as Ctrl-C
    would."""
    if fit.out_of_patience(options):
        fit.stopped = "early stopping"
        return True
    if agree(deadline is not None and time.monotonic() > deadline):
        fit.stopped = "time limit"
        return True
    save()
    if stop_after is not None and stop_after(fit):
        save(force=True)
        raise KeyboardInterrupt(f"stopped after {what or fit.stage} epoch {fit.epoch}")
    return False


def _finite_or_none(x):
    return None if x is None or not np.isfinite(x) else float(x)


def learning_curve(training: dict) -> list[tuple]:
    """Rows (CURVE_COLUMNS) of every fit in a model's training metadata, in training order."""
    return [(int(h[0]), f["stage"], f["element"], *h[1:])
            for f in training.get("fits", []) for h in f["history"]]


def format_learning_curve(rows) -> str:
    """A whitespace table with a '#' header (as DeePMD's lcurve.out); losses in normalized
    units, MAE in eV/A (F_int for DCF NN1), 'nan' where a fit had no validation MAE."""
    lines = ["# " + " ".join(f"{c:>14}" if i > 2 else f"{c:>7}" for i, c in
                             enumerate(CURVE_COLUMNS))[2:]]
    for epoch, stage, element, *values in rows:
        nums = " ".join(f"{float('nan') if v is None else v:14.6e}" for v in values)
        lines.append(f"{epoch:>7} {stage:>7} {element:>7} {nums}")
    return "\n".join(lines) + "\n"


# ---- the optimizer --------------------------------------------------------------------------
class Adam:
    """Adam (Kingma & Ba 2015) on a list of variables, as small TensorFlow ops.

    Used instead of keras.optimizers.Adam because its graph traces several times faster (one
    trace per fit) and its whole state is `state()`, which checkpoints save. The moments m
    and v are kept as two flat float32 vectors over all parameters (in the variables' order),
    so one update is a few vector operations and one assign per variable, whatever the
    number of variables (the paper's separate networks have dozens). `state()` keeps the
    layout of the per-variable moments: [iterations, learning rate, m_0.., v_0..].
    """

    def __init__(self, variables, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        import tensorflow as tf
        self.params = list(variables)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.sizes = [int(np.prod(p.shape)) for p in self.params]
        self.n_params = sum(self.sizes)
        self.learning_rate = tf.Variable(float(learning_rate), dtype=tf.float32, trainable=False)
        self.iterations = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        self.m = tf.Variable(tf.zeros([self.n_params], tf.float32), trainable=False)
        self.v = tf.Variable(tf.zeros([self.n_params], tf.float32), trainable=False)

    def state(self) -> list:
        """[iterations, learning rate, m per variable.., v per variable..] (numpy)."""
        cuts = np.cumsum(self.sizes)[:-1]
        per = [np.split(x.numpy(), cuts) for x in (self.m, self.v)]
        shaped = [a.reshape(tuple(p.shape)) for part in per for a, p in zip(part, self.params)]
        return [self.iterations.numpy(), self.learning_rate.numpy(), *shaped]

    def restore(self, state) -> None:
        """Continue from `state()` (also a checkpoint of the per-variable Adam)."""
        k = len(self.params)
        self.iterations.assign(state[0])
        self.learning_rate.assign(state[1])
        for var, parts in ((self.m, state[2:2 + k]), (self.v, state[2 + k:2 + 2 * k])):
            var.assign(np.concatenate([np.ravel(a) for a in parts]).astype(np.float32))

    def apply(self, grads) -> None:
        """One step from a gradient per variable."""
        import tensorflow as tf
        self.apply_flat(tf.concat([tf.reshape(g, [-1]) for g in grads], 0))

    def apply_flat(self, g) -> None:
        """One step from the gradient of all parameters as one float32 vector (n_params,)."""
        import tensorflow as tf
        t = self.iterations.assign_add(1.0)
        lr = self.learning_rate * tf.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        m = self.m.assign(self.beta_1 * self.m + (1.0 - self.beta_1) * g)
        v = self.v.assign(self.beta_2 * self.v + (1.0 - self.beta_2) * tf.square(g))
        steps = tf.split(lr * m / (tf.sqrt(v) + self.epsilon), self.sizes)
        for p, step in zip(self.params, steps):
            p.assign_sub(tf.reshape(step, p.shape))


# ---- data parallelism (MPI) -----------------------------------------------------------------
def serial_comm():
    """The one-rank communicator of a run without MPI (dcf.parallel.SerialComm)."""
    from dcf.parallel import SerialComm
    return SerialComm()


def _quiet(*_):
    """The log of the ranks other than 0."""


def rank_log(log, comm):
    """`log` on rank 0, a sink on the other ranks (they train as quietly as they write)."""
    return log if comm.rank == 0 else _quiet


def collective_error(message: str) -> TrainingError:
    """A TrainingError that every rank raises together (printed once, by rank 0)."""
    err = TrainingError(message)
    err.collective = True
    return err


def on_rank0(comm, task):
    """task() run by rank 0 alone, its result broadcast to every rank; a TrainingError of
    rank 0 is raised on every rank (so that no rank waits for the others forever)."""
    outcome = None
    if comm.rank == 0:
        try:
            outcome = ("ok", task())
        except TrainingError as err:
            outcome = ("error", str(err))
    outcome = comm.bcast(outcome) if comm.size > 1 else outcome
    if outcome[0] == "error":
        if comm.size > 1:
            raise collective_error(outcome[1])
        raise TrainingError(outcome[1])
    return outcome[1]


def same_on_all_ranks(comm, value: str, what: str) -> None:
    """TrainingError on every rank unless every rank has the same `value` (a data hash)."""
    if comm.size == 1:
        return
    values = comm.allgather(value)
    other = [r for r, v in enumerate(values) if v != values[0]]
    if other:
        raise collective_error(
            f"the MPI ranks read different {what}: rank(s) {', '.join(map(str, other))} differ "
            f"from rank 0 (sha256 {values[0][:12]} against {values[other[0]][:12]}); every "
            f"rank must read the same feature store, on a file system they share")


def shard(n: int, rank: int, size: int) -> slice:
    """Rank `rank`'s contiguous block of n items split over `size` ranks (the first n % size
    ranks get one item more)."""
    lo, hi = (n * rank) // size, (n * (rank + 1)) // size
    return slice(lo, hi)


def frame_batches(order, n_atoms, batch_size: int) -> list[np.ndarray]:
    """Consecutive frames of `order` in batches of at least `batch_size` atoms (the last may
    hold fewer); n_atoms[k]: atoms of frame k."""
    batches, current, atoms = [], [], 0
    for k in order:
        current.append(k)
        atoms += n_atoms[k]
        if atoms >= batch_size:
            batches.append(np.array(current))
            current, atoms = [], 0
    if current:
        batches.append(np.array(current))
    return batches


def _dense(tf, grads, variables) -> list:
    """Gradients with None (a variable the loss does not reach) as zeros."""
    return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]


class DataParallel:
    """The optimizer steps of one fit, shared by the ranks of `comm` (dcf.parallel).

    Every rank makes the same list of global batches (same seed); in each step rank r takes
    its `shard` of the step's batch and calls `step` with the inputs of its shard. The loss
    function `loss_fn(*inputs)` must return the shard's part of the global batch's loss (its
    terms summed, divided by the global batch's normalization), so that the parts summed over
    the ranks are the serial batch's loss and their gradients its gradient.

    * A SerialComm (one process): gradient and Adam update in one compiled call (`fused`).
    * A Comm (K >= 1 ranks): the gradient in one compiled call that also flattens it, with
      the loss and a stop flag, into one float64 vector (n_params + 2,); one reduction of that
      vector over the ranks (reduced on rank 0 and broadcast, bit-identical on every rank);
      the Adam update from the summed vector in one compiled call (`apply`). With K = 1 this
      gives the same bits as the fused step; every rank holds the same weights after a step.

    signature: tf.TensorSpec structure of the inputs (None: traced per input shape, with
    reduce_retracing). `seconds` accumulates the time of each phase of the steps after the
    first (which traces the compiled calls), `timed` counts those steps.
    """

    def __init__(self, comm, loss_fn, variables, optimizer, signature=None):
        import tensorflow as tf
        self.comm, self.variables = comm, list(variables)
        self.exchange = bool(getattr(comm, "distributed", False))
        self.n_params = optimizer.n_params
        self.seconds = {"gradient": 0.0, "reduce": 0.0, "update": 0.0}
        self.steps = self.timed = 0
        options = ({"input_signature": signature, "autograph": False} if signature is not None
                   else {"reduce_retracing": True, "autograph": False})
        variables = self.variables

        def fused(*inputs):
            with tf.GradientTape() as tape:
                loss = loss_fn(*inputs)
            optimizer.apply(_dense(tf, tape.gradient(loss, variables), variables))
            return loss

        def gradient(*inputs):
            with tf.GradientTape() as tape:
                loss = loss_fn(*inputs)
            grads = _dense(tf, tape.gradient(loss, variables), variables)
            return tf.concat([tf.reshape(tf.cast(g, tf.float64), [-1]) for g in grads]
                             + [tf.reshape(tf.cast(loss, tf.float64), [1])], 0)

        def apply(flat):
            optimizer.apply_flat(tf.cast(flat, tf.float32))

        self.fused = tf.function(fused, **options)
        self.gradient = tf.function(gradient, **options)
        self.apply = tf.function(apply, input_signature=[
            tf.TensorSpec((self.n_params,), tf.float64)], autograph=False)

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def size(self) -> int:
        return self.comm.size

    def shard(self, n: int) -> slice:
        """This rank's block of a global batch of n items."""
        return shard(n, self.comm.rank, self.comm.size)

    def step(self, inputs, stop: bool = False) -> tuple[float, bool]:
        """One optimizer step; inputs: this rank's shard (None: an empty shard). stop: rank
        0's wish to end the fit after this step (other ranks' are ignored). Returns (the
        global batch's loss, whether rank 0 asked to stop), the same on every rank."""
        t0 = time.perf_counter()
        if not self.exchange:
            loss = float(self.fused(*inputs))
            self._add(time.perf_counter() - t0)
            return loss, stop
        flat = np.zeros(self.n_params + 2)
        if inputs is not None:
            flat[:-1] = self.gradient(*inputs).numpy()
        flat[-1] = 1.0 if stop and self.comm.rank == 0 else 0.0
        t1 = time.perf_counter()
        total = self.comm.sum(flat)
        t2 = time.perf_counter()
        self.apply(total[:self.n_params])
        self._add(t1 - t0, t2 - t1, time.perf_counter() - t2)
        return float(total[-2]), bool(total[-1] > 0)

    def _add(self, *seconds) -> None:
        """Count a step; add its phases' times unless it is the first."""
        self.steps += 1
        if self.steps > 1:
            self.timed += 1
            for phase, dt in zip(self.seconds, seconds):
                self.seconds[phase] += dt

    def sum(self, values) -> np.ndarray:
        """The element-wise sum over the ranks of float `values` (validation sums)."""
        return self.comm.sum(np.asarray(values, float)) if self.comm.size > 1 \
            else np.asarray(values, float)

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag` on every rank (a wall-clock decision must be the same on all)."""
        return bool(self.comm.bcast(bool(flag))) if self.comm.size > 1 else bool(flag)

    def timing(self) -> str:
        """Mean milliseconds per step of each phase (one line for the log)."""
        n = max(self.timed, 1)
        phases = self.seconds if self.exchange else \
            {"gradient + update": self.seconds["gradient"]}
        return (f"{self.steps} steps on {self.comm.size} rank(s), per step: "
                + ", ".join(f"{k} {1000 * v / n:.2f} ms" for k, v in phases.items()))


# ---- checkpoints ----------------------------------------------------------------------------
def pack(prefix: str, arrays) -> dict:
    """{prefix/0: a0, prefix/1: a1, ...} of a list of arrays (None: nothing)."""
    return {f"{prefix}/{i}": a for i, a in enumerate(arrays or [])}


def unpack(prefix: str, arrays: dict) -> list:
    """The list `pack(prefix, ...)` stored (empty if none)."""
    out = []
    while f"{prefix}/{len(out)}" in arrays:
        out.append(arrays[f"{prefix}/{len(out)}"])
    return out


class Checkpoint:
    """A training run's progress in one file (the model-file format: JSON + arrays, no
    pickle), written atomically at most every `every` seconds.

    `identity` names the run: model kind, spec, architecture, seed, the training data's hash
    (DataHash) and counts. A checkpoint whose identity differs is refused, naming the keys.
    Under MPI (`comm` with several ranks) rank 0 alone reads and writes the file; `load`
    gives every rank rank 0's result (or raises its error on every rank).
    """

    def __init__(self, path, identity: dict, every: float = 30.0, restart: bool = False,
                 comm=None):
        self.path = Path(path) if path else None
        self.identity = json.loads(json.dumps(identity))    # as the file will hold it
        self.every, self.restart = every, restart
        self.comm = comm or serial_comm()
        self._last = -np.inf

    def save(self, meta: dict, arrays: dict, force: bool = False) -> None:
        if self.path is None or self.comm.rank != 0:
            return
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        from dcf.models.modelfile import write_model_file
        write_model_file(self.path, {**self.identity, **meta}, arrays)
        self._last = now

    def load(self) -> tuple[dict, dict] | None:
        """(meta, arrays) of a checkpoint of this run, or None (no file, --restart); read by
        rank 0 and broadcast."""
        return on_rank0(self.comm, self._load)

    def _load(self) -> tuple[dict, dict] | None:
        if self.path is None or self.restart or not self.path.exists():
            return None
        from dcf.models.modelfile import ModelFileError, read_model_file
        try:
            meta, arrays = read_model_file(self.path)
        except ModelFileError as err:
            raise TrainingError(f"checkpoint {self.path} is unreadable ({err}); delete it or "
                                f"pass --restart") from None
        mismatch = [k for k, want in self.identity.items() if meta.get(k) != want]
        if mismatch:
            what = ("another feature store or data set" if mismatch == ["data_sha256"]
                    else "another run")
            raise TrainingError(f"checkpoint {self.path} belongs to {what} (differs in "
                                f"{', '.join(mismatch)}); delete it or pass --restart")
        return meta, arrays


class Clock:
    """Wall-clock time of a run from its start (data preparation included), plus the time
    spent before a resume (`before`, from the checkpoint); deadline of a fit."""

    def __init__(self, max_minutes: float | None):
        self.t0, self.max_minutes, self.before = time.monotonic(), max_minutes, 0.0

    def elapsed(self) -> float:
        return self.before + time.monotonic() - self.t0

    def fit_deadline(self, fits_left: int) -> float | None:
        """time.monotonic() deadline giving each of `fits_left` fits an equal share."""
        if self.max_minutes is None:
            return None
        left = max(60 * self.max_minutes - self.elapsed(), 0.0)
        return time.monotonic() + left / max(fits_left, 1)


def rank_threads(threads: int | None, comm) -> int | None:
    """The CPU threads of one rank: `threads` if given, else 1 under MPI with several ranks
    (so that K ranks do not oversubscribe the cores), else None (TensorFlow's choice)."""
    return threads if threads else (1 if comm.size > 1 else None)


def set_threads(threads: int | None) -> None:
    """Limit TensorFlow's thread pools (only possible before TensorFlow starts computing)."""
    import tensorflow as tf
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:        # TensorFlow already computing: keep its setting
            return
