"""``rlprune train``: train a reduction policy with PPO (Stable-Baselines3 or Ray RLlib) and export it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from rlprune.cli.common import PlacementOption, console, user_errors
from rlprune.errors import InvalidActionError

if TYPE_CHECKING:
    from rlprune.train.recipe import Recipe

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
OutOption = Annotated[Path, typer.Option(help="Run folder: checkpoints, logs, summary, exported policy.")]
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
        "ray.sample_timeout_s, env.device, env.dtype. --timesteps/--workers/--device/--dtype need none.",
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
    timesteps: Annotated[int | None, typer.Option(min=1, help="Override the recipe's timesteps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the recipe's seed.")] = None,
    resume: ResumeOption = False,
    override: OverrideOption = None,
    device: PlacementOption = None,
    dtype: PlacementOption = None,
) -> None:
    """Train a reduction policy with PPO, then export it to OUT/policy.

    A ``policy = "span"`` recipe (``--recipe span-head``) trains a span head instead: supervision on
    where each training task's answer is, then PPO on the real reward when the recipe has a
    ``[span_ppo]`` table; its prompts and model are the recipe's."""
    from rlprune.envs import EnvConfig
    from rlprune.train.common.folder import read_run_meta
    from rlprune.train.recipe import Recipe

    loaded = Recipe.load(recipe) if recipe is not None else None
    if loaded is not None and loaded.policy == "span" and resume:
        raise InvalidActionError("a span-head run keeps no checkpoints to resume (it takes minutes): run it again")
    if loaded is not None and loaded.policy == "span":
        given = {"--env": env, "--backend": backend, "--workers": workers, "--address": address}
        given |= {"--timesteps": timesteps, "--override": override, "--device": device, "--dtype": dtype}
        _train_span(loaded, out, model, seed, [flag for flag, value in given.items() if value])
        return
    stored = read_run_meta(out) if resume else None  # on --resume, what is not given is the run's
    if stored is None:
        env, recipe = env or "grounded-qa", recipe or "ppo-local"
    preset_model = EnvConfig.load(env).model if env is not None else stored.get("model")
    if model is not None and model != preset_model:
        raise InvalidActionError(f"--model {model} differs from the preset's model {preset_model}; edit the preset")
    loaded = Recipe.load(recipe) if recipe is not None else None  # the default recipe, if none was given
    chosen = backend or (loaded.backend if loaded is not None else stored.get("backend", "sb3"))
    run_training, backend_options = _backend(chosen, address)
    summary = run_training(
        env,
        loaded,
        out,
        timesteps=timesteps,
        seed=seed,
        workers=workers,
        resume=resume,
        device=device,
        dtype=dtype,
        override=override or (),
        **backend_options,
    )
    _print_summary(summary, chosen, out)


def _train_span(recipe: Recipe, out: Path, model: str | None, seed: int | None, unused: list[str]) -> None:
    """``rlprune train`` with a span-head recipe, and what it prints."""
    from rlprune.cli.train_head import report_span_head
    from rlprune.train.kinds.span_head import train_span_run

    if unused:
        raise InvalidActionError(
            f"{', '.join(unused)} do not apply to a span-head recipe: it trains on its own [span_head] tasks "
            "(and [span_ppo] env) in one process; edit the recipe instead"
        )
    if model is not None and model != recipe.span_head.model:
        raise InvalidActionError(f"--model {model} differs from the recipe's model {recipe.span_head.model}")
    summary = train_span_run(recipe, out, seed)
    report_span_head(summary)
    where = f"policy exported to {Path(out) / 'policy'}, summary in {Path(out) / 'summary.json'}"
    console.print(f"Trained in {summary['seconds']:.0f} s; {where}", highlight=False)


def _backend(chosen: str, address: str | None) -> tuple[Callable[..., dict[str, Any]], dict[str, Any]]:
    """The training function of the backend ``chosen`` and the options only that backend takes."""
    from rlprune.train.recipe import BACKENDS

    if chosen not in BACKENDS:
        raise InvalidActionError(f"unknown backend {chosen!r}; use one of {', '.join(BACKENDS)}")
    if address is not None and chosen != "ray":
        raise InvalidActionError("--address needs --backend ray")
    if chosen == "ray":
        from rlprune.train.backends.rllib import train as run_training

        return run_training, {"address": address}
    from rlprune.train.backends.sb3 import train as run_training

    return run_training, {}


def _print_summary(summary: dict[str, Any], chosen: str, out: Path) -> None:
    """The final validation per budget, and where the exported policy and summary are."""
    if summary.get("already_finished"):
        console.print(f"{out} already finished: {summary['timesteps']} steps; nothing to train (--timesteps for more)")
    final = summary["final_validation"]
    out_table = Table(title=f"Trained {summary['timesteps']} steps in {summary['seconds']:.0f} s ({chosen})")
    for column in ("validation", "value"):
        out_table.add_column(column, justify="right")
    for key in ("reward", "flops_ratio", "kl", "budget_error"):
        out_table.add_row(key.replace("_", " "), f"{final[key]:.4f}")
    for budget, ratio in final["per_budget"].items():
        out_table.add_row(f"FLOPs ratio at budget {budget}", f"{ratio:.3f}")
    console.print(out_table)
    console.print(f"policy exported to {Path(out) / 'policy'}; summary in {Path(out) / 'summary.json'}")
