"""The model options the run front ends share (`dcf md`, `dcf ipi`, `dcf lammps`)."""
from __future__ import annotations

#: dcf.models.mlp.PRECISIONS, named here so that building the parser imports no numpy
PRECISIONS = ("float64", "float32")


def add_precision_argument(p) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="float64",
                   help="arithmetic of a DCF model's networks: float64 (default) or float32, "
                        "about 2x faster networks, forces within ~1e-6 (relative) of float64, "
                        "measured in docs/benchmarks.md; B-P models run in float64 only")


def set_precision(model, precision: str, prog: str) -> None:
    """model.set_precision, its refusal (a B-P model and float32) as the command's error."""
    try:
        model.set_precision(precision)
    except ValueError as err:
        raise SystemExit(f"dcf {prog}: --precision: {err}") from None
