"""Token reduction: what to do at a layer (action), how to rank tokens (scores), over which spans
(spans), and the ops that remove them, each an object that plans and prices itself (ops)."""

from rlprune.reduction.action import KEEP, LayerAction, Schedule, format_schedule, parse_schedule, scored
from rlprune.reduction.ops import (
    OPS,
    POLICY_OPS,
    Op,
    Planning,
    Price,
    ReductionPlan,
    apply_plan,
    match_merge_targets,
    register_op,
    removal_count,
    select_least_important,
    track_owners,
)
from rlprune.reduction.reprefill import Reprefill
from rlprune.reduction.scores import SCORERS, ScoreContext, Scorer, register_scorer
from rlprune.reduction.spans import Pool, parse_unit, sentence_end_ids, unit_ids, unit_ranking

__all__ = [
    "KEEP",
    "OPS",
    "POLICY_OPS",
    "Op",
    "Planning",
    "Price",
    "Pool",
    "SCORERS",
    "LayerAction",
    "ReductionPlan",
    "Reprefill",
    "Schedule",
    "ScoreContext",
    "Scorer",
    "apply_plan",
    "format_schedule",
    "match_merge_targets",
    "parse_schedule",
    "parse_unit",
    "register_op",
    "register_scorer",
    "removal_count",
    "scored",
    "select_least_important",
    "sentence_end_ids",
    "track_owners",
    "unit_ids",
    "unit_ranking",
]
