"""Pool several evaluations' records and compare one method with every other, paired by item.

Reads the ``results.json`` of each evaluation folder given (``rlprune eval ... --out DIR``), pools
their records (items keep their own ids, so nothing is paired across suites; a record found in two
folders, such as the full model's, counts once) and prints, per method and budget, accuracy,
evidence kept, partial answers, hallucination and loops, then the paired accuracy differences of
``--method`` against every other method with 95% bootstrap intervals, then where they come from:
the items ``--method`` wins and loses against each, split by whether the full model answers them,
and per suite the items the full model answers that each method misses, with or without the
gold answer's evidence kept: what a cut could still win, and whether finding the evidence is why.

    python benchmarks/pooled_comparison.py runs/eval-grounded runs/eval-niah runs/eval-multikey \
        --method policies/smollm2-135m-span

Records of one name from checkpoints whose files differ are refused, unless ``--same NAME`` says
they are one policy (the same weights saved again: a checkpoint's config records when it was saved).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from rlprune.eval import FULL
from rlprune.eval.report import aggregate, differences, differences_table, markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="evaluation folders holding results.json")
    parser.add_argument("--method", required=True, help="the method compared with the others (its name in the records)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--same", action="append", default=[], metavar="NAME",
        help="pool NAME's records although its checkpoint files differ between folders (the same weights saved again)",
    )  # fmt: skip
    args = parser.parse_args()

    pooled: dict[tuple, dict] = {}
    for folder in args.folders:
        for record in json.loads((folder / "results.json").read_text())["records"]:
            key = (record["method"], record["item"], record["budget"])
            seen = pooled.setdefault(key, record)
            name = record["method"]
            if seen.get("method_id") != record.get("method_id") and name not in args.same:
                raise SystemExit(f"two checkpoints are named {name!r} here: compare them apart, or pass --same")
    records = list(pooled.values())
    names = {r["method"] for r in records}
    method = args.method if args.method in names else Path(args.method).name
    if method not in names:
        raise SystemExit(f"no records of {args.method!r}; methods found: {', '.join(sorted(names))}")
    items = len({r["item"] for r in records})
    console = Console(width=200)
    title = f"{items} items pooled from {', '.join(str(f) for f in args.folders)}"
    console.print(markdown_table(aggregate(records, samples=args.bootstrap), title), highlight=False)
    console.print(differences_table(differences(records, method, samples=args.bootstrap)), highlight=False)
    console.print(wins_table(records, method), highlight=False)
    console.print(misses_table(records), highlight=False)


def wins_table(records: list[dict], method: str) -> str:
    """Items ``method`` answers and another method does not (won) and the reverse (lost), per budget,
    on the items the full model answers and on those it misses: where a difference comes from."""
    correct = {(r["method"], r["item"], r["budget"]): bool(r["correct"]) for r in records}
    full = {item: right for (name, item, _), right in correct.items() if name == FULL}
    rows = ["| method | versus | budget | full model right: won / lost (n) | full model wrong: won / lost (n) |"]
    rows.append("|---|---|---:|---:|---:|")
    budgets = sorted({b for (name, _, b) in correct if name == method and b is not None})
    for other in sorted({name for (name, _, _) in correct} - {method, FULL}):
        for budget in budgets:
            cells = []
            for answered in (True, False):
                pairs = [
                    (correct[(method, item, budget)], correct[(other, item, budget)])
                    for item, right in full.items()
                    if right == answered and (method, item, budget) in correct and (other, item, budget) in correct
                ]
                won, lost = sum(a and not b for a, b in pairs), sum(b and not a for a, b in pairs)
                cells.append(f"{won} / {lost} ({len(pairs)})")
            rows.append(f"| {method} | {other} | {budget} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)


def misses_table(records: list[dict]) -> str:
    """Per method, budget and suite: of the items the full model answers, those the method misses
    (``n``), and of these the ones where the gold answer's evidence reached the last layer."""
    full = {r["item"]: r for r in records if r["method"] == FULL}
    suites = sorted({r.get("meta", {}).get("suite", r["kind"]) for r in full.values() if r["correct"]})
    rows = [f"| method | budget | missed where the full model answers | {' | '.join(suites)} |"]
    rows.append("|---|---:|---:|" + "---:|" * len(suites))
    cuts = {(r["method"], r["budget"]) for r in records if r["method"] != FULL}
    for name, budget in sorted(cuts, key=lambda cut: (cut[0], cut[1] is None, cut[1] or 0.0)):
        missed = {suite: [0, 0] for suite in suites}
        for r in records:
            answered = full.get(r["item"])
            if (r["method"], r["budget"]) != (name, budget) or not answered or not answered["correct"]:
                continue
            if not r["correct"]:
                counts = missed[answered.get("meta", {}).get("suite", answered["kind"])]
                counts[0] += 1
                counts[1] += bool(r["evidence"])
        total = sum(n for n, _ in missed.values())
        cells = " | ".join(f"{n} ({kept} kept)" for n, kept in missed.values())
        rows.append(f"| {name} | {budget} | {total} | {cells} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
