"""`dcf featurize`: reference frames -> per-element feature store (HDF5).

Runs serially or under MPI (``mpiexec -n K dcf featurize ...``: each rank reads only its share
of the frames, featurizes its blocks of frames or of central atoms and compresses its share of
the store's chunks; rank 0 writes the one file, identical to a serial run's). An interrupted run resumes from its
checkpoint folder (``.<out>.partial.d``) when started again with the same arguments.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from dcf.cli._frames import add_format_arguments, format_options

HELP = "per-element feature store (HDF5) from trajectories with forces; MPI-parallel"


def add_arguments(p) -> None:
    p.add_argument("structures", nargs="+",
                   help="files with forces that ase.io reads (extxyz, OUTCAR, vasprun.xml, .db, "
                        ".traj, ...), DeePMD systems (folders) or n2p2 input.data")
    add_format_arguments(p)
    p.add_argument("--spec", default="mailoa2019-S4", help="preset name or spec JSON file")
    p.add_argument("--out", required=True, help="output feature store (.h5)")
    p.add_argument("--index", default=":",
                   help="frames to read from each file, ase syntax: 0, -1, 10:200, ::2 "
                        "(default ':')")
    p.add_argument("--every", type=int, default=1, help="keep every n-th selected frame")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="fraction of frames held out for testing (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the sampling")
    p.add_argument("--snapshots", type=int, default=None, metavar="N",
                   help="snapshots per element drawn at random (default: all atoms)")
    p.add_argument("--chosen", default=None, metavar="FILE",
                   help="chosen snapshots (rare events), one 'frame atom [weight]' per line; "
                        "frame counts the selected frames of all inputs from 0")
    p.add_argument("--chosen-weight", type=float, default=10.0,
                   help="loss weight of chosen snapshots without their own (default 10)")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads per rank (default 1)")
    p.add_argument("--block", type=int, default=None, metavar="FRAMES",
                   help="frames per checkpoint block (default: automatic)")
    p.add_argument("--block-atoms", type=int, default=None, metavar="ATOMS",
                   help="cut frames of more atoms into blocks of this many central atoms, so "
                        "that a few large frames use every MPI rank (default: automatic, "
                        "1/64 of all atoms, at least 256)")
    p.add_argument("--timings", action="store_true",
                   help="print the seconds of each phase (read, plan, featurize, compress, "
                        "gather, write)")
    p.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip",
                   help="of the store: gzip (portable, default), lzf (faster, h5py only), none")
    p.add_argument("--fresh", action="store_true",
                   help="ignore the checkpoints of an interrupted run instead of resuming")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _fail(message: str):
    raise SystemExit(f"dcf featurize: {message}")


def _provenance(args, frames, comm) -> dict:
    from datetime import datetime, timezone

    from dcf import __version__

    return {
        "sources": frames.sources,
        "command": " ".join(["dcf", *sys.argv[1:]]) if sys.argv else "dcf featurize",
        "dcf_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ranks": comm.size,
        "options": {"index": args.index, "every": args.every, "test_fraction": args.test_fraction,
                    "seed": args.seed, "snapshots": args.snapshots, "chosen": args.chosen,
                    "chosen_weight": args.chosen_weight, "compression": args.compression,
                    **format_options(args)},
    }


def run(args) -> int:
    from dcf.parallel import MPIUnavailable, world

    try:
        comm = world()
    except MPIUnavailable as err:
        _fail(str(err))
    if comm.rank == 0:
        return _run(args, comm)
    try:                       # other ranks: the same work, silent; rank 0 reports errors
        return _run(args, comm)
    except SystemExit as err:
        raise SystemExit(1 if err.code else 0) from None


def _run(args, comm) -> int:
    from dcf.cli._paths import refuse_overwriting_inputs
    from dcf.data.frames import FrameError, check_elements, read_frames
    from dcf.data.pipeline import checkpoint_dir, featurize_to_store
    from dcf.data.sampling import plan_snapshots, read_chosen
    from dcf.descriptors.spec import FingerprintSpec
    from dcf.errors import DCFError

    out = Path(args.out)
    try:
        refuse_overwriting_inputs([*(("input", s) for s in args.structures),
                                   ("--spec", args.spec), ("--chosen", args.chosen)],
                                  [("--out", out)])
    except DCFError as err:
        _fail(str(err))
    if out.suffix == ".npz":
        _fail(f"--out {out}: the feature store is HDF5; use a .h5 name")
    if out.is_dir():
        _fail(f"--out {out} is a directory")
    if args.threads is not None and args.threads < 1:
        _fail(f"--threads must be >= 1, got {args.threads}")
    for flag, value in (("--block", args.block), ("--block-atoms", args.block_atoms)):
        if value is not None and value < 1:
            _fail(f"{flag} must be >= 1, got {value}")
    t0 = time.perf_counter()
    try:
        spec = FingerprintSpec.resolve(args.spec)
        frames = read_frames(args.structures, args.index, args.every,
                             **format_options(args), comm=comm)
        t1 = time.perf_counter()
        check_elements(frames, spec)
        chosen = read_chosen(args.chosen) if args.chosen else None
        plan = plan_snapshots(frames.numbers, frames.first_atom, spec.elements,
                              args.test_fraction, args.seed, args.snapshots, chosen,
                              args.chosen_weight)
    except (FrameError, ValueError, OSError) as err:
        _fail(str(err))
    t2 = time.perf_counter()

    bar = None
    if comm.rank == 0 and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=int(plan.needed().sum()), unit="frame", desc="featurize",
                   dynamic_ncols=True, file=sys.stderr)
    try:
        summary = featurize_to_store(
            out, spec, frames, plan, _provenance(args, frames, comm), comm=comm,
            num_threads=args.threads, block_frames=args.block, resume=not args.fresh,
            on_progress=(lambda nf, na: bar.update(nf)) if bar else None,
            compression=args.compression, block_atoms=args.block_atoms)
    except ValueError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
            bar = None
        if comm.rank == 0:
            print(f"\ndcf featurize: interrupted; the finished blocks are kept in "
                  f"{checkpoint_dir(out)}: run the same command again to resume",
                  file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    if comm.rank == 0:
        _print_summary(out, spec, frames, plan, summary)
        if args.timings:
            phases = {"read": t1 - t0, "plan": t2 - t1, **summary.phases}
            print("phases (rank 0): " + ", ".join(f"{k} {v:.3f} s" for k, v in phases.items()))
    return 0


def _print_summary(out, spec, frames, plan, s) -> None:
    rate = max(s.seconds, 1e-12)
    print(f"spec {spec.name or 'custom'} ({spec.fingerprint[:12]}), max Rc {spec.max_cutoff:g} A")
    print(f"{len(frames)} frame(s), {frames.n_atoms} atoms from "
          f"{len(frames.sources)} file(s); {int(plan.test.sum())} test frame(s)")
    resumed = f", {s.resumed_blocks} of {s.n_blocks} blocks resumed" if s.resumed_blocks else ""
    print(f"featurized {s.frames_featurized} frame(s), {s.atoms_featurized} atoms in "
          f"{s.seconds:.3f} s ({s.frames_featurized / rate:.1f} frames/s, "
          f"{s.atoms_featurized / rate:.0f} atoms/s) on {s.ranks} rank(s){resumed}; "
          f"store written in {s.assemble_seconds:.3f} s")
    print(f"{'element':>7} {'train':>8} {'test':>8} {'nG':>5} {'nA':>4} {'chosen':>7}")
    for el in spec.elements:
        r = plan.rows[el]
        n, n_train = len(r["frame"]), plan.n_train[el]
        nG, nA = spec.n_features(el)
        print(f"{el:>7} {n_train:>8} {n - n_train:>8} {nG:>5} {nA:>4} "
              f"{int((r['weight'] != 1).sum()):>7}")
    n_snap = sum(len(r["frame"]) for r in plan.rows.values())
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1e6:.2f} MB, {size / max(n_snap, 1):.0f} bytes per snapshot)")
