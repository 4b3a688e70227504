"""`dcf reactions`: chemical reactions in a trajectory (bond graph + HMM/Viterbi), and the
reacting atomic snapshots as a reaction test set or as chosen snapshots for training."""
from __future__ import annotations

import json
import time
from pathlib import Path

from dcf.cli._frames import add_format_arguments, read_input
from dcf.cli._paths import refuse_overwriting_inputs
from dcf.files import write_atomic

HELP = "find chemical reactions in a trajectory and the reacting atomic snapshots"


def add_arguments(p) -> None:
    p.add_argument("trajectory", help="any file ase.io reads (extxyz, traj, OUTCAR, ...), a "
                   "DeePMD system or n2p2 input.data")
    add_format_arguments(p)
    p.add_argument("--out", required=True, help="output JSON with reactions and snapshots")
    p.add_argument("--index", default=":", help="frames to read, ase syntax (default ':')")
    p.add_argument("--factor", type=float, default=1.4,
                   help="bond if R_ij < factor (r_cov,i + r_cov,j) (default 1.4)")
    p.add_argument("--p-change", type=float, default=1e-5,
                   help="HMM probability of a state change per frame (default 1e-5)")
    p.add_argument("--p-match", type=float, default=0.6,
                   help="HMM probability that the observation equals the state (default 0.6)")
    p.add_argument("--p-init", type=float, default=0.5,
                   help="HMM probability that a molecule is present at the start (default 0.5)")
    p.add_argument("--max-lag", type=int, default=10,
                   help="frames within which molecule changes on shared atoms are one reaction "
                        "(default 10); an atom that leaves a molecule and joins another later, "
                        "through short-lived intermediates, links them at any distance")
    p.add_argument("--window", type=int, default=10,
                   help="frames around each reaction whose reacting atoms are snapshots")
    p.add_argument("--snapshots", metavar="FILE",
                   help="also write the reacting snapshots as 'frame atom' lines, the format "
                        "of `dcf featurize --chosen` (add rare events to training)")


def run(args) -> int:
    from ase.io import iread

    from dcf.analysis import reactions as rx
    from dcf.data.formats import guess_format, read_here

    path = Path(args.trajectory)
    refuse_overwriting_inputs([("trajectory", path)],
                              [("--out", args.out), ("--snapshots", args.snapshots)])
    if not path.exists():
        raise SystemExit(f"dcf reactions: {path} does not exist")
    try:
        hmm = rx.HMM(args.p_change, args.p_match, args.p_init)
    except ValueError as err:
        raise SystemExit(f"dcf reactions: {err}") from None
    for name in ("max_lag", "window"):
        if getattr(args, name) < 0:
            raise SystemExit(f"dcf reactions: --{name.replace('_', '-')} must be >= 0")

    numbers = []

    def frames():
        ours = read_here(args.format) or (args.format is None and guess_format(path))
        source = read_input("reactions", path, args.index, args) if ours else \
            iread(str(path), index=args.index, format=args.format)
        try:
            for atoms in source:
                if not numbers:
                    numbers.append(atoms.numbers.copy())
                yield atoms
        except Exception as err:      # ase raises many kinds for unreadable files
            raise SystemExit(f"dcf reactions: cannot read {path}: {err}") from None

    start = time.perf_counter()
    try:
        presence = rx.molecule_presence(frames(), args.factor)
    except ValueError as err:
        raise SystemExit(f"dcf reactions: {path}: {err}") from None
    t_graph = time.perf_counter()
    events = rx.presence_changes(presence, hmm)
    t_hmm = time.perf_counter()
    dropped = []
    reactions, unbalanced = rx.find_reactions(presence, events, args.max_lag, dropped)
    snapshots = rx.reaction_snapshots(reactions, presence.n_frames, args.window)
    t_end = time.perf_counter()

    z = numbers[0]
    occurrence = rx.rare_event_occurrence(snapshots, z, presence.n_frames)
    report = {
        "format": "dcf-reactions", "version": 1,
        "source": str(path), "index": args.index,
        "n_frames": presence.n_frames, "n_atoms": int(len(z)),
        "parameters": {"factor": args.factor, "p_change": args.p_change,
                       "p_match": args.p_match, "p_init": args.p_init,
                       "max_lag": args.max_lag, "window": args.window},
        "n_molecules_seen": len(presence.molecules),
        "unbalanced_groups": unbalanced,
        "unbalanced": dropped,
        "reactions": [r.to_dict(z) for r in reactions],
        "snapshots": {"frame": snapshots[:, 0].tolist(), "atom": snapshots[:, 1].tolist()},
        "occurrence": occurrence,
        "seconds": {"bond_graph": t_graph - start, "hmm": t_hmm - t_graph,
                    "reactions": t_end - t_hmm},
    }
    out = write_atomic(args.out, lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
    if args.snapshots:
        header = (f"# reacting atomic snapshots of {path} (frame atom), from dcf reactions; "
                  f"window {args.window} frames\n")
        lines = "".join(f"{f} {a}\n" for f, a in snapshots)
        write_atomic(args.snapshots, lambda tmp: tmp.write_text(header + lines))

    print(f"{presence.n_frames} frames, {len(z)} atoms, {len(presence.molecules)} distinct "
          f"molecules seen; bond graph {t_graph - start:.2f} s, HMM {t_hmm - t_graph:.2f} s")
    print(f"{len(reactions)} reaction(s)")
    if unbalanced:
        where = ", ".join(f"frames {d['frames'][0]}-{d['frames'][1]} (atoms "
                          f"{sorted(set(d['reactant_atoms']) | set(d['product_atoms']))})"
                          for d in dropped[:5])
        print(f"note: {unbalanced} change(s) dropped whose reactant and product atoms differ: "
              f"{where}{', ...' if unbalanced > 5 else ''}. Such a change is cut off by the "
              f"start or end of the trajectory, or a molecule lives too briefly for the HMM "
              f"(raise --p-change) or is split by the bond --factor; details under "
              f"'unbalanced' in {args.out}")
    for r in reactions:
        print(f"  frame {r.frame:>7}: {r.equation(z)}   atoms {r.atoms.tolist()}")
    print(f"{'element':>7} {'snapshots':>10} {'occurrence':>11}")
    for el, o in occurrence.items():
        print(f"{el:>7} {o['snapshots']:>10} {100 * o['occurrence']:>10.4f}%")
    print(f"wrote {out}")
    return 0
