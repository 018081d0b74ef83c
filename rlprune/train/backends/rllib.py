"""PPO on Ray workers with RLlib's new API stack, for every policy kind.

The policy is the same :class:`ReductionPolicy` (or :class:`TokenReductionPolicy`), held by an
RLModule (:mod:`rlprune.train.backends.rllib_modules`); its weights are the policy's own, so the export is
exact. Each env runner builds its environment (and loads the model) itself from a small config,
never receiving the model through Ray. A runner that dies is restarted by RLlib and the run goes
on. Everything around the learner (run folder, checkpoints, validation, export) is
:mod:`rlprune.train.common`, as for the SB3 backend.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.ppo import PPOConfig as RLlibPPOConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.tune.registry import register_env

from rlprune.config import from_dict
from rlprune.envs import EnvConfig, TokenLevelEnv, TokenReductionEnv
from rlprune.errors import RLPruneError
from rlprune.policies import ReductionPolicy
from rlprune.train.backends.rllib_budget import learn_budget
from rlprune.train.backends.rllib_modules import (
    MaskedObservation,
    ReductionRLModule,
    TokenActionDistribution,
    TokenRLModule,
    layer_module,
    token_module,
)
from rlprune.train.common import Run, Session
from rlprune.train.kinds.budget_head import BudgetKind
from rlprune.train.recipe import Recipe

__all__ = [
    "ENV_NAME",
    "MaskedObservation",
    "RLlibBackend",
    "ReductionRLModule",
    "TokenActionDistribution",
    "TokenRLModule",
    "algorithm_config",
    "init_ray",
    "learner_policy",
    "make_env",
    "module_spec",
]

ENV_NAME = "rlprune-token-reduction"


@dataclass(frozen=True)
class RLlibKind:
    """How RLlib trains one policy kind: the environment as the kind sees it, and the module holding it."""

    view: Callable[[TokenReductionEnv], gym.Env]
    module: Callable[[EnvConfig, Recipe], RLModuleSpec]


RLLIB_KINDS: dict[str, RLlibKind | BudgetKind] = {
    "layer": RLlibKind(MaskedObservation, layer_module),
    "token": RLlibKind(TokenLevelEnv, token_module),
    "budget": BudgetKind(learn_budget),
}
"""The kinds RLlib trains (a budget head on its one-step environment, on env runners of its own)."""


def make_env(config: dict[str, Any]) -> gym.Env:
    """Build the environment inside an env runner: the model is loaded here, with its own threads."""
    torch.set_num_threads(int(config.get("torch_threads", 1)))
    if isinstance(config.get("preset_config"), dict):  # the preset as resolved (and checked) by the driver
        preset = from_dict(EnvConfig, config["preset_config"], "the env preset")
    else:
        preset = EnvConfig.load(config["preset"])
    preset = dataclasses.replace(
        preset, device=config.get("device", preset.device), dtype=config.get("dtype", preset.dtype)
    )
    env = TokenReductionEnv(preset, split="train", cache_dir=config.get("cache_dir"))
    return RLLIB_KINDS[config.get("policy", "layer")].view(env)


class EpisodeMetrics(RLlibCallback):
    """Reports each finished episode's FLOPs ratio and KL next to RLlib's own return statistics."""

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        info = episode.get_infos(-1)
        if metrics_logger is not None and "flops_ratio" in info:
            metrics_logger.log_value("rlprune_flops_ratio", info["flops_ratio"], reduce="mean", window=100)
            metrics_logger.log_value("rlprune_kl", info["kl"], reduce="mean", window=100)


def module_spec(env_config: EnvConfig, recipe: Recipe) -> RLModuleSpec:
    """The RLModule for the recipe's policy kind, shaped as the recipe and preset say."""
    return RLLIB_KINDS[recipe.policy].module(env_config, recipe)


def algorithm_config(
    env_preset: str | Path, env_config: EnvConfig, recipe: Recipe, cache_dir: str | None, cpus_per_runner: float
) -> RLlibPPOConfig:
    """RLlib's PPO with the recipe's hyper-parameters (SB3 names mapped to RLlib's)."""
    ppo, settings = recipe.ppo, recipe.run
    env_settings = {
        "preset": str(env_preset),
        "preset_config": dataclasses.asdict(env_config),
        "device": env_config.device,
        "dtype": env_config.dtype,
        "cache_dir": cache_dir,
        "torch_threads": settings.torch_threads,
        "policy": recipe.policy,
    }
    return (
        RLlibPPOConfig()
        # actions go to the environment as sampled: token-level keys are not squashed into [-1, 1]
        .environment(
            ENV_NAME, env_config=env_settings, disable_env_checking=True, normalize_actions=False, clip_actions=False
        )
        .env_runners(
            num_env_runners=settings.n_envs,
            num_envs_per_env_runner=1,
            num_cpus_per_env_runner=cpus_per_runner,
            rollout_fragment_length=ppo.n_steps,
            sample_timeout_s=recipe.ray.sample_timeout_s,
        )
        .fault_tolerance(restart_failed_env_runners=True)
        .training(
            lr=ppo.learning_rate,
            train_batch_size_per_learner=ppo.n_steps * settings.n_envs,
            minibatch_size=ppo.batch_size,
            num_epochs=ppo.n_epochs,
            gamma=ppo.gamma,
            lambda_=ppo.gae_lambda,
            clip_param=ppo.clip_range,
            entropy_coeff=ppo.ent_coef,
            vf_loss_coeff=ppo.vf_coef,
            grad_clip=ppo.max_grad_norm,
            use_kl_loss=False,  # plain clipped PPO, as in the SB3 backend
            vf_clip_param=float("inf"),
        )
        .rl_module(rl_module_spec=module_spec(env_config, recipe))
        .learners(num_learners=0)
        .callbacks(EpisodeMetrics)
        .debugging(seed=settings.seed, log_level="ERROR")
    )


def learner_policy(algo: Algorithm, template: ReductionPolicy) -> ReductionPolicy:
    """The learner's current weights in ``template`` (the exported form)."""
    weights = algo.learner_group.get_weights()[DEFAULT_MODULE_ID]
    prefix = "reduction."
    state = {k[len(prefix) :]: torch.as_tensor(np.asarray(v)) for k, v in weights.items() if k.startswith(prefix)}
    template.load_state_dict(state)
    return template


def init_ray(address: str | None, workers: int) -> tuple[bool, float]:
    """Connect to ``address`` or start a local Ray sized to this machine; returns (started, CPUs per runner)."""
    if ray.is_initialized():
        return False, _cpus_per_runner(workers, address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    except ConnectionError as error:
        raise RLPruneError(
            f"cannot reach a Ray cluster at {address!r} ({error}); start one with `ray start --head`"
        ) from None
    return True, _cpus_per_runner(workers, address)


def _cpus_per_runner(workers: int, address: str | None) -> float:
    """One CPU each on a cluster; on a local Ray, a share of the machine so every runner gets placed."""
    if address:
        return 1.0
    return min(1.0, (os.cpu_count() or 1) / workers)


class RLlibBackend:
    """The :class:`~rlprune.train.common.Backend` for RLlib: PPO with ``run.n_envs`` env runners.

    ``on_iteration(algo, result)`` is called after every training iteration (monitoring, tests).
    """

    name = "ray"

    def __init__(
        self,
        run: Run,
        address: str | None = None,
        on_iteration: Callable[[Algorithm, dict[str, Any]], None] | None = None,
    ) -> None:
        settings = run.recipe.run
        self.runners, self.on_iteration = settings.n_envs, on_iteration
        address = address if address is not None else (run.recipe.ray.address or None)
        self.started_ray, cpus = init_ray(address, settings.n_envs)
        try:
            register_env(ENV_NAME, make_env)
            config = algorithm_config(run.env_preset, run.env_config, run.recipe, run.cache_dir, cpus)
            self.algo = config.build_algo()
        except BaseException:
            if self.started_ray:
                ray.shutdown()
            raise
        self.template = run.new_policy()
        self.steps = {"timesteps": 0, "iterations": 0}

    def policy(self) -> ReductionPolicy:
        return learner_policy(self.algo, self.template)

    def set_policy(self, policy: ReductionPolicy) -> None:
        weights = {f"reduction.{k}": v.detach().numpy() for k, v in policy.state_dict().items()}
        self.algo.learner_group.set_weights({DEFAULT_MODULE_ID: weights})
        self.algo.env_runner_group.sync_weights(from_worker_or_learner_group=self.algo.learner_group)

    def counters(self) -> dict[str, int]:
        return dict(self.steps)

    def trainer_state(self) -> Any:
        return self.algo.learner_group.get_state()

    def restore(self, policy: ReductionPolicy, state: Any, counters: dict[str, Any]) -> None:
        self.algo.learner_group.set_state(state)  # the module's weights are in the learner's state
        self.algo.env_runner_group.sync_weights(from_worker_or_learner_group=self.algo.learner_group)
        self.steps = {"timesteps": int(counters["timesteps"]), "iterations": int(counters["iterations"])}

    def learn(self, session: Session) -> None:
        while self.steps["timesteps"] < session.total:
            result = self.algo.train()
            runners = result.get("env_runners", {})
            self.steps["timesteps"] += int(runners.get("num_env_steps_sampled", 0))
            self.steps["iterations"] += 1
            session.report(self.steps["timesteps"], episode_means(runners))
            if self.on_iteration is not None:
                self.on_iteration(self.algo, result)
            session.after_update()

    def close(self) -> dict[str, Any]:
        try:
            restarts = int(self.algo.env_runner_group.num_remote_worker_restarts())
        finally:
            self.algo.stop()
            if self.started_ray:
                ray.shutdown()
        return {"env_runners": self.runners, "env_runner_restarts": restarts}


def episode_means(runners: dict[str, Any]) -> dict[str, float]:
    """The recent episodes' reward, FLOPs ratio and KL from RLlib's env-runner metrics ({} before any)."""
    keys = {"reward": "episode_return_mean", "flops_ratio": "rlprune_flops_ratio", "kl": "rlprune_kl"}
    if not all(isinstance(runners.get(source), (int, float)) for source in keys.values()):
        return {}
    return {key: float(runners[source]) for key, source in keys.items()}
