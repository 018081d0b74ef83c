"""The reduced forward path: identity, decoding from the reduced cache, and shrinking as asked."""

from __future__ import annotations

import pytest
import torch
from conftest import random_ids, tiny_model

from rlprune import KEEP, LayerAction, Reducer, ReducerConfig


def test_no_reduction_reproduces_model_logits(any_arch):
    ids = random_ids(48)
    expected = any_arch(ids).logits
    out = Reducer(any_arch).run(ids, logits="all")
    assert out.logits.shape == expected.shape
    assert (out.logits - expected).abs().max() <= 1e-4


def test_keep_and_zero_ratio_actions_are_identity(llama):
    ids = random_ids(40, seed=1)
    expected = llama(ids).logits
    schedule = {i: KEEP for i in range(4)} | {2: LayerAction("prune", 0.0), 3: LayerAction("merge", 0.0)}
    out = Reducer(llama).run(ids, schedule, logits="all")
    assert (out.logits - expected).abs().max() <= 1e-4
    assert out.tokens_per_layer == [40] * 4
    assert out.flops_ratio == pytest.approx(1.0)


def test_step_by_step_equals_run(llama):
    ids = random_ids(50, seed=2)
    reducer = Reducer(llama)
    schedule = {1: LayerAction("prune", 0.4), 3: LayerAction("merge", 0.5, "similarity")}
    state = reducer.start(ids, decision_layers=[1, 3])
    assert state.layer == 1 and state.tokens_per_layer == [50]
    while not state.done:
        state = reducer.step(state, schedule[state.layer])
    stepped = reducer.finish(state, logits="all")
    ran = reducer.run(ids, schedule, logits="all")
    assert torch.equal(stepped.logits, ran.logits)
    assert stepped.tokens_per_layer == ran.tokens_per_layer


def test_callable_policy_decides_at_each_decision_layer(llama):
    seen = []

    def policy(state):
        seen.append((state.layer, state.n_tokens))
        return LayerAction("prune", 0.5)

    out = Reducer(llama, ReducerConfig(decision_layers=(1, 2))).run(random_ids(60), policy)
    assert [layer for layer, _ in seen] == [1, 2]
    assert seen[1][1] < seen[0][1]
    assert out.tokens_per_layer[0] == 60 and out.tokens_per_layer[2] < out.tokens_per_layer[1] < 60


def test_generate_matches_hf_generate_without_reduction(any_arch):
    ids = random_ids(30, seed=3)
    expected = any_arch.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    result = Reducer(any_arch).generate(ids, max_new_tokens=12, eos_token_id=[])
    assert torch.equal(result.sequences, expected)


def test_generate_stops_at_eos(llama):
    ids = random_ids(20, seed=4)
    free = Reducer(llama).generate(ids, max_new_tokens=8, eos_token_id=[])
    eos = int(free.tokens[0, 2])
    stopped = Reducer(llama).generate(ids, max_new_tokens=8, eos_token_id=eos)
    first = next(i for i, t in enumerate(free.tokens[0].tolist()) if t == eos)
    assert stopped.tokens.shape[1] == first + 1 and stopped.stopped_at_eos


def test_sampling_is_seeded(llama):
    ids = random_ids(20, seed=5)
    reducer = Reducer(llama)
    runs = [
        reducer.generate(
            ids,
            {1: LayerAction("merge", 0.5)},
            max_new_tokens=10,
            do_sample=True,
            top_k=20,
            top_p=0.9,
            temperature=1.5,
            eos_token_id=[],
            generator=torch.Generator().manual_seed(seed),
        ).tokens
        for seed in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_decoding_continues_from_the_reduced_cache(llama):
    ids = random_ids(64, seed=6)
    schedule = {1: LayerAction("prune", 0.5), 2: LayerAction("merge", 0.5)}
    result = Reducer(llama).generate(ids, schedule, max_new_tokens=5, eos_token_id=[])
    state = result.prefill.state
    decoded = result.tokens.shape[1] - 1  # the last token is returned, not fed back
    assert state.cache_lengths() == [n + decoded for n in result.prefill.tokens_per_layer]
    for i, n in enumerate(state.cache_lengths()):
        assert state.cache.layers[i].keys.shape[-2] == n


def _replay(reducer: Reducer, plans: dict) -> None:
    """Make ``reducer`` reuse recorded plans instead of choosing tokens again."""
    reducer.plan = lambda state, action: plans[state.layer]


def _record(reducer: Reducer) -> dict:
    plans, choose = {}, reducer.plan

    def recording(state, action):
        plans[state.layer] = choose(state, action)
        return plans[state.layer]

    reducer.plan = recording
    return plans


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_teacher_forcing_on_the_reduced_cache_equals_one_reduced_prefill(arch):
    """Feeding a continuation through the reduced cache gives what one prefill of prompt+continuation
    gives with the same tokens removed: decoding sees exactly what the prefill kept, merged sizes included."""
    model = tiny_model(arch)
    prompt, continuation = random_ids(48, seed=7), random_ids(6, seed=8)
    schedule = {1: LayerAction("prune", 0.4), 2: LayerAction("merge", 0.6, "similarity")}
    reducer = Reducer(model)
    plans = _record(reducer)
    state = reducer.run(prompt, schedule, protect_last=4).state
    extended = reducer.extend(state, continuation[0])
    _replay(reducer, plans)
    whole = reducer.run(torch.cat((prompt, continuation), dim=1), schedule, logits="all", protect_last=10)
    assert (extended - whole.logits[:, -6:]).abs().max() <= 1e-4


def test_extend_without_reduction_matches_the_model(llama):
    ids = random_ids(40, seed=9)
    reducer = Reducer(llama)
    state = reducer.run(ids[:, :30]).state
    assert (reducer.extend(state, ids[0, 30:]) - llama(ids).logits[:, 30:]).abs().max() <= 1e-4


@pytest.mark.parametrize("op", ["prune", "merge"])
def test_a_teacher_forced_continuation_scores_like_decoding_it(op):
    """Appending a continuation (prompt_length marks where the prompt ends) changes neither which
    tokens go nor the logits: they equal decoding the continuation from the reduced prompt cache."""
    model = tiny_model("llama")
    prompt, continuation = random_ids(60, seed=30), random_ids(5, seed=31)
    schedule = {1: LayerAction(op, 0.5, "attention"), 2: LayerAction(op, 0.5, "relevance")}
    reducer = Reducer(model)
    alone = reducer.run(prompt, schedule, protect_last=6)
    decoded = torch.cat((alone.logits, reducer.extend(alone.state, continuation[0, :-1])), dim=1)
    forced = reducer.run(
        torch.cat((prompt, continuation), dim=1), schedule, protect_last=6, prompt_length=60, logits="continuation"
    )
    assert torch.equal(forced.state.positions[:-5], alone.state.positions)
    assert (forced.logits - decoded).abs().max() <= 1e-4
    assert forced.flops == pytest.approx(alone.flops)
    assert forced.kv_bytes == alone.kv_bytes


def test_resuming_from_a_cached_hidden_state_skips_the_early_layers(llama):
    ids = random_ids(50, seed=32)
    reducer = Reducer(llama)
    schedule = {2: LayerAction("prune", 0.5), 3: LayerAction("merge", 0.5)}
    hidden = reducer.start(ids, decision_layers=[2]).hidden
    resumed = reducer.run(ids, schedule, resume_from=hidden, logits="all")
    direct = reducer.run(ids, schedule, logits="all")
    assert torch.equal(resumed.logits, direct.logits)
    assert resumed.tokens_per_layer == direct.tokens_per_layer
    assert resumed.flops == pytest.approx(direct.flops)
    with pytest.raises(RuntimeError, match="resumed"):
        reducer.extend(resumed.state, [3])


def test_select_then_finish_is_run_and_select_runs_no_layer_after_the_last_decision():
    model = tiny_model("llama")
    reducer = Reducer(model)
    ids = random_ids(60, seed=9)
    schedule = {1: LayerAction("prune", 0.3, "attention"), 2: LayerAction("merge", 0.4, "similarity")}
    state = reducer.select(ids, schedule, protect_last=4)
    assert state.layer == 2 and state.done  # stopped at the last decision layer
    assert reducer.projected_flops(state) / reducer.full_flops(state) < 1.0
    projected_kv = reducer.projected_kv_ratio(state)
    out = reducer.finish(state, logits="all")
    whole = reducer.run(ids, schedule, protect_last=4, logits="all")
    assert torch.equal(out.logits, whole.logits) and out.flops == whole.flops
    assert projected_kv == pytest.approx(whole.kv_bytes / whole.kv_bytes_full)
