"""The reduced forward and decode path, by its historical name: everything lives in
:mod:`rlprune.engine` and is re-exported here, so ``from rlprune.runner import Reducer`` keeps working."""

from rlprune.engine import (
    ActionSource,
    GenerationResult,
    Prompts,
    Reducer,
    ReducerConfig,
    ReductionBatch,
    ReductionOutput,
    ReductionState,
    SharedCache,
    check_schedule,
)
from rlprune.reduction import removal_count

__all__ = [
    "ActionSource",
    "GenerationResult",
    "Prompts",
    "Reducer",
    "ReducerConfig",
    "ReductionBatch",
    "ReductionOutput",
    "ReductionState",
    "SharedCache",
    "check_schedule",
    "removal_count",
]
