"""The full model's answer accuracy on a built-in test split: the ceiling for any policy.

python benchmarks/full_model_accuracy.py [--preset grounded-qa] [--split test] [--limit N]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from rich.console import Console
from rich.progress import track
from rich.table import Table

from rlprune import Reducer, build_prompt, load_model
from rlprune.envs import EnvConfig, answer_correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="grounded-qa")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    config = EnvConfig.load(args.preset)
    tasks = config.tasks.tasks(args.split)
    tasks = tasks[: args.limit] if args.limit else tasks
    model, tokenizer = load_model(config.model)
    reducer = Reducer(model)
    correct: dict[str, list[bool]] = defaultdict(list)
    for task in track(tasks, description="full model", transient=True):
        prompt = build_prompt(tokenizer, task.question, task.context)
        result = reducer.generate(prompt.input_ids, max_new_tokens=args.max_new_tokens)
        verdict = answer_correct(tokenizer.decode(result.tokens[0], skip_special_tokens=True), task)
        if verdict is not None:
            correct[task.kind].append(verdict)
            correct["all"].append(verdict)
    table = Table(title=f"Full {config.model} on {args.preset} / {args.split}, greedy, {args.max_new_tokens} tokens")
    for column in ("kind", "tasks", "accuracy"):
        table.add_column(column, justify="right")
    for kind, verdicts in sorted(correct.items(), key=lambda kv: kv[0] == "all"):
        table.add_row(kind, str(len(verdicts)), f"{sum(verdicts) / len(verdicts):.1%}")
    Console(width=100).print(table)


if __name__ == "__main__":
    main()
