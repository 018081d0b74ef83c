"""How the reducer consults a policy: the protocol it calls and the one binding of a policy and a
budget to the layer loop.

A policy is any object with ``name``, ``decision_layers(num_layers)`` and
``act(features, budget, deterministic)``. :meth:`Reducer.run` (and ``select``, ``generate``) asks it
where it decides, checks those layers against the model before any layer runs, and before each of
them builds the :class:`~rlprune.engine.features.Features` of every row and takes the policy's action.
Two optional members refine this: ``default_budget`` (a learned policy's own budget, used when none
is given) and ``propose_budget(features)`` (its per-prompt ratio in average-budget mode).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import Tensor

from rlprune.budget import BudgetController
from rlprune.engine.compat import check_fits
from rlprune.engine.features import Features
from rlprune.errors import InvalidActionError, InvalidArgumentError
from rlprune.reduction import LayerAction
from rlprune.validate import check_budget, shown

if TYPE_CHECKING:
    from rlprune.engine.reducer import Reducer
    from rlprune.engine.state import ReductionState

Budget = float | BudgetController | None
"""What a policy runs at: a target prefill FLOPs ratio in (0, 1], ``None`` (a learned policy's own,
a rule-based method's fixed ratios) or a :class:`~rlprune.budget.BudgetController` (average-budget mode)."""

Decide = Callable[["ReductionState"], LayerAction]


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


@dataclass
class Rescored:
    """``policy`` with the token scores of every cut it makes rewritten by :meth:`rescore`: the same
    layers and as many tokens removed, other tokens chosen. Probes subclass it to ask what another
    choice would do at the same FLOPs (``benchmarks/keep_also.py``, ``benchmarks/reward_ranking.py``)."""

    policy: Policy

    def __getattr__(self, name: str):  # name, decision layers, default budget ... as the policy's
        if name == "policy":  # not set yet (a copy being built): no policy to ask
            raise AttributeError(name)
        return getattr(self.policy, name)

    def act(self, features: Features, budget: float | None, deterministic: bool = True) -> LayerAction:
        action = self.policy.act(features, budget, deterministic)
        if action.token_scores is None:
            return action
        return replace(action, token_scores=self.rescore(features, action.token_scores))

    def rescore(self, features: Features, scores: Tensor) -> Tensor:
        """The scores the cut at ``features``' layer goes by, given the policy's own ``scores``."""
        raise NotImplementedError


def consult(
    policy: Policy, reducer: Reducer, budget: Budget, deterministic: bool = True
) -> tuple[tuple[int, ...], Decide]:
    """Where ``policy`` decides on ``reducer``'s model, and its decision for one row there.

    Everything is checked here, before a layer runs: the policy's shape, its decision layers and
    the budget. A policy whose kind names fields of the model (``check_model``) is refused by
    :func:`~rlprune.engine.compat.check_fits`. With a :class:`~rlprune.budget.BudgetController`
    (average-budget mode) each prompt runs at its own ratio, fixed at its first decision: the rows of
    a step propose together (the policy's ``propose_budget``, the target for a policy without one) and
    the controller assigns their ratios at once, fitted to those proposals and to the least each row
    can reach (so a workload of one batch meets the target). The caller records the realised ratios
    with :meth:`BudgetController.record` after the batch (:meth:`BudgetController.abandon` when it fails).
    """
    if not (callable(getattr(policy, "act", None)) and callable(getattr(policy, "decision_layers", None))):
        raise InvalidArgumentError(
            "policy must have decision_layers(num_layers) and act(features, budget, deterministic) "
            f"(load_policy or make_baseline give one), got {shown(policy)}"
        )
    check_fits(policy, reducer)  # each kind's own fields and every decision layer, before a layer runs
    layers = tuple(sorted({int(layer) for layer in policy.decision_layers(reducer.dims.layers)}))
    if isinstance(budget, BudgetController):
        return layers, _AverageDecider(policy, reducer, budget, deterministic)
    ratio = run_budget(policy, check_budget(budget))
    observed = 1.0 if ratio is None else ratio

    def decide(state: ReductionState) -> LayerAction:
        return policy.act(Features(reducer, state, observed), ratio, deterministic)

    return layers, decide


CUT_ALL = LayerAction("prune", 1.0, "random")
"""Every removable token removed: what the least ratio a prompt can reach is measured with."""


class _AverageDecider:
    """Average-budget mode: at the rows' first decision every row proposes its ratio, the controller
    gives the whole batch its ratios at once (:meth:`BudgetController.assign`), and each row acts at
    its own from then on. The reducer calls :meth:`decide_rows` with all the rows of a step."""

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
