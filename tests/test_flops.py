"""Analytic FLOPs and KV accounting agree with what torch actually runs."""

from __future__ import annotations

import pytest
import torch
from conftest import CONFIGS, random_ids, tiny_model
from torch.utils.flop_counter import FlopCounterMode

from rlprune import LayerAction, Reducer, flops

aten = torch.ops.aten


def _dense_sdpa(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """The CPU flash kernel is not in torch's table: count it like the others (dense q.k and p.v)."""
    batch, heads, queries, head_dim = query_shape
    return 4 * batch * heads * queries * key_shape[-2] * head_dim


def counted(fn) -> int:
    with FlopCounterMode(
        display=False, custom_mapping={aten._scaled_dot_product_flash_attention_for_cpu: _dense_sdpa}
    ) as counter:
        fn()
    return counter.get_total_flops()


def dense_total(out) -> float:
    """The pass's analytic FLOPs with attention counted densely, as the flop counter does."""
    dims, tokens = out.dims, out.tokens_per_layer
    positions = int(out.logit_positions.numel())
    causal = flops.prefill_flops(dims, tokens, positions)
    return out.flops - causal + flops.prefill_flops(dims, tokens, positions, causal=False)


WIDE = dict(hidden_size=128, intermediate_size=256, num_attention_heads=8, num_key_value_heads=2, head_dim=16)


@pytest.mark.parametrize("shape", [{}, WIDE], ids=["tiny", "wide"])
def test_full_prefill_matches_flop_counter(shape):
    model = tiny_model("llama", **shape)
    ids = random_ids(96, seed=20)
    out = Reducer(model).run(ids)
    measured = counted(lambda: model(ids, logits_to_keep=1))
    assert dense_total(out) == pytest.approx(measured, rel=0.05)
    assert out.flops_full == pytest.approx(out.flops)


FAMILY_SHAPES = [
    pytest.param("llama", WIDE, id="llama-wide"),
    *(pytest.param(arch, {}, id=arch) for arch in sorted(CONFIGS)),
]


@pytest.mark.parametrize(("arch", "shape"), FAMILY_SHAPES)
@pytest.mark.parametrize(
    "schedule",
    [
        {1: LayerAction("prune", 0.5, "attention")},
        {1: LayerAction("prune", 0.7, "key_norm"), 2: LayerAction("merge", 0.5, "similarity")},
        {0: LayerAction("merge", 0.4, "attention"), 3: LayerAction("prune", 0.9, "attention")},
    ],
    ids=["prune", "prune+merge", "merge-first"],
)
def test_reduced_prefill_matches_flop_counter(arch, shape, schedule):
    """Every family (sliding windows and merge masks included), full attention counted densely."""
    model = tiny_model(arch, **shape)
    ids = random_ids(120, seed=21)
    reducer = Reducer(model)
    out = reducer.run(ids, schedule, logits="all")
    measured = counted(lambda: reducer.run(ids, schedule, logits="all"))
    assert dense_total(out) == pytest.approx(measured, rel=0.05)
    assert out.flops_ratio < 0.9


def test_decode_matches_flop_counter():
    model = tiny_model("llama", **WIDE)
    reducer = Reducer(model)
    state = reducer.run(random_ids(80, seed=22), {1: LayerAction("merge", 0.5)}).state
    lengths = state.cache_lengths()
    measured = counted(lambda: reducer.extend(state, [5, 6, 7]))
    assert flops.decode_flops(reducer.dims, lengths, new=3, causal=False) == pytest.approx(measured, rel=0.05)
    assert state.decode_flops == pytest.approx(flops.decode_flops(reducer.dims, lengths, new=3))


def test_kv_bytes_equal_the_cache_tensors():
    model = tiny_model("llama")
    out = Reducer(model).run(random_ids(64, seed=23), {2: LayerAction("prune", 0.5)})
    actual = sum(layer.keys.nbytes + layer.values.nbytes for layer in out.cache.layers)
    assert out.kv_bytes == actual
    assert out.kv_bytes < out.kv_bytes_full


def test_causal_attention_counts_half_the_pairs_plus_diagonal():
    assert flops.attention_pairs(4) == 10
    assert flops.attention_pairs(4, causal=False) == 16
    assert flops.attention_pairs(1, cached=9) == 10
    dims = flops.ModelDims(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=10)
    assert flops.full_prefill_flops(dims, 5) < flops.full_prefill_flops(dims, 5, causal=False)
    with pytest.raises(ValueError, match="expected 2"):
        flops.prefill_flops(dims, [5])
