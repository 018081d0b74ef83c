"""Aggregates with bootstrap intervals, and the files an evaluation leaves: JSON, CSV, Markdown and the plots
(drawn by :mod:`rlprune.eval.plots`)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlprune.budget import oracle
from rlprune.eval.harness import FULL, HELD
from rlprune.eval.plots import heatmap_plot, pareto_plot, ratio_plot
from rlprune.inference import BUDGET_TOLERANCE, budget_missed
from rlprune.io import atomic_write_text
from rlprune.metrics import degenerate

# (key, heading, format) for the table: "%" prints a share as a percentage, otherwise a number format
COLUMNS = (
    ("accuracy", "accuracy", "%"),
    ("evidence", "evidence kept", "%"),
    ("partial", "partial", "%"),
    ("hallucination", "halluc.", "%"),
    ("unsupported", "unsupported", "%"),
    ("said_prior", "prior", "%"),
    ("degeneration", "loops", "%"),
    ("echo", "echoes", "%"),
    ("other_value", "other value", "%"),
    ("out_of_context_mass", "OOC mass", ".3f"),
    ("kl", "KL", ".3f"),
    ("top1", "top-1", "%"),
    ("mean_new_tokens", "answer tokens", ".1f"),
    ("flops_ratio", "FLOPs", ".3f"),
    ("kv_ratio", "KV", ".3f"),
    ("prefill_speedup", "prefill speedup", ".3f"),
    ("decode_speedup", "decode tok/s ratio", ".3f"),
)


def bootstrap_interval(
    columns: Sequence[Sequence[float]],
    statistic: Callable[..., float],
    *,
    samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(*columns)`` over items resampled with replacement.

    The columns are aligned per item and resampled together, so paired statistics (a speedup
    over the full model on the same prompts) keep their pairing.
    """
    arrays = [np.asarray(c, dtype=float) for c in columns]
    n = len(arrays[0])
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(samples, n))
    values = np.array([statistic(*(a[p] for a in arrays)) for p in picks])
    tail = (1.0 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _summary(columns: list[list[float]], statistic=_mean, samples: int = 1000, seed: int = 0) -> tuple:
    """``(value, [low, high])`` of ``statistic`` over aligned per-item columns; ``(None, None)`` if empty."""
    if not columns[0]:
        return None, None
    value = statistic(*(np.asarray(c, dtype=float) for c in columns))
    return value, list(bootstrap_interval(columns, statistic, samples=samples, seed=seed))


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def aggregate(records: Sequence[dict[str, Any]], samples: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (method, budget): means with 95% bootstrap intervals over items.

    Speedups are paired with the full model on the same item: the median over items of full
    prefill seconds over the method's (prefill), and of the method's decoded tokens per second
    over the full model's (decode). Medians keep a run on a busy machine from being skewed by
    the few records that shared the CPU with something else.
    """
    full = {r["item"]: r for r in records if r["method"] == FULL}
    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["method"], record["budget"]), []).append(record)
    rows = []
    for (method, budget), group in groups.items():
        generated = [r for r in group if r.get("answer") is not None]  # none in an evidence-only run
        paired = [(full[r["item"]], r) for r in generated if r["item"] in full and full[r["item"]].get("prefill_s")]
        decoded = [(f, r) for f, r in paired if f["new_tokens"] > 1 and r["new_tokens"] > 1]
        measures: dict[str, tuple[list[list[float]], Any]] = {
            "accuracy": ([[float(r["correct"]) for r in group if r.get("correct") is not None]], _mean),
            "evidence": ([[float(r["evidence"]) for r in group if r.get("evidence") is not None]], _mean),
            "partial": ([[float(r["partial"]) for r in group if r.get("partial") is not None]], _mean),
            "hallucination": ([[float(r["hallucinated"]) for r in group if r.get("hallucinated") is not None]], _mean),
            "unsupported": (
                [[float(bool(r["unsupported"])) for r in group if r.get("unsupported") is not None]],
                _mean,
            ),
            "said_prior": ([[float(r["said_prior"]) for r in group if r.get("said_prior") is not None]], _mean),
            "degeneration": ([[float(degenerate(r["answer"])) for r in generated]], _mean),
            **{  # the agreement measures are None in a run without teacher forcing, echo and other value in
                # older records and other_value where no other values are known
                key: ([[float(r[key]) for r in group if r.get(key) is not None]], _mean)
                for key in ("echo", "other_value", "out_of_context_mass", "kl", "top1", "flops_ratio", "kv_ratio")
            },
            "mean_new_tokens": (
                [[float(r["new_tokens"]) for r in generated]],
                _mean,
            ),  # what output-side reduction cuts
            "prefill_speedup": ([[f["prefill_s"] / r["prefill_s"] for f, r in paired]], _median),
            "decode_speedup": (
                [[(r["new_tokens"] - 1) / r["decode_s"] * f["decode_s"] / (f["new_tokens"] - 1) for f, r in decoded]],
                _median,
            ),
        }
        row: dict[str, Any] = {"method": method, "budget": budget, "items": len(group)}
        for key, (columns, statistic) in measures.items():
            row[key], row[f"{key}_ci"] = _summary(columns, statistic, samples, seed)
        timed = [r["prefill_s"] for r in generated if r.get("prefill_s") is not None]
        row["prefill_ms"] = 1000 * _mean(np.array(timed)) if timed else None
        row["budget_missed"] = row["flops_ratio"] is not None and budget_missed(budget, row["flops_ratio"])
        ratios = [r["flops_ratio"] for r in group if r.get("flops_ratio") is not None]
        row["flops_std"] = float(np.std(ratios)) if ratios else None  # the spread of per-item ratios (average mode)
        rows.append(row)
    return rows


def differences(
    records: Sequence[dict[str, Any]], method: str, samples: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """Accuracy of ``method`` minus every other method's at the same budget, paired by item.

    One row per (other method, budget) with the mean difference and its 95% paired bootstrap
    interval: an interval above 0 says ``method`` is better on this suite.
    """
    by_key = {(r["method"], r["budget"], r["item"]): r for r in records if r.get("correct") is not None}
    budgets = sorted({b for m, b, _ in by_key if m == method and b is not None})
    others = [m for m in dict.fromkeys(r["method"] for r in records) if m not in (method, FULL)]
    rows = []
    for budget in budgets:
        for other in [FULL, *others]:
            other_budget = None if other == FULL else budget
            pairs = [
                (float(r["correct"]), float(by_key[(other, other_budget, item)]["correct"]))
                for (m, b, item), r in by_key.items()
                if m == method and b == budget and (other, other_budget, item) in by_key
            ]
            if not pairs:
                continue
            ours, theirs = zip(*pairs, strict=True)
            value, interval = _summary([list(ours), list(theirs)], lambda a, b: float(np.mean(a - b)), samples, seed)
            rows.append(
                {
                    "method": method,
                    "versus": other,
                    "budget": budget,
                    "items": len(pairs),
                    "difference": value,
                    "difference_ci": interval,
                }
            )
    return rows


def differences_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| method | versus | budget | items | accuracy difference [95% CI] |", "|---|---|---:|---:|---:|"]
    for r in rows:
        cell = _cell(r["difference"], "%", r["difference_ci"])
        lines.append(f"| {r['method']} | {r['versus']} | {r['budget']:g} | {r['items']} | {cell} |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None, form: str, interval: list[float] | None = None) -> str:
    """``value [low, high]``, the bounds printed like the value (shares as percentages)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"

    def number(x: float) -> str:
        return f"{100 * x:.1f}" if form == "%" else format(x, form)

    text = number(value) + ("%" if form == "%" else "")
    if interval and not any(math.isnan(x) for x in interval):
        text += f" [{number(interval[0])}, {number(interval[1])}]"
    return text


def markdown_table(rows: Sequence[dict[str, Any]], title: str = "") -> str:
    """The aggregates as a Markdown table, 95% intervals in brackets; empty columns left out."""
    shown = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    lines = [f"### {title}", ""] if title else []
    lines.append("| method | budget | items | " + " | ".join(h for _, h, _ in shown) + " |")
    lines.append("|---|---:|---:|" + "---:|" * len(shown))
    for r in rows:
        budget = "–" if r["budget"] is None else f"{r['budget']:g}"
        cells = [_cell(r[k], form, r.get(f"{k}_ci")) + (" ⚠" if k == "flops_ratio" and r.get("budget_missed") else "")
                 for k, _, form in shown]  # fmt: skip
        lines.append(f"| {r['method']} | {budget} | {r['items']} | " + " | ".join(cells) + " |")
    if any(r.get("budget_missed") for r in rows):
        lines += ["", f"⚠ the mean FLOPs ratio misses the budget by more than {BUDGET_TOLERANCE}: compare with care."]
    return "\n".join(lines) + "\n"


def budget_misses(rows: Sequence[dict[str, Any]]) -> list[str]:
    """``"snapkv @ 0.3: FLOPs 0.718"`` for every row whose FLOPs ratio misses its budget."""
    return [f"{r['method']} @ {r['budget']:g}: FLOPs {r['flops_ratio']:.3f}" for r in rows if r.get("budget_missed")]


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """The aggregates as CSV, one column per value and per interval bound."""
    header = ["method", "budget", "items"]
    for key, _, _ in COLUMNS:
        header += [key, f"{key}_low", f"{key}_high"]
    header.append("prefill_ms")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for r in rows:
        line = [r["method"], "" if r["budget"] is None else r["budget"], r["items"]]
        for key, _, _ in COLUMNS:
            interval = r.get(f"{key}_ci") or ["", ""]
            line += ["" if r.get(key) is None else r[key], *interval]
        writer.writerow([*line, "" if r["prefill_ms"] is None else r["prefill_ms"]])
    return buffer.getvalue()


LENGTH_BUCKETS = (512, 1024, 2048, 4096, 8192)
"""Upper bounds (prompt tokens) of the buckets time to first token is reported in."""


def oracle_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Average mode with ``--oracle-grid``: per policy and target, its answers and realised mean ratio
    against :func:`rlprune.budget.oracle` over the same policy held to every grid ratio, at that mean."""
    held: dict[str, dict[float, dict[int, dict]]] = {}
    for r in records:
        if r["method"].endswith(HELD) and r.get("correct") is not None:
            held.setdefault(r["method"][: -len(HELD)], {}).setdefault(r["budget"], {})[r["item"]] = r
    rows = []
    for name, grid in held.items():
        ratios = sorted(grid)
        for budget in sorted({r["budget"] for r in records if r["method"] == name}):
            mine = {r["item"]: r for r in records if (r["method"], r["budget"]) == (name, budget)}
            items = [i for i, r in mine.items() if r.get("correct") is not None and all(i in grid[g] for g in ratios)]
            if not items:
                continue
            spent = torch.tensor([[grid[g][i]["flops_ratio"] for g in ratios] for i in items])
            answered = torch.tensor([[bool(grid[g][i]["correct"]) for g in ratios] for i in items])
            mean = float(np.mean([mine[i]["flops_ratio"] for i in items]))
            best, best_mean = oracle(spent, answered, mean)
            stable, stable_mean = oracle(spent, answered, mean, stable=True)
            rows.append({
                "method": name, "budget": budget, "items": len(items), "grid": ratios,
                "correct": sum(bool(mine[i]["correct"]) for i in items), "flops_mean": mean,
                "oracle": best, "oracle_flops_mean": best_mean, "stable_oracle": stable,
                "stable_oracle_flops_mean": stable_mean,
            })  # fmt: skip
    return rows


def oracle_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| method | average | correct | realised mean | oracle (mean) | stable oracle (mean) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['budget']:g} | {r['correct']} / {r['items']} | {r['flops_mean']:.3f} | "
            f"{r['oracle']} ({r['oracle_flops_mean']:.3f}) | "
            f"{r['stable_oracle']} ({r['stable_oracle_flops_mean']:.3f}) |"
        )
    grid = ", ".join(f"{g:g}" for g in rows[0]["grid"]) if rows else ""
    lines.append(
        f"\nThe oracle runs each item at the cheapest grid ratio ({grid}) at which the policy held to it answered, "
        "cheapest first while the mean fits; the stable oracle only at a ratio from which every larger one answers."
    )
    return "\n".join(lines) + "\n"


def length_bucket(tokens: int) -> str:
    """``"513-1024"``-style label of the bucket ``tokens`` falls in."""
    low = 1
    for high in LENGTH_BUCKETS:
        if tokens <= high:
            return f"{low}-{high}"
        low = high + 1
    return f">{LENGTH_BUCKETS[-1]}"


def speed_by_length(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per prompt-length bucket and method: median prefill time (time to first token), its speedup
    over the full model on the same items, and median decoding speed."""
    rows = []

    def bucket_of(record: dict[str, Any]) -> str:  # a long-context grid's own target length, else a range
        target = (record.get("meta") or {}).get("length")
        return f"~{target}" if target is not None else length_bucket(record["prompt_tokens"])

    buckets = sorted({bucket_of(r) for r in records}, key=lambda b: int(b.strip(">~").split("-")[0]))
    for bucket in buckets:
        inside = [r for r in records if bucket_of(r) == bucket]
        full = {r["item"]: r for r in inside if r["method"] == FULL}
        runs = sorted(
            {(r["method"], r["budget"]) for r in inside}, key=lambda run: (run[0] != FULL, run[1] or 0, run[0])
        )
        for method, budget in runs:
            group = [r for r in inside if (r["method"], r["budget"]) == (method, budget)]
            paired = [(full[r["item"]], r) for r in group if r["item"] in full]
            decoding = [
                (r["new_tokens"] - 1) / r["decode_s"] for r in group if r["new_tokens"] > 1 and r["decode_s"] > 0
            ]
            speedups = [f["prefill_s"] / r["prefill_s"] for f, r in paired]
            rows.append({
                "bucket": bucket, "method": method, "budget": budget, "items": len(group),
                "prompt_tokens": float(np.median([r["prompt_tokens"] for r in group])),
                "ttft_ms": 1000 * float(np.median([r["prefill_s"] for r in group])),
                "ttft_speedup": float(np.median(speedups)) if speedups else None,
                "decode_tok_s": float(np.median(decoding)) if decoding else None,
            })  # fmt: skip
    return rows


def speed_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: time to first token and decoding speed by prompt length."""
    lines = [
        "| prompt tokens | method | budget | items | median tokens | TTFT ms | TTFT speedup | decode tok/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speedup = "" if r["ttft_speedup"] is None else f"{r['ttft_speedup']:.2f}x"
        decode = "" if r["decode_tok_s"] is None else f"{r['decode_tok_s']:.1f}"
        budget = "–" if r["budget"] is None else f"{r['budget']}"
        lines.append(
            f"| {r['bucket']} | {r['method']} | {budget} | {r['items']} | {r['prompt_tokens']:.0f} | "
            f"{r['ttft_ms']:.0f} | {speedup} | {decode} |"
        )
    return "\n".join(lines) + "\n"


def group_of(record: dict[str, Any], field: str) -> str:
    """The record's value of ``field``: its item's own metadata first (a JSONL line's extra fields),
    then the record's (``kind``, ``method`` ...); ``"-"`` where it has none."""
    meta = record.get("meta") or {}
    value = meta.get(field, record.get(field))
    return "-" if value is None else str(value)


def write_results(
    out: str | Path,
    records: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    samples: int = 1000,
    group_by: str = "kind",
) -> list[dict[str, Any]]:
    """Write results.json, results.csv, results.md, pareto.png (and heatmap.png for suites with depths
    and lengths) into ``out``; return the aggregates.

    With more than one value of ``group_by`` among the records, every metric is also reported per group.
    """
    out = Path(out)
    rows = aggregate(records, samples=samples)
    title = f"{meta['suite']}: {meta['items']} items, {meta['model']}"
    groups = sorted({group_of(r, group_by) for r in records})
    by_group = {
        group: aggregate([r for r in records if group_of(r, group_by) == group], samples=samples) for group in groups
    }
    policies = [m for m in meta.get("policies", []) if any(r["method"] == m for r in records)]
    compared = [row for policy in policies for row in differences(records, policy, samples)]
    speed = speed_by_length([r for r in records if r.get("prefill_s") is not None])
    oracles = oracle_rows(records)
    extra = {
        f"by_{group_by}": by_group if len(groups) > 1 else {},
        "differences": compared,
        "speed_by_length": speed,
        "oracle": oracles,
    }
    atomic_write_text(
        out / "results.json", json.dumps({**meta, "aggregates": rows, **extra, "records": list(records)}, indent=1)
    )
    atomic_write_text(out / "results.csv", csv_text(rows))
    text = markdown_table(rows, title)
    if compared:
        text += "\n### Paired accuracy differences\n\n" + differences_table(compared)
    for group, group_rows in extra[f"by_{group_by}"].items():
        label = group if group_by == "kind" else f"{group_by} = {group}"
        text += "\n" + markdown_table(group_rows, f"{label} ({group_rows[0]['items']} items)")
    if oracles:
        text += "\n### Per-prompt ratios against an oracle\n\n" + oracle_table(oracles)
    if speed:
        text += "\n### Time to first token by prompt length\n\n" + speed_table(speed)
    atomic_write_text(out / "results.md", text)
    pareto_plot(rows, out / "pareto.png", title)
    heatmap_plot(records, out / "heatmap.png", title)  # long-context suites: accuracy by depth x length
    heatmap_plot(records, out / "evidence.png", f"{title}: gold answer kept whole", measure="evidence")
    ratio_plot(records, out / "ratios.png", f"{title}: ratios chosen per prompt")  # average mode
    return rows
