"""The run folder: what its files are called, and reading them back.

Run folder::

    run.json        what was trained: env preset (name and settings), recipe, model, backend;
                    written when training begins, so a start that fails leaves no run
    last/           the latest checkpoint: policy + trainer.safetensors + state.json (step
                    counters and the validation history so far)
    best/           the policy with the best validation reward so far
    policy/         the final export
    tensorboard/    training curves
    summary.json    the result

Every file is replaced whole (:func:`replace_folder`, atomic writes), so a kill never leaves half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlprune.errors import RLPruneError
from rlprune.io import read_json

TRAINER_TENSORS = "trainer.safetensors"
STATE = "state.json"
HISTORY = "validation_history"
FINGERPRINT = "model_fingerprint"
RUN_META = "run.json"
SUMMARY = "summary.json"
ARTEFACTS = ("last", ".last.old", "best", "policy", SUMMARY)  # what a run leaves in its folder, besides run.json


class RunFolderError(RLPruneError):
    """The run folder cannot be started, resumed or finished as asked."""


def replace_folder(folder: Path, write: Callable[[Path], object]) -> None:
    """Fill a staging folder with ``write``, then swap it in for ``folder``; the old one is kept
    aside as ``.NAME.old`` until the swap is done."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write(staging)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_run_meta(run_dir: str | Path) -> dict[str, Any]:
    """What ``run.json`` says about the run in ``run_dir``; a missing or damaged one is a clear error."""
    run_dir = Path(run_dir)
    meta = run_dir / RUN_META
    if not meta.is_file():
        where = "does not exist" if not run_dir.exists() else "holds no run (no run.json)"
        raise RunFolderError(f"nothing to resume in {run_dir}: it {where}; start the run without --resume")
    try:
        data = read_json(meta, "run file")
    except RLPruneError as error:
        raise RunFolderError(
            f"{meta} is damaged ({error}); restore it from a copy, or start a new run in another --out"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("recipe"), dict) or "env" not in data:
        raise RunFolderError(
            f"{meta} does not describe a run (no recipe or env); restore it, or start a new run in another --out"
        )
    return data


def check_fresh_folder(run_dir: Path) -> None:
    """A new run needs a folder without another run's files in it."""
    if (run_dir / RUN_META).is_file():
        raise RunFolderError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is a file, not a run folder; choose another --out")
    leftovers = [name for name in ARTEFACTS if (run_dir / name).exists()]
    if leftovers:
        raise RunFolderError(
            f"{run_dir} holds a run's files ({', '.join(leftovers)}) but no run.json; "
            "remove them or choose another --out"
        )


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (a kill while replacing ``last`` leaves the previous one aside)."""
    for folder in (run_dir / "last", run_dir / ".last.old"):
        if (folder / STATE).is_file() and (folder / TRAINER_TENSORS).is_file():
            return folder
    return None


def read_state(folder: Path) -> dict[str, Any]:
    """A checkpoint's counters and validation history (its ``state.json``), without its tensors."""
    try:
        state = json.loads((folder / STATE).read_text())
        int(state["timesteps"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise RunFolderError(
            f"the checkpoint {folder} is damaged ({error!r}); remove that folder and resume again "
            "(the run goes on from its previous checkpoint, if any)"
        ) from None
    state.pop("trainer", None)
    return state


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json``, or None when it is missing or damaged (it is then written again)."""
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None
