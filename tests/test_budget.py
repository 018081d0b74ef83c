"""Average budgets: the controller holds its target on streams, batch rows get the ratio they get alone,
bad settings are one-line errors."""

import json
import random

import pytest
import torch
from conftest import tiny_model

import rlprune
from rlprune import Reducer
from rlprune.budget import AverageBudget, BudgetController, check_budget_mode, workload_budget
from rlprune.errors import InvalidArgumentError, RLPruneError
from rlprune.policies import SpanHeadPolicy


def run_stream(controller: BudgetController, proposals: list[float], batch: int = 1) -> None:
    for start in range(0, len(proposals), batch):
        controller.record([controller.ratio(p) for p in proposals[start : start + batch]])


@pytest.mark.parametrize("target", [0.3, 0.4, 0.6])
@pytest.mark.parametrize("batch", [1, 4])
def test_holds_the_target_over_a_stream(target, batch):
    rng = random.Random(0)
    # Proposals centred far from the target, with a spread like per-prompt difficulty.
    proposals = [min(max(rng.gauss(0.7, 0.15), 0.0), 1.0) for _ in range(200)]
    controller = BudgetController(AverageBudget(target, floor=0.05, ceiling=1.0))
    run_stream(controller, proposals, batch)
    assert abs(controller.mean - target) <= 0.02
    spread = max(controller.ratios) - min(controller.ratios)
    assert spread > 0.2  # the per-prompt differences survive the offset


def test_keeps_each_ratio_within_floor_and_ceiling():
    controller = BudgetController(AverageBudget(0.4, floor=0.25, ceiling=0.6))
    run_stream(controller, [0.0, 1.0] * 50)
    assert min(controller.ratios) >= 0.25 and max(controller.ratios) <= 0.6
    assert abs(controller.mean - 0.4) <= 0.02


def test_a_long_run_of_unreachable_proposals_is_recovered_from_within_a_few_prompts():
    controller = BudgetController(AverageBudget(0.4, floor=0.3, ceiling=0.5))
    run_stream(controller, [1.0] * 500)  # every proposal above the ceiling: the offset goes far down
    assert controller.ratios[-1] == pytest.approx(0.4)
    run_stream(controller, [0.4] * 12)  # proposals at the target again
    assert controller.ratios[-1] == pytest.approx(0.4, abs=0.02)  # not stuck at the floor


def test_a_first_batch_averages_the_target_and_rows_too_short_to_cut_are_made_up_by_the_others():
    controller = BudgetController(AverageBudget(0.4, floor=0.1))
    given = controller.assign([0.9, 0.8, 0.85, 0.95])  # every proposal far above the target
    assert sum(given) / 4 == pytest.approx(0.4, abs=1e-6) and given[3] - given[1] == pytest.approx(0.15)
    controller.record(given)
    assert controller.shortfall() is None and controller.batches == 1
    short = BudgetController(AverageBudget(0.4, floor=0.1))
    given = short.assign([0.5, 0.5, 0.5, 0.5], lowest=[0.9, 0.0, 0.0, 0.0])  # the first row cannot go below 0.9
    assert given[1] == given[2] == given[3] == pytest.approx((1.6 - 0.9) / 3, abs=1e-6)
    short.record([0.9, *given[1:]])
    assert short.mean == pytest.approx(0.4, abs=1e-6)
    hopeless = BudgetController(AverageBudget(0.4, floor=0.1))
    assert hopeless.assign([0.5, 0.5], lowest=[0.9, 0.8]) == [0.1, 0.1]  # as low as they go
    hopeless.record([0.9, 0.8])
    assert hopeless.given == [] and "cannot be cut below a mean of 0.850" in hopeless.shortfall()


def test_proposals_and_controller_settings_are_checked():
    controller = BudgetController(AverageBudget(0.4))
    for bad in (float("nan"), "0.3", None, True):
        with pytest.raises(InvalidArgumentError, match="budget proposal must be a finite number"):
            controller.ratio(bad)
    with pytest.raises(InvalidArgumentError, match="carries its own floor and ceiling"):
        workload_budget(controller, "average", floor=0.2)
    assert workload_budget(controller, "average") is controller


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"target": 0.4, "floor": 0.6, "ceiling": 0.5}, "floor 0.6 is above ceiling 0.5"),
        ({"target": 1.5}, "target must be a number in (0, 1]"),
        ({"target": 0.0}, "target must be a number in (0, 1]"),
        ({"target": 0.2, "floor": 0.3}, "outside [floor, ceiling]"),
        ({"target": 0.4, "horizon": 0}, "horizon must be an integer >= 1"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, fragment):
    with pytest.raises(InvalidArgumentError) as err:
        AverageBudget(**kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_budget_mode_is_checked():
    assert check_budget_mode("average") == "average"
    with pytest.raises(InvalidArgumentError, match="budget_mode must be one of prompt, average"):
        check_budget_mode("mean")


def _prompts(count: int) -> list[torch.Tensor]:
    """Prompts of varied length and content, so a span head proposes different ratios for them."""
    gen = torch.Generator().manual_seed(3)
    return [
        torch.randint(3, 64, (1, int(torch.randint(60, 160, (1,), generator=gen))), generator=gen) for _ in range(count)
    ]


def _head(model) -> SpanHeadPolicy:
    """A random span head made sharp enough (weights x 3) that it proposes different ratios for different
    prompts; at its initial scale its mass is spread so evenly that every proposal is 1.0."""
    torch.manual_seed(0)
    head = SpanHeadPolicy(model.config.hidden_size, decision_layer=1, rank=8, channels=4, kernel=5)
    with torch.no_grad():
        for weight in head.parameters():
            weight.mul_(3.0)
    return head


def _padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(r.shape[1] for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):  # left padding, as batched generation pads
        ids[i, width - row.shape[1] :], mask[i, width - row.shape[1] :] = row[0], 1
    return ids, mask


def test_apply_in_average_mode_gives_a_batch_one_offset_and_each_row_the_ratio_it_gets_alone():
    model = tiny_model("llama", layers=8)
    head, rows = _head(model), _prompts(3)
    stream = BudgetController(AverageBudget(0.6, floor=0.3))
    with rlprune.apply(model, head, budget=stream):
        for prompt in _prompts(5):  # a history first
            model.generate(prompt, max_new_tokens=1, do_sample=False)
        ids, mask = _padded(rows)
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=1, do_sample=False, pad_token_id=0)
    proposals, given = torch.tensor(stream.proposals[-3:]), torch.tensor(stream.assigned[-3:])
    assert torch.allclose(given, (proposals + stream.offset).clamp(0.3, 1.0), atol=1e-9)  # one offset for the batch
    assert float(given.max() - given.min()) > 0.05  # the proposals' differences stay
    reducer = Reducer(model)
    for row, ratio, realised in zip(rows, stream.assigned[-3:], stream.ratios[-3:], strict=True):
        alone = reducer.run(row, policy=head, budget=ratio)
        assert alone.flops_ratio == pytest.approx(realised, abs=1e-6)  # a row runs as it would alone


def test_a_stream_of_single_prompts_holds_the_average():
    model = tiny_model("llama", layers=8)
    head = _head(model)
    stream = BudgetController(AverageBudget(0.55, floor=0.2))
    for prompt in _prompts(40):
        reducer = Reducer(model)
        out = reducer.run(prompt, policy=head, budget=stream, protect_last=4)
        stream.record([out.flops_ratio])
    assert abs(stream.mean - 0.55) <= 0.02
    assert torch.tensor(stream.ratios).std() > 0.05  # each prompt at its own ratio


def test_average_mode_settings_are_checked_where_they_are_given():
    model = tiny_model("llama")
    with pytest.raises(InvalidArgumentError, match="floor 0.6 is above ceiling 0.5"):
        with rlprune.apply(model, "snapkv", budget=0.55, budget_mode="average", floor=0.6, ceiling=0.5):
            pass
    with pytest.raises(InvalidArgumentError, match="needs a budget"):
        workload_budget(None, "average")
    with pytest.raises(InvalidArgumentError, match="average' only"):
        workload_budget(0.5, "prompt", floor=0.2)
    assert "forward" not in model.__dict__


def test_generate_cli_holds_an_average_over_a_jsonl_file(tmp_path):
    from typer.testing import CliRunner

    from rlprune.cli import app

    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"question": f"Who kept boat {i}?", "context": "The boat was kept by Ada. " * (4 + 3 * i)} for i in range(8)
    ]
    prompts.write_text("\n".join(json.dumps(line) for line in lines))
    args = ["generate", f"@{prompts}", "--model", "tiny-random", "--policy", "snapkv", "--budget", "0.7"]
    result = CliRunner().invoke(app, [*args, "--budget-mode", "average", "--max-new-tokens", "2", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    ratios = [json.loads(line)["flops_ratio"] for line in result.stdout.splitlines()]
    assert len(ratios) == 8 and "realised mean FLOPs ratio" in result.stderr
    refused = CliRunner().invoke(app, [*args, "--budget-mode", "mean"])
    assert refused.exit_code == 1 and "budget_mode must be one of prompt, average" in refused.output
    refused = CliRunner().invoke(app, [*args, "--floor", "0.3"])
    assert refused.exit_code == 1 and "average' only" in refused.output


def _head_and_suite(tmp_path, items: int, lengths: int):
    """The tiny model, a saved span head for it and a JSONL suite of ``items`` passages of ``lengths`` sizes."""
    from rlprune.models import load_model, model_fingerprint
    from rlprune.policies import save_policy

    model, tokenizer = load_model("tiny-random")
    head = _head(model)
    save_policy(head, tmp_path / "head", fingerprint=model_fingerprint(model))
    passage = "The harbour is quiet in winter. Boats rest on the shingle. "
    lines = [{"context": passage * (3 + i % lengths) + f"The keeper is Ada {i}.", "question": "Who is the keeper?",
              "answer": f"Ada {i}"} for i in range(items)]  # fmt: skip
    suite = tmp_path / "suite.jsonl"
    suite.write_text("\n".join(json.dumps(line) for line in lines))
    return model, tokenizer, suite


def test_eval_in_average_mode_holds_the_mean_and_resumes_the_stream(tmp_path):
    from rlprune.eval import EvalConfig, evaluate

    model, tokenizer, suite = _head_and_suite(tmp_path, 12, 5)
    config = EvalConfig(str(suite), model="tiny-random", policies=(str(tmp_path / "head"),), baselines=(),
                        budgets=(0.75,), max_new_tokens=2, bootstrap_samples=100, batch_size=3,
                        budget_mode="average", floor=0.5)  # fmt: skip
    evaluate(config, tmp_path / "whole", model=model, tokenizer=tokenizer, show_progress=False)
    records = [r for r in json.loads((tmp_path / "whole" / "results.json").read_text())["records"] if r["budget"]]
    ratios = [r["flops_ratio"] for r in records]
    assert abs(sum(ratios) / len(ratios) - 0.75) <= 0.05 and max(ratios) - min(ratios) > 0.02
    assert all(r["budget_proposal"] is not None and r["kl"] is not None for r in records)
    # stopped after the first half and resumed: the stream picks up where it was
    half = EvalConfig(**{**vars(config), "limit": 6})
    evaluate(half, tmp_path / "resumed", model=model, tokenizer=tokenizer, show_progress=False)
    evaluate(config, tmp_path / "resumed", model=model, tokenizer=tokenizer, show_progress=False)
    resumed = [r for r in json.loads((tmp_path / "resumed" / "results.json").read_text())["records"] if r["budget"]]
    assert [r["flops_ratio"] for r in resumed] == pytest.approx(ratios, abs=1e-9)
    with pytest.raises(InvalidArgumentError, match="floor 0.9 is above ceiling 0.8"):
        EvalConfig(str(suite), budgets=(0.75,), budget_mode="average", floor=0.9, ceiling=0.8)


def test_holds_the_target_when_the_stream_changes_kind():
    rng = random.Random(1)
    # short questions first (high proposals), then long documents (low ones)
    proposals = [rng.gauss(0.5, 0.1) for _ in range(48)] + [rng.gauss(0.15, 0.05) for _ in range(30)]
    controller = BudgetController(AverageBudget(0.3, floor=0.1))
    run_stream(controller, [min(max(p, 0.0), 1.0) for p in proposals])
    assert abs(controller.mean - 0.3) <= 0.02


def test_oracle_takes_the_cheapest_extra_cost_first_and_stable_ignores_answers_that_come_and_go():
    from rlprune.budget import oracle

    ratios = torch.tensor([[0.2, 0.5, 0.8]] * 4)
    answered = torch.tensor(
        [
            [True, True, True],  # needs 0.2
            [False, True, True],  # needs 0.5
            [False, False, True],  # needs 0.8
            [True, False, False],  # right at 0.2 only: the stable oracle does not count it
        ]
    )
    assert oracle(ratios, answered, 0.2) == (2, pytest.approx(0.2))
    assert oracle(ratios, answered, 0.275) == (3, pytest.approx(0.275))  # + item 1 at 0.5
    assert oracle(ratios, answered, 0.5) == (4, pytest.approx(0.425))  # + item 2 at 0.8; nothing left to buy
    assert oracle(ratios, answered, 0.5, stable=True) == (3, pytest.approx(0.425))
    assert oracle(ratios, answered, 0.1) == (0, pytest.approx(0.2))  # the cheapest ratios already exceed it
    with pytest.raises(InvalidArgumentError, match="target must be a number in"):
        oracle(ratios, answered, float("nan"))
    with pytest.raises(InvalidArgumentError, match="one \\(items, grid\\) shape"):
        oracle(ratios, answered[:, :2], 0.5)


def test_eval_oracle_grid_holds_each_policy_to_every_ratio_beside_the_average(tmp_path):
    from rlprune.eval import EvalConfig, evaluate

    model, tokenizer, suite = _head_and_suite(tmp_path, 6, 4)
    config = EvalConfig(str(suite), model="tiny-random", policies=(str(tmp_path / "head"),), baselines=("snapkv",),
                        budgets=(0.75,), max_new_tokens=2, bootstrap_samples=50, budget_mode="average",
                        oracle_grid=(0.6, 0.9))  # fmt: skip
    evaluate(config, tmp_path / "out", model=model, tokenizer=tokenizer, show_progress=False)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    records = results["records"]
    held = [r for r in records if r["method"] == "head held"]
    assert sorted({r["budget"] for r in held}) == [0.6, 0.9] and len(held) == 12  # policies only, not baselines
    assert all(abs(r["flops_ratio"] - r["budget"]) <= 0.05 and "budget_proposal" not in r for r in held)
    assert all(0 < r["confidence"] <= 1 for r in records if r["method"] == "full model")
    [row] = results["oracle"]
    assert row["method"] == "head" and row["items"] == 6 and row["stable_oracle"] <= row["oracle"] <= 6
    assert "Per-prompt ratios against an oracle" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "ratios.png").stat().st_size > 0
    with pytest.raises(RLPruneError, match="add --budget-mode average"):
        EvalConfig(str(suite), oracle_grid=(0.5,))
