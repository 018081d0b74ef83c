"""PPO on one machine with Stable-Baselines3 (sb3-contrib's MaskablePPO).

The SB3 policy *is* a :class:`ReductionPolicy`: its trunk, action head and value head are the
SB3 policy's extractor, ``action_net`` and ``value_net``, so exporting is exact. Checkpoints are
safetensors + JSON (the policy in the checkpoint format, the optimizer state, the timestep
count), written atomically every ``checkpoint_every`` steps; ``resume`` continues from the last.

Run folder::

    run.json        what was trained: env preset, recipe, model, seed
    last/           the latest checkpoint (policy + optimizer.safetensors + state.json)
    best/           the policy with the best validation reward so far
    policy/         the final export
    tensorboard/    training curves
    summary.json    the result
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
from torch import nn

from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.errors import RLPruneError
from rlprune.policies import ReductionPolicy, load_policy, save_policy
from rlprune.train.recipe import Recipe


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


def make_env(preset: str | Path, split: str, seed: int, threads: int, cache_dir: str | None):
    """An environment factory for a vectorised-env worker (the model is loaded inside it)."""

    def build():
        torch.set_num_threads(threads)
        env = Monitor(TokenReductionEnv(preset, split=split, cache_dir=cache_dir))
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env

    return build


# -- checkpoints -------------------------------------------------------------------------------


def save_checkpoint(model: MaskablePPO, folder: Path, *, run: dict[str, Any]) -> None:
    """Policy (checkpoint format), optimizer state and timestep count, replacing ``folder`` atomically."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_policy(model.policy.reduction, staging, reward_preset=run.get("env"), training=_progress(model))
        tensors, groups = _flatten_optimizer(model.policy.optimizer.state_dict())
        save_file(tensors, str(staging / "optimizer.safetensors"))
        state = {"num_timesteps": model.num_timesteps, "n_updates": model._n_updates, "param_groups": groups}
        (staging / "state.json").write_text(json.dumps(state, indent=2))
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_checkpoint(model: MaskablePPO, folder: Path) -> None:
    """Restore what :func:`save_checkpoint` wrote into a freshly built ``model``."""
    policy = load_policy(folder)
    model.policy.reduction.load_state_dict(policy.state_dict())
    state = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "optimizer.safetensors"))
    model.policy.optimizer.load_state_dict(_unflatten_optimizer(tensors, state["param_groups"]))
    model.num_timesteps = int(state["num_timesteps"])
    model._n_updates = int(state["n_updates"])


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], list]:
    tensors = {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            tensors[f"{index}.{name}"] = torch.as_tensor(value).clone().contiguous()
    return tensors, state_dict["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}


def _progress(model: MaskablePPO) -> dict[str, Any]:
    return {"timesteps": int(model.num_timesteps), "updates": int(model._n_updates)}


# -- callbacks ---------------------------------------------------------------------------------


class RunCallback(BaseCallback):
    """Progress bar, periodic checkpoints and validation with the best policy kept."""

    def __init__(self, run_dir: Path, run: dict[str, Any], recipe: Recipe, total: int, evaluator, progress) -> None:
        super().__init__()
        self.run_dir, self.run, self.recipe, self.total = run_dir, run, recipe, total
        self.evaluator, self.progress = evaluator, progress
        self.episodes: deque[dict[str, float]] = deque(maxlen=100)
        self.next_checkpoint = self.next_eval = 0
        self.best = -np.inf
        self.history: list[dict[str, Any]] = []
        self.task = None

    def _on_training_start(self) -> None:
        self.next_checkpoint = _next_multiple(self.num_timesteps, self.recipe.run.checkpoint_every)
        self.next_eval = _next_multiple(self.num_timesteps, self.recipe.run.eval_every)
        best = self.run_dir / "best" / "config.json"
        if best.is_file():
            self.best = json.loads(best.read_text())["training"].get("validation_reward", -np.inf)
        self.task = self.progress.add_task("training", total=self.total, completed=self.num_timesteps, stats="")

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if done and "flops_ratio" in info:
                self.episodes.append(
                    {
                        "reward": info["episode"]["r"],
                        "flops_ratio": info["flops_ratio"],
                        "kl": info["kl"],
                        "budget": info["budget"],
                    }
                )
        if self.episodes:
            mean = {k: float(np.mean([e[k] for e in self.episodes])) for k in ("reward", "flops_ratio", "kl")}
            stats = f"reward {mean['reward']:+.3f}  FLOPs {mean['flops_ratio']:.3f}  KL {mean['kl']:.3f}"
            for key, value in mean.items():
                self.logger.record(f"episodes/{key}", value)
        else:
            stats = "collecting first episodes"
        self.progress.update(self.task, completed=min(self.num_timesteps, self.total), stats=stats)
        return True

    def _on_rollout_end(self) -> None:
        run = self.recipe.run
        if self.num_timesteps >= self.next_checkpoint:
            save_checkpoint(self.model, self.run_dir / "last", run=self.run)
            self.next_checkpoint = _next_multiple(self.num_timesteps, run.checkpoint_every)
        if self.num_timesteps >= self.next_eval:
            self.validate()
            self.next_eval = _next_multiple(self.num_timesteps, run.eval_every)

    def validate(self) -> dict[str, Any]:
        result = self.evaluator(self.model.policy.reduction)
        result["timesteps"] = int(self.num_timesteps)
        self.history.append(result)
        for key in ("reward", "flops_ratio", "kl", "budget_error"):
            self.logger.record(f"validation/{key}", result[key])
        if result["reward"] > self.best:
            self.best = result["reward"]
            training = {**_progress(self.model), "validation_reward": result["reward"], "validation": result}
            _replace_folder(
                self.run_dir / "best",
                lambda d: save_policy(
                    self.model.policy.reduction, d, reward_preset=self.run.get("env"), training=training
                ),
            )
        return result


def _next_multiple(steps: int, every: int) -> int:
    """The first multiple of ``every`` after ``steps``."""
    return (steps // every + 1) * every


def _replace_folder(folder: Path, write) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write(staging)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class Evaluator:
    """Deterministic validation episodes at fixed budgets, in this process."""

    def __init__(self, preset: str | Path, recipe: Recipe, cache_dir: str | None, model=None, tokenizer=None) -> None:
        self.env = TokenReductionEnv(preset, split="validation", cache_dir=cache_dir, model=model, tokenizer=tokenizer)
        self.tasks = min(recipe.run.eval_tasks, len(self.env.tasks))
        self.budgets = recipe.run.eval_budgets

    def __call__(self, policy: ReductionPolicy) -> dict[str, Any]:
        rows = []
        for budget in self.budgets:
            for index in range(self.tasks):
                obs, _ = self.env.reset(seed=index, options={"task_index": index, "budget": budget})
                total, done = 0.0, False
                while not done:
                    action = policy.predict(obs, self.env.action_masks())
                    obs, reward, done, _, info = self.env.step(action)
                    total += reward
                rows.append({"reward": total, "flops_ratio": info["flops_ratio"], "kl": info["kl"], "budget": budget})
        summary = {key: float(np.mean([r[key] for r in rows])) for key in ("reward", "flops_ratio", "kl")}
        summary["budget_error"] = float(np.mean([abs(r["flops_ratio"] - r["budget"]) for r in rows]))
        summary["per_budget"] = {
            str(b): float(np.mean([r["flops_ratio"] for r in rows if r["budget"] == b])) for b in self.budgets
        }
        return summary


# -- warm start --------------------------------------------------------------------------------


def behaviour_clone(policy: ReductionPolicy, env: TokenReductionEnv, recipe: Recipe) -> dict[str, float]:
    """Imitate a baseline: play it in ``env``, express its choices as actions, fit them by cross-entropy."""
    from rlprune.features import Features
    from rlprune.policies import make_baseline

    settings = recipe.warm_start
    baseline = make_baseline(settings.baseline)
    spec = policy.action_spec
    observations, masks, actions = [], [], []
    for episode in range(settings.episodes):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            features = Features(env.reducer, env._state, env.budget)
            choice = baseline.act(features, env.budget)
            index = _as_indices(choice, features, spec)
            observations.append(obs)
            masks.append(env.action_masks())
            actions.append(index)
            obs, _, done, _, _ = env.step(index)
    obs_t = torch.as_tensor(np.array(observations), dtype=torch.float32)
    mask_t = torch.as_tensor(np.array(masks), dtype=torch.bool)
    act_t = torch.as_tensor(np.array(actions), dtype=torch.long)
    acting = act_t[:, 0] != spec.ops.index("keep")  # share and scorer only matter when acting
    optimizer = torch.optim.Adam(policy.parameters(), lr=settings.learning_rate)
    for _ in range(settings.epochs):
        for batch in torch.randperm(len(act_t)).split(64):
            parts = policy.distributions(obs_t[batch], mask_t[batch])
            loss = -parts[0].log_prob(act_t[batch, 0]).mean()
            chosen = acting[batch]
            if chosen.any():
                loss = loss - sum(parts[d].log_prob(act_t[batch, d])[chosen].mean() for d in (1, 2))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = torch.stack([d.probs.argmax(-1) for d in policy.distributions(obs_t, mask_t)], dim=-1)
    return {"samples": len(act_t), "op_accuracy": float((predicted[:, 0] == act_t[:, 0]).float().mean())}


def _as_indices(action, features, spec) -> np.ndarray:
    """The spec's indices closest to a baseline's action: its op, the share of the needed savings
    it makes, and its scorer (attention for scorers outside the action space)."""
    if action.is_noop:
        return spec.encode("keep", spec.shares[0], spec.scorers[0])
    before, after = features.flops_projected, features.ratio_after({features.layer: action})
    needed = max(before - features.budget, 1e-9)
    share = min(max((before - after) / needed, 0.0), 1.0)
    scorer = action.scorer if action.scorer in spec.scorers else "attention"
    return spec.encode(action.op, share, scorer)


# -- the run -----------------------------------------------------------------------------------


def train(
    env_preset: str | Path,
    recipe: Recipe | str | Path,
    out: str | Path,
    *,
    timesteps: int | None = None,
    seed: int | None = None,
    resume: bool = False,
    cache_dir: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train a reduction policy with MaskablePPO; returns the summary (also in ``summary.json``)."""
    recipe = recipe if isinstance(recipe, Recipe) else Recipe.load(recipe)
    env_config = EnvConfig.load(env_preset)
    overrides = {k: v for k, v in {"timesteps": timesteps, "seed": seed}.items() if v is not None}
    recipe = dataclasses.replace(recipe, run=dataclasses.replace(recipe.run, **overrides))
    run_dir = Path(out)
    run = {
        "env": str(env_preset),
        "model": env_config.model,
        "recipe": dataclasses.asdict(recipe),
        "decision_layers": list(env_config.episode.decision_layers),
    }
    _prepare_run_dir(run_dir, run, resume)
    settings = recipe.run

    # Reference outputs are computed once, here, so the workers only read them.
    evaluator = Evaluator(env_preset, recipe, cache_dir)
    trainer_env = TokenReductionEnv(
        env_config,
        split="train",
        cache_dir=cache_dir,
        model=evaluator.env.reducer.model,
        tokenizer=evaluator.env.tokenizer,
    )
    trainer_env.references.warm(trainer_env.tasks, "training prompts")
    evaluator.env.references.warm(evaluator.env.tasks[: evaluator.tasks], "validation prompts")

    factories = [
        make_env(env_preset, "train", settings.seed + i, settings.torch_threads, cache_dir)
        for i in range(settings.n_envs)
    ]
    vec_env = SubprocVecEnv(factories) if settings.n_envs > 1 else DummyVecEnv(factories)
    ppo = recipe.ppo
    model = MaskablePPO(
        SB3ReductionPolicy,
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
        policy_kwargs={"hidden": ppo.hidden, "decision_layers": env_config.episode.decision_layers},
        tensorboard_log=str(run_dir / "tensorboard"),
        seed=settings.seed,
        device="cpu",
        verbose=0,
    )
    last = _last_checkpoint(run_dir)
    cloned = None
    if resume and last is not None:
        load_checkpoint(model, last)
    elif recipe.warm_start.baseline:
        cloned = behaviour_clone(model.policy.reduction, trainer_env, recipe)
    start_steps, started = model.num_timesteps, time.time()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, disable=quiet) as progress:
            callback = RunCallback(run_dir, run, recipe, settings.timesteps, evaluator, progress)
            remaining = settings.timesteps - model.num_timesteps
            if remaining > 0:
                model.learn(remaining, callback=callback, reset_num_timesteps=False, tb_log_name="ppo")
            save_checkpoint(model, run_dir / "last", run=run)
            history = callback.history
            final = history[-1] if history and history[-1]["timesteps"] == model.num_timesteps else callback.validate()
    finally:
        vec_env.close()
    elapsed = time.time() - started
    summary = {
        "timesteps": int(model.num_timesteps),
        "resumed_from": int(start_steps) if start_steps else None,
        "seconds": round(elapsed, 1),
        "steps_per_second": round((model.num_timesteps - start_steps) / max(elapsed, 1e-9), 2),
        "final_validation": final,
        "best_validation_reward": callback.best,
        "validation_history": callback.history,
        "env": str(env_preset),
        "model": env_config.model,
        "seed": settings.seed,
        "warm_start": {"baseline": recipe.warm_start.baseline, **cloned} if cloned else None,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    export(run_dir, run_dir / "policy", model_for_fingerprint=evaluator.env.reducer.model)
    return summary


def _last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (a kill while replacing ``last`` leaves the previous one aside)."""
    for folder in (run_dir / "last", run_dir / ".last.old"):
        if (folder / "state.json").is_file() and (folder / "optimizer.safetensors").is_file():
            return folder
    return None


def _prepare_run_dir(run_dir: Path, run: dict[str, Any], resume: bool) -> None:
    meta = run_dir / "run.json"
    if meta.is_file():
        previous = json.loads(meta.read_text())
        if not resume:
            raise RLPruneError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        if previous["env"] != run["env"] or previous["model"] != run["model"]:
            raise RLPruneError(
                f"{run_dir} was trained with env {previous['env']} on {previous['model']}; resume it with the same"
            )
    elif resume:
        raise RLPruneError(f"nothing to resume in {run_dir}: it holds no run")
    run_dir.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(run, indent=2))


def export(run_dir: str | Path, out: str | Path, *, model_for_fingerprint=None) -> Path:
    """Write a run's best policy (or its last, without validation) as a policy checkpoint."""
    run_dir = Path(run_dir)
    source = run_dir / "best" if (run_dir / "best" / "config.json").is_file() else run_dir / "last"
    if not (source / "config.json").is_file():
        raise RLPruneError(f"{run_dir} holds no trained policy (no best/ or last/ checkpoint)")
    policy = load_policy(source)
    config = json.loads((source / "config.json").read_text())
    summary_path = run_dir / "summary.json"
    training = {**config.get("training", {})}
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        training["run"] = {k: summary[k] for k in ("timesteps", "seconds", "steps_per_second", "seed") if k in summary}
    run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    if model_for_fingerprint is None and run.get("model"):
        from rlprune.models import load_model

        model_for_fingerprint, _ = load_model(run["model"])
    return save_policy(policy, out, model=model_for_fingerprint, reward_preset=run.get("env"), training=training)
