"""Progress shows in logs: off a terminal, plain lines every tenth of the way; on one, only the live bar."""

from __future__ import annotations

import io

from rich.console import Console

from rlprune.progress import Progress


def run(console: Console, steps: int = 100, **kwargs) -> str:
    with Progress(console=console, **kwargs) as progress:
        task = progress.add_task("evaluating", total=steps)
        for _ in range(steps):
            progress.advance(task)
    return console.file.getvalue()


def test_a_log_gets_a_line_every_tenth_and_at_the_end():
    text = run(Console(file=io.StringIO(), force_terminal=False, width=100))
    lines = [line for line in text.splitlines() if line.startswith("evaluating:")]
    assert [line.split()[1] for line in lines] == [f"{n}/100" for n in range(10, 101, 10)]
    assert "(100%)" in lines[-1]


def test_a_short_task_still_reports_its_end():
    text = run(Console(file=io.StringIO(), force_terminal=False), steps=3)
    assert [line.split()[1] for line in text.splitlines() if line.startswith("evaluating:")] == ["1/3", "2/3", "3/3"]


def test_a_terminal_gets_only_the_live_bar():
    text = run(Console(file=io.StringIO(), force_terminal=True, width=100))
    assert "evaluating:" not in text and "evaluating" in text


def test_a_disabled_display_prints_nothing():
    assert run(Console(file=io.StringIO(), force_terminal=False), disable=True) == ""


def test_updates_with_stats_show_them():
    console = Console(file=io.StringIO(), force_terminal=False, width=100)
    with Progress(console=console) as progress:
        task = progress.add_task("training", total=4, stats="")
        progress.update(task, completed=4, stats="reward +0.100")
    assert "training: 4/4 (100%)" in console.file.getvalue() and "reward +0.100" in console.file.getvalue()
