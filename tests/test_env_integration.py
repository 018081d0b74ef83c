"""Reward sanity on the real SmolLM2-135M."""

from __future__ import annotations

import pytest

from rlprune.envs import TokenReductionEnv, generate_suite
from rlprune.reduction import LayerAction

pytestmark = pytest.mark.integration

KEEP = LayerAction()


@pytest.fixture(scope="module")
def env(smollm2, tmp_path_factory):
    model, tokenizer = smollm2
    tasks = generate_suite({"grounded": 1.0}, "validation", 3, tokens=(150, 200))
    return TokenReductionEnv(
        "grounded-qa", model=model, tokenizer=tokenizer, tasks=tasks, cache_dir=tmp_path_factory.mktemp("refs")
    )


def play(env, actions, **options):
    env.reset(seed=0, options=options)
    rewards = []
    for action in actions:
        _, reward, done, _, info = env.step(action)
        rewards.append(reward)
    assert done
    return rewards, info


def test_no_reduction_has_no_kl_and_no_efficiency_reward(env):
    for index in range(3):
        rewards, info = play(env, [KEEP] * 4, task_index=index)
        assert info["kl"] < 1e-4 and info["agreement"] == 1.0
        assert rewards[:3] == [0.0, 0.0, 0.0]
        assert info["flops_ratio"] == pytest.approx(1.0)


def test_pruning_everything_early_is_far_worse_than_a_little_late(env):
    for index in range(3):
        _, heavy = play(env, [LayerAction("prune", 1.0, "attention"), KEEP, KEEP, KEEP], task_index=index)
        _, light = play(env, [KEEP, KEEP, KEEP, LayerAction("prune", 0.1, "attention")], task_index=index)
        assert heavy["kl"] > 0.1
        assert heavy["kl"] > 10 * light["kl"]
        assert heavy["flops_ratio"] < light["flops_ratio"]


def test_going_over_budget_costs_reward(env):
    actions = [LayerAction("prune", 0.5, "relevance"), KEEP, KEEP, KEEP]
    loose, info = play(env, actions, task_index=0, budget=1.0)
    tight, _ = play(env, actions, task_index=0, budget=0.3)
    assert info["flops_ratio"] > 0.3
    assert sum(tight) < sum(loose)
