"""What every training backend shares: the run folder, checkpoints, validation, progress, export.

Run folder::

    run.json        what was trained: env preset (name and settings), recipe, model, backend;
                    written when training begins, so a start that fails leaves no run
    last/           the latest checkpoint: policy + trainer.safetensors + state.json (step
                    counters and the validation history so far)
    best/           the policy with the best validation reward so far
    policy/         the final export
    tensorboard/    training curves
    summary.json    the result

Checkpoints hold tensors in safetensors and everything else in JSON; nothing is pickled.

``--resume`` continues the run in the folder with its own recipe and preset: other settings are
refused before anything is written, except the few safe ones (:data:`SAFE_ON_RESUME`) that are
asked for. A run whose last checkpoint holds all its steps is finished (validated, summarised,
exported) without training, or reported as finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file

from rlprune.config import ConfigError, from_dict
from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.errors import RLPruneError
from rlprune.io import atomic_write_text, read_json
from rlprune.models import model_fingerprint
from rlprune.policies import ReductionPolicy, load_policy, save_policy
from rlprune.progress import Progress
from rlprune.train.recipe import Recipe

TRAINER_TENSORS = "trainer.safetensors"
STATE = "state.json"
HISTORY = "validation_history"
FINGERPRINT = "model_fingerprint"
RUN_META = "run.json"
SUMMARY = "summary.json"
ARTEFACTS = ("last", ".last.old", "best", "policy", SUMMARY)  # what a run leaves in its folder, besides run.json

RECIPE_SAFE = (
    "run.timesteps",
    "run.n_envs",
    "run.envs",
    "run.torch_threads",
    "run.checkpoint_every",
    "run.eval_every",
    "ray.address",
    "ray.sample_timeout_s",
)
"""Recipe fields a resumed run may change: how long and where it runs, not what it learns or how it is
judged (PPO settings, the seed, warm start and validation tasks/budgets stay those of the run)."""
SAFE_ON_RESUME = tuple(f"recipe.{name}" for name in RECIPE_SAFE) + ("env.device", "env.dtype")
OVERRIDE_ALIASES = {"workers": "recipe.run.n_envs"}


class RunFolderError(RLPruneError):
    """The run folder cannot be started, resumed or finished as asked."""


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
    folder: Path,
    policy: ReductionPolicy,
    trainer_state: Any,
    counters: dict[str, Any],
    run: dict[str, Any],
    history: list[dict[str, Any]] | None = None,
) -> None:
    """Policy, the trainer's own state (optimizer, ...), step counters and the validation history so
    far (so a resumed run's summary holds all of it); replaces ``folder`` atomically."""

    def write(staging: Path) -> None:
        save_policy(policy, staging, reward_preset=run.get("env"), training=counters, fingerprint=run.get(FINGERPRINT))
        skeleton, tensors = split_tree(trainer_state)
        save_file(tensors, str(staging / TRAINER_TENSORS))
        state = {**counters, HISTORY: list(history or []), "trainer": skeleton}
        (staging / STATE).write_text(json.dumps(state, indent=1))

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


# -- the run folder: what is there, and whether the run asked for now is the run in it ----------


def read_run_meta(run_dir: str | Path) -> dict[str, Any]:
    """What ``run.json`` says about the run in ``run_dir``; a missing or damaged one is a clear error."""
    run_dir = Path(run_dir)
    meta = run_dir / RUN_META
    if not meta.is_file():
        where = "does not exist" if not run_dir.exists() else "holds no run (no run.json)"
        raise RunFolderError(f"nothing to resume in {run_dir}: it {where}; start the run without --resume")
    try:
        data = read_json(meta, "run file")
    except RLPruneError as error:
        raise RunFolderError(
            f"{meta} is damaged ({error}); restore it from a copy, or start a new run in another --out"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("recipe"), dict) or "env" not in data:
        raise RunFolderError(
            f"{meta} does not describe a run (no recipe or env); restore it, or start a new run in another --out"
        )
    return data


def check_fresh_folder(run_dir: Path) -> None:
    """A new run needs a folder without another run's files in it."""
    if (run_dir / RUN_META).is_file():
        raise RunFolderError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is a file, not a run folder; choose another --out")
    leftovers = [name for name in ARTEFACTS if (run_dir / name).exists()]
    if leftovers:
        raise RunFolderError(
            f"{run_dir} holds a run's files ({', '.join(leftovers)}) but no run.json; "
            "remove them or choose another --out"
        )


def resolve_overrides(names: Sequence[str]) -> set[str]:
    """The full field names (``recipe.run.timesteps``) of ``--override`` names (``timesteps``,
    ``run.timesteps``, ``recipe.run.timesteps``); a field not safe to change is an error listing those that are."""
    resolved = set()
    for name in names:
        wanted = OVERRIDE_ALIASES.get(name.strip(), name.strip())
        matches = [f for f in SAFE_ON_RESUME if wanted in (f, f.removeprefix("recipe."), f.rsplit(".", 1)[-1])]
        if not matches:
            safe = ", ".join(f.removeprefix("recipe.") for f in SAFE_ON_RESUME)
            raise RunFolderError(f"--override {name}: this field cannot change on resume; the safe ones are {safe}")
        resolved.add(matches[0])
    return resolved


def comparable(meta: dict[str, Any], *, with_preset: bool) -> dict[str, Any]:
    """The settings a resumed run must share with the run in its folder, by dotted field name."""
    fields: dict[str, Any] = {"backend": meta.get("backend", "sb3"), "model": meta.get("model")}
    fields |= {k: v for k, v in flatten(meta["recipe"], "recipe").items() if k != "recipe.backend"}
    if with_preset:
        fields |= {k: v for k, v in flatten(meta["env_config"], "env").items() if k != "env.model"}
    else:  # a run.json written before presets were stored: only the preset's name is known
        fields["env"] = meta.get("env")
    return fields


def flatten(tree: Any, prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"prefix.a.b": 1}`` (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, value in tree.items() for k, v in flatten(value, f"{prefix}.{key}").items()}


def check_same_run(run_dir: Path, stored: dict[str, Any], now: dict[str, Any], allowed: set[str]) -> None:
    """Refuse to resume with settings that differ from the run's, unless the field is safe and allowed."""
    with_preset = isinstance(stored.get("env_config"), dict)
    before, after = comparable(stored, with_preset=with_preset), comparable(now, with_preset=with_preset)
    differ = [key for key in before if key in after and before[key] != after[key]]

    def describe(keys: list[str]) -> str:
        return "; ".join(f"{key}: {json.dumps(before[key])} in the run, {json.dumps(after[key])} now" for key in keys)

    unsafe = [key for key in differ if key not in SAFE_ON_RESUME]
    if unsafe:
        raise RunFolderError(
            f"cannot resume {run_dir} with other settings ({describe(unsafe)}); these cannot change on resume: "
            "leave out the --recipe/--env/options that change them (a resume uses the run's own), "
            "or start a new run in another --out"
        )
    unapproved = [key for key in differ if key not in allowed]
    if unapproved:
        flags = " ".join(f"--override {key.removeprefix('recipe.')}" for key in unapproved)
        raise RunFolderError(f"{run_dir}: {describe(unapproved)}; to change this on resume pass {flags}")


def read_state(folder: Path) -> dict[str, Any]:
    """A checkpoint's counters and validation history (its ``state.json``), without its tensors."""
    try:
        state = json.loads((folder / STATE).read_text())
        int(state["timesteps"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise RunFolderError(
            f"the checkpoint {folder} is damaged ({error!r}); remove that folder and resume again "
            "(the run goes on from its previous checkpoint, if any)"
        ) from None
    state.pop("trainer", None)
    return state


# -- the run: set-up and summary, the same for every backend ------------------------------------


@dataclass
class Run:
    """A training run being set up: the resolved recipe, its folder and the checkpoint it resumes from.

    Nothing is written to the folder until :meth:`training` begins, so a start that fails leaves no run.
    """

    env_preset: str
    recipe: Recipe
    env_config: EnvConfig
    folder: Path
    meta: dict[str, Any]  # what run.json holds
    cache_dir: str | None
    resumed: bool = False  # the folder held this run already (its run.json is never taken back)
    last: Path | None = None  # the checkpoint a resumed run continues from
    reached: int = 0  # its timesteps
    history: list[dict[str, Any]] = field(default_factory=list)  # its validation history

    @property
    def finished(self) -> bool:
        """The checkpoint resumed from already holds every step: finish the run without training."""
        return self.last is not None and self.reached >= self.recipe.run.timesteps

    @functools.cached_property
    def evaluator(self) -> Evaluator:
        """Validation episodes (loads the model, once)."""
        return Evaluator(self.env_config, self.recipe, self.cache_dir)

    @functools.cached_property
    def trainer_env(self) -> TokenReductionEnv:
        """The training split in this process (warm start, references), sharing the evaluator's model."""
        env = self.evaluator.env
        model, tokenizer = env.reducer.model, env.tokenizer
        return TokenReductionEnv(
            self.env_config, split="train", cache_dir=self.cache_dir, model=model, tokenizer=tokenizer
        )

    def warm(self) -> None:
        """Compute the reference outputs once, here, so that training workers only read them."""
        self.trainer_env.references.warm(self.trainer_env.tasks, "training prompts")
        self.evaluator.env.references.warm(self.evaluator.env.tasks[: self.evaluator.tasks], "validation prompts")

    def write_meta(self) -> None:
        """Write ``run.json`` (creating the folder)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / RUN_META, json.dumps(self.meta, indent=2))

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """Write ``run.json`` as training begins; a new run that fails before its first checkpoint
        is taken back out of the folder, so that it can simply be started again."""
        created = not self.folder.exists()
        # every checkpoint names the model it was trained on, so RUN/best and RUN/last load onto it
        self.meta[FINGERPRINT] = model_fingerprint(self.evaluator.env.reducer.model)
        self.write_meta()
        try:
            yield
        except BaseException:
            if not self.resumed and last_checkpoint(self.folder) is None:
                self.abandon(created)
            raise

    def abandon(self, created: bool) -> None:
        """Remove what a new run wrote before its first checkpoint."""
        (self.folder / RUN_META).unlink(missing_ok=True)
        for name in ("best", ".best.old", "tensorboard"):
            shutil.rmtree(self.folder / name, ignore_errors=True)
        if created and not any(self.folder.iterdir()):
            self.folder.rmdir()


def start_run(
    env_preset: str | Path | None,
    recipe: Recipe | str | Path | None,
    out: str | Path,
    *,
    backend: str,
    overrides: dict[str, Any],
    resume: bool,
    cache_dir: str | None,
    device: str | None = None,
    dtype: str | None = None,
    allow: Sequence[str] = (),
) -> Run:
    """Resolve the recipe and preset and check them against the run folder; writes nothing.

    On ``resume`` a ``None`` recipe or preset means the run's own (from ``run.json``), and every
    setting must match the run's, except the safe fields (:data:`SAFE_ON_RESUME`) named in ``allow``
    or set by ``overrides`` / ``device`` / ``dtype``. ``device`` and ``dtype`` override the preset's.
    """
    folder = Path(out)
    allowed = resolve_overrides(allow)
    if allowed and not resume:
        raise RunFolderError("--override changes a run being resumed; pass it with --resume")
    stored = read_run_meta(folder) if resume else None
    if stored is None:
        check_fresh_folder(folder)
        if env_preset is None or recipe is None:
            raise RunFolderError("a new run needs an env preset and a recipe (--env, --recipe)")
    recipe = _resolve_recipe(recipe, stored)
    env_config = _resolve_preset(env_preset, stored)
    placement = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        env_config = dataclasses.replace(env_config, **placement)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the preset with --device/--dtype: {error}") from None
    try:
        recipe = dataclasses.replace(recipe, backend=backend, run=dataclasses.replace(recipe.run, **overrides))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the recipe with --timesteps/--seed/--workers: {error}") from None
    name = str(env_preset) if env_preset is not None else str(stored["env"])  # type: ignore[index]
    meta = {
        "env": name,
        "model": env_config.model,
        "recipe": dataclasses.asdict(recipe),
        "env_config": dataclasses.asdict(env_config),
        "decision_layers": list(env_config.episode.decision_layers),
        "backend": backend,
    }
    meta = json.loads(json.dumps(meta))  # tuples as lists, as run.json holds them
    run = Run(name, recipe, env_config, folder, meta, cache_dir)
    if stored is not None:
        flags = {f"recipe.run.{key}" for key in overrides} | {f"env.{key}" for key in placement}
        check_same_run(folder, stored, meta, allowed | flags)
        run.resumed, run.last = True, last_checkpoint(folder)
        if run.last is not None:
            state = read_state(run.last)
            run.reached, run.history = int(state["timesteps"]), list(state.get(HISTORY, []))
    run.recipe = whole_rollouts(run.recipe, run.reached)
    return run


def whole_rollouts(recipe: Recipe, reached: int) -> Recipe:
    """The recipe to train with: its timesteps rounded up to whole PPO rollouts after ``reached``, and
    said so, so that the steps trained, the progress bar and the summary all show the same total
    (``run.json`` keeps the timesteps asked for)."""
    rounded = recipe.in_whole_rollouts(reached)
    if rounded.run.timesteps != recipe.run.timesteps:
        print(
            f"note: training to {rounded.run.timesteps} timesteps, not {recipe.run.timesteps}: PPO trains whole "
            f"rollouts of ppo.n_steps {recipe.ppo.n_steps} x run.n_envs {recipe.run.n_envs} = {recipe.rollout} steps",
            file=sys.stderr,
        )
    return rounded


def _resolve_recipe(recipe: Recipe | str | Path | None, stored: dict[str, Any] | None) -> Recipe:
    """The recipe given (an object, a name or a path), or the one in ``run.json``."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe is not None:
        return Recipe.load(recipe)
    assert stored is not None
    return from_dict(Recipe, stored["recipe"], "the recipe in run.json")


def _resolve_preset(env_preset: str | Path | None, stored: dict[str, Any] | None) -> EnvConfig:
    """The preset given (a name or a path), or the one in ``run.json`` (by name for older runs)."""
    if env_preset is not None:
        return EnvConfig.load(env_preset)
    assert stored is not None
    if isinstance(stored.get("env_config"), dict):
        return from_dict(EnvConfig, stored["env_config"], "the env preset in run.json")
    return EnvConfig.load(stored["env"])


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
    atomic_write_text(run.folder / SUMMARY, json.dumps(summary, indent=2))
    export_policy(run.folder)
    return summary


def conclude_run(run: Run) -> dict[str, Any]:
    """Finish a resumed run whose last checkpoint holds all its steps, without training.

    A finished run (its summary is for these steps) is reported as it is (``already_finished``),
    re-exported if ``policy/`` is missing; a run killed after its last checkpoint gets its final
    validation (unless the checkpoint has it), summary and export.
    """
    assert run.last is not None
    summary = _read_summary(run.folder)
    if summary is not None and summary.get("timesteps") == run.reached:
        if not (run.folder / "policy" / "config.json").is_file():
            export_policy(run.folder)
        return {**summary, "already_finished": True}
    started = time.time()
    policy, history = load_policy(run.last), list(run.history)
    best = BestKeeper(run.folder, run.meta)
    if history and history[-1].get("timesteps") == run.reached:
        final = history[-1]
    else:
        final = {**run.evaluator(policy), "timesteps": run.reached}
        history.append(final)
        counters = {key: value for key, value in read_state(run.last).items() if key != HISTORY}
        best.offer(policy, final, counters)
    run.write_meta()  # the recipe as resumed (safe overrides included)
    return finish_run(
        run,
        timesteps=run.reached,
        start_steps=run.reached,
        seconds=time.time() - started,
        final=final,
        best=best.best,
        history=history,
        cloned=None,
    )


def _read_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json``, or None when it is missing or damaged (it is then written again)."""
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def export_policy(run_dir: Path) -> None:
    """Export the run's policy to ``policy/``, replacing it whole (a kill never leaves half an export)."""
    replace_folder(run_dir / "policy", lambda staging: export(run_dir, staging))


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
                    action = policy.act(self.env.features(), budget)
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
                self.folder,
                lambda d: save_policy(
                    policy,
                    d,
                    reward_preset=self.run.get("env"),
                    training=training,
                    fingerprint=self.run.get(FINGERPRINT),
                ),
            )


def export(run_dir: str | Path, out: str | Path) -> Path:
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
    fingerprint = config.get("model") or run.get(FINGERPRINT)
    model = None
    if fingerprint is None and run.get("model"):  # a run from before checkpoints named their model
        from rlprune.models import load_model

        model, _ = load_model(run["model"])
    return save_policy(
        policy, out, model=model, fingerprint=fingerprint, reward_preset=run.get("env"), training=training
    )
