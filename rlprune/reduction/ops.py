"""Prune and merge: which tokens leave, where merged tokens go, and the resulting sequence.

Everything here is causal by construction: a token only ever merges into a *later* token, which
keeps its own position, so no token sees information from its future.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class ReductionPlan:
    """The tokens removed before one layer, in current sequence order.

    Attributes:
        remove: sorted indices of the tokens that leave the sequence.
        into: for ``merge``, the index each removed token is folded into (always greater than its
            own index), or -1 where no target qualified and the token is simply dropped.
            ``None`` for ``prune``.
        flops: what choosing these tokens cost (scoring and target matching).
    """

    remove: Tensor
    into: Tensor | None = None
    flops: float = 0.0

    @classmethod
    def empty(cls, device: torch.device | None = None) -> ReductionPlan:
        return cls(torch.empty(0, dtype=torch.long, device=device))

    def __len__(self) -> int:
        return int(self.remove.numel())


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
