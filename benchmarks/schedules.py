"""Fixed reduction schedules on grounded questions: accuracy against FLOPs, next to the full model.

Every schedule answers the same questions through the same reducer; an answer counts when it
contains one of the gold aliases. Writes a plot of accuracy against FLOPs ratio.

    python benchmarks/schedules.py [--data eval/demo/harbour.jsonl] [--plot eval/results/schedules.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import track  # noqa: E402
from rich.table import Table  # noqa: E402

from rlprune import Reducer, build_prompt, load_model, parse_schedule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = [
    "",
    "2:prune:0.5:attention",
    "2:prune:0.5:key_norm",
    "2:prune:0.5:similarity",
    "2:merge:0.5:similarity",
    "2:prune:0.5:relevance",
    "2:prune:0.8:relevance",
    "8:prune:0.7:relevance",
    "2:prune:0.5:relevance,8:prune:0.5:relevance",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "eval" / "demo" / "harbour.jsonl")
    parser.add_argument("--plot", type=Path, default=ROOT / "eval" / "results" / "schedules.png")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()

    items = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    model, tokenizer = load_model()
    reducer = Reducer(model)
    prompts = [build_prompt(tokenizer, item["question"], item.get("context")) for item in items]
    rows = []
    for text in track(SCHEDULES, description="schedules", transient=True):
        schedule = parse_schedule(text)
        correct, flops_ratio, kv_ratio = 0, 0.0, 0.0
        for item, prompt in zip(items, prompts, strict=True):
            result = reducer.generate(
                prompt.input_ids, schedule, max_new_tokens=args.max_new_tokens, protect_last=prompt.protect_last
            )
            answer = tokenizer.decode(result.tokens[0], skip_special_tokens=True).lower()
            correct += any(alias.lower() in answer for alias in item.get("answers") or [item["answer"]])
            flops_ratio += result.prefill.flops_ratio
            kv_ratio += result.prefill.kv_bytes / result.prefill.kv_bytes_full
        n = len(items)
        rows.append((text or "none (full model)", correct / n, flops_ratio / n, kv_ratio / n))

    table = Table(title=f"{len(items)} grounded questions from {args.data.name}, SmolLM2-135M, greedy")
    for column in ("schedule", "accuracy", "FLOPs ratio", "KV ratio"):
        table.add_column(column, justify="left" if column == "schedule" else "right")
    for name, accuracy, flops_ratio, kv_ratio in rows:
        table.add_row(name, f"{accuracy:.0%}", f"{flops_ratio:.3f}", f"{kv_ratio:.3f}")
    Console(width=110).print(table)

    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    names = [name for name, *_ in rows]
    bars = ax.barh(names, [accuracy for _, accuracy, _, _ in rows], color="tab:blue")
    ax.bar_label(bars, labels=[f"FLOPs {flops_ratio:.2f}" for *_, flops_ratio, _ in rows], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.25)
    ax.set_xlabel("accuracy (bar) with the prefill FLOPs ratio (label)")
    ax.set_title(f"Fixed schedules on {len(items)} grounded questions (SmolLM2-135M)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
