"""Environment steps per second on Ray env runners (RLlib PPO), with 1 and with 2 runners.

The same preset and recipe for every count; the first iteration (runner start-up, model
loading) is not timed. Prints steps per second per runner count and the speedup over one.

    python benchmarks/ray_scaling.py [--env grounded-qa] [--recipe ppo-ray] [--runners 1,2] [--iterations 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import ray
from ray.tune.registry import register_env
from rich.console import Console
from rich.table import Table

from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.train.backends.rllib import ENV_NAME, algorithm_config, init_ray, make_env
from rlprune.train.recipe import Recipe


def steps_per_second(env: str, recipe: Recipe, runners: int, iterations: int) -> float:
    recipe = dataclasses.replace(recipe, run=dataclasses.replace(recipe.run, n_envs=runners))
    _, cpus = init_ray(None, runners)
    register_env(ENV_NAME, make_env)
    algo = algorithm_config(env, EnvConfig.load(env), recipe, None, cpus).build_algo()
    try:
        algo.train()  # start-up: not timed
        steps, started = 0, time.perf_counter()
        for _ in range(iterations):
            steps += int(algo.train()["env_runners"]["num_env_steps_sampled"])
        return steps / (time.perf_counter() - started)
    finally:
        algo.stop()
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="grounded-qa")
    parser.add_argument("--recipe", default="ppo-ray")
    parser.add_argument("--runners", default="1,2")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--rollout", type=int, default=128, help="steps per runner per iteration")
    args = parser.parse_args()

    recipe = Recipe.load(args.recipe)
    recipe = dataclasses.replace(recipe, ppo=dataclasses.replace(recipe.ppo, n_steps=args.rollout))
    env = TokenReductionEnv(args.env, split="train")  # reference outputs once, before any timing
    env.references.warm(env.tasks, "training prompts")
    counts = [int(c) for c in args.runners.split(",")]
    rates = {n: steps_per_second(args.env, recipe, n, args.iterations) for n in counts}
    table = Table(title=f"RLlib PPO sampling+learning on {args.env} ({EnvConfig.load(args.env).model})")
    for column in ("env runners", "env steps / s", "vs 1 runner"):
        table.add_column(column, justify="right")
    for n, rate in rates.items():
        table.add_row(str(n), f"{rate:.2f}", f"{rate / rates[counts[0]]:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
