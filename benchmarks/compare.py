"""Answer held-out grounded questions with a trained policy, baselines and the full model.

Every method runs through the same reducer at the same budget; prints accuracy, the realised
prefill FLOPs ratio and the measured prefill speedup side by side.

    python benchmarks/compare.py --policy runs/demo/policy [--preset demo] [--budget 0.5] [--limit 32]
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from rlprune import Reducer, build_prompt, load_model
from rlprune.envs import EnvConfig, answer_correct
from rlprune.policies import decider, resolve_policy
from rlprune.timing import Stopwatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", action="append", default=[], help="checkpoint folder or baseline (repeatable)")
    parser.add_argument("--baselines", default="snapkv,fastv,pyramid", help="comma-separated baselines to add")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--split", default="test")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()

    config = EnvConfig.load(args.preset)
    tasks = config.tasks.tasks(args.split)[: args.limit]
    model, tokenizer = load_model(config.model)
    reducer = Reducer(model)
    prompts = [build_prompt(tokenizer, t.question, t.context) for t in tasks]
    methods = [("full model", resolve_policy("none"), None)]
    methods += [(spec, resolve_policy(spec, model), args.budget) for spec in args.policy]
    methods += [(spec, resolve_policy(spec), args.budget) for spec in filter(None, args.baselines.split(","))]

    rows = []
    for name, policy, budget in methods:
        layers = policy.decision_layers(reducer.dims.layers)
        correct, ratios, seconds = 0, [], []
        for task, prompt in track(list(zip(tasks, prompts, strict=True)), description=name, transient=True):
            decide = decider(policy, reducer, budget)
            result = reducer.generate(
                prompt.input_ids,
                decide,
                decision_layers=layers,
                protect_last=prompt.protect_last,
                max_new_tokens=args.max_new_tokens,
            )
            correct += bool(answer_correct(tokenizer.decode(result.tokens[0], skip_special_tokens=True), task))
            ratios.append(result.prefill.flops_ratio)
            clock = Stopwatch(model.device)
            with torch.no_grad():
                reducer.run(prompt.input_ids, decide, decision_layers=layers, protect_last=prompt.protect_last)
            seconds.append(clock.lap())
        rows.append((name, correct / len(tasks), sum(ratios) / len(ratios), sum(seconds)))

    full_seconds = rows[0][3]
    table = Table(title=f"{len(tasks)} {args.preset}/{args.split} questions, budget {args.budget}, {config.model}")
    for column in ("method", "accuracy", "FLOPs ratio", "prefill speedup"):
        table.add_column(column, justify="right")
    for name, accuracy, ratio, total in rows:
        table.add_row(name, f"{accuracy:.1%}", f"{ratio:.3f}", f"{full_seconds / total:.2f}x")
    Console(width=110).print(table)


if __name__ == "__main__":
    main()
