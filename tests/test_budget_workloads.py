"""Average budgets on every workload shape: one batch, a padded batch under apply, a list through
generate, a few batches, a JSONL file through the CLI. Each meets its target mean within
AVERAGE_TOLERANCE, or says why it could not."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch
from test_budget import _head, _padded

import rlprune
from rlprune import Reducer, load_model
from rlprune.budget import AVERAGE_TOLERANCE, AverageBudget, AverageBudgetWarning, BudgetController
from rlprune.errors import InvalidArgumentError
from rlprune.policies import save_policy

PASSAGE = "The harbour is quiet in winter. Boats rest on the shingle. "
QUESTION = "Who is the keeper?"


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_model("tiny-random")
    return model, tokenizer, _head(model)


def contexts(count: int) -> list[str]:
    """Passages of varied length, so the head proposes a different ratio for each."""
    return [PASSAGE * (3 + i % 5) + f"The keeper is Ada {i}." for i in range(count)]


def prompts(tokenizer, count: int) -> list[torch.Tensor]:
    return [rlprune.build_prompt(tokenizer, QUESTION, context).input_ids for context in contexts(count)]


def assert_held(stream: BudgetController, target: float) -> None:
    assert abs(stream.mean - target) <= AVERAGE_TOLERANCE, stream.summary()
    assert stream.shortfall() is None


def test_one_batch_meets_the_target_though_every_proposal_is_far_from_it(tiny):
    model, tokenizer, head = tiny
    stream = BudgetController(AverageBudget(0.4))
    reducer = Reducer(model)
    rows = prompts(tokenizer, 4)
    outs = reducer.run([r[0] for r in rows], policy=head, budget=stream, protect_last=8)
    stream.record(out.flops_ratio for out in outs)
    assert min(stream.proposals) > 0.4 + AVERAGE_TOLERANCE  # at offset 0 every row would run above the target
    assert_held(stream, 0.4)
    shift = [g - p for g, p in zip(stream.assigned, stream.proposals, strict=True)]
    assert max(shift) - min(shift) < 1e-9 and max(stream.assigned) - min(stream.assigned) > 0.03  # one offset


@pytest.mark.parametrize("budget", [AverageBudget(0.4), 0.4])
def test_a_padded_batch_under_apply_meets_the_target_without_a_warning(tiny, budget):
    model, tokenizer, head = tiny
    ids, mask = _padded(prompts(tokenizer, 4))
    stream = BudgetController(budget) if isinstance(budget, AverageBudget) else None
    mode = None if stream is not None else "average"
    with warnings.catch_warnings():
        warnings.simplefilter("error", AverageBudgetWarning)
        with rlprune.apply(model, head, budget=stream or budget, budget_mode=mode) as reducer:
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, do_sample=False, pad_token_id=0)
            batch = model.forward.state
    ratios = [reducer.projected_flops(row) / reducer.full_flops(row) for row in batch]
    assert abs(sum(ratios) / len(ratios) - 0.4) <= AVERAGE_TOLERANCE
    if stream is not None:
        assert_held(stream, 0.4)


def test_generate_of_a_list_meets_the_target(tiny):
    model, tokenizer, head = tiny
    stream = BudgetController(AverageBudget(0.4))
    answers = rlprune.generate(model, tokenizer, [QUESTION] * 4, context=contexts(4), policy=head, budget=stream,
                               max_new_tokens=1)  # fmt: skip
    assert len(answers) == 4 and stream.count == 4
    assert_held(stream, 0.4)
    with warnings.catch_warnings():  # its own controller: it would warn if the mean missed
        warnings.simplefilter("error", AverageBudgetWarning)
        rlprune.generate(model, tokenizer, [QUESTION] * 4, context=contexts(4), policy=head, budget=0.4,
                         budget_mode="average", max_new_tokens=1)  # fmt: skip


@pytest.mark.parametrize("batch", [1, 3])
def test_a_few_batches_meet_the_target(tiny, batch):
    model, tokenizer, head = tiny
    stream = BudgetController(AverageBudget(0.4))
    texts = contexts(9)
    for start in range(0, len(texts), batch):
        group = texts[start : start + batch]
        rlprune.generate(model, tokenizer, [QUESTION] * len(group), context=group, policy=head, budget=stream,
                         max_new_tokens=1)  # fmt: skip
    assert stream.batches == -(-9 // batch)
    assert_held(stream, 0.4)


def test_prompts_too_short_to_cut_are_reported(tiny):
    model, tokenizer, head = tiny
    with pytest.warns(AverageBudgetWarning, match="cannot be cut below a mean of"):
        rlprune.generate(model, tokenizer, ["Who?", "What?"], policy=head, budget=0.4, budget_mode="average",
                         max_new_tokens=1)  # fmt: skip
    short = torch.randint(3, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    with pytest.warns(AverageBudgetWarning, match=r"rlprune.apply: realised mean .* misses the average budget 0.4"):
        with rlprune.apply(model, head, budget=AverageBudget(0.4)):
            model.generate(short, max_new_tokens=1, do_sample=False)
    stream = BudgetController(AverageBudget(0.4))
    with warnings.catch_warnings():  # a caller's own stream spans calls: the caller reads its shortfall
        warnings.simplefilter("error", AverageBudgetWarning)
        with rlprune.apply(model, head, budget=stream):
            model.generate(short, max_new_tokens=1, do_sample=False)
    assert "cannot be cut below" in stream.shortfall() and "not controlled" in stream.summary()


def test_prompt_mode_with_an_average_budget_is_refused(tiny):
    model, tokenizer, head = tiny
    for budget in (BudgetController(AverageBudget(0.4)), AverageBudget(0.4)):
        with pytest.raises(InvalidArgumentError, match="budget_mode='prompt' holds every prompt to one ratio"):
            with rlprune.apply(model, head, budget=budget, budget_mode="prompt"):
                pass
        with pytest.raises(InvalidArgumentError, match="budget_mode='prompt' holds every prompt to one ratio"):
            rlprune.generate(model, tokenizer, QUESTION, policy=head, budget=budget, budget_mode="prompt")
    assert "forward" not in model.__dict__


def test_a_failed_batch_leaves_nothing_pending(tiny):
    model, tokenizer, head = tiny
    stream = BudgetController(AverageBudget(0.4))
    with pytest.raises(rlprune.RLPruneError):
        rlprune.generate(model, tokenizer, QUESTION, context=contexts(1)[0], policy=head, budget=stream,
                         max_new_tokens=10**6)  # fmt: skip
    assert stream.pending == [] and stream.count == 0


def _cli(tmp_path, tiny, lines: list[dict], *options: str):
    from typer.testing import CliRunner

    from rlprune.cli import app
    from rlprune.models import model_fingerprint

    model, _, head = tiny
    if not (tmp_path / "head").exists():
        save_policy(head, tmp_path / "head", fingerprint=model_fingerprint(model))
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    args = ["generate", f"@{path}", "--model", "tiny-random", "--policy", str(tmp_path / "head"), "--budget", "0.4"]
    result = CliRunner().invoke(app, [*args, "--budget-mode", "average", "--max-new-tokens", "1", *options])
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stderr.splitlines() if "realised mean FLOPs ratio" in line]
    return [json.loads(row)["flops_ratio"] for row in result.stdout.splitlines()], line


def test_generate_cli_meets_the_target_on_a_file_of_one_batch_and_says_when_it_cannot(tmp_path, tiny):
    lines = [{"question": QUESTION, "context": context} for context in contexts(6)]
    ratios, line = _cli(tmp_path, tiny, lines, "--batch-size", "8")  # one batch: the first batch is controlled
    mean = float(re.search(r"realised mean FLOPs ratio ([0-9.]+)", line).group(1))
    assert len(ratios) == 6 and abs(mean - 0.4) <= AVERAGE_TOLERANCE and "not controlled" not in line
    _, line = _cli(tmp_path, tiny, [{"prompt": "Who?"}, {"prompt": "What?"}])
    assert "not controlled" in line and "cannot be cut below" in line
