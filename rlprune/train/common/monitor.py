"""What a run shows while it trains: a progress bar with episode statistics, and TensorBoard curves.

Both backends report the same things under the same tags: ``episodes/{reward,flops_ratio,kl,solved}``
(means over recent training episodes) and ``validation/{reward,flops_ratio,kl,solved,budget_error}``,
in ``RUN/tensorboard/<backend>`` (``kl`` where episodes teacher-force the full answer, ``solved`` where
they decode their own).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.tensorboard import SummaryWriter

from rlprune.progress import Progress

EPISODE_KEYS = ("reward", "flops_ratio", "kl", "solved")
VALIDATION_KEYS = ("reward", "flops_ratio", "kl", "solved", "budget_error")


class EpisodeWindow:
    """The last 100 finished training episodes: what the progress bar and TensorBoard show."""

    KEYS = EPISODE_KEYS

    def __init__(self) -> None:
        self.episodes: deque[dict[str, float]] = deque(maxlen=100)

    def add(self, reward: float, info: dict[str, Any]) -> None:
        measures = {key: float(info.get(key, np.nan)) for key in ("flops_ratio", "kl", "solved")}
        self.episodes.append({"reward": float(reward)} | measures)

    def means(self) -> dict[str, float | None]:
        """Each key's mean over the episodes it applies to (``None`` where it applies to none)."""
        if not self.episodes:
            return {}
        defined = {k: [e[k] for e in self.episodes if not np.isnan(e[k])] for k in self.KEYS}
        return {k: float(np.mean(v)) if v else None for k, v in defined.items()}

    @staticmethod
    def describe(means: dict[str, float | None]) -> str:
        if not means:
            return "collecting first episodes"
        shown = f"reward {means['reward']:+.3f}  FLOPs {means['flops_ratio']:.3f}"
        shown += "" if means.get("kl") is None else f"  KL {means['kl']:.3f}"
        return shown + ("" if means.get("solved") is None else f"  solved {means['solved']:.2f}")


def training_progress(quiet: bool) -> Progress:
    """The progress display both backends use: steps, episode statistics, elapsed and remaining time."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, disable=quiet)


class Monitor:
    """The progress bar and the TensorBoard writer of one training session (a context manager)."""

    def __init__(self, logs: Path, label: str, total: int, start: int, quiet: bool) -> None:
        self.logs, self.label, self.total, self.start = logs, label, total, start
        self.progress = training_progress(quiet)
        self.writer: SummaryWriter | None = None
        self.bar: Any = None

    def __enter__(self) -> Monitor:
        self.progress.__enter__()
        self.bar = self.progress.add_task(self.label, total=self.total, completed=self.start, stats="")
        self.writer = SummaryWriter(str(self.logs))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.writer is not None:
            self.writer.close()
        self.progress.__exit__(kind, error, trace)

    def show(self, timesteps: int, means: dict[str, float]) -> None:
        """Move the bar to ``timesteps`` with the recent episodes' means."""
        self.progress.update(self.bar, completed=min(timesteps, self.total), stats=EpisodeWindow.describe(means))

    def scalars(self, group: str, values: dict[str, Any], keys: tuple[str, ...], timesteps: int) -> None:
        """Log ``values[key]`` for each of ``keys`` with a value as ``group/key`` at ``timesteps``."""
        assert self.writer is not None, "the monitor logs inside its with-block"
        for key in keys:
            if values.get(key) is not None:  # a measure that applies to no episode is None
                self.writer.add_scalar(f"{group}/{key}", values[key], timesteps)
