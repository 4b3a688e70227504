"""Covariant axes chosen from the data (`dcf spec --auto DATA`).

The paper hand-tuned Table S2's extra O axes (A1 terms O-Li at 1.4 A, O-O at 2.0 A, O-P at
1.6 and 1.8 A) to the neighbor shells of its system. `auto_spec` does the same for any data:
for every center element a and neighbor element b it finds the first `shells` peaks of the
a-b pair-distance distribution and adds, on top of a preset's pattern, one radial axis per
peak::

    A1_ab(Rs, eta) = sum_{j in b} exp(-eta (r_ij - Rs)^2) fc(r_ij) r_ij / r_ij

(docs/fingerprints.md) with Rs the peak position and eta = 1 / (2 sigma^2) from the peak's
half width at half maximum (sigma = HWHM / 1.1774), so the axis weights the shell's atoms and
little else. Everything is deterministic: the same frames give the same spec.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcf.descriptors.neighbors import build_neighbor_list
from dcf.descriptors.spec import FingerprintSpec

BIN = 0.01              # A, histogram bin
SMOOTHING = 0.04        # A, Gaussian smoothing of the histogram
MIN_PROMINENCE = 0.2    # a peak's prominence relative to the pair's highest g(r)
MIN_SEPARATION = 0.25   # A between two accepted peaks
MIN_COUNT = 0.5         # neighbors per center atom within a shell's half width
ETA_RANGE = (0.5, 200.0)


@dataclass(frozen=True)
class Shell:
    """One neighbor shell of center element `center`: neighbors of element `neighbor` at
    `position` A (the peak), `hwhm` A wide, with `count` neighbors per center atom within
    the half maximum."""
    center: str
    neighbor: str
    position: float
    hwhm: float
    count: float

    @property
    def eta(self) -> float:
        """1 / (2 sigma^2) A^-2 of a Gaussian of this half width, rounded to two significant
        digits and clipped to ETA_RANGE."""
        sigma = self.hwhm / np.sqrt(2 * np.log(2))
        eta = float(np.clip(1.0 / (2 * sigma ** 2), *ETA_RANGE))
        return float(f"{eta:.2g}")

    @property
    def Rs(self) -> float:
        """The peak position rounded to 0.01 A."""
        return round(self.position, 2)


def pair_distances(frames, elements, r_max: float) -> dict[tuple[str, str], np.ndarray]:
    """All distances (A) from atoms of element a to atoms of element b below `r_max`, over
    `frames` (periodic images included), {(a, b): (k,)}, and the number of a atoms seen
    under key (a, None)."""
    out = {(a, b): [] for a in elements for b in elements}
    counts = dict.fromkeys(elements, 0)
    for atoms in frames:
        symbols = np.array(atoms.get_chemical_symbols())
        nl = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, r_max, 1)
        si, sj = symbols[nl.i], symbols[nl.j]
        for a in elements:
            counts[a] += int(np.sum(symbols == a))
            mine = si == a
            for b in elements:
                out[(a, b)].append(nl.d[mine & (sj == b)])
    result = {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}
    result.update({(a, None): np.array(float(n)) for a, n in counts.items()})
    return result


def find_shells(distances: np.ndarray, n_centers: float, r_max: float, shells: int,
                center: str = "", neighbor: str = "") -> list[Shell]:
    """The first `shells` peaks of a pair-distance sample (A) below r_max: maxima of the
    smoothed g(r) histogram whose prominence is at least MIN_PROMINENCE of the highest
    value, at least MIN_SEPARATION apart (scipy.signal.find_peaks), with their half width
    at half maximum of the prominence (peak_widths), holding at least MIN_COUNT neighbors
    per center."""
    from scipy.signal import find_peaks, peak_widths

    if len(distances) == 0 or n_centers == 0:
        return []
    edges = np.arange(0.0, r_max + BIN, BIN)
    h = np.histogram(distances, edges)[0].astype(float)
    r = 0.5 * (edges[1:] + edges[:-1])
    h = h / np.maximum(r * r, 1e-12)                    # per shell volume: g(r), not r^2 g(r)
    k = np.arange(-4 * SMOOTHING, 4 * SMOOTHING + BIN / 2, BIN)
    kernel = np.exp(-0.5 * (k / SMOOTHING) ** 2)
    g = np.convolve(np.pad(h, len(k)), kernel / kernel.sum(), mode="same")[len(k):-len(k)]
    if g.max() <= 0:
        return []
    peaks, _ = find_peaks(g, prominence=MIN_PROMINENCE * g.max(),
                          distance=max(1, int(round(MIN_SEPARATION / BIN))))
    found: list[Shell] = []
    for p in peaks:
        if len(found) == shells:
            break
        width, _, left, right = (w[0] for w in peak_widths(g, [p], rel_height=0.5))
        lo, hi = np.interp([left, right], np.arange(len(r)), r)
        within = np.sum((distances >= lo) & (distances <= hi)) / n_centers
        if within < MIN_COUNT:          # a few pairs' noise, not a shell
            continue
        found.append(Shell(center, neighbor, float(r[p]), float(max(BIN, width * BIN / 2)),
                           float(within)))
    return found


def auto_spec(frames, like: FingerprintSpec | str = "mailoa2019-S4", elements=None,
              shells: int = 2, r_max: float | None = None,
              name: str = "") -> tuple[FingerprintSpec, list[Shell]]:
    """A spec with `like`'s pattern over the data's elements plus one A1 axis per neighbor
    shell found in `frames` (ase.Atoms): the first `shells` shells of every (center,
    neighbor) element pair within r_max (default: the preset's cutoff, at most 4 A, where
    the first shells are). Returns (spec, shells found). elements: their order (default:
    by atomic number)."""
    from ase.data import atomic_numbers

    frames = list(frames)
    if not frames:
        raise ValueError("dcf spec --auto needs at least one frame")
    if shells < 1:
        raise ValueError(f"shells must be >= 1, got {shells}")
    if elements is None:
        seen = {s for a in frames for s in a.get_chemical_symbols()}
        elements = sorted(seen, key=lambda s: atomic_numbers[s])
    base = FingerprintSpec.resolve(like)
    spec, _ = base.like(list(elements))
    r_max = float(min(4.0, spec.cutoff) if r_max is None else r_max)
    dist = pair_distances(frames, elements, r_max)
    found, rules = [], list(spec.rules)
    existing = {(el, t.kind, t["eta"], t["Rs"], t.neighbors)
                for el in spec.elements for t in spec.vector_terms(el)}
    for a in elements:
        for b in elements:
            for shell in find_shells(dist[(a, b)], float(dist[(a, None)]), r_max, shells,
                                     a, b):
                if (a, "A1", shell.eta, shell.Rs, (b,)) in existing:
                    continue
                found.append(shell)
                rules.append({"centers": [a], "kind": "A1", "neighbors": [b],
                              "eta": shell.eta, "Rs": shell.Rs})
    name = name or f"{'-'.join(elements)}-auto-{base.name}"
    return FingerprintSpec(tuple(elements), rules, spec.cutoff, name), found
