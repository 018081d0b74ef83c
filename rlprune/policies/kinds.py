"""The registry of policy kinds: the one place that knows what each kind is.

A kind declares its policy class, its checkpoint schema (what ``config.json`` records, how the
network is rebuilt, how the config is checked) and its trainer. Checkpoints, training and the CLI
look a kind up here instead of branching on it. Every checkpoint records its ``kind``; configs
written before that load through :func:`migrate`, the one migration.

Trainers live in :mod:`rlprune.train` (above this package), so a kind names its trainer as
``"module:attr"``, imported only when a run asks for it (:func:`rlprune.train.trainer.trainer_for`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from rlprune.engine.features import SPEC_VERSION
from rlprune.errors import InvalidArgumentError
from rlprune.policies import schema_layer, schema_span
from rlprune.policies.budget_head import BudgetHead
from rlprune.policies.checkpoint_config import (
    FORMAT,
    FORMAT_VERSION,
    PolicyError,
    invalid,
    is_int,
    show_value,
    validate_format,
    validate_keys,
    validate_provenance,
)
from rlprune.policies.network import ReductionPolicy
from rlprune.policies.span_head import SPAN_SPEC_VERSION, SpanHeadPolicy
from rlprune.policies.token_network import TOKEN_SPEC_VERSION, TokenReductionPolicy


@dataclass(frozen=True)
class Trainer:
    """How a kind is trained: the function (``"module:attr"``, taking ``TrainOptions`` and the recipe) and
    the backends it refuses, each with the one-line reason ``rlprune train`` gives."""

    target: str
    refused: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyKind:
    """One learned policy kind: its class, its checkpoint schema and its trainer."""

    name: str
    policy_class: type[nn.Module]
    spec_version: int
    """The observation/action spec its checkpoints are written for (one per kind)."""
    top_keys: frozenset[str]
    describe: Callable[[Any, dict[str, Any]], dict[str, Any]]
    """``(policy, training) -> fields``: what ``config.json`` records besides header and provenance."""
    build: Callable[[dict[str, Any], Path], nn.Module]
    """``(config, folder) -> policy``: a fresh network of the shape a validated config describes."""
    validate: Callable[[dict[str, Any], Path], None]
    """``(config, folder)``: the kind's own fields, each checked (a :class:`PolicyError` naming the file)."""
    default_budget: Callable[[dict[str, Any]], float | None]
    """``config -> budget``: the budget the policy runs at when none is given."""
    trainer: Trainer


def _network_kind(name: str, policy_class: type, spec_version: int, *, token: bool) -> PolicyKind:
    """A PPO-trained network kind: the layer policy, or the token policy with its per-token head."""
    return PolicyKind(
        name,
        policy_class,
        spec_version,
        schema_layer.TOP_KEYS,
        functools.partial(schema_layer.describe, token=token),
        functools.partial(schema_layer.build, token=token),
        functools.partial(schema_layer.validate, token=token),
        schema_layer.default_budget,
        Trainer("rlprune.train.kinds.network:train_network"),
    )


KINDS: dict[str, PolicyKind] = {
    kind.name: kind
    for kind in (
        _network_kind("layer", ReductionPolicy, SPEC_VERSION, token=False),
        _network_kind("token", TokenReductionPolicy, TOKEN_SPEC_VERSION, token=True),
        PolicyKind(
            "span",
            SpanHeadPolicy,
            SPAN_SPEC_VERSION,
            schema_span.TOP_KEYS,
            schema_span.describe,
            schema_span.build,
            schema_span.validate,
            schema_span.default_budget,
            Trainer("rlprune.train.kinds.span_head:train_span"),
        ),
    )
}
"""The checkpointed policy kinds, by the name their configs record."""

BUDGET_HEAD = Trainer("rlprune.train.kinds.budget_train:train_budget")
"""A budget head (:class:`BudgetHead`) is trained on its own, but checkpointed inside its span head's
``network`` (:mod:`rlprune.policies.schema_span`), so it is a trainable kind without a checkpoint kind."""

TRAINERS: dict[str, Trainer] = {name: kind.trainer for name, kind in KINDS.items()} | {"budget": BUDGET_HEAD}
"""What a recipe's ``policy`` may name, and how each is trained."""

TRAINED_CLASSES: dict[str, type[nn.Module]] = {name: kind.policy_class for name, kind in KINDS.items()}
TRAINED_CLASSES["budget"] = BudgetHead


def kind_of(policy: Any) -> PolicyKind:
    """The kind of ``policy`` (by its class, the most derived registered one); a :class:`PolicyError` if
    it is not a learned policy (baselines have no checkpoint)."""
    by_class = {kind.policy_class: kind for kind in KINDS.values()}
    for cls in type(policy).__mro__:
        if cls in by_class:
            return by_class[cls]
    raise PolicyError(
        f"a {type(policy).__name__} is not a learned policy; checkpoints hold the kinds {', '.join(KINDS)}"
    )


def expect_kind(policy: Any, name: str, why: str) -> Any:
    """``policy`` if it is of kind ``name``; else an :class:`~rlprune.errors.InvalidArgumentError` saying
    ``why`` (what needs that kind) and what ``policy`` is."""
    try:
        found: str | None = kind_of(policy).name
    except PolicyError:
        found = None
    if found != name:
        what = f"a {found}-level policy" if found else f"a {type(policy).__name__}"
        raise InvalidArgumentError(f"{why}; this is {what}")
    return policy


def policy_config(policy: Any, training: dict[str, Any]) -> dict[str, Any]:
    """The header and the kind's own fields of ``policy``'s ``config.json`` (provenance is added by the caller)."""
    kind = kind_of(policy)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "spec_version": kind.spec_version}
    return header | {"kind": kind.name} | kind.describe(policy, training)


def migrate(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``config`` in this release's form. The one migration: configs written before every checkpoint
    recorded its ``kind`` (layer policies) get the kind their ``spec_version`` is written for."""
    if "kind" in config:
        return config
    return config | {"kind": _kind_of_spec(config.get("spec_version"), folder).name}


def _kind_of_spec(spec_version: Any, folder: Path) -> PolicyKind:
    for kind in KINDS.values():
        if is_int(spec_version) and spec_version == kind.spec_version:
            return kind
    known = ", ".join(f"{kind.spec_version} ({kind.name}-level policies)" for kind in KINDS.values())
    raise PolicyError(
        f"{folder} was trained on observation/action spec {show_value(spec_version)}; this rlprune "
        f"reads specs {known}: retrain or use a matching rlprune version"
    )


def validate_config(config: Any, folder: Path) -> dict[str, Any]:
    """``config`` migrated (:func:`migrate`), or a :class:`PolicyError` unless it describes a policy this
    release can run as recorded.

    The format, spec version and kind first, then the kind's own fields (types, ranges, this release's
    observation and action spaces, size bounds) and the provenance: nothing is allocated for a config
    that fails, and no value is silently coerced, ignored or mixed with another kind's.
    """
    validate_format(config, folder)
    spec_kind = _kind_of_spec(config.get("spec_version"), folder)
    config = migrate(config, folder)
    name = config["kind"]
    if not isinstance(name, str) or name not in KINDS:
        raise PolicyError(
            f"{folder} holds a policy of kind {show_value(name)}; this rlprune reads the kinds "
            f"{', '.join(KINDS)}: upgrade rlprune or retrain the policy"
        )
    if name != spec_kind.name:
        spec = f"spec_version {spec_kind.spec_version} is a {spec_kind.name}-level policy"
        raise invalid(folder, f"kind is {show_value(name)} but {spec}")
    kind = KINDS[name]
    validate_keys(config, folder, name, kind.top_keys)
    kind.validate(config, folder)
    validate_provenance(config, folder)
    return config
