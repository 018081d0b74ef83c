"""The plots an evaluation leaves: accuracy against FLOPs (Pareto), depth x length heatmaps for the
long-context grids, and the ratios chosen per prompt in average-budget mode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlprune.eval.harness import FULL
from rlprune.io import atomic_write


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | Path, dpi: int) -> None:
    """Write ``figure`` as a PNG atomically (a reader never sees half a file) and free it."""
    atomic_write(path, lambda staging: figure.savefig(staging, dpi=dpi, format="png"))
    _pyplot().close(figure)


def pareto_plot(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> None:
    """Accuracy against the FLOPs ratio (evidence kept in an evidence-only run, top-1 agreement where
    the suite has no gold answers)."""
    plt = _pyplot()
    labels = {"accuracy": "answer accuracy", "evidence": "gold answer kept whole", "top1": "top-1 agreement"}
    metric = next((m for m in labels if any(r[m] is not None for r in rows)), None)
    if metric is None:
        return  # no gold answers and no agreement measured: nothing to plot
    label = labels[metric] + (" with the full model" if metric == "top1" else "")
    figure, axes = plt.subplots(figsize=(7.5, 5))
    markers = "osD^vP*Xh<>"
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != FULL]
    for i, method in enumerate(methods):
        points = sorted((r["flops_ratio"], r[metric], r[f"{metric}_ci"]) for r in rows if r["method"] == method)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        errors = np.array([[y - ci[0] for _, y, ci in points], [ci[1] - y for _, y, ci in points]])
        axes.errorbar(
            xs,
            ys,
            yerr=errors.clip(min=0),
            marker=markers[i % len(markers)],
            linestyle="-" if i < 10 else "--",
            color=plt.cm.tab10(i % 10),
            capsize=3,
            label=method,
        )
    for r in rows:
        if r["method"] == FULL:
            axes.scatter([1.0], [r[metric]], marker="*", s=250, color="black", zorder=5, label="full model")
            axes.axhline(r[metric], color="black", linewidth=0.8, linestyle=":")
    axes.set_xlabel("prefill FLOPs ratio (reduced / full)")
    axes.set_ylabel(label)
    axes.set_title(title)
    axes.set_xlim(0, 1.05)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    _save(figure, path, dpi=130)


def heatmap_plot(records: Sequence[dict[str, Any]], path: str | Path, title: str, measure: str = "correct") -> bool:
    """A share by depth x length (long-context suites): answer accuracy (``correct``) or evidence kept
    (``evidence``), one panel per method and budget, the full model first. Returns whether the
    records had that measure, depths and lengths to plot."""
    cells = [r for r in records if r.get(measure) is not None and {"depth", "length"} <= set(r.get("meta") or {})]
    if not cells:
        return False
    plt = _pyplot()
    depths = sorted({r["meta"]["depth"] for r in cells})
    lengths = sorted({r["meta"]["length"] for r in cells})
    runs = sorted({(r["method"], r["budget"]) for r in cells}, key=lambda run: (run[0] != FULL, run[1] or 0, run[0]))
    columns = min(4, len(runs))
    rows = math.ceil(len(runs) / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.9 * rows), squeeze=False)
    for axes, (method, budget) in zip(grid.flat, runs, strict=False):
        accuracy = np.full((len(depths), len(lengths)), np.nan)
        for i, depth in enumerate(depths):
            for j, length in enumerate(lengths):
                hits = [r[measure] for r in cells if (r["method"], r["budget"]) == (method, budget)
                        and (r["meta"]["depth"], r["meta"]["length"]) == (depth, length)]  # fmt: skip
                if hits:
                    accuracy[i, j] = float(np.mean(hits))
        axes.imshow(accuracy, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        for (i, j), value in np.ndenumerate(accuracy):
            if not np.isnan(value):
                axes.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=7)
        axes.set_title(method if budget is None else f"{method} @ {budget}", fontsize=9)
        axes.set_xticks(range(len(lengths)), [str(n) for n in lengths], fontsize=7)
        axes.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths], fontsize=7)
        axes.set_xlabel("prompt tokens", fontsize=8)
        axes.set_ylabel("needle depth", fontsize=8)
    for axes in list(grid.flat)[len(runs) :]:
        axes.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    _save(figure, path, dpi=130)
    return True


def ratio_plot(records: Sequence[dict[str, Any]], path: str | Path, title: str) -> bool:
    """Average mode: each item's realised ratio against the full model's confidence in its own answer,
    one colour per policy and target. Returns whether there was anything to draw."""
    confidence = {r["item"]: r.get("confidence") for r in records if r["method"] == FULL}
    series: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if "budget_proposal" in r and confidence.get(r["item"]) is not None:
            series.setdefault(f"{r['method']} @ {r['budget']:g}", []).append((confidence[r["item"]], r["flops_ratio"]))
    if not series:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, points in series.items():
        axes.scatter([p[0] for p in points], [p[1] for p in points], s=14, alpha=0.6, label=label)
    axes.set_xlabel("full model's confidence in its own answer (geometric-mean token probability)")
    axes.set_ylabel("per-prompt prefill FLOPs ratio")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, path, dpi=120)
    return True
