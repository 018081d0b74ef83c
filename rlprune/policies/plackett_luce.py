"""Which tokens go, as a sample without replacement: the Plackett-Luce distribution.

A token-level policy gives every removable token a *keep score* ``s``. To remove ``k`` tokens it
draws them one at a time without replacement, each draw picking token ``i`` among those left
with probability proportional to ``exp(-s_i)``. Adding Gumbel noise and taking the ``k`` lowest
of ``s - g`` draws exactly that sequence (the Gumbel top-k trick), so the reducer's usual "remove
the lowest scores" carries out a sampled action, and acting deterministically (no noise) removes
the ``k`` lowest-scored tokens.

The action PPO sees is the removal *sequence* (the order of the ``k`` draws). Its
log-probability is exact:

    log p(sigma_1..k) = sum_j [ -s_{sigma_j} - logsumexp_{i in R_j} (-s_i) ],

with ``R_j`` the tokens still in the pool at draw ``j``. Its entropy has no closed form; by the
chain rule ``H(sigma_1..k) = E[ sum_j H(draw j | draws before) ]``, so the sum of the per-draw
entropies along a sample is an unbiased estimate of it, which is what :func:`log_prob_and_entropy`
returns. Keep scores are bounded (see ``SCORE_BOUND``), so every sum here is stable in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCORE_BOUND = 8.0
"""Keep scores lie in [-SCORE_BOUND, SCORE_BOUND], so no token's probability underflows."""


OUTSIDE = -1e4
"""Logit of a token that is not in the pool: its weight is exactly zero in float32."""


def bound(raw: Tensor) -> Tensor:
    """Squash raw network outputs into the keep-score range."""
    return SCORE_BOUND * torch.tanh(raw / SCORE_BOUND)


def perturb(scores: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``scores - Gumbel noise``: the ``k`` lowest form a Plackett-Luce removal sample for any ``k``."""
    uniform = torch.rand(scores.shape, generator=generator, device=scores.device).clamp(1e-10, 1 - 1e-7)
    return scores - (-(-uniform.log()).log())


def removal_order(keys: Tensor, valid: Tensor) -> Tensor:
    """Indices sorted by ascending key, the tokens that may not be removed last. Shapes ``(..., n)``."""
    return keys.float().masked_fill(~valid, float("inf")).argsort(dim=-1, stable=True)


def log_prob_and_entropy(scores: Tensor, keys: Tensor, valid: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probability of removing the ``count`` lowest-``keys`` tokens in that order, and the
    chain-rule entropy estimate along that sequence.

    Args:
        scores: ``(batch, n)`` keep scores under the current policy.
        keys: ``(batch, n)`` the perturbed scores the action was drawn with (its order is the action).
        valid: ``(batch, n)`` bool, tokens that may be removed.
        count: ``(batch,)`` how many were removed (at most the number of valid tokens).

    Returns:
        ``(batch,)`` log-probabilities and ``(batch,)`` entropy estimates; both 0 where ``count`` is 0.
    """
    step_log_prob, step_entropy, _ = draws(scores, keys, valid, count)
    return step_log_prob.sum(-1), step_entropy.sum(-1)


def draws(scores: Tensor, keys: Tensor, valid: Tensor, count: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per draw of the removal sequence (arguments as :func:`log_prob_and_entropy`): its
    log-probability, its entropy, and whether it was drawn, each ``(batch, n)`` in draw order
    (zeros past the ``count``-th draw)."""
    order = removal_order(keys, valid)
    logits = (-scores.float()).gather(-1, order)
    in_pool = valid.gather(-1, order)
    logits = logits.masked_fill(~in_pool, OUTSIDE)  # finite, so no NaN reaches a gradient
    # the pool at draw j is the j-th sorted token and every one after it: reverse cumulative sums
    pool_lse = logits.flip(-1).logcumsumexp(-1).flip(-1)
    shift = logits.masked_fill(~in_pool, -SCORE_BOUND).amax(-1, keepdim=True).detach()
    weights = (logits - shift).exp()  # zero outside the pool
    pool_mass = weights.flip(-1).cumsum(-1).flip(-1)
    pool_weighted = (weights * logits.masked_fill(~in_pool, 0.0)).flip(-1).cumsum(-1).flip(-1)
    steps = torch.arange(logits.shape[-1], device=logits.device)
    drawn = (steps[None, :] < count[:, None]) & in_pool
    step_log_prob = torch.where(drawn, logits - pool_lse, 0.0)
    step_entropy = torch.where(drawn, pool_lse - pool_weighted / pool_mass.clamp(min=1e-30), 0.0)
    return step_log_prob, step_entropy, drawn
