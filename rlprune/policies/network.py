"""``ReductionPolicy``: the small learned network that decides per layer and per input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical

from rlprune.engine.features import OBSERVATION_SIZE, ActionSpec, Features
from rlprune.errors import RLPruneError
from rlprune.reduction import LayerAction

if TYPE_CHECKING:
    from rlprune.policies.compat import ModelShape

KEEP_BIAS = 2.0  # initial logit advantage of "keep": a fresh policy keeps every token


def tanh_mlp(inputs: int, hidden: Sequence[int]) -> tuple[nn.Sequential, int]:
    """Linear + tanh layers of the given widths, and the width they end at."""
    layers: list[nn.Module] = []
    width = inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.Tanh()]
        width = size
    return nn.Sequential(*layers), width


class ReductionPolicy(nn.Module):
    """Observation -> (op, share, scorer) logits and a value estimate.

    A tanh MLP trunk with an action head (one logit per choice of each action dimension) and a
    value head for PPO. Initialised so that it keeps everything until trained.
    """

    name = "learned"
    default_budget: float | None = None
    """The budget it runs at when none is given (loaded checkpoints set the one they record)."""

    def __init__(
        self,
        observation_size: int = OBSERVATION_SIZE,
        hidden: Sequence[int] = (64, 64),
        decision_layers: Sequence[int] = (2, 6, 12, 20),
        action_spec: ActionSpec | None = None,
    ) -> None:
        super().__init__()
        self.observation_size = observation_size
        self.hidden = tuple(hidden)
        self.layers = tuple(decision_layers)
        self.action_spec = action_spec or ActionSpec()
        self.nvec = tuple(self.action_spec.nvec)
        self.trunk, width = tanh_mlp(observation_size, self.hidden)
        self.action_head = nn.Linear(width, sum(self.nvec))
        self.value_head = nn.Linear(width, 1)
        self._initialise()

    def _initialise(self) -> None:
        for module in self.trunk:
            if isinstance(module, nn.Linear):
                nn.init.orthogonal_(module.weight, gain=2**0.5)
                nn.init.zeros_(module.bias)
        nn.init.orthogonal_(self.action_head.weight, gain=0.01)
        nn.init.zeros_(self.action_head.bias)
        with torch.no_grad():
            self.action_head.bias[self.action_spec.ops.index("keep")] = KEEP_BIAS
        nn.init.orthogonal_(self.value_head.weight, gain=1.0)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, observations: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``(batch, sum(nvec))`` and values ``(batch,)``."""
        latent = self.trunk(observations)
        return self.action_head(latent), self.value_head(latent).squeeze(-1)

    def distributions(self, observations: Tensor, masks: Tensor | None = None) -> list[Categorical]:
        """One categorical per action dimension; masked choices get no probability."""
        logits, _ = self(observations)
        if masks is not None:
            logits = logits.masked_fill(~masks, torch.finfo(logits.dtype).min)
        return [Categorical(logits=part) for part in logits.split(list(self.nvec), dim=-1)]

    def decision_layers(self, num_layers: int) -> tuple[int, ...]:
        bad = [layer for layer in self.layers if not 0 <= layer < num_layers]
        if bad:
            raise RLPruneError(f"this policy decides at layer(s) {bad}, which a {num_layers}-layer model lacks")
        return self.layers

    def check_model(self, shape: ModelShape) -> None:
        """Refuse a model without this policy's decision layers (its observation is the same for every
        model: :func:`~rlprune.policies.compat.check_compatible`), or no decision layer at all (it would
        never reduce, silently running the full model under its name)."""
        if not self.layers:
            from rlprune.policies.compat import IncompatiblePolicyError  # compat imports this module's callers

            raise IncompatiblePolicyError("decision_layers is empty: the policy would never act; give it a layer")
        for layer in self.layers:
            shape.layer("decision_layers", layer)

    @torch.no_grad()
    def act(self, features: Features, budget: float | None, deterministic: bool = True) -> LayerAction:
        choice = self.predict(features.vector, self.action_spec.masks(features), deterministic)
        return self.action_spec.decode(choice, features)

    @torch.no_grad()
    def predict(
        self, observation: np.ndarray, masks: np.ndarray | None = None, deterministic: bool = True
    ) -> np.ndarray:
        """Action indices for one observation (argmax when deterministic, else sampled)."""
        obs = torch.as_tensor(observation, dtype=torch.float32)[None]
        mask = None if masks is None else torch.as_tensor(masks, dtype=torch.bool)[None]
        if not deterministic:
            return torch.stack([d.sample() for d in self.distributions(obs, mask)], dim=-1)[0].numpy()
        logits, _ = self(obs)
        if mask is not None:
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        return torch.stack([part.argmax(-1) for part in logits.split(list(self.nvec), dim=-1)], dim=-1)[0].numpy()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
