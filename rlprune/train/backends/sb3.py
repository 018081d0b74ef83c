"""PPO on one machine with Stable-Baselines3: sb3-contrib's MaskablePPO for layer policies, PPO
with :class:`rlprune.train.backends.sb3_tokens.SB3TokenPolicy` for token-level ones.

The SB3 policy *is* a :class:`ReductionPolicy`: its trunk, action head and value head are the
SB3 policy's extractor, ``action_net`` and ``value_net``, so exporting is exact. Everything around
the learner (run folder, checkpoints, validation, export) is :mod:`rlprune.train.common`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv
from torch import nn

from rlprune.engine.features import SCORER_CHOICES, ActionSpec
from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.envs.token_env import TokenLevelEnv
from rlprune.envs.vector_env import TokenReductionVectorEnv
from rlprune.policies import ReductionPolicy
from rlprune.train.backends.sb3_budget import learn_budget
from rlprune.train.backends.sb3_tokens import SB3TokenPolicy
from rlprune.train.backends.sb3_vec import BatchedVecEnv
from rlprune.train.common import EpisodeWindow, Run, Session, load_checkpoint
from rlprune.train.kinds.budget_head import BudgetKind


class SharedTrunk(nn.Module):
    """SB3's ``mlp_extractor`` made of the reduction policy's trunk (shared by actor and critic)."""

    def __init__(self, trunk: nn.Module, width: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.latent_dim_pi = self.latent_dim_vf = width

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.trunk(features)
        return latent, latent

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.trunk(features)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.trunk(features)


class SB3ReductionPolicy(MaskableActorCriticPolicy):
    """A MaskablePPO policy whose networks are a :class:`ReductionPolicy` (``self.reduction``)."""

    def __init__(
        self, *args, hidden=(64, 64), decision_layers=(2, 6, 12, 20), scorers=SCORER_CHOICES, **kwargs
    ) -> None:
        self.reduction_kwargs = {"hidden": tuple(hidden), "decision_layers": tuple(decision_layers)}
        self.reduction_kwargs["action_spec"] = ActionSpec(scorers=tuple(scorers))
        super().__init__(*args, ortho_init=False, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.reduction = ReductionPolicy(observation_size=self.features_dim, **self.reduction_kwargs)
        self.mlp_extractor = SharedTrunk(self.reduction.trunk, self.reduction.hidden[-1])

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        self.action_net = self.reduction.action_head
        self.value_net = self.reduction.value_head
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)


def make_env(
    preset: str | Path | EnvConfig,
    split: str,
    seed: int,
    threads: int,
    cache_dir: str | None,
    kind: str = "layer",
):
    """An environment factory for a vectorised-env worker (the model is loaded inside it), seen as the
    policy ``kind`` sees it."""

    def build():
        torch.set_num_threads(threads)
        env = Monitor(SB3_KINDS[kind].view(TokenReductionEnv(preset, split=split, cache_dir=cache_dir)))
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env

    return build


def load_sb3_checkpoint(model: MaskablePPO | PPO, folder: Path) -> dict[str, Any]:
    """Load a checkpoint's policy and optimizer state into a freshly built ``model``; returns its counters."""
    policy, state, counters = load_checkpoint(folder)
    restore(model, policy, state, counters)
    return counters


def restore(model: MaskablePPO | PPO, policy: ReductionPolicy, state: Any, counters: dict[str, Any]) -> None:
    """Put a checkpoint's policy, optimizer state and step count into ``model``."""
    model.policy.reduction.load_state_dict(policy.state_dict())
    model.policy.optimizer.load_state_dict(state["optimizer"])
    model.num_timesteps = int(counters["timesteps"])


@dataclass(frozen=True)
class SB3Kind:
    """How SB3 trains one policy kind."""

    algorithm: type[MaskablePPO] | type[PPO]
    policy: type[BasePolicy]
    """The SB3 policy holding the kind's network (``.reduction``)."""
    view: Callable[[TokenReductionEnv], gym.Env]
    """The environment as the kind sees it."""
    batched: bool
    """Its episodes can share one batched forward (:class:`TokenReductionVectorEnv`)."""
    policy_kwargs: Callable[[Run], dict[str, Any]]


SB3_KINDS: dict[str, SB3Kind | BudgetKind] = {
    "layer": SB3Kind(
        MaskablePPO, SB3ReductionPolicy, lambda env: env, True, lambda run: {"scorers": run.env_config.episode.scorers}
    ),
    "token": SB3Kind(
        PPO, SB3TokenPolicy, TokenLevelEnv, False, lambda run: {"token_hidden": run.recipe.ppo.token_hidden}
    ),
    "budget": BudgetKind(learn_budget),
}
"""The kinds SB3 trains (layer policies with action masks, token-level ones with their own distribution,
a budget head on its one-step environment)."""


class SB3Backend:
    """The :class:`~rlprune.train.common.Backend` for Stable-Baselines3."""

    name = "sb3"

    def __init__(self, run: Run) -> None:
        self.vec_env = _vec_env(run)
        try:
            self.model = _ppo(run, self.vec_env)
        except BaseException:
            self.vec_env.close()
            raise
        self.n_epochs = run.recipe.ppo.n_epochs
        self.updates = 0  # gradient epochs run, as SB3 counts its updates

    def policy(self) -> ReductionPolicy:
        return self.model.policy.reduction

    def set_policy(self, policy: ReductionPolicy) -> None:
        if policy is not self.model.policy.reduction:
            self.model.policy.reduction.load_state_dict(policy.state_dict())

    def counters(self) -> dict[str, int]:
        return {"timesteps": int(self.model.num_timesteps), "updates": self.updates}

    def trainer_state(self) -> dict[str, Any]:
        return {"optimizer": self.model.policy.optimizer.state_dict()}

    def restore(self, policy: ReductionPolicy, state: Any, counters: dict[str, Any]) -> None:
        restore(self.model, policy, state, counters)
        self.updates = int(counters.get("updates", 0))

    def learn(self, session: Session) -> None:
        steps = session.total - self.model.num_timesteps
        callback = SessionCallback(self, session)
        self.model.learn(steps, callback=callback, reset_num_timesteps=False, tb_log_name="ppo")

    def close(self) -> dict[str, Any]:
        self.vec_env.close()
        return {}


class SessionCallback(BaseCallback):
    """Reports SB3's steps and finished episodes to the session, and calls it after every update."""

    def __init__(self, backend: SB3Backend, session: Session) -> None:
        super().__init__()
        self.backend, self.session = backend, session
        self.episodes = EpisodeWindow()

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if done and "flops_ratio" in info:
                self.episodes.add(info["episode"]["r"], info)
        self.session.report(self.num_timesteps, self.episodes.means())
        return True

    def _on_rollout_end(self) -> None:
        """SB3 updates the policy right after each rollout, ``n_epochs`` times."""
        self.backend.updates += self.backend.n_epochs

    def _on_rollout_start(self) -> None:
        """Here, after the previous rollout's update, the policy matches the step count."""
        self.session.after_update()


def _vec_env(run: Run) -> VecEnv:
    """The training episodes: batched in this process, or one model per process."""
    settings, cache_dir = run.recipe.run, run.cache_dir
    kind = SB3_KINDS[run.recipe.policy]
    if settings.envs == "batched" and kind.batched:  # one model: all episodes in one batched forward
        model, tokenizer = run.loaded
        vector = TokenReductionVectorEnv(
            run.env_config, settings.n_envs, model=model, tokenizer=tokenizer, cache_dir=cache_dir
        )
        return BatchedVecEnv(vector, seed=settings.seed)
    # kinds that act per token, or envs = "processes": one model per process
    factories = [
        make_env(run.env_config, "train", settings.seed + i, settings.torch_threads, cache_dir, run.recipe.policy)
        for i in range(settings.n_envs)
    ]
    return SubprocVecEnv(factories) if settings.n_envs > 1 else DummyVecEnv(factories)


def _ppo(run: Run, vec_env: VecEnv) -> MaskablePPO | PPO:
    """A PPO model with the recipe's settings and a :class:`ReductionPolicy` inside."""
    ppo, kind = run.recipe.ppo, SB3_KINDS[run.recipe.policy]
    policy_kwargs: dict[str, Any] = {"hidden": ppo.hidden, "decision_layers": run.env_config.episode.decision_layers}
    policy_kwargs |= kind.policy_kwargs(run)
    return kind.algorithm(
        kind.policy,
        vec_env,
        learning_rate=ppo.learning_rate,
        n_steps=ppo.n_steps,
        batch_size=ppo.batch_size,
        n_epochs=ppo.n_epochs,
        gamma=ppo.gamma,
        gae_lambda=ppo.gae_lambda,
        clip_range=ppo.clip_range,
        ent_coef=ppo.ent_coef,
        vf_coef=ppo.vf_coef,
        max_grad_norm=ppo.max_grad_norm,
        policy_kwargs=policy_kwargs,
        tensorboard_log=str(run.folder / "tensorboard"),
        seed=run.recipe.run.seed,
        device="cpu",
        verbose=0,
    )
