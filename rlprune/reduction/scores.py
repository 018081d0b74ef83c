"""Token importance, computed cheaply from a decoder layer's own projections.

A scorer returns one number per token, higher meaning more worth keeping. Scorers never ask the
model for attention weights, so the fast SDPA kernels stay in use. Add a method by subclassing
:class:`Scorer` and registering it with :func:`register_scorer`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from rlprune.flops import ModelDims
from rlprune.reduction.spans import Pool

if TYPE_CHECKING:
    from rlprune.adapters import ModelAdapter


@dataclass
class ScoreContext:
    """What a scorer may look at before decoder layer ``layer`` runs.

    Attributes:
        adapter: the model family's adapter (its projections are used).
        layer: index of the decoder layer about to run.
        normed: hidden states after the layer's input norm, shape ``(1, n, hidden)``.
        positions: original position of each token, shape ``(n,)``.
        log_sizes: ``log(merge size)`` per token, or ``None`` when nothing was merged.
        cos, sin: rotary embeddings at ``positions``, shape ``(1, n, head_dim)``.
        window: how many of the last tokens act as queries (the question).
        pool: width of the max-pooling that lets whole spans around an important token survive.
    """

    adapter: ModelAdapter
    layer: int
    normed: Tensor
    positions: Tensor
    log_sizes: Tensor | None
    cos: Tensor
    sin: Tensor
    window: int
    pool: int

    def keys(self) -> Tensor:
        """The layer's keys of every token before rotary, ``(1, kv_heads, n, head_dim)``."""
        return self.adapter.project(self.layer, self.normed, "k")


def window_attention(ctx: ScoreContext, keys: Tensor | None = None) -> Tensor:
    """Mean attention the last ``window`` queries pay to each token, ``(n,)``, before any pooling.

    ``keys`` may pass the layer's projected keys (before rotary) when the caller already has them.
    Scores and softmax are in float32 whatever the model's dtype. A sliding-window layer is scored
    as if global: a token removed here is gone from the later global layers too.
    """
    adapter = ctx.adapter
    n = ctx.normed.shape[1]
    w = min(ctx.window, n)
    keys = adapter.apply_rotary(ctx.keys() if keys is None else keys, ctx.cos, ctx.sin).float()
    queries = adapter.project(ctx.layer, ctx.normed[:, -w:], "q")
    queries = adapter.apply_rotary(queries, ctx.cos[:, -w:], ctx.sin[:, -w:]).float()
    kv_heads, head_dim = keys.shape[1], keys.shape[-1]
    queries = queries.reshape(1, kv_heads, -1, head_dim)  # group query heads by kv head (GQA)
    logits = queries @ keys.transpose(-1, -2) * adapter.query_scale(ctx.layer)  # (1, kv_heads, groups * w, n)
    logits = logits.view(1, kv_heads, -1, w, n)
    visible = ctx.positions[-w:, None] >= ctx.positions[None, :]
    if ctx.log_sizes is not None:
        logits = logits + ctx.log_sizes.float()
    logits = logits.masked_fill(~visible, float("-inf"))
    return logits.softmax(dim=-1).mean(dim=(0, 1, 2, 3))


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
    """Base class: ``raw`` ranks tokens one by one, ``flops`` says what ranking them costs.

    :meth:`score` spreads the raw scores over spans with a :class:`Pool`: the one an action asks
    for, or the scorer's own default shape for the reducer's pool width.
    """

    name: ClassVar[str]

    def raw(self, ctx: ScoreContext) -> Tensor:
        raise NotImplementedError

    def default_pool(self, width: int) -> Pool:
        """The span shape used when an action names none (none at all by default)."""
        return Pool()

    def score(self, ctx: ScoreContext, pool: Pool | None = None) -> Tensor:
        return (self.default_pool(ctx.pool) if pool is None else pool).apply(self.raw(ctx))

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

    def raw(self, ctx: ScoreContext) -> Tensor:
        return window_attention(ctx)

    def default_pool(self, width: int) -> Pool:
        return Pool.centred(width)

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        w = min(window, tokens)
        return 2.0 * (tokens * dims.hidden * dims.kv_width + w * dims.hidden * dims.q_width + w * tokens * dims.q_width)


@register_scorer
class LastQueryAttentionScorer(Scorer):
    """Attention the final token alone pays to each token, without pooling (FastV's criterion)."""

    name = "last_query"

    def raw(self, ctx: ScoreContext) -> Tensor:
        return window_attention(replace(ctx, window=1))

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        return SCORERS["attention"].flops(dims, tokens, 1)


@register_scorer
class RandomScorer(Scorer):
    """Random importance, reproducible for the same tokens and layer (the random baseline)."""

    name = "random"

    def raw(self, ctx: ScoreContext) -> Tensor:
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

    def raw(self, ctx: ScoreContext) -> Tensor:
        return question_match(ctx)

    def default_pool(self, width: int) -> Pool:
        return Pool.forward(width)

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        return 2.0 * tokens * min(window, tokens) * dims.hidden


@register_scorer
class KeyNormScorer(Scorer):
    """Low key norm predicts high attention (Devoto et al., 2024), so importance is ``-||k||``."""

    name = "key_norm"

    def raw(self, ctx: ScoreContext) -> Tensor:
        return -ctx.keys().float().norm(dim=-1).mean(dim=(0, 1))  # rotary keeps norms, so skip it

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        return 2.0 * tokens * dims.hidden * dims.kv_width


@register_scorer
class NeighbourSimilarityScorer(Scorer):
    """A token much like the next one is redundant: importance is ``-cos(x_i, x_{i+1})``."""

    name = "similarity"

    def raw(self, ctx: ScoreContext) -> Tensor:
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

    def raw(self, ctx: ScoreContext) -> Tensor:
        raise ValueError("the 'learned' scorer needs token scores from a policy (LayerAction.token_scores)")

    def flops(self, dims: ModelDims, tokens: int, window: int) -> float:
        return (
            SCORERS["attention"].flops(dims, tokens, window)
            + SCORERS["relevance"].flops(dims, tokens, window)
            + SCORERS["similarity"].flops(dims, tokens, window)
            + self.head_flops_per_token * tokens
        )
