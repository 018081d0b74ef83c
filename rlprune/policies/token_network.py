"""``TokenReductionPolicy``: a layer-level head (where and how much) and a per-token head (which tokens).

The layer head is the :class:`ReductionPolicy` trunk over the layer observation: op (keep, prune,
merge) and the share of the still-needed savings made here; that share fixes how many tokens go.
The token head is one small MLP applied to every carried prompt token's features
(:data:`rlprune.engine.features.TOKEN_FEATURE_FIELDS`) giving a bounded keep score; the lowest-scored
tokens go. Acting deterministically removes exactly those; sampling draws the removed tokens
without replacement (Plackett-Luce, see :mod:`rlprune.policies.plackett_luce`), whose
log-probability PPO uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rlprune.engine.features import OBSERVATION_SIZE, TOKEN_FEATURE_SIZE, ActionSpec, Features, token_action_spec
from rlprune.policies.network import ReductionPolicy, tanh_mlp
from rlprune.policies.plackett_luce import bound, perturb
from rlprune.reduction import LayerAction

TOKEN_SPEC_VERSION = 3
"""Observation/action spec of token-level policies (layer policies use ``features.SPEC_VERSION``)."""


class TokenReductionPolicy(ReductionPolicy):
    """A :class:`ReductionPolicy` whose tokens are chosen by a learned per-token scoring head."""

    name = "learned-tokens"
    kind = "token"

    def __init__(
        self,
        observation_size: int = OBSERVATION_SIZE,
        hidden: Sequence[int] = (64, 64),
        decision_layers: Sequence[int] = (2, 8, 16),
        action_spec: ActionSpec | None = None,
        token_feature_size: int = TOKEN_FEATURE_SIZE,
        token_hidden: Sequence[int] = (32, 32),
    ) -> None:
        super().__init__(observation_size, hidden, decision_layers, action_spec or token_action_spec())
        if self.action_spec.scorers != ("learned",):
            raise ValueError(
                "a token-level policy scores tokens itself: its action spec's scorers must be ('learned',)"
            )
        self.token_feature_size = token_feature_size
        self.token_hidden = tuple(token_hidden)
        hidden_layers, width = tanh_mlp(token_feature_size, self.token_hidden)
        self.token_net = nn.Sequential(*hidden_layers, nn.Linear(width, 1))

    def token_scores(self, token_features: Tensor) -> Tensor:
        """Keep scores ``(..., tokens)`` from features ``(..., tokens, TOKEN_FEATURE_SIZE)`` (on any device)."""
        device = next(self.token_net.parameters()).device
        return bound(self.token_net(token_features.to(device, torch.float32)).squeeze(-1))

    @torch.no_grad()
    def act(self, features: Features, budget: float | None, deterministic: bool = True) -> LayerAction:
        choice = self.predict(features.vector, self.action_spec.masks(features), deterministic)
        action = self.action_spec.decode(choice, features)
        if action.is_noop:
            return LayerAction()
        scores = self.token_scores(features.tokens)
        return dataclasses.replace(action, token_scores=scores if deterministic else perturb(scores))
