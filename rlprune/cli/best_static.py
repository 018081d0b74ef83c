"""``rlprune best-static``: grid-search fixed schedules on a preset's validation split."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from rlprune.cli.common import PlacementOption, console, out_path, user_errors
from rlprune.errors import InvalidActionError


@user_errors
def best_static(
    env: Annotated[str, typer.Option("--env", help="Environment preset whose validation split is searched.")] = (
        "mixed-hard"
    ),
    budgets: Annotated[str, typer.Option(help="Budgets to find the best schedule for, comma-separated.")] = "0.3,0.5",
    items: Annotated[int, typer.Option(min=1, help="Validation prompts each schedule is scored on.")] = 24,
    out: Annotated[
        Path | None,
        typer.Option(parser=out_path, help="Where to write the table (default: eval/best-static/ENV.json)."),
    ] = (None),
    layers: Annotated[
        str | None,
        typer.Option(help="Decision layers searched, comma-separated (default: those of 2,4,8 the model has)."),
    ] = None,
    spans: Annotated[
        str, typer.Option(help='Span shapes searched besides each scorer\'s own, ";"-separated ("" for none).')
    ] = "pool=25;pool=-4:+16;unit=sentence",
    device: PlacementOption = None,
    dtype: PlacementOption = None,
) -> None:
    """Grid-search fixed schedules (layer x scorer x op x span shape) on validation: the `best-static` table."""
    from rlprune.envs import EnvConfig
    from rlprune.eval.best_static import check_table_path, search, write_table
    from rlprune.eval.options import parse_budgets
    from rlprune.policies.baselines import TABLES

    preset = EnvConfig.load(env)
    placement = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
    try:
        searched = None if layers is None else tuple(int(part) for part in layers.split(",") if part.strip())
    except ValueError:
        raise InvalidActionError(f"--layers {layers!r} must be comma-separated layer numbers such as 2,4,8") from None
    shapes = tuple(part.strip() for part in spans.split(";") if part.strip())
    # written in the working directory, never over a table shipped inside an installed package
    path = check_table_path(out or TABLES / f"{Path(env).stem}.json")  # before the search, not after it
    result = search(dataclasses.replace(preset, **placement), parse_budgets(budgets), items, searched, shapes)
    result["preset"] = env  # the name or path given, not the loaded configuration
    path = write_table(result, path)
    for budget, entry in result["best"].items():
        console.print(f"budget {budget}: {entry['schedule']} (score {entry['score']:.3f})", highlight=False)
    console.print(f"table written to {path}; use it as the baseline `best-static:{path}`")
