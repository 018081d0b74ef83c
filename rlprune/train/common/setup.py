"""Setting a run up: the resolved recipe and preset, checked against the run folder, and the model.

Nothing is written to the folder until :meth:`Run.training` begins, so a start that fails leaves
no run. A run whose last checkpoint holds all its steps is finished without training
(:func:`rlprune.train.common.finish.conclude_run`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlprune.config import ConfigError, from_dict
from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.io import atomic_write_text
from rlprune.models import load_model, model_fingerprint
from rlprune.policies import ReductionPolicy
from rlprune.train.common.folder import (
    FINGERPRINT,
    HISTORY,
    RUN_META,
    RunFolderError,
    check_fresh_folder,
    last_checkpoint,
    read_run_meta,
    read_state,
)
from rlprune.train.common.resume import check_same_run, resolve_overrides
from rlprune.train.kinds.network import network_kind
from rlprune.train.recipe import Recipe

if TYPE_CHECKING:
    from rlprune.train.common.validation import Evaluator


@dataclass
class Run:
    """A training run being set up: the resolved recipe, its folder and the checkpoint it resumes from."""

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

    def new_policy(self) -> ReductionPolicy:
        """An untrained policy of the recipe's kind and shape (what every backend's learner holds)."""
        return network_kind(self.recipe).new_policy(self.recipe, self.env_config)

    @functools.cached_property
    def loaded(self) -> tuple[Any, Any]:
        """The frozen model and its tokenizer, loaded once for validation, warm start and batched rollouts."""
        config = self.env_config
        return load_model(config.model, device=config.device, dtype=config.dtype)

    @functools.cached_property
    def evaluator(self) -> Evaluator:
        """Validation episodes on the run's model."""
        from rlprune.train.common.validation import Evaluator

        model, tokenizer = self.loaded
        return Evaluator(self.env_config, self.recipe, self.cache_dir, model=model, tokenizer=tokenizer)

    @functools.cached_property
    def trainer_env(self) -> TokenReductionEnv:
        """The training split in this process (warm start, references), on the run's model."""
        model, tokenizer = self.loaded
        return TokenReductionEnv(
            self.env_config, split="train", cache_dir=self.cache_dir, model=model, tokenizer=tokenizer
        )

    def warm(self) -> None:
        """Compute the reference outputs once, here, so that training workers only read them."""
        self.trainer_env.references.warm(self.trainer_env.tasks, "training prompts")
        validation = self.evaluator.env
        validation.references.warm(validation.tasks[: self.evaluator.tasks], "validation prompts")

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
        self.meta[FINGERPRINT] = model_fingerprint(self.loaded[0])
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
    decision_layers: Sequence[int] | None = None,
) -> Run:
    """Resolve the recipe and preset and check them against the run folder; writes nothing.

    On ``resume`` a ``None`` recipe or preset means the run's own (from ``run.json``), and every
    setting must match the run's, except the safe fields (:data:`SAFE_ON_RESUME`) named in ``allow``
    or set by ``overrides`` / ``device`` / ``dtype``. ``device`` and ``dtype`` override the preset's,
    ``decision_layers`` its episodes' (a span head decides at its own layer, whatever the preset says).
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
    placement = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    loaded_recipe, env_config = resolve_recipe(recipe, stored), resolve_preset(env_preset, stored)
    env_config = _placed(env_config, placement)
    if decision_layers is not None:
        episode = dataclasses.replace(env_config.episode, decision_layers=tuple(decision_layers))
        env_config = dataclasses.replace(env_config, episode=episode)
    recipe = _overridden(loaded_recipe, backend, overrides)
    network_kind(recipe).check_preset(env_config)
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


def _placed(env_config: EnvConfig, placement: dict[str, str]) -> EnvConfig:
    """The preset with ``--device`` / ``--dtype`` applied."""
    try:
        return dataclasses.replace(env_config, **placement)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the preset with --device/--dtype: {error}") from None


def _overridden(recipe: Recipe, backend: str, overrides: dict[str, Any]) -> Recipe:
    """The recipe for ``backend`` with ``--timesteps`` / ``--seed`` / ``--workers`` applied."""
    try:
        return dataclasses.replace(recipe, backend=backend, run=dataclasses.replace(recipe.run, **overrides))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the recipe with --timesteps/--seed/--workers: {error}") from None


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


def resolve_recipe(recipe: Recipe | str | Path | None, stored: dict[str, Any] | None) -> Recipe:
    """The recipe given (an object, a name or a path), or the one in ``run.json``."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe is not None:
        return Recipe.load(recipe)
    assert stored is not None
    return from_dict(Recipe, stored["recipe"], "the recipe in run.json")


def resolve_preset(env_preset: str | Path | None, stored: dict[str, Any] | None) -> EnvConfig:
    """The preset given (a name or a path), or the one in ``run.json`` (by name for older runs)."""
    if env_preset is not None:
        return EnvConfig.load(env_preset)
    assert stored is not None
    if isinstance(stored.get("env_config"), dict):
        return from_dict(EnvConfig, stored["env_config"], "the env preset in run.json")
    return EnvConfig.load(stored["env"])
