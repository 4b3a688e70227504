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


def evaluate_frames(model, frames) -> dict:
    """Accuracy of any dcf model on structures with reference forces (and energies).

    frames: ase.Atoms with a calculator holding reference forces (eV/A) and, for models that
    implement "energy", energies (eV). Uses model.compute, so net-force removal and other
    whole-structure steps apply. Returns {"model", "kind", "forces": {el: force_metrics},
    "energy": energy_metrics or None, "parity": {el: {"ref": (n, 3), "pred": (n, 3)}},
    "n_frames"}.
    """
    want_energy = "energy" in model.implemented_properties
    properties = ["forces"] + (["energy"] if want_energy else [])
    ref, pred = {}, {}
    E_ref, E_pred, n_atoms = [], [], []
    for k, atoms in enumerate(frames):
        try:
            F_ref = atoms.get_forces()
        except Exception as err:       # no calculator or no forces: name the frame
            raise ValueError(f"frame {k} has no reference forces ({err})") from None
        result = model.compute(atoms, properties)
        for el in sorted(set(atoms.get_chemical_symbols())):
            rows = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == el]
            ref.setdefault(el, []).append(F_ref[rows])
            pred.setdefault(el, []).append(result["forces"][rows])
        if want_energy and "energy" in atoms.calc.results:
            E_ref.append(atoms.get_potential_energy())
            E_pred.append(result["energy"])
            n_atoms.append(len(atoms))
    order = [el for el in getattr(model, "elements", sorted(ref)) if el in ref]
    parity = {el: {"ref": np.concatenate(ref[el]), "pred": np.concatenate(pred[el])}
              for el in order}
    return {"model": getattr(model, "label", model.kind), "kind": model.kind,
            "forces": {el: force_metrics(p["pred"], p["ref"]) for el, p in parity.items()},
            "energy": energy_metrics(E_pred, E_ref, n_atoms) if E_ref else None,
            "parity": parity, "n_frames": len(frames)}


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
        for _ in range(n_rotations):
            q = rng.normal(size=4)
            T = _rotation_from_quaternion(q / np.linalg.norm(q))
            err = np.linalg.norm(model.forces(rotate_atoms(atoms, T)) - F @ T.T, axis=1)
            diff.append(err)
            norm.append(np.linalg.norm(F, axis=1))
            worst = max(worst, float(err.max()) if len(err) else 0.0)
    if not diff:
        return {"covariance_error": float("nan"), "max_abs_error": float("nan"),
                "n_rotations": n_rotations, "n_frames": 0}
    mean_ref = float(np.concatenate(norm).mean())
    return {"covariance_error": float(np.concatenate(diff).mean()) / mean_ref
            if mean_ref > 0 else float("nan"),
            "max_abs_error": worst, "n_rotations": n_rotations, "n_frames": len(frames)}


def _rotation_from_quaternion(q) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
