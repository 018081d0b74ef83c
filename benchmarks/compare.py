"""Answer a preset's held-out questions with trained policies, baselines and the full model, side by side.

A thin front of the evaluation harness (``rlprune eval --suite env:PRESET:SPLIT``): every method runs
through the same reducer at the same budget and is measured as every evaluation measures it
(:mod:`rlprune.metrics`). Prints accuracy, KL and top-1 agreement with the full model on its own
answer, the realised prefill FLOPs ratio and the measured prefill speedup.

    python benchmarks/compare.py --policy runs/demo/exported [--preset demo] [--split test] [--budget 0.5]
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

from rich.console import Console
from rich.table import Table

from rlprune.envs import EnvConfig
from rlprune.eval import EvalConfig, evaluate, parse_baselines
from rlprune.eval.suites import PRESET_SUITE

COLUMNS = (  # (aggregate key, heading, format; "%" a share, "x" a ratio)
    ("accuracy", "accuracy", "%"),
    ("kl", "KL", ".3f"),
    ("top1", "top-1", "%"),
    ("flops_ratio", "FLOPs ratio", ".3f"),
    ("prefill_speedup", "prefill speedup", "x"),
)


def cell(value: Any, form: str) -> str:
    if value is None:
        return "–"
    return f"{value:.1%}" if form == "%" else f"{value:.2f}x" if form == "x" else format(value, form)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", action="append", default=[], help="checkpoint folder or baseline (repeatable)")
    parser.add_argument("--baselines", default="snapkv,fastv,pyramid", help='comma-separated baselines, or "none"')
    parser.add_argument("--preset", default="demo", help="environment preset whose questions are asked")
    parser.add_argument("--split", default="test", help="the preset's split (test: held out from training)")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--out", help="keep the records and reports here (resumes); default: nothing is kept")
    args = parser.parse_args()

    preset = EnvConfig.load(args.preset)
    config = EvalConfig(
        suite=f"{PRESET_SUITE}{args.preset}:{args.split}",
        model=preset.model,
        device=preset.device,
        dtype=preset.dtype,
        policies=tuple(args.policy),
        baselines=parse_baselines(args.baselines),
        budgets=(args.budget,),
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
    )
    with tempfile.TemporaryDirectory(prefix="rlprune-compare-") as scratch:
        rows = evaluate(config, args.out or scratch)

    items = rows[0]["items"]
    table = Table(title=f"{items} {args.preset}/{args.split} questions, budget {args.budget:g}, {preset.model}")
    table.add_column("method", justify="left")
    for _, heading, _ in COLUMNS:
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(row["method"], *(cell(row[key], form) for key, _, form in COLUMNS))
    Console(width=110).print(table)
    print("KL and top-1: the method against the full model, teacher-forced on the full model's answer.")


if __name__ == "__main__":
    main()
