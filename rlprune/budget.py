"""Budgets over a workload: every prompt at one FLOPs ratio, or a target average over a stream.

``budget_mode="prompt"`` (the default) holds every prompt to the ratio. ``"average"`` holds the
*mean* over the prompts a policy serves: the policy proposes each prompt's ratio from what it sees
at its first decision layer (``propose_budget``), and a :class:`BudgetController` shifts the proposals
by one offset so that the realised mean stays on the target, within a per-prompt floor and ceiling.

A batch's rows propose together, then get their ratios together (:meth:`BudgetController.assign`):
one offset for every row, fitted so that the last ``window`` proposals, *this batch's included*,
shifted by it and cut to ``[floor, ceiling]``, average the target plus the running deficit (target x
prompts - ratios spent) spread over the next ``horizon`` prompts. So a workload of one batch (one
prompt, a padded batch, a short file) averages the target, and a long stream follows its proposals.
The proposals' differences stay; what the floor and ceiling cut off, and what a prompt too short to
cut cannot give, is made up by the others. A workload whose realised mean still misses the target by
more than :data:`AVERAGE_TOLERANCE` says why (:meth:`BudgetController.shortfall`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
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


AVERAGE_TOLERANCE = 0.03
"""How far a workload's realised mean may sit from an average budget's target before it is reported."""


class AverageBudgetWarning(UserWarning):
    """A workload in average-budget mode ended with its realised mean off the target."""


@dataclass
class BudgetController:
    """Turns per-prompt proposals into ratios whose running mean holds :attr:`AverageBudget.target`.

    One controller serves one stream, a batch at a time: a batch's rows are given their ratios
    (:meth:`assign`), run, and recorded (:meth:`record`) before the next batch asks. A thread that
    asks while another thread's batch is under way is refused: give each thread its own controller.
    """

    budget: AverageBudget
    offset: float = 0.0  # the offset the last batch was given
    ratios: list[float] = field(default_factory=list, repr=False)  # per recorded prompt: the ratio realised,
    proposals: list[float] = field(default_factory=list, repr=False)  # the one it proposed,
    assigned: list[float] = field(default_factory=list, repr=False)  # the one it was given,
    reachable: list[float] = field(default_factory=list, repr=False)  # and the least it could reach
    pending: list[float] = field(default_factory=list, repr=False)  # the batch under way: its proposals,
    given: list[float] = field(default_factory=list, repr=False)  # its ratios
    lowest: list[float] = field(default_factory=list, repr=False)  # and the least each row can reach
    batches: int = 0
    _owner: int | None = field(default=None, init=False, repr=False, compare=False)  # whose batch is under way

    def __post_init__(self) -> None:
        if not isinstance(self.budget, AverageBudget):
            raise InvalidArgumentError(
                f"BudgetController takes an AverageBudget, got {type(self.budget).__name__} {self.budget!r}; "
                "write BudgetController(AverageBudget(0.4))"
            )

    def assign(self, proposals: Sequence[float], lowest: Sequence[float] | None = None) -> list[float]:
        """One batch's ratios: every proposal plus one offset, each cut to ``[floor, ceiling]``.

        The offset is fitted now, over the recent proposals and this batch's, so a first batch gets
        the target on average. ``lowest`` is, per row, the least ratio its prompt can reach (its
        protected tokens stay): others make up for a row held above its share. The batch waits in
        :attr:`pending` and :attr:`given` until :meth:`record`.
        """
        proposals = [_ratio(p, "a budget proposal") for p in proposals]
        lowest = [0.0] * len(proposals) if lowest is None else [_ratio(x, "a lowest ratio") for x in lowest]
        if len(lowest) != len(proposals):
            raise InvalidArgumentError(f"{len(lowest)} lowest ratios for {len(proposals)} proposals; give one per row")
        self._claim()
        budget = self.budget
        spent = sum(self.ratios) + sum(map(max, self.given, self.lowest))  # a batch under way: what it will spend
        deficit = budget.target * (len(self.ratios) + len(self.given)) - spent
        aim = min(max(budget.target + deficit / max(budget.horizon, len(proposals)), budget.floor), budget.ceiling)
        history, keep = self.proposals + self.pending, max(budget.window - len(proposals), 0)
        earlier = history[len(history) - keep :] if keep else []
        shifted = torch.tensor(earlier + proposals, dtype=torch.float64)
        least = torch.tensor([0.0] * len(earlier) + lowest, dtype=torch.float64)
        low, high = -1.0, 1.0  # proposals are ratios in [0, 1]: no useful offset reaches further
        for _ in range(40):  # bisection: the mean each row will spend grows with the offset
            middle = (low + high) / 2
            if float((shifted + middle).clamp(budget.floor, budget.ceiling).maximum(least).mean()) < aim:
                low = middle
            else:
                high = middle
        self.offset = (low + high) / 2
        given = [min(max(p + self.offset, budget.floor), budget.ceiling) for p in proposals]
        self.pending.extend(proposals)
        self.given.extend(given)
        self.lowest.extend(lowest)
        return given

    def ratio(self, proposal: float) -> float:
        """The ratio one prompt gets: :meth:`assign` for a batch of one."""
        return self.assign([proposal])[0]

    def replay(self, proposals: Iterable[float], realised: Iterable[float]) -> None:
        """Take up a stream where it stopped (a resumed evaluation): its proposals and realised ratios."""
        realised = [float(r) for r in realised]
        self.pending.extend(proposals)
        self.given.extend(realised)
        self.lowest.extend([0.0] * len(realised))
        self.record(realised)

    def record(self, realised: Iterable[float]) -> None:
        """Account the batch under way: the ratios its rows realised."""
        realised = [float(r) for r in realised]
        self.ratios.extend(realised)
        self.proposals.extend(self.pending)
        self.assigned.extend(self.given)
        self.reachable.extend(max(low, self.budget.floor) for low in self.lowest)
        self.batches += 1
        self.abandon()

    def abandon(self) -> None:
        """Forget the batch under way (it failed before its ratios were realised)."""
        self.pending.clear()
        self.given.clear()
        self.lowest.clear()
        self._owner = None

    def _claim(self) -> None:
        thread = threading.get_ident()
        if self.pending and self._owner not in (None, thread):
            raise InvalidArgumentError(
                "this BudgetController is giving ratios to a batch in another thread; one controller serves one "
                "stream: give each thread its own, or run their batches in turn"
            )
        self._owner = thread

    @property
    def count(self) -> int:
        """Prompts recorded so far."""
        return len(self.ratios)

    @property
    def mean(self) -> float | None:
        """The realised mean ratio so far (``None`` before the first prompt)."""
        return sum(self.ratios) / len(self.ratios) if self.ratios else None

    def shortfall(self) -> str | None:
        """Why the realised mean misses the target by more than :data:`AVERAGE_TOLERANCE`; ``None`` if it holds."""
        mean, target = self.mean, self.budget.target
        if mean is None or abs(mean - target) <= AVERAGE_TOLERANCE + 1e-9:
            return None
        least = sum(self.reachable) / len(self.reachable) if self.reachable else self.budget.floor
        given = sum(self.assigned) / len(self.assigned) if self.assigned else mean
        if least > target + AVERAGE_TOLERANCE:
            why = f"these prompts cannot be cut below a mean of {least:.3f} (too short: their protected tokens stay)"
        elif abs(given - mean) > AVERAGE_TOLERANCE:
            why = f"the policy realised a mean of {mean:.3f} for ratios given at a mean of {given:.3f}"
        else:
            why = (
                f"{self.count} prompt(s) in {self.batches} batch(es) are too few for the controller "
                "to even out the per-prompt ratios"
            )
        off = f"realised mean {mean:.3f} misses the average budget {target:g} by more than {AVERAGE_TOLERANCE:g}"
        return f"{off}: {why}"

    def summary(self) -> str:
        """One line on the stream so far: target, realised mean and spread, and any shortfall."""
        if self.mean is None:
            return f"average budget {self.budget.target:g}: no prompt recorded"
        spread = float(torch.tensor(self.ratios, dtype=torch.float64).std(unbiased=False))
        line = (
            f"average budget {self.budget.target:g}: realised mean FLOPs ratio {self.mean:.3f} "
            f"(std {spread:.3f}) over {self.count} prompts"
        )
        missed = self.shortfall()
        return line if missed is None else f"{line}; not controlled: {missed}"


def _ratio(value: object, what: str) -> float:
    if not is_number(value):
        raise InvalidArgumentError(f"{what} must be a finite number, got {shown(value)}")
    return float(value)


def workload_budget(
    budget: float | AverageBudget | BudgetController | None,
    mode: str | None = None,
    *,
    floor: float | None = None,
    ceiling: float | None = None,
) -> float | BudgetController | None:
    """What :meth:`Reducer.run` takes as ``budget=`` for a user's budget settings.

    A ratio in ``"prompt"`` mode (the default for a ratio) comes back checked (``None`` lets baselines
    use their own); in ``"average"`` mode it becomes a new :class:`BudgetController` holding it as the
    mean. An :class:`AverageBudget` becomes a new controller; a controller is used as is, so one stream
    can span several calls. Either is an average budget: ``mode="prompt"`` with one is refused.
    """
    mode = None if mode is None else check_budget_mode(mode)
    if isinstance(budget, (AverageBudget, BudgetController)):
        if mode == "prompt":
            raise InvalidArgumentError(
                f"budget_mode='prompt' holds every prompt to one ratio, but budget is a {type(budget).__name__} "
                "(a mean over a stream): give budget_mode='average' or leave it out"
            )
        if floor is not None or ceiling is not None:
            raise InvalidArgumentError(
                f"a {type(budget).__name__} carries its own floor and ceiling; give them to its AverageBudget"
            )
        return BudgetController(budget) if isinstance(budget, AverageBudget) else budget
    if mode != "average":
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
