"""The config schema of layer- and token-level policies (:class:`ReductionPolicy`,
:class:`TokenReductionPolicy`): what ``config.json`` records of them, how the network is rebuilt,
and how every field is checked before anything is allocated.

A token-level policy is a layer policy plus a per-token scoring head, so both kinds share one
schema; ``token`` says which of the two a config is (the registry binds it per kind).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rlprune.engine.features import (
    OBSERVATION_FIELDS,
    OBSERVATION_SIZE,
    TOKEN_FEATURE_FIELDS,
    TOKEN_FEATURE_SIZE,
    ActionSpec,
    check_scorer_choice,
)
from rlprune.policies.checkpoint_config import (
    COMMON_KEYS,
    CONFIG,
    MAX_PARAMETERS,
    PolicyError,
    check_decision_layers,
    check_fields,
    check_list,
    check_names,
    check_size,
    check_widths,
    count_parameters,
    invalid,
    is_number,
    same_ints,
    show_value,
)
from rlprune.policies.network import ReductionPolicy
from rlprune.policies.token_network import TokenReductionPolicy
from rlprune.reduction import OPS, SCORERS

NETWORK_KEYS = frozenset({"observation_size", "hidden", "nvec", "parameters"})
TOKEN_NETWORK_KEYS = frozenset({"token_feature_size", "token_hidden"})
TOP_KEYS = COMMON_KEYS | {"action_spec", "observation_fields", "token_feature_fields", "default_budget"}
"""The top-level keys of a layer- or token-level config."""


def describe(policy: ReductionPolicy, training: dict[str, Any], token: bool) -> dict[str, Any]:
    """What ``config.json`` records of ``policy`` besides the header and provenance.

    Its ``default_budget``, or else the median of the budgets in ``training["validation"]["per_budget"]``
    (the ones it was validated at), if any.
    """
    network = {
        "observation_size": policy.observation_size,
        "hidden": list(policy.hidden),
        "nvec": list(policy.nvec),
        "parameters": policy.num_parameters(),
    }
    if token:
        network |= {"token_feature_size": policy.token_feature_size, "token_hidden": list(policy.token_hidden)}
    return {
        "network": network,
        "decision_layers": list(policy.layers),
        "action_spec": policy.action_spec.to_dict(),
        "observation_fields": [name for name, _ in OBSERVATION_FIELDS],
        "token_feature_fields": [name for name, _ in TOKEN_FEATURE_FIELDS] if token else None,
        "default_budget": policy.default_budget or validated_budget(training),
    }


def build(config: dict[str, Any], folder: Path, token: bool) -> ReductionPolicy:
    """A fresh network of the shape a validated ``config`` describes."""
    network, spec = config["network"], config["action_spec"]
    kwargs = {
        "observation_size": network["observation_size"],
        "hidden": network["hidden"],
        "decision_layers": config["decision_layers"],
        "action_spec": ActionSpec(tuple(spec["ops"]), tuple(float(s) for s in spec["shares"]), tuple(spec["scorers"])),
    }
    try:
        if token:
            kwargs |= {"token_feature_size": network["token_feature_size"], "token_hidden": network["token_hidden"]}
            return TokenReductionPolicy(**kwargs)
        return ReductionPolicy(**kwargs)
    except (KeyError, TypeError, ValueError) as error:  # validate should have caught it
        raise PolicyError(f"{folder / CONFIG} describes no valid network ({error})") from None


def default_budget(config: dict[str, Any]) -> float | None:
    """The config's ``default_budget``; else (checkpoints written before it was recorded) the median of
    the budgets it was validated at, ``training.validation.per_budget``."""
    if config.get("default_budget") is not None:
        return float(config["default_budget"])
    return validated_budget(config.get("training", {}))


def validated_budget(training: dict[str, Any]) -> float | None:
    """The median of the budgets a training summary's validation ran at, if it names budgets in (0, 1]."""
    validation = training.get("validation")
    per_budget = validation.get("per_budget") if isinstance(validation, dict) else None
    if not isinstance(per_budget, dict) or not per_budget:
        return None
    try:
        budgets = [float(budget) for budget in per_budget]
    except (TypeError, ValueError):
        return None
    if not all(0 < budget <= 1 for budget in budgets):
        return None
    return statistics.median(budgets)


def validate(config: dict[str, Any], folder: Path, token: bool) -> None:
    """Every field the network is built from, checked against this release's observation and action spaces
    and the size bounds; the decision layers, default budget and recorded field names."""
    network, hidden, token_hidden = _validate_network(config, folder, token)
    nvec = _validate_action_spec(config, folder, token)
    if "nvec" in network and not same_ints(network["nvec"], nvec):
        raise invalid(folder, f"network.nvec is {show_value(network['nvec'])} but the action_spec has {nvec} choices")
    parameters = count_parameters(OBSERVATION_SIZE, hidden, sum(nvec))
    if token:
        parameters += count_parameters(TOKEN_FEATURE_SIZE, token_hidden, 0)
    if parameters > MAX_PARAMETERS:
        raise invalid(folder, f"the network would have {parameters:,} parameters, over the {MAX_PARAMETERS:,} allowed")
    if "parameters" in network and not same_ints(network["parameters"], parameters):
        raise invalid(
            folder, f"network.parameters is {show_value(network['parameters'])} but its layers have {parameters}"
        )
    _validate_decisions(config, folder, token)


def _validate_network(
    config: dict[str, Any], folder: Path, token: bool
) -> tuple[dict[str, Any], list[int], list[int] | None]:
    """A layer- or token-level network's keys, input sizes and widths: ``(network, hidden, token_hidden)``."""
    kind = "token" if token else "layer"
    network = config.get("network")
    if not isinstance(network, dict):
        raise invalid(folder, f"network is {show_value(network)}, not an object with observation_size and hidden")
    allowed = NETWORK_KEYS | (TOKEN_NETWORK_KEYS if token else frozenset())
    unknown = sorted(set(network) - allowed)
    if unknown:
        raise invalid(folder, f"network has key(s) {unknown} that a {kind}-level policy does not have")
    check_size(folder, "network.observation_size", network.get("observation_size"), OBSERVATION_SIZE, "observation")
    hidden = check_widths(folder, "network.hidden", network.get("hidden"))
    token_hidden = None
    if token:
        check_size(
            folder, "network.token_feature_size", network.get("token_feature_size"), TOKEN_FEATURE_SIZE, "token feature"
        )
        token_hidden = check_widths(folder, "network.token_hidden", network.get("token_hidden"))
    return network, hidden, token_hidden


def _validate_action_spec(config: dict[str, Any], folder: Path, token: bool) -> list[int]:
    """The ops, shares and scorers a policy chooses from; returns the number of choices of each."""
    spec = config.get("action_spec")
    if not isinstance(spec, dict):
        raise invalid(folder, f"action_spec is {show_value(spec)}, not an object with ops, shares and scorers")
    unknown = sorted(set(spec) - {"ops", "shares", "scorers"})
    if unknown:
        raise invalid(folder, f"action_spec has unknown key(s) {unknown}")
    ops = check_names(folder, "action_spec.ops", spec.get("ops"), OPS)
    if "keep" not in ops:
        raise invalid(folder, f"action_spec.ops is {show_value(ops)}: it must include 'keep'")
    shares = check_list(folder, "action_spec.shares", spec.get("shares"))
    for i, share in enumerate(shares):
        if not is_number(share) or not 0 < share <= 1:
            raise invalid(folder, f"action_spec.shares[{i}] is {show_value(share)}; shares are numbers in (0, 1]")
    if len(set(shares)) != len(shares):
        raise invalid(folder, f"action_spec.shares {show_value(shares)} repeats a share")
    scorers = check_list(folder, "action_spec.scorers", spec.get("scorers"))
    known = "learned" if token else ", ".join(sorted(set(SCORERS) - {"learned"})) + " (span options: pool, unit)"
    for i, scorer in enumerate(scorers):
        try:
            base = check_scorer_choice(scorer).scorer if isinstance(scorer, str) else None
        except ValueError:
            base = None
        if base is None or (base == "learned") != token:
            raise invalid(folder, f"action_spec.scorers[{i}] is {show_value(scorer)}; known: {known}")
    if token and scorers != ["learned"]:
        raise invalid(folder, "action_spec.scorers of a token-level policy must be ['learned']")
    if len(set(scorers)) != len(scorers):
        raise invalid(folder, f"action_spec.scorers {show_value(scorers)} repeats an entry")
    return [len(ops), len(shares), len(scorers)]


def _validate_decisions(config: dict[str, Any], folder: Path, token: bool) -> None:
    """The decision layers, the default budget and the recorded observation and token feature fields."""
    check_decision_layers(config, folder)
    budget = config.get("default_budget")
    if budget is not None and (not is_number(budget) or not 0 < budget <= 1):
        raise invalid(folder, f"default_budget is {show_value(budget)}; budgets lie in (0, 1]")
    check_fields(folder, config, "observation_fields", OBSERVATION_FIELDS)
    if token:
        check_fields(folder, config, "token_feature_fields", TOKEN_FEATURE_FIELDS)
    elif config.get("token_feature_fields") is not None:
        raise invalid(folder, "token_feature_fields is set but spec_version is that of a layer-level policy")
