"""Output-side reduction: TRL-form rewards, a GRPO smoke run with a LoRA adapter, and loading it."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from rlprune import load_model
from rlprune.cli import app
from rlprune.envs import generate_suite
from rlprune.errors import RLPruneError
from rlprune.output import EfficiencyReward, ExactLengthReward, HallucinationPenalty, MaxLengthReward, apply_adapter
from rlprune.output.train import OutputTrainConfig, train_output

runner = CliRunner()


def test_exact_and_max_length_rewards_follow_their_formulas():
    answers = [["12"], ["12"], ["12"]]
    completions = ["It is 12.", "The answer is 12 apples in total.", "Maybe 13."]
    ids = [[0] * 4, [0] * 9, [0] * 4]
    exact = ExactLengthReward(target_tokens=5, alpha=0.1)(completions, ids, answers=answers)
    assert exact == pytest.approx([1 - 0.1, 1 - 0.4, 0 - 0.1])
    capped = MaxLengthReward(target_tokens=5, alpha=0.1, delta=0.5)(completions, ids, answers=answers)
    assert capped == pytest.approx([0.6, 0.1, 0.0])  # 1 * clip(0.1 * (5 - n) + 0.5, 0, 1)


def test_efficiency_reward_pays_for_brevity_but_not_for_lost_accuracy():
    reward = EfficiencyReward(lam=2.0)
    ids = [[0] * 5, [0] * 20, [0] * 5]
    completions = [[{"role": "assistant", "content": "12"}], [{"role": "assistant", "content": "12"}], "no idea"]
    scores = reward(completions, ids, answers=[["12"]] * 3, ref_length=[20, 20, 20], ref_correct=[1.0, 1.0, 1.0])
    assert scores == pytest.approx([20 / 5 - 1, 0.0, 20 / 5 - 1 - 2.0])


def test_hallucination_penalty_applies_to_prompts_with_a_context():
    penalty = HallucinationPenalty(weight=1.5)
    scores = penalty(
        ["Ada Crane.", "Bob Marley.", "Bob Marley."],
        [[0], [0], [0]],
        context=["The keeper is Ada Crane.", "The keeper is Ada Crane.", ""],
        question=["Who is the keeper?"] * 3,
    )
    assert scores == [0.0, -1.5, 0.0]


def test_word_problems_have_numeric_answers_and_disjoint_splits():
    train = generate_suite({"arithmetic": 1.0}, "train", 40)
    test = generate_suite({"arithmetic": 1.0}, "test", 40)
    assert all(t.answer.isdigit() and t.context is None for t in train + test)
    assert not {t.question for t in train} & {t.question for t in test}


@pytest.fixture(scope="module")
def smoke_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("output") / "run"
    config = OutputTrainConfig(
        model="tiny-random", steps=2, prompts_per_step=2, generations=2, max_completion_tokens=6, train_prompts=4
    )
    return out, train_output(config, out, quiet=True)


def test_grpo_runs_computes_rewards_and_saves_an_adapter(smoke_output):
    out, summary = smoke_output
    assert [h["step"] for h in summary["history"]] == [1, 2]
    assert all("rewards/r_eff/mean" in h and "completions/mean_length" in h for h in summary["history"])
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["base_mean_length"] == summary["base_mean_length"] > 0


def test_the_adapter_reloads_into_the_base_model(smoke_output):
    out, _ = smoke_output
    base, _ = load_model("tiny-random")
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 16
    merged = apply_adapter(load_model("tiny-random")[0], out / "adapter")
    assert type(merged) is type(base)  # a plain model again: the reducer and generate work on it
    ids = torch.tensor([[1, 2, 3, 4]])
    assert merged(ids).logits.shape == base(ids).logits.shape
    with pytest.raises(RLPruneError, match="not an adapter folder"):
        apply_adapter(base, out)


def test_generate_and_eval_take_the_adapter(smoke_output, tmp_path):
    out, _ = smoke_output
    adapter = str(out / "adapter")
    result = runner.invoke(
        app,
        [
            "generate",
            "What is 2 plus 3?",
            "--model",
            "tiny-random",
            "--adapter",
            adapter,
            "--policy",
            "snapkv",
            "--budget",
            "0.8",
            "--max-new-tokens",
            "3",
            "--repeats",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["adapter"] == adapter
    result = runner.invoke(
        app,
        [
            "eval",
            "--suite",
            "arithmetic",
            "--model",
            "tiny-random",
            "--adapter",
            adapter,
            "--baselines",
            "none",
            "--limit",
            "2",
            "--max-new-tokens",
            "3",
            "--out",
            str(tmp_path),
            "--bootstrap",
            "100",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "results.json").read_text())["aggregates"]
    assert [r["method"] for r in rows] == ["full model"] and rows[0]["mean_new_tokens"] > 0


def test_unknown_reward_is_a_clear_error():
    with pytest.raises(RLPruneError, match="unknown reward"):
        OutputTrainConfig(reward="r_short")
