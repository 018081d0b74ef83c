"""Average budgets at matched mean FLOPs: a policy choosing each prompt's ratio against the same policy
held to one ratio, a rule-based baseline at that ratio, and an oracle that knows each prompt's best ratio.

Streams held-out items (the first ``--short`` grounded-qa test items, then the niah and niah-multikey
grids at depths 0, 0.5 and 1, one item per cell) through:

- the full model, once (its answer's confidence is the difficulty proxy: the geometric-mean
  probability of its own greedy answer's tokens);
- the policy held to every ratio of ``--grid`` on every prompt;
- the policy in average mode at each target (a :class:`BudgetController` holding the mean);
- ``--baseline`` at each target.

The oracle picks, per item, the cheapest grid ratio at which the held policy answered correctly,
cheapest items first while the mean stays within the target (knapsack by greedy); the stable oracle
only the cheapest ratio from which every larger grid ratio answers too (what knowing each item's
need can buy, without answers that come and go between neighbouring ratios). Per-item records
go to ``OUT/records.jsonl`` as they are made (a rerun continues), the summary to ``OUT/results.json``
and the ratios against difficulty to ``OUT/ratios.png``.

    python benchmarks/adaptive_budget.py --policy smollm2-135m-adaptive --out eval/results/adaptive-budget
    python benchmarks/adaptive_budget.py --policy smollm2-135m-span --need   # the heuristic's signal only
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from rlprune.budget import AverageBudget, BudgetController, oracle
from rlprune.engine import Reducer, ReducerConfig
from rlprune.eval.report import bootstrap_interval
from rlprune.eval.suites import load_suite
from rlprune.metrics import answer_correct
from rlprune.models import load_model
from rlprune.policies import resolve_policy
from rlprune.progress import Progress
from rlprune.prompts import build_prompt
from rlprune.reduction import sentence_end_ids
from rlprune.train.kinds.span_head import collect


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
    print(
        f"{len(oracle)} items with evidence: Spearman(oracle keep share, mass-0.5 share) = {spearman(oracle, need):.2f}"
    )


def spearman(a: list[float], b: list[float]) -> float:
    ranks = [torch.tensor(v, dtype=torch.float64).argsort().argsort().double() for v in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def grid_oracle(grid_records: dict[float, list[dict]], target: float, stable: bool = False) -> tuple[int, float]:
    """:func:`rlprune.budget.oracle` over the held policy's records at every grid ratio."""
    ordered = [grid_records[g] for g in sorted(grid_records)]
    ratios = torch.tensor([[r["ratio"] for r in rows] for rows in ordered]).T  # (items, grid)
    correct = torch.tensor([[r["correct"] for r in rows] for rows in ordered]).T
    return oracle(ratios, correct, target, stable)


def paired(a: list[dict], b: list[dict]) -> tuple[float, tuple[float, float]]:
    """Mean accuracy difference a - b over the same items, in points, with a 95% bootstrap interval."""
    x = [float(r["correct"]) for r in a]
    y = [float(r["correct"]) for r in b]
    diff = 100 * (np.mean(x) - np.mean(y))
    low, high = bootstrap_interval([x, y], lambda u, v: 100 * (u.mean() - v.mean()))
    return float(diff), (low, high)


def draw(out: Path, difficulty: list[float], adaptive: dict[float, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for target, rows in adaptive.items():
        ratios = [r["ratio"] for r in rows]
        axes.scatter(difficulty, ratios, s=14, alpha=0.6, label=f"average {target:g}")
    axes.set_xlabel("full model's confidence in its own answer (geometric-mean token probability)")
    axes.set_ylabel("per-prompt prefill FLOPs ratio")
    axes.set_title("Ratios chosen per prompt in average-budget mode")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "ratios.png", dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2-135m-adaptive")
    parser.add_argument("--baseline", default="best-static:grounded-qa")
    parser.add_argument("--short", type=int, default=64, help="grounded-qa test items first in the stream")
    parser.add_argument("--targets", default="0.2,0.3,0.4")
    parser.add_argument("--grid", default="0.15,0.2,0.3,0.4,0.5,0.7")
    parser.add_argument("--floor", type=float, default=0.1)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("runs/adaptive-budget"))
    parser.add_argument("--need", action="store_true", help="only print the proposal signal's rank correlation")
    args = parser.parse_args()

    model, tokenizer = load_model("smollm2-135m")
    policy = resolve_policy(args.policy, model)
    baseline = resolve_policy(args.baseline, model)
    tasks = load_suite("grounded-qa", limit=args.short)[1]
    sources = ["grounded-qa"] * len(tasks)  # the suite of each item, for the per-suite breakdown
    for suite in ("niah", "niah-multikey"):
        tasks += (more := load_suite(suite, per_cell=1, depths=(0.0, 0.5, 1.0))[1])
        sources += [suite] * len(more)
    reducer = Reducer(model, ReducerConfig(sentence_ends=sentence_end_ids(tokenizer)))
    if args.need:
        need_correlation(reducer, tokenizer, policy, tasks)
        return
    prompts = [build_prompt(tokenizer, task.question, task.context) for task in tasks]
    targets = [float(t) for t in args.targets.split(",")]
    grid = sorted({float(g) for g in args.grid.split(",")} | set(targets))
    args.out.mkdir(parents=True, exist_ok=True)
    journal = args.out / "records.jsonl"
    done = {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            record = json.loads(line)
            done[(record["method"], record["budget"], record["item"])] = record

    def answer(method: str, budget: float, index: int, chooser, stream: BudgetController | None = None) -> dict:
        key = (method, budget, index)
        if key in done:
            if stream is not None:
                stream.replay([done[key]["proposal"]], [done[key]["ratio"]])
            return done[key]
        prompt = prompts[index]
        result = reducer.generate(prompt.input_ids, policy=chooser, budget=stream or budget,
                                  protect_last=prompt.protect_last, max_new_tokens=args.max_new_tokens)  # fmt: skip
        text = tokenizer.decode(result.tokens[0], skip_special_tokens=True).strip()
        record = {"method": method, "budget": budget, "item": index, "ratio": result.prefill.flops_ratio,
                  "correct": bool(answer_correct(text, tasks[index])), "answer": text}  # fmt: skip
        if stream is not None:
            record["proposal"] = stream.pending[-1]
            stream.record([record["ratio"]])
        if method == "full":
            tokens = result.tokens[0]
            logits = torch.cat([result.prefill.logits[0, -1:], reducer.extend(result.prefill.state, tokens[:-1])[0]])
            chosen = torch.log_softmax(logits.float(), -1).gather(1, tokens[:, None])
            record["confidence"] = float(chosen.mean().exp())
        with journal.open("a") as file:
            file.write(json.dumps(record) + "\n")
        done[key] = record
        return record

    n = len(tasks)
    runs = 1 + len(grid) + 2 * len(targets)
    with Progress() as progress:
        bar = progress.add_task("adaptive budgets", total=runs * n)

        def sweep(method: str, budget: float, chooser, stream=None) -> list[dict]:
            rows = []
            for i in range(n):
                rows.append(answer(method, budget, i, chooser, stream))
                progress.advance(bar)
            return rows

        full = sweep("full", 1.0, policy)  # budget 1.0 keeps everything
        held = {g: sweep("held", g, policy) for g in grid}
        base = {target: sweep("baseline", target, baseline) for target in targets}
        adaptive = {}
        for target in targets:
            stream = BudgetController(AverageBudget(target, args.floor, horizon=args.horizon, window=args.window))
            adaptive[target] = sweep("adaptive", target, policy, stream)

    difficulty = [r["confidence"] for r in full]
    summary = {"items": n, "policy": str(args.policy), "baseline": args.baseline,
               "full": sum(r["correct"] for r in full), "held": {}, "targets": {}}  # fmt: skip
    for g, rows in held.items():
        summary["held"][f"{g:g}"] = {"correct": sum(r["correct"] for r in rows),
                                     "mean": statistics.mean(r["ratio"] for r in rows)}  # fmt: skip
    print(f"{n} items; full model {summary['full']}/{n}")
    print("held to one ratio: " + ", ".join(f"{g}: {v['correct']}" for g, v in summary["held"].items()))
    summary["held_by_suite"] = {}
    for suite in dict.fromkeys(sources):
        mine = [i for i in range(n) if sources[i] == suite]
        summary["held_by_suite"][suite] = {f"{g:g}": sum(held[g][i]["correct"] for i in mine) for g in grid}
        summary["held_by_suite"][suite]["full"] = sum(full[i]["correct"] for i in mine)
        print(
            f"  {suite} ({len(mine)} items): "
            + ", ".join(f"{g}: {c}" for g, c in summary["held_by_suite"][suite].items())
        )
    for target in targets:
        rows = adaptive[target]
        ratios = [r["ratio"] for r in rows]
        taken, oracle_mean = grid_oracle({g: held[g] for g in grid}, statistics.mean(ratios))
        stable, stable_mean = grid_oracle({g: held[g] for g in grid}, statistics.mean(ratios), stable=True)
        vs_held, held_ci = paired(rows, held[target])
        vs_base, base_ci = paired(rows, base[target])
        entry = {
            "adaptive": sum(r["correct"] for r in rows),
            "mean": statistics.mean(ratios),
            "std": statistics.pstdev(ratios),
            "held": sum(r["correct"] for r in held[target]),
            "baseline": sum(r["correct"] for r in base[target]),
            "baseline_mean": statistics.mean(r["ratio"] for r in base[target]),
            "oracle": taken,
            "oracle_mean": oracle_mean,
            "stable_oracle": stable,
            "stable_oracle_mean": stable_mean,
            "adaptive_minus_held": [vs_held, list(held_ci)],
            "adaptive_minus_baseline": [vs_base, list(base_ci)],
            "spearman_ratio_vs_confidence": spearman(ratios, difficulty),
        }
        summary["targets"][f"{target:g}"] = entry
        print(
            f"target {target:g}: adaptive {entry['adaptive']}/{n} (mean {entry['mean']:.3f}, std {entry['std']:.3f}) | "
            f"held {entry['held']} | {args.baseline} {entry['baseline']} (mean {entry['baseline_mean']:.3f}) | "
            f"oracle {taken} (mean {oracle_mean:.3f}), stable {stable} (mean {stable_mean:.3f}) | "
            f"adaptive - held {vs_held:+.1f} [{held_ci[0]:.1f}, "
            f"{held_ci[1]:.1f}] | adaptive - baseline {vs_base:+.1f} [{base_ci[0]:.1f}, {base_ci[1]:.1f}] | "
            f"Spearman(ratio, confidence) {entry['spearman_ratio_vs_confidence']:+.2f}",
            flush=True,
        )
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    draw(args.out, difficulty, adaptive)


if __name__ == "__main__":
    main()
