"""The ``Backend`` protocol: the one thing an RL library brings to a training run.

A backend owns its learner (PPO's networks, optimizer, rollout workers) and nothing else. The run
folder, checkpoints, warm start, validation schedule, best keeping, progress, TensorBoard tags,
summary and export are shared (:func:`rlprune.train.common.loop.train_run`), so every backend
trains every policy kind into the same checkpoint format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from rlprune.policies import ReductionPolicy

if TYPE_CHECKING:
    from rlprune.train.common.loop import Session


class Backend(Protocol):
    """PPO in one RL library: :class:`~rlprune.train.backends.sb3.SB3Backend`,
    :class:`~rlprune.train.backends.rllib.RLlibBackend`."""

    name: str
    """``sb3`` or ``ray``: names the progress bar and the TensorBoard folder."""

    def policy(self) -> ReductionPolicy:
        """The learner's current policy in its exported form (validated, kept as best, checkpointed)."""
        ...

    def set_policy(self, policy: ReductionPolicy) -> None:
        """Make the learner (and any rollout worker) act with ``policy``'s weights (after a warm start)."""
        ...

    def counters(self) -> dict[str, int]:
        """Step counters: ``timesteps`` (environment steps trained so far) and the backend's own."""
        ...

    def trainer_state(self) -> Any:
        """The learner's own state (optimizer, ...): nested dicts and lists of arrays and plain values."""
        ...

    def restore(self, policy: ReductionPolicy, state: Any, counters: dict[str, Any]) -> None:
        """Continue from a checkpoint: what :meth:`policy`, :meth:`trainer_state` and :meth:`counters` gave."""
        ...

    def learn(self, session: Session) -> None:
        """Train until ``session.total`` timesteps: call ``session.report`` as steps are taken and
        ``session.after_update`` after every PPO update, when :meth:`policy` matches :meth:`counters`."""
        ...

    def close(self) -> dict[str, Any]:
        """Release workers and files; returns the backend's own summary fields (may be empty)."""
        ...
