"""``rlprune train-head``: train a span head by supervision on where answers are, and export it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlprune.cli.common import ModelOption, SeedOption, console, user_errors
from rlprune.errors import InvalidActionError


@user_errors
def train_head(
    out: Annotated[Path, typer.Option(help="Where the span-head policy checkpoint is written.")] = Path(
        "runs/span-head"
    ),
    model: ModelOption = "smollm2-135m",
    layer: Annotated[int, typer.Option(min=0, help="The decision layer whose hidden states the head reads.")] = 2,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training prompts.")] = 12,
    long_per_cell: Annotated[
        int, typer.Option(min=1, help="Training needles per kind, length and depth (train-split essays).")
    ] = 3,
    short_items: Annotated[int, typer.Option(min=1, help="Short grounded training questions (train split).")] = 240,
    seed: SeedOption = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a checkpoint already in OUT.")] = False,
) -> None:
    """Train a span head (question-conditioned scores on the model's hidden states) by supervision on
    where each training task's answer is, and export it as a policy (a few minutes on 2 CPU cores)."""
    from rlprune.train.span_head import SpanHeadConfig, train_span_head

    if (out / "config.json").exists() and not force:
        raise InvalidActionError(f"{out} already holds a policy; pass --force to overwrite it or choose another --out")
    config = SpanHeadConfig(
        model=model,
        decision_layer=layer,
        epochs=epochs,
        long_per_cell=long_per_cell,
        short_items=short_items,
        seed=seed,
    )
    summary = train_span_head(config, out)
    console.print(
        f"{summary['examples']} training prompts, loss {summary['loss'][0]:.3f} -> {summary['loss'][-1]:.3f}; "
        f"policy written to {out}; try `rlprune eval --suite niah --evidence-only --policy {out}`",
        highlight=False,
    )
