"""Prefill speed of reduced passes against the model's own forward, with the FLOPs they predict.

A real model (SmolLM2-135M by default), a 1024-token grounded prompt: fixed cuts from layer 2 on,
then methods asked for a FLOPs budget (0.5 by default). Prints, side by side, the speedup the
FLOPs accounting predicts and the speedup measured on this machine, and plots a sweep.

    python benchmarks/prefill_speed.py [--tokens 1024] [--budget 0.5] [--model gemma3-270m]
        [--device cuda] [--dtype bfloat16] [--repeats 7] [--plot eval/results/prefill_speedup.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib
import torch
from rich.console import Console
from rich.table import Table

from rlprune import LayerAction, Reducer, build_prompt, load_model, make_baseline
from rlprune.timing import best_seconds_interleaved

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PASSAGE = ROOT / "eval" / "demo" / "harbour.txt"
SWEEP = (0.9, 0.75, 0.5, 0.35, 0.25, 0.15, 0.1)


def grounded_prompt(tokenizer, tokens: int):
    """The demo passage repeated until the chat prompt has exactly ``tokens`` tokens."""
    text = PASSAGE.read_text()
    context = text
    while len(build_prompt(tokenizer, "Who kept the boat?", context)) < tokens:
        context += "\n" + text
    prompt = build_prompt(tokenizer, "Who kept the boat?", context)
    excess = len(prompt) - tokens
    ids = torch.cat((prompt.input_ids[:, :1], prompt.input_ids[:, 1 + excess :]), dim=1)
    return ids, prompt.protect_last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--plot", type=Path, default=ROOT / "eval" / "results" / "prefill_speedup.png")
    args = parser.parse_args()

    load_model(args.model)  # converts once if needed
    start = time.perf_counter()
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - start
    reducer = Reducer(model)
    ids, protect_last = grounded_prompt(tokenizer, args.tokens)
    ids = ids.to(model.device)
    where = f"{model.device.type}, {str(model.dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads"

    fns = {"model forward": lambda: model(ids, logits_to_keep=1), "reducer, no reduction": lambda: reducer.run(ids)}
    for keep in (0.5, 0.25):
        for op in ("prune", "merge"):
            schedule = {args.layer: LayerAction(op, 1 - keep, "attention")}
            label = f"{op} {keep:.0%} from layer {args.layer}"
            fns[label] = lambda schedule=schedule: reducer.run(ids, schedule, protect_last=protect_last)
    for spec in ("snapkv", "static:4:prune:0.5:relevance", "pyramid"):  # asked for the budget
        method = make_baseline(spec)

        def run(method=method):
            return reducer.run(ids, policy=method, budget=args.budget, protect_last=protect_last)

        fns[f"{spec} at budget {args.budget}"] = run
    for keep in SWEEP:
        schedule = {args.layer: LayerAction("prune", 1 - keep, "attention")}
        fns[f"sweep {keep}"] = lambda schedule=schedule: reducer.run(ids, schedule, protect_last=protect_last)
    with torch.no_grad():
        seconds = best_seconds_interleaved(fns, args.repeats, model.device)
        outputs = {label: fn() for label, fn in fns.items() if label != "model forward"}
    full_s = seconds["model forward"]

    table = Table(title=f"Prefill of {ids.shape[1]} tokens, {args.model} ({where})")
    for column in ("method", "tokens kept", "FLOPs speedup", "measured speedup", "measured / FLOPs"):
        table.add_column(column, justify="right")
    table.add_row("model forward", "100%", "1.00", "1.00", "")
    for label, out in outputs.items():
        if label.startswith("sweep"):
            continue
        predicted, measured = 1 / out.flops_ratio, full_s / seconds[label]
        kept = out.tokens_per_layer[-1] / ids.shape[1]
        table.add_row(label, f"{kept:.0%}", f"{predicted:.2f}", f"{measured:.2f}", f"{measured / predicted:.2f}")
    console = Console(width=120)
    console.print(table)
    console.print(
        f"model forward {full_s * 1000:.0f} ms (best of {args.repeats}, every method timed in turn each round); "
        f"cached model load {load_s:.2f} s"
    )

    predicted = [1 / outputs[f"sweep {keep}"].flops_ratio for keep in SWEEP]
    measured = [full_s / seconds[f"sweep {keep}"] for keep in SWEEP]
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(SWEEP, predicted, "o--", label="predicted by FLOPs")
    ax.plot(SWEEP, measured, "o-", label=f"measured ({model.device.type}, {str(model.dtype).removeprefix('torch.')})")
    ax.set_xlabel(f"fraction of tokens kept from layer {args.layer}")
    ax.set_ylabel("prefill speedup over model forward")
    ax.set_title(f"{args.model}, {ids.shape[1]}-token prompt")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    console.print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
