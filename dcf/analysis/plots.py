"""Parity plots (predicted against reference force components), as PNG files.

Uses matplotlib's Agg backend (no display needed). Files are written under a temporary name and
renamed, so an interrupted run leaves no half-written image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def parity_plot(ref: np.ndarray, pred: np.ndarray, title: str, path) -> Path:
    """One parity plot of force components: ref, pred (n, 3) eV/A; x, y, z in three colours."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dcf.files import write_atomic
    from dcf.analysis.evaluation import force_metrics

    ref, pred = np.asarray(ref, float).reshape(-1, 3), np.asarray(pred, float).reshape(-1, 3)
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=120)
    for c, name in enumerate("xyz"):
        ax.scatter(ref[:, c], pred[:, c], s=3, alpha=0.4, label=f"F_{name}", rasterized=True)
    finite = np.concatenate([ref.ravel(), pred.ravel()])
    lim = float(np.abs(finite).max()) * 1.05 if finite.size else 1.0
    ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.8)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("reference force component (eV/Å)")
    ax.set_ylabel("predicted force component (eV/Å)")
    m = force_metrics(pred, ref)
    ax.set_title(f"{title}\nMAE {m['mae']:.3f} eV/Å, MAE/<|F|> {100 * m['relative_mae']:.1f}%",
                 fontsize=9)
    ax.legend(loc="upper left", fontsize=7, markerscale=3)
    fig.tight_layout()
    path = Path(path)
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def parity_plots(parity: dict, out_dir, label: str) -> list[Path]:
    """One PNG per element, parity[el] = {"ref": (n, 3), "pred": (n, 3)}; returns the paths."""
    out_dir = Path(out_dir)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)
    return [parity_plot(p["ref"], p["pred"], f"{label}: {el}", out_dir / f"parity_{safe}_{el}.png")
            for el, p in parity.items() if len(p["ref"])]
