"""``rlprune train-budget``: a budget head's recipe from flags, trained as ``rlprune train --recipe`` trains it:
how much of the prefill each prompt needs, for average-budget mode."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rlprune.cli.common import ModelOption, SeedOption, console, out_path, user_errors
from rlprune.errors import InvalidActionError
from rlprune.policies.budget_head import DEFAULT_GRID


@user_errors
def train_budget(
    out: Annotated[
        Path, typer.Option(parser=out_path, help="Where the span head with its budget head is written.")
    ] = Path("runs/adaptive"),
    model: ModelOption = "smollm2-135m",
    span_policy: Annotated[
        str, typer.Option(help="The span head whose scores the budget head reads (a shipped name or a folder).")
    ] = "smollm2-135m-span",
    backend: Annotated[str, typer.Option(help="sb3 (in process) or ray (RLlib env runners).")] = "sb3",
    timesteps: Annotated[int, typer.Option(min=1, help="PPO steps (one prompt and target each).")] = 120_000,
    reward: Annotated[
        str,
        typer.Option(
            help="evidence: the whole answer survives the cut; answer: its likelihood after each ratio's prefill; "
            "correct: the reduced model's greedy answer is right (one generation per prompt and ratio)."
        ),
    ] = "evidence",
    grid: Annotated[str, typer.Option(help="The FLOPs ratios the head chooses from, comma-separated.")] = ",".join(
        f"{g:g}" for g in DEFAULT_GRID
    ),
    short_items: Annotated[int, typer.Option(min=1, help="Short grounded training questions (train split).")] = 400,
    long_per_cell: Annotated[
        int, typer.Option(min=1, help="Needle prompts per kind, length and depth (train split).")
    ] = 4,
    validation_items: Annotated[
        int, typer.Option(min=1, help="Short grounded validation questions (validation split).")
    ] = 120,
    cache: Annotated[
        Path | None, typer.Option(help="Keep the outcome tables here and reuse them when the settings match.")
    ] = Path("runs/budget-outcomes"),
    seed: SeedOption = 1,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a checkpoint already in OUT.")] = False,
) -> None:
    """Train a budget head with PPO under a constraint on the average FLOPs ratio, and export the span
    head with it: in `--budget-mode average` it proposes each prompt's ratio (minutes on 2 CPU cores)."""
    from rlprune.eval import parse_budgets
    from rlprune.train.recipe import BudgetHeadConfig, Recipe
    from rlprune.train.trainer import TrainOptions, train

    if (out / "config.json").exists() and not force:
        raise InvalidActionError(f"{out} already holds a policy; pass --force to overwrite it or choose another --out")
    config = BudgetHeadConfig(
        model=model,
        span_policy=span_policy,
        timesteps=timesteps,
        reward=reward,
        grid=parse_budgets(grid, "--grid"),
        short_items=short_items,
        long_per_cell=long_per_cell,
        validation_items=validation_items,
        seed=seed,
    )
    options = TrainOptions(
        recipe=Recipe(policy="budget", budget_head=config),
        out=out,
        backend=backend,
        cache_dir=str(cache) if cache is not None else None,
        policy_only=True,
    )
    report_budget_head(train(options))
    console.print(f"policy written to {out}; try `rlprune eval --policy {out} --budget-mode average --budgets 0.3`")


def report_budget_head(summary: dict[str, Any]) -> None:
    """What a budget head's training summary says: per target, the evidence kept and the mean ratio."""
    reward = summary["config"]["reward"]
    lines = [f"{summary['prompts']} training prompts, {summary['validation_prompts']} validation prompts"]
    for target, row in summary["validation"].items():
        lines.append(
            f"  target {target}: evidence kept {row['adaptive_kept']:.1%} at mean {row['adaptive_mean']:.3f} "
            f"(fixed {row['fixed_kept']:.1%} at {row['fixed_mean']:.3f}; "
            f"oracle {row['oracle_kept_at_adaptive_mean']:.1%})"
            + (
                f"; {'right' if reward == 'correct' else 'answer likelihood'} {row['adaptive_answer']:.1%} "
                f"(fixed {row['fixed_answer']:.1%})"
                if reward != "evidence"
                else ""
            )
        )
    console.print("\n".join(lines), highlight=False)
