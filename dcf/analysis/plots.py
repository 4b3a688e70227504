"""Parity plots (predicted against reference force components) and error-by-|F| histograms
(the force error of the atoms binned by the size of their reference force), as PNG files.

Uses matplotlib's Agg backend (no display needed). Files are written under a temporary name and
renamed, so an interrupted run leaves no half-written image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    from dcf.files import write_atomic

    path = Path(path)
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        _pyplot().close(fig)
    return path


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)


def parity_plot(ref: np.ndarray, pred: np.ndarray, title: str, path) -> Path:
    """One parity plot of force components: ref, pred (n, 3) eV/A; x, y, z in three colours."""
    from dcf.analysis.evaluation import force_metrics

    plt = _pyplot()
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
    return _save(fig, path)


def parity_plots(parity: dict, out_dir, label: str) -> list[Path]:
    """One PNG per element, parity[el] = {"ref": (n, 3), "pred": (n, 3)}; returns the paths."""
    out_dir = Path(out_dir)
    return [parity_plot(p["ref"], p["pred"], f"{label}: {el}",
                        out_dir / f"parity_{_safe(label)}_{el}.png")
            for el, p in parity.items() if len(p["ref"])]


def error_by_force(ref: np.ndarray, pred: np.ndarray, n_bins: int = 10) -> dict:
    """Force error binned by reference force magnitude.

    ref, pred (n, 3) eV/A. The atoms' |F_ref| fall in n_bins equal bins from 0 to the largest
    (the last bin includes it). Returns edges (n_bins + 1,) eV/A; count (n_bins,) atoms; mae
    (n_bins,) eV/A, the mean absolute error of the force components of the atoms in the bin
    (NaN for an empty bin); and mean_force (n_bins,) eV/A, their mean |F_ref|.
    """
    ref, pred = np.asarray(ref, float).reshape(-1, 3), np.asarray(pred, float).reshape(-1, 3)
    size = np.linalg.norm(ref, axis=1)
    top = float(size.max()) if len(size) and size.max() > 0 else 1.0
    edges = np.linspace(0.0, top, n_bins + 1)
    which = np.minimum(np.searchsorted(edges, size, side="right") - 1, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    error = np.abs(pred - ref).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.bincount(which, error, minlength=n_bins) / count
        mean_force = np.bincount(which, size, minlength=n_bins) / count
    return {"edges": edges, "count": count, "mae": mae, "mean_force": mean_force}


def error_histogram_plot(ref: np.ndarray, pred: np.ndarray, title: str, path,
                         n_bins: int = 10) -> Path:
    """Bars: force-component MAE per |F_ref| bin (eV/A); line: atoms per bin."""
    plt = _pyplot()
    h = error_by_force(ref, pred, n_bins)
    left, width = h["edges"][:-1], np.diff(h["edges"])
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=120)
    ax.bar(left, np.nan_to_num(h["mae"]), width=width, align="edge", color="tab:blue",
           edgecolor="white", label="MAE")
    ax.set_xlabel("reference |F| (eV/Å)")
    ax.set_ylabel("force-component MAE (eV/Å)")
    atoms = ax.twinx()
    atoms.step(h["edges"], np.append(h["count"], h["count"][-1]), where="post",
               color="tab:orange", label="atoms")
    atoms.set_ylabel("atoms per bin", color="tab:orange")
    atoms.set_ylim(bottom=0)
    ax.set_title(f"{title}: error by |F| ({int(h['count'].sum())} atoms)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def error_histograms(parity: dict, out_dir, label: str, n_bins: int = 10) -> list[Path]:
    """One error-by-|F| PNG per element of parity[el] = {"ref", "pred"}; returns the paths."""
    out_dir = Path(out_dir)
    return [error_histogram_plot(p["ref"], p["pred"], f"{label}: {el}",
                                 out_dir / f"error_by_F_{_safe(label)}_{el}.png", n_bins)
            for el, p in parity.items() if len(p["ref"])]


def md_fidelity_plot(report: dict, path) -> Path:
    """The MD check of one model as one PNG: species temperatures against time (target and
    the +-5 % band) and each partial RDF of the MD over the reference data's, with its L1
    distance. `report` is the dict of `dcf.analysis.md_fidelity.check_md`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dcf.files import write_atomic

    target = report["settings"]["temperature"]
    rdf = report["rdf"]
    pairs = list(rdf["data"])
    ncol = min(4, len(pairs) + 1)
    nrow = -(-(len(pairs) + 1) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), dpi=110,
                             squeeze=False)
    axes = axes.ravel()
    ax = axes[0]
    t_ps = np.asarray(report["series"]["times_fs"]) / 1000.0
    for el, T in report["series"]["T"].items():
        ax.plot(t_ps, T, lw=0.6, label=el)
    ax.axhline(target, color="k", lw=0.8)
    ax.axhspan(0.95 * target, 1.05 * target, color="k", alpha=0.1)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("species temperature (K)")
    ax.set_title(report["verdict"][:60], fontsize=7)
    ax.legend(fontsize=6)
    r = np.asarray(rdf["r"])
    for ax, pair in zip(axes[1:], pairs):
        ax.plot(r, rdf["data"][pair], "k-", lw=1.0, label="data")
        ax.plot(r, rdf["md"][pair], "C3-", lw=0.9, label="MD")
        ax.set_title(f"{pair}: L1 {report['rdf_l1'][pair]:.3f}", fontsize=8)
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)")
        ax.legend(fontsize=6)
    for ax in axes[len(pairs) + 1:]:
        ax.axis("off")
    fig.suptitle(f"{report['model']}: {report['settings']['thermostat']} "
                 f"{target:.0f} K, {report['simulated_fs'] / 1000:.1f} ps", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path
