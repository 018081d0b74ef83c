"""Baselines at a matched budget on the real model, and what deciding costs a learned policy.

For each method asked for the same prefill FLOPs budget on a 512-token grounded prompt: the
realised FLOPs ratio, the KV-cache ratio and the measured prefill speedup over the model's own
forward, side by side. Then a learned policy's overhead (observation, per-token features, the
network and its choice at every decision) as a share of its reduced forward: a layer-level
policy, and a token-level one (``--policy`` checkpoint, or random weights of the same shape).

    python benchmarks/policies.py [--budget 0.5] [--repeats 5] [--tokens 512] [--policy policies/smollm2-135m-mixed]
        [--span-head policies/smollm2-135m-span]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from rlprune import Reducer, build_prompt, load_model, make_baseline
from rlprune.engine import ReductionOutput
from rlprune.engine.policy import consult
from rlprune.policies import ReductionPolicy, SpanHeadPolicy, TokenReductionPolicy, load_policy
from rlprune.timing import best_seconds

PASSAGE = (Path(__file__).resolve().parents[1] / "eval" / "demo" / "harbour.txt").read_text()
METHODS = ["none", "random", "fastv", "snapkv", "pyramid", "tome", "static:2:prune:0.5,8:prune:0.5:relevance"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=512, help="prompt length")
    parser.add_argument("--policy", default=None, help="a token-level policy checkpoint to time")
    parser.add_argument("--span-head", default=None, help="a span-head checkpoint to time (default: random weights)")
    args = parser.parse_args()

    model, tokenizer = load_model()
    prompt = build_prompt(tokenizer, "Who kept the blue boat?", (PASSAGE + " ") * (args.tokens // 150 + 1))
    ids = torch.cat((prompt.input_ids[:, :1], prompt.input_ids[:, 1 - args.tokens :]), dim=1)
    reducer = Reducer(model)
    with torch.no_grad():
        full_s = best_seconds(lambda: model(ids, logits_to_keep=1), args.repeats)

    table = Table(title=f"Budget {args.budget} on a {ids.shape[1]}-token prompt, SmolLM2-135M, CPU")
    for column in ("method", "FLOPs ratio", "KV ratio", "prefill speedup"):
        table.add_column(column, justify="right")
    for spec in METHODS:
        method = make_baseline(spec)

        def run(method=method):
            return reducer.run(ids, policy=method, budget=args.budget, protect_last=prompt.protect_last)

        out = run()
        seconds = best_seconds(run, args.repeats)
        table.add_row(
            str(method), f"{out.flops_ratio:.3f}", f"{out.kv_bytes / out.kv_bytes_full:.3f}", f"{full_s / seconds:.2f}x"
        )
    console = Console(width=110)
    console.print(table)

    policy = ReductionPolicy()  # biased to close a third of the gap to the budget by relevance at each decision
    spec = policy.action_spec
    with torch.no_grad():
        policy.action_head.bias.zero_()
        for index in (spec.ops.index("prune"), 3 + spec.shares.index(0.35), 9 + spec.scorers.index("relevance")):
            policy.action_head.bias[index] = 4.0
    overhead(console, reducer, policy, ids, prompt.protect_last, args)
    if args.policy:
        token_policy = load_policy(args.policy, model)
    else:
        token_policy = TokenReductionPolicy()
        with torch.no_grad():  # acting at every decision: the most features computed
            token_policy.action_head.bias[token_policy.action_spec.ops.index("prune")] = 8.0
    overhead(console, reducer, token_policy, ids, prompt.protect_last, args)
    head = load_policy(args.span_head, model) if args.span_head else SpanHeadPolicy(reducer.dims.hidden)
    out = overhead(console, reducer, head, ids, prompt.protect_last, args)
    window = min(reducer.config.window or prompt.protect_last, ids.shape[1])
    console.print(
        f"SpanHeadPolicy scoring: {head.head_flops(ids.shape[1], window) / out.flops:.3%} "
        "of the reduced forward's FLOPs"
    )


def overhead(console, reducer, policy, ids, protect_last, args) -> ReductionOutput:
    """Time every decision (features, network, choice) within the reduced forward it steers."""
    layers, decide = consult(policy, reducer, args.budget)
    spent = []

    def timed(state):
        start = time.perf_counter()
        action = decide(state)
        spent.append(time.perf_counter() - start)
        return action

    seconds = best_seconds(
        lambda: reducer.run(ids, timed, decision_layers=layers, protect_last=protect_last), args.repeats
    )
    per_run = min(sum(spent[i : i + len(layers)]) for i in range(0, len(spent), len(layers)))
    out = reducer.run(ids, decide, decision_layers=layers, protect_last=protect_last)
    console.print(
        f"{type(policy).__name__} ({policy.num_parameters():,} parameters, FLOPs ratio {out.flops_ratio:.2f}): "
        f"{len(layers)} decisions cost {per_run * 1000:.1f} ms of a {seconds * 1000:.0f} ms reduced forward "
        f"over {ids.shape[1]} tokens: {per_run / seconds:.2%} overhead"
    )
    return out


if __name__ == "__main__":
    main()
