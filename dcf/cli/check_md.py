"""`dcf check-md MODEL DATA`: is a model fit for MD on this data?

Runs thermostatted MD (Langevin, 100 fs, 5 ps by default) at the data's temperature from one of
its frames, then measures: each species' mean temperature over the second half against the
target, with its statistical error (block averages); the partial RDFs against the data's (L1
distance per pair); how non-conservative the forces are (asymmetry of the force Jacobian from
finite differences on sample frames, work around small closed loops); for an energy model
(B-P), the NVE energy drift. Prints a table and a one-line verdict with the thresholds used,
writes a JSON report and a PNG (temperatures, RDF overlays); progress goes to stderr. Exits 1
when the model is not fit (a species off target by more than the tolerance, or by more than
twice its statistical error where that is larger; an RDF pair above its L1 tolerance, or
twice the L1 distance between the data's two halves where that is larger; an NVE
drift above its tolerance; a blow-up). See docs/md.md.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HELP = "MD fitness of a model: species temperatures, RDFs, non-conservation, drift, verdict"


def add_arguments(p) -> None:
    from dcf.analysis.md_fidelity import THRESHOLDS, CheckSettings
    from dcf.cli._frames import add_format_arguments
    from dcf.dynamics.md import THERMOSTATS

    d = CheckSettings(temperature=0.0)
    p.add_argument("model", help="model file (.dcf) from dcf train")
    p.add_argument("data", help="reference frames (any file ase.io reads, a DeePMD system or "
                   "n2p2 input.data)")
    add_format_arguments(p)
    p.add_argument("--index", default=":", help="frames of DATA, ase syntax (default ':')")
    p.add_argument("--temperature", type=float, default=None,
                   help="K (default: the data's target_temperature_K, or its mean kinetic "
                        "temperature)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"MD steps (default {d.steps})")
    p.add_argument("--timestep", type=float, default=d.timestep, help="fs (default 1)")
    p.add_argument("--thermostat", choices=[t for t in THERMOSTATS if t != "nve"],
                   default=d.thermostat)
    p.add_argument("--damping", type=float, default=d.damping,
                   help=f"thermostat time constant, fs (default {d.damping:g})")
    p.add_argument("--start-frame", type=int, default=d.start_frame,
                   help="frame of DATA the MD starts from (default the last)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--jacobian-frames", type=int, default=d.jacobian_frames,
                   help=f"frames for the Jacobian and loops (default {d.jacobian_frames})")
    p.add_argument("--jacobian-atoms", type=int, default=d.jacobian_atoms,
                   help=f"atoms per frame in the Jacobian (default {d.jacobian_atoms})")
    p.add_argument("--loops", type=int, default=d.n_loops,
                   help=f"closed loops (default {d.n_loops})")
    p.add_argument("--nve-steps", type=int, default=d.nve_steps,
                   help=f"NVE steps for the drift of an energy model (default {d.nve_steps})")
    p.add_argument("--rdf-rmax", type=float, default=d.rdf_r_max, help="A (default 6)")
    p.add_argument("--temperature-tolerance", type=float, default=THRESHOLDS["temperature_rel"],
                   help="largest relative species-temperature deviation (default 0.05)")
    p.add_argument("--rdf-tolerance", type=float, default=THRESHOLDS["rdf_l1"],
                   help=f"largest RDF L1 distance (default {THRESHOLDS['rdf_l1']:g})")
    p.add_argument("--drift-tolerance", type=float, default=THRESHOLDS["nve_drift"],
                   help=f"largest |NVE drift|, meV/atom/ps (default {THRESHOLDS['nve_drift']:g})")
    p.add_argument("--report", default=None,
                   help="JSON report (default MODEL stem + -check-md.json)")
    p.add_argument("--plot", default=None, help="PNG (default: the report with .png)")
    p.add_argument("--extrapolating", default=None, metavar="FILE",
                   help="write the MD frames that leave the data's range (a fingerprint "
                        "outside its training range by more than 5 %%, or a pair closer than "
                        "in the data) to FILE (extxyz): the configurations to label next")


def check_md(model, frames, settings, thresholds: dict | None = None, progress=None) -> dict:
    """The whole check as data: MD under `settings` (a `dcf.analysis.md_fidelity.
    CheckSettings`) from frames[settings.start_frame], the NVE drift of an energy model, then
    `dcf.analysis.md_fidelity.assess`. Returns (report dict, the MD run: a
    `dcf.dynamics.sampling.MDSample`, whose `trajectory[k]` for k in
    report["extrapolation"]["frames"] are the frames that left the data's range).
    progress(stage, detail) as it runs. The MD (dynamics) and the measures (analysis) are
    layers apart; this joins them."""
    from dcf.analysis.md_fidelity import THRESHOLDS, assess
    from dcf.dynamics.sampling import nve_drift, run_md_sample

    s = settings
    th = {**THRESHOLDS, **(thresholds or {})}
    say = progress or (lambda stage, detail: None)
    start = frames[s.start_frame]
    model.spec.check_symbols(start.get_chemical_symbols(), "the data")

    def md_progress(step, T):
        if step % max(s.steps // 50, 1) < 5:
            say("md", f"step {step}/{s.steps} T {T:.0f} K")

    md = run_md_sample(model, start, s.temperature, s.steps, s.thermostat, s.timestep,
                       s.damping, rdf_every=s.rdf_every, seed=s.seed,
                       blowup_factor=th["blowup_factor"], progress=md_progress)
    drift = None
    if "energy" in model.implemented_properties and s.nve_steps > 0:
        say("nve", f"{s.nve_steps} NVE steps")
        drift = nve_drift(model, md.atoms if md.blown_up_fs is None else start, s.nve_steps,
                          s.timestep)
    return assess(model, frames, md, s, drift, th, progress), md


def table(report: dict) -> str:
    """The report as text: species temperatures, RDF distances, non-conservation, verdict."""
    target = report["settings"]["temperature"]
    lines = [f"{report['model']}: {report['settings']['thermostat']} "
             f"{report['settings']['damping']:g} fs at {target:.0f} K, "
             f"{report['simulated_fs'] / 1000:.2f} ps, {report['n_atoms']} atoms",
             f"{'species':<8} {'T (K), 2nd half':>18} {'vs target':>10}"]
    for el, t in report["temperatures"].items():
        lines.append(f"{el:<8} {t['mean_K']:>9.0f} +- {t['err_K']:<5.0f} "
                     f"{100 * t['rel_dev']:>+9.1f}%")
    lines.append("RDF L1 MD/data (data halves):  " + "  ".join(
        f"{p} {v:.3f} ({report['rdf_l1_data_halves'][p]:.3f})"
        for p, v in report["rdf_l1"].items()))
    close = [f"{p} {c['md_A']:.2f}/{c['data_A']:.2f}"
             for p, c in report["closest_approach"].items()]
    lines.append("closest MD/data (A):  " + "  ".join(close))
    loop = report["loop_work"]
    lines.append(f"Jacobian asymmetry {report['jacobian_asymmetry']['mean']:.3g}; loop work "
                 f"{loop['mean_abs_meV']:.3g} meV (side {loop['side_A']:g} A, "
                 f"{loop['rms_per_area_eV_A2']:.3g} eV/A^2 per area)")
    ex = report["extrapolation"]
    lines.append(f"out of the data's range: {100 * ex['fraction_frames']:.0f} % of MD frames"
                 + ("" if ex["first_fs"] is None else f", first at {ex['first_fs'] / 1000:.2f} ps")
                 + "; atoms " + "  ".join(f"{el} {100 * v:.1f} %"
                                          for el, v in ex["atoms_fraction"].items()))
    drift = report["nve_drift_meV_atom_ps"]
    lines.append("NVE drift " + ("n/a (no energy)" if drift is None
                                 else f"{drift:+.3f} meV/atom/ps"))
    th = report["thresholds"]
    lines.append(f"verdict: {report['verdict']} [thresholds: |dT|/T <= "
                 f"{th['temperature_rel']:g} or 2 sigma, RDF L1 <= {th['rdf_l1']:g} or 2x data "
                 f"halves, "
                 f"|drift| <= {th['nve_drift']:g} meV/atom/ps, asymmetry warn > "
                 f"{th['jacobian_asymmetry']:g}]")
    return "\n".join(lines)


def run(args) -> int:
    from dcf.analysis.md_fidelity import CheckSettings, data_temperature
    from dcf.cli._frames import read_input
    from dcf.analysis.plots import md_fidelity_plot
    from dcf.files import write_atomic
    from dcf.models import ModelFileError, load_model

    if args.steps < 20 or args.timestep <= 0 or args.damping <= 0:
        raise SystemExit("dcf check-md: need --steps >= 20, --timestep > 0 and --damping > 0")
    try:
        model = load_model(args.model)
    except ModelFileError as err:
        raise SystemExit(f"dcf check-md: {err}") from None
    frames = read_input("check-md", args.data, args.index, args)
    if not frames or not all(f.pbc.all() for f in frames):
        raise SystemExit(f"dcf check-md: {args.data} needs periodic frames (for the RDFs)")
    temperature = args.temperature if args.temperature is not None \
        else data_temperature(frames)
    if temperature is None or temperature <= 0:
        raise SystemExit(f"dcf check-md: {args.data} has no temperature (target_temperature_K "
                         f"or momenta); pass --temperature")
    settings = CheckSettings(
        temperature=temperature, steps=args.steps, timestep=args.timestep,
        thermostat=args.thermostat, damping=args.damping, start_frame=args.start_frame,
        seed=args.seed, rdf_r_max=args.rdf_rmax, jacobian_frames=args.jacobian_frames,
        jacobian_atoms=args.jacobian_atoms, n_loops=args.loops, nve_steps=args.nve_steps)
    thresholds = {"temperature_rel": args.temperature_tolerance, "rdf_l1": args.rdf_tolerance,
                  "nve_drift": args.drift_tolerance}

    def progress(stage, detail):
        print(f"\r{stage}: {detail}".ljust(60), end="", file=sys.stderr, flush=True)

    try:
        report, md = check_md(model, frames, settings, thresholds, progress)
    except ValueError as err:
        raise SystemExit(f"dcf check-md: {args.data}: {err}") from None
    print(file=sys.stderr)
    report["data"] = str(args.data)
    report_path = Path(args.report) if args.report else \
        Path(Path(args.model).stem + "-check-md.json")
    plot_path = Path(args.plot) if args.plot else report_path.with_suffix(".png")
    text = json.dumps(report, indent=1, default=float)
    write_atomic(report_path, lambda tmp: Path(tmp).write_text(text))
    md_fidelity_plot(report, plot_path)
    print(table(report))
    print(f"wrote {report_path} and {plot_path}")
    picked = [md.trajectory[k] for k in report["extrapolation"]["frames"]] \
        if args.extrapolating else []
    if picked:
        from ase.io import write
        write_atomic(args.extrapolating, lambda tmp: write(tmp, picked, format="extxyz"))
        print(f"wrote {len(picked)} frame(s) that leave the data's range to "
              f"{args.extrapolating}: label them (DFT) and add them to the training data")
    return 0 if report["ok"] else 1
