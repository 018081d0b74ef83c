"""Token reduction: what to do at a layer (action), how to rank tokens (scores), how to remove them (ops)."""

from rlprune.reduction.action import KEEP, OPS, LayerAction, Schedule, format_schedule, parse_schedule
from rlprune.reduction.ops import ReductionPlan, apply_plan, match_merge_targets, select_least_important
from rlprune.reduction.scores import SCORERS, ScoreContext, Scorer, register_scorer

__all__ = [
    "KEEP",
    "OPS",
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
    "register_scorer",
    "select_least_important",
]
