"""``best-static``: the strongest fixed schedule, found by a grid search on a validation split.

A learned policy has to beat the best fixed rule, not only the published ones. The search
(:func:`rlprune.eval.best_static.search`, ``rlprune best-static``) tries every (decision layer,
scorer, op) on validation prompts at each budget and writes a small JSON table; this baseline
reads the table and, at a given budget, uses the schedule that won at the nearest searched
budget, solved to meet the budget on the prompt at hand like any :class:`Static` schedule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rlprune.config import ROOT
from rlprune.errors import RLPruneError
from rlprune.features import Features
from rlprune.policies.baselines import Baseline, BaselineError, Static
from rlprune.reduction import KEEP, LayerAction

TABLES = ROOT / "eval" / "best-static"
"""Where shipped search results live: ``best-static:mixed-hard`` reads ``eval/best-static/mixed-hard.json``."""


def table_path(spec: str) -> Path:
    """A search table given as a path or as the name of a shipped one."""
    path = Path(spec)
    if path.suffix == ".json" or path.exists():
        return path
    return TABLES / f"{spec}.json"


@dataclass
class BestStatic(Baseline):
    """Per budget, the fixed schedule that scored best on validation (``best-static:TABLE``)."""

    name: ClassVar[str] = "best-static"
    table: str = "mixed-hard"

    def __post_init__(self) -> None:
        path = table_path(self.table)
        if not path.is_file():
            raise BaselineError(
                f"no best-static table at {path}; run `rlprune best-static --env PRESET --out {path}` first"
            )
        try:
            data = json.loads(path.read_text())
            self._choices = {float(b): Static(entry["schedule"]) for b, entry in data["best"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, RLPruneError) as error:
            raise BaselineError(f"{path} is not a best-static table ({error}); run the search again") from None
        if not self._choices:
            raise BaselineError(f"{path} holds no schedules; run the search again")

    def choice(self, budget: float | None) -> Static:
        """The schedule for ``budget``: the one found at the nearest searched budget."""
        target = 0.5 if budget is None else budget
        return self._choices[min(self._choices, key=lambda b: abs(b - target))]

    def decision_layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(sorted({layer for s in self._choices.values() for layer in s.decision_layers(num_layers)}))

    def act(self, features: Features, budget: float | None, deterministic: bool = True) -> LayerAction:
        schedule = self.choice(budget)
        if features.layer not in schedule.decision_layers(features.num_layers):
            return KEEP
        return schedule.act(features, budget, deterministic)

    def __str__(self) -> str:
        return f"best-static:{self.table}"
