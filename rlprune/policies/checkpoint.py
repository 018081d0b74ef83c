"""Policy checkpoints: a folder with ``policy.safetensors`` and ``config.json``.

Nothing is ever unpickled: the weights are safetensors, everything else is JSON. Each file is
written to a temporary name and moved into place, so a checkpoint is never half-written.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from rlprune.errors import RLPruneError
from rlprune.features import OBSERVATION_FIELDS, SPEC_VERSION, TOKEN_FEATURE_FIELDS, ActionSpec
from rlprune.io import atomic_write, atomic_write_text
from rlprune.models import model_fingerprint
from rlprune.policies.network import ReductionPolicy
from rlprune.policies.token_network import TOKEN_SPEC_VERSION, TokenReductionPolicy

SPEC_VERSIONS = {SPEC_VERSION: "layer", TOKEN_SPEC_VERSION: "token"}
"""Spec versions this release reads, and the policy kind each one is."""

FORMAT = "rlprune-policy"
FORMAT_VERSION = 1
WEIGHTS, CONFIG = "policy.safetensors", "config.json"


class PolicyError(RLPruneError):
    """A policy checkpoint is missing, corrupt, from another version, or for another model."""


def save_policy(
    policy: ReductionPolicy,
    folder: str | Path,
    *,
    model: PreTrainedModel | None = None,
    reward_preset: str | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``policy`` to ``folder`` (created if needed) with what it was trained for."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
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
        "model": model_fingerprint(model) if model is not None else None,
        "reward_preset": reward_preset,
        "training": training or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in policy.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda path: save_file(state, path, metadata={"format": FORMAT}))
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
    return folder


def load_policy(folder: str | Path, model: PreTrainedModel | None = None) -> ReductionPolicy | TokenReductionPolicy:
    """Read a checkpoint; with ``model``, refuse one trained for a different model."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PolicyError(f"no policy checkpoint at {folder} (expected a folder with {CONFIG} and {WEIGHTS})")
    config = read_config(folder)
    if model is not None and config.get("model"):
        check_model(config["model"], model_fingerprint(model), folder)
    network = config["network"]
    spec = config.get("action_spec") or {}
    try:
        kwargs = {
            "observation_size": network["observation_size"],
            "hidden": network["hidden"],
            "decision_layers": config["decision_layers"],
            "action_spec": ActionSpec(tuple(spec["ops"]), tuple(spec["shares"]), tuple(spec["scorers"])),
        }
        if SPEC_VERSIONS[config["spec_version"]] == "token":
            kwargs |= {"token_feature_size": network["token_feature_size"], "token_hidden": network["token_hidden"]}
            policy = TokenReductionPolicy(**kwargs)
        else:
            policy = ReductionPolicy(**kwargs)
    except (KeyError, TypeError, ValueError) as error:
        raise PolicyError(f"{folder / CONFIG} describes no valid network ({error})") from None
    path = folder / WEIGHTS
    try:
        state = load_file(path)
    except FileNotFoundError:
        raise PolicyError(f"{path} is missing; the checkpoint is incomplete") from None
    except (SafetensorError, OSError) as error:
        raise PolicyError(f"{path} is corrupt or truncated ({error}); export the policy again") from None
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise PolicyError(f"{path} does not match the network in {CONFIG}: {error}") from None
    return policy.eval()


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyError(f"{path} is missing; the checkpoint is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PolicyError(f"{path} is not valid JSON ({error}); the checkpoint is corrupt") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise PolicyError(f"{path} is not an rlprune policy checkpoint")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise PolicyError(
            f"{folder} has checkpoint format version {version!r}; this rlprune reads version {FORMAT_VERSION}"
        )
    if config.get("spec_version") not in SPEC_VERSIONS:
        known = ", ".join(f"{v} ({kind}-level policies)" for v, kind in SPEC_VERSIONS.items())
        raise PolicyError(
            f"{folder} was trained on observation/action spec {config.get('spec_version')!r}; this rlprune "
            f"reads specs {known}: retrain or use a matching rlprune version"
        )
    return config


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
