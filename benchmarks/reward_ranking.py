"""Does the RL stage's reward pick the keep-set that answers? Sample keep-sets as the stage does and see.

The RL stage of a span head (:mod:`rlprune.train.kinds.span_ppo`) plays each prompt several times,
each play removing a Plackett-Luce sample of the head's units, and moves the head toward the plays
whose reward beats their group's mean. That can raise accuracy only if (a) some sampled keep-sets
answer where the head's own cut does not, and (b) within a group, the reward is higher for the plays
that answer. This script measures both on a JSONL suite, at each budget, with the stage's sampler:

- accuracy of the head's own cut, the mean over ``--samples`` sampled keep-sets, and the best of them
  (an item counts if any sample answers: the ceiling of choosing among the head's samples);
- for every group with both right and wrong answers, how often a right play's reward beats a wrong
  one's (0.5: the reward says nothing about answers; 1: it always ranks them right), for the
  likelihood of the full model's answer (the stage's label-free reward), the likelihood of that
  answer corrected to the gold one where it is wrong (``target = "corrected"``) and, for comparison,
  the likelihood of the reduced model's own greedy answer (how sure it is of what it says);
- how often the play each reward ranks first answers (what a stage that learned that reward perfectly
  could at best pick among these samples).

    python benchmarks/reward_ranking.py --policy smollm2-135m-span \\
        --suite eval/heldout-pool/heldout-pool.jsonl --per-suite 24 --budgets 0.3,0.5 --samples 4 \\
        --only-suite grounded-qa,mixed-hard,everyday-questions,essay-questions,cloze
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import zlib
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from rlprune import Reducer, load_model, load_policy
from rlprune.data.tasks import Task, answer_correct, load_jsonl
from rlprune.engine.features import Features
from rlprune.engine.policy import Rescored
from rlprune.envs.reference import corrected_answer
from rlprune.metrics import answer_likelihood, log_probs
from rlprune.policies.span_head import SpanHeadPolicy
from rlprune.progress import Progress
from rlprune.prompts import Prompt, build_prompt
from rlprune.train.kinds.span_ppo import CutScores

FLOOR = 5.0
"""Each answer token's log-probability floor in the likelihoods, as the stage's ``kl_cap``."""
REWARDS = ("full answer", "corrected answer", "own answer")


@dataclasses.dataclass
class Sampled(Rescored):
    """``policy`` cutting as the RL stage samples it: where the head cuts, a Plackett-Luce sample of
    its units (seeded, so the same prompt draws the same keep-set in every run) replaces its order."""

    seed: int

    def rescore(self, features: Features, scores: torch.Tensor) -> torch.Tensor:
        cut = CutScores.read(self.policy.head_at(features.layer), features)
        return cut.draw(torch.Generator().manual_seed(self.seed))[1].to(scores.device)


def likelihood(reducer: Reducer, prompt: Prompt, answer: torch.Tensor, policy, budget: float) -> float:
    """Mean floored log-probability of ``answer`` ids teacher-forced after ``prompt`` under ``policy``."""
    ids = torch.cat((prompt.input_ids, answer[None]), dim=1)
    out = reducer.run(
        ids, policy=policy, budget=budget, logits="continuation", prompt_length=len(prompt),
        protect_last=prompt.protect_last,
    )  # fmt: skip
    return answer_likelihood(log_probs(out.logits[0]), answer, FLOOR)


def pairwise(groups: list[list[tuple[bool, float]]]) -> tuple[float, int]:
    """How often a right play's reward beats a wrong one's in the same group (ties half), and the pairs."""
    wins = pairs = 0.0
    for group in groups:
        for (right, a), (wrong, b) in itertools.product(group, group):
            if right and not wrong:
                wins += 1.0 if a > b else 0.5 if a == b else 0.0
                pairs += 1
    return (wins / pairs if pairs else float("nan")), int(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, help="a span head: a shipped name or a folder")
    parser.add_argument("--suite", required=True, help="a JSONL suite with gold answers")
    parser.add_argument("--only-suite", default="", help="comma-separated values of the items' suite field")
    parser.add_argument("--per-suite", type=int, default=None, help="the first N items of each value of `suite`")
    parser.add_argument("--budgets", default="0.3,0.5")
    parser.add_argument("--samples", type=int, default=4, help="sampled keep-sets per item and budget")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", default="", help="a JSONL file of finished items, kept on resume")
    args = parser.parse_args()

    model, tokenizer = load_model("smollm2-135m")
    policy = load_policy(args.policy, model)
    if not isinstance(policy, SpanHeadPolicy):
        parser.error(f"{args.policy} is not a span head; the RL stage samples span heads' keep-sets")
    reducer = Reducer(model)
    budgets = [float(b) for b in args.budgets.split(",")]
    wanted = set(filter(None, args.only_suite.split(",")))
    tasks: list[Task] = []
    taken: dict[str, int] = defaultdict(int)
    for task in load_jsonl(args.suite):
        suite = str(task.meta.get("suite", task.kind))
        if wanted and suite not in wanted:
            continue
        if (task.answer or task.answers) and (args.per_suite is None or taken[suite] < args.per_suite):
            tasks.append(task)
            taken[suite] += 1

    def answer(prompt: Prompt, chosen, budget: float | None) -> tuple[str, torch.Tensor]:
        result = reducer.generate(
            prompt.input_ids, policy=chosen, budget=budget, max_new_tokens=args.max_new_tokens,
            protect_last=prompt.protect_last,
        )  # fmt: skip
        return tokenizer.decode(result.tokens[0], skip_special_tokens=True).strip(), result.tokens[0].cpu()

    def encode(text: str) -> torch.Tensor:
        return tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0][: args.max_new_tokens]

    done = {}
    out = Path(args.out) if args.out else None
    if out is not None and out.is_file():  # a stopped run resumes: its finished items are kept
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done[row["item"], row["budget"]] = row
    rows = list(done.values())
    with Progress() as progress:
        bar = progress.add_task("items", total=len(tasks) * len(budgets))
        for task in tasks:
            if all((task.uid, budget) in done for budget in budgets):
                progress.advance(bar, len(budgets))
                continue
            prompt = build_prompt(tokenizer, task.question, task.context)
            said, said_ids = answer(prompt, None, None)
            full_right = bool(answer_correct(said, task))
            corrected = said_ids if full_right else encode(corrected_answer(said, task))
            for budget in budgets:
                if (task.uid, budget) in done:
                    progress.advance(bar)
                    continue
                plays = []
                for sample in range(args.samples):
                    chosen = Sampled(policy, seed=zlib.crc32(task.uid.encode()) * 1_009 + sample)
                    text, own = answer(prompt, chosen, budget)
                    rewards = [likelihood(reducer, prompt, ids, chosen, budget) for ids in (said_ids, corrected, own)]
                    plays.append([bool(answer_correct(text, task)), rewards])
                head_right = bool(answer_correct(answer(prompt, policy, budget)[0], task))
                row = {"item": task.uid, "suite": str(task.meta.get("suite", task.kind)), "budget": budget}
                row |= {"full": full_right, "head": head_right, "plays": plays}
                rows.append(row)
                if out is not None:
                    with out.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")
                progress.advance(bar)
    report(rows, f"{args.policy}: {len(tasks)} items of {args.suite}, {args.samples} sampled keep-sets each")


def report(rows: list[dict], title: str) -> None:
    """The table: accuracies and, over groups with right and wrong plays, how often each reward ranks them."""
    table = Table(title=title)
    columns = ["budget", "items", "full model", "head's cut", "a sample", "best sample", "mixed groups"]
    columns += [f"P(right > wrong): {name}" for name in REWARDS]
    columns += [f"top play by {name}" for name in REWARDS]
    for column in columns:
        table.add_column(column, justify="right")
    for budget in sorted({row["budget"] for row in rows}):
        at = [row for row in rows if row["budget"] == budget]
        rights = [[right for right, _ in row["plays"]] for row in at]
        mixed = [row for row, r in zip(at, rights, strict=True) if any(r) and not all(r)]
        shares = [
            sum(row["full"] for row in at) / len(at),
            sum(row["head"] for row in at) / len(at),
            sum(sum(r) / len(r) for r in rights) / len(at),
            sum(any(r) for r in rights) / len(at),
        ]
        cells = [f"{budget:g}", f"{len(at)}", *(f"{share:.1%}" for share in shares), f"{len(mixed)}"]
        for k in range(len(REWARDS)):
            share, pairs = pairwise([[(right, rewards[k]) for right, rewards in row["plays"]] for row in mixed])
            cells.append(f"{share:.2f} of {pairs}")
        for k in range(len(REWARDS)):  # each item's play that this reward ranks first: does it answer?
            top = sum(max(row["plays"], key=lambda play, k=k: play[1][k])[0] for row in at)
            cells.append(f"{top / len(at):.1%}")
        table.add_row(*cells)
    Console().print(table)


if __name__ == "__main__":
    main()
