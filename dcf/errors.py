"""The one base type of the errors a user can cause (a bad file, option or structure).

Every such error of the library derives from `DCFError`; `dcf.cli.main` catches it and prints
its message on one line, without a traceback (``--debug`` or ``DCF_DEBUG=1`` shows it). The
message names the input and says what to do. Library code raises these; it never prints.

An error raised identically on every MPI rank (all ranks agreed on it) sets `collective`, so
that only rank 0 prints it and no rank has to abort the others.
"""
from __future__ import annotations


class DCFError(Exception):
    """A user-caused error: a bad input file, option, structure or environment."""

    collective = False


class CollectiveError(DCFError):
    """An error every MPI rank raises together (the ranks agreed on it); printed once."""

    collective = True


def describe(err: BaseException) -> str:
    """`err` on one line: its own message for a user-caused or an operating-system error (a
    full disk, a missing permission: file name and reason), the exception type as well for
    anything else, which is an internal error."""
    if isinstance(err, DCFError):
        text = str(err)
    elif isinstance(err, MemoryError):
        text = f"out of memory{f' ({err})' if str(err) else ''}"
    elif isinstance(err, OSError):
        names = [n for n in (err.filename, err.filename2) if n is not None]
        text = ": ".join([*map(str, names), err.strerror or str(err)])
    else:
        text = (f"internal error {type(err).__name__}: {err} (rerun with --debug for the "
                f"traceback and report it)")
    return " ".join(text.split())
