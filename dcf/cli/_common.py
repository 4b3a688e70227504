"""Helpers shared by the command modules."""
from __future__ import annotations

from pathlib import Path


def write_atomic(path, write) -> Path:
    """Call write(tmp) on a temporary name beside `path`, then rename it into place.

    Nothing half-written is left behind: on any error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
