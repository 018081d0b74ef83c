"""The command line: readable output, JSON for scripts, one-line errors without tracebacks."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rlprune.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_info_shows_the_model_shape(tiny_model_dir):
    result = invoke("info", "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert "layers" in result.output and "4" in result.output and "cache folder" in result.output


def test_generate_json_reports_the_reduction(tiny_model_dir):
    result = invoke(
        "generate",
        "name of the boat ?",
        "--model",
        tiny_model_dir,
        "--raw",
        "--json",
        "--repeats",
        "1",
        "--context",
        "the keeper was in the town . " * 12,
        "--schedule",
        "1:prune:0.5,2:merge:0.5",
        "--max-new-tokens",
        "4",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected_keys = {
        "text",
        "prompt_tokens",
        "tokens_per_layer",
        "flops_full",
        "flops_reduced",
        "flops_ratio",
        "kv_bytes_full",
        "kv_bytes_reduced",
        "prefill_s_full",
        "prefill_s_reduced",
    }
    assert expected_keys <= set(report)
    n = report["prompt_tokens"]
    assert report["tokens_per_layer"][0] == n and report["tokens_per_layer"][-1] < n
    assert report["flops_reduced"] / report["flops_full"] == pytest.approx(report["flops_ratio"])
    assert report["kv_bytes_reduced"] < report["kv_bytes_full"]


def test_generate_prints_tables(tiny_model_dir, tmp_path):
    passage = tmp_path / "passage.txt"
    passage.write_text("the river was in the town . " * 10)
    result = invoke(
        "generate",
        "year ?",
        "--model",
        tiny_model_dir,
        "--raw",
        "--context",
        f"@{passage}",
        "--schedule",
        "2:prune:0.5",
        "--repeats",
        "1",
        "--max-new-tokens",
        "2",
    )
    assert result.exit_code == 0, result.output
    for text in ("Answer:", "Tokens per layer", "prune:0.5:attention", "FLOPs", "KV cache", "speedup"):
        assert text in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "", "--raw"], "empty"),
        (["generate", "town ?", "--raw", "--schedule", "1:explode:0.5"], "unknown op"),
        (["generate", "town ?", "--raw", "--schedule", "1:prune:1.5"], "outside [0, 1]"),
        (["generate", "town ?", "--raw", "--schedule", "9:prune:0.5"], "out of range"),
        (["generate", "town ?", "--raw", "--context", "@/no/such/file"], "does not exist"),
        (["generate", "town ?", "--raw", "--context", "the town " * 200], "handles at most 256"),
    ],
)
def test_bad_input_is_one_readable_line(tiny_model_dir, args, message):
    result = invoke(*args, "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("error:")


def test_missing_model_is_one_readable_line():
    result = invoke("info", "--model", "/no/such/model")
    assert result.exit_code == 1
    assert "error:" in result.output and "Traceback" not in result.output


def test_generate_with_a_baseline_policy_and_budget():
    result = invoke(
        "generate",
        "What colour?",
        "--model",
        "tiny-random",
        "--context",
        "the boat is in the town. " * 30,
        "--policy",
        "pyramid",
        "--budget",
        "0.5",
        "--json",
        "--repeats",
        "1",
        "--max-new-tokens",
        "3",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["flops_ratio"] == pytest.approx(0.5, abs=0.03)
    assert report["policy"] == "pyramid"


def test_generate_with_a_checkpoint_folder(tmp_path):
    from rlprune import ReductionPolicy, load_model, save_policy

    model, _ = load_model("tiny-random")
    save_policy(ReductionPolicy(decision_layers=(1, 2)), tmp_path / "policy", model=model)
    result = invoke(
        "generate",
        "What colour?",
        "--model",
        "tiny-random",
        "--policy",
        tmp_path / "policy",
        "--budget",
        "0.5",
        "--json",
        "--repeats",
        "1",
        "--max-new-tokens",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["flops_ratio"] == pytest.approx(1.0, abs=0.01)  # a fresh policy keeps all


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "fastv", "--schedule", "1:prune:0.5"], "either --schedule or --policy"),
        (["--budget", "0.5"], "--budget needs --policy"),
        (["--policy", "fastv", "--budget", "1.5"], "(0, 1]"),
        (["--policy", "warp-drive"], "neither a policy checkpoint"),
        (["--policy", "fastv:speed=3"], "bad parameter"),
    ],
)
def test_bad_policy_options(args, message):
    result = invoke("generate", "What colour?", "--model", "tiny-random", *args)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_generate_answers_a_jsonl_file_in_batches(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "\n".join(
            json.dumps(item)
            for item in (
                {"question": "Who kept the boat?", "context": "The boat was kept by Ada. " * 6},
                {"prompt": "Write one line about the sea."},
                {"question": "What rests here?", "context": "Boats rest on the shingle. " * 4},
            )
        )
    )
    outputs = {}
    for size in ("1", "3"):
        result = CliRunner().invoke(
            app,
            ["generate", f"@{prompts}", "--model", "tiny-random", "--policy", "snapkv", "--budget", "0.5",
             "--max-new-tokens", "6", "--batch-size", size],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs[size] = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["index"] for line in outputs["3"]] == [0, 1, 2]
    assert [line["text"] for line in outputs["1"]] == [line["text"] for line in outputs["3"]]
    refused = CliRunner().invoke(app, ["generate", f"@{prompts}", "--model", "tiny-random", "--context", "x"])
    assert refused.exit_code == 1 and "each line gives its own context" in refused.output
    assert all(
        line["flops_ratio"] < 0.8 and line["tokens_per_layer"][-1] < line["prompt_tokens"] for line in outputs["3"]
    )
