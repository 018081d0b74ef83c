"""The span-head recipe, run on a small slice through `rlprune train --recipe`, trains to the recorded result.

`tests/data/span-recipe-small.toml` is `train/span-head.toml` cut down (fewer prompts and epochs,
the same code path: two heads, sentences kept whole). `tests/data/span-recipe-small.json` records
what it gave and how far another machine may stray: the final loss of each head, and how many of
the first grounded-qa validation items keep their whole answer at budgets 0.3 and 0.5. The
training fixes its thread count and uses deterministic kernels, so one machine repeats itself
exactly; another CPU rounds differently, hence a tolerance rather than equality (the JSON says how
it was chosen).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlprune.cli import app

DATA = Path(__file__).parent / "data"
RECIPE = DATA / "span-recipe-small.toml"
EXPECTED = json.loads((DATA / "span-recipe-small.json").read_text())


def invoke(*args: object) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def evidence_kept(records: Path, budget: float) -> int:
    """Items whose whole gold answer reached the last layer at ``budget``."""
    rows = [json.loads(line) for line in records.read_text().splitlines()[1:]]  # the first line: settings
    return sum(bool(row["evidence"]) for row in rows if row["budget"] == budget)


@pytest.mark.integration
def test_the_span_recipe_on_a_small_slice_trains_to_the_recorded_result(smollm2, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a thread count unlike the training's, to see it restored
    try:
        invoke("train", "--recipe", RECIPE, "--out", tmp_path / "run")
        assert torch.get_num_threads() == 1 and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    tolerance = EXPECTED["loss_tolerance"]
    assert summary["examples"] == EXPECTED["examples"]
    assert summary["loss"][-1] == pytest.approx(EXPECTED["loss"], abs=tolerance)
    assert summary["later_loss"][-1] == pytest.approx(EXPECTED["later_loss"], abs=tolerance)

    items = EXPECTED["validation_items"]
    invoke(
        "eval",
        *("--suite", "env:grounded-qa:validation", "--policy", tmp_path / "run" / "policy", "--baselines", "none"),
        *("--budgets", "0.3,0.5", "--limit", items, "--evidence-only", "--bootstrap", 100, "--out", tmp_path / "eval"),
    )
    for budget, kept in EXPECTED["evidence_kept"].items():
        got = evidence_kept(tmp_path / "eval" / "records.jsonl", float(budget))
        assert abs(got - kept) <= EXPECTED["evidence_tolerance"], f"{got}/{items} kept at {budget}, recorded {kept}"
