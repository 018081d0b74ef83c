"""Build ``heldout-pool.jsonl``: 300 held-out items of every kind a span policy meets, in one suite.

The pool is fixed before any RL stage trains (its items are written here once and committed), and
nothing in it comes from a training split: generated items are the test split (held out by
template, entity names and essay), the essay and everyday questions are hand-written apart from
the generators. Every line records its ``suite`` for ``--group-by suite``.

    python eval/heldout-pool/build.py      # writes eval/heldout-pool/heldout-pool.jsonl

Parts (items): grounded-qa 80 (short grounded, counterfactual, key-value and two-hop questions),
mixed-hard 50 (paraphrased, look-alike, two-hop and needle questions in essays), everyday-questions
56 and essay-questions 39 (hand-written), the five needle grids (niah, niah-multikey,
niah-multivalue, niah-multiquery, variable-tracking) at 1k/2k/4k tokens x depths 0, 0.5, 1 (45),
and cloze questions over test essays at 1k tokens (30).
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


def main() -> None:
    lines = pool()
    out = HERE / "heldout-pool.jsonl"
    out.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    print(f"{len(lines)} items -> {out}")


if __name__ == "__main__":
    main()
