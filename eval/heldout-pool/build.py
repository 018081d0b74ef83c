"""Build ``heldout-pool.jsonl``: 300 held-out items of every kind a span policy meets, in one suite,
and ``heldout-pool-2.jsonl``: 303 more of the same kinds, none of them in the first.

The pool is fixed before any RL stage trains (its items are written here once and committed), and
nothing in it comes from a training split: generated items are the test split (held out by
template, entity names and essay), the essay and everyday questions are hand-written apart from
the generators. Every line records its ``suite`` for ``--group-by suite``.

    python eval/heldout-pool/build.py      # writes both pools into eval/heldout-pool/

Parts (items): grounded-qa 80 (short grounded, counterfactual, key-value and two-hop questions),
mixed-hard 50 (paraphrased, look-alike, two-hop and needle questions in essays), everyday-questions
56 and essay-questions 39 (hand-written), the five needle grids (niah, niah-multikey,
niah-multivalue, niah-multiquery, variable-tracking) at 1k/2k/4k tokens x depths 0, 0.5, 1 (45),
and cloze questions over test essays at 1k tokens (30).

The second pool replicates the first on fresh items, so a gain of a few points can be told from
noise over both (603 items): grounded-qa 80 and mixed-hard 70 (the test splits' next items),
everyday-questions-2 78 (a second hand-written set, eval/everyday-questions-2), the five needle
grids at 1k/2k tokens x depths 0.25, 0.75 (20) and cloze questions over test essays at 1k tokens
(55, none asking a sentence the first pool asks), both drawn with another seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlprune.data.long import NEEDLE_KINDS, LongSuite
from rlprune.data.suites import SUITES
from rlprune.data.tasks import Task, load_jsonl

HERE = Path(__file__).parent
EVAL = HERE.parent


def _line(task: Task, suite: str) -> dict:
    meta = {k: v for k, v in task.meta.items() if k not in ("kind", "suite")}
    return {
        "kind": task.kind,
        "context": task.context,
        "question": task.question,
        "answer": task.answer,
        "answers": list(task.answers) or [task.answer],
        **meta,
        "suite": suite,
    }


def pool() -> list[dict]:
    """The pool's lines, in a fixed order."""
    lines = [_line(t, "grounded-qa") for t in SUITES["grounded-qa"].tasks(80)]
    lines += [_line(t, "mixed-hard") for t in SUITES["mixed-hard"].tasks(50)]
    for name in ("everyday-questions", "essay-questions"):
        lines += [_line(t, name) for t in load_jsonl(EVAL / name / f"{name}.jsonl")]
    for kind in NEEDLE_KINDS:
        grid = LongSuite(kind, lengths=(1024, 2048, 4096), depths=(0.0, 0.5, 1.0), per_cell=1, split="test")
        lines += [_line(t, kind) for t in grid.tasks()]
    cloze = LongSuite("cloze", lengths=(1024,), per_cell=6, split="test")
    lines += [_line(t, "cloze") for t in cloze.tasks()]
    return lines


def second_pool(first: list[dict]) -> list[dict]:
    """The second pool's lines, in a fixed order: none shares its context and question with ``first``."""
    lines = [_line(t, "grounded-qa") for t in SUITES["grounded-qa"].tasks(160)[80:]]
    lines += [_line(t, "mixed-hard") for t in SUITES["mixed-hard"].tasks(120)[50:]]
    name = "everyday-questions-2"
    lines += [_line(t, name) for t in load_jsonl(EVAL / name / f"{name}.jsonl")]
    for kind in NEEDLE_KINDS:
        grid = LongSuite(kind, lengths=(1024, 2048), depths=(0.25, 0.75), per_cell=1, split="test", seed=1)
        lines += [_line(t, kind) for t in grid.tasks()]
    asked = {line["question"] for line in first if line["suite"] == "cloze"}  # a sentence asked once
    cloze = LongSuite("cloze", lengths=(1024,), per_cell=12, split="test", seed=1)
    lines += [_line(t, "cloze") for t in cloze.tasks() if t.question not in asked][:55]
    seen = {(line["context"], line["question"]) for line in first}
    repeated = [line["question"] for line in lines if (line["context"], line["question"]) in seen]
    if repeated:
        raise SystemExit(f"the second pool repeats {len(repeated)} items of the first, e.g. {repeated[0]!r}")
    return lines


def _write(lines: list[dict], name: str) -> None:
    out = HERE / name
    out.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    print(f"{len(lines)} items -> {out}")


def main() -> None:
    first = pool()
    _write(first, "heldout-pool.jsonl")
    _write(second_pool(first), "heldout-pool-2.jsonl")


if __name__ == "__main__":
    main()
