"""Data-parallel training throughput: snapshots/s per stage with 1 and K MPI ranks.

Trains B–P, the paper's DCF head (NN1, NN2, NN3) and the pairwise head on a feature store
(default: the embedded Li4P2O7 data featurized with the Table S4 preset, as scripts/main does)
under `mpiexec -n K`, one TensorFlow thread per rank, for a fixed number of epochs per fit
(no early stopping), and reports per stage:

* snapshots/s: training snapshots (atoms) of one epoch / the median epoch time, the first
  epoch of each fit left out (tracing, B–P's dG/dr cache); for the paper's NN2 and NN3 each
  snapshot is trained with its rotated copies (10 by default) and counts once;
* the per-step phases that DataParallel measures (gradient, reduce, update);
* the learning curves of every K, to show that they agree.

    python benchmarks/train_mpi.py --ranks 1,2 --repeats 3 --out train_mpi.json
    python benchmarks/train_mpi.py --model paper --batch-size 256     # larger steps

A machine shared with other work gives noisy times: repeat and read the minimum and median.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "dcf" / "data" / "li4p2o7_xtb_3000K.extxyz"
#: name -> (model kind, extra `dcf train` flags, epochs per fit)
MODELS = {"bp": ("bp", [], 6),
          "paper": ("dcf", ["--head", "paper"], 5),
          "pairwise": ("dcf", ["--head", "pairwise"], 12)}
EPOCH = re.compile(r"^(?P<fit>bp|pairwise|nn[123] \w+) epoch (?P<epoch>\d+)")
TIMING = re.compile(r"(?P<fit>B-P|pairwise|nn[123] \w+): .*?(?P<steps>\d+) steps on "
                    r"(?P<ranks>\d+) rank\(s\), per step: (?P<phases>.*)$")


# ---- the worker: one training run on every rank ---------------------------------------------
def worker(args) -> None:
    """Train one model (on every rank of mpiexec); rank 0 writes epoch times and timings."""
    from dcf.cli.train import TRAINERS, add_arguments
    from dcf.data.store import FeatureStore
    from dcf.parallel import world
    import importlib

    comm = world()
    kind, extra, epochs = MODELS[args.model]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    batch = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    targs = parser.parse_args([args.features, "--model", kind, *extra, "--out", "unused.dcf",
                               "--epochs", str(epochs), "--patience", "1000",
                               "--threads", "1", "--restart", *batch])
    targs.checkpoint = None
    events = []

    def log(message: str) -> None:
        events.append((time.perf_counter(), message))

    with FeatureStore(args.features) as store:
        counts = snapshot_counts(store, args.model)
        model = importlib.import_module(TRAINERS[kind][0]).train_from_store(store, targs, log,
                                                                            comm)
    if comm.rank == 0:
        Path(args.result).write_text(json.dumps(
            {"ranks": comm.size, "events": events, "counts": counts,
             "fits": model.training["fits"]}))


def snapshot_counts(store, model: str) -> dict:
    """Training snapshots of one epoch per fit name ("bp", "pairwise", "nn1 Li", ...)."""
    from dcf.training.core import validation_split
    from dcf.training.dcf import choose_validation_frames

    ids = store.frame_ids("train")
    if model in ("bp", "pairwise"):
        fit, _ = validation_split(ids, 0.1, 0)
        return {model: int(sum(len(store.frame(k)) for k in fit))}
    val = choose_validation_frames(store, 0.1, 0)
    out = {}
    for el in store.spec.elements:
        rows = sum(int((~np.isin(b["frame"], val)).sum())
                   for b in store.batches(el, 8192, shuffle=False))
        out.update({f"{stage} {el}": rows for stage in ("nn1", "nn2", "nn3")})
    return out


# ---- the driver -----------------------------------------------------------------------------
def epoch_times(events) -> dict:
    """Per fit: the seconds of each epoch after the first (between its epoch lines)."""
    last, out = {}, {}
    for t, message in events:
        m = EPOCH.match(message)
        if not m:
            continue
        fit = m["fit"]
        if fit in last:
            out.setdefault(fit, []).append(t - last[fit])
        last[fit] = t
    return out


def phases(events) -> dict:
    """Per fit: the per-step milliseconds of DataParallel's phases."""
    out = {}
    for _, message in events:
        m = TIMING.search(message)
        if m:
            fit = "bp" if m["fit"] == "B-P" else m["fit"]
            out[fit] = {k: float(v) for k, v in re.findall(r"([a-z +]+?) ([\d.]+) ms",
                                                            m["phases"])}
    return out


def stage_rates(result: dict) -> dict:
    """Snapshots/s per stage: the stage's snapshots of one epoch of every element / the sum of
    the elements' median epoch times."""
    times = epoch_times(result["events"])
    stages = {}
    for fit, ts in times.items():
        stage = fit.split()[0]
        s = stages.setdefault(stage, [0, 0.0])
        s[0] += result["counts"][fit]
        s[1] += statistics.median(ts)
    return {stage: n / t for stage, (n, t) in stages.items()}


def run_once(model: str, ranks: int, features: Path, tmp: Path, batch_size=None) -> dict:
    result = tmp / f"{model}-{ranks}.json"
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    subprocess.run([str(mpiexec), "-n", str(ranks), sys.executable, __file__, "--worker",
                    "--model", model, "--features", str(features), "--result", str(result),
                    *(["--batch-size", str(batch_size)] if batch_size else [])],
                   check=True, env=env, cwd=tmp, timeout=1800)
    return json.loads(result.read_text())


def featurized(tmp: Path) -> Path:
    out = tmp / "features.h5"
    subprocess.run([sys.executable, "-m", "dcf", "featurize", str(DATA), "--spec",
                    "mailoa2019-S4", "--out", str(out), "--test-fraction", "0.2", "--seed", "0",
                    "--quiet"], check=True)
    return out


def curve(result: dict) -> list:
    """(fit, epoch, train loss, validation loss) of every epoch."""
    names = {"pair": "pairwise"}
    return [(names.get(f["stage"], f["stage"]), f["element"], h[0], h[1], h[2])
            for f in result["fits"] for h in f["history"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--model", choices=sorted(MODELS), help="one model (default: all)")
    p.add_argument("--features", help="feature store (default: the embedded data, Table S4)")
    p.add_argument("--ranks", default="1,2", help="rank counts to compare (1,2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None,
                   help="--batch-size of every run (default: each model's own)")
    p.add_argument("--out", help="JSON with every run's rates, phases and learning curve")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    ranks = [int(k) for k in args.ranks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        features = Path(args.features).resolve() if args.features else featurized(tmp)
        runs = {}
        for model in [args.model] if args.model else list(MODELS):
            for rep in range(args.repeats):
                for k in ranks:
                    r = run_once(model, k, features, tmp, args.batch_size)
                    runs.setdefault(model, {}).setdefault(k, []).append(
                        {"rates": stage_rates(r), "phases": phases(r["events"]),
                         "curve": curve(r)})
                    print(f"{model} K={k} repeat {rep + 1}: " + ", ".join(
                        f"{s} {v:.0f}/s" for s, v in runs[model][k][-1]["rates"].items()),
                        flush=True)
    print(report(runs, ranks))
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=1))


def report(runs: dict, ranks: list) -> str:
    """A markdown table: per model and stage, min / median snapshots/s per K, the speed-up of
    the medians, and the largest difference of the learning curves from K = ranks[0]."""
    k0 = ranks[0]
    head = "| model | stage | " + " | ".join(f"K={k} snapshots/s min / median" for k in ranks)
    lines = [head + " | speed-up (medians) | max rel. loss diff vs K=%d |" % k0,
             "|---" * (4 + len(ranks)) + "|"]
    for model, by_k in runs.items():
        for stage in by_k[k0][0]["rates"]:
            cells, med = [], {}
            for k in ranks:
                rates = [r["rates"][stage] for r in by_k[k]]
                med[k] = statistics.median(rates)
                cells.append(f"{min(rates):.0f} / {med[k]:.0f}")
            speed = " / ".join(f"{med[k] / med[k0]:.2f}x" for k in ranks[1:])
            diff = max((loss_diff(by_k[k0][0]["curve"], by_k[k][0]["curve"], stage)
                        for k in ranks[1:]), default=0.0)
            lines.append(f"| {model} | {stage} | " + " | ".join(cells)
                         + f" | {speed} | {diff:.1e} |")
    return "\n".join(lines)


def loss_diff(a, b, stage) -> float:
    """Largest relative difference of the training and validation losses of a stage."""
    out = 0.0
    for ra, rb in zip(a, b):
        if ra[0] != stage:
            continue
        for x, y in zip(ra[3:], rb[3:]):
            if x is not None and y is not None:
                out = max(out, abs(x - y) / max(abs(x), 1e-30))
    return out


if __name__ == "__main__":
    main()
