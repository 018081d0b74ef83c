"""Several prompts in one batch: every row equals running that prompt alone."""

from __future__ import annotations

import pytest
import torch
from conftest import CONFIGS, random_ids, tiny_model

from rlprune import LayerAction, Reducer
from rlprune.engine import ReductionBatch

LENGTHS = (37, 52, 44)
PER_ROW = [  # rows choose different actions at the same layers
    {1: LayerAction("prune", 0.5, "attention"), 2: LayerAction("merge", 0.4, "similarity")},
    {1: LayerAction("merge", 0.6, "similarity"), 2: LayerAction("prune", 0.3, "key_norm")},
    {1: LayerAction("keep"), 2: LayerAction("prune", 0.7, "relevance")},
]


def prompts(seed: int = 40) -> list[torch.Tensor]:
    return [random_ids(n, seed=seed + i)[0] for i, n in enumerate(LENGTHS)]


def per_row(state):
    return PER_ROW[state.row][state.layer]


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_each_row_of_a_batch_equals_running_it_alone(arch):
    reducer = Reducer(tiny_model(arch))
    rows = prompts()
    batch = reducer.run(rows, per_row, decision_layers=(1, 2), logits="all", protect_last=[4, 6, 5])
    assert len(batch) == len(rows)
    for i, (ids, out) in enumerate(zip(rows, batch, strict=True)):
        alone = reducer.run(ids, PER_ROW[i], logits="all", protect_last=[4, 6, 5][i])
        assert out.tokens_per_layer == alone.tokens_per_layer
        assert out.logits.shape == alone.logits.shape
        assert (out.logits - alone.logits).abs().max() <= 1e-4
        assert out.flops == pytest.approx(alone.flops) and out.kv_bytes == alone.kv_bytes
        assert out.state.cache_lengths() == alone.state.cache_lengths()
    assert batch[0].tokens_per_layer != batch[2].tokens_per_layer  # rows really kept different tokens


@pytest.mark.parametrize("arch", ["llama", "gemma3", "mistral-sliding"])
def test_batched_generation_yields_each_rows_own_tokens(arch):
    reducer = Reducer(tiny_model(arch))
    rows = prompts(seed=50)
    batch = reducer.generate(rows, per_row, decision_layers=(1, 2), max_new_tokens=8, eos_token_id=[], protect_last=4)
    for i, (ids, result) in enumerate(zip(rows, batch, strict=True)):
        alone = reducer.generate(ids, PER_ROW[i], max_new_tokens=8, eos_token_id=[], protect_last=4)
        assert torch.equal(result.tokens, alone.tokens)
        assert result.prefill.tokens_per_layer == alone.prefill.tokens_per_layer
        assert result.prefill.state.cache_lengths() == alone.prefill.state.cache_lengths()


def test_rows_stop_at_their_own_eos():
    model = tiny_model("llama")
    reducer = Reducer(model)
    rows = prompts(seed=60)
    free = [reducer.generate(ids, max_new_tokens=6, eos_token_id=[]).tokens[0].tolist() for ids in rows]
    eos = free[0][2]  # row 0 stops at its third token; the others only if they meet it
    batch = reducer.generate(rows, max_new_tokens=6, eos_token_id=eos)
    for tokens, result in zip(free, batch, strict=True):
        end = tokens.index(eos) + 1 if eos in tokens else len(tokens)
        assert result.tokens[0].tolist() == tokens[:end]
        assert result.stopped_at_eos == (eos in tokens)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_batch_with_an_attention_mask_equals_the_list_of_prompts(side):
    reducer = Reducer(tiny_model("qwen3"))
    rows = prompts(seed=70)
    width = max(LENGTHS)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        span = slice(width - row.numel(), width) if side == "left" else slice(0, row.numel())
        ids[b, span], mask[b, span] = row, 1
    schedule = {2: LayerAction("prune", 0.5)}
    padded = reducer.run(ids, schedule, attention_mask=mask, logits="all")
    listed = reducer.run(rows, schedule, logits="all")
    for a, b in zip(padded, listed, strict=True):
        assert torch.equal(a.logit_positions, b.logit_positions)
        assert (a.logits - b.logits).abs().max() <= 1e-5


def test_a_batch_steps_and_extends_like_its_rows():
    reducer = Reducer(tiny_model("llama"))
    rows = prompts(seed=80)
    batch = reducer.start(rows, decision_layers=(1, 3))
    assert isinstance(batch, ReductionBatch) and batch.layer == 1
    batch = reducer.step(batch, [LayerAction("prune", 0.5), LayerAction("merge", 0.5), LayerAction("keep")])
    batch = reducer.step(batch, LayerAction("prune", 0.3))
    reducer.finish(batch)
    new = torch.tensor([[5, 6], [7, 8], [9, 10]])
    logits = reducer.extend(batch, new)
    for i, ids in enumerate(rows):
        alone = reducer.start(ids, decision_layers=(1, 3))
        alone = reducer.step(alone, [LayerAction("prune", 0.5), LayerAction("merge", 0.5), LayerAction("keep")][i])
        alone = reducer.step(alone, LayerAction("prune", 0.3))
        reducer.finish(alone)
        assert (reducer.extend(alone, new[i]) - logits[i : i + 1]).abs().max() <= 1e-4
        assert batch[i].decode_flops == pytest.approx(alone.decode_flops)


def test_a_batch_resumes_from_cached_hidden_states_and_scores_continuations():
    """What the vector environment runs: per-row cached hidden states, prompt lengths and continuations."""
    model = tiny_model("llama")
    reducer = Reducer(model)
    rows = [torch.cat((ids, random_ids(4, seed=90 + i)[0])) for i, ids in enumerate(prompts(seed=85))]
    lengths = list(LENGTHS)
    starts = zip(rows, lengths, strict=True)
    hidden = [reducer.start(ids, decision_layers=(1,), prompt_length=n).hidden for ids, n in starts]
    schedule = {1: LayerAction("prune", 0.5), 2: LayerAction("merge", 0.5)}
    batch = reducer.run(
        rows, schedule, logits="continuation", prompt_length=lengths, resume_from=hidden, protect_last=3
    )
    for ids, n, start, out in zip(rows, lengths, hidden, batch, strict=True):
        alone = reducer.run(ids, schedule, logits="continuation", prompt_length=n, resume_from=start, protect_last=3)
        assert (out.logits - alone.logits).abs().max() <= 1e-4
        assert out.flops == pytest.approx(alone.flops)
