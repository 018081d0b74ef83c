"""Files written whole or not at all: a crash never leaves a half-written result behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


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
