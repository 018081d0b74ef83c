"""Token importance, computed cheaply from a decoder layer's own projections.

A scorer returns one number per token, higher meaning more worth keeping. Scorers never ask the
model for attention weights, so the fast SDPA kernels stay in use. Add a method by subclassing
:class:`Scorer` and registering it with :func:`register_scorer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlprune.flops import ModelDims


@dataclass
class ScoreContext:
    """What a scorer may look at before decoder layer ``layer`` runs.

    Attributes:
        layer: the decoder layer about to run (its ``self_attn`` projections are used).
        normed: hidden states after the layer's input norm, shape ``(1, n, hidden)``.
        positions: original position of each token, shape ``(n,)``.
        log_sizes: ``log(merge size)`` per token, or ``None`` when nothing was merged.
        cos, sin: rotary embeddings at ``positions``, shape ``(1, n, head_dim)``.
        window: how many of the last tokens act as queries (the question).
        pool: width of the max-pooling that lets whole spans around an important token survive.
    """

    layer: nn.Module
    normed: Tensor
    positions: Tensor
    log_sizes: Tensor | None
    cos: Tensor
    sin: Tensor
    window: int
    pool: int


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Apply rotary embeddings to ``(1, heads, n, head_dim)`` states (Llama convention)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def project(attn: nn.Module, x: Tensor, which: str) -> Tensor:
    """Queries (``"q"``) or keys (``"k"``) of ``x`` before rotary, shape ``(1, heads, n, head_dim)``.

    Applies the per-head norm that Qwen3-style attention has (``q_norm``/``k_norm``).
    """
    head_dim = attn.head_dim
    states = getattr(attn, f"{which}_proj")(x).view(1, x.shape[1], -1, head_dim)
    norm = getattr(attn, f"{which}_norm", None)
    if norm is not None:
        states = norm(states)
    return states.transpose(1, 2)


def window_attention(ctx: ScoreContext, keys: Tensor | None = None) -> Tensor:
    """Mean attention the last ``window`` queries pay to each token, ``(n,)``, before any pooling.

    ``keys`` may pass the layer's projected keys (before rotary) when the caller already has them.
    """
    attn = ctx.layer.self_attn
    n = ctx.normed.shape[1]
    w = min(ctx.window, n)
    keys = rotate(project(attn, ctx.normed, "k") if keys is None else keys, ctx.cos, ctx.sin)
    queries = rotate(project(attn, ctx.normed[:, -w:], "q"), ctx.cos[:, -w:], ctx.sin[:, -w:])
    kv_heads, head_dim = keys.shape[1], keys.shape[-1]
    queries = queries.reshape(1, kv_heads, -1, head_dim)  # group query heads by kv head (GQA)
    logits = queries @ keys.transpose(-1, -2) * head_dim**-0.5  # (1, kv_heads, groups * w, n)
    logits = logits.view(1, kv_heads, -1, w, n)
    visible = ctx.positions[-w:, None] >= ctx.positions[None, :]
    if ctx.log_sizes is not None:
        logits = logits + ctx.log_sizes
    logits = logits.masked_fill(~visible, float("-inf"))
    return logits.float().softmax(dim=-1).mean(dim=(0, 1, 2, 3))


def question_match(ctx: ScoreContext) -> Tensor:
    """Each token's best cosine similarity to the last ``window`` tokens (the question), ``(n,)``."""
    unit = F.normalize(ctx.normed[0].float(), dim=-1)
    w = min(ctx.window, unit.shape[0])
    return (unit @ unit[-w:].T).amax(dim=-1)


def carry_forward(values: Tensor, width: int, fill: float = -1.0) -> Tensor:
    """Each position's maximum over itself and the ``width - 1`` positions before it."""
    if width <= 1:
        return values
    return F.max_pool1d(F.pad(values[None, None], (width - 1, 0), value=fill), width, 1)[0, 0]


def neighbour_similarity(ctx: ScoreContext) -> Tensor:
    """Cosine similarity of each token to the next one, ``(n,)`` (the last token gets -1)."""
    unit = F.normalize(ctx.normed[0].float(), dim=-1)
    similarity = (unit[:-1] * unit[1:]).sum(dim=-1)
    return torch.cat((similarity, similarity.new_full((1,), -1.0)))


class Scorer:
    """Base class: ``score`` ranks tokens, ``flops`` says what ranking them costs."""

    name: ClassVar[str]

    def score(self, ctx: ScoreContext) -> Tensor:
        raise NotImplementedError

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        raise NotImplementedError


SCORERS: dict[str, Scorer] = {}


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    SCORERS[cls.name] = cls()
    return cls


@register_scorer
class WindowAttentionScorer(Scorer):
    """Attention the last ``window`` queries pay to each token, max-pooled over neighbours.

    The last tokens hold the question, so this keeps what the question looks at (SnapKV-style).
    """

    name = "attention"

    def score(self, ctx: ScoreContext) -> Tensor:
        importance = window_attention(ctx)
        if ctx.pool > 1:
            n = importance.numel()
            importance = F.max_pool1d(importance[None, None], ctx.pool, 1, ctx.pool // 2)[0, 0, :n]
        return importance

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        w = min(window, tokens)
        return 2.0 * (tokens * dims.hidden * dims.kv_width + w * dims.hidden * dims.q_width + w * tokens * dims.q_width)


@register_scorer
class LastQueryAttentionScorer(Scorer):
    """Attention the final token alone pays to each token, without pooling (FastV's criterion)."""

    name = "last_query"

    def score(self, ctx: ScoreContext) -> Tensor:
        single = ScoreContext(ctx.layer, ctx.normed, ctx.positions, ctx.log_sizes, ctx.cos, ctx.sin, 1, 1)
        return SCORERS["attention"].score(single)

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        return SCORERS["attention"].flops(dims, tokens, 1)


@register_scorer
class RandomScorer(Scorer):
    """Random importance, reproducible for the same tokens and layer (the random baseline)."""

    name = "random"

    def score(self, ctx: ScoreContext) -> Tensor:
        seed = int(ctx.positions.sum()) * 1_000_003 + ctx.positions.numel()
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(ctx.positions.numel(), generator=generator).to(ctx.normed.device)

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        return 0.0


@register_scorer
class QuestionRelevanceScorer(Scorer):
    """Similarity to the question, carried forward: a context token that echoes a question word is a
    cue, and the answer follows its cue, so each token takes the best match among itself and the
    ``pool - 1`` tokens before it. Position-free, so it has none of attention's recency bias.
    """

    name = "relevance"

    def score(self, ctx: ScoreContext) -> Tensor:
        return carry_forward(question_match(ctx), ctx.pool)

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        return 2.0 * tokens * min(window, tokens) * dims.hidden


@register_scorer
class KeyNormScorer(Scorer):
    """Low key norm predicts high attention (Devoto et al., 2024), so importance is ``-||k||``."""

    name = "key_norm"

    def score(self, ctx: ScoreContext) -> Tensor:
        keys = project(ctx.layer.self_attn, ctx.normed, "k")  # rotary keeps norms, so skip it
        return -keys.norm(dim=-1).mean(dim=(0, 1))

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        return 2.0 * tokens * dims.hidden * dims.kv_width


@register_scorer
class NeighbourSimilarityScorer(Scorer):
    """A token much like the next one is redundant: importance is ``-cos(x_i, x_{i+1})``."""

    name = "similarity"

    def score(self, ctx: ScoreContext) -> Tensor:
        return -neighbour_similarity(ctx)

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        return 2.0 * tokens * dims.hidden


@register_scorer
class LearnedScorer(Scorer):
    """Scores a token-level policy computed from its per-token features (``LayerAction.token_scores``).

    It cannot score on its own; its cost is that of the features the policy reads (window attention,
    question relevance, neighbour similarity and key norms, all from one key projection) plus the
    small per-token network.
    """

    name = "learned"
    head_flops_per_token: ClassVar[float] = 2.0 * 4096  # a per-token MLP of about 4k weights

    def score(self, ctx: ScoreContext) -> Tensor:
        raise ValueError("the 'learned' scorer needs token scores from a policy (LayerAction.token_scores)")

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        return (
            SCORERS["attention"].flops(dims, tokens, window)
            + SCORERS["relevance"].flops(dims, tokens, window)
            + SCORERS["similarity"].flops(dims, tokens, window)
            + self.head_flops_per_token * tokens
        )
