"""Progress bars that also show in logs: a live bar on a terminal, a plain line now and then elsewhere."""

from __future__ import annotations

import time
from typing import Any

from rich import progress as rich_progress
from rich.progress import TaskID

LOG_EVERY_SECONDS = 30.0
"""Off a terminal, the longest a task goes without a line."""
LOG_EVERY_FRACTION = 0.1
"""Off a terminal, a line each time a task gets this much further."""


class Progress(rich_progress.Progress):
    """rich's progress display; where the console is not a terminal (``make demo > log``, CI), where
    rich would draw nothing until the end, each task also prints one plain line every tenth of the
    way or every 30 seconds, and one when it finishes."""

    def __init__(self, *columns: Any, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self._last_line: dict[TaskID, tuple[float, int]] = {}  # task -> (time, tenths done) at its last line

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        if self.disable or self.console.is_terminal:
            return
        task = next(t for t in self.tasks if t.id == task_id)
        if not task.total:
            return
        now, fraction = time.monotonic(), min(task.completed / task.total, 1.0)
        tenth = int(fraction / LOG_EVERY_FRACTION + 1e-9)  # how many tenths are done
        then, before = self._last_line.get(task_id, (now, 0))
        if before == int(1 / LOG_EVERY_FRACTION + 1e-9):
            return  # its last line is already out
        if tenth <= before and now - then < LOG_EVERY_SECONDS and fraction < 1.0:
            return
        self._last_line[task_id] = (now, tenth)
        stats = task.fields.get("stats")
        elapsed = task.elapsed or 0.0
        line = f"{task.description}: {task.completed:g}/{task.total:g} ({fraction:.0%}), {elapsed:.0f} s"
        self.console.print(line + (f", {stats}" if stats else ""), highlight=False, markup=False)
