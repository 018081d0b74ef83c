"""rlprune: learned, per-layer token reduction for frozen causal language models."""

from rlprune.budget import AverageBudget, BudgetController
from rlprune.engine import GenerationResult, Reducer, ReducerConfig, ReductionOutput, ReductionState
from rlprune.errors import (
    InvalidActionError,
    InvalidArgumentError,
    InvalidPromptError,
    ModelNotFoundError,
    RLPruneError,
    UnsupportedModelError,
)
from rlprune.flops import ModelDims
from rlprune.inference import apply, generate
from rlprune.models import DEFAULT_MODEL, load_model, rlprune_home
from rlprune.policies import (
    Policy,
    ReductionPolicy,
    SpanHeadPolicy,
    TokenReductionPolicy,
    load_policy,
    make_baseline,
    save_policy,
)
from rlprune.prompts import Prompt, build_prompt
from rlprune.reduction import KEEP, LayerAction, parse_schedule

__version__ = "0.1.0"

__all__ = [
    "AverageBudget",
    "BudgetController",
    "DEFAULT_MODEL",
    "KEEP",
    "GenerationResult",
    "InvalidActionError",
    "InvalidArgumentError",
    "InvalidPromptError",
    "LayerAction",
    "ModelDims",
    "ModelNotFoundError",
    "Policy",
    "Prompt",
    "RLPruneError",
    "ReductionPolicy",
    "SpanHeadPolicy",
    "TokenReductionPolicy",
    "Reducer",
    "ReducerConfig",
    "ReductionOutput",
    "ReductionState",
    "UnsupportedModelError",
    "apply",
    "build_prompt",
    "generate",
    "load_model",
    "load_policy",
    "make_baseline",
    "parse_schedule",
    "rlprune_home",
    "save_policy",
]
