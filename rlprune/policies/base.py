"""The protocol every reduction method implements, and how the reducer consults one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from rlprune.budget import BudgetController
from rlprune.engine import Reducer, ReductionState
from rlprune.errors import InvalidActionError
from rlprune.features import Features
from rlprune.policies.compat import check_compatible
from rlprune.reduction import LayerAction


@runtime_checkable
class Policy(Protocol):
    """Decides, before each of its decision layers, how to reduce the tokens.

    ``budget`` is the target prefill FLOPs ratio in (0, 1]; ``None`` lets a rule-based method
    use its own fixed ratios.

    Learned policies (:class:`ReductionPolicy`, :class:`TokenReductionPolicy`, :class:`SpanHeadPolicy`)
    also have two optional members; rule-based methods have neither:

    - ``default_budget: float | None``: the budget the policy runs at when none is given (recorded in
      its checkpoint); a learned policy without one must be given a budget.
    - ``propose_budget(features) -> float``: in average-budget mode, the ratio this prompt asks for,
      read at the first decision layer (a span head with a budget head); without it every prompt
      starts from the stream's target.
    """

    name: str

    def decision_layers(self, num_layers: int) -> tuple[int, ...]:
        """The layers where :meth:`act` is consulted, for a model with ``num_layers`` layers."""
        ...

    def act(self, features: Features, budget: float | None, deterministic: bool = True) -> LayerAction:
        """The action for the layer described by ``features``."""
        ...


def decider(
    policy: Policy, reducer: Reducer, budget: float | BudgetController | None, deterministic: bool = True
) -> Callable[[ReductionState], LayerAction]:
    """Wrap ``policy`` as the per-layer callable :meth:`Reducer.run` and :meth:`Reducer.generate` take.

    With a :class:`~rlprune.budget.BudgetController` for ``budget`` (average-budget mode) each prompt
    runs at its own ratio, fixed at its first decision: the controller's offset on the policy's
    :meth:`propose_budget` (the target for a policy without one). The caller records the realised
    ratios with :meth:`BudgetController.record` after the batch. The rows of a batch propose together
    and get one offset, fitted to their proposals too (so a workload of one batch meets the target).
    A policy that does not fit the reducer's model is refused here
    (:func:`~rlprune.policies.compat.check_compatible`).
    """
    check_compatible(policy, reducer)  # before any layer runs
    if isinstance(budget, BudgetController):
        return _AverageDecider(policy, reducer, budget, deterministic)
    budget = run_budget(policy, budget)
    observed_budget = 1.0 if budget is None else budget

    def decide(state: ReductionState) -> LayerAction:
        return policy.act(Features(reducer, state, observed_budget), budget, deterministic)

    return decide


CUT_ALL = LayerAction("prune", 1.0, "random")
"""Every removable token removed: what the least ratio a prompt can reach is measured with."""


class _AverageDecider:
    """Average-budget mode: at the rows' first decision every row proposes its ratio, the controller
    gives the whole batch its ratios at once (:meth:`BudgetController.assign`), and each row acts at
    its own from then on. The engine calls :meth:`decide_rows` with all the rows of a step."""

    def __init__(self, policy: Policy, reducer: Reducer, controller: BudgetController, deterministic: bool) -> None:
        self.policy, self.reducer, self.controller, self.deterministic = policy, reducer, controller, deterministic
        self.propose = getattr(policy, "propose_budget", None)
        self.ratios: dict[int, float] = {}  # each row's ratio, by the identity of its state, set at its first decision

    def __call__(self, state: ReductionState) -> LayerAction:
        return self.decide_rows([state])[0]

    def decide_rows(self, rows: list[ReductionState]) -> list[LayerAction]:
        first = [row for row in rows if row.decisions_made == 0]
        if first:
            target = self.controller.budget.target  # what a proposing policy reads as its features' budget
            seen = [Features(self.reducer, row, target) for row in first]
            proposals = [target if self.propose is None else self.propose(features) for features in seen]
            lowest = [features.ratio_after({row.layer: CUT_ALL}) for features, row in zip(seen, first, strict=True)]
            for row, ratio in zip(first, self.controller.assign(proposals, lowest), strict=True):
                self.ratios[id(row)] = ratio
        return [self._act(row, self.ratios[id(row)]) for row in rows]

    def _act(self, row: ReductionState, ratio: float) -> LayerAction:
        return self.policy.act(Features(self.reducer, row, ratio), ratio, self.deterministic)


def run_budget(policy: Policy, budget: float | None) -> float | None:
    """The budget ``policy`` runs at: ``budget``, or when that is ``None`` a learned policy's own.

    A learned policy (one with a ``default_budget``) reads the budget as an input, so it never runs
    without one: a checkpoint that records none is refused. Rule-based methods keep ``None`` (their
    own fixed ratios).
    """
    if budget is not None or not hasattr(policy, "default_budget"):
        return budget
    if policy.default_budget is None:
        raise InvalidActionError(
            f"the {policy.name} policy records no budget of its own; give one (--budget, or budget= from Python)"
        )
    return policy.default_budget
