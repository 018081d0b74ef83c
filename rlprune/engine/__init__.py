"""The reduced forward and decode path: one layer loop, per-row state, accounting, decoding, and the
policy it consults.

:class:`Reducer` is the entry point; the modules behind it each hold one concept:
``inputs`` (checked prompts, layers, schedules), ``state`` (per-row state, batches, the shared KV
cache), ``loop`` (the only layer loop), ``accounting`` (FLOPs and KV charges and projections),
``generate`` (decoding and sampling), ``features`` (what a policy observes of a state and the action
space it picks from) and ``policy`` (the protocol the reducer calls and how it consults a policy).
"""

from rlprune.engine.features import Features
from rlprune.engine.generate import GenerationResult
from rlprune.engine.inputs import ActionSource, Prompts, ReducerConfig, check_schedule
from rlprune.engine.policy import Budget, Policy
from rlprune.engine.reducer import Reducer
from rlprune.engine.state import ReductionBatch, ReductionOutput, ReductionState, SharedCache, rows_of

__all__ = [
    "ActionSource",
    "Budget",
    "Features",
    "GenerationResult",
    "Policy",
    "Prompts",
    "Reducer",
    "ReducerConfig",
    "ReductionBatch",
    "ReductionOutput",
    "ReductionState",
    "SharedCache",
    "check_schedule",
    "rows_of",
]
