"""Accuracy measures as in Table 1 of Mailoa et al. (2019), shared by the DCF and B–P models.

Force errors are per element and use the vector norm of the error, not per component:
MAE = <|F_pred - F_ref|>, RMSE = sqrt(<|F_pred - F_ref|^2>), and the relative error
MAE / <|F_ref|>. Forces in eV/A, energies in eV.
"""
from __future__ import annotations

import numpy as np


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


def format_force_table(rows: dict[str, dict[str, dict]]) -> str:
    """A Table-1-style text table.

    rows: {label: {element: force_metrics(...)}}, e.g. {"DCF NN3": {...}, "B-P": {...}}.
    """
    head = (f"{'model':<14} {'element':>7} {'n':>7} {'MAE':>8} {'RMSE':>8} "
            f"{'<|F|>':>8} {'MAE/<|F|>':>10}")
    lines = [head, "-" * len(head)]
    for label, per_element in rows.items():
        for el, m in per_element.items():
            lines.append(f"{label:<14} {el:>7} {m['n']:>7} {m['mae']:>8.4f} {m['rmse']:>8.4f} "
                         f"{m['mean_abs_ref']:>8.4f} {100 * m['relative_mae']:>9.2f}%")
    lines.append("forces in eV/A; MAE and RMSE of the error vector's norm, as in Table 1")
    return "\n".join(lines)
