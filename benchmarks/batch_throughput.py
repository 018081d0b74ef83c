"""Batched reduced prefill against one prompt at a time, side by side in one run.

Eight different 512-token grounded prompts on the real model; each method (full model, and
SnapKV-style selection at the budget, each row choosing its own tokens) runs them one at a time
and as one batch. Prints prompt tokens per second and the batch's speedup; on CUDA pass --device.

    python benchmarks/batch_throughput.py [--batch 8] [--tokens 512] [--budget 0.5] [--repeats 3]
        [--model smollm2-135m] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from rlprune import Reducer, build_prompt, load_model, make_baseline
from rlprune.timing import best_seconds_interleaved

PASSAGE = (Path(__file__).resolve().parents[1] / "eval" / "demo" / "harbour.txt").read_text()
QUESTIONS = [
    "Who kept the blue boat?", "What was the name of the last lighthouse keeper?", "How many bells were there?",
    "Where did the ferry go?", "When did the harbour close?", "What colour was the boat?",
    "Who rang the bells?", "What did the keeper write?",
]  # fmt: skip


def prompts(tokenizer, count: int, tokens: int):
    """``count`` different prompts of exactly ``tokens`` tokens (the passage rotated, a question each)."""
    words = PASSAGE.split()
    out = []
    for i in range(count):
        shift = (i * 37) % len(words)
        context = " ".join(words[shift:] + words[:shift])
        while len(build_prompt(tokenizer, QUESTIONS[i % len(QUESTIONS)], context)) < tokens:
            context += "\n" + context
        prompt = build_prompt(tokenizer, QUESTIONS[i % len(QUESTIONS)], context)
        excess = len(prompt) - tokens
        out.append((torch.cat((prompt.input_ids[0, :1], prompt.input_ids[0, 1 + excess :])), prompt.protect_last))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    reducer = Reducer(model)
    rows = [(ids.to(model.device), tail) for ids, tail in prompts(tokenizer, args.batch, args.tokens)]
    ids, tails = [ids for ids, _ in rows], [tail for _, tail in rows]
    fns, ratios = {}, {}
    for spec in ("none", "snapkv"):
        method = make_baseline(spec)

        def one_at_a_time(method=method):
            return [reducer.run(row, policy=method, budget=args.budget, protect_last=tail) for row, tail in rows]

        def batched(method=method):
            return reducer.run(ids, policy=method, budget=args.budget, protect_last=tails)

        fns[(spec, 1)], fns[(spec, args.batch)] = one_at_a_time, batched
        with torch.no_grad():
            ratios[spec] = sum(out.flops_ratio for out in batched()) / args.batch
    with torch.no_grad():
        seconds = best_seconds_interleaved(fns, args.repeats, model.device)

    where = f"{model.device.type}, {str(model.dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads"
    table = Table(title=f"{args.batch} prompts of {args.tokens} tokens, {args.model} ({where})")
    for column in ("method", "FLOPs ratio", "batch", "seconds", "prompt tokens / s", "batch speedup"):
        table.add_column(column, justify="right")
    total = args.batch * args.tokens
    for spec in ("none", "snapkv"):
        single, batch = seconds[(spec, 1)], seconds[(spec, args.batch)]
        label = "full model" if spec == "none" else f"{spec} at budget {args.budget}"
        table.add_row(label, f"{ratios[spec]:.3f}", "1", f"{single:.2f}", f"{total / single:,.0f}", "1.00x")
        table.add_row(
            label, f"{ratios[spec]:.3f}", str(args.batch), f"{batch:.2f}", f"{total / batch:,.0f}",
            f"{single / batch:.2f}x",
        )  # fmt: skip
    Console(width=110).print(table)


if __name__ == "__main__":
    main()
