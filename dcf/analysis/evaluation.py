"""Accuracy measures as in Table 1 of Mailoa et al. (2019), shared by the DCF and B–P models.

Force errors are per element and use the vector norm of the error, not per component:
MAE = <|F_pred - F_ref|>, RMSE = sqrt(<|F_pred - F_ref|^2>), and the relative error
MAE / <|F_ref|>. Forces in eV/A, energies in eV.
"""
from __future__ import annotations

import numpy as np

from dcf.rotations import random_rotations


def force_metrics(F_pred, F_ref) -> dict:
    """Error measures of predicted forces (n, 3) against reference forces (n, 3), eV/A.

    Returns {"n", "mae", "rmse", "mean_abs_ref", "relative_mae", "component_mae",
    "max_error"}; relative_mae is MAE / <|F_ref|>. An empty input gives n = 0 and NaNs.
    """
    F_pred = np.asarray(F_pred, dtype=float).reshape(-1, 3)
    F_ref = np.asarray(F_ref, dtype=float).reshape(-1, 3)
    if F_pred.shape != F_ref.shape:
        raise ValueError(f"predicted forces {F_pred.shape} and reference {F_ref.shape} differ")
    n = len(F_ref)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "mae": nan, "rmse": nan, "mean_abs_ref": nan, "relative_mae": nan,
                "component_mae": nan, "max_error": nan}
    err = np.linalg.norm(F_pred - F_ref, axis=1)
    mean_ref = float(np.linalg.norm(F_ref, axis=1).mean())
    mae = float(err.mean())
    return {"n": n, "mae": mae, "rmse": float(np.sqrt((err ** 2).mean())),
            "mean_abs_ref": mean_ref,
            "relative_mae": mae / mean_ref if mean_ref > 0 else float("nan"),
            "component_mae": float(np.abs(F_pred - F_ref).mean()),
            "max_error": float(err.max())}


def energy_metrics(E_pred, E_ref, n_atoms) -> dict:
    """Per-atom energy errors (eV/atom) of total energies E_pred, E_ref (n_frames,)."""
    E_pred, E_ref = np.asarray(E_pred, float), np.asarray(E_ref, float)
    n_atoms = np.asarray(n_atoms, float)
    if len(E_ref) == 0:
        return {"n": 0, "mae_per_atom": float("nan"), "rmse_per_atom": float("nan")}
    err = (E_pred - E_ref) / n_atoms
    return {"n": int(len(E_ref)), "mae_per_atom": float(np.abs(err).mean()),
            "rmse_per_atom": float(np.sqrt((err ** 2).mean()))}


def _per_model_table(rows: dict, header: str, cells, footer: str) -> str:
    """Text table with one row per (model label, element); cells(entry) gives the row's
    columns after the element, aligned with `header`."""
    w = max([14, *map(len, rows)])
    head = f"{'model':<{w}} {'element':>7} {header}"
    lines = [head, "-" * len(head)]
    for label, per_element in rows.items():
        for el, entry in per_element.items():
            lines.append(f"{label:<{w}} {el:>7} {cells(entry)}")
    lines.append(footer)
    return "\n".join(lines)


def format_force_table(rows: dict[str, dict[str, dict]]) -> str:
    """A Table-1-style text table, rows grouped per model.

    rows: {label: {element: force_metrics(...)}}, e.g. {"DCF NN3": {...}, "B-P": {...}}.
    """
    return _per_model_table(
        rows, f"{'n':>7} {'MAE':>8} {'RMSE':>8} {'<|F|>':>8} {'MAE/<|F|>':>10}",
        lambda m: (f"{m['n']:>7} {m['mae']:>8.4f} {m['rmse']:>8.4f} "
                   f"{m['mean_abs_ref']:>8.4f} {100 * m['relative_mae']:>9.2f}%"),
        "forces in eV/A; MAE and RMSE of the error vector's norm, as in Table 1")


def model_label(model) -> str:
    """A model's name in tables: its `label` (DCF: e.g. "DCF paper NN3"), else by kind."""
    return getattr(model, "label", None) or {"bp": "B-P"}.get(model.kind, model.kind)


def evaluate_frames(model, frames, frame_ids=None) -> dict:
    """Accuracy of any dcf model on structures with reference forces (and energies).

    frames: ase.Atoms with a calculator holding reference forces (eV/A) and, for models that
    implement "energy", energies (eV); frame_ids: an id per frame, recorded with each parity
    row (default 0, 1, ...). Uses model.compute, so net-force removal and other
    whole-structure steps apply. Returns {"model", "kind", "forces": {el: force_metrics},
    "energy": energy_metrics or None, "parity": {el: {"ref": (n, 3), "pred": (n, 3),
    "frame": (n,) int64, "atom": (n,) int64}}, "n_frames"}; parity rows are ordered by frame,
    then atom index.
    """
    frames = list(frames)
    frame_ids = range(len(frames)) if frame_ids is None else list(frame_ids)
    if len(frame_ids) != len(frames):
        raise ValueError(f"{len(frame_ids)} frame ids for {len(frames)} frames")
    want_energy = "energy" in model.implemented_properties
    properties = ["forces"] + (["energy"] if want_energy else [])
    ref, pred, ids = {}, {}, {}
    E_ref, E_pred, n_atoms = [], [], []
    for k, atoms in zip(frame_ids, frames):
        try:
            F_ref = atoms.get_forces()
        except Exception as err:       # no calculator or no forces: name the frame
            raise ValueError(f"frame {k} has no reference forces ({err})") from None
        result = model.compute(atoms, properties)
        symbols = np.array(atoms.get_chemical_symbols())
        for el in sorted(set(symbols)):
            rows = np.flatnonzero(symbols == el)
            ref.setdefault(el, []).append(F_ref[rows])
            pred.setdefault(el, []).append(result["forces"][rows])
            ids.setdefault(el, []).append(np.stack([np.full(len(rows), k), rows], axis=1))
        if want_energy and "energy" in atoms.calc.results:
            E_ref.append(atoms.get_potential_energy())
            E_pred.append(result["energy"])
            n_atoms.append(len(atoms))
    order = [el for el in getattr(model, "elements", sorted(ref)) if el in ref]
    parity = {}
    for el in order:
        fa = np.concatenate(ids[el]).astype(np.int64)
        parity[el] = {"ref": np.concatenate(ref[el]), "pred": np.concatenate(pred[el]),
                      "frame": fa[:, 0], "atom": fa[:, 1]}
    return {"model": model_label(model), "kind": model.kind,
            "forces": {el: force_metrics(p["pred"], p["ref"]) for el, p in parity.items()},
            "energy": energy_metrics(E_pred, E_ref, n_atoms) if E_ref else None,
            "parity": parity, "n_frames": len(frames)}


def evaluate_store(model, store, split: str | None = "test", batch_size: int = 4096) -> dict:
    """Table-1 accuracy of `model` on a FeatureStore split ("train", "test" or None for all).

    A DCF model without net-force removal is evaluated on the stored fingerprints (fast).
    Otherwise (B–P, or forces that need the whole structure) the split's frames are read
    and evaluated with `evaluate_frames`; parity rows then carry the store's frame ids.
    Returns the `evaluate_frames` dict plus "split" and "source" ("features" or "frames").
    """
    if store.spec.fingerprint != model.spec.fingerprint:
        raise ValueError(f"the feature store was made with fingerprint spec {store.spec.name!r} "
                         f"(sha256 {store.spec.fingerprint[:12]}), but the model uses "
                         f"{model.spec.name!r} (sha256 {model.spec.fingerprint[:12]}); "
                         f"featurize the data with the model's spec")
    if model.kind != "dcf" or model.remove_net_force or model.baseline is not None:
        ids = list(store.frame_ids(split))
        result = evaluate_frames(model, [store.frame(int(k)) for k in ids], ids)
        result.update(split=split, source="frames")
        return result
    parity, metrics = {}, {}
    for el in model.elements:
        refs, preds = [], []
        for batch in store.batches(el, batch_size, split=split, shuffle=False):
            refs.append(np.asarray(batch["F"], float))
            preds.append(model.predict(el, batch["G"], batch["A"]))
        ref = np.concatenate(refs) if refs else np.zeros((0, 3))
        pred = np.concatenate(preds) if preds else np.zeros((0, 3))
        parity[el] = {"ref": ref, "pred": pred}
        metrics[el] = force_metrics(pred, ref)
    return {"model": model_label(model), "kind": model.kind, "split": split,
            "source": "features", "forces": metrics, "energy": None, "parity": parity}


# ---- Table 2: the standard and the reaction test sets --------------------------------------

def snapshot_keys(frame, atom) -> np.ndarray:
    """One int64 key per (frame, atom) pair, for set operations on snapshots."""
    return np.asarray(frame, np.int64) * (1 << 32) + np.asarray(atom, np.int64)


def read_reaction_snapshots(path) -> dict:
    """The reaction test set: the JSON of `dcf reactions --out` or a 'frame atom [weight]'
    lines file (`dcf reactions --snapshots`, the `dcf featurize --chosen` format).

    Returns {"path", "format" ("dcf-reactions" or "lines"), "pairs": (m, 2) int64 (frame, atom)
    sorted and unique, and from a JSON (else None): "n_frames", "n_atoms", "source", "index",
    "occurrence": {el: fraction}, "snapshots": {el: count}}. Weights in a lines file are
    ignored. Raises ValueError naming the file.
    """
    import json
    from pathlib import Path

    from dcf.data.sampling import read_chosen

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from None
    info = {"path": str(path), "format": "lines", "n_frames": None, "n_atoms": None,
            "source": None, "index": None, "occurrence": None, "snapshots": None}
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
            if doc.get("format") != "dcf-reactions":
                raise ValueError(f"format {doc.get('format')!r}")
            frame = np.asarray(doc["snapshots"]["frame"], dtype=np.int64).reshape(-1)
            atom = np.asarray(doc["snapshots"]["atom"], dtype=np.int64).reshape(-1)
            if frame.shape != atom.shape:
                raise ValueError("snapshots have unequal frame and atom lists")
            occ = doc.get("occurrence") or {}
            info.update(format="dcf-reactions", n_frames=int(doc["n_frames"]),
                        n_atoms=int(doc["n_atoms"]), source=doc.get("source"),
                        index=doc.get("index"),
                        occurrence={el: float(o["occurrence"]) for el, o in occ.items()},
                        snapshots={el: int(o["snapshots"]) for el, o in occ.items()})
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: not a reactions file of `dcf reactions --out` "
                             f"({type(err).__name__}: {err})") from None
        pairs = np.stack([frame, atom], axis=1)
    else:
        pairs = read_chosen(path)[:, :2].astype(np.int64)
    info["pairs"] = np.unique(pairs.reshape(-1, 2), axis=0)
    return info


def reaction_symbols(pairs, n_frames: int, numbers_of, source: str = "reaction file") \
        -> np.ndarray:
    """Element symbols (m,) of the (frame, atom) pairs (m, 2), checked against the data.

    n_frames: frames of the data; numbers_of(k): atomic numbers (n_k,) of frame k.
    Raises ValueError naming `source` for a frame or an atom index out of range.
    """
    from ase.data import chemical_symbols

    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    out = np.empty(len(pairs), dtype=object)
    for f in np.unique(pairs[:, 0]):
        sel = np.flatnonzero(pairs[:, 0] == f)
        if not 0 <= f < n_frames:
            raise ValueError(f"{source}: snapshot (frame {f}, atom {pairs[sel[0], 1]}): frame "
                             f"out of range; the data has {n_frames} frames (0..{n_frames - 1})")
        numbers = np.asarray(numbers_of(int(f)))
        atoms = pairs[sel, 1]
        bad = (atoms < 0) | (atoms >= len(numbers))
        if bad.any():
            raise ValueError(f"{source}: snapshot (frame {f}, atom {atoms[bad][0]}): atom out of "
                             f"range; frame {f} of the data has {len(numbers)} atoms")
        out[sel] = [chemical_symbols[z] for z in numbers[atoms]]
    return out.astype(str) if len(out) else np.zeros(0, dtype=str)


def check_reaction_source(info: dict, n_frames: int, symbols, data: str) -> None:
    """Refuse a reactions JSON that was made from other frames than the data.

    info: read_reaction_snapshots(...) of a JSON; n_frames: frames of the data; symbols:
    reaction_symbols(...) of its pairs. The frame counts and the per-element snapshot counts
    must agree. A lines file (info["format"] == "lines") carries nothing to check.
    """
    if info["format"] != "dcf-reactions":
        return
    where = f"{info['source']} (index {info['index']!r})"
    if info["n_frames"] != n_frames:
        raise ValueError(f"{info['path']}: found in {info['n_frames']} frames of {where}, but "
                         f"{data} has {n_frames}: the (frame, atom) pairs must number the frames "
                         f"of the data; evaluate the same frames (same --index)")
    counts = dict(zip(*np.unique(symbols, return_counts=True)))
    for el, n in (info["snapshots"] or {}).items():
        if int(counts.get(el, 0)) != n:
            raise ValueError(f"{info['path']}: {n} {el} snapshots in {where}, but those atoms "
                             f"of {data} include {int(counts.get(el, 0))} {el}: not the "
                             f"trajectory the reactions were found in")


def occurrence_from_counts(symbols, totals: dict) -> dict:
    """Rare-event occurrence per element: reaction snapshots of the element (symbols (m,)) over
    all its atomic snapshots in the data (totals: {el: atoms summed over frames})."""
    counts = dict(zip(*np.unique(np.asarray(symbols, dtype=str), return_counts=True)))
    return {el: int(counts.get(el, 0)) / n if n else float("nan") for el, n in totals.items()}


def element_totals(numbers_per_frame) -> dict:
    """{el: number of atoms of el summed over frames} from atomic-number arrays, one per frame."""
    from ase.data import chemical_symbols

    total: dict = {}
    for numbers in numbers_per_frame:
        z, n = np.unique(np.asarray(numbers), return_counts=True)
        for zi, ni in zip(z, n):
            el = chemical_symbols[zi]
            total[el] = total.get(el, 0) + int(ni)
    return total


def reaction_table(parity: dict, reaction, occurrence: dict | None = None,
                   standard=None) -> dict:
    """Table 2 of Mailoa et al. (2019): force errors on the standard and the reaction test sets.

    parity: evaluate_frames(...)["parity"], rows carrying frame and atom ids;
    reaction: (m, 2) (frame, atom) pairs, the reaction test set; each must be a parity row;
    standard: (s, 2) pairs the standard set is drawn from, or None for every parity row; the
    reaction pairs are removed from it; occurrence: {el: fraction} or None.
    Returns {el: {"standard": force_metrics, "reaction": force_metrics, "occurrence": float}}
    for the elements of `parity`, forces in eV/A.
    """
    reaction = np.asarray(reaction, np.int64).reshape(-1, 2)
    r_keys = snapshot_keys(reaction[:, 0], reaction[:, 1])
    s_keys = None if standard is None else snapshot_keys(*np.asarray(standard, np.int64)
                                                          .reshape(-1, 2).T)
    table, found = {}, 0
    for el, p in parity.items():
        keys = snapshot_keys(p["frame"], p["atom"])
        is_reaction = np.isin(keys, r_keys)
        is_standard = ~is_reaction if s_keys is None else ~is_reaction & np.isin(keys, s_keys)
        found += int(is_reaction.sum())
        table[el] = {"standard": force_metrics(p["pred"][is_standard], p["ref"][is_standard]),
                     "reaction": force_metrics(p["pred"][is_reaction], p["ref"][is_reaction]),
                     "occurrence": float((occurrence or {}).get(el, float("nan")))}
    if found != len(np.unique(r_keys)):
        raise ValueError(f"{len(np.unique(r_keys)) - found} reaction snapshot(s) are not among "
                         f"the evaluated atoms")
    return table


def format_reaction_table(rows: dict[str, dict[str, dict]]) -> str:
    """A Table-2-style text table, rows grouped per model.

    rows: {label: reaction_table(...)}.
    """
    return _per_model_table(
        rows, f"{'standard n':>10} {'standard MAE':>12} {'reaction n':>10} {'reaction MAE':>12} "
              f"{'occurrence':>10}",
        lambda t: (f"{t['standard']['n']:>10} {t['standard']['mae']:>12.4f} "
                   f"{t['reaction']['n']:>10} {t['reaction']['mae']:>12.4f} "
                   f"{100 * t['occurrence']:>9.4f}%"),
        "forces in eV/A; MAE of the error vector's norm; occurrence: reaction "
        "snapshots / all snapshots of the element, as in Table 2")


def rotate_atoms(atoms, T: np.ndarray):
    """A copy of `atoms` rotated by the 3x3 rotation matrix T (positions and cell)."""
    out = atoms.copy()
    out.calc = None
    out.set_cell(atoms.cell.array @ T.T, scale_atoms=False)
    out.positions = atoms.positions @ T.T
    return out


def covariance_error(model, frames, n_rotations: int = 4, seed: int = 0) -> dict:
    """How far a model's forces are from rotating with the structure.

    error = <|F(T R) - T F(R)|> / <|F(R)|> over atoms, frames and `n_rotations` random rotations
    T per frame (uniform on SO(3)); 0 for an exactly covariant model. Works for any model with
    forces(atoms). Returns {"covariance_error", "max_abs_error" (eV/A), "n_rotations", "n_frames"}.
    """
    rng = np.random.default_rng(seed)
    diff, norm, worst = [], [], 0.0
    for atoms in frames:
        F = model.forces(atoms)
        F_norm = np.linalg.norm(F, axis=1)
        for T in random_rotations(n_rotations, rng):
            err = np.linalg.norm(model.forces(rotate_atoms(atoms, T)) - F @ T.T, axis=1)
            diff.append(err)
            norm.append(F_norm)
            worst = max(worst, float(err.max()) if len(err) else 0.0)
    if not diff:
        return {"covariance_error": float("nan"), "max_abs_error": float("nan"),
                "n_rotations": n_rotations, "n_frames": 0}
    mean_ref = float(np.concatenate(norm).mean())
    return {"covariance_error": float(np.concatenate(diff).mean()) / mean_ref
            if mean_ref > 0 else float("nan"),
            "max_abs_error": worst, "n_rotations": n_rotations, "n_frames": len(frames)}


# ---- how much of the force the covariant axes can carry -----------------------------------

def axes_span(A: np.ndarray, F: np.ndarray, weak: float = 0.1, rank_tol: float = 1e-6) -> dict:
    """How much of the reference forces F (n, 3) lies in the span of each snapshot's
    covariant axes A (n, nA, 3).

    A head that builds F from the axes (F = sum_k c_k A_k, or the paper's NN2 acting on
    F_int = A F) can represent only the part of F in their span, and a part along a
    direction the axes barely reach needs large, hard-to-learn coefficients. With the
    singular values s_1 >= s_2 >= s_3 of A and their right singular vectors v:

    * "outside": sum |F - P F|^2 / sum |F|^2, P the projector on the directions with
      s > rank_tol * s_1 (no head on these axes can fit this part);
    * "weak": the same fraction for the directions with s <= weak * s_1, outside included;
    * "rank_deficient": the fraction of snapshots whose axes span fewer than 3 directions;
    * "n": the number of snapshots.
    """
    A = np.asarray(A, dtype=float)
    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return {"outside": float("nan"), "weak": float("nan"), "rank_deficient": float("nan"),
                "n": 0}
    _, s, vt = np.linalg.svd(A, full_matrices=True)             # s (n, min(nA, 3)), vt (n,3,3)
    s = np.concatenate([s, np.zeros((len(s), 3 - s.shape[1]))], axis=1)
    top = np.maximum(s[:, :1], 1e-300)
    along = np.einsum("nkc,nc->nk", vt, F) ** 2                  # |F . v_k|^2, (n, 3)
    total = float(np.sum(F * F))
    outside = float(along[s <= rank_tol * top].sum())
    weak_part = float(along[s <= weak * top].sum())
    return {"outside": outside / total if total > 0 else 0.0,
            "weak": weak_part / total if total > 0 else 0.0,
            "rank_deficient": float(np.mean(np.sum(s > rank_tol * top, axis=1) < 3)),
            "n": int(len(F))}


def axes_span_of_store(store, split: str | None = "test", batch_size: int = 8192) -> dict:
    """`axes_span` per element ({el: dict}) of a FeatureStore split's snapshots."""
    out = {}
    for el in store.spec.elements:
        A, F = [], []
        for batch in store.batches(el, batch_size, split=split, shuffle=False):
            A.append(np.asarray(batch["A"], float))
            F.append(np.asarray(batch["F"], float))
        if A and store.spec.n_features(el)[1]:
            out[el] = axes_span(np.concatenate(A), np.concatenate(F))
    return out


def axes_span_of_frames(frames, spec) -> dict:
    """`axes_span` per element ({el: dict}) of every atom of `frames` (ase.Atoms with
    reference forces) under the covariant axes of `spec`."""
    from dcf.descriptors.fingerprints import Featurizer

    featurizer = Featurizer(spec)
    A, F = {}, {}
    for atoms in frames:
        f = featurizer(atoms)
        ref = atoms.get_forces()
        for el in f.A:
            A.setdefault(el, []).append(f.A[el])
            F.setdefault(el, []).append(ref[f.index[el]])
    return {el: axes_span(np.concatenate(A[el]), np.concatenate(F[el])) for el in A
            if spec.n_features(el)[1]}


def format_axes_span(span: dict) -> str:
    """One line per element of an `axes_span_of_*` result."""
    return "\n".join(f"  {el}: {100 * r['outside']:.3f} % of |F|^2 outside the span of A, "
                     f"{100 * r['weak']:.2f} % along weakly spanned directions (s < 0.1 s_max), "
                     f"{100 * r['rank_deficient']:.2f} % of {r['n']} snapshots rank < 3"
                     for el, r in span.items())
