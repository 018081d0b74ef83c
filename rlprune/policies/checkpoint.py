"""Policy checkpoints: a folder with ``policy.safetensors`` and ``config.json``.

Nothing is ever unpickled: the weights are safetensors, everything else is JSON. Each file is
written to a temporary name and moved into place, so a checkpoint is never half-written.
Loading trusts nothing: the config is checked field by field (types, ranges, this release's
observation and action spaces, a bound on the network's size) before any tensor is allocated,
and the weights are checked for names, shapes, dtypes and finite values before they are used.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import PreTrainedModel

from rlprune.errors import RLPruneError
from rlprune.features import (
    OBSERVATION_FIELDS,
    OBSERVATION_SIZE,
    SPEC_VERSION,
    TOKEN_FEATURE_FIELDS,
    TOKEN_FEATURE_SIZE,
    ActionSpec,
)
from rlprune.io import JSONError, atomic_write, atomic_write_text, check_regular_file, parse_json, read_bytes
from rlprune.models import model_fingerprint
from rlprune.policies.network import ReductionPolicy
from rlprune.policies.span_head import MIXER_INPUTS, SPAN_SPEC_VERSION, SpanHeadPolicy
from rlprune.policies.token_network import TOKEN_SPEC_VERSION, TokenReductionPolicy
from rlprune.reduction import OPS, SCORERS

SPEC_VERSIONS = {SPEC_VERSION: "layer", TOKEN_SPEC_VERSION: "token", SPAN_SPEC_VERSION: "span"}
"""Spec versions this release reads, and the policy kind each one is."""

FORMAT = "rlprune-policy"
FORMAT_VERSION = 1
WEIGHTS, CONFIG = "policy.safetensors", "config.json"

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
MAX_HIDDEN_SIZE, MAX_KERNEL = 65536, 255
"""Bounds on the model width a span head reads and on its mixer's kernel."""
TOKEN_NETWORK_KEYS = {"token_feature_size", "token_hidden"}
COMMON_KEYS = {"format", "format_version", "spec_version", "kind", "network", "decision_layers"}
COMMON_KEYS |= {"model", "reward_preset", "training", "created"}
NETWORK_POLICY_KEYS = COMMON_KEYS | {"action_spec", "observation_fields", "token_feature_fields", "default_budget"}
TOP_KEYS = {"span": COMMON_KEYS, "layer": NETWORK_POLICY_KEYS, "token": NETWORK_POLICY_KEYS}
"""The top-level keys a config of each policy kind may have (a span head keeps its default budget in network)."""
WEIGHTS_HEADER_BYTES = 1 << 20
"""Room for the safetensors header beside the tensors (a policy's is a few hundred bytes)."""
FINGERPRINT_TYPES = {"architecture": str, "layers": int, "hidden_size": int, "vocab_size": int, "weights_sha256": str}


class PolicyError(RLPruneError):
    """A policy checkpoint is missing, corrupt, from another version, or for another model."""


def save_policy(
    policy: ReductionPolicy,
    folder: str | Path,
    *,
    model: PreTrainedModel | None = None,
    reward_preset: str | None = None,
    training: dict[str, Any] | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> Path:
    """Write ``policy`` to ``folder`` (created if needed) with what it was trained for.

    ``fingerprint`` is the model's :func:`~rlprune.models.model_fingerprint`, already computed
    (training passes it to every checkpoint instead of hashing the weights each time).

    The budget the policy runs at when none is given is recorded too: its ``default_budget``, or
    else the median of the budgets in ``training["validation"]["per_budget"]`` (the ones it was
    validated at), if any.

    Without ``model`` the checkpoint records no model fingerprint: it loads only without a model
    (training's own checkpoints); give ``model`` for a checkpoint meant to be used.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(policy, SpanHeadPolicy):
        config = _span_config(policy) | {
            "model": model_fingerprint(model) if model is not None else fingerprint,
            "reward_preset": reward_preset,
            "training": training or {},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return _write(policy, folder, config)
    token_level = isinstance(policy, TokenReductionPolicy)
    network = {
        "observation_size": policy.observation_size,
        "hidden": list(policy.hidden),
        "nvec": list(policy.nvec),
        "parameters": policy.num_parameters(),
    }
    if token_level:
        network |= {"token_feature_size": policy.token_feature_size, "token_hidden": list(policy.token_hidden)}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec_version": TOKEN_SPEC_VERSION if token_level else SPEC_VERSION,
        "kind": "token" if token_level else "layer",
        "network": network,
        "decision_layers": list(policy.layers),
        "action_spec": policy.action_spec.to_dict(),
        "observation_fields": [name for name, _ in OBSERVATION_FIELDS],
        "token_feature_fields": [name for name, _ in TOKEN_FEATURE_FIELDS] if token_level else None,
        "default_budget": policy.default_budget or _validated_budget(training or {}),
        "model": model_fingerprint(model) if model is not None else fingerprint,
        "reward_preset": reward_preset,
        "training": training or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return _write(policy, folder, config)


def _span_config(policy: SpanHeadPolicy) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec_version": SPAN_SPEC_VERSION,
        "kind": "span",
        "network": policy.config() | {"parameters": policy.num_parameters()},
        "decision_layers": list(policy.layers),
    }


def _write(policy: torch.nn.Module, folder: Path, config: dict[str, Any]) -> Path:
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in policy.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda path: save_file(state, path, metadata={"format": FORMAT}))
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
    return folder


def load_policy(
    folder: str | Path, model: PreTrainedModel | None = None
) -> ReductionPolicy | TokenReductionPolicy | SpanHeadPolicy:
    """Read a checkpoint; with ``model``, refuse one trained for a different model or for no recorded model.

    Without ``model`` (resuming training's own checkpoints) a checkpoint without a fingerprint loads.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PolicyError(f"no policy checkpoint at {folder} (expected a folder with {CONFIG} and {WEIGHTS})")
    config = read_config(folder)
    if model is not None:
        if config.get("model") is None:
            raise PolicyError(
                f"the policy in {folder} does not say which model it is for (its {CONFIG} has no model "
                "fingerprint), so it cannot be checked against this model. Export it with `rlprune export RUN "
                "--out FOLDER` or save it with save_policy(..., model=model), using the model it was trained for"
            )
        check_model(config["model"], model_fingerprint(model), folder)
    policy = build_policy(config, folder)
    policy.load_state_dict(read_weights(folder / WEIGHTS, policy.state_dict()), strict=True)
    policy.default_budget = default_budget(config)
    return policy.eval()


def default_budget(config: dict[str, Any]) -> float | None:
    """The budget a validated policy ``config`` runs at when none is given, or ``None`` if it records none.

    A span head's ``network.default_budget``; else the config's ``default_budget``; else (checkpoints
    written before it was recorded) the median of the budgets it was validated at,
    ``training.validation.per_budget``.
    """
    if SPEC_VERSIONS[config["spec_version"]] == "span":
        return float(config["network"]["default_budget"])
    if config.get("default_budget") is not None:
        return float(config["default_budget"])
    return _validated_budget(config.get("training", {}))


def _validated_budget(training: dict[str, Any]) -> float | None:
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


def read_config(folder: Path) -> dict[str, Any]:
    """``folder``'s config, checked by :func:`validate_config`; a :class:`PolicyError` if it is not valid."""
    path = folder / CONFIG
    data = _checked_file(path, lambda: read_bytes(path, "policy config", MAX_CONFIG_BYTES))
    try:
        config = parse_json(data)
    except JSONError as error:
        raise PolicyError(f"{path} is not valid JSON ({error}); the checkpoint is corrupt") from None
    validate_config(config, folder)
    return config


def _checked_file(path: Path, check: Any) -> Any:
    """``check()``, a read or check of one of a checkpoint's files, with its refusal as a :class:`PolicyError`."""
    if not os.path.lexists(path):
        raise PolicyError(f"{path} is missing; the checkpoint is incomplete")
    try:
        return check()
    except RLPruneError as error:  # not a regular file, too big, unreadable
        raise PolicyError(f"{error}; the checkpoint is damaged: export the policy again") from None


def validate_config(config: Any, folder: Path) -> None:
    """Raise :class:`PolicyError` unless ``config`` describes a policy this release can run as recorded.

    Every field the network is built from is checked for type and range, against this release's
    observation and action spaces, and against size bounds: nothing is allocated for a config that
    fails, and no value is silently coerced, ignored or mixed with another policy kind's.
    """
    path = folder / CONFIG
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise PolicyError(f"{path} is not an rlprune policy checkpoint")
    version = config.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise PolicyError(
            f"{folder} has checkpoint format version {_show(version)}; this rlprune reads version {FORMAT_VERSION}"
        )
    spec_version = config.get("spec_version")
    if not _is_int(spec_version) or spec_version not in SPEC_VERSIONS:
        known = ", ".join(f"{v} ({kind}-level policies)" for v, kind in SPEC_VERSIONS.items())
        raise PolicyError(
            f"{folder} was trained on observation/action spec {_show(spec_version)}; this rlprune "
            f"reads specs {known}: retrain or use a matching rlprune version"
        )
    kind = SPEC_VERSIONS[spec_version]
    token = kind == "token"
    if "kind" in config and config["kind"] != kind:
        problem = f"kind is {_show(config['kind'])} but spec_version {spec_version} is a {kind}-level policy"
        raise _invalid(folder, problem)
    unknown = sorted(set(config) - TOP_KEYS[kind])
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        known = ", ".join(sorted(TOP_KEYS[kind]))
        raise _invalid(folder, f"unknown key {_show(unknown[0])}{more}; a {kind}-level policy's keys are {known}")
    if kind == "span":
        _validate_span_network(config, folder)
        _validate_provenance(config, folder)
        return

    network = config.get("network")
    if not isinstance(network, dict):
        raise _invalid(folder, f"network is {_show(network)}, not an object with observation_size and hidden")
    allowed = NETWORK_KEYS | (TOKEN_NETWORK_KEYS if token else set())
    unknown = sorted(set(network) - allowed)
    if unknown:
        raise _invalid(folder, f"network has key(s) {unknown} that a {kind}-level policy does not have")
    _check_size(folder, "network.observation_size", network.get("observation_size"), OBSERVATION_SIZE, "observation")
    hidden = _check_widths(folder, "network.hidden", network.get("hidden"))
    if token:
        _check_size(
            folder, "network.token_feature_size", network.get("token_feature_size"), TOKEN_FEATURE_SIZE, "token feature"
        )
        token_hidden = _check_widths(folder, "network.token_hidden", network.get("token_hidden"))

    spec = config.get("action_spec")
    if not isinstance(spec, dict):
        raise _invalid(folder, f"action_spec is {_show(spec)}, not an object with ops, shares and scorers")
    unknown = sorted(set(spec) - {"ops", "shares", "scorers"})
    if unknown:
        raise _invalid(folder, f"action_spec has unknown key(s) {unknown}")
    ops = _check_names(folder, "action_spec.ops", spec.get("ops"), OPS)
    if "keep" not in ops:
        raise _invalid(folder, f"action_spec.ops is {_show(ops)}: it must include 'keep'")
    shares = _check_list(folder, "action_spec.shares", spec.get("shares"))
    for i, share in enumerate(shares):
        if not _is_number(share) or not 0 < share <= 1:
            raise _invalid(folder, f"action_spec.shares[{i}] is {_show(share)}; shares are numbers in (0, 1]")
    if len(set(shares)) != len(shares):
        raise _invalid(folder, f"action_spec.shares {_show(shares)} repeats a share")
    scorer_names = ("learned",) if token else tuple(sorted(set(SCORERS) - {"learned"}))
    scorers = _check_names(folder, "action_spec.scorers", spec.get("scorers"), scorer_names)
    if token and scorers != ["learned"]:
        raise _invalid(folder, "action_spec.scorers of a token-level policy must be ['learned']")
    nvec = [len(ops), len(shares), len(scorers)]
    if "nvec" in network and not _same_ints(network["nvec"], nvec):
        raise _invalid(folder, f"network.nvec is {_show(network['nvec'])} but the action_spec has {nvec} choices")

    parameters = _count_parameters(OBSERVATION_SIZE, hidden, sum(nvec))
    if token:
        parameters += _count_parameters(TOKEN_FEATURE_SIZE, token_hidden, 0)
    if parameters > MAX_PARAMETERS:
        raise _invalid(folder, f"the network would have {parameters:,} parameters, over the {MAX_PARAMETERS:,} allowed")
    if "parameters" in network and not _same_ints(network["parameters"], parameters):
        raise _invalid(folder, f"network.parameters is {_show(network['parameters'])} but its layers have {parameters}")

    _validate_provenance(config, folder)
    layers = _check_list(folder, "decision_layers", config.get("decision_layers"))
    for i, layer in enumerate(layers):  # whether the model has these layers is checked where the policy acts
        if not _is_int(layer) or not 0 <= layer < MAX_LAYER:
            raise _invalid(folder, f"decision_layers[{i}] is {_show(layer)}; layers are integers in 0..{MAX_LAYER - 1}")
    if any(a >= b for a, b in pairwise(layers)):
        raise _invalid(folder, f"decision_layers {_show(layers)} are not distinct and in increasing order")

    budget = config.get("default_budget")
    if budget is not None and (not _is_number(budget) or not 0 < budget <= 1):
        raise _invalid(folder, f"default_budget is {_show(budget)}; budgets lie in (0, 1]")
    _check_fields(folder, config, "observation_fields", OBSERVATION_FIELDS)
    if token:
        _check_fields(folder, config, "token_feature_fields", TOKEN_FEATURE_FIELDS)
    elif config.get("token_feature_fields") is not None:
        raise _invalid(folder, "token_feature_fields is set but spec_version is that of a layer-level policy")


def _validate_span_network(config: dict[str, Any], folder: Path) -> None:
    """A span head's shape: every field typed and bounded, the parameter count worked out before allocation."""
    network = config.get("network")
    if not isinstance(network, dict) or set(network) != SPAN_NETWORK_KEYS:
        raise _invalid(folder, f"network of a span head must have exactly the keys {sorted(SPAN_NETWORK_KEYS)}")
    bounds = {"hidden_size": MAX_HIDDEN_SIZE, "decision_layer": MAX_LAYER - 1, "rank": MAX_WIDTH, "channels": MAX_WIDTH}
    for key, high in (bounds | {"kernel": MAX_KERNEL}).items():
        low = 0 if key == "decision_layer" else 1
        if not _is_int(network[key]) or not low <= network[key] <= high:
            raise _invalid(folder, f"network.{key} is {_show(network[key])}; it is an integer in {low}..{high}")
    if network["kernel"] % 2 == 0:
        raise _invalid(folder, f"network.kernel is {network['kernel']}; the mixer's kernel is odd")
    if network["op"] not in ("prune", "merge"):
        raise _invalid(folder, f"network.op is {_show(network['op'])}; a span head prunes or merges")
    if not _is_number(network["default_budget"]) or not 0 < network["default_budget"] <= 1:
        raise _invalid(folder, f"network.default_budget is {_show(network['default_budget'])}; budgets lie in (0, 1]")
    d, r, c, k = (network[key] for key in ("hidden_size", "rank", "channels", "kernel"))
    parameters = 2 * d * r + 4 * d + 4 + MIXER_INPUTS * c * k + c + c * k + 1
    if parameters > MAX_PARAMETERS:
        raise _invalid(folder, f"the network would have {parameters:,} parameters, over the {MAX_PARAMETERS:,} allowed")
    if not _same_ints(network["parameters"], parameters):
        raise _invalid(folder, f"network.parameters is {_show(network['parameters'])} but its layers have {parameters}")
    if not _same_ints(config.get("decision_layers"), [network["decision_layer"]]):
        raise _invalid(folder, f"decision_layers must be [{network['decision_layer']}], the span head's one layer")


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
                f"model is {_show(fingerprint)}, not a model fingerprint ({', '.join(FINGERPRINT_TYPES)}), so the "
                "checkpoint does not say which model it is for",
            )
    if not isinstance(config.get("reward_preset"), (str, type(None))):
        raise _invalid(folder, f"reward_preset is {_show(config['reward_preset'])}, not a name")
    if not isinstance(config.get("training", {}), dict):
        raise _invalid(folder, f"training is {_show(config['training'])}, not an object")


def build_policy(config: dict[str, Any], folder: Path) -> ReductionPolicy | TokenReductionPolicy | SpanHeadPolicy:
    """A fresh network of the shape a validated ``config`` describes."""
    if SPEC_VERSIONS[config["spec_version"]] == "span":
        network = {k: v for k, v in config["network"].items() if k != "parameters"}
        return SpanHeadPolicy(**network)
    network, spec = config["network"], config["action_spec"]
    kwargs = {
        "observation_size": network["observation_size"],
        "hidden": network["hidden"],
        "decision_layers": config["decision_layers"],
        "action_spec": ActionSpec(tuple(spec["ops"]), tuple(float(s) for s in spec["shares"]), tuple(spec["scorers"])),
    }
    try:
        if SPEC_VERSIONS[config["spec_version"]] == "token":
            kwargs |= {"token_feature_size": network["token_feature_size"], "token_hidden": network["token_hidden"]}
            return TokenReductionPolicy(**kwargs)
        return ReductionPolicy(**kwargs)
    except (KeyError, TypeError, ValueError) as error:  # validate_config should have caught it
        raise PolicyError(f"{folder / CONFIG} describes no valid network ({error})") from None


def read_weights(path: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors in ``path``, refused unless names, shapes and float dtypes match ``expected`` and all are finite.

    The file must be a regular file no bigger than the expected tensors in float64 plus a header;
    the safetensors header is checked before any tensor is read.
    """
    limit = 8 * sum(tensor.numel() for tensor in expected.values()) + WEIGHTS_HEADER_BYTES
    _checked_file(path, lambda: check_regular_file(path, "policy weights", limit))
    try:
        with safe_open(str(path), framework="pt") as file:
            names = set(file.keys())
            missing, extra = sorted(expected.keys() - names), sorted(names - expected.keys())
            if missing or extra:
                parts = [f"missing tensors {_show(missing)}"] * bool(missing) + [
                    f"unexpected tensors {_show(extra)}"
                ] * bool(extra)
                raise PolicyError(
                    f"{path} does not match the network in {CONFIG} ({', '.join(parts)}); export the policy again"
                )
            for name in sorted(names):
                view = file.get_slice(name)
                if view.get_dtype() not in FLOAT_DTYPES:
                    raise PolicyError(
                        f"{path} stores {name} as {view.get_dtype()}; policy weights are floating point: "
                        "the file is not a policy's, export the policy again"
                    )
                if tuple(view.get_shape()) != tuple(expected[name].shape):
                    raise PolicyError(
                        f"{path} does not match the network in {CONFIG}: {name} has shape "
                        f"{tuple(view.get_shape())}, the network {tuple(expected[name].shape)}"
                    )
            state = {name: file.get_tensor(name) for name in sorted(names)}
    except FileNotFoundError:
        raise PolicyError(f"{path} is missing; the checkpoint is incomplete") from None
    except (SafetensorError, OSError) as error:
        raise PolicyError(f"{path} is corrupt or truncated ({error}); export the policy again") from None
    bad = [name for name, tensor in state.items() if not bool(torch.isfinite(tensor).all())]
    if bad:
        raise PolicyError(
            f"{path} holds NaN or infinite weights in {', '.join(bad)}: training diverged or the file is "
            "damaged; use an earlier checkpoint or retrain"
        )
    return state


def check_model(expected: dict[str, Any], actual: dict[str, Any], folder: Path) -> None:
    """Raise :class:`PolicyError` unless the checkpoint's model fingerprint matches the model."""
    if expected != actual:

        def describe(fp: dict[str, Any]) -> str:
            return (
                f"{fp.get('architecture')} with {fp.get('layers')} layers, hidden {fp.get('hidden_size')}, "
                f"vocabulary {fp.get('vocab_size')}, weights {fp.get('weights_sha256')}"
            )

        raise PolicyError(
            f"the policy in {folder} was trained for another model ({describe(expected)}); this model is "
            f"{describe(actual)}. Load the model it was trained for, or train a policy for this one"
        )


# -- config checks -------------------------------------------------------------------------------


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


def _show(value: Any) -> str:
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
        raise _invalid(folder, f"{name} is {_show(value)}, not a non-empty list")
    return value


def _check_size(folder: Path, name: str, value: Any, expected: int, what: str) -> None:
    if not _is_int(value):
        raise _invalid(folder, f"{name} is {_show(value)}, not an integer")
    if value != expected:
        raise _incompatible(folder, f"{name} is {value}, which does not match this release's {expected} {what} fields")


def _check_widths(folder: Path, name: str, value: Any) -> list[int]:
    widths = _check_list(folder, name, value)
    if len(widths) > MAX_DEPTH:
        raise _invalid(folder, f"{name} has {len(widths)} layers; at most {MAX_DEPTH} are allowed")
    for i, width in enumerate(widths):
        if not _is_int(width) or not 1 <= width <= MAX_WIDTH:
            raise _invalid(folder, f"{name}[{i}] is {_show(width)}; layer widths are integers in 1..{MAX_WIDTH}")
    return widths


def _check_names(folder: Path, name: str, value: Any, known: Sequence[str]) -> list[str]:
    names = _check_list(folder, name, value)
    for i, entry in enumerate(names):
        if not isinstance(entry, str) or entry not in known:
            raise _invalid(folder, f"{name}[{i}] is {_show(entry)}; known: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise _invalid(folder, f"{name} {_show(names)} repeats an entry")
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
