"""Output-side token reduction: train the model (a LoRA adapter) to answer with fewer tokens."""

from rlprune.output.adapter import apply_adapter
from rlprune.output.rewards import (
    REWARDS,
    EfficiencyReward,
    ExactLengthReward,
    HallucinationPenalty,
    MaxLengthReward,
    completion_text,
)

__all__ = [
    "REWARDS",
    "EfficiencyReward",
    "ExactLengthReward",
    "HallucinationPenalty",
    "MaxLengthReward",
    "apply_adapter",
    "completion_text",
]
