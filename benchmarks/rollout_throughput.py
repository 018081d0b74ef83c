"""Training rollouts: the batched vector environment (N episodes, one model, one process) against
SB3 worker processes (one model each), side by side in one run.

Same preset, warm reference cache, random actions: prints environment steps per second and the
peak resident memory of everything that holds a model.

    python benchmarks/rollout_throughput.py [--preset demo] [--envs 8] [--processes 2] [--steps 192]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.vec_env import SubprocVecEnv

from rlprune.envs import TokenReductionEnv, make_vector_env
from rlprune.train.backends.sb3 import make_env
from rlprune.train.backends.sb3_vec import BatchedVecEnv


def peak_rss_mib(pid: int | None = None) -> float:
    """Peak resident memory of a process (this one by default), MiB."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def steps_per_second(vec_env, steps: int, seed: int = 0) -> float:
    """Environment steps per second over at least ``steps`` of them, random actions (after one warm-up round)."""
    rng = np.random.default_rng(seed)
    n = vec_env.num_envs
    space = vec_env.action_space

    def act():
        return np.stack([rng.integers(0, space.nvec) for _ in range(n)])

    vec_env.reset()
    for _ in range(4):
        vec_env.step(act())
    done, started = 0, time.perf_counter()
    while done < steps:
        vec_env.step(act())
        done += n
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--envs", type=int, default=8, help="episodes side by side in the batched vector env")
    parser.add_argument("--processes", type=int, default=2, help="SB3 worker processes to compare with")
    parser.add_argument("--steps", type=int, default=192)
    args = parser.parse_args()

    cache = tempfile.mkdtemp()
    warm = TokenReductionEnv(args.preset, cache_dir=cache)
    warm.references.warm(warm.tasks, "training prompts")  # references first, so only rollouts are timed
    console = Console(width=110)

    factories = [make_env(args.preset, "train", i, 1, cache) for i in range(args.processes)]
    workers = SubprocVecEnv(factories)
    process_rate = steps_per_second(workers, args.steps)
    worker_rss = sum(peak_rss_mib(p.pid) for p in workers.processes)
    workers.close()

    torch.set_num_threads(os.cpu_count() or 1)
    vector = make_vector_env(
        args.preset, args.envs, model=warm.reducer.model, tokenizer=warm.tokenizer, cache_dir=cache
    )
    batched_rate = steps_per_second(BatchedVecEnv(vector), args.steps)
    own_rss = peak_rss_mib()

    table = Table(title=f"Rollouts on {args.preset} (train split), random actions, {os.cpu_count()} cores")
    for column in ("environments", "models in memory", "env steps / s", "speedup", "peak RSS, MiB"):
        table.add_column(column, justify="right")
    table.add_row(f"{args.processes} SB3 worker processes", str(args.processes), f"{process_rate:.1f}", "1.00x",
                  f"{worker_rss:,.0f} (workers)")  # fmt: skip
    table.add_row(f"batched vector env, {args.envs} episodes", "1", f"{batched_rate:.1f}",
                  f"{batched_rate / process_rate:.2f}x", f"{own_rss:,.0f} (this process)")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
