"""The reducer consults a policy: ``run/select/generate(ids, policy=..., budget=...)`` is the policy's
own decision at each of its layers, and a policy that does not fit the model is refused up front."""

from __future__ import annotations

import pytest
import torch
from conftest import random_ids, tiny_model

from rlprune import AverageBudget, BudgetController, InvalidActionError, InvalidArgumentError, LayerAction, Reducer
from rlprune.engine import Features
from rlprune.engine.compat import IncompatiblePolicyError
from rlprune.policies import ReductionPolicy, SpanHeadPolicy, make_baseline


def _span_head(model) -> SpanHeadPolicy:
    torch.manual_seed(0)
    head = SpanHeadPolicy(model.config.hidden_size, decision_layer=2, rank=8, channels=4, kernel=5)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return head


def _layer_policy() -> ReductionPolicy:
    """A layer policy that prunes by relevance at layers 1 and 2, closing a third of the gap each time."""
    policy = ReductionPolicy(decision_layers=(1, 2))
    spec = policy.action_spec
    with torch.no_grad():
        policy.action_head.bias.zero_()
        for index in (spec.ops.index("prune"), 3 + spec.shares.index(0.35), 9 + spec.scorers.index("relevance")):
            policy.action_head.bias[index] = 4.0
    return policy


def _by_hand(reducer: Reducer, policy, budget: float):
    """The per-row decision and layers a caller once wrote out: features, then the policy's act."""

    def decide(state):
        return policy.act(Features(reducer, state, budget), budget, True)

    return decide, policy.decision_layers(reducer.dims.layers)


@pytest.mark.parametrize("kind", ["span", "layer", "baseline"])
def test_a_policy_runs_as_its_own_decision_at_its_own_layers(kind):
    model = tiny_model("llama")
    reducer = Reducer(model)
    policy = {"span": _span_head, "layer": lambda _: _layer_policy(), "baseline": lambda _: make_baseline("snapkv")}
    policy = policy[kind](model)
    ids = random_ids(100, seed=7)
    rows = [random_ids(n, seed=n)[0] for n in (60, 90)]
    for budget in (0.6, 0.8):
        decide, layers = _by_hand(reducer, policy, budget)
        new = reducer.run(ids, policy=policy, budget=budget, protect_last=6, logits="all")
        old = reducer.run(ids, decide, decision_layers=layers, protect_last=6, logits="all")
        assert new.tokens_per_layer != [100] * 4  # something was removed
        assert torch.equal(new.state.positions, old.state.positions) and torch.equal(new.logits, old.logits)
        assert new.state.actions == old.state.actions
        selected = reducer.select(ids, policy=policy, budget=budget, protect_last=6)
        assert torch.equal(selected.reaches_top(), old.state.reaches_top())
        new = reducer.generate(rows, policy=policy, budget=budget, max_new_tokens=4, eos_token_id=[], protect_last=5)
        old = reducer.generate(rows, decide, decision_layers=layers, max_new_tokens=4, eos_token_id=[], protect_last=5)
        for a, b in zip(new, old, strict=True):
            assert torch.equal(a.tokens, b.tokens) and torch.equal(a.prefill.state.positions, b.prefill.state.positions)


def test_a_learned_policy_without_a_budget_runs_at_its_own_and_average_mode_at_the_given_ratio():
    model = tiny_model("llama")
    reducer = Reducer(model)
    head = _span_head(model)
    ids = random_ids(100, seed=8)
    head.default_budget = 0.7
    own = reducer.run(ids, policy=head, protect_last=6)
    assert torch.equal(own.state.positions, reducer.run(ids, policy=head, budget=0.7, protect_last=6).state.positions)
    head.default_budget = None
    with pytest.raises(InvalidActionError, match="records no budget"):
        reducer.run(ids, policy=head, protect_last=6)
    for policy in (head, make_baseline("snapkv")):  # the head proposes its own ratio, snapkv the target
        stream = BudgetController(AverageBudget(0.65, floor=0.5, ceiling=0.8))
        averaged = reducer.run(ids, policy=policy, budget=stream, protect_last=6)
        (ratio,) = stream.given  # fixed at the prompt's first decision, then kept
        fixed = reducer.run(ids, policy=policy, budget=ratio, protect_last=6)
        assert torch.equal(averaged.state.positions, fixed.state.positions) and averaged.flops_ratio < 0.85
    assert stream.pending == [0.65] and stream.given == pytest.approx([0.65], abs=1e-9)  # the offset is bisected


class _Outside:
    """A policy that names a layer the 4-layer model lacks, and counts the times it is asked to act."""

    name = "outside"

    def __init__(self, layers):
        self.layers, self.acted = layers, 0

    def decision_layers(self, num_layers):
        return self.layers

    def act(self, features, budget, deterministic=True):
        self.acted += 1
        return LayerAction("prune", 0.5)


@pytest.mark.parametrize(("layers", "shown"), [((1, 7), "is 7"), ((-1,), "is -1"), ((1.5,), r"\[1.5\]")])
def test_a_policy_deciding_outside_the_model_is_refused_before_any_layer_runs(layers, shown):
    model = tiny_model("llama")
    reducer = Reducer(model)
    ran = []
    model.model.embed_tokens.register_forward_hook(lambda *_: ran.append("embed"))
    for layer in reducer.layers:
        layer.register_forward_hook(lambda *_: ran.append("layer"))
    policy = _Outside(layers)
    for call in (reducer.run, reducer.select):
        with pytest.raises(IncompatiblePolicyError, match=rf"^outside: .*{shown}"):
            call(random_ids(40), policy=policy, budget=0.5)
    with pytest.raises(IncompatiblePolicyError, match=f"^outside: .*{shown}"):
        reducer.generate(random_ids(40), policy=policy, budget=0.5, max_new_tokens=2)
    assert ran == [] and policy.acted == 0
    reducer.run(random_ids(40), policy=_Outside((1, 3)), budget=0.5)  # the same policy inside the model runs
    assert "layer" in ran


def test_what_goes_with_a_policy_is_checked():
    model = tiny_model("llama")
    reducer = Reducer(model)
    head, ids = _span_head(model), random_ids(40)
    with pytest.raises(InvalidArgumentError, match="not both"):
        reducer.run(ids, {2: LayerAction("prune", 0.5)}, policy=head, budget=0.5)
    with pytest.raises(InvalidArgumentError, match="not both"):
        reducer.run(ids, policy=head, budget=0.5, decision_layers=(1,))
    with pytest.raises(InvalidArgumentError, match="budget= goes with policy="):
        reducer.run(ids, {2: LayerAction("prune", 0.5)}, budget=0.5)
    with pytest.raises(InvalidActionError, match="policy=policy"):
        reducer.run(ids, head)  # a policy where a schedule goes
    with pytest.raises(InvalidArgumentError, match="budget"):
        reducer.run(ids, policy=head, budget=1.5)
    with pytest.raises(InvalidArgumentError, match="decision_layers"):
        reducer.run(ids, policy="snapkv", budget=0.5)  # a spec is resolved above the engine (resolve_policy)


def test_a_rescored_policy_removes_as_many_tokens_its_own_way_and_copies():
    """:class:`Rescored` keeps the policy's layers and counts and goes by the scores it rewrites."""
    import copy
    from dataclasses import dataclass

    from rlprune.engine.policy import Rescored

    @dataclass
    class Reversed(Rescored):
        def rescore(self, features, scores):
            return -scores

    model = tiny_model("llama")
    reducer = Reducer(model)
    head = _span_head(model)
    ids = random_ids(80, seed=4)
    own = reducer.run(ids, policy=head, budget=0.8, protect_last=4)
    for policy in (Reversed(head), copy.deepcopy(Reversed(head))):
        out = reducer.run(ids, policy=policy, budget=0.8, protect_last=4)
        assert out.tokens_per_layer == own.tokens_per_layer and out.flops_ratio == pytest.approx(own.flops_ratio)
        assert not torch.equal(out.state.positions, own.state.positions)
        assert policy.decision_layers(4) == head.decision_layers(4) and policy.default_budget == head.default_budget
    with pytest.raises(NotImplementedError):  # the base says what to rewrite; it has no scores of its own
        Rescored(head).rescore(None, torch.zeros(3))
