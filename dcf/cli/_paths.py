"""The check every command makes before it starts work: no output may be one of its inputs.

Writing an output over an input would destroy the input (atomic writes only make the loss
clean), so a command refuses it up front: an output equal to an input path, or the same file
under another name (a link, ``./a`` and ``a``), or two outputs that are one file. Under MPI
every rank makes the same check, so the error is collective: printed once, by rank 0.
"""
from __future__ import annotations

import os
from pathlib import Path

from dcf.errors import CollectiveError


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        try:
            return os.path.samefile(a, b)
        except OSError:
            pass
    return a.resolve() == b.resolve()


def refuse_overwriting_inputs(inputs, outputs) -> None:
    """Raise a DCFError (CollectiveError) if an output path is an input's file or another
    output's.

    inputs, outputs: sequences of (label, path) pairs, label as the user wrote it ("--out",
    "structure"); a path of None is skipped.
    """
    ins = [(label, Path(p)) for label, p in inputs if p is not None]
    outs = [(label, Path(p)) for label, p in outputs if p is not None]
    for k, (out_label, out) in enumerate(outs):
        for in_label, path in ins:
            if _same(out, path):
                raise CollectiveError(f"{out_label} {out} is the same file as {in_label} {path}; "
                               f"writing it would destroy the input: choose another "
                               f"{out_label}")
        for other_label, other in outs[k + 1:]:
            if _same(out, other):
                raise CollectiveError(f"{out_label} {out} and {other_label} {other} are the same "
                               f"file; give them different names")
