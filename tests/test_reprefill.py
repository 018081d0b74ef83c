"""Ops as registered objects, and the re-prefill op: choose tokens at a middle layer, run the prompt
again from layer 0 on them alone (GemFilter-style)."""

from __future__ import annotations

import pytest
import torch
from conftest import CONFIGS, random_ids, tiny_model
from test_flops import WIDE, counted

from rlprune import LayerAction, Reducer, flops
from rlprune.engine.features import ActionSpec, Features
from rlprune.errors import InvalidActionError
from rlprune.policies import make_baseline
from rlprune.reduction import OPS, POLICY_OPS, SCORERS, register_op
from rlprune.reduction.ops import Prune

UNWINDOWED = ["llama", "mistral", "qwen2", "qwen3"]
"""Families without sliding windows: there the reducer's masks equal the model's own on any subset."""


def on_kept(model, ids: torch.Tensor, positions: torch.Tensor, new: torch.Tensor | None = None) -> torch.Tensor:
    """The model's own logits for the kept tokens alone, at their original positions (then ``new``)."""
    kept = ids[:, positions]
    if new is not None:
        start = int(ids.shape[1])
        kept = torch.cat((kept, new[None]), dim=1)
        positions = torch.cat((positions, torch.arange(start, start + new.numel())))
    return model(kept, position_ids=positions[None]).logits


def test_ops_are_one_registry():
    assert tuple(OPS)[:3] == ("keep", "prune", "merge") and "reprefill" in OPS
    assert ActionSpec().ops == POLICY_OPS == ("keep", "prune", "merge")  # shipped action spaces unchanged
    assert ActionSpec(ops=("keep", "reprefill")).nvec[0] == 2
    assert str(LayerAction("reprefill", 0.25, "last_query")) == "reprefill:0.25:last_query"
    with pytest.raises(InvalidActionError, match="keep, prune, merge, reprefill"):
        LayerAction("gemfilter", 0.5)
    with pytest.raises(InvalidActionError, match="unknown op"):
        LayerAction(["prune"], 0.5)  # type: ignore[arg-type]


def test_a_registered_op_runs_through_the_reducer_and_its_projection(llama):
    @register_op
    class CheapPrune(Prune):
        name = "cheap-prune"

        def cost(self, action, price):
            return 0.0

    try:
        reducer = Reducer(llama)
        ids = random_ids(70, seed=5)
        schedule = {1: LayerAction("cheap-prune", 0.5, "attention")}
        out = reducer.run(ids, schedule, logits="all")
        pruned = reducer.run(ids, {1: LayerAction("prune", 0.5, "attention")}, logits="all")
        assert torch.equal(out.logits, pruned.logits)
        scoring = SCORERS["attention"].flops(reducer.dims, 70, reducer.config.protect_last)
        assert out.flops == pytest.approx(pruned.flops - scoring)
        state = reducer.start(ids, decision_layers=[1])
        assert reducer.project_flops(state, schedule) == pytest.approx(reducer.run(ids, schedule).flops, rel=1e-12)
    finally:
        del OPS["cheap-prune"]


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_reprefill_that_removes_nothing_is_the_model(arch):
    model = tiny_model(arch)
    ids = random_ids(40, seed=6)
    reducer = Reducer(model)
    expected = model(ids).logits
    for action in (LayerAction("reprefill", 0.0), LayerAction("reprefill", 1.0)):
        protect = 0 if action.ratio == 0 else 40  # ratio 1 with every token protected removes nothing
        out = reducer.run(ids, {2: action}, logits="all", protect_last=protect)
        assert (out.logits - expected).abs().max() <= 1e-4
        assert out.tokens_per_layer == [40] * 4
        assert out.flops == pytest.approx(out.flops_full)


@pytest.mark.parametrize("arch", UNWINDOWED)
@pytest.mark.parametrize("layer", [0, 2, 3])
def test_reprefill_is_the_model_run_on_the_kept_tokens_alone(arch, layer):
    """Logits, the cache and decoding from it: all as if the prompt had only the kept tokens."""
    model = tiny_model(arch)
    ids = random_ids(64, seed=7)
    reducer = Reducer(model)
    out = reducer.run(ids, {layer: LayerAction("reprefill", 0.6, "attention")}, logits="all")
    kept = out.state.positions
    assert kept.numel() == 64 - round(0.6 * (64 - 1 - 8))
    assert (out.logits - on_kept(model, ids, kept)).abs().max() <= 1e-4
    assert out.tokens_per_layer == [kept.numel()] * 4 == out.state.kv_counts
    assert [layer_cache.keys.shape[-2] for layer_cache in out.cache.layers] == [kept.numel()] * 4
    assert out.kv_bytes == sum(c.keys.nbytes + c.values.nbytes for c in out.cache.layers)
    assert torch.equal(out.state.reaches_top(), torch.isin(torch.arange(64), kept))
    new = torch.tensor([5, 9, 11])
    decoded = reducer.extend(out.state, new[None])
    assert (decoded - on_kept(model, ids, kept, new)[:, -3:]).abs().max() <= 1e-4


def test_reprefill_after_a_merge_restarts_from_the_kept_tokens_own_embeddings(llama):
    ids = random_ids(64, seed=8)
    reducer = Reducer(llama)
    schedule = {1: LayerAction("merge", 0.4, "similarity"), 2: LayerAction("reprefill", 0.5, "attention")}
    out = reducer.run(ids, schedule, logits="all")
    assert not out.state.merged and bool((out.state.sizes == 1).all())
    assert (out.logits - on_kept(llama, ids, out.state.positions)).abs().max() <= 1e-4


def test_reprefill_from_a_resumed_state_equals_the_full_run_and_can_decode(llama):
    ids = random_ids(50, seed=9)
    reducer = Reducer(llama)
    schedule = {2: LayerAction("reprefill", 0.5, "key_norm")}
    plain = reducer.run(ids, schedule, logits="all")
    hidden = reducer.start(ids, decision_layers=[2]).hidden
    resumed = reducer.run(ids, schedule, logits="all", resume_from=hidden)
    assert (resumed.logits - plain.logits).abs().max() <= 1e-4
    assert resumed.flops == pytest.approx(plain.flops)
    assert not resumed.state.resumed  # every layer's cache was rebuilt on the kept tokens
    new = torch.tensor([[4]])
    assert (reducer.extend(resumed.state, new) - reducer.extend(plain.state, new)).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "actions",
    [
        [LayerAction("reprefill", 0.5), LayerAction("reprefill", 0.3, "key_norm"), LayerAction("reprefill", 0.7)],
        [LayerAction("reprefill", 0.5), LayerAction("prune", 0.4), LayerAction()],
        [LayerAction(), LayerAction("merge", 0.5, "similarity"), LayerAction("reprefill", 0.6, "relevance")],
    ],
    ids=["all-reprefill", "mixed", "mixed-merge"],
)
def test_reprefill_rows_of_a_padded_batch_equal_each_row_alone(llama, actions):
    prompts = [random_ids(n, seed=10 + n)[0] for n in (48, 33, 60)]
    reducer = Reducer(llama)
    batch = reducer.start(prompts, decision_layers=[2])
    reducer.step(batch, actions)
    together = reducer.finish(batch, logits="all")
    new = torch.tensor([[5, 7], [9, 11], [13, 17]])
    decoded = reducer.extend(batch, new)  # decoding reads the re-run layers' cache
    generated = reducer.generate(prompts, lambda row: actions[row.row], decision_layers=[2], max_new_tokens=5)
    for b, (prompt, action, out) in enumerate(zip(prompts, actions, together, strict=True)):
        alone = reducer.run(prompt, {2: action}, logits="all")
        assert (out.logits - alone.logits).abs().max() <= 1e-4
        assert out.tokens_per_layer == alone.tokens_per_layer
        assert out.flops == pytest.approx(alone.flops)
        assert (decoded[b] - reducer.extend(alone.state, new[b : b + 1])[0]).abs().max() <= 1e-4
        assert out.state.kv_counts == alone.state.kv_counts
        if action.op == "reprefill":
            assert alone.state.kv_counts == [alone.state.n_tokens + 2] * 4
        assert torch.equal(generated[b].tokens, reducer.generate(prompt, {2: action}, max_new_tokens=5).tokens)


def test_a_resumed_batch_with_some_rows_reprefilling_equals_each_row_alone(llama):
    prompts = [random_ids(n, seed=20 + n)[0] for n in (40, 52)]
    actions = [LayerAction("prune", 0.5), LayerAction("reprefill", 0.5)]
    reducer = Reducer(llama)
    hidden = [reducer.start(prompt, decision_layers=[2]).hidden for prompt in prompts]
    batch = reducer.start(prompts, decision_layers=[2], resume_from=hidden)
    together = reducer.finish(reducer.step(batch, actions), logits="all")
    for prompt, action, start, out in zip(prompts, actions, hidden, together, strict=True):
        alone = reducer.run(prompt, {2: action}, logits="all", resume_from=start)
        assert (out.logits - alone.logits).abs().max() <= 1e-4
        assert out.flops == pytest.approx(alone.flops)
        assert out.state.kv_counts == alone.state.kv_counts and out.state.resumed


@pytest.mark.parametrize(("arch", "shape"), [("llama", WIDE), ("llama", {}), ("gemma3", {}), ("mistral-sliding", {})])
def test_reprefill_flops_match_the_flop_counter(arch, shape):
    """Charged: layers before the decision on every token, scoring, then the whole model on the kept ones."""
    model = tiny_model(arch, **shape)
    ids = random_ids(120, seed=21)
    reducer = Reducer(model)
    schedule = {2: LayerAction("reprefill", 0.6, "attention")}
    out = reducer.run(ids, schedule, logits="all")
    dims, kept, positions = reducer.dims, out.state.n_tokens, int(out.logit_positions.numel())
    scoring = SCORERS["attention"].flops(dims, 120, reducer.config.protect_last)

    def total(causal: bool) -> float:
        first = flops.layers_flops(dims, 0, 2, 120, causal)
        return first + scoring + flops.prefill_flops(dims, [kept] * dims.layers, positions, causal)

    assert out.flops == pytest.approx(total(causal=True), rel=1e-12)
    measured = counted(lambda: reducer.run(ids, schedule, logits="all"))
    assert total(causal=False) == pytest.approx(measured, rel=0.05)
    state = reducer.start(ids, decision_layers=[2])
    assert reducer.project_flops(state, schedule) + flops.lm_head_flops(dims, positions - 1) == pytest.approx(
        out.flops, rel=1e-12
    )


def test_a_share_of_the_budget_turns_into_a_reprefill_that_meets_it():
    model = tiny_model("llama", layers=12, max_position_embeddings=1024)
    reducer = Reducer(model)
    state = reducer.start(random_ids(300, seed=30), decision_layers=[3])
    action = Features(reducer, state, 0.5).action_for_share("reprefill", "attention", 1.0)
    out = reducer.finish(reducer.step(state, action))
    assert action.op == "reprefill" and out.flops_ratio <= 0.5 < out.flops_ratio + 0.01


def test_gemfilter_reprefills_so_every_layer_holds_the_kept_tokens():
    """Its budget is checked with every baseline's (test_policies); here, what re-prefill leaves."""
    model = tiny_model("llama", layers=12, max_position_embeddings=1024)
    reducer = Reducer(model)
    baseline = make_baseline("gemfilter:layer=4")
    out = reducer.run(random_ids(512, seed=40), policy=baseline, budget=0.5)
    assert out.state.actions[baseline.layer].op == "reprefill"
    assert out.state.n_tokens < 512 and out.tokens_per_layer == [out.state.n_tokens] * 12


def test_gemfilter_spec():
    baseline = make_baseline("gemfilter")
    assert str(baseline) == "gemfilter:layer=8,ratio=0.5"
    assert baseline.schedule(0.3, 30) == {8: LayerAction("reprefill", 0.3, "last_query")}
