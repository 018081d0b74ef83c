"""The action distribution of a token-level policy, as PPO sees it (both backends use this one).

An action is ``[op, share, key_1 .. key_n]`` (:class:`rlprune.envs.token_env.TokenLevelEnv`): op
and share are categorical, and the keys are the keep scores minus Gumbel noise, whose order is a
Plackett-Luce removal sequence (:mod:`rlprune.policies.plackett_luce`). Its log-probability is
exact: the op, then, when the op acts, the share and the ordered removal of ``counts[op, share]``
tokens. Acting deterministically takes the most likely op and share and the keep scores as keys,
which is what the exported :class:`TokenReductionPolicy` does.

The entropy bonus is the op's entropy, plus the share's and the removal order's per-draw entropy
weighted by how likely they are to matter (the op acting; each op and share), the removal order's
estimated by the chain rule along a fresh sample. The weights carry no gradient, so the bonus
never pushes the policy towards acting: only towards spreading each choice once it is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Categorical

from rlprune.envs.token_env import KEY_BOUND
from rlprune.policies import TokenReductionPolicy
from rlprune.policies.plackett_luce import log_prob_and_entropy, perturb


@dataclass
class TokenActions:
    """The distribution over token-level actions at a batch of observations."""

    op_logits: Tensor  # (B, ops); ops that do not apply are at the dtype's minimum
    share_logits: Tensor  # (B, shares)
    counts: Tensor  # (B, ops, shares): how many tokens each choice removes
    removable: Tensor  # (B, n) bool: tokens that may go
    scores: Tensor  # (B, n) keep scores
    keep: int = 0  # the index of the op that removes nothing

    @classmethod
    def at(cls, policy: TokenReductionPolicy, obs: Mapping[str, Tensor]) -> tuple[TokenActions, Tensor]:
        """The distribution and the values ``(B,)`` at a batch of :class:`TokenLevelEnv` observations."""
        ops, shares, _ = policy.nvec
        logits, values = policy(obs["layer"])
        op_logits = logits[:, :ops].masked_fill(obs["op_mask"] < 0.5, torch.finfo(logits.dtype).min)
        actions = cls(
            op_logits,
            logits[:, ops : ops + shares],
            obs["counts"].reshape(-1, ops, shares),
            obs["removable"] > 0.5,
            policy.token_scores(obs["tokens"]),
            keep=policy.action_spec.ops.index("keep"),
        )
        return actions, values

    def sample(self, deterministic: bool = False) -> Tensor:
        """Actions ``(B, 2 + n)``: drawn, or the most likely op and share with the scores as keys."""
        ops, shares = Categorical(logits=self.op_logits), Categorical(logits=self.share_logits)
        if deterministic:
            op, share, keys = ops.probs.argmax(-1), shares.probs.argmax(-1), self.scores
        else:
            op, share, keys = ops.sample(), shares.sample(), perturb(self.scores)
        keys = keys.clamp(-KEY_BOUND, KEY_BOUND)
        return torch.cat((op[:, None].to(keys.dtype), share[:, None].to(keys.dtype), keys), dim=-1)

    def log_prob(self, actions: Tensor) -> Tensor:
        """Log-probabilities ``(B,)`` of actions ``(B, 2 + n)``."""
        op, share, keys = actions[:, 0].round().long(), actions[:, 1].round().long(), actions[:, 2:]
        acting = (op != self.keep).to(self.scores.dtype)
        count = (self.counts[torch.arange(op.shape[0]), op, share] * acting).round().long()
        token_log_prob, _ = log_prob_and_entropy(self.scores, keys, self.removable, count)
        ops, shares = Categorical(logits=self.op_logits), Categorical(logits=self.share_logits)
        return ops.log_prob(op) + acting * (shares.log_prob(share) + token_log_prob)

    def entropy(self) -> Tensor:
        """The entropy bonus ``(B,)`` (see the module's description)."""
        ops, shares = Categorical(logits=self.op_logits), Categorical(logits=self.share_logits)
        p_op, p_share = ops.probs.detach(), shares.probs.detach()
        acting = [i for i in range(p_op.shape[-1]) if i != self.keep]
        batch, n = self.scores.shape
        counts = self.counts[:, acting].round().long()  # (B, acting ops, shares)
        pairs = counts.shape[1] * counts.shape[2]
        keys = perturb(self.scores.detach())
        _, token_entropy = log_prob_and_entropy(
            self.scores.repeat_interleave(pairs, 0),
            keys.repeat_interleave(pairs, 0),
            self.removable.repeat_interleave(pairs, 0),
            counts.reshape(-1),
        )
        per_draw = (token_entropy / counts.reshape(-1).clamp(min=1)).view(batch, len(acting), -1)
        weights = p_op[:, acting, None] * p_share[:, None, :]
        tokens = (weights * per_draw).sum((1, 2))
        return ops.entropy() + p_op[:, acting].sum(-1) * shares.entropy() + tokens

    def pack(self) -> Tensor:
        """All of it as one ``(B, ops + shares + ops * shares + 2n)`` tensor (what RLlib passes around)."""
        flat = (self.op_logits, self.share_logits, self.counts.flatten(1), self.removable.to(self.scores.dtype))
        return torch.cat((*flat, self.scores), dim=-1)

    @classmethod
    def unpack(cls, packed: Tensor, ops: int, shares: int, keep: int = 0) -> TokenActions:
        """The distribution :meth:`pack` gave ``packed``."""
        n = (packed.shape[-1] - ops - shares - ops * shares) // 2
        op_logits, share_logits, counts, removable, scores = packed.split([ops, shares, ops * shares, n, n], -1)
        return cls(op_logits, share_logits, counts.reshape(-1, ops, shares), removable > 0.5, scores, keep=keep)
