"""Atomic file writes: a file is either absent, as it was, or complete.

Every output of dcf goes through `write_atomic`: the content is written under a temporary
name beside the target (unique to the process, so two runs writing the same path do not
collide) and renamed into place, which is atomic on one file system.
"""
from __future__ import annotations

import os
from pathlib import Path


def partial_path(path) -> Path:
    """The temporary name `write_atomic` writes `path` under: ``.NAME.PID.partialSUFFIX``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.partial{path.suffix}")


def write_atomic(path, write) -> Path:
    """Call ``write(tmp)`` on a temporary name beside `path`, then rename it into place.

    The parent folder is created. On any error the temporary file is removed and `path` is
    left as it was. Returns `path` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
