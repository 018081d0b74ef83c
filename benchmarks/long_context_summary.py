"""Pool the four long-context grids (``make long-suites``) into one picture and one table.

Reads ``eval/results/{niah,niah-multikey,niah-multivalue,variable-tracking}/results.json`` and
writes ``eval/results/long-context-grids/``: ``heatmap.png`` (accuracy by depth x length over all
four suites, one panel per method and budget, the full model first) and ``summary.md`` (accuracy
per suite and method, reduced methods' accuracy by needle depth, then time to first token by
prompt length over every item).

    python benchmarks/long_context_summary.py [--results eval/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlprune.data.long import LONG_KINDS
from rlprune.eval import FULL
from rlprune.eval.plots import heatmap_plot
from rlprune.eval.report import speed_by_length, speed_table
from rlprune.io import atomic_write_text


def accuracy_table(by_suite: dict[str, list[dict]]) -> str:
    """Accuracy per method and budget (rows) and suite (columns), with the mean FLOPs ratio."""
    runs = sorted(
        {(r["method"], r["budget"]) for records in by_suite.values() for r in records},
        key=lambda run: (run[0] != FULL, run[1] or 0, run[0]),
    )
    suites = list(by_suite)
    lines = [
        "| method | budget | " + " | ".join(suites) + " | all | FLOPs |",
        "|---|---:|" + "---:|" * (len(suites) + 2),
    ]
    for method, budget in runs:
        cells, pooled, flops = [], [], []
        for suite in suites:
            group = [r for r in by_suite[suite] if (r["method"], r["budget"]) == (method, budget)]
            hits = [bool(r["correct"]) for r in group]
            pooled += hits
            flops += [r["flops_ratio"] for r in group]
            cells.append(f"{sum(hits)}/{len(hits)}" if hits else "–")
        share = f"{100 * sum(pooled) / len(pooled):.0f}%" if pooled else "–"
        ratio = f"{sum(flops) / len(flops):.3f}" if flops else "–"
        label = "–" if budget is None else f"{budget:g}"
        lines.append(f"| {method} | {label} | " + " | ".join(cells) + f" | {share} | {ratio} |")
    return "\n".join(lines) + "\n"


def depth_table(records: list[dict]) -> str:
    """Correct answers of all reduced methods together, per budget and needle depth."""
    reduced = [r for r in records if r["method"] != FULL]
    budgets = sorted({r["budget"] for r in reduced})
    depths = sorted({r["meta"]["depth"] for r in reduced})
    lines = ["| budget | " + " | ".join(f"depth {d:g}" for d in depths) + " |", "|---:|" + "---:|" * len(depths)]
    for budget in budgets:
        cells = []
        for depth in depths:
            hits = [bool(r["correct"]) for r in reduced if r["budget"] == budget and r["meta"]["depth"] == depth]
            cells.append(f"{sum(hits)}/{len(hits)}")
        lines.append(f"| {budget:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("eval/results"))
    args = parser.parse_args()

    by_suite = {}
    for suite in LONG_KINDS:
        path = args.results / suite / "results.json"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run `make long-suites` first")
        by_suite[suite] = json.loads(path.read_text())["records"]
    records = [r for group in by_suite.values() for r in group]
    out = args.results / "long-context-grids"
    out.mkdir(parents=True, exist_ok=True)
    items = {r["item"] for r in records}
    heatmap_plot(records, out / "heatmap.png", f"four long-context grids on real essays: {len(items)} items")
    text = (
        f"# Long-context grids: {len(items)} items\n\n"
        "Correct answers per suite (items answered correctly / items), pooled accuracy and mean FLOPs ratio:\n\n"
        + accuracy_table(by_suite)
        + "\nCorrect answers of all reduced methods together, by needle depth (0: start of the context):\n\n"
        + depth_table(records)
        + "\n## Time to first token by prompt length (all four suites)\n\n"
        + speed_table(speed_by_length(records))
    )
    atomic_write_text(out / "summary.md", text)
    print(text)


if __name__ == "__main__":
    main()
