"""The kinds that train through the shared loop: layer- and token-level policies (PPO over per-layer
decisions, on either backend) and a span head's PPO stage (:mod:`rlprune.train.kinds.span_ppo`).

What differs between the kinds is declared once here (:data:`NETWORK_KINDS`: the fresh
network, the warm start, what the preset must allow); each backend declares how it holds each kind
(:data:`rlprune.train.backends.sb3.SB3_KINDS`, :data:`rlprune.train.backends.rllib.RLLIB_KINDS`).
Everything else (run folder, checkpoints, validation, export) is :mod:`rlprune.train.common`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlprune.config import ConfigError
from rlprune.engine.features import SCORER_CHOICES
from rlprune.envs import EnvConfig
from rlprune.errors import InvalidActionError
from rlprune.policies import ReductionPolicy, TokenReductionPolicy
from rlprune.train.recipe import Recipe

if TYPE_CHECKING:
    from rlprune.train.common import Backend, Run
    from rlprune.train.trainer import TrainOptions


def _layer_policy(recipe: Recipe, env: EnvConfig) -> ReductionPolicy:
    layers, spec = env.episode.decision_layers, env.episode.action_spec
    return ReductionPolicy(hidden=recipe.ppo.hidden, decision_layers=layers, action_spec=spec)


def _token_policy(recipe: Recipe, env: EnvConfig) -> TokenReductionPolicy:
    ppo, layers = recipe.ppo, env.episode.decision_layers
    return TokenReductionPolicy(hidden=ppo.hidden, decision_layers=layers, token_hidden=ppo.token_hidden)


def _clone_baseline(policy: ReductionPolicy, run: Run) -> dict[str, Any] | None:
    """Behaviour cloning of the recipe's baseline, if it names one."""
    if not run.recipe.warm_start.baseline:
        return None
    from rlprune.train.kinds.warm_start import behaviour_clone

    return behaviour_clone(policy, run.trainer_env, run.recipe)


def _teach(policy: ReductionPolicy, run: Run) -> dict[str, Any]:
    """The teacher's token head and the baseline's layer head (always, for token-level policies)."""
    from rlprune.train.kinds.teacher import teacher_warm_start

    return teacher_warm_start(policy, run.trainer_env, run.recipe)


def _any_scorers(env: EnvConfig) -> None:
    return None


def _own_scorers(env: EnvConfig) -> None:
    if tuple(env.episode.scorers) != SCORER_CHOICES:
        raise ConfigError("a token-level policy scores tokens itself: [episode] scorers apply to layer policies only")


def _supervised_first(recipe: Recipe, env: EnvConfig) -> ReductionPolicy:
    raise ConfigError("a span head's PPO stage starts from a supervised head: train it with `rlprune train --recipe`")


def _no_warm_start(policy: ReductionPolicy, run: Run) -> None:
    return None


@dataclass(frozen=True)
class NetworkKind:
    """How one kind of policy trains through the shared loop."""

    new_policy: Callable[[Recipe, EnvConfig], ReductionPolicy]
    """An untrained policy of the recipe's shape (what every backend's learner holds)."""
    warm_start: Callable[[ReductionPolicy, Run], dict[str, Any] | None]
    """Fit a fresh policy before PPO; returns what the fit measured (``None``: no warm start)."""
    check_preset: Callable[[EnvConfig], None]
    """Refuse a preset this kind cannot train on."""


NETWORK_KINDS = {
    "layer": NetworkKind(_layer_policy, _clone_baseline, _any_scorers),
    "token": NetworkKind(_token_policy, _teach, _own_scorers),
    "span": NetworkKind(_supervised_first, _no_warm_start, _any_scorers),  # supervision is its warm start
}
"""The recipe kinds that train through the shared loop (a span head: its PPO stage)."""

BACKENDS = {"sb3": "rlprune.train.backends.sb3:SB3Backend", "ray": "rlprune.train.backends.rllib:RLlibBackend"}
"""Each backend's :class:`~rlprune.train.common.Backend`, imported when a run uses it (Ray is heavy)."""


def network_kind(recipe: Recipe) -> NetworkKind:
    """The recipe's kind, which must be one that trains through the shared loop."""
    if recipe.policy not in NETWORK_KINDS:
        raise ConfigError(
            f"a {recipe.policy!r} recipe is not a PPO run of the shared loop: train it with `rlprune train --recipe`"
        )
    return NETWORK_KINDS[recipe.policy]


def make_backend(options: TrainOptions, backend: str) -> Callable[[Run], Backend]:
    """How to build ``backend`` for a run, with the options only that backend takes."""
    module, attr = BACKENDS[backend].split(":")
    cls = getattr(importlib.import_module(module), attr)
    settings = {"address": options.address, "on_iteration": options.on_iteration} if backend == "ray" else {}
    return lambda run: cls(run, **settings)


def train_network(options: TrainOptions, recipe: Recipe) -> dict[str, Any]:
    """Train a layer- or token-level policy by PPO on ``recipe.backend``; returns the summary (also in
    ``summary.json``). On ``options.resume`` what is not given is the run's own; a run whose last
    checkpoint holds all its steps is finished without training (``already_finished``)."""
    from rlprune.train.common import read_run_meta, start_run, train_run

    env, given = options.env, options.recipe
    stored = read_run_meta(options.out) if options.resume else None
    if stored is None:
        env, given = env or "grounded-qa", given if given is not None else recipe
    preset_model = EnvConfig.load(env).model if env is not None else stored.get("model")
    if options.model is not None and options.model != preset_model:
        raise InvalidActionError(
            f"--model {options.model} differs from the preset's model {preset_model}; edit the preset"
        )
    run = start_run(
        env,
        given,
        options.out,
        backend=recipe.backend,
        overrides={"timesteps": options.timesteps, "seed": options.seed, "n_envs": options.workers},
        resume=options.resume,
        cache_dir=options.cache_dir,
        device=options.device,
        dtype=options.dtype,
        allow=options.override,
    )
    return train_run(run, make_backend(options, recipe.backend), quiet=options.quiet)
