"""Files written whole or not at all: a crash never leaves a half-written result behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from rlprune.errors import RLPruneError


def _default_mode() -> int:
    """The mode a plain ``open`` would give a new file (mkstemp makes files private)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(staging_path)``, then move the staged file onto ``path`` in one step."""
    path = Path(path)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    try:
        write(staging)
        os.chmod(staging, _default_mode())
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda staging: Path(staging).write_text(text))


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file's content; a missing, unreadable or non-UTF-8 file is one clear error."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RLPruneError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise RLPruneError(f"{what} {path} is a folder; give a file") from None
    except PermissionError:
        raise RLPruneError(f"{what} {path} cannot be read (permission denied)") from None
    except UnicodeDecodeError as error:
        raise RLPruneError(
            f"{what} {path} is not UTF-8 text (byte {error.start} is invalid); save it as UTF-8"
        ) from None
