"""Budgets over a workload: every prompt at one FLOPs ratio, or a target average over a stream.

``budget_mode="prompt"`` (the default) holds every prompt to the ratio. ``"average"`` holds the
*mean* over the prompts a policy serves: the policy proposes each prompt's ratio from what it sees
at its first decision layer (``propose_budget``), and a :class:`BudgetController` shifts the proposals
by one offset so that the realised mean stays on the target, within a per-prompt floor and ceiling.

The controller adds one offset to every proposal, chosen between batches so that the last
``window`` proposals, shifted by it and cut to ``[floor, ceiling]``, would average the target
plus the running deficit (target x prompts - ratios spent) spread over the next ``horizon`` prompts. The proposals'
differences stay; what the floor and ceiling cut off is made up by the others. Every row of a batch
sees the same offset, so a prompt gets the ratio it would get alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch

from rlprune.errors import InvalidArgumentError
from rlprune.validate import check_budget, check_int, check_number, is_number, shown

BudgetMode = Literal["prompt", "average"]
BUDGET_MODES: tuple[BudgetMode, ...] = ("prompt", "average")


def check_budget_mode(mode: object) -> BudgetMode:
    """``mode`` if it is one of :data:`BUDGET_MODES`, else a one-line error."""
    if mode not in BUDGET_MODES:
        raise InvalidArgumentError(f"budget_mode must be one of {', '.join(BUDGET_MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


@dataclass(frozen=True)
class AverageBudget:
    """A target mean FLOPs ratio over a stream of prompts, each kept within ``[floor, ceiling]``."""

    target: float
    floor: float = 0.1
    ceiling: float = 1.0
    horizon: int = 5
    window: int = 50  # recent proposals the offset is fitted to: enough to average, few enough to follow a change

    def __post_init__(self) -> None:
        hint = " (a prefill FLOPs ratio)"
        for name in ("target", "floor", "ceiling"):
            check_number(getattr(self, name), f"the average budget's {name}", at_most=1.0, hint=hint)
        check_int(self.horizon, "horizon", minimum=1)
        check_int(self.window, "window", minimum=1)
        if self.floor > self.ceiling:
            raise InvalidArgumentError(f"floor {self.floor:g} is above ceiling {self.ceiling:g}: give floor <= ceiling")
        if not self.floor <= self.target <= self.ceiling:
            raise InvalidArgumentError(
                f"the average budget {self.target:g} is outside [floor, ceiling] = [{self.floor:g}, {self.ceiling:g}]: "
                "no stream of prompts could meet it"
            )


@dataclass
class BudgetController:
    """Turns per-prompt proposals into ratios whose running mean holds :attr:`AverageBudget.target`."""

    budget: AverageBudget
    offset: float = 0.0
    ratios: list[float] = field(default_factory=list, repr=False)
    proposals: list[float] = field(default_factory=list, repr=False)
    pending: list[float] = field(default_factory=list, repr=False)
    given: list[float] = field(default_factory=list, repr=False)

    def ratio(self, proposal: float) -> float:
        """The ratio a prompt gets: its proposal plus the current offset, within floor and ceiling.

        The batch's proposals and ratios wait in :attr:`pending` and :attr:`given` until :meth:`record`.
        """
        if not is_number(proposal):
            raise InvalidArgumentError(f"a budget proposal must be a finite number, got {shown(proposal)}")
        given = min(max(proposal + self.offset, self.budget.floor), self.budget.ceiling)
        self.pending.append(float(proposal))
        self.given.append(given)
        return given

    def replay(self, proposals: Iterable[float], realised: Iterable[float]) -> None:
        """Take up a stream where it stopped (a resumed evaluation): its proposals and realised ratios."""
        self.pending.extend(proposals)
        self.record(realised)

    def record(self, realised: Iterable[float]) -> None:
        """Account one batch's realised ratios and set the offset the next batch sees."""
        self.ratios.extend(float(r) for r in realised)
        self.proposals.extend(self.pending)
        self.pending.clear()
        self.given.clear()
        if not self.ratios or not self.proposals:
            return
        budget = self.budget
        deficit = budget.target * len(self.ratios) - sum(self.ratios)
        aim = min(max(budget.target + deficit / budget.horizon, budget.floor), budget.ceiling)
        recent = torch.tensor(self.proposals[-budget.window :], dtype=torch.float64)
        low, high = -1.0, 1.0  # proposals are ratios in [0, 1]: no useful offset reaches further
        for _ in range(40):  # bisection: the shifted, cut mean grows with the offset
            middle = (low + high) / 2
            if float((recent + middle).clamp(budget.floor, budget.ceiling).mean()) < aim:
                low = middle
            else:
                high = middle
        self.offset = (low + high) / 2

    @property
    def count(self) -> int:
        """Prompts recorded so far."""
        return len(self.ratios)

    @property
    def mean(self) -> float | None:
        """The realised mean ratio so far (``None`` before the first prompt)."""
        return sum(self.ratios) / len(self.ratios) if self.ratios else None


def workload_budget(
    budget: float | BudgetController | None,
    mode: str = "prompt",
    *,
    floor: float | None = None,
    ceiling: float | None = None,
) -> float | BudgetController | None:
    """What :meth:`Reducer.run` takes as ``budget=`` for a user's budget settings.

    ``"prompt"`` mode gives the checked ratio back (``None`` lets baselines use their own); ``"average"``
    a new :class:`BudgetController` holding ``budget`` as the mean. A controller passed in is used as
    is, so one stream can span several calls.
    """
    mode = check_budget_mode(mode)
    if isinstance(budget, BudgetController):
        if floor is not None or ceiling is not None:
            raise InvalidArgumentError(
                "a BudgetController carries its own floor and ceiling; give them to its AverageBudget"
            )
        return budget
    if mode == "prompt":
        if floor is not None or ceiling is not None:
            raise InvalidArgumentError("floor and ceiling bound per-prompt ratios in budget_mode='average' only")
        return check_budget(budget)
    if budget is None:
        raise InvalidArgumentError("budget_mode='average' needs a budget: the target mean FLOPs ratio in (0, 1]")
    settings = {"floor": floor, "ceiling": ceiling}
    return BudgetController(AverageBudget(budget, **{k: v for k, v in settings.items() if v is not None}))


def oracle(ratios: torch.Tensor, answered: torch.Tensor, target: float, stable: bool = False) -> tuple[int, float]:
    """What knowing the outcomes buys: the items answered and the mean ratio spent when each item
    runs at the cheapest of its ``ratios`` that answers it, cheapest extra cost first while the mean
    stays within ``target``; the other items run at their cheapest ratio and count as lost.

    ``ratios`` and ``answered`` are ``(items, grid)`` with the grid ascending. ``stable`` counts a
    ratio only when every larger one answers the item too: what knowing each item's need is worth,
    without answers that come at one ratio and go at the next.
    """
    if ratios.dim() != 2 or answered.shape != ratios.shape:
        raise InvalidArgumentError(
            f"oracle needs ratios and answers of one (items, grid) shape, got {tuple(ratios.shape)} "
            f"and {tuple(answered.shape)}"
        )
    target = check_number(target, "target", at_most=1.0, hint=" (the mean FLOPs ratio the oracle may spend)")
    answered = answered.bool()
    if stable:
        answered = answered.flip(1).cumprod(1).flip(1).bool()
    cheapest = ratios.min(1).values
    need = torch.where(answered, ratios, torch.full_like(ratios, float("inf"))).min(1).values
    extra = need - cheapest
    total, budget, taken = float(cheapest.sum()), float(target) * len(ratios), 0
    for index in extra.argsort(stable=True).tolist():
        cost = float(extra[index])
        if cost == float("inf") or total + cost > budget + 1e-6:  # float sums of equal ratios
            break
        total, taken = total + cost, taken + 1
    return taken, total / max(len(ratios), 1)
