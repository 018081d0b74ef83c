"""PPO on Ray workers with RLlib's new API stack.

The policy is the same :class:`ReductionPolicy`, held by a ``TorchRLModule``; its weights are
the policy's own, so the export is exact. Each env runner builds its environment (and loads the
model) itself from a small config, never receiving the model through Ray. A runner that dies is
restarted by RLlib and the run goes on. Checkpoints, validation, progress, TensorBoard tags and
the summary are those of the single-machine backend (:mod:`rlprune.train.run`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
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
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.tune.registry import register_env
from torch.utils.tensorboard import SummaryWriter

from rlprune.config import from_dict
from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.errors import RLPruneError
from rlprune.policies import ReductionPolicy
from rlprune.train.recipe import Recipe
from rlprune.train.run import (
    BestKeeper,
    EpisodeWindow,
    conclude_run,
    finish_run,
    load_checkpoint,
    next_multiple,
    save_checkpoint,
    start_run,
    training_progress,
)
from rlprune.train.warm_start import behaviour_clone

ENV_NAME = "rlprune-token-reduction"


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
    return MaskedObservation(env)


class ReductionRLModule(TorchRLModule, ValueFunctionAPI):
    """A :class:`ReductionPolicy` as an RLlib module: masked logits for the three action parts and values."""

    def setup(self) -> None:
        space = self.observation_space["observations"]
        self.reduction = ReductionPolicy(
            observation_size=space.shape[0],
            hidden=tuple(self.model_config["hidden"]),
            decision_layers=tuple(self.model_config["decision_layers"]),
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


class EpisodeMetrics(RLlibCallback):
    """Reports each finished episode's FLOPs ratio and KL next to RLlib's own return statistics."""

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        info = episode.get_infos(-1)
        if metrics_logger is not None and "flops_ratio" in info:
            metrics_logger.log_value("rlprune_flops_ratio", info["flops_ratio"], reduce="mean", window=100)
            metrics_logger.log_value("rlprune_kl", info["kl"], reduce="mean", window=100)


def module_spec(env_config: EnvConfig, recipe: Recipe) -> RLModuleSpec:
    model_config = {"hidden": list(recipe.ppo.hidden), "decision_layers": list(env_config.episode.decision_layers)}
    return RLModuleSpec(module_class=ReductionRLModule, model_config=model_config)


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
    }
    return (
        RLlibPPOConfig()
        .environment(ENV_NAME, env_config=env_settings, disable_env_checking=True)
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
    """The learner's current weights as a :class:`ReductionPolicy` (the exported form)."""
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


def train(
    env_preset: str | Path | None,
    recipe: Recipe | str | Path | None,
    out: str | Path,
    *,
    timesteps: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    address: str | None = None,
    resume: bool = False,
    cache_dir: str | None = None,
    quiet: bool = False,
    on_iteration: Callable[[Algorithm, dict[str, Any]], None] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    override: Sequence[str] = (),
) -> dict[str, Any]:
    """Train a reduction policy with RLlib PPO on Ray env runners; returns the summary (also in ``summary.json``).

    ``on_iteration(algo, result)`` is called after every training iteration (monitoring, tests).
    ``resume`` and ``override`` work as in :func:`rlprune.train.sb3.train`.
    """
    overrides = {"timesteps": timesteps, "seed": seed, "n_envs": workers}
    run = start_run(
        env_preset,
        recipe,
        out,
        backend="ray",
        overrides=overrides,
        resume=resume,
        cache_dir=cache_dir,
        device=device,
        dtype=dtype,
        allow=override,
    )
    if run.recipe.policy != "layer":
        raise RLPruneError(
            'token-level policies (policy = "token" in the recipe) train with the sb3 backend; use --backend sb3'
        )
    if run.finished:
        return conclude_run(run)
    run.warm()
    recipe, env_config, run_dir, settings = run.recipe, run.env_config, run.folder, run.recipe.run
    address = address if address is not None else (recipe.ray.address or None)
    started_ray, cpus = init_ray(address, settings.n_envs)
    register_env(ENV_NAME, make_env)
    policy = ReductionPolicy(hidden=recipe.ppo.hidden, decision_layers=env_config.episode.decision_layers)
    best = BestKeeper(run_dir, run.meta)
    history: list[dict[str, Any]] = list(run.history)
    counters = {"timesteps": 0, "iterations": 0}
    cloned = None
    algo = algorithm_config(run.env_preset, env_config, recipe, cache_dir, cpus).build_algo()
    writer: SummaryWriter | None = None  # created as training begins, when the run folder is written

    def validate() -> dict[str, Any]:
        result = {**run.evaluator(learner_policy(algo, policy)), "timesteps": counters["timesteps"]}
        history.append(result)
        for key in ("reward", "flops_ratio", "kl", "budget_error"):
            writer.add_scalar(f"validation/{key}", result[key], counters["timesteps"])
        best.offer(policy, result, dict(counters))
        return result

    try:
        if run.last is not None:
            _, state, saved = load_checkpoint(run.last)
            algo.learner_group.set_state(state)
            algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group)
            counters = {"timesteps": int(saved["timesteps"]), "iterations": int(saved["iterations"])}
        elif recipe.warm_start.baseline:
            cloned = behaviour_clone(policy, run.trainer_env, recipe)
            weights = {f"reduction.{k}": v.detach().numpy() for k, v in policy.state_dict().items()}
            algo.learner_group.set_weights({DEFAULT_MODULE_ID: weights})
            algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group)
        start_steps, started = counters["timesteps"], time.time()
        next_checkpoint = next_multiple(start_steps, settings.checkpoint_every)
        next_eval = next_multiple(start_steps, settings.eval_every)
        with run.training(), training_progress(quiet) as progress:
            writer = SummaryWriter(str(run_dir / "tensorboard" / "ray"))
            bar = progress.add_task("training (ray)", total=settings.timesteps, completed=start_steps, stats="")
            while counters["timesteps"] < settings.timesteps:
                result = algo.train()
                runners = result.get("env_runners", {})
                counters["timesteps"] += int(runners.get("num_env_steps_sampled", 0))
                counters["iterations"] += 1
                means = _episode_means(runners)
                for key, value in means.items():
                    writer.add_scalar(f"episodes/{key}", value, counters["timesteps"])
                stats = EpisodeWindow.describe(means)
                progress.update(bar, completed=min(counters["timesteps"], settings.timesteps), stats=stats)
                if on_iteration is not None:
                    on_iteration(algo, result)
                if counters["timesteps"] >= next_eval:  # validate first: the checkpoint keeps the history
                    validate()
                    next_eval = next_multiple(counters["timesteps"], settings.eval_every)
                if counters["timesteps"] >= next_checkpoint:
                    _save(algo, policy, run_dir, counters, run.meta, history)
                    next_checkpoint = next_multiple(counters["timesteps"], settings.checkpoint_every)
            final = history[-1] if history and history[-1]["timesteps"] == counters["timesteps"] else validate()
            _save(algo, policy, run_dir, counters, run.meta, history)
        restarts = algo.env_runner_group.num_remote_worker_restarts()
    finally:
        if writer is not None:
            writer.close()
        algo.stop()
        if started_ray:
            ray.shutdown()
    return finish_run(
        run,
        timesteps=counters["timesteps"],
        start_steps=start_steps,
        seconds=time.time() - started,
        final=final,
        best=best.best,
        history=history,
        cloned=cloned,
        env_runners=settings.n_envs,
        env_runner_restarts=int(restarts),
    )


def _episode_means(runners: dict[str, Any]) -> dict[str, float]:
    keys = {"reward": "episode_return_mean", "flops_ratio": "rlprune_flops_ratio", "kl": "rlprune_kl"}
    if not all(isinstance(runners.get(source), (int, float)) for source in keys.values()):
        return {}
    return {key: float(runners[source]) for key, source in keys.items()}


def _save(
    algo: Algorithm,
    policy: ReductionPolicy,
    run_dir: Path,
    counters: dict[str, int],
    run: dict,
    history: list[dict[str, Any]],
) -> None:
    state = algo.learner_group.get_state()
    save_checkpoint(run_dir / "last", learner_policy(algo, policy), state, dict(counters), run, history)
