"""The end of a run: ``summary.json``, the export to ``policy/``, and finishing a run without training."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rlprune.errors import RLPruneError
from rlprune.io import atomic_write_text
from rlprune.policies import load_policy, save_policy
from rlprune.train.common.checkpoints import BestKeeper
from rlprune.train.common.folder import (
    FINGERPRINT,
    HISTORY,
    RUN_META,
    SUMMARY,
    read_state,
    read_summary,
    replace_folder,
)
from rlprune.train.common.setup import Run


def finish_run(
    run: Run,
    *,
    timesteps: int,
    start_steps: int,
    seconds: float,
    final: dict[str, Any],
    best: float,
    history: list[dict[str, Any]],
    cloned: dict[str, Any] | None,
    **extra: Any,
) -> dict[str, Any]:
    """Write ``summary.json``, export ``policy/`` and return the summary (``extra``: backend fields)."""
    summary = {
        "timesteps": int(timesteps),
        "resumed_from": int(start_steps) if start_steps else None,
        "seconds": round(seconds, 1),
        "steps_per_second": round((timesteps - start_steps) / max(seconds, 1e-9), 2),
        "final_validation": final,
        "best_validation_reward": best,
        "validation_history": history,
        "env": run.env_preset,
        "model": run.env_config.model,
        "seed": run.recipe.run.seed,
        "backend": run.recipe.backend,
        "policy_kind": run.recipe.policy,
        **extra,
        "warm_start": {"baseline": run.recipe.warm_start.baseline, **cloned} if cloned else None,
    }
    atomic_write_text(run.folder / SUMMARY, json.dumps(summary, indent=2))
    export_policy(run.folder)
    return summary


def conclude_run(run: Run) -> dict[str, Any]:
    """Finish a resumed run whose last checkpoint holds all its steps, without training.

    A finished run (its summary is for these steps) is reported as it is (``already_finished``),
    re-exported if ``policy/`` is missing; a run killed after its last checkpoint gets its final
    validation (unless the checkpoint has it), summary and export.
    """
    assert run.last is not None
    summary = read_summary(run.folder)
    if summary is not None and summary.get("timesteps") == run.reached:
        if not (run.folder / "policy" / "config.json").is_file():
            export_policy(run.folder)
        return {**summary, "already_finished": True}
    started = time.time()
    policy, history = load_policy(run.last), list(run.history)
    best = BestKeeper(run.folder, run.meta)
    if history and history[-1].get("timesteps") == run.reached:
        final = history[-1]
    else:
        final = {**run.evaluator(policy), "timesteps": run.reached}
        history.append(final)
        counters = {key: value for key, value in read_state(run.last).items() if key != HISTORY}
        best.offer(policy, final, counters)
    run.write_meta()  # the recipe as resumed (safe overrides included)
    return finish_run(
        run,
        timesteps=run.reached,
        start_steps=run.reached,
        seconds=time.time() - started,
        final=final,
        best=best.best,
        history=history,
        cloned=None,
    )


def export_policy(run_dir: Path) -> None:
    """Export the run's policy to ``policy/``, replacing it whole (a kill never leaves half an export)."""
    replace_folder(run_dir / "policy", lambda staging: export(run_dir, staging))


def export(run_dir: str | Path, out: str | Path) -> Path:
    """Write a run's best policy (or its last, without validation) as a policy checkpoint."""
    run_dir = Path(run_dir)
    source = run_dir / "best" if (run_dir / "best" / "config.json").is_file() else run_dir / "last"
    if not (source / "config.json").is_file():
        raise RLPruneError(f"{run_dir} holds no trained policy (no best/ or last/ checkpoint)")
    policy = load_policy(source)
    config = json.loads((source / "config.json").read_text())
    training = {**config.get("training", {})}
    summary = read_summary(run_dir)
    if summary is not None:
        keys = ("timesteps", "seconds", "steps_per_second", "seed", "backend")
        training["run"] = {k: summary[k] for k in keys if k in summary}
    run = json.loads((run_dir / RUN_META).read_text()) if (run_dir / RUN_META).is_file() else {}
    fingerprint = config.get("model") or run.get(FINGERPRINT)
    model = None
    if fingerprint is None and run.get("model"):  # a run from before checkpoints named their model
        from rlprune.models import load_model

        model, _ = load_model(run["model"])
    return save_policy(
        policy, out, model=model, fingerprint=fingerprint, reward_preset=run.get("env"), training=training
    )
