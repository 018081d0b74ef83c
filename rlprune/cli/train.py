"""``rlprune train``: train the policy kind a recipe names (layer, token, span, budget) and export it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rlprune.cli.common import PlacementOption, console, out_path, user_errors

EnvOption = Annotated[
    str | None,
    typer.Option(
        "--env", help="Environment preset name or path (envs/*.toml); default: grounded-qa, on --resume the run's."
    ),
]
RecipeOption = Annotated[
    str | None,
    typer.Option(help="Training recipe name or path (train/*.toml); default: ppo-local, on --resume the run's."),
]
OutOption = Annotated[
    Path, typer.Option(parser=out_path, help="Run folder: checkpoints, logs, summary, exported policy.")
]
ModelCheckOption = Annotated[str | None, typer.Option("--model", "-m", help="Must match the preset's model (checked).")]
BackendOption = Annotated[
    str | None, typer.Option(help="sb3 (one machine) or ray (RLlib env runners); default: the recipe's.")
]
WorkersOption = Annotated[
    int | None, typer.Option(min=1, help="Parallel environments (sb3) or env runners (ray); default: the recipe's.")
]
AddressOption = Annotated[
    str | None, typer.Option(help='Ray cluster to join ("auto" or HOST:PORT); default: a local Ray.')
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run in --out from its last checkpoint (or finish it), with the run's recipe and preset.",
    ),
]
OverrideOption = Annotated[
    list[str] | None,
    typer.Option(
        "--override",
        help="On --resume, let this field differ from the run's (repeatable). Safe: run.timesteps, run.n_envs "
        "(workers), run.envs, run.torch_threads, run.checkpoint_every, run.eval_every, ray.address, "
        "ray.sample_timeout_s, span_ppo.updates, env.device, env.dtype. --timesteps/--workers/--device/--dtype "
        "need none.",
    ),
]


@user_errors
def train(
    env: EnvOption = None,
    recipe: RecipeOption = None,
    out: OutOption = Path("runs/latest"),
    model: ModelCheckOption = None,
    backend: BackendOption = None,
    workers: WorkersOption = None,
    address: AddressOption = None,
    timesteps: Annotated[
        int | None,
        typer.Option(
            min=1, help="Override the recipe's timesteps (a span recipe: on --resume, its RL stage's episodes)."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the recipe's seed.")] = None,
    resume: ResumeOption = False,
    override: OverrideOption = None,
    device: PlacementOption = None,
    dtype: PlacementOption = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="A span recipe with a [span_ppo] stage: skip supervision and tune this span head (a shipped "
            "name such as smollm2-135m-span, or a folder); a head with a later head is tuned at both layers."
        ),
    ] = None,
) -> None:
    """Train the policy kind the recipe names, then export it to OUT/policy.

    Layer and token policies train by PPO in an environment preset (--env), on either backend. A span
    recipe (--recipe span-head) trains a span head: supervision on where each training task's answer
    is, then PPO on the real reward when the recipe has a span_ppo table. A budget recipe (--recipe
    adaptive) trains a budget head for a span head. Span and budget recipes take their prompts and
    model from the recipe."""
    from rlprune.train.trainer import TrainOptions
    from rlprune.train.trainer import train as run_training

    options = TrainOptions(
        recipe=recipe,
        out=out,
        env=env,
        model=model,
        backend=backend,
        workers=workers,
        address=address,
        timesteps=timesteps,
        seed=seed,
        resume=resume,
        override=tuple(override or ()),
        device=device,
        dtype=dtype,
        start=start,
    )
    print_summary(run_training(options), out)


def print_summary(summary: dict[str, Any], out: Path) -> None:
    """What a run's summary says, as its kind reports it (a summary from before kinds were recorded is
    a layer policy's)."""
    from rlprune.cli.train_budget import report_budget_head
    from rlprune.cli.train_head import report_span_head

    reports = {"layer": _print_validation, "token": _print_validation}
    reports |= {"span": _head_report(report_span_head), "budget": _head_report(report_budget_head)}
    reports[summary.get("policy_kind", "layer")](summary, out)


def _head_report(report: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any], Path], None]:
    """A span or budget head's report, then the wall time and where the policy and summary are."""

    def show(summary: dict[str, Any], out: Path) -> None:
        report(summary)
        where = f"policy exported to {Path(out) / 'policy'}, summary in {Path(out) / 'summary.json'}"
        console.print(f"Trained in {summary['seconds']:.0f} s; {where}", highlight=False)

    return show


def _print_validation(summary: dict[str, Any], out: Path) -> None:
    """The final validation per budget, and where the exported policy and summary are."""
    if summary.get("already_finished"):
        console.print(f"{out} already finished: {summary['timesteps']} steps; nothing to train (--timesteps for more)")
    final = summary["final_validation"]
    steps, seconds, backend = summary["timesteps"], summary["seconds"], summary["backend"]
    out_table = Table(title=f"Trained {steps} steps in {seconds:.0f} s ({backend})")
    for column in ("validation", "value"):
        out_table.add_column(column, justify="right")
    for key in ("reward", "flops_ratio", "kl", "budget_error"):
        out_table.add_row(key.replace("_", " "), f"{final[key]:.4f}")
    for budget, ratio in final["per_budget"].items():
        out_table.add_row(f"FLOPs ratio at budget {budget}", f"{ratio:.3f}")
    console.print(out_table)
    console.print(f"policy exported to {Path(out) / 'policy'}; summary in {Path(out) / 'summary.json'}")
