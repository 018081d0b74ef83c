"""Whether the run asked for now is the run in the folder: what may change on ``--resume``.

``--resume`` continues the run in the folder with its own recipe and preset: other settings are
refused before anything is written, except the few safe ones (:data:`SAFE_ON_RESUME`) that are
asked for with ``--override``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlprune.train.common.folder import RunFolderError

RECIPE_SAFE = (
    "run.timesteps",
    "run.n_envs",
    "run.envs",
    "run.torch_threads",
    "run.checkpoint_every",
    "run.eval_every",
    "ray.address",
    "ray.sample_timeout_s",
    "span_ppo.updates",
)
"""Recipe fields a resumed run may change: how long and where it runs (a span head's RL stage counts
its length in updates), not what it learns or how it is judged (PPO settings, the seed, warm start
and validation tasks/budgets stay those of the run)."""
SAFE_ON_RESUME = tuple(f"recipe.{name}" for name in RECIPE_SAFE) + ("env.device", "env.dtype")
OVERRIDE_ALIASES = {"workers": "recipe.run.n_envs"}


def resolve_overrides(names: Sequence[str]) -> set[str]:
    """The full field names (``recipe.run.timesteps``) of ``--override`` names (``timesteps``,
    ``run.timesteps``, ``recipe.run.timesteps``); a field not safe to change is an error listing those that are."""
    resolved = set()
    for name in names:
        wanted = OVERRIDE_ALIASES.get(name.strip(), name.strip())
        matches = [f for f in SAFE_ON_RESUME if wanted in (f, f.removeprefix("recipe."), f.rsplit(".", 1)[-1])]
        if not matches:
            safe = ", ".join(f.removeprefix("recipe.") for f in SAFE_ON_RESUME)
            raise RunFolderError(f"--override {name}: this field cannot change on resume; the safe ones are {safe}")
        resolved.add(matches[0])
    return resolved


def comparable(meta: dict[str, Any], *, with_preset: bool) -> dict[str, Any]:
    """The settings a resumed run must share with the run in its folder, by dotted field name."""
    fields: dict[str, Any] = {"backend": meta.get("backend", "sb3"), "model": meta.get("model")}
    fields |= {k: v for k, v in flatten(meta["recipe"], "recipe").items() if k != "recipe.backend"}
    if with_preset:
        fields |= {k: v for k, v in flatten(meta["env_config"], "env").items() if k != "env.model"}
    else:  # a run.json written before presets were stored: only the preset's name is known
        fields["env"] = meta.get("env")
    return fields


def flatten(tree: Any, prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"prefix.a.b": 1}`` (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, value in tree.items() for k, v in flatten(value, f"{prefix}.{key}").items()}


def check_same_run(run_dir: Path, stored: dict[str, Any], now: dict[str, Any], allowed: set[str]) -> None:
    """Refuse to resume with settings that differ from the run's, unless the field is safe and allowed."""
    with_preset = isinstance(stored.get("env_config"), dict)
    before, after = comparable(stored, with_preset=with_preset), comparable(now, with_preset=with_preset)
    differ = [key for key in before if key in after and before[key] != after[key]]

    def describe(keys: list[str]) -> str:
        return "; ".join(f"{key}: {json.dumps(before[key])} in the run, {json.dumps(after[key])} now" for key in keys)

    unsafe = [key for key in differ if key not in SAFE_ON_RESUME]
    if unsafe:
        raise RunFolderError(
            f"cannot resume {run_dir} with other settings ({describe(unsafe)}); these cannot change on resume: "
            "leave out the --recipe/--env/options that change them (a resume uses the run's own), "
            "or start a new run in another --out"
        )
    unapproved = [key for key in differ if key not in allowed]
    if unapproved:
        flags = " ".join(f"--override {key.removeprefix('recipe.')}" for key in unapproved)
        raise RunFolderError(f"{run_dir}: {describe(unapproved)}; to change this on resume pass {flags}")
