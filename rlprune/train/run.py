"""What every training backend shares: the run folder, checkpoints, validation, progress, export.

Run folder::

    run.json        what was trained: env preset, recipe, model, backend
    last/           the latest checkpoint: policy + trainer.safetensors + state.json
    best/           the policy with the best validation reward so far
    policy/         the final export
    tensorboard/    training curves
    summary.json    the result

Checkpoints hold tensors in safetensors and everything else in JSON; nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file

from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.errors import RLPruneError
from rlprune.features import Features
from rlprune.io import atomic_write_text
from rlprune.policies import ReductionPolicy, load_policy, save_policy
from rlprune.train.recipe import Recipe

TRAINER_TENSORS = "trainer.safetensors"
STATE = "state.json"


# -- nested trainer state <-> safetensors + JSON ---------------------------------------------


def split_tree(tree: Any, tensors: dict[str, torch.Tensor] | None = None) -> tuple[Any, dict[str, torch.Tensor]]:
    """A JSON skeleton of ``tree`` (dicts keep their key types) and its arrays as named tensors."""
    tensors = {} if tensors is None else tensors
    if isinstance(tree, dict):
        return {"dict": [[key, split_tree(value, tensors)[0]] for key, value in tree.items()]}, tensors
    if isinstance(tree, (list, tuple)):
        return {"list": [split_tree(value, tensors)[0] for value in tree]}, tensors
    if isinstance(tree, (np.ndarray, torch.Tensor, np.generic)):
        name = str(len(tensors))
        tensors[name] = torch.as_tensor(np.asarray(tree) if not isinstance(tree, torch.Tensor) else tree)
        tensors[name] = tensors[name].detach().clone().contiguous()
        return {"tensor": name, "numpy": not isinstance(tree, torch.Tensor)}, tensors
    return {"value": tree}, tensors


def join_tree(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Rebuild what :func:`split_tree` took apart."""
    if "dict" in skeleton:
        return {key if not isinstance(key, list) else tuple(key): join_tree(v, tensors) for key, v in skeleton["dict"]}
    if "list" in skeleton:
        return [join_tree(value, tensors) for value in skeleton["list"]]
    if "tensor" in skeleton:
        tensor = tensors[skeleton["tensor"]]
        return tensor.numpy() if skeleton["numpy"] else tensor
    return skeleton["value"]


def save_checkpoint(
    folder: Path, policy: ReductionPolicy, trainer_state: Any, counters: dict[str, Any], run: dict[str, Any]
) -> None:
    """Policy, the trainer's own state (optimizer, ...) and step counters; replaces ``folder`` atomically."""

    def write(staging: Path) -> None:
        save_policy(policy, staging, reward_preset=run.get("env"), training=counters)
        skeleton, tensors = split_tree(trainer_state)
        save_file(tensors, str(staging / TRAINER_TENSORS))
        (staging / STATE).write_text(json.dumps({**counters, "trainer": skeleton}, indent=1))

    replace_folder(folder, write)


def load_checkpoint(folder: Path) -> tuple[ReductionPolicy, Any, dict[str, Any]]:
    """``(policy, trainer_state, counters)`` from a folder written by :func:`save_checkpoint`."""
    state = json.loads((folder / STATE).read_text())
    trainer = join_tree(state.pop("trainer"), load_file(str(folder / TRAINER_TENSORS)))
    return load_policy(folder), trainer, state


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (a kill while replacing ``last`` leaves the previous one aside)."""
    for folder in (run_dir / "last", run_dir / ".last.old"):
        if (folder / STATE).is_file() and (folder / TRAINER_TENSORS).is_file():
            return folder
    return None


def replace_folder(folder: Path, write: Callable[[Path], object]) -> None:
    """Fill a staging folder with ``write``, then swap it in for ``folder``; the old one is kept
    aside as ``.NAME.old`` until the swap is done."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write(staging)
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


def next_multiple(steps: int, every: int) -> int:
    """The first multiple of ``every`` after ``steps``."""
    return (steps // every + 1) * every


def prepare_run_dir(run_dir: Path, run: dict[str, Any], resume: bool) -> None:
    """Create the run folder, or check that the run being resumed is the same one."""
    meta = run_dir / "run.json"
    if meta.is_file():
        previous = json.loads(meta.read_text())
        if not resume:
            raise RLPruneError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        for key in ("env", "model", "backend"):
            if previous.get(key, "sb3" if key == "backend" else None) != run[key]:
                raise RLPruneError(
                    f"{run_dir} was trained with {key} {previous.get(key)}, not {run[key]}; resume it with the same"
                )
    elif resume:
        raise RLPruneError(f"nothing to resume in {run_dir}: it holds no run")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(meta, json.dumps(run, indent=2))


# -- the run: set-up and summary, the same for every backend ------------------------------------


@dataclass
class Run:
    """A training run being set up: the resolved recipe, its folder and the environments in this process."""

    env_preset: str
    recipe: Recipe
    env_config: EnvConfig
    folder: Path
    meta: dict[str, Any]  # what run.json holds
    evaluator: Evaluator
    trainer_env: TokenReductionEnv  # the training split in this process (warm start, references)


def start_run(
    env_preset: str | Path,
    recipe: Recipe | str | Path,
    out: str | Path,
    *,
    backend: str,
    overrides: dict[str, Any],
    resume: bool,
    cache_dir: str | None,
    device: str | None = None,
    dtype: str | None = None,
) -> Run:
    """Resolve the recipe, prepare the run folder and compute the reference outputs once, here,
    so that training workers only read them. ``device`` and ``dtype`` override the preset's."""
    recipe = recipe if isinstance(recipe, Recipe) else Recipe.load(recipe)
    env_config = EnvConfig.load(env_preset)
    placement = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
    env_config = dataclasses.replace(env_config, **placement)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    recipe = dataclasses.replace(recipe, backend=backend, run=dataclasses.replace(recipe.run, **overrides))
    folder = Path(out)
    meta = {
        "env": str(env_preset),
        "model": env_config.model,
        "recipe": dataclasses.asdict(recipe),
        "decision_layers": list(env_config.episode.decision_layers),
        "backend": backend,
    }
    prepare_run_dir(folder, meta, resume)
    evaluator = Evaluator(env_config, recipe, cache_dir)
    model, tokenizer = evaluator.env.reducer.model, evaluator.env.tokenizer
    trainer_env = TokenReductionEnv(env_config, split="train", cache_dir=cache_dir, model=model, tokenizer=tokenizer)
    trainer_env.references.warm(trainer_env.tasks, "training prompts")
    evaluator.env.references.warm(evaluator.env.tasks[: evaluator.tasks], "validation prompts")
    return Run(str(env_preset), recipe, env_config, folder, meta, evaluator, trainer_env)


def finish_run(
    run: Run,
    *,
    timesteps: int,
    start_steps: int,
    seconds: float,
    final: dict[str, Any],
    best: float,
    history: list[dict[str, Any]],
    cloned: dict[str, Any] | None,
    **extra: Any,
) -> dict[str, Any]:
    """Write ``summary.json``, export ``policy/`` and return the summary."""
    summary = {
        "timesteps": int(timesteps),
        "resumed_from": int(start_steps) if start_steps else None,
        "seconds": round(seconds, 1),
        "steps_per_second": round((timesteps - start_steps) / max(seconds, 1e-9), 2),
        "final_validation": final,
        "best_validation_reward": best,
        "validation_history": history,
        "env": run.env_preset,
        "model": run.env_config.model,
        "seed": run.recipe.run.seed,
        "backend": run.recipe.backend,
        **extra,
        "warm_start": {"baseline": run.recipe.warm_start.baseline, **cloned} if cloned else None,
    }
    atomic_write_text(run.folder / "summary.json", json.dumps(summary, indent=2))
    export(run.folder, run.folder / "policy", model_for_fingerprint=run.evaluator.env.reducer.model)
    return summary


# -- validation, progress, summary -------------------------------------------------------------


class Evaluator:
    """Deterministic validation episodes at fixed budgets, in this process."""

    def __init__(
        self, preset: str | Path | EnvConfig, recipe: Recipe, cache_dir: str | None, model=None, tokenizer=None
    ) -> None:
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
                    action = policy.act(Features(self.env.reducer, self.env._state, budget), budget)
                    obs, reward, done, _, info = self.env.step(action)
                    total += reward
                rows.append({"reward": total, "flops_ratio": info["flops_ratio"], "kl": info["kl"], "budget": budget})
        summary = {key: float(np.mean([r[key] for r in rows])) for key in ("reward", "flops_ratio", "kl")}
        summary["budget_error"] = float(np.mean([abs(r["flops_ratio"] - r["budget"]) for r in rows]))
        summary["per_budget"] = {
            str(b): float(np.mean([r["flops_ratio"] for r in rows if r["budget"] == b])) for b in self.budgets
        }
        return summary


class EpisodeWindow:
    """The last 100 finished training episodes: what the progress bar and TensorBoard show."""

    KEYS = ("reward", "flops_ratio", "kl")

    def __init__(self) -> None:
        self.episodes: deque[dict[str, float]] = deque(maxlen=100)

    def add(self, reward: float, info: dict[str, Any]) -> None:
        self.episodes.append({"reward": float(reward), "flops_ratio": info["flops_ratio"], "kl": info["kl"]})

    def means(self) -> dict[str, float]:
        return {k: float(np.mean([e[k] for e in self.episodes])) for k in self.KEYS} if self.episodes else {}

    @staticmethod
    def describe(means: dict[str, float]) -> str:
        if not means:
            return "collecting first episodes"
        return f"reward {means['reward']:+.3f}  FLOPs {means['flops_ratio']:.3f}  KL {means['kl']:.3f}"


def training_progress(quiet: bool) -> Progress:
    """The progress display both backends use: steps, episode statistics, elapsed and remaining time."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, disable=quiet)


class BestKeeper:
    """Keeps ``best/``: the policy with the highest validation reward seen in this run folder."""

    def __init__(self, run_dir: Path, run: dict[str, Any]) -> None:
        self.folder, self.run = run_dir / "best", run
        config = self.folder / "config.json"
        self.best = (
            json.loads(config.read_text())["training"].get("validation_reward", -np.inf)
            if config.is_file()
            else -np.inf
        )

    def offer(self, policy: ReductionPolicy, result: dict[str, Any], counters: dict[str, Any]) -> None:
        if result["reward"] > self.best:
            self.best = result["reward"]
            training = {**counters, "validation_reward": result["reward"], "validation": result}
            replace_folder(
                self.folder, lambda d: save_policy(policy, d, reward_preset=self.run.get("env"), training=training)
            )


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
        keys = ("timesteps", "seconds", "steps_per_second", "seed", "backend")
        training["run"] = {k: summary[k] for k in keys if k in summary}
    run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    if model_for_fingerprint is None and run.get("model"):
        from rlprune.models import load_model

        model_for_fingerprint, _ = load_model(run["model"])
    return save_policy(policy, out, model=model_for_fingerprint, reward_preset=run.get("env"), training=training)
