"""``rlprune eval``: policies, baselines and the full model side by side at matched FLOPs budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from rlprune.cli.common import DeviceOption, DtypeOption, ModelOption, console, err_console, out_path, user_errors

SuiteOption = Annotated[
    str,
    typer.Option(
        help="A built-in suite (test split: grounded-qa, mixed-hard, counterfactual, kv-retrieval, long-context, "
        "arithmetic, short-answers, instructions; real-text grids: niah, niah-multikey, niah-multivalue, "
        "niah-multiquery, variable-tracking, cloze, everyday-gen, everyday-prose), a training preset's split "
        "(env:PRESET[:SPLIT]) or a .jsonl file."
    ),
]
PolicyOption = Annotated[
    list[str] | None,
    typer.Option(help="A policy checkpoint folder, a shipped policy's name or a baseline spec (repeatable)."),
]
BaselinesOption = Annotated[
    str, typer.Option(help='"all" (random, fastv, snapkv, pyramid, tome), "none", or a comma-separated list.')
]
OutOption = Annotated[
    Path, typer.Option(parser=out_path, help="Folder for results.json/.csv/.md, pareto.png and the journal.")
]
AdapterOption = Annotated[
    Path | None, typer.Option(help="A LoRA adapter from `rlprune train-output`, merged into the model.")
]
BatchSizeOption = Annotated[
    int, typer.Option(min=1, help="Items generated together (times are then each item's share of its batch).")
]
GroupByOption = Annotated[
    str, typer.Option(help="Also report every metric per value of this field (a JSONL field, or kind).")
]
PerCellOption = Annotated[
    int | None, typer.Option(min=1, help="Items per depth x length cell of a long-context suite (niah, ...).")
]
DepthsOption = Annotated[
    str | None, typer.Option(help="Needle depths of a long-context suite, e.g. 0,0.5,1 (default 0 to 1 by 0.25).")
]
ForceNewOption = Annotated[
    bool,
    typer.Option(
        "--force-new",
        help="Set aside the records already in OUT (records.jsonl.old, .old.1 ...) and evaluate everything again.",
    ),
]
AgreementOption = Annotated[
    bool,
    typer.Option(help="Teacher-force the full answer through every method (KL, top-1); off halves the time."),
]
EvidenceOnlyOption = Annotated[
    bool,
    typer.Option(
        "--evidence-only",
        help="No generation: only whether each method keeps the gold answer's tokens (minutes for hundreds).",
    ),
]

BudgetModeOption = Annotated[
    str,
    typer.Option(
        help="prompt: every item at each budget; average: each budget is the mean over the suite's items, each "
        "item at the ratio the policy proposes for it (rlprune.budget)."
    ),
]
RatioBoundOption = Annotated[
    float | None, typer.Option(help="With --budget-mode average: a bound on one item's ratio.")
]


@user_errors
def evaluate(
    suite: SuiteOption = "grounded-qa",
    model: ModelOption = "smollm2-135m",
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    policy: PolicyOption = None,
    baselines: BaselinesOption = "all",
    budgets: Annotated[str, typer.Option(help="Target prefill FLOPs ratios, comma-separated.")] = "0.3,0.5,0.7",
    out: OutOption = Path("runs/eval"),
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N items of the suite.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Most tokens per answer.")] = 32,
    bootstrap: Annotated[int, typer.Option(min=100, help="Bootstrap resamples for the 95% intervals.")] = 1000,
    adapter: AdapterOption = None,
    batch_size: BatchSizeOption = 1,
    group_by: GroupByOption = "kind",
    per_cell: PerCellOption = None,
    depths: DepthsOption = None,
    force_new: ForceNewOption = False,
    agreement: AgreementOption = True,
    evidence_only: EvidenceOnlyOption = False,
    budget_mode: BudgetModeOption = "prompt",
    floor: RatioBoundOption = None,
    ceiling: RatioBoundOption = None,
    oracle_grid: Annotated[
        str | None,
        typer.Option(
            help="With --budget-mode average: also run each policy held to these ratios (comma-separated) and "
            "report an oracle that knows each item's best one, at the policy's realised mean."
        ),
    ] = None,
) -> None:
    """Compare policies, baselines and the full model at matched FLOPs budgets (resumes in OUT)."""
    from rlprune.eval import EvalConfig, parse_baselines, parse_budgets, parse_depths
    from rlprune.eval import evaluate as run_evaluation

    config = EvalConfig(
        suite=suite,
        model=model,
        device=device,
        dtype=dtype,
        policies=tuple(policy or ()),
        baselines=parse_baselines(baselines),
        budgets=parse_budgets(budgets),
        limit=limit,
        max_new_tokens=max_new_tokens,
        bootstrap_samples=bootstrap,
        adapter=None if adapter is None else str(adapter),
        batch_size=batch_size,
        group_by=group_by,
        per_cell=per_cell,
        depths=None if depths is None else parse_depths(depths),
        agreement=agreement,
        evidence_only=evidence_only,
        budget_mode=budget_mode,
        floor=floor,
        ceiling=ceiling,
        oracle_grid=() if oracle_grid is None else parse_budgets(oracle_grid, "--oracle-grid"),
    )
    rows = run_evaluation(config, out, fresh=force_new)
    _print_results(rows, out)


def _print_results(rows: list[dict[str, Any]], out: Path) -> None:
    """The results table, a warning per method that missed its budget, and where the files are."""
    from rlprune.eval import markdown_table
    from rlprune.eval.report import budget_misses
    from rlprune.inference import BUDGET_TOLERANCE

    console.print(markdown_table(rows), highlight=False)
    for miss in budget_misses(rows):
        err_console.print(
            f"[yellow]warning:[/] {escape(miss)} misses its budget by more than {BUDGET_TOLERANCE}", highlight=False
        )
    console.print(f"results in {out}/results.md, results.csv, results.json and pareto.png")
