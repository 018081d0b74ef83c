"""Wall-clock timing that waits for the device: GPU kernels run asynchronously, so a timer read
without synchronising measures the launch, not the work. The CLI, the evaluation harness and the
benchmarks all time through here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Wait until every kernel queued on ``device`` has finished (a no-op on CPU)."""
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


class Stopwatch:
    """Seconds between laps, synchronising ``device`` at each reading."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        synchronize(device)
        self._last = time.perf_counter()

    def lap(self) -> float:
        """Seconds since the previous lap (or the start)."""
        synchronize(self.device)
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        return elapsed


def best_seconds(fn: Callable[[], object], repeats: int, device: torch.device | str | None = None) -> float:
    """The fastest of ``repeats`` runs of ``fn``, after one warm-up run."""
    fn()
    clock = Stopwatch(device)
    times = []
    for _ in range(repeats):
        fn()
        times.append(clock.lap())
    return min(times)


def best_seconds_interleaved(
    fns: Mapping[str, Callable[[], object]], repeats: int, device: torch.device | str | None = None
) -> dict[str, float]:
    """The fastest run of each function, timing them in turn within each of ``repeats`` rounds.

    On a shared or throttling machine a slow spell then hits every function alike, so ratios
    between them (speedups) stay fair. One warm-up round first.
    """
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    clock = Stopwatch(device)
    for _ in range(repeats):
        for name, fn in fns.items():
            clock.lap()
            fn()
            best[name] = min(best[name], clock.lap())
    return best
