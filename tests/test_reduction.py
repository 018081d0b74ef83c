"""Prune and merge: causality, how much goes, what survives, and the merge arithmetic."""

from __future__ import annotations

import pytest
import torch
from conftest import random_ids, tiny_model
from test_runner import _record, _replay

from rlprune import LayerAction, Reducer, ReducerConfig
from rlprune.reduction import SCORERS, ReductionPlan, apply_plan, match_merge_targets, select_least_important

SCHEDULES = {
    "prune": {1: LayerAction("prune", 0.5, "attention"), 2: LayerAction("prune", 0.5, "key_norm")},
    "merge": {1: LayerAction("merge", 0.5, "similarity"), 2: LayerAction("merge", 0.6, "attention")},
}


@pytest.mark.parametrize("op", sorted(SCHEDULES))
def test_outputs_up_to_t_ignore_tokens_after_t(op):
    """With the same tokens removed, changing tokens after t changes no output at positions <= t."""
    model, t = tiny_model("llama"), 40
    original = random_ids(64, seed=10)
    changed = original.clone()
    changed[0, t + 1 :] = random_ids(64 - t - 1, seed=11)[0]
    reducer = Reducer(model)
    plans = _record(reducer)
    before = reducer.run(original, SCHEDULES[op], logits="all")
    _replay(reducer, plans)
    after = reducer.run(changed, SCHEDULES[op], logits="all")
    assert torch.equal(before.logit_positions, after.logit_positions)
    assert sum(len(p) for p in plans.values()) > 10  # the schedule really removed tokens
    early = before.logit_positions <= t
    assert (before.logits[0, early] - after.logits[0, early]).abs().max() <= 1e-5
    assert (before.logits[0, ~early] - after.logits[0, ~early]).abs().max() > 1e-3  # the test can fail


def test_merge_only_moves_information_forward():
    model = tiny_model("qwen2")
    for seed in range(5):
        reducer = Reducer(model)
        plans = _record(reducer)
        reducer.run(random_ids(80, seed=seed), {1: LayerAction("merge", 0.2 * (seed + 1))})
        plan = plans[1]
        merged = plan.into >= 0
        assert (plan.into[merged] > plan.remove[merged]).all()
        assert not set(plan.into[merged].tolist()) & set(plan.remove.tolist())  # targets stay


@pytest.mark.parametrize("op", ["prune", "merge"])
@pytest.mark.parametrize("scorer", sorted(SCORERS))
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_removes_the_requested_share_and_keeps_protected_tokens(op, scorer, ratio):
    model = tiny_model("llama")
    n, protect_last = 70, 6
    reducer = Reducer(model, ReducerConfig(protect_first=1))
    plans = _record(reducer)
    scores = torch.randn(n, generator=torch.Generator().manual_seed(3)) if scorer == "learned" else None
    action = LayerAction(op, ratio, scorer, token_scores=scores)
    out = reducer.run(random_ids(n, seed=12), {2: action}, protect_last=protect_last)
    removable = n - 1 - protect_last
    expected = n - round(ratio * removable)
    assert out.tokens_per_layer == [n, n, expected, expected]
    kept = set(out.state.positions.tolist())
    assert {0, *range(n - protect_last, n)} <= kept
    assert out.state.cache_lengths() == out.tokens_per_layer
    assert out.state.hidden.shape[1] == expected
    if op == "merge" and ratio > 0:
        dropped = int((plans[2].into < 0).sum())  # no receivable token within reach
        assert out.state.sizes.sum() == n - dropped  # every merged token is accounted for
        if ratio <= 0.5:
            assert dropped <= 2


def test_scores_rank_every_token(any_arch):
    reducer = Reducer(any_arch)
    state = reducer.start(random_ids(33, seed=13), decision_layers=[2])
    ctx = reducer.score_context(state)
    for name, scorer in SCORERS.items():
        if name == "learned":  # scores come from a policy's own network
            with pytest.raises(ValueError, match="token scores"):
                scorer.score(ctx)
            continue
        scores = scorer.score(ctx)
        assert scores.shape == (33,) and torch.isfinite(scores).all()


def test_select_least_important_never_takes_protected_tokens():
    scores = torch.tensor([0.0, 5.0, 1.0, 3.0, -1.0, 2.0])
    removable = torch.tensor([False, True, True, True, False, True])
    assert select_least_important(scores, removable, 2).tolist() == [2, 5]
    assert select_least_important(scores, removable, 10).tolist() == [1, 2, 3, 5]


def test_merge_is_a_size_weighted_mean_into_the_later_token():
    hidden = torch.tensor([[[1.0, 0.0], [2.0, 2.0], [4.0, 4.0], [10.0, 0.0]]])
    positions = torch.arange(4)
    sizes = torch.tensor([1.0, 3.0, 1.0, 1.0])
    plan = ReductionPlan(remove=torch.tensor([1]), into=torch.tensor([2]))
    new_hidden, new_positions, new_sizes = apply_plan(hidden, positions, sizes, plan)
    assert new_positions.tolist() == [0, 2, 3]
    assert new_sizes.tolist() == [1.0, 4.0, 1.0]
    assert torch.allclose(new_hidden[0, 1], torch.tensor([2.5, 2.5]))
    assert torch.equal(new_hidden[0, [0, 2]], hidden[0, [0, 3]])


def test_merge_targets_are_later_receivable_and_most_similar():
    normed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0], [1.0, 0.0]])
    remove = torch.tensor([0, 1])
    can_receive = torch.tensor([False, False, True, True, False])
    assert match_merge_targets(normed, remove, can_receive, window=4).tolist() == [2, 3]
    assert match_merge_targets(normed, torch.tensor([3]), can_receive, window=4).tolist() == [-1]
