"""PPO on one machine with Stable-Baselines3 (sb3-contrib's MaskablePPO).

The SB3 policy *is* a :class:`ReductionPolicy`: its trunk, action head and value head are the
SB3 policy's extractor, ``action_net`` and ``value_net``, so exporting is exact. Checkpoints
(the policy, the optimizer state, the timestep count; safetensors + JSON) are written
atomically every ``checkpoint_every`` steps; ``resume`` continues from the last. The run folder
is laid out as :mod:`rlprune.train.run` describes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv
from torch import nn

from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.envs.token_env import TokenLevelEnv
from rlprune.envs.vector_env import TokenReductionVectorEnv
from rlprune.policies import ReductionPolicy
from rlprune.train.recipe import Recipe
from rlprune.train.run import (
    BestKeeper,
    EpisodeWindow,
    Run,
    conclude_run,
    finish_run,
    load_checkpoint,
    next_multiple,
    save_checkpoint,
    start_run,
    training_progress,
)
from rlprune.train.sb3_tokens import SB3TokenPolicy
from rlprune.train.sb3_vec import BatchedVecEnv
from rlprune.train.teacher import teacher_warm_start
from rlprune.train.warm_start import behaviour_clone


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

    def __init__(self, *args, hidden=(64, 64), decision_layers=(2, 6, 12, 20), **kwargs) -> None:
        self.reduction_kwargs = {"hidden": tuple(hidden), "decision_layers": tuple(decision_layers)}
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
    token_level: bool = False,
):
    """An environment factory for a vectorised-env worker (the model is loaded inside it)."""

    def build():
        torch.set_num_threads(threads)
        env = TokenReductionEnv(preset, split=split, cache_dir=cache_dir)
        env = Monitor(TokenLevelEnv(env) if token_level else env)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env

    return build


# -- checkpoints -------------------------------------------------------------------------------


def save_sb3_checkpoint(
    model: MaskablePPO | PPO, folder: Path, *, run: dict[str, Any], history: list[dict[str, Any]] | None = None
) -> None:
    """The policy, its optimizer state, the step counts and the validation history, replacing ``folder`` atomically."""
    state = {"optimizer": model.policy.optimizer.state_dict()}
    save_checkpoint(folder, model.policy.reduction, state, _progress(model), run, history)


def load_sb3_checkpoint(model: MaskablePPO | PPO, folder: Path) -> None:
    """Restore what :func:`save_sb3_checkpoint` wrote into a freshly built ``model``."""
    policy, state, counters = load_checkpoint(folder)
    model.policy.reduction.load_state_dict(policy.state_dict())
    model.policy.optimizer.load_state_dict(state["optimizer"])
    model.num_timesteps = int(counters["timesteps"])
    model._n_updates = int(counters["updates"])


def _progress(model: MaskablePPO | PPO) -> dict[str, Any]:
    return {"timesteps": int(model.num_timesteps), "updates": int(model._n_updates)}


# -- callbacks ---------------------------------------------------------------------------------


class RunCallback(BaseCallback):
    """Progress bar, periodic checkpoints and validation with the best policy kept.

    ``history`` is the validation history before this process (a resumed run's), continued here.
    """

    def __init__(
        self,
        run_dir: Path,
        run: dict[str, Any],
        recipe: Recipe,
        total: int,
        evaluator,
        progress,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.run_dir, self.run, self.recipe, self.total = run_dir, run, recipe, total
        self.evaluator, self.progress = evaluator, progress
        self.episodes = EpisodeWindow()
        self.best = BestKeeper(run_dir, run)
        self.next_checkpoint = self.next_eval = 0
        self.history: list[dict[str, Any]] = list(history or [])
        self.task = None

    def _on_training_start(self) -> None:
        self.next_checkpoint = next_multiple(self.num_timesteps, self.recipe.run.checkpoint_every)
        self.next_eval = next_multiple(self.num_timesteps, self.recipe.run.eval_every)
        self.task = self.progress.add_task("training", total=self.total, completed=self.num_timesteps, stats="")

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if done and "flops_ratio" in info:
                self.episodes.add(info["episode"]["r"], info)
        means = self.episodes.means()
        for key, value in means.items():
            self.logger.record(f"episodes/{key}", value)
        stats = self.episodes.describe(means)
        self.progress.update(self.task, completed=min(self.num_timesteps, self.total), stats=stats)
        return True

    def _on_rollout_start(self) -> None:
        """Here, after the previous rollout's update, the policy matches the step count: validate,
        then checkpoint (with that validation in its history)."""
        run = self.recipe.run
        if self.num_timesteps >= self.next_eval:
            self.validate()
            self.next_eval = next_multiple(self.num_timesteps, run.eval_every)
        if self.num_timesteps >= self.next_checkpoint:
            save_sb3_checkpoint(self.model, self.run_dir / "last", run=self.run, history=self.history)
            self.next_checkpoint = next_multiple(self.num_timesteps, run.checkpoint_every)

    def validate(self) -> dict[str, Any]:
        result = self.evaluator(self.model.policy.reduction)
        result["timesteps"] = int(self.num_timesteps)
        self.history.append(result)
        for key in ("reward", "flops_ratio", "kl", "budget_error"):
            self.logger.record(f"validation/{key}", result[key])
        self.best.offer(self.model.policy.reduction, result, _progress(self.model))
        return result


# -- the run -----------------------------------------------------------------------------------


def train(
    env_preset: str | Path | None,
    recipe: Recipe | str | Path | None,
    out: str | Path,
    *,
    timesteps: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    resume: bool = False,
    cache_dir: str | None = None,
    quiet: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    override: Sequence[str] = (),
) -> dict[str, Any]:
    """Train a reduction policy with MaskablePPO; returns the summary (also in ``summary.json``).

    ``device`` and ``dtype`` place the frozen model (default: the preset's); the policy trains on the CPU.
    On ``resume``, ``None`` for the preset or recipe means the run's own; ``override`` names the safe
    fields allowed to differ from the run's (see :func:`rlprune.train.run.start_run`). A run whose last
    checkpoint holds all its steps is finished without training (``already_finished`` if it was).
    """
    overrides = {"timesteps": timesteps, "seed": seed, "n_envs": workers}
    run = start_run(
        env_preset,
        recipe,
        out,
        backend="sb3",
        overrides=overrides,
        resume=resume,
        cache_dir=cache_dir,
        device=device,
        dtype=dtype,
        allow=override,
    )
    if run.finished:
        return conclude_run(run)
    run.warm()
    recipe, run_dir, settings = run.recipe, run.folder, run.recipe.run
    token_level = recipe.policy == "token"
    vec_env = _vec_env(run, token_level)
    try:
        model = _ppo(run, vec_env, token_level)
        cloned = None
        if run.last is not None:
            load_sb3_checkpoint(model, run.last)
        elif token_level:
            cloned = teacher_warm_start(model.policy.reduction, run.trainer_env, recipe)
        elif recipe.warm_start.baseline:
            cloned = behaviour_clone(model.policy.reduction, run.trainer_env, recipe)
        start_steps, started = model.num_timesteps, time.time()
        with run.training(), training_progress(quiet) as progress:
            callback = RunCallback(run_dir, run.meta, recipe, settings.timesteps, run.evaluator, progress, run.history)
            model.learn(
                settings.timesteps - start_steps, callback=callback, reset_num_timesteps=False, tb_log_name="ppo"
            )
            history = callback.history
            final = history[-1] if history and history[-1]["timesteps"] == model.num_timesteps else callback.validate()
            save_sb3_checkpoint(model, run_dir / "last", run=run.meta, history=history)
    finally:
        vec_env.close()
    return finish_run(
        run,
        timesteps=model.num_timesteps,
        start_steps=start_steps,
        seconds=time.time() - started,
        final=final,
        best=callback.best.best,
        history=history,
        cloned=cloned,
    )


def _vec_env(run: Run, token_level: bool) -> VecEnv:
    """The training episodes: batched in this process, or one model per process."""
    settings, cache_dir = run.recipe.run, run.cache_dir
    if settings.envs == "batched" and not token_level:  # one model: all episodes in one batched forward
        in_use = run.evaluator.env
        vector = TokenReductionVectorEnv(
            run.env_config, settings.n_envs, model=in_use.reducer.model, tokenizer=in_use.tokenizer, cache_dir=cache_dir
        )
        return BatchedVecEnv(vector, seed=settings.seed)
    # token-level policies, or envs = "processes": one model per process
    factories = [
        make_env(run.env_config, "train", settings.seed + i, settings.torch_threads, cache_dir, token_level)
        for i in range(settings.n_envs)
    ]
    return SubprocVecEnv(factories) if settings.n_envs > 1 else DummyVecEnv(factories)


def _ppo(run: Run, vec_env: VecEnv, token_level: bool) -> MaskablePPO | PPO:
    """A PPO model with the recipe's settings and a :class:`ReductionPolicy` inside."""
    ppo = run.recipe.ppo
    policy_kwargs: dict[str, Any] = {"hidden": ppo.hidden, "decision_layers": run.env_config.episode.decision_layers}
    if token_level:
        policy_kwargs["token_hidden"] = ppo.token_hidden
    return (PPO if token_level else MaskablePPO)(
        SB3TokenPolicy if token_level else SB3ReductionPolicy,
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
