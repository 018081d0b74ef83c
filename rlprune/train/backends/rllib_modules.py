"""The policies as RLlib ``TorchRLModule`` s: the same networks, so the export is exact.

Each module holds its policy as ``self.reduction``; the learner's weights under ``reduction.`` are
the policy's own state dict. Layer policies see the action mask in the observation
(:class:`MaskedObservation`) and act through RLlib's multi-categorical distribution; token-level
policies see :class:`rlprune.envs.token_env.TokenLevelEnv`'s observation and act through
:class:`TokenActionDistribution`, which is :class:`rlprune.train.kinds.token_actions.TokenActions`, the
distribution the SB3 backend uses.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.distribution import Distribution
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule

from rlprune.engine.features import ActionSpec
from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.policies import ReductionPolicy, TokenReductionPolicy
from rlprune.train.kinds.token_actions import TokenActions
from rlprune.train.recipe import Recipe


class MaskedObservation(gym.ObservationWrapper):
    """Puts the environment's action mask into the observation, where RLlib modules can read it."""

    def __init__(self, env: TokenReductionEnv) -> None:
        super().__init__(env)
        size = int(sum(env.action_space.nvec))
        self.observation_space = gym.spaces.Dict(
            {
                "observations": env.observation_space,
                "action_mask": gym.spaces.Box(0.0, 1.0, shape=(size,), dtype=np.float32),
            }
        )

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        mask = self.env.unwrapped.action_masks().astype(np.float32)
        return {"observations": observation, "action_mask": mask}


class ReductionRLModule(TorchRLModule, ValueFunctionAPI):
    """A :class:`ReductionPolicy` as an RLlib module: masked logits for the three action parts and values."""

    def setup(self) -> None:
        space = self.observation_space["observations"]
        self.reduction = ReductionPolicy(
            observation_size=space.shape[0],
            hidden=tuple(self.model_config["hidden"]),
            decision_layers=tuple(self.model_config["decision_layers"]),
            action_spec=ActionSpec(scorers=tuple(self.model_config["scorers"])),
        )
        self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(input_lens=list(self.reduction.nvec))

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        observations = batch[Columns.OBS]
        logits, _ = self.reduction(observations["observations"])
        invalid = observations["action_mask"] < 0.5
        return {Columns.ACTION_DIST_INPUTS: logits.masked_fill(invalid, torch.finfo(logits.dtype).min)}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        _, values = self.reduction(batch[Columns.OBS]["observations"])
        return values


class TokenActionDistribution(Distribution):
    """RLlib's view of :class:`TokenActions`; its inputs are :meth:`TokenActions.pack`'s tensor."""

    def __init__(self, actions: TokenActions, deterministic: bool = False) -> None:
        super().__init__()
        self.actions, self.deterministic = actions, deterministic

    @classmethod
    def from_logits(cls, logits: torch.Tensor, ops: int = 3, shares: int = 6, keep: int = 0, **kwargs) -> Distribution:
        return cls(TokenActions.unpack(logits, ops, shares, keep))

    def sample(self, *, sample_shape=None, **kwargs) -> torch.Tensor:
        return self.actions.sample(self.deterministic)

    def rsample(self, *, sample_shape=None, **kwargs) -> torch.Tensor:
        raise NotImplementedError("a removal order has no reparameterised sample")

    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.actions.log_prob(value)

    def entropy(self, **kwargs) -> torch.Tensor:
        return self.actions.entropy()

    def kl(self, other: Distribution, **kwargs) -> torch.Tensor:
        raise NotImplementedError("token-level PPO runs without a KL penalty (use_kl_loss=False)")

    @staticmethod
    def required_input_dim(space: gym.Space, **kwargs) -> int:
        raise NotImplementedError("the token module packs its own inputs")

    def to_deterministic(self) -> TokenActionDistribution:
        return TokenActionDistribution(self.actions, deterministic=True)


class TokenRLModule(TorchRLModule, ValueFunctionAPI):
    """A :class:`TokenReductionPolicy` as an RLlib module, on :class:`TokenLevelEnv` observations."""

    def setup(self) -> None:
        self.reduction = TokenReductionPolicy(
            observation_size=self.observation_space["layer"].shape[0],
            hidden=tuple(self.model_config["hidden"]),
            decision_layers=tuple(self.model_config["decision_layers"]),
            token_hidden=tuple(self.model_config["token_hidden"]),
        )
        ops, shares, _ = self.reduction.nvec
        keep = self.reduction.action_spec.ops.index("keep")
        self.action_dist_cls = TokenActionDistribution.get_partial_dist_cls(ops=ops, shares=shares, keep=keep)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        actions, _ = TokenActions.at(self.reduction, batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: actions.pack()}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        _, values = self.reduction(batch[Columns.OBS]["layer"])
        return values


def layer_module(env_config: EnvConfig, recipe: Recipe) -> RLModuleSpec:
    """A layer policy's RLModule, shaped as the recipe and preset say."""
    model_config = {"hidden": list(recipe.ppo.hidden), "decision_layers": list(env_config.episode.decision_layers)}
    model_config["scorers"] = list(env_config.episode.scorers)
    return RLModuleSpec(module_class=ReductionRLModule, model_config=model_config)


def token_module(env_config: EnvConfig, recipe: Recipe) -> RLModuleSpec:
    """A token-level policy's RLModule, shaped as the recipe and preset say."""
    model_config = {"hidden": list(recipe.ppo.hidden), "decision_layers": list(env_config.episode.decision_layers)}
    model_config["token_hidden"] = list(recipe.ppo.token_hidden)
    return RLModuleSpec(module_class=TokenRLModule, model_config=model_config)
