"""What a policy sees of a reduction state at a decision layer, and what it may do there.

The reducer builds these features for every policy it consults (:mod:`rlprune.engine.policy`) and the
environment builds the same ones, so a policy observes and acts the same way in training and in use.
Bump :data:`SPEC_VERSION` when the observation or the action space changes: checkpoints record it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from numbers import Real
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from rlprune.errors import InvalidActionError
from rlprune.reduction import OPS, POLICY_OPS, LayerAction, scored
from rlprune.reduction.scores import carry_forward, neighbour_similarity, question_match, window_attention

if TYPE_CHECKING:  # the reducer builds features; they only read it
    from rlprune.engine.reducer import Reducer
    from rlprune.engine.state import ReductionState

SPEC_VERSION = 2

OBSERVATION_FIELDS: tuple[tuple[str, str], ...] = (
    ("layer_position", "index of the decision layer / (layers - 1)"),
    ("decisions_left", "decisions still to make (this one included) / decisions per episode"),
    ("tokens_kept", "prompt tokens still carried / prompt length"),
    ("removable_share", "carried prompt tokens that may be removed / carried prompt tokens"),
    ("flops_projected", "prefill FLOPs ratio if nothing more is removed (scoring so far included)"),
    ("budget", "the episode's target prefill FLOPs ratio"),
    ("budget_gap", "flops_projected - budget: how much must still be saved"),
    ("prompt_length", "log(prompt length) / log(model's maximum positions)"),
    ("relevance_q10", "10th percentile of question relevance over removable tokens (cosine to the question)"),
    ("relevance_q25", "25th percentile of question relevance"),
    ("relevance_q50", "median question relevance"),
    ("relevance_q75", "75th percentile of question relevance"),
    ("relevance_q90", "90th percentile of question relevance"),
    ("relevance_top_share", "share of removable tokens within 0.1 of the best relevance"),
    ("similarity_mean", "mean cosine similarity of removable tokens to the next token"),
    ("similarity_std", "standard deviation of that similarity"),
    ("similarity_high", "share of removable tokens with similarity above 0.9 (merge candidates)"),
    ("merged_share", "original prompt tokens folded into others by merges / prompt length"),
)
OBSERVATION_SIZE = len(OBSERVATION_FIELDS)
OBSERVATION_BOUNDS = (-2.0, 2.0)

SHARES: tuple[float, ...] = (0.1, 0.2, 0.35, 0.5, 0.7, 1.0)
SCORER_CHOICES: tuple[str, ...] = ("attention", "key_norm", "relevance", "similarity")


def check_scorer_choice(scorer: str) -> LayerAction:
    """A scorer a layer policy may choose: a name from :data:`SCORERS`, optionally with span options
    (``"relevance:pool=-4:+16"``, ``"relevance:unit=16"``); raises ``ValueError`` otherwise."""
    try:
        action = scored("prune", 0.5, scorer)
    except InvalidActionError as error:
        raise ValueError(f"scorer {scorer!r} in the action spec: {error}") from None
    if action.unit == "sentence":  # a policy acts where no tokenizer is known (apply, model.generate)
        raise ValueError(f"scorer {scorer!r}: a policy's action space offers chunks (unit=16), not sentences")
    return action


@dataclass(frozen=True)
class ActionSpec:
    """A decision as three discrete choices: op, share and scorer (a ``MultiDiscrete`` space).

    A scorer may carry span options (``"relevance:pool=-4:+16"``, ``"relevance:unit=16"``), so a
    preset can let its policies choose span shapes too (``[episode] scorers``).

    The share says how much of the savings still needed to reach the budget this layer makes:
    0.1 leaves most of the work to later layers, 1.0 closes the gap here. The number of tokens
    that takes is worked out from the FLOPs accounting, so a policy learns *where* and *how* to
    spend a budget, and any budget it is given is met as soon as it chooses to close the gap.
    """

    ops: tuple[str, ...] = POLICY_OPS
    shares: tuple[float, ...] = SHARES
    scorers: tuple[str, ...] = SCORER_CHOICES

    def __post_init__(self) -> None:
        # checked here too, not only when a checkpoint is read: a share outside (0, 1] silently
        # breaks the FLOPs budget, and an action head without "keep" cannot start by keeping
        if not self.ops or "keep" not in self.ops or len(set(self.ops)) != len(self.ops):
            raise ValueError(f"the action spec's ops {self.ops} must be distinct and include 'keep'")
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown op(s) {unknown} in the action spec; ops are {', '.join(OPS)}")
        bad = [s for s in self.shares if isinstance(s, bool) or not isinstance(s, Real) or not 0 < s <= 1]
        if not self.shares or bad:
            raise ValueError(f"the action spec's shares {self.shares} must be numbers in (0, 1]")
        if not self.scorers or len(set(self.scorers)) != len(self.scorers):
            raise ValueError(f"the action spec's scorers {self.scorers} must be distinct (and at least one)")
        for scorer in self.scorers:
            check_scorer_choice(scorer)

    @property
    def nvec(self) -> list[int]:
        return [len(self.ops), len(self.shares), len(self.scorers)]

    def decode(self, action, features: Features) -> LayerAction:
        """The :class:`LayerAction` for ``[op, share, scorer]`` indices at the layer ``features`` describe."""
        op, share, scorer = (int(a) for a in action)
        if self.ops[op] == "keep":
            return LayerAction()
        return features.action_for_share(self.ops[op], self.scorers[scorer], self.shares[share])

    def encode(self, op: str, share: float, scorer: str) -> np.ndarray:
        """Indices for a choice (the share snapped to the nearest bin)."""
        index = min(range(len(self.shares)), key=lambda i: abs(self.shares[i] - share))
        return np.array([self.ops.index(op), index, self.scorers.index(scorer)], dtype=np.int64)

    def masks(self, features: Features) -> np.ndarray:
        """Valid choices per dimension, concatenated (the layout MaskablePPO expects).

        Only ``keep`` applies when no token is removable or the budget is already met.
        """
        ops = np.ones(len(self.ops), dtype=bool)
        if not bool(features.state.removable().any()) or features.flops_projected <= features.budget:
            ops[:] = [op == "keep" for op in self.ops]
        return np.concatenate((ops, np.ones(len(self.shares), dtype=bool), np.ones(len(self.scorers), dtype=bool)))

    def to_dict(self) -> dict[str, list]:
        return {"ops": list(self.ops), "shares": list(self.shares), "scorers": list(self.scorers)}


def token_action_spec(shares: Sequence[float] | None = None) -> ActionSpec:
    """A token-level policy's choices: op and share; the scorer is always its own token head (``learned``)."""
    base = ActionSpec()
    return ActionSpec(base.ops, tuple(shares) if shares else base.shares, ("learned",))


@dataclass
class Features:
    """Everything a policy may look at before a decision layer.

    Learned policies read :attr:`vector` (the observation); rule-based baselines read the
    layer, the token counts and :meth:`ratio_after` to plan their own schedules.
    """

    reducer: Reducer
    state: ReductionState
    budget: float

    @cached_property
    def vector(self) -> np.ndarray:
        return observe(self.reducer, self.state, self.budget)

    @cached_property
    def tokens(self) -> torch.Tensor:
        """Per-token features of the carried prompt tokens (token-level policies read these)."""
        return token_features(self.reducer, self.state, self.budget)

    @property
    def layer(self) -> int:
        return self.state.layer

    @property
    def num_layers(self) -> int:
        return self.reducer.dims.layers

    @cached_property
    def flops_projected(self) -> float:
        return flops_projected(self.reducer, self.state)

    def action_for_share(self, op: str, scorer: str, share: float) -> LayerAction:
        """The action at this layer that makes ``share`` of the savings still needed for the budget.

        The fewest tokens whose removal brings the projected FLOPs ratio down to
        ``projected - share * (projected - budget)``; everything removable if even that falls short.
        """
        projected = self.flops_projected
        target = projected - share * max(projected - self.budget, 0.0)
        removable = int(self.state.removable().sum())
        if target >= projected or removable == 0:
            return scored(op, 0.0, scorer)

        seen: dict[int, float] = {}

        def ratio(count: int) -> float:
            if count not in seen:
                action = scored(op, count / removable, scorer)
                seen[count] = self.ratio_after({self.layer: action})
            return seen[count]

        if ratio(removable) > target:
            return scored(op, 1.0, scorer)
        # ratio(low) > target >= ratio(high): interpolate (FLOPs fall smoothly with the count),
        # halving on every other step so the search never takes more than twice a bisection
        low, high, step = 0, removable, 0
        while high - low > 1:
            if step % 2:
                guess = (low + high) // 2
            else:
                guess = low + int((ratio(low) - target) / (ratio(low) - ratio(high)) * (high - low))
                guess = min(max(guess, low + 1), high - 1)
            low, high = (low, guess) if ratio(guess) <= target else (guess, high)
            step += 1
        return scored(op, high / removable, scorer)

    def ratio_after(self, schedule: Mapping[int, LayerAction]) -> float:
        """The prefill FLOPs ratio this prompt ends at if ``schedule`` is applied from now on.

        Uses the reducer's own projection (:meth:`Reducer.project_flops`), so a baseline that sets
        its ratios to meet a budget before acting gets exactly what the reducer will charge.
        """
        return self.reducer.project_flops(self.state, schedule) / self.reducer.full_flops(self.state)


def flops_projected(reducer: Reducer, state: ReductionState) -> float:
    """Prefill FLOPs ratio the episode ends at if nothing more is removed."""
    return reducer.projected_flops(state) / reducer.full_flops(state)


@torch.no_grad()
def observe(reducer: Reducer, state: ReductionState, budget: float) -> np.ndarray:
    """The observation vector (see :data:`OBSERVATION_FIELDS`) before ``state.layer`` runs."""
    layers = reducer.dims.layers
    decisions = max(len(state.decision_layers), 1)
    n_prompt = state.n_prompt_tokens
    removable = state.removable()[:n_prompt]
    projected = flops_projected(reducer, state)
    values = [
        state.layer / max(layers - 1, 1),
        (decisions - state.decisions_made) / decisions,
        n_prompt / state.prompt_length,
        float(removable.float().mean()) if n_prompt else 0.0,
        projected,
        budget,
        projected - budget,
        math.log(state.prompt_length) / math.log(max(reducer.max_positions, 2)),
    ]
    values += _token_statistics(reducer, state, removable)
    merged = float(state.sizes[:n_prompt].sum()) - n_prompt
    values.append(merged / state.prompt_length)
    vector = np.asarray(values, dtype=np.float32)
    return np.clip(vector, *OBSERVATION_BOUNDS)


STATISTICS_SAMPLE = 256
"""Token statistics are taken over at most this many evenly spaced removable tokens."""


def _token_statistics(reducer: Reducer, state: ReductionState, removable: torch.Tensor) -> list[float]:
    """Relevance quantiles and neighbour-similarity statistics over the removable tokens."""
    index = torch.nonzero(removable)[:, 0]
    if index.numel() == 0:
        return [0.0] * 9
    if index.numel() > STATISTICS_SAMPLE:
        index = index[torch.linspace(0, index.numel() - 1, STATISTICS_SAMPLE).round().long()]
    p = state.n_prompt_tokens
    window = min(reducer.config.window or max(state.protect_last, 1), p)
    k = index.numel()
    rows = torch.cat((index, (index + 1).clamp(max=p - 1), torch.arange(p - window, p, device=index.device)))
    normed = F.normalize(reducer.adapter.input_norm(state.layer, state.hidden[:, rows]).float(), dim=-1)[0]
    unit, following, question = normed[:k], normed[k : 2 * k], normed[2 * k :]
    relevance = (unit @ question.T).amax(dim=-1)
    ordered = relevance.sort().values
    picks = [round(q * (ordered.numel() - 1)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)]
    similarity = (unit * following).sum(-1)
    stats = torch.stack(
        (
            (relevance >= ordered[-1] - 0.1).float().mean(),
            similarity.mean(),
            similarity.std() if similarity.numel() > 1 else similarity.new_zeros(()),
            (similarity > 0.9).float().mean(),
        )
    )
    return ordered[picks].tolist() + stats.tolist()


# -- per-token features (token-level policies) -------------------------------------------------

TOKEN_FEATURE_FIELDS: tuple[tuple[str, str], ...] = (
    ("attention", "log(window attention x tokens): the question's attention relative to uniform"),
    ("attention_pooled", "the same, max over the 9 tokens around"),
    ("attention_lag1", "attention of the token before"),
    ("attention_lag2", "attention of the token two before"),
    ("attention_rank", "percentile of attention among the carried prompt tokens"),
    ("relevance", "best cosine similarity to a question token"),
    ("relevance_lag1", "relevance of the token before (a span after a question echo stays whole)"),
    ("relevance_lag2", "relevance of the token two before"),
    ("relevance_lag3", "relevance of the token three before"),
    ("relevance_carried", "best relevance over this token and the 8 before it"),
    ("relevance_rank", "percentile of relevance among the carried prompt tokens"),
    ("key_norm", "key norm, standardised over the carried prompt tokens"),
    ("similarity_prev", "cosine similarity to the token before"),
    ("similarity_next", "cosine similarity to the token after"),
    ("position", "original position / prompt length"),
    ("tail_distance", "log(1 + tokens to the protected tail) / log(prompt length)"),
    ("merge_size", "log(original tokens this token stands for)"),
    ("layer_position", "index of the decision layer / (layers - 1)"),
    ("budget_gap", "projected FLOPs ratio minus the budget: how much must still be saved"),
    ("protected", "1 for tokens that may never be removed"),
)
TOKEN_FEATURE_SIZE = len(TOKEN_FEATURE_FIELDS)


def _lag(values: torch.Tensor, by: int, fill: float) -> torch.Tensor:
    return torch.cat((values.new_full((by,), fill), values[:-by]))


def _rank(values: torch.Tensor) -> torch.Tensor:
    order = values.argsort().argsort().float()
    return order / max(values.numel() - 1, 1)


@torch.no_grad()
def token_features(reducer: Reducer, state: ReductionState, budget: float) -> torch.Tensor:
    """``(prompt tokens carried, TOKEN_FEATURE_SIZE)`` features of every carried prompt token.

    Cheap and computed from the next layer's own projections (one key projection, a window of
    question queries, cosine similarities), so a token-level policy pays about what one scorer
    costs (the ``learned`` scorer's FLOPs). See :data:`TOKEN_FEATURE_FIELDS`.
    """
    ctx = reducer.score_context(state)
    keys = ctx.keys()
    p = ctx.positions.numel()
    attention = (window_attention(ctx, keys) * p).clamp(min=1e-6).log()
    relevance = question_match(ctx)
    key_norm = keys.float().norm(dim=-1).mean(dim=(0, 1))
    key_norm = (key_norm - key_norm.mean()) / key_norm.std().clamp(min=1e-6) if p > 1 else key_norm * 0
    following = neighbour_similarity(ctx)
    preceding = _lag(following, 1, -1.0)
    positions = ctx.positions.float()
    tail_start = state.prompt_length - state.protect_last
    log_length = math.log(max(state.prompt_length, 2))
    sizes = state.sizes[:p].float()
    protected = state.protected()[:p].float()
    layer = torch.full_like(positions, state.layer / max(reducer.dims.layers - 1, 1))
    gap = torch.full_like(positions, flops_projected(reducer, state) - budget)
    columns = (
        attention,
        F.max_pool1d(attention[None, None], 9, 1, 4)[0, 0, :p],
        _lag(attention, 1, 0.0),
        _lag(attention, 2, 0.0),
        _rank(attention),
        relevance,
        _lag(relevance, 1, 0.0),
        _lag(relevance, 2, 0.0),
        _lag(relevance, 3, 0.0),
        carry_forward(relevance, 9),
        _rank(relevance),
        key_norm,
        preceding,
        following,
        positions / state.prompt_length,
        (tail_start - positions).clamp(min=0).log1p() / log_length,
        sizes.log(),
        layer,
        gap,
        protected,
    )
    return torch.stack([c.float() for c in columns], dim=-1).clamp(-8.0, 8.0)
