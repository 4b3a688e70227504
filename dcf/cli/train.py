"""`dcf train`: train a DCF or B–P force field on a feature store.

The loss is printed after every epoch while training runs. A checkpoint (default OUT.ckpt) is
written as training goes; if the run is interrupted (Ctrl-C, a killed job), the same command
resumes from it. --max-minutes returns the best model found within the time budget. The model
file is written atomically, then its learning curve (OUT without its suffix + .lcurve.txt and
.lcurve.png), then the checkpoint is removed.

Under MPI (``mpiexec -n K dcf train ...``) the K ranks share every optimizer step: each takes
its share of the step's batch and the gradients are summed (`dcf.training.core.DataParallel`),
so the model is that of a serial run with the same options. Rank 0 alone prints and writes the
checkpoint, the model and the learning curve; an error on any rank ends all of them.
"""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HELP = "train a DCF or B-P model on a feature store"

# model kind -> module with add_train_arguments(group) and train_from_store(store, args, log)
TRAINERS = {"dcf": ("dcf.training.dcf", "DCF options"), "bp": ("dcf.training.bp", "B–P options")}


def add_arguments(p) -> None:
    from dcf.training.baseline import add_baseline_arguments
    from dcf.training.core import add_shared_arguments

    p.add_argument("features", help="feature store (.h5) from `dcf featurize`")
    p.add_argument("--model", choices=sorted(TRAINERS), default="dcf", help="model kind")
    p.add_argument("--out", required=True,
                   help="model file to write; its learning curve goes to OUT's stem + "
                        ".lcurve.txt and .lcurve.png")
    shared = p.add_argument_group("training options (defaults: DCF / B-P)")
    add_shared_arguments(shared)
    add_baseline_arguments(shared)
    for module_name, title in TRAINERS.values():
        try:
            module = importlib.import_module(module_name)
        except ImportError:           # a model kind not available in this installation
            continue
        module.add_train_arguments(p.add_argument_group(title))


def _log(message: str) -> None:
    print(message, flush=True)


def _mpi_world():
    """dcf.parallel.world(), or SystemExit when mpiexec started several ranks without mpi4py."""
    from dcf.parallel import MPIUnavailable, world

    try:
        return world()
    except MPIUnavailable as err:
        raise SystemExit(f"dcf train: {err}") from None


def _failure(comm, message: str):
    """The error to raise for a failed run: SystemExit(message) in one process; under MPI a
    DCFError, which dcf.cli.main reports once and which ends every rank (a rank that left
    alone would leave the others waiting for it)."""
    if comm.size == 1:
        return SystemExit(message)
    from dcf.training.core import TrainingError
    return TrainingError(message.removeprefix("dcf train: "))


def learning_curve_paths(out: Path) -> tuple[Path, Path]:
    """(text table, PNG) of model file `out`: model.dcf -> model.lcurve.txt, .lcurve.png."""
    return out.with_suffix(".lcurve.txt"), out.with_suffix(".lcurve.png")


def plot_learning_curve(rows, path: Path) -> Path:
    """PNG of the learning curve: per fit, training (solid) and validation (dashed) loss and
    the validation force MAE, against the epoch counted through the whole run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dcf.files import write_atomic

    fig, (ax_loss, ax_mae) = plt.subplots(2, 1, figsize=(6.4, 6.0), dpi=110, sharex=True)
    offset = 0
    fits = list(dict.fromkeys((stage, el) for _, stage, el, *_ in rows))
    for stage, el in fits:
        mine = [r for r in rows if (r[1], r[2]) == (stage, el)]
        x = [offset + r[0] for r in mine]
        line, = ax_loss.plot(x, [r[3] for r in mine], "-", lw=1, label=f"{stage} {el}")
        val = [(xi, r[4], r[5]) for xi, r in zip(x, mine) if r[4] is not None]
        if val:
            ax_loss.plot([v[0] for v in val], [v[1] for v in val], "--", lw=1,
                         color=line.get_color())
        mae = [(v[0], v[2]) for v in val if v[2] is not None]
        if mae:
            ax_mae.plot(*zip(*mae), "-", lw=1, color=line.get_color())
        offset += len(mine)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss (normalized; -- validation)")
    ax_loss.legend(fontsize=7, ncol=2)
    ax_mae.set_ylabel("validation force MAE (eV/Å)")
    ax_mae.set_xlabel("epoch (all fits in training order)")
    fig.tight_layout()
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def write_learning_curve(model, out: Path) -> tuple[Path, Path]:
    """The learning curve of a trained model (its training metadata) as a table and a PNG."""
    from dcf.files import write_atomic
    from dcf.training.core import format_learning_curve, learning_curve

    rows = learning_curve(model.training)
    text_path, png_path = learning_curve_paths(out)
    write_atomic(text_path, lambda tmp: Path(tmp).write_text(format_learning_curve(rows)))
    plot_learning_curve(rows, png_path)
    return text_path, png_path


def run(args) -> int:
    from dcf.cli._paths import refuse_overwriting_inputs
    from dcf.data.store import FeatureStore, StoreError
    from dcf.training.baseline import ResidualStore, baseline_from_args

    out = Path(args.out)
    if args.checkpoint is None:
        args.checkpoint = str(out.with_name(out.name + ".ckpt"))
    path = Path(args.features)
    refuse_overwriting_inputs([("features", path)],
                              [("--out", out), ("--checkpoint", args.checkpoint)])
    if not path.is_file():
        raise SystemExit(f"dcf train: feature store {path} does not exist")
    module_name, _ = TRAINERS[args.model]
    try:
        trainer = importlib.import_module(module_name)
    except ImportError as err:
        raise SystemExit(f"dcf train: the {args.model} model is not available ({err})") from None
    comm = _mpi_world()
    start = time.perf_counter()
    try:
        with FeatureStore(path) as store:
            baseline = baseline_from_args(store, args)
            if baseline is not None and comm.rank == 0:
                _log(f"baseline: ZBL repulsion, switched on inner..outer per pair: "
                     f"{baseline.describe()}")
            model = trainer.train_from_store(
                store if baseline is None else ResidualStore(store, baseline), args, _log, comm)
            model.baseline = baseline
    except StoreError as err:         # names the store itself
        raise _failure(comm, f"dcf train: {err}") from None
    except (ValueError, KeyError) as err:
        if getattr(err, "collective", False):      # every rank raised it: printed once
            raise
        raise _failure(comm, f"dcf train: {path}: {err}") from None
    except OSError as err:            # h5py: a damaged chunk, a truncated file
        raise _failure(comm, f"dcf train: {path}: the feature store cannot be read ({err}); "
                             f"it is damaged: run dcf featurize again") from None
    except KeyboardInterrupt:
        if comm.rank != 0:
            return 130
        if Path(args.checkpoint).exists():
            print(f"\ninterrupted; run the same command again to resume from {args.checkpoint}",
                  file=sys.stderr)
        else:
            print("\ninterrupted before the first checkpoint; the same command starts over",
                  file=sys.stderr)
        return 130
    if comm.rank == 0:
        write_outputs(model, out, Path(args.checkpoint), comm.size,
                      (time.perf_counter() - start) / 60)
    comm.barrier()                    # every rank ends once the model is written
    return 0


def write_outputs(model, out: Path, checkpoint: Path, ranks: int, minutes: float) -> None:
    """Rank 0: the model file, its learning curve, the checkpoint removed; one line said."""
    model.save(out)
    curve, png = write_learning_curve(model, out)
    checkpoint.unlink(missing_ok=True)
    on = f" on {ranks} MPI ranks" if ranks > 1 else ""
    print(f"wrote {out} ({model.kind}, elements {', '.join(model.elements)}) and its learning "
          f"curve {curve}, {png} after {minutes:.1f} min{on}")
