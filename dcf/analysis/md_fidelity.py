"""Is a model fit for MD? Measures of what a direct (non-conservative) force field does in
dynamics that a test-set MAE does not show (Bigi, Langer, Ceriotti, "The dark side of the
forces", ICML 2025): species that settle at different temperatures under a thermostat, a
structure that drifts from the reference data, forces that are not the gradient of an energy.

* `block_average`: the mean of a correlated series and its statistical error.
* `partial_rdfs`, `rdf_l1`: partial radial distribution functions and their distance.
* `force_jacobian`, `jacobian_asymmetry`: the antisymmetric part of dF/dr, from finite
  differences; zero for F = -grad E.
* `loop_work`, `random_loop_works`: the work of the forces around a small closed loop in
  configuration space; zero for F = -grad E, W = h^2 (v.D u - u.D v) to order h^2 otherwise.
* `feature_ranges`, `extrapolation`: where an MD run leaves the range of the data (the frames
  to label next, n2p2's extrapolation warnings).
* `assess`: all of it on one model, one data set and one MD run of `dcf.dynamics.sampling`
  (`run_md_sample`, `nve_drift`), with a verdict; `dcf check-md` runs the chain.

A `force_fn` is any callable atoms -> (n_atoms, 3) forces in eV/A (e.g. `model.forces`).
Units: A, eV, eV/A, fs, K.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

THRESHOLDS = {
    "temperature_rel": 0.05,    # |T_el - T| / T, or twice the statistical error if larger
    "rdf_l1": 0.15,             # int |g - g_ref| dr / int g_ref dr, every pair, or twice
                                # the data's own (first half against second) if larger
    "jacobian_asymmetry": 0.1,  # ||(D - D^T)/2|| / ||D||: reported, warns only
    "nve_drift": 1.0,           # |meV/atom/ps|, energy models only
    "blowup_factor": 3.0,       # the run stops as blown up above this many times the target T
}


# --- statistics ---------------------------------------------------------------------------

def block_average(series, n_blocks: int = 10) -> tuple[float, float]:
    """Mean of a (correlated) series and its standard error from `n_blocks` block means.

    series (n,); the blocks must be longer than the correlation time for the error to hold
    (the error of the error is about 1/sqrt(2 (n_blocks - 1))). Returns (mean, sem); sem is
    nan with fewer than 2 blocks of at least one sample.
    """
    x = np.asarray(series, float).ravel()
    if len(x) == 0:
        raise ValueError("block_average: empty series")
    length = len(x) // n_blocks
    if n_blocks < 2 or length < 1:
        return float(x.mean()), float("nan")
    means = x[: length * n_blocks].reshape(n_blocks, length).mean(axis=1)
    return float(x.mean()), float(means.std(ddof=1) / np.sqrt(n_blocks))


# --- structure -----------------------------------------------------------------------------

def element_pairs(symbols) -> list[tuple[str, str]]:
    """The unordered element pairs of `symbols`, in the order the elements first appear."""
    els = list(dict.fromkeys(symbols))
    return [(a, b) for k, a in enumerate(els) for b in els[k:]]


def partial_rdfs(frames, r_max: float, n_bins: int = 100):
    """Partial radial distribution functions averaged over `frames` (periodic cells).

    g_ab(r) = <n_ab(r)> / (N_a (N_b / V) 4 pi r^2 dr), n_ab the b atoms in the shell around each
    a atom (ASE's and LAMMPS' convention, g_ab = g_ba). Images of the cell count, so r_max may
    exceed half the cell. Returns r (n_bins,) bin centres in A and {(a, b): g (n_bins,)}.
    """
    from dcf.descriptors.neighbors import neighbor_list

    edges = np.linspace(0.0, r_max, n_bins + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    pairs = element_pairs(frames[0].get_chemical_symbols())
    g = {p: np.zeros(n_bins) for p in pairs}
    for atoms in frames:
        symbols = np.array(atoms.get_chemical_symbols())
        i, j, d = neighbor_list("ijd", atoms, r_max)
        volume = atoms.get_volume()
        for a, b in pairs:
            keep = (symbols[i] == a) & (symbols[j] == b)
            counts = np.histogram(d[keep], edges)[0]
            n_a, n_b = np.sum(symbols == a), np.sum(symbols == b)
            g[(a, b)] += counts / (n_a * n_b / volume * shell)
    return 0.5 * (edges[1:] + edges[:-1]), {p: v / len(frames) for p, v in g.items()}


def rdf_l1(g, g_ref) -> float:
    """Relative L1 distance int |g - g_ref| dr / int g_ref dr (0 identical, 2 disjoint) of two
    RDFs on the same uniform bins."""
    g, g_ref = np.asarray(g, float), np.asarray(g_ref, float)
    norm = g_ref.sum()
    return float(np.abs(g - g_ref).sum() / norm) if norm > 0 else float("nan")


def min_pair_distances(frames) -> dict[tuple[str, str], float]:
    """The shortest distance (A) of each element pair over `frames`, within 4 A (inf if none)."""
    from dcf.descriptors.neighbors import shortest_pair_distances

    shortest = shortest_pair_distances(frames, 4.0)
    return {p: shortest.get(p, np.inf) for p in element_pairs(frames[0].get_chemical_symbols())}


# --- extrapolation: where the MD leaves the data ---------------------------------------------

def feature_ranges(frames, spec, featurizer=None) -> dict:
    """Per element, the (min, max) (nG,) of each invariant fingerprint of `spec` over every
    atom of `frames` (n2p2's scaling range). featurizer: one of spec's invariant part, to
    reuse (default: made here)."""
    fz = featurizer or _invariant_featurizer(spec)
    lo, hi = {}, {}
    for atoms in frames:
        f = fz(atoms, derivatives=False)
        for el, G in f.G.items():
            if len(G):
                lo[el] = np.minimum(lo.get(el, np.inf), G.min(0))
                hi[el] = np.maximum(hi.get(el, -np.inf), G.max(0))
    return {el: (lo[el], hi[el]) for el in lo}


def _invariant_featurizer(spec):
    from dcf.descriptors.fingerprints import Featurizer
    from dcf.descriptors.spec import invariant_spec

    return Featurizer(invariant_spec(spec))


def extrapolation(md_frames, frames, spec, margin: float = 0.05) -> dict:
    """Where an MD run leaves the range of its training data, as n2p2's extrapolation
    warnings: an atom extrapolates when one of its invariant fingerprints G lies outside the
    data's [min, max] widened by `margin` of the range on each side; a frame when one of its
    atoms does, or when an element pair comes closer than in any data frame.

    md_frames: ase.Atoms (info["time_fs"] if known). Returns {"frames": indices of the
    extrapolating frames, "times_fs", "fraction_frames", "first_fs" (None if none),
    "atoms_fraction": {el: share of the element's MD atoms out of range}, "margin"}.
    """
    from dcf.descriptors.neighbors import shortest_pair_distances

    fz = _invariant_featurizer(spec)
    ranges = feature_ranges(frames, spec, fz)
    widened = {el: (lo - margin * (hi - lo), hi + margin * (hi - lo))
               for el, (lo, hi) in ranges.items()}
    closest = shortest_pair_distances(frames, 4.0)
    out_atoms = {el: 0 for el in spec.elements}
    seen_atoms = {el: 0 for el in spec.elements}
    bad, times = [], []
    for k, atoms in enumerate(md_frames):
        f = fz(atoms, derivatives=False)
        outside = False
        for el, G in f.G.items():
            if not len(G):
                continue
            seen_atoms[el] += len(G)
            if el not in widened:           # an element the data never had
                out_atoms[el] += len(G)
                outside = True
                continue
            lo, hi = widened[el]
            n_out = int(np.sum(np.any((G < lo) | (G > hi), axis=1)))
            out_atoms[el] += n_out
            outside = outside or n_out > 0
        if not outside:
            md_close = shortest_pair_distances([atoms], 4.0)
            outside = any(d < closest.get(p, np.inf) for p, d in md_close.items())
        if outside:
            bad.append(k)
            times.append(atoms.info.get("time_fs"))
    n = len(md_frames)
    return {"frames": bad, "times_fs": times, "fraction_frames": len(bad) / n if n else 0.0,
            "first_fs": times[0] if times else None, "margin": margin,
            "atoms_fraction": {el: out_atoms[el] / seen_atoms[el] if seen_atoms[el] else 0.0
                               for el in spec.elements}}


# --- non-conservation -----------------------------------------------------------------------

def force_jacobian(force_fn, atoms, delta: float = 1e-3, indices=None) -> np.ndarray:
    """D[3a + c, 3b + d] = dF_{a,c} / dr_{b,d} by central differences of step `delta` A, for
    atoms a, b in `indices` (default all): (3m, 3m) in eV/A^2. For F = -grad E, D = -Hessian
    is symmetric."""
    idx = np.arange(len(atoms)) if indices is None else np.asarray(indices)
    probe = atoms.copy()
    probe.calc = None
    r0 = atoms.get_positions()
    D = np.empty((3 * len(idx), 3 * len(idx)))
    for col, (b, d) in enumerate((b, d) for b in idx for d in range(3)):
        f = []
        for sign in (1.0, -1.0):
            r = r0.copy()
            r[b, d] += sign * delta
            probe.set_positions(r)
            f.append(np.asarray(force_fn(probe))[idx].ravel())
        D[:, col] = (f[0] - f[1]) / (2.0 * delta)
    return D


def jacobian_asymmetry(D) -> float:
    """||(D - D^T) / 2||_F / ||D||_F: 0 for a conservative force, 1 for a pure curl."""
    D = np.asarray(D, float)
    whole = np.linalg.norm(D)
    return float(np.linalg.norm(0.5 * (D - D.T)) / whole) if whole > 0 else 0.0


_GAUSS3 = np.polynomial.legendre.leggauss(3)


def loop_work(force_fn, atoms, u, v, side: float) -> float:
    """Work (eV) of the forces around the square r0 -> r0 + h u -> r0 + h u + h v -> r0 + h v
    -> r0 in configuration space (r0 the positions of `atoms`, h = side in A).

    u, v (n_atoms, 3) span the loop's plane (orthonormalized here). Each edge is integrated
    with 3-point Gauss-Legendre (exact for forces up to fifth order along it). Zero for
    F = -grad E; h^2 (v.D u - u.D v) + O(h^3) in general, D = dF/dr.
    """
    u = np.asarray(u, float) / np.linalg.norm(u)
    v = np.asarray(v, float) - np.sum(np.asarray(v, float) * u) * u
    v = v / np.linalg.norm(v)
    probe = atoms.copy()
    probe.calc = None
    r0 = atoms.get_positions()
    nodes, weights = _GAUSS3
    work = 0.0
    corner = r0
    for e in (u, v, -u, -v):
        for x, w in zip(nodes, weights):
            probe.set_positions(corner + 0.5 * side * (x + 1.0) * e)
            work += 0.5 * side * w * float(np.sum(np.asarray(force_fn(probe)) * e))
        corner = corner + side * e
    return work


def random_loop_works(force_fn, frames, n_loops: int, side: float, rng) -> np.ndarray:
    """Loop works (eV) on `n_loops` random squares: each in a random plane of the six
    coordinates of a random atom and its nearest neighbour, on a random frame."""
    from dcf.descriptors.neighbors import neighbor_list

    out = np.empty(n_loops)
    for k in range(n_loops):
        atoms = frames[rng.integers(len(frames))]
        a = int(rng.integers(len(atoms)))
        i, j, d = neighbor_list("ijd", atoms, 4.0)
        near = j[i == a]
        b = int(near[np.argmin(d[i == a])]) if len(near) else a
        u, v = np.zeros((len(atoms), 3)), np.zeros((len(atoms), 3))
        plane = rng.normal(size=(2, 6))
        u[[a, b]] += plane[0].reshape(2, 3)     # b == a (no neighbour): one atom's plane
        v[[a, b]] += plane[1].reshape(2, 3)
        out[k] = loop_work(force_fn, atoms, u, v, side)
    return out


# --- the check ------------------------------------------------------------------------------

def data_temperature(frames) -> float | None:
    """The temperature (K) a data set was made at: its `target_temperature_K` (as `dcf
    generate` writes) or the mean kinetic temperature of its momenta; None if it has neither."""
    info = frames[0].info
    for key in ("target_temperature_K", "temperature_K", "temperature"):
        if key in info:
            return float(info[key])
    if frames[0].has("momenta"):
        return float(np.mean([a.get_temperature() for a in frames]))
    return None


@dataclass
class CheckSettings:
    """Settings of an MD check (units in the names; the defaults are the recommended ones)."""
    temperature: float
    steps: int = 5000
    timestep: float = 1.0
    thermostat: str = "langevin"
    damping: float = 100.0
    start_frame: int = -1
    seed: int = 0
    n_blocks: int = 10
    rdf_r_max: float = 6.0
    rdf_bins: int = 60
    rdf_every: int = 10
    jacobian_frames: int = 2
    jacobian_atoms: int = 16
    fd_delta: float = 1e-3
    n_loops: int = 20
    loop_side: float = 0.05
    nve_steps: int = 2000


def species_summary(times_fs, T: dict, target: float, n_blocks: int = 10) -> dict:
    """Per element: the mean temperature over the second half of the run (times_fs (n,),
    T[el] (n,) K), its block-average error and its relative deviation from `target` K."""
    half = np.asarray(times_fs) > 0.5 * times_fs[-1]
    out = {}
    for el, series in T.items():
        mean, err = block_average(np.asarray(series)[half], n_blocks)
        out[el] = {"mean_K": mean, "err_K": err, "rel_dev": (mean - target) / target}
    return out


def compare_structure(md_frames, frames, r_max: float, n_bins: int) -> dict:
    """Partial RDFs of `md_frames` against the reference `frames`: the L1 distance per pair
    ("A-B"), the data's own between its first and second half (its sampling noise), the
    closest approach of each pair in both (A), and the curves for a plot."""
    r, g_ref = partial_rdfs(frames, r_max, n_bins)
    g_md = partial_rdfs(md_frames, r_max, n_bins)[1]
    name = {p: f"{p[0]}-{p[1]}" for p in g_ref}
    l1 = {name[p]: rdf_l1(g_md[p], g_ref[p]) for p in g_ref}
    noise = {v: float("nan") for v in name.values()}
    if len(frames) >= 2:
        g_a = partial_rdfs(frames[: len(frames) // 2], r_max, n_bins)[1]
        g_b = partial_rdfs(frames[len(frames) // 2:], r_max, n_bins)[1]
        noise = {name[p]: rdf_l1(g_a[p], g_b[p]) for p in g_ref}
    ref_min, md_min = min_pair_distances(frames), min_pair_distances(md_frames)
    return {"rdf_l1": l1, "rdf_l1_data_halves": noise,
            "closest_approach": {name[p]: {"md_A": md_min[p], "data_A": ref_min[p]}
                                 for p in ref_min},
            "rdf": {"r": r.tolist(), "md": {name[p]: v.tolist() for p, v in g_md.items()},
                    "data": {name[p]: v.tolist() for p, v in g_ref.items()}}}


def assess(model, frames, md, settings: CheckSettings, nve_drift: float | None = None,
           thresholds: dict | None = None, progress=None) -> dict:
    """All MD-fidelity measures of `model` against the reference `frames` (list of ase.Atoms),
    given `md`, its thermostatted run under `settings` (a `dcf.dynamics.sampling.MDSample`:
    times_fs, T per element, frames, blown_up_fs, atoms) and the NVE drift of an energy model
    (meV/atom/ps, or None).

    Returns a JSON-able dict: settings, thresholds, species temperatures over the second half
    (mean, statistical error, relative deviation), RDF L1 per pair (and the data's own between
    its halves), closest approaches against the data's, Jacobian asymmetry, loop work, NVE
    drift, the verdict; plus "series" (times, temperatures) and "rdf" (r, g, g_ref) for the
    plots. progress(stage, detail) reports as it runs.
    """
    th = {**THRESHOLDS, **(thresholds or {})}
    s = settings
    say = progress or (lambda stage, detail: None)
    rng = np.random.default_rng(s.seed)
    start = frames[s.start_frame]
    temps = species_summary(md.times_fs, md.T, s.temperature, s.n_blocks)
    temps_ok = md.blown_up_fs is None and all(
        abs(t["mean_K"] - s.temperature) <= max(th["temperature_rel"] * s.temperature,
                                               2.0 * np.nan_to_num(t["err_K"]))
        for t in temps.values())

    say("rdf", f"{len(md.frames)} MD frames against {len(frames)} reference frames")
    md_frames = md.frames or [md.atoms]
    structure = compare_structure(md_frames, frames, s.rdf_r_max, s.rdf_bins)
    l1, l1_noise = structure["rdf_l1"], structure["rdf_l1_data_halves"]

    picks = rng.choice(len(frames), min(s.jacobian_frames, len(frames)), replace=False)
    asym = []
    for k, f in enumerate(picks):
        say("jacobian", f"frame {k + 1}/{len(picks)}")
        atoms = frames[f]
        idx = np.sort(rng.choice(len(atoms), min(s.jacobian_atoms, len(atoms)), replace=False))
        asym.append(jacobian_asymmetry(force_jacobian(model.forces, atoms, s.fd_delta, idx)))
    say("loops", f"{s.n_loops} loops of side {s.loop_side} A")
    works = random_loop_works(model.forces, [frames[f] for f in picks], s.n_loops,
                              s.loop_side, rng)

    say("extrapolation", f"{len(md.trajectory)} MD frames against the data's range")
    extra = extrapolation(md.trajectory or md_frames, frames, model.spec)

    drift = nve_drift
    reasons = []
    if md.blown_up_fs is not None:
        reasons.append(f"blew up at {md.blown_up_fs:.0f} fs (T > {th['blowup_factor']:g} x "
                       f"target)")
    elif not temps_ok:
        reasons.append("species temperatures off target")
    if any(not (v <= max(th["rdf_l1"], 2.0 * np.nan_to_num(l1_noise[p])))
           for p, v in l1.items()):
        reasons.append("RDF differs from the data")
    if drift is not None and not abs(drift) <= th["nve_drift"]:
        reasons.append("NVE energy drifts")
    warnings = []
    if float(np.mean(asym)) > th["jacobian_asymmetry"]:
        warnings.append("strongly non-conservative forces")
    verdict = ("FIT for MD" if not reasons else "NOT FIT for MD: " + "; ".join(reasons)) + (
        f" (warning: {'; '.join(warnings)})" if warnings else "")
    return {
        "model": getattr(model, "label", "B-P"), "kind": model.kind,
        "settings": asdict(s), "thresholds": th,
        "n_atoms": len(start), "simulated_fs": float(md.times_fs[-1]),
        "blown_up_fs": md.blown_up_fs,
        "temperatures": temps,
        "rdf_l1": l1, "rdf_l1_data_halves": l1_noise,
        "closest_approach": structure["closest_approach"],
        "jacobian_asymmetry": {"mean": float(np.mean(asym)), "per_frame": asym},
        "loop_work": {"side_A": s.loop_side, "mean_abs_meV": 1000 * float(np.abs(works).mean()),
                      "rms_per_area_eV_A2": float(np.sqrt(np.mean(works ** 2))
                                                  / s.loop_side ** 2)},
        "nve_drift_meV_atom_ps": drift,
        "extrapolation": extra,
        "ok": not reasons, "verdict": verdict,
        "series": {"times_fs": md.times_fs.tolist(),
                   "T": {el: v.tolist() for el, v in md.T.items()}},
        "rdf": structure["rdf"],
    }
