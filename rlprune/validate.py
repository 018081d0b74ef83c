"""Checks of the arguments the Python API takes, in one place and one wording.

Each check raises an :class:`~rlprune.errors.RLPruneError` subclass whose one-line message names the
argument, says what it must be and shows what was given (``budget must be a number in (0, 1] (the
target prefill FLOPs ratio), got True``). numpy numbers count as numbers; a bool never does, nor NaN
or an infinity.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from rlprune.errors import InvalidArgumentError, InvalidPromptError, RLPruneError

ErrorType = type[RLPruneError]


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_integer(value: object) -> bool:
    """An ``int`` or numpy integer; never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite ``int``, ``float`` or numpy number; never a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_int(value: object, name: str, *, minimum: int = 0, error: ErrorType = InvalidArgumentError) -> int:
    """``value`` as an ``int`` of at least ``minimum``."""
    if not is_integer(value) or value < minimum:
        raise error(f"{name} must be an integer >= {minimum}, got {shown(value)}")
    return int(value)


def check_number(
    value: object,
    name: str,
    *,
    above: float = 0.0,
    at_most: float = math.inf,
    hint: str = "",
    error: ErrorType = InvalidArgumentError,
) -> float:
    """``value`` as a finite ``float`` in ``(above, at_most]``; ``hint`` says what the number means."""
    if not is_number(value) or not above < value <= at_most:
        if math.isfinite(at_most):
            what = f"a number in ({above:g}, {at_most:g}]"
        else:
            what = "a positive number" if above == 0 else f"a number above {above:g}"
        raise error(f"{name} must be {what}{hint}, got {shown(value)}")
    return float(value)


def check_flag(value: object, name: str) -> bool:
    """``value`` as a ``bool``: ``True`` or ``False``, not a truthy string or number."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentError(f"{name} must be True or False, got {shown(value)}")
    return bool(value)


def check_budget(budget: object) -> float | None:
    """A target prefill FLOPs ratio in (0, 1] as a ``float``, or ``None`` (a method's own ratio).

    The one budget check: the CLI, the evaluation harness and the Python API all call it.
    """
    if budget is None:
        return None
    return check_number(budget, "budget", at_most=1.0, hint=" (the target prefill FLOPs ratio)")


def check_prompts(prompt: object, context: object) -> tuple[list[str], list[str | None]]:
    """``prompt`` (a str, or a non-empty list of str) and ``context`` (``None``, one str for every
    prompt, or a list with a str or ``None`` per prompt) as two lists of equal length."""
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, (list, tuple)) and prompt:
        prompts = [_text(item, f"prompt[{i}]") for i, item in enumerate(prompt)]
    else:
        raise InvalidPromptError(f"prompt must be a str or a non-empty list of str, got {shown(prompt)}")
    if context is None or isinstance(context, str):
        return prompts, [context] * len(prompts)
    if not isinstance(context, (list, tuple)):
        raise InvalidPromptError(
            f"context must be None, a str or a list with one str (or None) per prompt, got {shown(context)}"
        )
    if len(context) != len(prompts):
        raise InvalidPromptError(f"context: {len(context)} contexts for {len(prompts)} prompts; give one per prompt")
    return prompts, [None if item is None else _text(item, f"context[{i}]") for i, item in enumerate(context)]


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidPromptError(f"{name} must be a str, got {shown(value)}")
    return value
