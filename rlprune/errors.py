"""User-facing errors: each message says what is wrong and what to do about it."""

from __future__ import annotations

import errno


class RLPruneError(Exception):
    """Base class for errors caused by user input or the environment, not by a bug.

    The CLI prints these as one readable line and exits non-zero, without a traceback.
    """


class ModelNotFoundError(RLPruneError):
    """The requested model (alias, folder or file) is not available on this machine."""


class UnsupportedModelError(RLPruneError):
    """The model's architecture cannot be run by the reducer."""


class InvalidPromptError(RLPruneError):
    """The prompt is empty, too long for the model, or otherwise unusable."""


class InvalidActionError(RLPruneError):
    """A reduction action or schedule is malformed (unknown op or scorer, ratio out of range)."""


class InvalidArgumentError(RLPruneError, ValueError):
    """An argument given from Python has the wrong type or lies outside its range (a ``ValueError``
    too, so code catching that keeps working)."""


class PolicyError(RLPruneError):
    """A policy checkpoint is missing, corrupt, from another version, or for another model."""


def describe_os_error(error: OSError) -> str:
    """One line for a fault of the machine rather than of rlprune: what failed and what to do."""
    where = f" {error.filename}" if error.filename else ""
    if error.errno == errno.ENOSPC:
        return f"the disk is full (writing{where}); free some space and run again: finished work is kept"
    if error.errno == errno.EROFS:
        return f"cannot write{where}: the file system is read-only; choose a writable --out (or RLPRUNE_HOME)"
    if isinstance(error, PermissionError):
        return f"permission denied:{where}; choose a folder you can write to (--out, or RLPRUNE_HOME for caches)"
    if isinstance(error, (NotADirectoryError, FileExistsError)):
        return f"{where.strip() or 'a path'} is in the way: a file stands where a folder is needed; choose another path"
    if isinstance(error, IsADirectoryError):
        return f"{where.strip() or 'a path'} is a folder where a file is needed; choose another path"
    return f"{error.strerror or error}{':' + where if where else ''}"
