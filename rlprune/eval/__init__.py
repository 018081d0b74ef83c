"""Evaluation harness: methods side by side at matched FLOPs budgets on built-in or JSONL suites.

from rlprune.eval import EvalConfig, evaluate
rows = evaluate(EvalConfig("grounded-qa", policies=("policies/smollm2-135m-grounded",)), "eval/grounded-qa")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlprune.data.suites import SUITES, SuiteSpec
from rlprune.errors import RLPruneError
from rlprune.eval.harness import (
    ALL_BASELINES,
    FULL,
    EvalConfig,
    Evaluation,
)
from rlprune.eval.options import parse_baselines, parse_budgets, parse_depths
from rlprune.eval.report import aggregate, markdown_table, write_results
from rlprune.eval.suites import load_suite


def evaluate(
    config: EvalConfig,
    out: str | Path,
    *,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    show_progress: bool = True,
    fresh: bool = False,
) -> list[dict[str, Any]]:
    """Run (or resume) an evaluation into ``out`` and write its reports; returns the aggregate rows.

    With ``fresh``, records already in ``out`` are set aside and everything is evaluated again. An
    empty ``out`` is refused: it would silently mean the current folder.
    """
    if isinstance(out, str) and not out.strip():
        raise RLPruneError("out is empty; give the folder for the results, such as runs/eval")
    with Evaluation(config, out, model=model, tokenizer=tokenizer, fresh=fresh) as evaluation:
        records = evaluation.run(show_progress)
        return write_results(out, records, _meta(config, evaluation), config.bootstrap_samples, config.group_by)


def _meta(config: EvalConfig, evaluation: Evaluation) -> dict[str, Any]:
    return {
        "suite": evaluation.suite,
        "items": len(evaluation.tasks),
        "model": config.model,
        "methods": [FULL] + [m.name for m in evaluation.methods],
        "policies": [m.name for m in evaluation.methods[: len(config.policies)]],
        "budgets": list(config.budgets),
        "max_new_tokens": config.max_new_tokens,
    }


__all__ = [
    "ALL_BASELINES",
    "FULL",
    "SUITES",
    "EvalConfig",
    "Evaluation",
    "SuiteSpec",
    "aggregate",
    "evaluate",
    "load_suite",
    "markdown_table",
    "parse_baselines",
    "parse_budgets",
    "parse_depths",
    "write_results",
]
