"""Reduction methods behind one protocol: the learned ``ReductionPolicy`` and rule-based baselines."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from rlprune.engine import Policy
from rlprune.policies.baselines import BASELINES, Baseline, BaselineError, BestStatic, make_baseline
from rlprune.policies.checkpoint import PolicyError, find_policy, load_policy, save_policy, shipped_policies
from rlprune.policies.compat import IncompatiblePolicyError, ModelShape, check_compatible
from rlprune.policies.network import ReductionPolicy
from rlprune.policies.span_head import SpanHeadPolicy
from rlprune.policies.token_network import TokenReductionPolicy


def is_baseline(spec: str | Path | Policy) -> bool:
    """Whether ``spec`` names a baseline (``random``, ``fastv:layer=2``). A baseline's name always means
    the baseline, never a folder of that name in the working folder; give such a folder as ``./random``."""
    return isinstance(spec, str) and spec.strip().split(":", 1)[0] in BASELINES


def resolve_policy(spec: str | Path | Policy, model: PreTrainedModel | None = None) -> Policy:
    """A policy object, a checkpoint folder, a baseline spec such as ``fastv:layer=2``, or a shipped
    policy's name such as ``smollm2-135m-grounded``; with ``model``, checked to fit it
    (:func:`~rlprune.policies.compat.check_compatible`) before anything runs."""
    policy = _resolve(spec, model)
    return policy if model is None else check_compatible(policy, model)


def _resolve(spec: str | Path | Policy, model: PreTrainedModel | None) -> Policy:
    if not isinstance(spec, (str, Path)):
        return spec
    if isinstance(spec, str) and not spec.strip():  # Path("") would mean the current folder
        raise PolicyError("the policy (--policy) is empty; give a checkpoint folder, a shipped name or a baseline")
    if is_baseline(spec):  # before folders: ./random is the folder, random the baseline
        return make_baseline(str(spec))
    if Path(spec).is_dir():
        return load_policy(spec, model)
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
    "IncompatiblePolicyError",
    "ModelShape",
    "Policy",
    "PolicyError",
    "ReductionPolicy",
    "SpanHeadPolicy",
    "TokenReductionPolicy",
    "check_compatible",
    "find_policy",
    "is_baseline",
    "load_policy",
    "make_baseline",
    "resolve_policy",
    "save_policy",
    "shipped_policies",
]
