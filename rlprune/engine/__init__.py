"""The reduced forward and decode path: one layer loop, per-row state, accounting and decoding.

:class:`Reducer` is the entry point; the modules behind it each hold one concept:
``inputs`` (checked prompts, layers, schedules), ``state`` (per-row state, batches, the shared KV
cache), ``loop`` (the only layer loop), ``accounting`` (FLOPs and KV charges and projections) and
``generate`` (decoding and sampling).
"""

from rlprune.engine.generate import GenerationResult
from rlprune.engine.inputs import ActionSource, Prompts, ReducerConfig, check_schedule
from rlprune.engine.reducer import Reducer
from rlprune.engine.state import ReductionBatch, ReductionOutput, ReductionState, SharedCache, rows_of

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
    "rows_of",
]
