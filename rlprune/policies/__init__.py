"""Reduction methods behind one protocol: the learned ``ReductionPolicy`` and rule-based baselines."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from rlprune.engine import Policy
from rlprune.policies.baselines import BASELINES, Baseline, BaselineError, BestStatic, make_baseline
from rlprune.policies.checkpoint import PolicyError, find_policy, load_policy, save_policy, shipped_policies
from rlprune.policies.network import ReductionPolicy
from rlprune.policies.span_head import SpanHeadPolicy
from rlprune.policies.token_network import TokenReductionPolicy


def resolve_policy(spec: str | Path | Policy, model: PreTrainedModel | None = None) -> Policy:
    """A policy object, a checkpoint folder, a baseline spec such as ``fastv:layer=2``, or a shipped
    policy's name such as ``smollm2-135m-grounded``."""
    if not isinstance(spec, (str, Path)):
        return spec
    if Path(spec).is_dir():
        return load_policy(spec, model)
    if str(spec).split(":", 1)[0] in BASELINES:
        return make_baseline(str(spec))
    folder = find_policy(spec)
    if folder is not None:
        return load_policy(folder, model)
    raise PolicyError(
        f"{spec!r} is neither a policy checkpoint folder, a shipped policy ({', '.join(shipped_policies()) or 'none'})"
        f" nor a baseline ({', '.join(BASELINES)})"
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
    "find_policy",
    "load_policy",
    "make_baseline",
    "resolve_policy",
    "save_policy",
    "shipped_policies",
]
