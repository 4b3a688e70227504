"""`dcf train`: train a DCF or B–P force field on a feature store.

The loss is printed after every epoch while training runs. A checkpoint (default OUT.ckpt) is
written as training goes; if the run is interrupted (Ctrl-C, a killed job), the same command
resumes from it. --max-minutes returns the best model found within the time budget. The model
file is written atomically, then the checkpoint is removed.
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
    p.add_argument("features", help="feature store (.h5) from `dcf featurize`")
    p.add_argument("--model", choices=sorted(TRAINERS), default="dcf", help="model kind")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (per stage for DCF)")
    p.add_argument("--batch-size", type=int, default=None, help="snapshots (or frames) per batch")
    p.add_argument("--learning-rate", type=float, default=None, help="initial Adam learning rate")
    p.add_argument("--patience", type=int, default=None,
                   help="early stopping: epochs without validation improvement")
    p.add_argument("--validation-fraction", type=float, default=None,
                   help="fraction of the training frames held out for early stopping (0.1)")
    p.add_argument("--seed", type=int, default=None, help="random seed (0)")
    p.add_argument("--hidden", default=None, metavar="N,N",
                   help="hidden widths of the DCF NN1 networks (default 50,50; B-P: --bp-hidden)")
    p.add_argument("--activation", default=None, choices=("tanh", "softplus", "silu"),
                   help="DCF hidden-layer activation (default tanh)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-clock budget; the best model found within it is written")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file for resuming (default OUT.ckpt)")
    p.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                   help="write the checkpoint at most this often (default 30 s)")
    p.add_argument("--restart", action="store_true",
                   help="ignore an existing checkpoint and start over")
    p.add_argument("--threads", type=int, default=None, help="TensorFlow threads")
    for module_name, title in TRAINERS.values():
        try:
            module = importlib.import_module(module_name)
        except ImportError:           # a model kind not available in this installation
            continue
        module.add_train_arguments(p.add_argument_group(title))


def _log(message: str) -> None:
    print(message, flush=True)


def run(args) -> int:
    from dcf.data.store import FeatureStore, StoreError

    out = Path(args.out)
    if args.checkpoint is None:
        args.checkpoint = str(out.with_name(out.name + ".ckpt"))
    path = Path(args.features)
    if not path.is_file():
        raise SystemExit(f"dcf train: feature store {path} does not exist")
    module_name, _ = TRAINERS[args.model]
    try:
        trainer = importlib.import_module(module_name)
    except ImportError as err:
        raise SystemExit(f"dcf train: the {args.model} model is not available ({err})") from None
    start = time.perf_counter()
    try:
        with FeatureStore(path) as store:
            model = trainer.train_from_store(store, args, _log)
    except (StoreError, ValueError, KeyError) as err:
        raise SystemExit(f"dcf train: {path}: {err}") from None
    except KeyboardInterrupt:
        if Path(args.checkpoint).exists():
            print(f"\ninterrupted; run the same command again to resume from {args.checkpoint}",
                  file=sys.stderr)
        else:
            print(f"\ninterrupted; no checkpoint was written ({args.model} training starts "
                  f"over; use --max-minutes to bound it)", file=sys.stderr)
        return 130
    model.save(out)
    Path(args.checkpoint).unlink(missing_ok=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"wrote {out} ({model.kind}, elements {', '.join(model.elements)}) "
          f"after {minutes:.1f} min")
    return 0
