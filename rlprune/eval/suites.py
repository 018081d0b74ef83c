"""The built-in evaluation suites (test splits, generated from seeds) and JSONL suites of your own."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from rlprune.data.long import LongSuite
from rlprune.data.tasks import SPLITS, Task, generate_suite, load_jsonl
from rlprune.errors import RLPruneError


@dataclass(frozen=True)
class SuiteSpec:
    """A mix of task kinds at a range of passage lengths, drawn from the held-out test split."""

    description: str
    mix: dict[str, float] = field(default_factory=dict)
    tokens: tuple[int, int] = (150, 600)
    size: int = 128
    seed: int = 0

    def tasks(self, limit: int | None = None) -> list[Task]:
        """The first ``limit`` tasks (all without one); a suite's first tasks do not depend on its size."""
        size = self.size if limit is None else min(limit, self.size)
        return generate_suite(self.mix, "test", size, seed=self.seed, tokens=self.tokens)


SUITES: dict[str, SuiteSpec | LongSuite] = {
    # the test split of the grounded-qa environment preset, which the shipped policy never saw
    "grounded-qa": SuiteSpec(
        "questions about a passage (grounded 70%, counterfactual, key-value, two-hop 10% each)",
        {"grounded": 0.7, "counterfactual": 0.1, "kv": 0.1, "two_hop": 0.1},
        size=160,
    ),
    # the test split of the mixed-hard preset: its own templates, names and essays
    "mixed-hard": SuiteSpec(
        "paraphrased, look-alike, two-hop and needle questions in real essays (held out by template, name, essay)",
        {"paraphrase": 0.3, "lookalike": 0.3, "bridge": 0.15, "niah": 0.25},
        tokens=(250, 1100),
        size=160,
    ),
    "counterfactual": SuiteSpec(
        "the passage contradicts common knowledge; answering from memory is a hallucination",
        {"counterfactual": 1.0},
    ),
    "kv-retrieval": SuiteSpec("find one access code in a list of key-value pairs", {"kv": 1.0}),
    "long-context": SuiteSpec(
        "one fact hidden in a 1.5k-4k token passage", {"grounded": 1.0}, tokens=(1650, 4300), size=64
    ),
    "arithmetic": SuiteSpec("one-step word problems with a number for an answer (no context)", {"arithmetic": 1.0}),
    "short-answers": SuiteSpec(
        "word problems and questions about short passages: a word or a number answers them",
        {"arithmetic": 0.5, "grounded": 0.5},
        tokens=(60, 150),
    ),
    "instructions": SuiteSpec(
        "open instructions without gold answers, judged against the full model", {"instruction": 1.0}
    ),
    # real-text long-context grids (test essays): 3 lengths x 5 depths x 2 items, shortest first
    "niah": LongSuite("niah", "one magic number hidden in 1k-4k tokens of essays, at depths 0 to 1"),
    "niah-multikey": LongSuite("niah-multikey", "four magic numbers under different keys; one is asked"),
    "niah-multivalue": LongSuite("niah-multivalue", "three magic numbers under one key; all are asked"),
    "variable-tracking": LongSuite(
        "variable-tracking", "a chain of four variable assignments in the essays; all names are asked"
    ),
}


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
