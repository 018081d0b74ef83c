"""Suites by name: the built-in ones (:mod:`rlprune.data.suites`), a preset's split, JSONL suites of your own."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rlprune.data.long import LongSuite
from rlprune.data.suites import SUITES
from rlprune.data.tasks import SPLITS, Task, load_jsonl
from rlprune.errors import RLPruneError

PRESET_SUITE = "env:"
"""Prefix of a suite drawn from an environment preset's split: ``env:demo`` (its test split),
``env:grounded-qa:validation``, ``env:path/to/preset.toml:test``."""


def preset_tasks(spec: str) -> tuple[str, list[Task]]:
    """``(name, tasks)`` of ``env:PRESET[:SPLIT]``: the split (``test`` unless named) that the
    preset's own training never sees, exactly as the environment draws it."""
    from rlprune.envs import EnvConfig  # only this kind of suite reads an environment preset

    body = spec.removeprefix(PRESET_SUITE)
    preset, _, split = body.rpartition(":")
    if split not in SPLITS:
        preset, split = body, "test"
    if not preset:
        raise RLPruneError(f"suite {spec!r} names no preset; give env:PRESET or env:PRESET:SPLIT, e.g. env:demo")
    return f"{Path(preset).stem}-{split}", EnvConfig.load(preset).tasks.tasks(split)


def load_suite(
    spec: str | Path,
    limit: int | None = None,
    per_cell: int | None = None,
    depths: tuple[float, ...] | None = None,
) -> tuple[str, list[Task]]:
    """``(name, tasks)`` for a built-in suite name or a JSONL file, cut to the first ``limit`` tasks.

    ``per_cell`` and ``depths`` reshape a long-context suite's grid: items per depth x length cell,
    and the depths (0 = start of the context, 1 = its end) facts are hidden at.
    """
    if limit is not None and limit < 1:
        raise RLPruneError(f"--limit must be at least 1, got {limit}")
    if per_cell is not None and per_cell < 1:
        raise RLPruneError(f"--per-cell must be at least 1, got {per_cell}")
    if depths is not None and (not depths or not all(0.0 <= d <= 1.0 for d in depths)):
        raise RLPruneError(f"--depths must be numbers from 0 to 1 such as 0,0.5,1, got {depths}")
    text = str(spec)
    suite = SUITES.get(text)
    if (per_cell is not None or depths is not None) and not isinstance(suite, LongSuite):
        long = ", ".join(name for name, s in SUITES.items() if isinstance(s, LongSuite))
        raise RLPruneError(f"--per-cell and --depths apply to the depth x length suites ({long}), not to {text!r}")
    if isinstance(suite, LongSuite):
        suite = replace(suite, per_cell=per_cell or suite.per_cell, depths=tuple(depths or suite.depths))
    if suite is not None:  # only the first ``limit`` tasks are built: a large grid is never held whole
        name, tasks = text, suite.tasks(limit)
    elif text.startswith(PRESET_SUITE):
        name, tasks = preset_tasks(text)
    elif text.endswith(".jsonl") or Path(text).is_file():
        name, tasks = Path(text).stem, load_jsonl(text)
    else:
        raise RLPruneError(
            f"unknown suite {text!r}; use one of {', '.join(SUITES)}, env:PRESET[:SPLIT] or a .jsonl file"
        )
    return name, tasks[:limit] if limit else tasks
