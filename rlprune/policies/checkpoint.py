"""Policy checkpoints: a folder with ``policy.safetensors`` and ``config.json``.

Nothing is ever unpickled: the weights are safetensors, everything else is JSON. Each file is
written to a temporary name and moved into place, so a checkpoint is never half-written.
Loading trusts nothing: the config is checked field by field (types, ranges, this release's
observation and action spaces, a bound on the network's size) before any tensor is allocated,
and the weights are checked for names, shapes, dtypes and finite values before they are used.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel

from rlprune.config import data_names, data_path
from rlprune.errors import RLPruneError
from rlprune.io import JSONError, atomic_write, atomic_write_text, check_regular_file, parse_json, read_bytes
from rlprune.models import model_fingerprint
from rlprune.policies.checkpoint_config import (
    CONFIG,
    FLOAT_DTYPES,
    FORMAT,
    MAX_CONFIG_BYTES,
    POLICIES,
    WEIGHTS,
    WEIGHTS_HEADER_BYTES,
    PolicyError,
    show_value,
)
from rlprune.policies.compat import ModelShape, check_compatible
from rlprune.policies.kinds import KINDS, policy_config, validate_config

__all__ = [
    "PolicyError",
    "build_policy",
    "check_model",
    "default_budget",
    "find_policy",
    "load_policy",
    "read_config",
    "read_weights",
    "save_policy",
    "shipped_policies",
    "validate_config",
]


def save_policy(
    policy: nn.Module,
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

    The config records the policy's ``kind`` and what its kind's schema describes
    (:mod:`rlprune.policies.kinds`), e.g. a layer policy's budget when none is given: its
    ``default_budget``, or else the median of the budgets it was validated at, if any.

    Without ``model`` the checkpoint records no model fingerprint: it loads only without a model
    (training's own checkpoints); give ``model`` for a checkpoint meant to be used.
    """
    recorded = model_fingerprint(model) if model is not None else fingerprint
    if recorded is not None:  # what load_policy would refuse is not written
        check_compatible(policy, model if model is not None else ModelShape.recorded(recorded))
    folder = Path(folder)
    config = policy_config(policy, training or {}) | {
        "model": recorded,
        "reward_preset": reward_preset,
        "training": training or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    return _write(policy, folder, config)


def _write(policy: torch.nn.Module, folder: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` and the weights, once the config passes the check :func:`load_policy` makes:
    what is saved always loads."""
    try:
        validate_config(json.loads(json.dumps(config)), folder)
    except PolicyError as error:
        problem = str(error).partition(" is not a valid policy config: ")[2].partition(". The checkpoint")[0]
        raise PolicyError(f"this policy cannot be saved as a checkpoint: {problem or error}") from None
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in policy.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda path: save_file(state, path, metadata={"format": FORMAT}))
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
    return folder


def load_policy(folder: str | Path, model: PreTrainedModel | None = None) -> nn.Module:
    """Read a checkpoint, given as a folder or as a shipped policy's name (``smollm2-135m-grounded``);
    with ``model``, refuse one trained for a different model or for no recorded model.

    Without ``model`` (resuming training's own checkpoints) a checkpoint without a fingerprint loads.
    """
    found = find_policy(folder)
    if found is None:
        raise PolicyError(
            f"no policy checkpoint at {folder} (expected a folder with {CONFIG} and {WEIGHTS}, or the name of a "
            f"shipped policy: {', '.join(shipped_policies()) or 'none'})"
        )
    folder = found
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
    if model is not None or config.get("model") is not None:  # before any weight is read
        fits = model if model is not None else ModelShape.recorded(config["model"])
        hint = f"its {CONFIG} does not fit its model: export the policy again"
        check_compatible(policy, fits, label=f"the policy in {folder}", hint=hint)
    policy.load_state_dict(read_weights(folder / WEIGHTS, policy.state_dict()), strict=True)
    policy.default_budget = default_budget(config)
    return policy.eval()


def find_policy(spec: str | Path) -> Path | None:
    """The checkpoint folder ``spec`` names: itself if it is a folder, else the folder of that name in
    ``policies/`` of the working directory, the checkout or the installed package (plain names only,
    no path separators); ``None`` if neither exists."""
    path = Path(spec)
    if path.is_dir():
        return path
    name = str(spec)
    if not name or name in (".", "..") or name != path.name:
        return None
    found = data_path(POLICIES, name)
    return found if found is not None and found.is_dir() else None


def shipped_policies() -> list[str]:
    """The names :func:`find_policy` knows: the checkpoint folders in ``policies/`` of the working
    directory, the checkout and the installed package."""
    return [name for name in data_names(POLICIES) if (data_path(POLICIES, name) / CONFIG).is_file()]


def default_budget(config: dict[str, Any]) -> float | None:
    """The budget a validated policy ``config`` runs at when none is given (its kind says where it is
    recorded), or ``None`` if it records none."""
    return KINDS[config["kind"]].default_budget(config)


def read_config(folder: Path) -> dict[str, Any]:
    """``folder``'s config, checked and migrated by :func:`validate_config`; a :class:`PolicyError` if it
    is not valid."""
    path = folder / CONFIG
    data = _checked_file(path, lambda: read_bytes(path, "policy config", MAX_CONFIG_BYTES))
    try:
        config = parse_json(data)
    except JSONError as error:
        raise PolicyError(f"{path} is not valid JSON ({error}); the checkpoint is corrupt") from None
    return validate_config(config, folder)


def _checked_file(path: Path, check: Any) -> Any:
    """``check()``, a read or check of one of a checkpoint's files, with its refusal as a :class:`PolicyError`."""
    if not os.path.lexists(path):
        raise PolicyError(f"{path} is missing; the checkpoint is incomplete")
    try:
        return check()
    except RLPruneError as error:  # not a regular file, too big, unreadable
        raise PolicyError(f"{error}; the checkpoint is damaged: export the policy again") from None


def build_policy(config: dict[str, Any], folder: Path) -> nn.Module:
    """A fresh network of the shape a validated ``config`` describes."""
    return KINDS[config["kind"]].build(config, folder)


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
                parts = [f"missing tensors {show_value(missing)}"] * bool(missing) + [
                    f"unexpected tensors {show_value(extra)}"
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
