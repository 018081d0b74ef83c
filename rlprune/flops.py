"""Analytic FLOPs and KV-cache accounting for decoders with gated MLPs and grouped-query attention.

Convention: a matrix product of (m x k) by (k x n) costs ``2 * m * k * n`` FLOPs. Norms,
activations, softmax and rotary embeddings are left out (well under 1% of the total), which is
also what :class:`torch.utils.flop_counter.FlopCounterMode` counts. Attention is counted
causally by default (a query only pays for the keys it may see), which is the work an efficient
kernel does; ``causal=False`` counts the dense score matrix, as the flop counter does.

Sliding-window layers charge each query at most ``window`` keys, counted by carried index. That is
exact for the full model and an upper bound once tokens are removed (a window of original positions
then holds fewer carried tokens), so savings on such layers are never overstated. Counting by index
keeps every projection a function of token counts alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelDims:
    """The shapes of a decoder that FLOPs and cache sizes depend on (a loaded model's:
    ``rlprune.adapters.adapter_for(model).dims()``)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    bytes_per_value: int = 4
    windows: tuple[int | None, ...] = field(default=())  # per layer: sliding window, None for global

    def __post_init__(self) -> None:
        if not self.windows:
            object.__setattr__(self, "windows", (None,) * self.layers)
        if len(self.windows) != self.layers:
            raise ValueError(f"expected {self.layers} per-layer windows, got {len(self.windows)}")

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


def attention_pairs(new: int, cached: int = 0, causal: bool = True, window: int | None = None) -> int:
    """Query-key pairs scored when ``new`` tokens attend over ``cached`` earlier ones and themselves.

    Causally, the ``j``-th new token sees ``cached + j + 1`` keys, at most ``window`` of them.
    """
    if not causal:
        return new * (cached + new)
    first, last = cached + 1, cached + new  # keys seen by the first and the last new token
    if window is None or last <= window:
        return (first + last) * new // 2
    if first > window:
        return window * new
    return (first + window) * (window - first + 1) // 2 + window * (last - window)


def attention_flops(
    dims: ModelDims, new: int, cached: int = 0, causal: bool = True, window: int | None = None
) -> float:
    """Scores (q.k) and weighted values (p.v) for one layer."""
    return 4.0 * attention_pairs(new, cached, causal, window) * dims.q_width


def layer_flops(dims: ModelDims, new: int, cached: int = 0, causal: bool = True, layer: int | None = None) -> float:
    """Decoder layer ``layer`` processing ``new`` tokens on top of ``cached`` cache entries.

    ``layer`` picks the layer's sliding window; ``None`` counts a global-attention layer.
    """
    window = None if layer is None else dims.windows[layer]
    return linear_flops(dims, new) + attention_flops(dims, new, cached, causal, window)


def layers_flops(dims: ModelDims, start: int, stop: int, new: int, causal: bool = True) -> float:
    """Layers ``start .. stop - 1`` each processing the same ``new`` tokens with no cache."""
    return sum(layer_flops(dims, new, 0, causal, layer) for layer in range(start, stop))


def lm_head_flops(dims: ModelDims, positions: int = 1) -> float:
    """Projecting ``positions`` final hidden states onto the vocabulary."""
    return 2.0 * positions * dims.hidden * dims.vocab


def prefill_flops(
    dims: ModelDims, tokens_per_layer: Sequence[int], logit_positions: int = 1, causal: bool = True
) -> float:
    """A prefill in which layer ``i`` processes ``tokens_per_layer[i]`` tokens (scoring not included)."""
    if len(tokens_per_layer) != dims.layers:
        raise ValueError(f"expected {dims.layers} per-layer token counts, got {len(tokens_per_layer)}")
    layers = sum(layer_flops(dims, n, 0, causal, i) for i, n in enumerate(tokens_per_layer))
    return layers + lm_head_flops(dims, logit_positions)


def full_prefill_flops(dims: ModelDims, prompt_tokens: int, logit_positions: int = 1, causal: bool = True) -> float:
    """The unreduced model's prefill of ``prompt_tokens`` tokens."""
    return layers_flops(dims, 0, dims.layers, prompt_tokens, causal) + lm_head_flops(dims, logit_positions)


def decode_flops(dims: ModelDims, cache_per_layer: Sequence[int], new: int = 1, causal: bool = True) -> float:
    """Decoding ``new`` tokens at once on top of caches of the given per-layer lengths (with logits)."""
    layers = sum(layer_flops(dims, new, cached, causal, i) for i, cached in enumerate(cache_per_layer))
    return layers + lm_head_flops(dims, new)


def kv_cache_bytes(dims: ModelDims, cache_per_layer: Sequence[int]) -> int:
    """Bytes held by keys and values for the given per-layer cache lengths."""
    return int(sum(cache_per_layer)) * 2 * dims.kv_width * dims.bytes_per_value


def merge_match_flops(dims: ModelDims, sources: int, window: int) -> float:
    """Cosine similarities between each merged token and its candidate targets."""
    return 2.0 * sources * window * dims.hidden
