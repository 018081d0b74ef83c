"""A span head's RL-stage groups played as one batch against one play at a time (real SmolLM2-135M).

The stage (:mod:`rlprune.train.kinds.span_ppo`) plays each prompt ``--group`` times; :func:`play`
runs a group's plays as the rows of one batch, sharing each reduced forward and each decoding step.
This script plays ``--prompts`` training prompts that way, then replays every drawn keep-set alone
in the single environment, and prints the seconds per play both ways, their ratio, and the largest
difference between a row's reward and the single environment's for the same keep-set.

    python benchmarks/group_play.py --policy smollm2-135m-span --prompts 6 --group 6 --decode-tokens 24
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

import torch
from rich.console import Console
from rich.table import Table

from rlprune import load_model, load_policy
from rlprune.envs import EnvConfig, RewardConfig, TokenReductionEnv, TokenReductionVectorEnv
from rlprune.reduction import LayerAction, unit_ranking
from rlprune.train.kinds.span_ppo import CutScores, play


def alone(env: TokenReductionEnv, head, task_index: int, budget: float, keys: torch.Tensor) -> float:
    """One keep-set of a group (its perturbed unit scores ``keys``) played alone; its reward."""
    env.reset(options={"task_index": task_index, "budget": budget})
    cuts = head.later if head.hands_over(env.features()) else head
    total = 0.0
    while env.features().layer < cuts.decision_layer:
        total += env.step(LayerAction())[1]
    features = env.features()
    cut = CutScores.read(cuts, features)
    chosen = keys if cut.units is None else unit_ranking(cut.token_scores, cut.units, keys)
    action = dataclasses.replace(features.action_for_share(cuts.op, "learned", 1.0), token_scores=chosen)
    done = False
    while not done:
        _, reward, done, _, _ = env.step(action)
        total, action = total + reward, LayerAction()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="span-rl", help="the stage's environment preset (name or path)")
    parser.add_argument("--policy", default="smollm2-135m-span")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--group", type=int, default=6)
    parser.add_argument("--decode-tokens", type=int, default=24, help="0: teacher-forced episodes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(2)
    preset = EnvConfig.load(args.env)
    model, tokenizer = load_model(preset.model)
    head = load_policy(args.policy, model)
    episode = dataclasses.replace(preset.episode, decision_layers=head.layers, decode_tokens=args.decode_tokens)
    reward = preset.reward
    if args.decode_tokens:  # judged by the decoded answer, as a decoding stage is
        decoded = {"solved": 1.0, "confidence": 0.25, "echo": 0.5, "loop": 0.5}
        reward = dataclasses.replace(reward, **dict.fromkeys(RewardConfig.TEACHER_FORCED, 0.0), **decoded)
    env = TokenReductionEnv(
        dataclasses.replace(preset, episode=episode, reward=reward), model=model, tokenizer=tokenizer
    )
    rng = random.Random(args.seed)
    low, high = episode.budget[0], episode.budget[-1]
    requests = [(rng.randrange(len(env.tasks)), rng.uniform(low, high)) for _ in range(args.prompts)]
    env.references.warm([env.tasks[task] for task, _ in requests], "training prompts")
    rows = TokenReductionVectorEnv(env, args.group)
    play(rows, head, requests[0][0], requests[0][1], args.group, seed=args.seed)  # warm-up, untimed

    batched = single = 0.0
    difference = 0.0
    for index, (task, budget) in enumerate(requests):
        began = time.perf_counter()
        played = play(rows, head, task, budget, args.group, seed=args.seed + index)
        batched += time.perf_counter() - began
        began = time.perf_counter()
        rewards = [alone(env, head, task, budget, keys) for keys in played.keys]
        single += time.perf_counter() - began
        difference = max(difference, float((played.rewards - torch.tensor(rewards)).abs().max()))

    plays = args.prompts * args.group
    table = Table(title=f"{args.prompts} prompts x {args.group} plays, decode_tokens = {args.decode_tokens}")
    for column in ("one batch per group, s/play", "one at a time, s/play", "speedup", "max reward difference"):
        table.add_column(column, justify="right")
    table.add_row(f"{batched / plays:.3f}", f"{single / plays:.3f}", f"{single / batched:.2f}x", f"{difference:.1e}")
    Console().print(table)


if __name__ == "__main__":
    main()
