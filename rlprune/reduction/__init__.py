"""Token reduction: what to do at a layer (action), how to rank tokens (scores), over which spans
(spans), and how to remove them (ops)."""

from rlprune.reduction.action import KEEP, OPS, LayerAction, Schedule, format_schedule, parse_schedule
from rlprune.reduction.ops import (
    ReductionPlan,
    apply_plan,
    match_merge_targets,
    select_least_important,
    track_owners,
)
from rlprune.reduction.scores import SCORERS, ScoreContext, Scorer, register_scorer
from rlprune.reduction.spans import Pool, parse_unit, sentence_end_ids, unit_ids, unit_ranking

__all__ = [
    "KEEP",
    "OPS",
    "Pool",
    "SCORERS",
    "LayerAction",
    "ReductionPlan",
    "Schedule",
    "ScoreContext",
    "Scorer",
    "apply_plan",
    "format_schedule",
    "match_merge_targets",
    "parse_schedule",
    "parse_unit",
    "register_scorer",
    "select_least_important",
    "sentence_end_ids",
    "track_owners",
    "unit_ids",
    "unit_ranking",
]
