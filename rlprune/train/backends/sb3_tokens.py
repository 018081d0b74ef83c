"""Stable-Baselines3 PPO for token-level policies.

The SB3 policy *is* a :class:`TokenReductionPolicy` (``self.reduction``); its actions, their
log-probabilities and the entropy bonus come from :class:`rlprune.train.kinds.token_actions.TokenActions`,
the distribution the RLlib backend uses too.
"""

from __future__ import annotations

from stable_baselines3.common.policies import BasePolicy
from torch import Tensor

from rlprune.policies import TokenReductionPolicy
from rlprune.train.kinds.token_actions import TokenActions

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

    def forward(self, obs: Observation, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        distribution, values = TokenActions.at(self.reduction, obs)
        actions = distribution.sample(deterministic)
        return actions, values, distribution.log_prob(actions)

    def evaluate_actions(self, obs: Observation, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        distribution, values = TokenActions.at(self.reduction, obs)
        return values, distribution.log_prob(actions), distribution.entropy()

    def predict_values(self, obs: Observation) -> Tensor:
        return self.reduction(obs["layer"])[1][:, None]

    def _predict(self, observation: Observation, deterministic: bool = False) -> Tensor:
        return self.forward(observation, deterministic)[0]
