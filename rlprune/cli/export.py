"""``rlprune export``: write a training run's best policy as a checkpoint folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlprune.cli.common import console, out_path, user_errors
from rlprune.errors import RLPruneError


@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A training run folder.")],
    out: Annotated[Path, typer.Option(parser=out_path, help="Where to write the policy checkpoint.")],
    force: Annotated[bool, typer.Option("--force", help="Replace what OUT already holds.")] = False,
) -> None:
    """Export a run's best policy (or its last) as a checkpoint folder."""
    from rlprune.train.common.finish import export as export_run

    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise RLPruneError(f"{out} already exists and is not empty; choose another --out or pass --force to replace it")
    folder = export_run(run_dir, out)
    console.print(f"policy written to {folder}")
