"""What else must a span head's cut keep? Force one more part of the prompt through and compare.

"Evidence kept, answer lost": the reduced model keeps the sentence with the answer and still
repeats the question or names another value. This script takes a span policy and, at one budget,
also keeps one part of the prompt that the head may drop (the same FLOPs: other tokens go instead),
then prints accuracy, evidence kept and echoed questions for each part side by side, with the
full model and the policy alone, on the same items:

- ``header``: the chat template's system turn and the user-turn header before the context;
- ``sinks``: the first 4 tokens (attention sinks);
- ``recent``: the 32 context tokens just before the question;
- ``format``: line breaks and the template's special tokens;
- ``lead-in``: the 24 tokens before the gold answer's first occurrence (an oracle: it reads the label).

    python benchmarks/keep_also.py --policy runs/span-sup/policy --suite eval/heldout-pool/heldout-pool.jsonl \
        --only-suite essay-questions,everyday-questions,cloze --budget 0.3
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from rlprune import Reducer, load_model, load_policy
from rlprune.data.evidence import locate_evidence
from rlprune.data.tasks import Task, answer_correct, load_jsonl
from rlprune.engine.features import Features
from rlprune.engine.policy import Rescored
from rlprune.metrics import echoes_question, evidence_kept
from rlprune.progress import Progress
from rlprune.prompts import Prompt, build_prompt

PARTS = ("header", "sinks", "recent", "format", "lead-in")


def part_mask(part: str, prompt: Prompt, task: Task, tokenizer) -> torch.Tensor:
    """Which prompt tokens (by original position) ``part`` names."""
    n = prompt.input_ids.shape[1]
    mask = torch.zeros(n, dtype=torch.bool)
    starts = [start for start, _ in prompt.offsets]
    context_start = prompt.text.find(task.context.strip()[:40])
    question = n - prompt.protect_last
    if part == "header":
        mask[: sum(1 for s in starts if s < context_start)] = True
    elif part == "sinks":
        mask[:4] = True
    elif part == "recent":
        mask[max(question - 32, 0) : question] = True
    elif part == "format":
        ids = prompt.input_ids[0].tolist()
        special = set(tokenizer.all_special_ids)
        mask[:] = torch.tensor([i in special or "\n" in tokenizer.decode([i]) for i in ids])
    elif part == "lead-in":
        evidence = locate_evidence(prompt, task)
        if evidence is not None:
            first = int(evidence.occurrences.any(0).nonzero()[0])
            mask[max(first - 24, 0) : first] = True
    return mask


@dataclasses.dataclass
class KeepAlso(Rescored):
    """``policy``, with the tokens of ``keep`` (by original position) ranked above every other."""

    keep: torch.Tensor

    def rescore(self, features: Features, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone().float()
        forced = self.keep[features.state.positions[: scores.numel()].cpu()].to(scores.device)
        scores[forced] += scores.max() - scores.min() + 1  # above every other, their own order kept
        return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--suite", required=True, help="a JSONL suite")
    parser.add_argument("--only-suite", default="", help="comma-separated values of the items' suite field")
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    model, tokenizer = load_model("smollm2-135m")
    policy = load_policy(args.policy, model)
    reducer = Reducer(model)
    wanted = set(filter(None, args.only_suite.split(",")))
    tasks = [t for t in load_jsonl(args.suite) if not wanted or t.meta.get("suite") in wanted][: args.limit]
    methods: dict[str, Callable[[Prompt, Task], object] | None] = {"full model": None, "policy": lambda p, t: policy}
    for part in PARTS:
        methods[f"+ {part}"] = lambda p, t, part=part: KeepAlso(policy, part_mask(part, p, t, tokenizer))
    tallies = {name: {"correct": 0, "echo": 0, "evidence": 0, "evidence_items": 0} for name in methods}
    with Progress() as progress:
        bar = progress.add_task("items", total=len(tasks))
        for task in tasks:
            prompt = build_prompt(tokenizer, task.question, task.context)
            evidence = locate_evidence(prompt, task)
            for name, make in methods.items():
                chosen = None if make is None else make(prompt, task)
                result = reducer.generate(
                    prompt.input_ids,
                    policy=chosen,
                    budget=None if chosen is None else args.budget,
                    max_new_tokens=args.max_new_tokens,
                    protect_last=prompt.protect_last,
                )
                text = tokenizer.decode(result.tokens[0], skip_special_tokens=True).strip()
                tally = tallies[name]
                tally["correct"] += bool(answer_correct(text, task))
                tally["echo"] += echoes_question(text, task.question)
                kept, _ = evidence_kept(evidence, result.prefill.state.reaches_top())
                if kept is not None:
                    tally["evidence_items"] += 1
                    tally["evidence"] += bool(kept)
            progress.advance(bar)
    table = Table(title=f"{args.policy} at FLOPs {args.budget:g} on {len(tasks)} items")
    for column in ("method", "accuracy", "evidence kept", "echoes the question"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, tally in tallies.items():
        share = tally["evidence"] / max(tally["evidence_items"], 1)
        table.add_row(name, f"{tally['correct'] / len(tasks):.1%}", f"{share:.1%}", f"{tally['echo'] / len(tasks):.1%}")
    Console().print(table)


if __name__ == "__main__":
    main()
