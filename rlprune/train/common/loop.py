"""A training run, the same for every backend: start or resume, warm start, train with validation
and checkpoints on schedule, keep the best policy, then summarise and export.

The call chain of one PPO update: ``Backend.learn`` collects a rollout and updates the policy, then
calls :meth:`Session.after_update`, which logs the episode means, validates every ``eval_every``
steps (keeping ``best/``), and checkpoints ``last/`` every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rlprune.policies import ReductionPolicy
from rlprune.train.common.backend import Backend
from rlprune.train.common.checkpoints import BestKeeper, load_checkpoint, save_checkpoint
from rlprune.train.common.finish import conclude_run, finish_run
from rlprune.train.common.monitor import EPISODE_KEYS, VALIDATION_KEYS, Monitor
from rlprune.train.common.setup import Run
from rlprune.train.kinds.network import network_kind


def next_multiple(steps: int, every: int) -> int:
    """The first multiple of ``every`` after ``steps``."""
    return (steps // every + 1) * every


class Session:
    """One process's share of a run: it validates, keeps the best policy and checkpoints on schedule.

    ``history`` is the validation history so far (a resumed run's), continued here.
    """

    def __init__(self, run: Run, backend: Backend, monitor: Monitor) -> None:
        self.run, self.backend, self.monitor = run, backend, monitor
        self.total = run.recipe.run.timesteps
        self.history: list[dict[str, Any]] = list(run.history)
        self.best = BestKeeper(run.folder, run.meta)
        steps = backend.counters()["timesteps"]
        self.next_eval = next_multiple(steps, run.recipe.run.eval_every)
        self.next_checkpoint = next_multiple(steps, run.recipe.run.checkpoint_every)
        self.means: dict[str, float] = {}

    def report(self, timesteps: int, means: dict[str, float]) -> None:
        """Steps taken and the recent episodes' means (reward, FLOPs ratio, KL): shown on the bar."""
        self.means = means
        self.monitor.show(timesteps, means)

    def after_update(self) -> None:
        """After a PPO update: log the episode means, then validate and checkpoint when due
        (validation first, so the checkpoint's history holds it)."""
        steps = self.backend.counters()["timesteps"]
        self.monitor.scalars("episodes", self.means, EPISODE_KEYS, steps)
        settings = self.run.recipe.run
        if steps >= self.next_eval:
            self.validate()
            self.next_eval = next_multiple(steps, settings.eval_every)
        if steps >= self.next_checkpoint:
            self.checkpoint()
            self.next_checkpoint = next_multiple(steps, settings.checkpoint_every)

    def validate(self) -> dict[str, Any]:
        """Validation episodes with the current policy; the result joins the history and may become ``best/``."""
        policy, counters = self.backend.policy(), self.backend.counters()
        result = {**self.run.evaluator(policy), "timesteps": counters["timesteps"]}
        self.history.append(result)
        self.monitor.scalars("validation", result, VALIDATION_KEYS, counters["timesteps"])
        self.best.offer(policy, result, counters)
        return result

    def checkpoint(self) -> None:
        """Replace ``last/`` with the learner as it is now."""
        backend = self.backend
        policy, state, counters = backend.policy(), backend.trainer_state(), backend.counters()
        save_checkpoint(self.run.folder / "last", policy, state, counters, self.run.meta, self.history)

    def conclude(self) -> dict[str, Any]:
        """The final validation (unless the last update was just validated) and the last checkpoint."""
        steps = self.backend.counters()["timesteps"]
        final = self.history[-1] if self.history and self.history[-1]["timesteps"] == steps else self.validate()
        self.checkpoint()
        return final


def warm_start(policy: ReductionPolicy, run: Run) -> dict[str, Any] | None:
    """Fit a fresh policy before PPO as its kind does (the teacher for token-level policies, behaviour
    cloning of the recipe's baseline for layer policies); returns what the fit measured."""
    return network_kind(run.recipe).warm_start(policy, run)


def train_run(run: Run, make_backend: Callable[[Run], Backend], *, quiet: bool = False) -> dict[str, Any]:
    """Train ``run`` with the backend ``make_backend`` builds; returns the summary (also in ``summary.json``).

    A run whose last checkpoint holds all its steps is finished without training.
    """
    if run.finished:
        return conclude_run(run)
    run.warm()
    backend = make_backend(run)
    extra: dict[str, Any] = {}
    try:
        cloned = None
        if run.last is not None:
            backend.restore(*load_checkpoint(run.last))
        else:
            policy = backend.policy()
            cloned = warm_start(policy, run)
            if cloned is not None:
                backend.set_policy(policy)
        start_steps, started = backend.counters()["timesteps"], time.time()
        logs, total = run.folder / "tensorboard" / backend.name, run.recipe.run.timesteps
        with run.training(), Monitor(logs, f"training ({backend.name})", total, start_steps, quiet) as monitor:
            session = Session(run, backend, monitor)
            backend.learn(session)
            final = session.conclude()
        timesteps = backend.counters()["timesteps"]
    finally:
        extra = backend.close()
    return finish_run(
        run,
        timesteps=timesteps,
        start_steps=start_steps,
        seconds=time.time() - started,
        final=final,
        best=session.best.best,
        history=session.history,
        cloned=cloned,
        **extra,
    )
