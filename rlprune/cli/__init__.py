"""The ``rlprune`` command line: info, generate, train, train-head, train-budget, train-output, export,
best-static, eval.

One module per command; this one builds the typer app and registers them in the order ``--help`` lists.
"""

from __future__ import annotations

import sys

import typer

from rlprune.cli import best_static, evaluate, export, generate, info, train, train_budget, train_head, train_output

app = typer.Typer(
    name="rlprune",
    help="Learned token pruning and merging for frozen causal language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(info.info)
app.command()(generate.generate)
app.command()(train.train)
app.command(name="train-head")(train_head.train_head)
app.command(name="train-budget")(train_budget.train_budget)
app.command(name="train-output")(train_output.train_output)
app.command()(export.export)
app.command(name="best-static")(best_static.best_static)
app.command(name="eval")(evaluate.evaluate)

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point alias
    """Run the command line and exit with its status."""
    sys.exit(app())
