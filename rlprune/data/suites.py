"""The built-in evaluation suites: which generated tasks (or long-context grid) each one draws.

:mod:`rlprune.eval.suites` loads them by name (and JSONL suites of your own); output-side training
reads a built-in suite's train split from here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlprune.data.generators import generate_suite
from rlprune.data.long import LongSuite
from rlprune.data.tasks import Task


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
    "niah-multiquery": LongSuite("niah-multiquery", "four magic numbers under different keys; two are asked"),
    "cloze": LongSuite("cloze", "a sentence of the test essays quoted with a span blanked; the span is asked"),
    "everyday-gen": LongSuite(
        "everyday-gen", "generated notices, letters, logs, timetables, receipts; one entry asked", (256, 512, 1024)
    ),
    "everyday-prose": LongSuite(
        "everyday-prose",
        "generated newsletters, postcards, memos, notes; one sentence asked in other words",
        (96, 128, 192),
    ),
}
