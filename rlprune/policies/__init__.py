"""Reduction methods behind one protocol: the learned ``ReductionPolicy`` and rule-based baselines."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from rlprune.policies.base import Policy, decider
from rlprune.policies.baselines import BASELINES, Baseline, BaselineError, BestStatic, make_baseline
from rlprune.policies.checkpoint import PolicyError, load_policy, save_policy
from rlprune.policies.network import ReductionPolicy
from rlprune.policies.span_head import SpanHeadPolicy
from rlprune.policies.token_network import TokenReductionPolicy


def resolve_policy(spec: str | Path | Policy, model: PreTrainedModel | None = None) -> Policy:
    """A policy object, a checkpoint folder, or a baseline spec such as ``fastv:layer=2``."""
    if not isinstance(spec, (str, Path)):
        return spec
    if Path(spec).is_dir():
        return load_policy(spec, model)
    if str(spec).split(":", 1)[0] in BASELINES:
        return make_baseline(str(spec))
    raise PolicyError(
        f"{spec!r} is neither a policy checkpoint folder nor a baseline; baselines: {', '.join(BASELINES)}"
    )


__all__ = [
    "BASELINES",
    "Baseline",
    "BaselineError",
    "BestStatic",
    "Policy",
    "PolicyError",
    "ReductionPolicy",
    "SpanHeadPolicy",
    "TokenReductionPolicy",
    "decider",
    "load_policy",
    "make_baseline",
    "resolve_policy",
    "save_policy",
]
