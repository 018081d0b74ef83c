"""``rlprune train-output``: train a LoRA adapter with GRPO so the model answers with fewer tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlprune.cli.common import DeviceOption, DtypeOption, ModelOption, SeedOption, console, out_path, user_errors


@user_errors
def train_output(
    model: ModelOption = "smollm2-135m",
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    suite: Annotated[
        str, typer.Option(help="Tasks with gold answers: short-answers, arithmetic, grounded-qa, ... or a .jsonl file.")
    ] = "short-answers",
    reward: Annotated[str, typer.Option(help="r_eff (shorter than the base model, as accurate), r_max or r_exact.")] = (
        "r_eff"
    ),
    target_tokens: Annotated[
        int | None, typer.Option(min=1, help="Target answer length for r_max / r_exact (default: half the base's).")
    ] = None,
    hallucination: Annotated[
        float, typer.Option(min=0.0, help="Weight of the hallucination penalty on prompts with a context.")
    ] = 0.0,
    steps: Annotated[int, typer.Option(min=1, help="GRPO optimisation steps.")] = 30,
    prompts_per_step: Annotated[int, typer.Option(min=1, help="Prompts per step.")] = 4,
    generations: Annotated[int, typer.Option(min=2, help="Completions sampled per prompt.")] = 4,
    max_completion_tokens: Annotated[int, typer.Option(min=1, help="Longest completion.")] = 64,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="LoRA learning rate.")] = 3e-4,
    train_prompts: Annotated[
        int, typer.Option(min=1, help="Training prompts drawn from the suite's train split.")
    ] = 64,
    seed: SeedOption = 0,
    out: Annotated[
        Path, typer.Option(parser=out_path, help="Run folder: adapter/, summary.json, trainer logs.")
    ] = Path("runs/output"),
) -> None:
    """Train a LoRA adapter with GRPO (TRL) so the model answers with fewer tokens."""
    from rlprune.output.train import OutputTrainConfig
    from rlprune.output.train import train_output as run_training

    config = OutputTrainConfig(
        model=model,
        device=device,
        dtype=dtype,
        suite=suite,
        reward=reward,
        target_tokens=target_tokens,
        hallucination=hallucination,
        steps=steps,
        prompts_per_step=prompts_per_step,
        generations=generations,
        max_completion_tokens=max_completion_tokens,
        learning_rate=learning_rate,
        train_prompts=train_prompts,
        seed=seed,
    )
    summary = run_training(config, out)
    last = summary["history"][-1] if summary["history"] else {}
    console.print(
        f"base model: {summary['base_mean_length']:.1f} tokens per answer, accuracy {summary['base_accuracy']:.1%}; "
        f"last step: reward {last.get('reward', float('nan')):+.3f}, "
        f"{last.get('completions/mean_length', float('nan')):.1f} tokens sampled per answer",
        highlight=False,
    )
    console.print(
        f"adapter written to {summary['adapter']}; compare with `rlprune eval --adapter {summary['adapter']}`"
    )
