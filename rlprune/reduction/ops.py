"""What an op does to the tokens before a layer: the plan it makes, what it costs, and the helpers
that carry a plan out.

Each op is an object behind :class:`Op`, registered in :data:`OPS` with :func:`register_op` (like
the scorers in :mod:`~rlprune.reduction.scores`). An op *plans* on a :class:`Planning` (a row
before a decision layer: which tokens may go, how its tokens score) and *prices* itself from a
:class:`Price` (token counts only, so a FLOPs projection never needs tensors). The reducer applies
any plan the same way, so adding an op is one class.

Everything here is causal by construction: a token only ever merges into a *later* token, which
keeps its own position, so no token sees information from its future.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from rlprune import flops
from rlprune.errors import InvalidActionError
from rlprune.flops import ModelDims
from rlprune.reduction.scores import SCORERS, ScoreContext
from rlprune.reduction.spans import unit_ids, unit_ranking

if TYPE_CHECKING:
    from rlprune.reduction.action import LayerAction


@dataclass(frozen=True)
class ReductionPlan:
    """The tokens removed before one layer, in current sequence order.

    Attributes:
        remove: sorted indices of the tokens that leave the sequence.
        into: for ``merge``, the index each removed token is folded into (always greater than its
            own index), or -1 where no target qualified and the token is simply dropped.
            ``None`` for ``prune``.
        flops: what the op charges at this layer (choosing the tokens, matching merge targets,
            re-running layers).
        restart: the tokens left run again from layer 0, from their embeddings and at their
            original positions; the layers before this one are re-run on them alone and their
            KV cache then holds only them.
    """

    remove: Tensor
    into: Tensor | None = None
    flops: float = 0.0
    restart: bool = False

    @classmethod
    def empty(cls, device: torch.device | None = None) -> ReductionPlan:
        return cls(torch.empty(0, dtype=torch.long, device=device))

    def __len__(self) -> int:
        return int(self.remove.numel())


@dataclass(frozen=True)
class Price:
    """What an op's FLOPs depend on at one decision layer: counts only, so a projection needs no tensors.

    Attributes:
        dims: the model's shapes.
        layer: the decision layer.
        tokens: prompt tokens carried into it.
        count: how many of them the action removes.
        window: how many final tokens act as queries for scorers.
        merge_window: how many later tokens a merged token may join.
    """

    dims: ModelDims
    layer: int
    tokens: int
    count: int
    window: int
    merge_window: int


def removal_count(action: LayerAction, removable: int) -> int:
    """How many of ``removable`` tokens ``action`` removes."""
    return 0 if action.is_noop else round(action.ratio * removable)


@dataclass
class Planning:
    """A row before a decision layer, as an op plans on it.

    Attributes:
        layer: the decision layer.
        removable: ``(n,)`` bool over the carried tokens: which may go (protected tokens and a
            teacher-forced continuation never may).
        prompt_tokens: carried tokens that belong to the prompt (the first ``prompt_tokens``).
        input_ids: ``(sequence,)`` the row's ids, for sentence units.
        sentence_ends: ids that end a sentence, or ``None``.
        window, merge_window, dims: as in :class:`Price`.
        context: builds what scorers see of the prompt tokens (only when a token has to be chosen).
    """

    layer: int
    removable: Tensor
    prompt_tokens: int
    input_ids: Tensor
    sentence_ends: Tensor | None
    dims: ModelDims
    window: int
    merge_window: int
    context: Callable[[], ScoreContext]

    @cached_property
    def scores(self) -> ScoreContext:
        """The score context of the prompt tokens (built once)."""
        return self.context()

    def count(self, action: LayerAction) -> int:
        return removal_count(action, int(self.removable.sum()))

    def price(self, count: int) -> Price:
        return Price(self.dims, self.layer, self.prompt_tokens, count, self.window, self.merge_window)

    def lowest(self, action: LayerAction, count: int) -> Tensor:
        """Sorted indices of the ``count`` removable tokens ``action`` ranks lowest: its scorer's scores
        (or a policy's ``token_scores``), spread by its pool and ranked by its units."""
        context = self.scores
        continuation = self.removable.numel() - self.prompt_tokens
        tail = context.normed.new_full((continuation,), float("inf"))  # a continuation stays
        if action.token_scores is not None:
            scores = action.token_scores.to(device=tail.device, dtype=tail.dtype)
            if scores.shape != (self.prompt_tokens,):
                raise InvalidActionError(
                    f"token_scores has shape {tuple(scores.shape)}; expected ({self.prompt_tokens},), one per "
                    "prompt token carried into the layer"
                )
            scores = scores if action.pool is None else action.pool.apply(scores)
        else:
            scores = SCORERS[action.scorer].score(context, action.pool)
        units = unit_ids(action.unit, context.positions, self.input_ids, self.sentence_ends)
        scores = unit_ranking(scores, units)
        return select_least_important(torch.cat((scores.to(tail.dtype), tail)), self.removable, count)


class Op:
    """Base class: what an op does to the tokens entering a layer, and what that costs.

    By default an op removes the tokens the action's scorer ranks lowest (:meth:`plan`), then lets
    :meth:`finish` say what happens to them; :meth:`cost` prices choosing them.
    """

    name: ClassVar[str]
    reduces: ClassVar[bool] = True  # False for an op that never changes the tokens

    def plan(self, planning: Planning, action: LayerAction) -> ReductionPlan:
        """What ``action`` does to the row ``planning`` describes."""
        count = planning.count(action) if self.reduces else 0
        if count == 0:
            return ReductionPlan.empty(planning.removable.device)
        remove = planning.lowest(action, count)
        return self.finish(planning, action, remove)

    def finish(self, planning: Planning, action: LayerAction, remove: Tensor) -> ReductionPlan:
        """The plan once ``remove`` is chosen (by default: they leave)."""
        return ReductionPlan(remove, flops=self.cost(action, planning.price(len(remove))))

    def cost(self, action: LayerAction, price: Price) -> float:
        """FLOPs the op charges at its layer beyond the layers run on what it keeps (choosing tokens)."""
        if price.count == 0:
            return 0.0
        return SCORERS[action.scorer].flops(price.dims, price.tokens, price.window)


OPS: dict[str, Op] = {}
"""Every op by name; :class:`~rlprune.reduction.LayerAction` checks its ``op`` against it."""


def register_op(cls: type[Op]) -> type[Op]:
    OPS[cls.name] = cls()
    return cls


POLICY_OPS: tuple[str, ...] = ("keep", "prune", "merge")
"""The ops a layer-level policy's action head offers unless its spec says otherwise."""


@register_op
class Keep(Op):
    """Do nothing: every token goes on."""

    name = "keep"
    reduces = False


@register_op
class Prune(Op):
    """Drop the tokens the scorer ranks lowest."""

    name = "prune"


@register_op
class Merge(Op):
    """Fold the tokens the scorer ranks lowest into the most similar of the next receivable tokens."""

    name = "merge"

    def finish(self, planning: Planning, action: LayerAction, remove: Tensor) -> ReductionPlan:
        can_receive = planning.removable[: planning.prompt_tokens].clone()
        can_receive[remove] = False
        into = match_merge_targets(planning.scores.normed[0], remove, can_receive, planning.merge_window)
        return ReductionPlan(remove, into, flops=self.cost(action, planning.price(len(remove))))

    def cost(self, action: LayerAction, price: Price) -> float:
        if price.count == 0:
            return 0.0
        return super().cost(action, price) + flops.merge_match_flops(price.dims, price.count, price.merge_window)


def select_least_important(scores: Tensor, removable: Tensor, count: int) -> Tensor:
    """Sorted indices of the ``count`` removable tokens with the lowest scores."""
    count = min(count, int(removable.sum()))
    if count <= 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    ranked = scores.masked_fill(~removable, float("inf"))
    return torch.topk(ranked, count, largest=False).indices.sort().values


def match_merge_targets(normed: Tensor, remove: Tensor, can_receive: Tensor, window: int) -> Tensor:
    """For each removed token, the most similar of the next ``window`` tokens that may receive it.

    Args:
        normed: ``(n, hidden)`` states compared by cosine similarity.
        remove: sorted indices of the tokens being removed.
        can_receive: ``(n,)`` bool, tokens allowed to absorb others (kept and not protected).
        window: how many receivable tokens after each removed one are candidates.

    Returns:
        ``(len(remove),)`` target indices, -1 where no receivable token follows.
    """
    receivers = torch.nonzero(can_receive)[:, 0]
    if receivers.numel() == 0:
        return torch.full_like(remove, -1)
    first = torch.searchsorted(receivers, remove, right=True)  # first receiver after each token
    slots = first[:, None] + torch.arange(window, device=remove.device)[None, :]
    valid = slots < receivers.numel()
    candidates = receivers[slots.clamp(max=receivers.numel() - 1)]  # (r, window), all later tokens
    unit = F.normalize(normed, dim=-1)
    similarity = torch.einsum("rd,rwd->rw", unit[remove], unit[candidates])
    best = similarity.masked_fill(~valid, float("-inf")).argmax(dim=-1)
    targets = candidates.gather(1, best[:, None])[:, 0]
    return torch.where(valid.any(dim=-1), targets, torch.full_like(targets, -1))


def apply_plan(hidden: Tensor, positions: Tensor, sizes: Tensor, plan: ReductionPlan) -> tuple[Tensor, Tensor, Tensor]:
    """Remove the planned tokens; merged ones are folded into their targets by size-weighted mean.

    Args:
        hidden: ``(1, n, hidden)`` residual stream entering the layer.
        positions: ``(n,)`` original positions.
        sizes: ``(n,)`` how many original tokens each carried token stands for.

    Returns:
        The reduced ``hidden``, ``positions`` and ``sizes``.
    """
    if len(plan) == 0:
        return hidden, positions, sizes
    if plan.into is not None:
        merged = plan.into >= 0
        src, dst = plan.remove[merged], plan.into[merged]
        if src.numel():
            weight = sizes.to(hidden.dtype)
            absorbed = torch.zeros_like(sizes).index_add_(0, dst, sizes[src])
            incoming = torch.zeros_like(hidden[0]).index_add_(0, dst, hidden[0, src] * weight[src, None])
            touched = dst.unique()
            hidden = hidden.clone()
            hidden[0, touched] = (hidden[0, touched] * weight[touched, None] + incoming[touched]) / (
                weight[touched] + absorbed[touched].to(hidden.dtype)
            )[:, None]
            sizes = sizes + absorbed
    keep = torch.ones(positions.shape[0], dtype=torch.bool, device=positions.device)
    keep[plan.remove] = False
    return hidden[:, keep], positions[keep], sizes[keep]


def track_owners(owners: Tensor, positions: Tensor, plan: ReductionPlan) -> Tensor:
    """Where each original token's content lives after ``plan``.

    Args:
        owners: ``(sequence,)`` for every original token, the original position of the carried
            token that holds it (itself until it is merged away), or -1 once it is gone.
        positions: ``(n,)`` original positions of the tokens carried into the plan's layer.

    Returns:
        The updated owners: a pruned token's content is gone (-1, with all merged into it), a merged
        token's content now lives in its target.
    """
    if len(plan) == 0:
        return owners
    target = positions.clone()
    target[plan.remove] = -1
    if plan.into is not None:
        merged = plan.into >= 0
        target[plan.remove[merged]] = positions[plan.into[merged]]
    lookup = torch.full_like(owners, -1)
    lookup[positions] = target
    return torch.where(owners >= 0, lookup[owners.clamp(min=0)], owners)
