"""The real Gemma 3 270M through its adapter: exactness, generation parity, a grounded answer under
reduction and FLOPs with its sliding-window layers (runs when the `gemma` extra is installed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_flops import counted, dense_total
from typer.testing import CliRunner

from rlprune import Reducer, build_prompt, flops, parse_schedule
from rlprune.cli import app

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PASSAGE = (ROOT / "eval" / "demo" / "harbour.txt").read_text()
QUESTION = "What was the name of the last lighthouse keeper?"
SCHEDULE = "2:prune:0.5:relevance,8:prune:0.5:relevance"


def test_no_reduction_reproduces_gemma3(gemma3):
    model, tokenizer = gemma3
    prompt = build_prompt(tokenizer, QUESTION, PASSAGE)
    assert prompt.input_ids[0, 0] == tokenizer.bos_token_id  # a base model's prompt starts with <bos>
    expected = model(prompt.input_ids).logits
    out = Reducer(model).run(prompt.input_ids, logits="all")
    assert (out.logits - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("question", [QUESTION, "The capital of France is"])
def test_generate_without_reduction_equals_model_generate(gemma3, question):
    model, tokenizer = gemma3
    ids = build_prompt(tokenizer, question, PASSAGE if question == QUESTION else None).input_ids
    expected = model.generate(ids, max_new_tokens=20, do_sample=False)
    assert torch.equal(Reducer(model).generate(ids, max_new_tokens=20).sequences, expected)


def test_reduced_generation_answers_a_grounded_question(gemma3):
    model, tokenizer = gemma3
    prompt = build_prompt(tokenizer, QUESTION, PASSAGE)
    result = Reducer(model).generate(
        prompt.input_ids, parse_schedule(SCHEDULE), max_new_tokens=12, protect_last=prompt.protect_last
    )
    assert "Tobias Wren" in tokenizer.decode(result.tokens[0])
    assert result.prefill.flops_ratio < 0.6


def test_flops_match_the_flop_counter_and_count_sliding_windows(gemma3):
    model, tokenizer = gemma3
    prompt = build_prompt(tokenizer, QUESTION, (PASSAGE + "\n\n") * 3)  # longer than the 512-position window
    reducer = Reducer(model)
    assert sum(w is not None for w in reducer.dims.windows) == 15 and len(prompt) > 512
    schedule = parse_schedule("2:prune:0.5:relevance,8:merge:0.5:similarity")
    out = reducer.run(prompt.input_ids, schedule, protect_last=prompt.protect_last)
    measured = counted(lambda: reducer.run(prompt.input_ids, schedule, protect_last=prompt.protect_last))
    assert dense_total(out) == pytest.approx(measured, rel=0.05)
    full = reducer.run(prompt.input_ids)
    global_only = flops.full_prefill_flops(flops.ModelDims(**{**vars(reducer.dims), "windows": ()}), len(prompt))
    assert full.flops < global_only  # sliding layers pay for at most 512 keys per query


def test_train_eval_and_generate_with_a_policy_on_gemma3(gemma3, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    trained = runner.invoke(
        app, ["train", "--env", str(ROOT / "envs/gemma3-smoke.toml"), "--recipe", "smoke", "--out", str(run)]
    )
    assert trained.exit_code == 0, trained.output
    policy = run / "policy"
    assert json.loads((policy / "config.json").read_text())["model"]["architecture"] == "gemma3_text"
    evaluated = runner.invoke(
        app,
        ["eval", "--suite", "grounded-qa", "--model", "gemma3-270m", "--policy", str(policy), "--baselines",
         "snapkv", "--budgets", "0.5", "--limit", "3", "--max-new-tokens", "8", "--out", str(tmp_path / "eval")],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert (tmp_path / "eval" / "results.json").is_file()
    generated = runner.invoke(
        app,
        ["generate", QUESTION, "--model", "gemma3-270m", "--context", f"@{ROOT / 'eval/demo/harbour.txt'}",
         "--policy", str(policy), "--budget", "0.5", "--json", "--repeats", "1", "--max-new-tokens", "8"],
    )  # fmt: skip
    assert generated.exit_code == 0, generated.output
    report = json.loads(generated.stdout)  # a 256-step smoke policy may still keep everything
    assert len(report["tokens_per_layer"]) == 18 and 0 < report["flops_ratio"] <= 1.0
