"""Cost of one environment episode against one plain forward pass of the same prompt, and the
resulting training throughput (environment steps per second).

Real SmolLM2-135M, grounded prompts of about 300 tokens, reference cache warm (the full model's
outputs are computed before timing). Prints both times and their ratio, for episodes that keep
everything and for episodes with random actions.

    python benchmarks/env_cost.py [--prompts 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from rlprune import build_prompt
from rlprune.envs import TokenReductionEnv, generate_suite
from rlprune.reduction import LayerAction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tasks = generate_suite({"grounded": 1.0}, "validation", args.prompts, tokens=(240, 270))
    env = TokenReductionEnv("grounded-qa", split="validation", tasks=tasks, cache_dir=tempfile.mkdtemp())
    env.references.warm(tasks)
    model, tokenizer = env.reducer.model, env.tokenizer
    lengths = [len(build_prompt(tokenizer, t.question, t.context)) for t in tasks]
    rng = np.random.default_rng(0)

    def episode(index: int, policy: str) -> float:
        start = time.perf_counter()
        env.reset(seed=index, options={"task_index": index})
        done = False
        while not done:
            action = LayerAction() if policy == "keep" else env.action_space.sample()
            _, _, done, _, _ = env.step(action)
        return time.perf_counter() - start

    def forward(index: int) -> float:
        ids = build_prompt(tokenizer, tasks[index].question, tasks[index].context).input_ids
        start = time.perf_counter()
        with torch.no_grad():
            model(ids)
        return time.perf_counter() - start

    env.action_space.seed(int(rng.integers(1 << 31)))
    for index in range(len(tasks)):  # warm-up
        episode(index, "random")
        forward(index)
    timings = {"forward": [], "keep": [], "random": []}
    for _ in range(args.repeats):
        for index in range(len(tasks)):
            timings["forward"].append(forward(index))
            timings["keep"].append(episode(index, "keep"))
            timings["random"].append(episode(index, "random"))
    plain = statistics.median(timings["forward"])
    table = Table(title=f"{len(tasks)} prompts of {min(lengths)}-{max(lengths)} tokens, SmolLM2-135M, warm cache")
    for column in ("", "median seconds", "ratio to one forward"):
        table.add_column(column, justify="right")
    table.add_row("plain forward pass", f"{plain:.3f}", "1.00")
    for name, label in (("keep", "episode, keep everything"), ("random", "episode, random actions")):
        seconds = statistics.median(timings[name])
        table.add_row(label, f"{seconds:.3f}", f"{seconds / plain:.2f}")
    console = Console(width=100)
    console.print(table)
    steps = len(env.config.episode.decision_layers)
    per_step = statistics.median(timings["random"]) / steps
    console.print(
        f"training throughput, one process: {1 / per_step:.1f} environment steps/s against {1 / plain:.1f} "
        f"plain forward passes/s on the same prompts (ratio {plain / per_step:.2f})"
    )


if __name__ == "__main__":
    main()
