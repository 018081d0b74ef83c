"""What a policy checkpoint's ``config.json`` may hold, checked field by field before anything is built.

Types, ranges, this release's observation and action spaces and a bound on the network's size are
checked before any tensor is allocated; every problem is one :class:`PolicyError` naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from rlprune.engine.features import (
    OBSERVATION_FIELDS,
    OBSERVATION_SIZE,
    SPEC_VERSION,
    TOKEN_FEATURE_FIELDS,
    TOKEN_FEATURE_SIZE,
    check_scorer_choice,
)
from rlprune.errors import InvalidActionError, PolicyError
from rlprune.policies.budget_head import BUDGET_FEATURES, MAX_GRID
from rlprune.policies.span_head import MIXER_INPUTS, SPAN_SPEC_VERSION
from rlprune.policies.token_network import TOKEN_SPEC_VERSION
from rlprune.reduction import OPS, SCORERS, parse_unit

SPEC_VERSIONS = {SPEC_VERSION: "layer", TOKEN_SPEC_VERSION: "token", SPAN_SPEC_VERSION: "span"}
"""Spec versions this release reads, and the policy kind each one is."""

FORMAT = "rlprune-policy"
FORMAT_VERSION = 1
WEIGHTS, CONFIG = "policy.safetensors", "config.json"
POLICIES = "policies"
"""The folder released checkpoints are found by name in: ``./policies``, the checkout's, the installed package's."""

MAX_CONFIG_BYTES = 4 << 20
"""A config is a few kilobytes; a bigger one is not read."""
MAX_WIDTH, MAX_DEPTH = 4096, 16
"""Bounds on each hidden layer's width and on the number of hidden layers of a network."""
MAX_PARAMETERS = 50_000_000
"""Bound on a policy's parameters, worked out from the config before anything is allocated."""
MAX_LAYER = 1024
"""Decision layers are below this (no supported model is deeper)."""
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
"""safetensors dtypes a policy's weights may have (they are cast to the network's float32)."""

NETWORK_KEYS = {"observation_size", "hidden", "nvec", "parameters"}
SPAN_NETWORK_KEYS = {
    "hidden_size",
    "decision_layer",
    "rank",
    "channels",
    "kernel",
    "op",
    "default_budget",
    "parameters",
}
SPAN_BUDGET_KEYS = {"budget_grid", "budget_hidden"}
"""Optional in a span head's network, together: the budget head that proposes ratios in average mode."""
SPAN_UNIT_KEYS = {"unit", "sentence_ends"}
"""Optional in a span head's network: the unit it selects by, and the sentence ends of ``unit="sentence"``."""
SPAN_LATER_KEYS = {"decision_layer", "rank", "channels", "kernel", "min_keep"}
"""A span head's optional ``network.later``: the deeper head it hands the cut over to, and when."""
MAX_TOKEN_ID, MAX_SENTENCE_ENDS = 1 << 31, 1 << 20
"""Bounds on a recorded token id and on how many sentence-end ids a checkpoint may list."""
MAX_HIDDEN_SIZE, MAX_KERNEL = 65536, 255
"""Bounds on the model width a span head reads and on its mixer's kernel (a budget grid's: MAX_GRID)."""
TOKEN_NETWORK_KEYS = {"token_feature_size", "token_hidden"}
COMMON_KEYS = {"format", "format_version", "spec_version", "kind", "network", "decision_layers"}
COMMON_KEYS |= {"model", "reward_preset", "training", "created"}
NETWORK_POLICY_KEYS = COMMON_KEYS | {"action_spec", "observation_fields", "token_feature_fields", "default_budget"}
TOP_KEYS = {"span": COMMON_KEYS, "layer": NETWORK_POLICY_KEYS, "token": NETWORK_POLICY_KEYS}
"""The top-level keys a config of each policy kind may have (a span head keeps its default budget in network)."""
WEIGHTS_HEADER_BYTES = 1 << 20
"""Room for the safetensors header beside the tensors (a policy's is a few hundred bytes)."""
FINGERPRINT_TYPES = {"architecture": str, "layers": int, "hidden_size": int, "vocab_size": int, "weights_sha256": str}


def validate_config(config: Any, folder: Path) -> None:
    """Raise :class:`PolicyError` unless ``config`` describes a policy this release can run as recorded.

    Every field the network is built from is checked for type and range, against this release's
    observation and action spaces, and against size bounds: nothing is allocated for a config that
    fails, and no value is silently coerced, ignored or mixed with another policy kind's.
    """
    kind = _validate_header(config, folder)
    if kind == "span":
        _validate_span_network(config, folder)
        _validate_provenance(config, folder)
        return
    token = kind == "token"
    network, hidden, token_hidden = _validate_network(config, folder, token)
    nvec = _validate_action_spec(config, folder, token)
    if "nvec" in network and not _same_ints(network["nvec"], nvec):
        raise _invalid(folder, f"network.nvec is {show_value(network['nvec'])} but the action_spec has {nvec} choices")
    parameters = _count_parameters(OBSERVATION_SIZE, hidden, sum(nvec))
    if token:
        parameters += _count_parameters(TOKEN_FEATURE_SIZE, token_hidden, 0)
    if parameters > MAX_PARAMETERS:
        raise _invalid(folder, f"the network would have {parameters:,} parameters, over the {MAX_PARAMETERS:,} allowed")
    if "parameters" in network and not _same_ints(network["parameters"], parameters):
        raise _invalid(
            folder, f"network.parameters is {show_value(network['parameters'])} but its layers have {parameters}"
        )
    _validate_provenance(config, folder)
    _validate_decisions(config, folder, token)


def _validate_header(config: Any, folder: Path) -> str:
    """The format, its version, the spec version and the top-level keys; returns the policy kind."""
    path = folder / CONFIG
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise PolicyError(f"{path} is not an rlprune policy checkpoint")
    version = config.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise PolicyError(
            f"{folder} has checkpoint format version {show_value(version)}; this rlprune reads version {FORMAT_VERSION}"
        )
    spec_version = config.get("spec_version")
    if not _is_int(spec_version) or spec_version not in SPEC_VERSIONS:
        known = ", ".join(f"{v} ({kind}-level policies)" for v, kind in SPEC_VERSIONS.items())
        raise PolicyError(
            f"{folder} was trained on observation/action spec {show_value(spec_version)}; this rlprune "
            f"reads specs {known}: retrain or use a matching rlprune version"
        )
    kind = SPEC_VERSIONS[spec_version]
    if "kind" in config and config["kind"] != kind:
        problem = f"kind is {show_value(config['kind'])} but spec_version {spec_version} is a {kind}-level policy"
        raise _invalid(folder, problem)
    unknown = sorted(set(config) - TOP_KEYS[kind])
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        known = ", ".join(sorted(TOP_KEYS[kind]))
        raise _invalid(folder, f"unknown key {show_value(unknown[0])}{more}; a {kind}-level policy's keys are {known}")
    return kind


def _validate_network(
    config: dict[str, Any], folder: Path, token: bool
) -> tuple[dict[str, Any], list[int], list[int] | None]:
    """A layer- or token-level network's keys, input sizes and widths: ``(network, hidden, token_hidden)``."""
    kind = "token" if token else "layer"
    network = config.get("network")
    if not isinstance(network, dict):
        raise _invalid(folder, f"network is {show_value(network)}, not an object with observation_size and hidden")
    allowed = NETWORK_KEYS | (TOKEN_NETWORK_KEYS if token else set())
    unknown = sorted(set(network) - allowed)
    if unknown:
        raise _invalid(folder, f"network has key(s) {unknown} that a {kind}-level policy does not have")
    _check_size(folder, "network.observation_size", network.get("observation_size"), OBSERVATION_SIZE, "observation")
    hidden = _check_widths(folder, "network.hidden", network.get("hidden"))
    token_hidden = None
    if token:
        _check_size(
            folder, "network.token_feature_size", network.get("token_feature_size"), TOKEN_FEATURE_SIZE, "token feature"
        )
        token_hidden = _check_widths(folder, "network.token_hidden", network.get("token_hidden"))
    return network, hidden, token_hidden


def _validate_action_spec(config: dict[str, Any], folder: Path, token: bool) -> list[int]:
    """The ops, shares and scorers a policy chooses from; returns the number of choices of each."""
    spec = config.get("action_spec")
    if not isinstance(spec, dict):
        raise _invalid(folder, f"action_spec is {show_value(spec)}, not an object with ops, shares and scorers")
    unknown = sorted(set(spec) - {"ops", "shares", "scorers"})
    if unknown:
        raise _invalid(folder, f"action_spec has unknown key(s) {unknown}")
    ops = _check_names(folder, "action_spec.ops", spec.get("ops"), OPS)
    if "keep" not in ops:
        raise _invalid(folder, f"action_spec.ops is {show_value(ops)}: it must include 'keep'")
    shares = _check_list(folder, "action_spec.shares", spec.get("shares"))
    for i, share in enumerate(shares):
        if not _is_number(share) or not 0 < share <= 1:
            raise _invalid(folder, f"action_spec.shares[{i}] is {show_value(share)}; shares are numbers in (0, 1]")
    if len(set(shares)) != len(shares):
        raise _invalid(folder, f"action_spec.shares {show_value(shares)} repeats a share")
    scorers = _check_list(folder, "action_spec.scorers", spec.get("scorers"))
    known = "learned" if token else ", ".join(sorted(set(SCORERS) - {"learned"})) + " (span options: pool, unit)"
    for i, scorer in enumerate(scorers):
        try:
            base = check_scorer_choice(scorer).scorer if isinstance(scorer, str) else None
        except ValueError:
            base = None
        if base is None or (base == "learned") != token:
            raise _invalid(folder, f"action_spec.scorers[{i}] is {show_value(scorer)}; known: {known}")
    if token and scorers != ["learned"]:
        raise _invalid(folder, "action_spec.scorers of a token-level policy must be ['learned']")
    if len(set(scorers)) != len(scorers):
        raise _invalid(folder, f"action_spec.scorers {show_value(scorers)} repeats an entry")
    return [len(ops), len(shares), len(scorers)]


def _validate_decisions(config: dict[str, Any], folder: Path, token: bool) -> None:
    """The decision layers, the default budget and the recorded observation and token feature fields."""
    layers = _check_list(folder, "decision_layers", config.get("decision_layers"))
    for i, layer in enumerate(layers):  # whether the model has these layers is checked where the policy acts
        if not _is_int(layer) or not 0 <= layer < MAX_LAYER:
            raise _invalid(
                folder, f"decision_layers[{i}] is {show_value(layer)}; layers are integers in 0..{MAX_LAYER - 1}"
            )
    if any(a >= b for a, b in pairwise(layers)):
        raise _invalid(folder, f"decision_layers {show_value(layers)} are not distinct and in increasing order")

    budget = config.get("default_budget")
    if budget is not None and (not _is_number(budget) or not 0 < budget <= 1):
        raise _invalid(folder, f"default_budget is {show_value(budget)}; budgets lie in (0, 1]")
    _check_fields(folder, config, "observation_fields", OBSERVATION_FIELDS)
    if token:
        _check_fields(folder, config, "token_feature_fields", TOKEN_FEATURE_FIELDS)
    elif config.get("token_feature_fields") is not None:
        raise _invalid(folder, "token_feature_fields is set but spec_version is that of a layer-level policy")


def _validate_span_network(config: dict[str, Any], folder: Path) -> None:
    """A span head's shape: every field typed and bounded, the parameter count worked out before allocation."""
    network = config.get("network")
    optional = SPAN_BUDGET_KEYS | SPAN_UNIT_KEYS | {"later"}
    if not isinstance(network, dict) or set(network) - optional != SPAN_NETWORK_KEYS:
        raise _invalid(folder, f"network of a span head must have exactly the keys {sorted(SPAN_NETWORK_KEYS)}")
    if not _is_int(network["hidden_size"]) or not 1 <= network["hidden_size"] <= MAX_HIDDEN_SIZE:
        raise _invalid(
            folder,
            f"network.hidden_size is {show_value(network['hidden_size'])}; it is an integer in 1..{MAX_HIDDEN_SIZE}",
        )
    budget = _validate_budget_head(network, folder)
    _validate_unit(network, folder)
    parameters = _head_parameters(network, network["hidden_size"], folder, "network") + budget
    layers = [network["decision_layer"]]
    if "later" in network:
        later = network["later"]
        if not isinstance(later, dict) or set(later) != SPAN_LATER_KEYS:
            raise _invalid(folder, f"network.later must have exactly the keys {sorted(SPAN_LATER_KEYS)}")
        parameters += _head_parameters(later, network["hidden_size"], folder, "network.later")
        if later["decision_layer"] <= network["decision_layer"]:
            raise _invalid(folder, "network.later.decision_layer must come after network.decision_layer")
        if not _is_number(later["min_keep"]) or not 0 < later["min_keep"] < 1:
            raise _invalid(
                folder, f"network.later.min_keep is {show_value(later['min_keep'])}; it is a share in (0, 1)"
            )
        layers.append(later["decision_layer"])
    if network["op"] not in ("prune", "merge"):
        raise _invalid(folder, f"network.op is {show_value(network['op'])}; a span head prunes or merges")
    if not _is_number(network["default_budget"]) or not 0 < network["default_budget"] <= 1:
        raise _invalid(
            folder, f"network.default_budget is {show_value(network['default_budget'])}; budgets lie in (0, 1]"
        )
    if parameters > MAX_PARAMETERS:
        raise _invalid(folder, f"the network would have {parameters:,} parameters, over the {MAX_PARAMETERS:,} allowed")
    if not _same_ints(network["parameters"], parameters):
        raise _invalid(
            folder, f"network.parameters is {show_value(network['parameters'])} but its layers have {parameters}"
        )
    if not _same_ints(config.get("decision_layers"), layers):
        raise _invalid(folder, f"decision_layers must be {layers}, the span head's layers")


def _head_parameters(shape: dict[str, Any], hidden: int, folder: Path, where: str) -> int:
    """The parameters of one head of ``shape`` (decision layer, rank, channels, kernel), each checked."""
    bounds = {"decision_layer": MAX_LAYER - 1, "rank": MAX_WIDTH, "channels": MAX_WIDTH, "kernel": MAX_KERNEL}
    for key, high in bounds.items():
        low = 0 if key == "decision_layer" else 1
        if not _is_int(shape[key]) or not low <= shape[key] <= high:
            raise _invalid(folder, f"{where}.{key} is {show_value(shape[key])}; it is an integer in {low}..{high}")
    if shape["kernel"] % 2 == 0:
        raise _invalid(folder, f"{where}.kernel is {shape['kernel']}; the mixer's kernel is odd")
    r, c, k = (shape[key] for key in ("rank", "channels", "kernel"))
    return 2 * hidden * r + 4 * hidden + 4 + MIXER_INPUTS * c * k + c + c * k + 1


def _validate_unit(network: dict[str, Any], folder: Path) -> None:
    """A span head's optional selection unit; ``unit="sentence"`` lists its tokenizer's sentence-end ids."""
    unit = network.get("unit", "token")
    try:
        unit = parse_unit(unit) if isinstance(unit, (str, int)) and not isinstance(unit, bool) else None
    except InvalidActionError:
        unit = None
    if unit is None:
        shown = show_value(network.get("unit"))
        raise _invalid(folder, f"network.unit is {shown}; use token, sentence or a chunk size")
    if unit != "sentence":
        if "sentence_ends" in network:
            raise _invalid(folder, "network.sentence_ends is set but network.unit is not sentence")
        return
    ends = network.get("sentence_ends")
    if (
        not isinstance(ends, list)
        or not 0 < len(ends) <= MAX_SENTENCE_ENDS
        or not all(_is_int(i) and 0 <= i < MAX_TOKEN_ID for i in ends)
    ):
        raise _invalid(
            folder, "network.sentence_ends must list the tokenizer's sentence-end token ids (unit = sentence)"
        )


def _validate_budget_head(network: dict[str, Any], folder: Path) -> int:
    """A span head's optional budget head: an increasing grid of ratios in (0, 1] and MLP widths; its parameters."""
    present = SPAN_BUDGET_KEYS & set(network)
    if not present:
        return 0
    if present != SPAN_BUDGET_KEYS:
        raise _invalid(folder, f"a span head's budget head needs both {sorted(SPAN_BUDGET_KEYS)}")
    grid = _check_list(folder, "network.budget_grid", network["budget_grid"])
    if (
        len(grid) > MAX_GRID
        or not all(_is_number(g) and 0 < g <= 1 for g in grid)
        or any(a >= b for a, b in pairwise(grid))
    ):
        raise _invalid(
            folder,
            f"network.budget_grid is {show_value(grid)}; it is at most {MAX_GRID} increasing FLOPs ratios in (0, 1]",
        )
    hidden = _check_widths(folder, "network.budget_hidden", network["budget_hidden"])
    widths = [len(BUDGET_FEATURES), *hidden, len(grid)]
    return sum(a * b + b for a, b in pairwise(widths))


def _validate_provenance(config: dict[str, Any], folder: Path) -> None:
    """The model fingerprint, reward preset and training summary every checkpoint may carry."""
    fingerprint = config.get("model")
    if fingerprint is not None:
        if (
            not isinstance(fingerprint, dict)
            or any(
                not isinstance(fingerprint.get(key), expected) or isinstance(fingerprint.get(key), bool)
                for key, expected in FINGERPRINT_TYPES.items()
            )
            or fingerprint["layers"] < 1
        ):
            raise _invalid(
                folder,
                f"model is {show_value(fingerprint)}, not a model fingerprint ({', '.join(FINGERPRINT_TYPES)}), so the "
                "checkpoint does not say which model it is for",
            )
    if not isinstance(config.get("reward_preset"), (str, type(None))):
        raise _invalid(folder, f"reward_preset is {show_value(config['reward_preset'])}, not a name")
    if not isinstance(config.get("training", {}), dict):
        raise _invalid(folder, f"training is {show_value(config['training'])}, not an object")


def _invalid(folder: Path, problem: str) -> PolicyError:
    return PolicyError(
        f"{folder / CONFIG} is not a valid policy config: {problem}. The checkpoint is damaged or was edited "
        "by hand: export or train the policy again"
    )


def _incompatible(folder: Path, problem: str) -> PolicyError:
    return PolicyError(
        f"{folder / CONFIG}: {problem}, so the policy was trained for another rlprune version; retrain it or use "
        "the rlprune version it was trained with"
    )


def show_value(value: Any) -> str:
    """``value`` for a message, cut short (a hostile config may hold huge values)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _same_ints(value: Any, expected: int | list[int]) -> bool:
    """``value == expected`` with every number an int (JSON's ``3.0`` and ``true`` compare equal to ints)."""
    numbers = value if isinstance(value, list) else [value]
    return all(_is_int(n) for n in numbers) and value == expected


def _check_list(folder: Path, name: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _invalid(folder, f"{name} is {show_value(value)}, not a non-empty list")
    return value


def _check_size(folder: Path, name: str, value: Any, expected: int, what: str) -> None:
    if not _is_int(value):
        raise _invalid(folder, f"{name} is {show_value(value)}, not an integer")
    if value != expected:
        raise _incompatible(folder, f"{name} is {value}, which does not match this release's {expected} {what} fields")


def _check_widths(folder: Path, name: str, value: Any) -> list[int]:
    widths = _check_list(folder, name, value)
    if len(widths) > MAX_DEPTH:
        raise _invalid(folder, f"{name} has {len(widths)} layers; at most {MAX_DEPTH} are allowed")
    for i, width in enumerate(widths):
        if not _is_int(width) or not 1 <= width <= MAX_WIDTH:
            raise _invalid(folder, f"{name}[{i}] is {show_value(width)}; layer widths are integers in 1..{MAX_WIDTH}")
    return widths


def _check_names(folder: Path, name: str, value: Any, known: Sequence[str]) -> list[str]:
    names = _check_list(folder, name, value)
    for i, entry in enumerate(names):
        if not isinstance(entry, str) or entry not in known:
            raise _invalid(folder, f"{name}[{i}] is {show_value(entry)}; known: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise _invalid(folder, f"{name} {show_value(names)} repeats an entry")
    return names


def _check_fields(folder: Path, config: dict[str, Any], key: str, fields: Sequence[tuple[str, str]]) -> None:
    """A recorded list of field names, when present, must be this release's."""
    value = config.get(key)
    if value is not None and value != [name for name, _ in fields]:
        raise _incompatible(
            folder, f"{key} differ from this release's (the policy reads other inputs than it computes)"
        )


def _count_parameters(inputs: int, hidden: Sequence[int], choices: int) -> int:
    """Parameters of a tanh MLP over ``hidden`` and its heads: ``choices`` logits and a value (or one score)."""
    widths = [inputs, *hidden]
    trunk = sum(a * b + b for a, b in pairwise(widths))
    heads = widths[-1] * choices + choices + widths[-1] + 1
    return trunk + heads
