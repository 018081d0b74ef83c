"""What every policy checkpoint's ``config.json`` shares, and the checks every kind's schema uses.

The file names, format and bounds; the header (format, its version) and provenance (model
fingerprint, reward preset, training summary) checks; and small field checks that each raise one
:class:`PolicyError` naming the file. Each kind's own fields are checked by its schema
(:mod:`rlprune.policies.schema_layer`, :mod:`rlprune.policies.schema_span`), reached through the
registry (:mod:`rlprune.policies.kinds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from rlprune.errors import PolicyError

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
COMMON_KEYS = frozenset(
    {"format", "format_version", "spec_version", "kind", "network", "decision_layers"}
    | {"model", "reward_preset", "training", "created"}
)
"""The top-level keys every kind's config may have; a kind's schema adds its own."""
WEIGHTS_HEADER_BYTES = 1 << 20
"""Room for the safetensors header beside the tensors (a policy's is a few hundred bytes)."""
FINGERPRINT_TYPES = {"architecture": str, "layers": int, "hidden_size": int, "vocab_size": int, "weights_sha256": str}


def validate_format(config: Any, folder: Path) -> None:
    """The format and its version (the same for every kind)."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise PolicyError(f"{folder / CONFIG} is not an rlprune policy checkpoint")
    version = config.get("format_version")
    if not is_int(version) or version != FORMAT_VERSION:
        raise PolicyError(
            f"{folder} has checkpoint format version {show_value(version)}; this rlprune reads version {FORMAT_VERSION}"
        )


def validate_keys(config: dict[str, Any], folder: Path, kind: str, allowed: frozenset[str]) -> None:
    """No top-level key a ``kind`` config does not have."""
    unknown = sorted(set(config) - allowed)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        known = ", ".join(sorted(allowed))
        raise invalid(folder, f"unknown key {show_value(unknown[0])}{more}; a {kind}-level policy's keys are {known}")


def validate_provenance(config: dict[str, Any], folder: Path) -> None:
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
            raise invalid(
                folder,
                f"model is {show_value(fingerprint)}, not a model fingerprint ({', '.join(FINGERPRINT_TYPES)}), so the "
                "checkpoint does not say which model it is for",
            )
    if not isinstance(config.get("reward_preset"), (str, type(None))):
        raise invalid(folder, f"reward_preset is {show_value(config['reward_preset'])}, not a name")
    if not isinstance(config.get("training", {}), dict):
        raise invalid(folder, f"training is {show_value(config['training'])}, not an object")


def invalid(folder: Path, problem: str) -> PolicyError:
    return PolicyError(
        f"{folder / CONFIG} is not a valid policy config: {problem}. The checkpoint is damaged or was edited "
        "by hand: export or train the policy again"
    )


def incompatible(folder: Path, problem: str) -> PolicyError:
    return PolicyError(
        f"{folder / CONFIG}: {problem}, so the policy was trained for another rlprune version; retrain it or use "
        "the rlprune version it was trained with"
    )


def show_value(value: Any) -> str:
    """``value`` for a message, cut short (a hostile config may hold huge values)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def same_ints(value: Any, expected: int | list[int]) -> bool:
    """``value == expected`` with every number an int (JSON's ``3.0`` and ``true`` compare equal to ints)."""
    numbers = value if isinstance(value, list) else [value]
    return all(is_int(n) for n in numbers) and value == expected


def check_list(folder: Path, name: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise invalid(folder, f"{name} is {show_value(value)}, not a non-empty list")
    return value


def check_size(folder: Path, name: str, value: Any, expected: int, what: str) -> None:
    if not is_int(value):
        raise invalid(folder, f"{name} is {show_value(value)}, not an integer")
    if value != expected:
        raise incompatible(folder, f"{name} is {value}, which does not match this release's {expected} {what} fields")


def check_widths(folder: Path, name: str, value: Any) -> list[int]:
    widths = check_list(folder, name, value)
    if len(widths) > MAX_DEPTH:
        raise invalid(folder, f"{name} has {len(widths)} layers; at most {MAX_DEPTH} are allowed")
    for i, width in enumerate(widths):
        if not is_int(width) or not 1 <= width <= MAX_WIDTH:
            raise invalid(folder, f"{name}[{i}] is {show_value(width)}; layer widths are integers in 1..{MAX_WIDTH}")
    return widths


def check_names(folder: Path, name: str, value: Any, known: Sequence[str]) -> list[str]:
    names = check_list(folder, name, value)
    for i, entry in enumerate(names):
        if not isinstance(entry, str) or entry not in known:
            raise invalid(folder, f"{name}[{i}] is {show_value(entry)}; known: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise invalid(folder, f"{name} {show_value(names)} repeats an entry")
    return names


def check_fields(folder: Path, config: dict[str, Any], key: str, fields: Sequence[tuple[str, str]]) -> None:
    """A recorded list of field names, when present, must be this release's."""
    value = config.get(key)
    if value is not None and value != [name for name, _ in fields]:
        raise incompatible(folder, f"{key} differ from this release's (the policy reads other inputs than it computes)")


def count_parameters(inputs: int, hidden: Sequence[int], choices: int) -> int:
    """Parameters of a tanh MLP over ``hidden`` and its heads: ``choices`` logits and a value (or one score)."""
    widths = [inputs, *hidden]
    trunk = sum(a * b + b for a, b in pairwise(widths))
    heads = widths[-1] * choices + choices + widths[-1] + 1
    return trunk + heads


def check_decision_layers(config: dict[str, Any], folder: Path) -> list[int]:
    """``decision_layers``: distinct increasing layer indices (whether the model has them is checked where
    the policy acts)."""
    layers = check_list(folder, "decision_layers", config.get("decision_layers"))
    for i, layer in enumerate(layers):
        if not is_int(layer) or not 0 <= layer < MAX_LAYER:
            raise invalid(
                folder, f"decision_layers[{i}] is {show_value(layer)}; layers are integers in 0..{MAX_LAYER - 1}"
            )
    if any(a >= b for a, b in pairwise(layers)):
        raise invalid(folder, f"decision_layers {show_value(layers)} are not distinct and in increasing order")
    return layers
