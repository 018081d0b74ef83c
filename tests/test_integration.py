"""The real SmolLM2-135M: exactness, generation parity and a grounded answer under reduction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlprune import LayerAction, Reducer, build_prompt, parse_schedule
from rlprune.cli import app

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PASSAGE = (ROOT / "eval" / "demo" / "harbour.txt").read_text()
DEMO_SCHEDULE = "2:prune:0.5:relevance,8:prune:0.5:relevance"  # the fixed-schedule example in docs/policies.md


def test_no_reduction_reproduces_the_real_model(smollm2):
    model, tokenizer = smollm2
    prompt = build_prompt(tokenizer, "Who kept the blue boat?", PASSAGE)
    expected = model(prompt.input_ids).logits
    out = Reducer(model).run(prompt.input_ids, logits="all")
    assert (out.logits - expected).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "question",
    ["What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers."],
)
def test_generate_without_reduction_equals_model_generate(smollm2, question):
    model, tokenizer = smollm2
    ids = build_prompt(tokenizer, question).input_ids
    expected = model.generate(ids, max_new_tokens=24, do_sample=False)
    assert torch.equal(Reducer(model).generate(ids, max_new_tokens=24).sequences, expected)


def test_reduced_generation_answers_a_grounded_question(smollm2):
    model, tokenizer = smollm2
    prompt = build_prompt(tokenizer, "What was the name of the last lighthouse keeper?", PASSAGE)
    result = Reducer(model).generate(
        prompt.input_ids, parse_schedule(DEMO_SCHEDULE), max_new_tokens=24, protect_last=prompt.protect_last
    )
    assert "Tobias Wren" in tokenizer.decode(result.tokens[0])
    assert result.prefill.flops_ratio < 0.85
    assert result.prefill.tokens_per_layer[-1] < len(prompt)


def test_heavy_pruning_changes_the_output(smollm2):
    """The reduction is real: removing nearly everything early changes the logits a lot."""
    model, tokenizer = smollm2
    prompt = build_prompt(tokenizer, "Who kept the blue boat?", PASSAGE)
    reducer = Reducer(model)
    full = reducer.run(prompt.input_ids).logits.log_softmax(-1)
    pruned = reducer.run(prompt.input_ids, {1: LayerAction("prune", 1.0)}, protect_last=prompt.protect_last)
    kl = (full.exp() * (full - pruned.logits.log_softmax(-1))).sum()
    assert kl > 0.1


def test_cli_generate_round_trip(smollm2):
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "What was the name of the last lighthouse keeper?",
            "--context",
            f"@{ROOT / 'eval/demo/harbour.txt'}",
            "--schedule",
            DEMO_SCHEDULE,
            "--json",
            "--repeats",
            "1",
            "--max-new-tokens",
            "24",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "Tobias Wren" in report["text"]
    assert report["flops_ratio"] < 0.85


def test_flops_accounting_matches_the_flop_counter_on_the_real_model(smollm2):
    from test_flops import counted, dense_total

    model, tokenizer = smollm2
    prompt = build_prompt(tokenizer, "Who kept the blue boat?", PASSAGE)
    reducer = Reducer(model)
    schedule = parse_schedule("2:prune:0.5:relevance,8:merge:0.5:similarity")
    out = reducer.run(prompt.input_ids, schedule, protect_last=prompt.protect_last)
    measured = counted(lambda: reducer.run(prompt.input_ids, schedule, protect_last=prompt.protect_last))
    assert dense_total(out) == pytest.approx(measured, rel=0.05)


def test_apply_with_policy_none_equals_plain_generate(smollm2):
    import rlprune

    model, tokenizer = smollm2
    ids = build_prompt(tokenizer, "Who kept the blue boat?", PASSAGE).input_ids
    plain = model.generate(ids, max_new_tokens=20, do_sample=False)
    with rlprune.apply(model, "none"):
        assert torch.equal(model.generate(ids, max_new_tokens=20, do_sample=False), plain)


@pytest.mark.parametrize("spec", ["random", "fastv", "snapkv", "pyramid", "tome", "static:2:prune:0.5,8:merge:0.3"])
def test_baselines_meet_budgets_on_512_token_prompts(smollm2, spec):
    from rlprune import make_baseline

    model, tokenizer = smollm2
    context = (PASSAGE + " ") * 3
    prompt = build_prompt(tokenizer, "Who kept the blue boat?", context)
    ids = torch.cat((prompt.input_ids[:, :1], prompt.input_ids[:, -511:]), dim=1)
    reducer, baseline = Reducer(model), make_baseline(spec)
    for budget in (0.4, 0.6, 0.8):
        out = reducer.run(
            ids,
            policy=baseline,
            budget=budget,
            protect_last=prompt.protect_last,
        )
        assert out.flops_ratio == pytest.approx(budget, abs=0.03), (spec, budget)


@pytest.mark.parametrize("budget", [0.4, 0.6, 0.8])
def test_the_shipped_policy_meets_the_budget_it_is_given(smollm2, budget):
    from rlprune import load_policy
    from rlprune.envs import EnvConfig

    model, tokenizer = smollm2
    policy = load_policy(ROOT / "policies" / "smollm2-135m-grounded", model)
    config = EnvConfig.load("grounded-qa")
    tasks = config.tasks.tasks("validation")[:4]
    reducer = Reducer(model)
    for task in tasks:
        prompt = build_prompt(tokenizer, task.question, task.context)
        out = reducer.run(
            prompt.input_ids,
            policy=policy,
            budget=budget,
            protect_last=prompt.protect_last,
        )
        assert out.flops_ratio == pytest.approx(budget, abs=0.05)
