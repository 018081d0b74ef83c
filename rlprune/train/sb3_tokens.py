"""Stable-Baselines3 PPO for token-level policies.

The SB3 policy *is* a :class:`TokenReductionPolicy` (``self.reduction``). An action is
``[op, share, keys...]`` (see :class:`rlprune.envs.token_env.TokenLevelEnv`): op and share are
categorical, and the keys are the keep scores minus Gumbel noise, whose order is a
Plackett-Luce removal sequence. Its log-probability is exact (op, then share and the ordered
removal of ``counts[op, share]`` tokens when the op acts); the entropy adds the op's and share's
entropies to the per-draw mean of the chain-rule entropy estimate of the removal sequence.
"""

from __future__ import annotations

import torch
from stable_baselines3.common.policies import BasePolicy
from torch import Tensor
from torch.distributions import Categorical

from rlprune.envs.token_env import KEY_BOUND
from rlprune.policies import TokenReductionPolicy
from rlprune.policies.plackett_luce import log_prob_and_entropy, perturb

Observation = dict[str, Tensor]


class SB3TokenPolicy(BasePolicy):
    """A PPO policy (SB3 interface) around a :class:`TokenReductionPolicy`."""

    def __init__(
        self,
        observation_space,
        action_space,
        lr_schedule,
        *,
        hidden=(64, 64),
        token_hidden=(32, 32),
        decision_layers=(2, 8, 16),
        use_sde: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(observation_space, action_space, **kwargs)
        self.reduction = TokenReductionPolicy(
            hidden=tuple(hidden), decision_layers=tuple(decision_layers), token_hidden=tuple(token_hidden)
        )
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _heads(self, obs: Observation) -> tuple[Categorical, Categorical, Tensor, Tensor]:
        ops, shares, _ = self.reduction.nvec
        logits, values = self.reduction(obs["layer"])
        op_logits = logits[:, :ops].masked_fill(obs["op_mask"] < 0.5, torch.finfo(logits.dtype).min)
        share_logits = logits[:, ops : ops + shares]
        return (
            Categorical(logits=op_logits),
            Categorical(logits=share_logits),
            self.reduction.token_scores(obs["tokens"]),
            values,
        )

    def _evaluate(self, obs: Observation, op: Tensor, share: Tensor, keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        op_dist, share_dist, scores, values = self._heads(obs)
        ops, shares, _ = self.reduction.nvec
        acting = (op != self.reduction.action_spec.ops.index("keep")).float()
        counts = obs["counts"].view(-1, ops, shares)
        count = (counts[torch.arange(op.shape[0]), op, share] * acting).round().long()
        removable = obs["removable"] > 0.5
        token_log_prob, token_entropy = log_prob_and_entropy(scores, keys, removable, count)
        log_prob = op_dist.log_prob(op) + acting * (share_dist.log_prob(share) + token_log_prob)
        entropy = op_dist.entropy() + acting * (share_dist.entropy() + token_entropy / count.clamp(min=1))
        return values, log_prob, entropy

    def forward(self, obs: Observation, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        op_dist, share_dist, scores, _ = self._heads(obs)
        if deterministic:
            op, share, keys = op_dist.probs.argmax(-1), share_dist.probs.argmax(-1), scores
        else:
            op, share, keys = op_dist.sample(), share_dist.sample(), perturb(scores)
        keys = keys.clamp(-KEY_BOUND, KEY_BOUND)
        values, log_prob, _ = self._evaluate(obs, op, share, keys)
        actions = torch.cat((op[:, None].float(), share[:, None].float(), keys), dim=-1)
        return actions, values, log_prob

    def evaluate_actions(self, obs: Observation, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        op, share = actions[:, 0].round().long(), actions[:, 1].round().long()
        return self._evaluate(obs, op, share, actions[:, 2:])

    def predict_values(self, obs: Observation) -> Tensor:
        return self.reduction(obs["layer"])[1][:, None]

    def _predict(self, observation: Observation, deterministic: bool = False) -> Tensor:
        return self.forward(observation, deterministic)[0]
