"""`dcf evaluate`: force accuracy of a model as in Table 1 of Mailoa et al. (2019).

DATA is a feature store (.h5; its --split is used) or any structure file ase.io reads with
reference forces. Prints the per-element table (MAE and RMSE of the force-error vector's norm,
<|F|>, MAE/<|F|>), the covariance error <|F(T R) - T F(R)|> / <|F|> over random rotations T,
and writes a JSON report and, with --plots, parity plots.
"""
from __future__ import annotations

import json
from pathlib import Path

HELP = "accuracy (Table 1), covariance error and parity plots of a model"
STORE_SUFFIXES = (".h5", ".hdf5")


def add_arguments(p) -> None:
    p.add_argument("model", help="model file from `dcf train`")
    p.add_argument("data", help="feature store (.h5) or structure file with reference forces")
    p.add_argument("--report", default=None, help="write a JSON report here")
    p.add_argument("--plots", default=None, metavar="DIR", help="write parity plots (PNG) here")
    p.add_argument("--split", choices=("test", "train", "all"), default="test",
                   help="feature-store split to evaluate (default test)")
    p.add_argument("--index", default=":", help="frames of a structure file, ase syntax")
    p.add_argument("--rotations", type=int, default=4,
                   help="random rotations per frame for the covariance error (default 4; 0: skip)")
    p.add_argument("--covariance-frames", type=int, default=5,
                   help="frames used for the covariance error (default 5)")


def _frames_from_file(path, index):
    from ase.io import read
    try:
        frames = read(path, index=index)
    except Exception as err:          # ase raises many kinds for unreadable files
        raise SystemExit(f"dcf evaluate: cannot read {path}: {err}") from None
    return [frames] if hasattr(frames, "get_chemical_symbols") else list(frames)


def run(args) -> int:
    from dcf.cli._common import write_atomic
    from dcf.evaluation import covariance_error, evaluate_frames, format_force_table
    from dcf.modelfile import ModelFileError, load_model

    try:
        model = load_model(args.model)
    except ModelFileError as err:
        raise SystemExit(f"dcf evaluate: {err}") from None
    data = Path(args.data)
    if not data.exists():
        raise SystemExit(f"dcf evaluate: {data} does not exist")
    split = None if args.split == "all" else args.split
    try:
        if data.suffix in STORE_SUFFIXES:
            from dcf.store import FeatureStore, StoreError
            try:
                with FeatureStore(data) as store:
                    result = model.evaluate_store(store, split=split)
                    ids = list(store.frame_ids(split))[:max(args.covariance_frames, 0)]
                    cov_frames = [store.frame(k) for k in ids]
            except StoreError as err:
                raise SystemExit(f"dcf evaluate: {err}") from None
        else:
            frames = _frames_from_file(data, args.index)
            result = evaluate_frames(model, frames)
            cov_frames = frames[:max(args.covariance_frames, 0)]
        cov = covariance_error(model, cov_frames, args.rotations) \
            if args.rotations > 0 and cov_frames else None
    except ValueError as err:
        raise SystemExit(f"dcf evaluate: {data}: {err}") from None

    label = result.get("model", model.kind)
    print(format_force_table({label: result["forces"]}))
    if result.get("energy"):
        e = result["energy"]
        print(f"energy: MAE {1000 * e['mae_per_atom']:.2f} meV/atom, "
              f"RMSE {1000 * e['rmse_per_atom']:.2f} meV/atom over {e['n']} frames")
    if cov is not None:
        print(f"covariance error <|F(TR) - T F(R)|>/<|F|> = {cov['covariance_error']:.3g} "
              f"({cov['n_rotations']} rotations x {cov['n_frames']} frames, "
              f"max {cov['max_abs_error']:.3g} eV/A)")
    if args.plots:
        from dcf.plots import parity_plots
        for path in parity_plots(result["parity"], args.plots, label):
            print(f"wrote {path}")
    if args.report:
        report = {k: v for k, v in result.items() if k != "parity"}
        report.update(model_file=str(args.model), data=str(data), covariance=cov)
        text = json.dumps(report, indent=1, default=float)
        write_atomic(args.report, lambda tmp: Path(tmp).write_text(text))
        print(f"wrote {args.report}")
    return 0
