"""What every command shares: the consoles, the model options and the one-line error report."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from rlprune.errors import RLPruneError, describe_os_error

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)

ModelOption = Annotated[
    str,
    typer.Option("--model", "-m", help="Alias (smollm2-135m, gemma3-270m), local model folder or .gguf file."),
]
DeviceOption = Annotated[str, typer.Option(help="Where the model runs: cpu, cuda, cuda:N or mps.")]
DtypeOption = Annotated[str, typer.Option(help="Model weights' dtype: float32, bfloat16 or float16.")]
PlacementOption = Annotated[str | None, typer.Option(help="Override the preset's model device / dtype.")]
SeedOption = Annotated[int, typer.Option(help="Seed.")]


def out_path(value: str | Path) -> Path:
    """An ``--out`` value as a path; an empty one (an unset shell variable) is refused, since it would
    silently mean the current folder."""
    text = os.fspath(value)
    if not text.strip():
        raise typer.BadParameter("is empty (an unset shell variable?); give a folder, such as --out runs/x")
    return Path(text)


def user_errors(command: F) -> F:
    """Report :class:`RLPruneError` as one readable line and exit 1, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RLPruneError as error:
            message = str(error)
        except OSError as error:  # the machine's fault (permissions, full disk, a file in the way)
            message = describe_os_error(error)
        except UnicodeDecodeError as error:
            message = f"a file is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)

    return wrapper  # type: ignore[return-value]
