"""Average budgets with the span head: does spending per prompt beat one ratio for every prompt?

Streams held-out items (the grounded-qa test split, then the niah and niah-multikey grids) through
the span head twice per target: held to the target on every prompt, and in average mode (each prompt
at the ratio the head proposes, a BudgetController holding the mean). Prints correct answers side
by side with the realised mean and spread; ``--need`` prints instead how well the head's proposal
signal (the share of tokens holding half its mass) ranks prompts against the share an oracle must
keep to hold the whole gold answer (Spearman).

    python benchmarks/adaptive_budget.py --short 48 --targets 0.3,0.2 [--horizon 20 --window 1000] [--need]

docs/evaluation.md's table ran with ``--short 48 --targets 0.3,0.2 --horizon 20 --window 1000`` (the
controller's first settings; the defaults are now 5 and 50).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from rlprune.budget import AverageBudget, BudgetController
from rlprune.eval.suites import load_suite
from rlprune.metrics import answer_correct
from rlprune.models import load_model
from rlprune.policies import decider, load_policy
from rlprune.prompts import build_prompt
from rlprune.reduction import sentence_end_ids
from rlprune.runner import Reducer, ReducerConfig
from rlprune.train.span_head import collect


def need_correlation(reducer: Reducer, tokenizer, head, tasks) -> None:
    """Spearman between the head's mass-0.5 share and the oracle's keep share, over items with evidence."""
    oracle, need = [], []
    for example in collect(reducer, tokenizer, tasks, head.decision_layer, show_progress=False):
        normed = example.normed.float()
        scores = head.scores(normed, normed[-example.window :])[example.removable]
        answer = example.answer[example.removable]
        if not answer.any():
            continue
        rank = torch.empty_like(scores, dtype=torch.long)
        rank[scores.argsort(descending=True)] = torch.arange(len(scores))
        oracle.append((int(rank[answer].max()) + 1) / len(scores))
        mass = torch.softmax(scores, 0).sort(descending=True).values.cumsum(0)
        need.append((int((mass < 0.5).sum()) + 1) / len(scores))
    ranks = [torch.tensor(v).argsort().argsort().double() for v in (oracle, need)]
    rho = float(torch.corrcoef(torch.stack(ranks))[0, 1])
    print(f"{len(oracle)} items with evidence: Spearman(oracle keep share, mass-0.5 share) = {rho:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2-135m-span")
    parser.add_argument("--short", type=int, default=48, help="grounded-qa test items first in the stream")
    parser.add_argument("--targets", default="0.3,0.2")
    parser.add_argument("--floor", type=float, default=0.1)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--need", action="store_true", help="only print the proposal signal's rank correlation")
    args = parser.parse_args()

    model, tokenizer = load_model("smollm2-135m")
    head = load_policy(args.policy, model)
    tasks = load_suite("grounded-qa", limit=args.short)[1]
    for suite in ("niah", "niah-multikey"):
        tasks += load_suite(suite, per_cell=1)[1]
    reducer = Reducer(model, ReducerConfig(sentence_ends=sentence_end_ids(tokenizer)))
    if args.need:
        need_correlation(reducer, tokenizer, head, tasks)
        return
    prompts = [build_prompt(tokenizer, task.question, task.context) for task in tasks]

    def answer(index: int, budget: float | BudgetController) -> tuple[bool, float]:
        prompt = prompts[index]
        result = reducer.generate(prompt.input_ids, decider(head, reducer, budget), decision_layers=head.layers,
                                  protect_last=prompt.protect_last, max_new_tokens=args.max_new_tokens)  # fmt: skip
        text = tokenizer.decode(result.tokens[0], skip_special_tokens=True).strip()
        return answer_correct(text, tasks[index]), result.prefill.flops_ratio

    full = sum(answer(i, 1.0)[0] for i in range(len(tasks)))
    print(f"{len(tasks)} items; full model (budget 1.0) {full}")
    for target in (float(t) for t in args.targets.split(",")):
        fixed = [answer(i, target) for i in range(len(tasks))]
        stream = BudgetController(AverageBudget(target, args.floor, horizon=args.horizon, window=args.window))
        adaptive = []
        for i in range(len(tasks)):
            adaptive.append(answer(i, stream))
            stream.record([adaptive[-1][1]])
        print(
            f"target {target:g}: held to it {sum(c for c, _ in fixed)}/{len(tasks)} "
            f"(mean {statistics.mean(r for _, r in fixed):.3f}) | adaptive {sum(c for c, _ in adaptive)}/{len(tasks)} "
            f"(mean {stream.mean:.3f}, std {statistics.pstdev(stream.ratios):.3f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
