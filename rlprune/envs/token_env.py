"""The environment as a token-level policy sees it: per-token features in, a removal order out.

:class:`TokenLevelEnv` wraps :class:`TokenReductionEnv` with fixed-size spaces that any RL
library can store in a rollout buffer:

- observation (``Dict``): ``layer`` (the layer observation vector), ``tokens`` (per-token
  features of the carried prompt tokens, zero-padded to ``max_tokens``), ``removable`` (1 for
  tokens that may go), ``counts`` (how many tokens each (op, share) choice removes here, so a
  policy knows the size of the set it is drawing) and ``op_mask`` (ops that apply);
- action (``Box``): ``[op, share, key_1 .. key_max_tokens]``; the tokens removed are the
  ``counts[op, share]`` removable ones with the lowest keys. A policy puts its keep scores there
  (deterministic) or its scores minus Gumbel noise (a Plackett-Luce sample).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from rlprune.engine.features import (
    OBSERVATION_BOUNDS,
    OBSERVATION_SIZE,
    TOKEN_FEATURE_SIZE,
    Features,
    token_action_spec,
)
from rlprune.envs.env import TokenReductionEnv, check_action, check_int
from rlprune.errors import InvalidPromptError
from rlprune.reduction import LayerAction

KEY_BOUND = 100.0


class TokenLevelEnv(gym.Wrapper):
    """A :class:`TokenReductionEnv` with per-token observations and a removal-order action."""

    def __init__(self, env: TokenReductionEnv, max_tokens: int = 2048) -> None:
        super().__init__(env)
        self.max_tokens = check_int("max_tokens", max_tokens, 1)
        self.action_spec = token_action_spec()
        ops, shares = len(self.action_spec.ops), len(self.action_spec.shares)
        low, high = OBSERVATION_BOUNDS
        self.observation_space = spaces.Dict(
            {
                "layer": spaces.Box(low, high, shape=(OBSERVATION_SIZE,), dtype=np.float32),
                "tokens": spaces.Box(-8.0, 8.0, shape=(max_tokens, TOKEN_FEATURE_SIZE), dtype=np.float32),
                "removable": spaces.Box(0.0, 1.0, shape=(max_tokens,), dtype=np.float32),
                "counts": spaces.Box(0.0, float(max_tokens), shape=(ops * shares,), dtype=np.float32),
                "op_mask": spaces.Box(0.0, 1.0, shape=(ops,), dtype=np.float32),
            }
        )
        self.action_space = spaces.Box(-KEY_BOUND, KEY_BOUND, shape=(2 + max_tokens,), dtype=np.float32)

    @property
    def base(self) -> TokenReductionEnv:
        return self.env.unwrapped

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        _, info = self.env.reset(seed=seed, options=options)
        return self._observe(), info

    def step(self, action):
        _, reward, terminated, truncated, info = self.env.step(self.decode(action))
        observation = self._empty() if terminated or truncated else self._observe()
        return observation, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self.base.action_masks()

    def features(self) -> Features:
        return self.base.features()

    def decode(self, action: np.ndarray) -> LayerAction:
        """The :class:`LayerAction` an action array stands for at the current layer; an array outside
        the action space (wrong shape, NaN, beyond the key bounds) is an :class:`InvalidActionError`."""
        action = check_action(action, self.action_space)
        features = self.features()
        ops, shares = len(self.action_spec.ops), len(self.action_spec.shares)
        op = min(max(int(round(float(action[0]))), 0), ops - 1)  # any Box sample decodes to a valid choice
        share = min(max(int(round(float(action[1]))), 0), shares - 1)
        layer_action = self.action_spec.decode([op, share, 0], features)
        if layer_action.is_noop:
            return LayerAction()
        p = features.state.n_prompt_tokens
        keys = torch.as_tensor(np.asarray(action[2 : 2 + p], dtype=np.float32))
        return dataclasses.replace(layer_action, token_scores=keys)

    def _empty(self) -> dict[str, np.ndarray]:
        return {name: np.zeros(space.shape, dtype=np.float32) for name, space in self.observation_space.spaces.items()}

    def _observe(self) -> dict[str, np.ndarray]:
        features = self.features()
        state = features.state
        p = state.n_prompt_tokens
        if p > self.max_tokens:
            raise InvalidPromptError(
                f"a prompt of {p} tokens exceeds this environment's max_tokens={self.max_tokens}; raise it"
            )
        tokens = np.zeros((self.max_tokens, TOKEN_FEATURE_SIZE), dtype=np.float32)
        tokens[:p] = features.tokens.cpu().numpy()
        removable = np.zeros(self.max_tokens, dtype=np.float32)
        removable[:p] = state.removable()[:p].cpu().numpy()
        counts = np.zeros((len(self.action_spec.ops), len(self.action_spec.shares)), dtype=np.float32)
        total = int(removable.sum())
        for i, op in enumerate(self.action_spec.ops):
            if op == "keep":
                continue
            for j, share in enumerate(self.action_spec.shares):
                counts[i, j] = round(features.action_for_share(op, "learned", share).ratio * total)
        op_mask = self.action_spec.masks(features)[: len(self.action_spec.ops)].astype(np.float32)
        return {
            "layer": features.vector,
            "tokens": tokens,
            "removable": removable,
            "counts": counts.reshape(-1),
            "op_mask": op_mask,
        }
