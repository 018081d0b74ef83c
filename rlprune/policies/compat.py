"""Where a policy meets a model: :func:`check_compatible`, the one entry every caller uses
(``load_policy`` with a model, ``apply``, ``generate``, ``rlprune eval``, training).

The check itself and the model's :class:`ModelShape` live in the engine
(:mod:`rlprune.engine.compat`), which runs it too before any layer: each policy kind answers for its
own fields in a ``check_model(shape)`` method. The result is one line naming the field, its value and
the model's.
"""

from __future__ import annotations

from typing import Any

from rlprune.engine.compat import IncompatiblePolicyError, ModelShape, check_fits


def check_compatible(policy: Any, model: Any, *, label: str | None = None, hint: str | None = None) -> Any:
    """``policy`` unchanged if everything it names fits ``model`` (a model, a Reducer or a
    :class:`ModelShape`); else an :class:`IncompatiblePolicyError` of one line.

    The policy's own ``check_model(shape)`` checks its kind's fields; every policy's
    ``decision_layers`` must then lie inside the model. ``label`` names the policy in the message
    (default: a baseline's spec or the policy's name); ``hint`` says what to do (default by kind).
    """
    return check_fits(policy, model, label=label, hint=hint)


__all__ = ["IncompatiblePolicyError", "ModelShape", "check_compatible"]
