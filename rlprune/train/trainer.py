"""One way to train every kind: :func:`train` with :class:`TrainOptions`.

The recipe's ``policy`` names the kind; the registry (:data:`rlprune.policies.kinds.TRAINERS`) names
its trainer and the backends it refuses, each with its reason. ``rlprune train --recipe X`` and the
``train-head`` / ``train-budget`` shortcuts all come here.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlprune.errors import InvalidActionError
from rlprune.policies.kinds import TRAINERS
from rlprune.train.common.folder import read_run_meta
from rlprune.train.common.setup import resolve_recipe
from rlprune.train.recipe import BACKENDS, Recipe

DEFAULT_RECIPE = "ppo-local"


@dataclass(frozen=True)
class TrainOptions:
    """What one training run is given besides its recipe's contents. ``None`` means the recipe's (or, on
    ``resume``, the run's) own; options a kind does not use are refused by its trainer, never ignored."""

    recipe: Recipe | str | Path | None = None
    """A recipe object, name or path (``train/*.toml``); default ``ppo-local``, on ``resume`` the run's."""
    out: Path = Path("runs/latest")
    """The run folder: checkpoints, logs, ``summary.json``, the exported ``policy/``."""
    env: str | Path | None = None
    """Layer and token kinds: the environment preset (default ``grounded-qa``, on ``resume`` the run's)."""
    model: str | None = None
    """Must match the model of the preset (layer, token) or of the recipe (span, budget)."""
    backend: str | None = None
    """``sb3`` or ``ray`` (default: the recipe's, on ``resume`` the run's)."""
    workers: int | None = None
    address: str | None = None
    """With ``backend="ray"``: the Ray cluster to join."""
    timesteps: int | None = None
    seed: int | None = None
    resume: bool = False
    override: Sequence[str] = ()
    """On ``resume``, the safe fields allowed to differ from the run's (:data:`SAFE_ON_RESUME`)."""
    device: str | None = None
    dtype: str | None = None
    cache_dir: str | None = None
    """Reference outputs (layer, token) or outcome tables (budget) are kept and reused here."""
    quiet: bool = False
    on_iteration: Callable[..., None] | None = None
    """With ``backend="ray"``: called as ``on_iteration(algo, result)`` after every iteration."""
    start: str | None = None
    """Span kind: tune this span head (a shipped name or a folder) instead of supervising a new one."""
    policy_only: bool = False
    """Span and budget kinds: ``out`` is the policy folder itself (no run folder, no ``summary.json``)."""

    def given(self, names: Sequence[str]) -> list[str]:
        """The command-line flags of the options in ``names`` that were set (for refusals)."""
        return ["--" + name.replace("_", "-") for name in names if getattr(self, name) not in (None, False, ())]


def train(options: TrainOptions) -> dict[str, Any]:
    """Train the kind the recipe names with its trainer, on the backend chosen; returns the summary."""
    recipe, backend = _resolved(options)
    trainer = TRAINERS[recipe.policy]
    if backend not in BACKENDS:
        raise InvalidActionError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend in trainer.refused:
        raise InvalidActionError(f"{recipe.policy} policies do not train on {backend}: {trainer.refused[backend]}")
    if options.address is not None and backend != "ray":
        raise InvalidActionError("--address needs --backend ray")
    if options.start is not None:
        _check_start(options.start, recipe)
    return trainer_for(recipe.policy)(options, dataclasses.replace(recipe, backend=backend))


def _check_start(start: str, recipe: Recipe) -> None:
    """Refuse a span head to start from that is not there, or a recipe that trains no span head."""
    from rlprune.policies.checkpoint import find_policy, shipped_policies

    if recipe.policy != "span":
        raise InvalidActionError(f"--start tunes a span head: use a span recipe (span-rl), not a {recipe.policy} one")
    if find_policy(start) is None:
        known = ", ".join(shipped_policies()) or "none"
        raise InvalidActionError(f"--start {start}: no policy checkpoint there (a folder, or a shipped name: {known})")


def trainer_for(kind: str) -> Callable[[TrainOptions, Recipe], dict[str, Any]]:
    """The trainer the registry names for ``kind`` (imported now: trainers live above the registry)."""
    module, attr = TRAINERS[kind].target.split(":")
    return getattr(importlib.import_module(module), attr)


def _resolved(options: TrainOptions) -> tuple[Recipe, str]:
    """The recipe (given, the run's on ``resume``, else the default) and the backend to train on."""
    if options.recipe is not None or not options.resume:
        recipe = resolve_recipe(options.recipe if options.recipe is not None else DEFAULT_RECIPE, None)
        return recipe, options.backend or recipe.backend
    stored = read_run_meta(options.out)
    return resolve_recipe(None, stored), options.backend or stored.get("backend", "sb3")
