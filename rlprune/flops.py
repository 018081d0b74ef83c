"""Analytic FLOPs and KV-cache accounting for Llama-family decoders.

Convention: a matrix product of (m x k) by (k x n) costs ``2 * m * k * n`` FLOPs. Norms,
activations, softmax and rotary embeddings are left out (well under 1% of the total), which is
also what :class:`torch.utils.flop_counter.FlopCounterMode` counts. Attention is counted
causally by default (a query only pays for the keys it may see), which is the work an efficient
kernel does; ``causal=False`` counts the dense score matrix, as the flop counter does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelDims:
    """The shapes of a decoder that FLOPs and cache sizes depend on."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    bytes_per_value: int = 4

    @classmethod
    def from_config(cls, config, dtype: torch.dtype = torch.float32) -> ModelDims:
        heads = config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            vocab=config.vocab_size,
            bytes_per_value=torch.finfo(dtype).bits // 8,
        )

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim


def linear_flops(dims: ModelDims, tokens: int) -> float:
    """q/k/v/o projections (grouped-query) and the gated MLP for ``tokens`` tokens in one layer."""
    attn = dims.hidden * (2 * dims.q_width + 2 * dims.kv_width)
    mlp = 3 * dims.hidden * dims.intermediate
    return 2.0 * tokens * (attn + mlp)


def attention_pairs(new: int, cached: int = 0, causal: bool = True) -> int:
    """Query-key pairs scored when ``new`` tokens attend over ``cached`` earlier ones and themselves."""
    if causal:
        return new * cached + new * (new + 1) // 2
    return new * (cached + new)


def attention_flops(dims: ModelDims, new: int, cached: int = 0, causal: bool = True) -> float:
    """Scores (q.k) and weighted values (p.v) for one layer."""
    return 4.0 * attention_pairs(new, cached, causal) * dims.q_width


def layer_flops(dims: ModelDims, new: int, cached: int = 0, causal: bool = True) -> float:
    """One decoder layer processing ``new`` tokens on top of ``cached`` cache entries."""
    return linear_flops(dims, new) + attention_flops(dims, new, cached, causal)


def lm_head_flops(dims: ModelDims, positions: int = 1) -> float:
    """Projecting ``positions`` final hidden states onto the vocabulary."""
    return 2.0 * positions * dims.hidden * dims.vocab


def prefill_flops(
    dims: ModelDims, tokens_per_layer: Sequence[int], logit_positions: int = 1, causal: bool = True
) -> float:
    """A prefill in which layer ``i`` processes ``tokens_per_layer[i]`` tokens (scoring not included)."""
    if len(tokens_per_layer) != dims.layers:
        raise ValueError(f"expected {dims.layers} per-layer token counts, got {len(tokens_per_layer)}")
    layers = sum(layer_flops(dims, n, 0, causal) for n in tokens_per_layer)
    return layers + lm_head_flops(dims, logit_positions)


def full_prefill_flops(dims: ModelDims, prompt_tokens: int, logit_positions: int = 1, causal: bool = True) -> float:
    """The unreduced model's prefill of ``prompt_tokens`` tokens."""
    return dims.layers * layer_flops(dims, prompt_tokens, 0, causal) + lm_head_flops(dims, logit_positions)


def decode_flops(dims: ModelDims, cache_per_layer: Sequence[int], new: int = 1, causal: bool = True) -> float:
    """Decoding ``new`` tokens at once on top of caches of the given per-layer lengths (with logits)."""
    layers = sum(layer_flops(dims, new, cached, causal) for cached in cache_per_layer)
    return layers + lm_head_flops(dims, new)


def kv_cache_bytes(dims: ModelDims, cache_per_layer: Sequence[int]) -> int:
    """Bytes held by keys and values for the given per-layer cache lengths."""
    return int(sum(cache_per_layer)) * 2 * dims.kv_width * dims.bytes_per_value


def merge_match_flops(dims: ModelDims, sources: int, window: int) -> float:
    """Cosine similarities between each merged token and its candidate targets."""
    return 2.0 * sources * window * dims.hidden
