"""``rlprune train-head``: a span head's recipe from flags, trained as ``rlprune train --recipe`` trains it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rlprune.cli.common import ModelOption, SeedOption, console, out_path, user_errors
from rlprune.errors import InvalidActionError, InvalidArgumentError


@user_errors
def train_head(
    out: Annotated[
        Path, typer.Option(parser=out_path, help="Where the span-head policy checkpoint is written.")
    ] = Path("runs/span-head"),
    model: ModelOption = "smollm2-135m",
    layer: Annotated[int, typer.Option(min=0, help="The decision layer whose hidden states the head reads.")] = 2,
    later_layer: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Also train a head at this deeper layer; it makes the cut whenever the budget still lets it "
            "keep --min-keep of the removable tokens there.",
        ),
    ] = None,
    min_keep: Annotated[
        float | None, typer.Option(help="With --later-layer: the share the later head must keep (default 0.25).")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training prompts.")] = 12,
    long_per_cell: Annotated[
        int, typer.Option(min=1, help="Training needles per kind, length and depth (train-split essays).")
    ] = 3,
    short_items: Annotated[int, typer.Option(min=1, help="Short grounded training questions (train split).")] = 240,
    start: Annotated[
        str | None,
        typer.Option(
            help="Skip supervision: start from this span head (a shipped name or a folder), tune it by PPO "
            "(--ppo-updates) and export it with --unit."
        ),
    ] = None,
    ppo_updates: Annotated[
        int, typer.Option(min=0, help="PPO updates on the real reward after supervision (0: supervision only).")
    ] = 0,
    ppo_env: Annotated[
        str, typer.Option(help="Environment preset whose train prompts, budgets and reward PPO uses.")
    ] = "span",
    ppo_lr: Annotated[float, typer.Option(min=0.0, help="PPO's learning rate.")] = 3e-4,
    unit: Annotated[
        str,
        typer.Option(help="What the exported head keeps or drops together: sentence, token or a chunk size."),
    ] = "sentence",
    seed: SeedOption = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a checkpoint already in OUT.")] = False,
) -> None:
    """Train a span head (question-conditioned scores on the model's hidden states) by supervision on
    where each training task's answer is, optionally tune it by PPO on the real reward, and export it
    as a policy (a few minutes on 2 CPU cores, plus about 10 s per PPO update)."""
    from rlprune.envs import EnvConfig
    from rlprune.train.recipe import Recipe, SpanHeadConfig, SpanPPOConfig
    from rlprune.train.trainer import TrainOptions, train

    if (out / "config.json").exists() and not force:
        raise InvalidActionError(f"{out} already holds a policy; pass --force to overwrite it or choose another --out")
    if min_keep is not None and later_layer is None:
        raise InvalidActionError("--min-keep sets the later head's share; add --later-layer or drop --min-keep")
    try:
        config = SpanHeadConfig(
            model=model,
            decision_layer=layer,
            later_layer=later_layer,
            **({} if min_keep is None else {"min_keep": min_keep}),
            epochs=epochs,
            long_per_cell=long_per_cell,
            short_items=short_items,
            unit=unit,
            seed=seed,
        )
    except ValueError as error:
        raise InvalidArgumentError(f"span head settings: {error}") from None
    ppo = None
    if ppo_updates:
        preset_model = EnvConfig.load(ppo_env).model  # an unknown preset fails now, not after the supervised stage
        if model != preset_model:
            raise InvalidActionError(
                f"--model {model} differs from the --ppo-env preset's model {preset_model}; "
                "give that model, or a preset for this one"
            )
        try:
            ppo = SpanPPOConfig(env=ppo_env, updates=ppo_updates, learning_rate=ppo_lr, seed=seed)
        except ValueError as error:
            raise InvalidArgumentError(f"PPO settings: {error}") from None
    recipe = Recipe(policy="span", span_head=config, span_ppo=ppo)
    report_span_head(train(TrainOptions(recipe=recipe, out=out, start=start, policy_only=True)))
    console.print(f"policy written to {out}; try `rlprune eval --suite niah --evidence-only --policy {out}`")


def report_span_head(summary: dict[str, Any]) -> None:
    """What a span head's training summary says: the supervised loss, PPO's validation before and after."""
    if "loss" in summary:
        loss = summary["loss"]
        console.print(f"{summary['examples']} training prompts, loss {loss[0]:.3f} -> {loss[-1]:.3f}", highlight=False)
    if "later_loss" in summary:
        layer, loss = summary["config"]["later_layer"], summary["later_loss"]
        console.print(f"the later head (layer {layer}), loss {loss[0]:.3f} -> {loss[-1]:.3f}", highlight=False)
        if summary.get("later_dropped"):
            console.print(
                f"[yellow]the later head did not learn, so it was left out: the policy cuts at layer "
                f"{summary['config']['decision_layer']} only[/]"
            )
    history = summary.get("ppo", {}).get("validation_history") or []
    if history:  # the first validation is the supervised start's (unless the stage resumed)
        first, final = history[0], summary["ppo"]["final_validation"]
        keys = [
            k
            for k in ("reward", "solved", "answer_accuracy", "evidence", "kl")
            if first.get(k) is not None and final.get(k) is not None
        ]
        changes = ", ".join(f"{key} {first[key]:.3f} -> {final[key]:.3f}" for key in keys)
        best = summary["ppo"].get("best_validation_reward")
        kept = "" if best is None else f"; best/ (exported) reward {best:.3f}"
        console.print(
            f"RL stage, validation at step {first['timesteps']} -> {final['timesteps']}: {changes}{kept}",
            highlight=False,
        )
