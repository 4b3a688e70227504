"""`dcf evaluate`: force accuracy of one or more models as in Tables 1 and 2 of Mailoa et al.
(2019).

    dcf evaluate MODEL [MODEL ...] DATA [--reactions FILE] [--report J] [--plots DIR]

DATA (the last positional argument) is a feature store (.h5; its --split is used) or any
structure file ase.io reads with reference forces. Every model is evaluated on the same data.
Prints one per-element table with rows per model (Table 1: MAE and RMSE of the force-error
vector's norm, <|F|>, MAE/<|F|>), the energy error of models with energies and the covariance
error <|F(T R) - T F(R)|> / <|F|> over random rotations T of each model; writes a JSON report
and, with --plots, parity plots and error-by-|F| histograms per model and element.

With --reactions FILE (the JSON of `dcf reactions --out`, or its `--snapshots` lines 'frame
atom'), also Table 2: the standard and the reaction test sets side by side. The (frame, atom)
pairs number the frames of DATA: for a structure file, the frames --index selects, from 0; for a
store, its frame ids (the numbering of `dcf featurize --chosen`). The reaction test set is those
atomic snapshots, evaluated on their frames (for a store, the frames stored in it); the standard
test set is every atom of the structure file, or the store's --split rows, less the reaction
snapshots. See docs/evaluation.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from dcf.cli._frames import add_format_arguments, read_input

HELP = "accuracy (Tables 1 and 2), covariance error and parity plots of models side by side"
STORE_SUFFIXES = (".h5", ".hdf5")


def add_arguments(p) -> None:
    p.add_argument("model", nargs="+", metavar="MODEL",
                   help="model file(s) from `dcf train`, evaluated side by side")
    p.add_argument("data", metavar="DATA",
                   help="feature store (.h5), or structure file with reference forces: any "
                        "ase.io format, a DeePMD system (folder) or n2p2 input.data")
    p.add_argument("--report", default=None, help="write a JSON report here")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="write parity plots and error-by-|F| histograms (PNG) here")
    p.add_argument("--split", choices=("test", "train", "all"), default="test",
                   help="feature-store split to evaluate (default test)")
    p.add_argument("--index", default=":", help="frames of a structure file, ase syntax")
    add_format_arguments(p)
    p.add_argument("--rotations", type=int, default=4,
                   help="random rotations per frame for the covariance error (default 4; 0: skip)")
    p.add_argument("--covariance-frames", type=int, default=5,
                   help="frames used for the covariance error (default 5)")
    p.add_argument("--reactions", default=None, metavar="FILE",
                   help="reaction test set: JSON of `dcf reactions --out` or 'frame atom' lines "
                        "(`--snapshots`), numbering the frames of DATA; adds Table 2")


def _fail(message: str):
    raise SystemExit(f"dcf evaluate: {message}")


def _load_models(paths) -> list:
    from dcf.models import ModelFileError, load_model

    models = []
    for path in paths:
        try:
            models.append(load_model(path))
        except ModelFileError as err:
            _fail(str(err))
    return models


def _labels(results, paths) -> list[str]:
    """Model labels for the tables and plot names, made unique with the file name."""
    labels = [r.get("model", r.get("kind", "model")) for r in results]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({Path(p).stem})" if labels.count(lab) > 1 else lab
                  for lab, p in zip(labels, paths)]
    seen: dict = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} #{seen[lab]}")
    return out


def _reaction_set(path, models, model_paths, n_frames, numbers_of, data, all_numbers):
    """Read and check the reaction test set against the data and the models.

    numbers_of(k): atomic numbers of frame k; all_numbers(): an iterable of every frame's
    atomic numbers (used only when the file carries no occurrence). Returns the info of
    read_reaction_snapshots plus "symbols" (m,) and "occurrence" {el: fraction}.
    """
    from dcf.analysis.evaluation import (check_reaction_source, element_totals, occurrence_from_counts,
                                read_reaction_snapshots, reaction_symbols)

    if not Path(path).is_file():
        _fail(f"{path} does not exist")
    try:
        info = read_reaction_snapshots(path)
        symbols = reaction_symbols(info["pairs"], n_frames, numbers_of, str(path))
        check_reaction_source(info, n_frames, symbols, str(data))
    except ValueError as err:
        _fail(str(err))
    for model, mpath in zip(models, model_paths):
        unknown = sorted(set(symbols) - set(model.elements))
        if unknown:
            f, a = info["pairs"][list(symbols).index(unknown[0])]
            _fail(f"{path}: snapshot (frame {f}, atom {a}) is {unknown[0]}, an element model "
                  f"{mpath} does not have (elements: {', '.join(model.elements)})")
    occurrence = info["occurrence"]
    if occurrence is None:
        occurrence = occurrence_from_counts(symbols, element_totals(all_numbers()))
    info.update(symbols=symbols, occurrence=occurrence)
    return info


def _evaluate_file(models, paths, data, args):
    """Table 1 (and 2) on a structure file; returns (results, covariance frames, tables, rx)."""
    from dcf.analysis.evaluation import evaluate_frames, reaction_table

    frames = read_input("evaluate", data, args.index, args)
    if not frames:
        _fail(f"{data}: --index {args.index} selects no frames")
    rx = None
    if args.reactions:
        rx = _reaction_set(args.reactions, models, paths, len(frames),
                           lambda k: frames[k].numbers, data,
                           lambda: (a.numbers for a in frames))
        rx["standard_set"] = (f"all atoms of the {len(frames)} frames of {data} less the "
                              f"reaction snapshots")
        rx["in_store_training_frames"] = None
    results = [evaluate_frames(m, frames) for m in models]
    tables = [reaction_table(r["parity"], rx["pairs"], rx["occurrence"]) for r in results] \
        if rx else None
    return results, frames[:max(args.covariance_frames, 0)], tables, rx


def _evaluate_store(models, paths, data, args):
    """Table 1 (and 2) on a feature store; returns (results, covariance frames, tables, rx).

    Table 2 evaluates whole frames read from the store: the frames of the split's rows and
    those of the reaction snapshots, whatever their split."""
    import numpy as np

    from dcf.analysis.evaluation import evaluate_frames, evaluate_store, reaction_table
    from dcf.data.store import FeatureStore, StoreError

    split = None if args.split == "all" else args.split
    try:
        with FeatureStore(data) as store:
            if len(store.frame_ids(split)) == 0:
                _fail(f"{data}: the {args.split} split holds no frames; evaluate another "
                      f"--split, or featurize with a --test-fraction that leaves test frames")
            rx = None
            if args.reactions:
                rx = _reaction_set(args.reactions, models, paths, store.n_frames,
                                   lambda k: store.frame_arrays(k)["numbers"], data,
                                   lambda: (store.frame_arrays(k)["numbers"]
                                            for k in range(store.n_frames)))
                rx["standard_set"] = (f"{args.split} rows of {data} less the reaction "
                                      f"snapshots")
                rx["in_store_training_frames"] = int(np.isin(
                    rx["pairs"][:, 0], store.frame_ids("train")).sum())
            results = [evaluate_store(m, store, split=split) for m in models]
            ids = list(store.frame_ids(split))[:max(args.covariance_frames, 0)]
            cov_frames = [store.frame(k) for k in ids]
            tables = None
            if rx:
                standard = _split_pairs(store, split)
                need = np.union1d(standard[:, 0], rx["pairs"][:, 0])
                frames = [store.frame(int(k)) for k in need]
                tables = [reaction_table(evaluate_frames(m, frames, need)["parity"],
                                         rx["pairs"], rx["occurrence"], standard)
                          for m in models]
    except StoreError as err:
        _fail(str(err))
    return results, cov_frames, tables, rx


def _split_pairs(store, split):
    """(frame, atom) pairs (s, 2) int64 of every element's rows in `split` of a store."""
    import numpy as np

    return np.concatenate([np.zeros((0, 2), np.int64),
                           *(store.snapshot_ids(el, split) for el in store.elements)])


def _differing_counts(results) -> list[str]:
    """Elements whose number of evaluated snapshots differs between the models."""
    elements = dict.fromkeys(el for r in results for el in r["forces"])
    return [el for el in elements
            if len({r["forces"].get(el, {}).get("n", 0) for r in results}) > 1]


def _axes_span(models, data, args) -> dict:
    """The span diagnostic of the data's covariant axes (analysis.evaluation.axes_span), for
    the first model whose spec has axes; {} if none has."""
    from dcf.analysis.evaluation import axes_span_of_frames, axes_span_of_store

    spec = next((m.spec for m in models
                 if any(m.spec.n_features(el)[1] for el in m.spec.elements)), None)
    if spec is None:
        return {}
    if data.suffix in STORE_SUFFIXES:
        from dcf.data.store import FeatureStore
        with FeatureStore(data) as store:
            if store.spec.fingerprint == spec.fingerprint:
                return axes_span_of_store(store, None if args.split == "all" else args.split)
        return {}
    return axes_span_of_frames(read_input("evaluate", data, args.index, args), spec)


def run(args) -> int:
    from dcf.cli._paths import refuse_overwriting_inputs
    from dcf.files import write_atomic
    from dcf.analysis.evaluation import (covariance_error, format_axes_span, format_force_table,
                                         format_reaction_table)

    data = Path(args.data)
    refuse_overwriting_inputs([*(("MODEL", m) for m in args.model), ("DATA", data),
                               ("--reactions", args.reactions)], [("--report", args.report)])
    models = _load_models(args.model)
    if not data.exists():
        _fail(f"{data} does not exist")
    evaluate = _evaluate_store if data.suffix in STORE_SUFFIXES else _evaluate_file
    try:
        results, cov_frames, tables, rx = evaluate(models, args.model, data, args)
        covs = [covariance_error(m, cov_frames, args.rotations)
                if args.rotations > 0 and cov_frames else None for m in models]
    except ValueError as err:
        _fail(f"{data}: {err}")

    labels = _labels(results, args.model)
    several = len(models) > 1
    print(format_force_table({lab: r["forces"] for lab, r in zip(labels, results)}))
    for lab, r, cov in zip(labels, results, covs):
        who = f"{lab} " if several else ""
        if r.get("energy"):
            e = r["energy"]
            print(f"{who}energy: MAE {1000 * e['mae_per_atom']:.2f} meV/atom, "
                  f"RMSE {1000 * e['rmse_per_atom']:.2f} meV/atom over {e['n']} frames")
        if cov is not None:
            print(f"{who}covariance error <|F(TR) - T F(R)|>/<|F|> = "
                  f"{cov['covariance_error']:.3g} ({cov['n_rotations']} rotations x "
                  f"{cov['n_frames']} frames, max {cov['max_abs_error']:.3g} eV/A)")
    span = _axes_span(models, data, args)
    if span:
        print(f"covariant axes A of the {args.split} data: the part of the reference force "
              f"that no head built on A can fit")
        print(format_axes_span(span))
    differ = _differing_counts(results) if several else []
    if differ:
        print(f"note: the models were evaluated on different snapshots of {', '.join(differ)} "
              f"(see n): a DCF model kept with --keep-net-force uses the store's sampled rows, "
              f"the others every atom of the split's frames")
    if tables is not None:
        print(f"\nstandard test set: {rx['standard_set']}; reaction test set: "
              f"{len(rx['pairs'])} snapshots of {rx['path']}")
        print(format_reaction_table(dict(zip(labels, tables))))
        if rx["in_store_training_frames"]:
            print(f"note: {rx['in_store_training_frames']} reaction snapshot(s) lie in training "
                  f"frames of {data}")
    if args.plots:
        from dcf.analysis.plots import error_histograms, parity_plots
        for lab, r in zip(labels, results):
            for path in [*parity_plots(r["parity"], args.plots, lab),
                         *error_histograms(r["parity"], args.plots, lab)]:
                print(f"wrote {path}")
    if args.report:
        entries = []
        for k, (lab, r, cov) in enumerate(zip(labels, results, covs)):
            entry = {key: v for key, v in r.items() if key != "parity"}
            entry.update(model_file=str(args.model[k]), data=str(data), covariance=cov,
                         axes_span=span)
            if several:
                entry["label"] = lab
            if tables is not None:
                entry["reactions"] = {
                    "file": rx["path"], "format": rx["format"], "n_snapshots": len(rx["pairs"]),
                    "standard_set": rx["standard_set"],
                    "in_store_training_frames": rx["in_store_training_frames"],
                    "elements": tables[k]}
            entries.append(entry)
        report = {"data": str(data), "split": args.split, "models": entries} if several \
            else entries[0]
        text = json.dumps(report, indent=1, default=float)
        write_atomic(args.report, lambda tmp: Path(tmp).write_text(text))
        print(f"wrote {args.report}")
    return 0
