"""The protocol every reduction method implements, and how the reducer consults one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from rlprune.budget import BudgetController
from rlprune.engine import Reducer, ReductionState
from rlprune.errors import InvalidActionError
from rlprune.features import Features
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
    ratios with :meth:`BudgetController.record` after the batch, so every row sees the same offset.
    """
    if isinstance(budget, BudgetController):
        return _average_decider(policy, reducer, budget, deterministic)
    budget = run_budget(policy, budget)
    observed_budget = 1.0 if budget is None else budget

    def decide(state: ReductionState) -> LayerAction:
        return policy.act(Features(reducer, state, observed_budget), budget, deterministic)

    return decide


def _average_decider(
    policy: Policy, reducer: Reducer, controller: BudgetController, deterministic: bool
) -> Callable[[ReductionState], LayerAction]:
    ratios: dict[int, float] = {}  # each row's ratio, by the identity of its state, set at its first decision
    propose = getattr(policy, "propose_budget", None)

    def decide(state: ReductionState) -> LayerAction:
        if state.decisions_made == 0:
            target = controller.budget.target  # what a proposing policy reads as its features' budget
            proposal = target if propose is None else propose(Features(reducer, state, target))
            ratios[id(state)] = controller.ratio(proposal)
        ratio = ratios[id(state)]
        return policy.act(Features(reducer, state, ratio), ratio, deterministic)

    return decide


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
