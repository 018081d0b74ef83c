"""The evaluation command's list options, parsed alike: an empty list is refused, every message names its option."""

from __future__ import annotations

import re

from rlprune.errors import RLPruneError
from rlprune.eval.harness import ALL_BASELINES
from rlprune.validate import check_number

_CONTINUATION = re.compile(r"\s*([A-Za-z_]\w*\s*=|\d+\s*:)")
"""A comma-separated part starting with ``key=`` or with a static schedule's ``LAYER:``: it continues the spec
before it."""


def _parts(text: str, option: str) -> list[str]:
    """The comma-separated parts of ``text``, stripped; an empty part (``0.5,,0.7``, a leading or trailing
    comma) is refused rather than silently dropped."""
    parts = [part.strip() for part in text.split(",")]
    if any(parts) and not all(parts):
        raise RLPruneError(f"{option} {text!r} has an empty item (two commas, or one at an end); remove it")
    return [part for part in parts if part]


def parse_baselines(text: str) -> tuple[str, ...]:
    """``"all"``, ``"none"`` (only the policies) or a comma-separated list of baseline specs. A part
    starting with ``key=`` (or ``LAYER:`` in a static schedule) continues the spec before it:
    ``snapkv,fastv:layer=2,ratio=0.5`` is two specs, ``static:2:prune:0.5,12:merge:0.3`` one."""
    specs: list[str] = []
    for part in _parts(text, "--baselines"):
        if specs and ":" in specs[-1] and _CONTINUATION.match(part):
            specs[-1] += f",{part}"
        else:
            specs.append(part)
    if not specs:
        raise RLPruneError(f"--baselines {text!r} names no baseline; give all, none or specs such as snapkv,fastv")
    if specs == ["all"]:
        return ALL_BASELINES
    return () if specs == ["none"] else tuple(specs)


def parse_depths(text: str) -> tuple[float, ...]:
    """``"0,0.5,1"`` as numbers (checked by the suite to lie in [0, 1])."""
    try:
        depths = tuple(float(part) for part in _parts(text, "--depths"))
    except ValueError:
        depths = ()
    if not depths:
        raise RLPruneError(f"--depths {text!r} must be comma-separated numbers from 0 to 1 such as 0,0.5,1")
    if len(set(depths)) != len(depths):
        raise RLPruneError(f"--depths {text!r} repeats a depth (its items would be counted twice); give each once")
    return depths


def parse_budgets(text: str, option: str = "--budgets") -> tuple[float, ...]:
    """``"0.3,0.5,0.7"`` as numbers, each checked to lie in (0, 1]; an empty list is refused."""
    parts = _parts(text, option)
    if not parts:
        raise RLPruneError(f"{option} lists nothing; give at least one budget, e.g. {option} 0.3,0.5,0.7")
    try:
        budgets = tuple(float(part) for part in parts)
    except ValueError:
        raise RLPruneError(f"{option} {text!r} must be comma-separated numbers such as 0.3,0.5,0.7") from None
    for budget in budgets:
        check_number(
            budget, f"each {option} value", at_most=1.0, hint=" (a target prefill FLOPs ratio)", error=RLPruneError
        )
    return budgets
