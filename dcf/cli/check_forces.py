"""`dcf check-forces`: a model's analytic forces against central finite differences of its
energy, F = -dE/dr, on given structures. Exits with status 1 when the largest deviation exceeds
--tolerance (eV/A)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dcf.cli._frames import add_format_arguments, read_input

HELP = "analytic vs finite-difference forces of an energy model (B-P)"


def add_arguments(p) -> None:
    p.add_argument("model", help="model file (a B-P model: finite differences need an energy)")
    p.add_argument("structures", nargs="+",
                   help="files ase.io reads, DeePMD systems (folders) or n2p2 input.data")
    add_format_arguments(p)
    p.add_argument("--index", default=":", help="frames to check, ase syntax (default ':')")
    p.add_argument("--delta", type=float, default=1e-4,
                   help="finite-difference step in A (default 1e-4)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest allowed |F_analytic - F_fd| component in eV/A (default 1e-4)")
    p.add_argument("--max-atoms", type=int, default=None, metavar="N",
                   help="check N randomly chosen atoms per structure (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the atom choice")


def check_structure(model, atoms, delta: float, indices) -> dict:
    """Deviation of analytic from finite-difference forces on `indices` (eV/A)."""
    from dcf.models.bp import finite_difference_forces

    analytic = model.forces(atoms)[indices]
    numeric = finite_difference_forces(model.energy, atoms, delta, indices)
    dev = np.abs(analytic - numeric)
    return {"n_atoms": len(indices), "max_abs": float(dev.max()), "mean_abs": float(dev.mean()),
            "max_force": float(np.abs(analytic).max())}


def run(args) -> int:
    from dcf.models import ModelFileError, load_model

    if args.delta <= 0 or args.tolerance < 0:
        raise SystemExit("dcf check-forces: --delta must be > 0 and --tolerance >= 0")
    try:
        model = load_model(args.model)
    except ModelFileError as err:
        raise SystemExit(f"dcf check-forces: {err}") from None
    if not hasattr(model, "energy"):
        raise SystemExit(f"dcf check-forces: {args.model} is a {model.kind} model without an "
                         f"energy; finite-difference forces need an energy model (B-P)")
    rng = np.random.default_rng(args.seed)
    worst = 0.0
    print(f"{'structure':<32} {'atoms':>6} {'max |dF|':>10} {'mean |dF|':>10} {'max |F|':>9}")
    for path in args.structures:
        frames = read_input("check-forces", path, args.index, args)
        for k, atoms in enumerate(frames):
            n = len(atoms)
            idx = np.arange(n) if args.max_atoms is None or args.max_atoms >= n \
                else np.sort(rng.choice(n, args.max_atoms, replace=False))
            try:
                r = check_structure(model, atoms, args.delta, idx)
            except ValueError as err:
                raise SystemExit(f"dcf check-forces: {path} frame {k}: {err}") from None
            worst = max(worst, r["max_abs"])
            print(f"{f'{Path(path).name}[{k}]':<32} {r['n_atoms']:>6} {r['max_abs']:>10.2e} "
                  f"{r['mean_abs']:>10.2e} {r['max_force']:>9.3f}")
    ok = worst <= args.tolerance
    print(f"largest deviation {worst:.2e} eV/A: {'OK' if ok else 'ABOVE'} tolerance "
          f"{args.tolerance:g} eV/A")
    return 0 if ok else 1
