"""Hostile inputs and machine faults through the CLI and the Python API: each ends in one `error:` line
(exit 1, no traceback) or a correct result, and nothing written before is changed."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_model, tiny_tokenizer
from typer.testing import CliRunner

from rlprune import save_policy
from rlprune.cli import app
from rlprune.engine import Reducer
from rlprune.errors import InvalidActionError, RLPruneError
from rlprune.eval import EvalConfig, Evaluation, evaluate
from rlprune.policies import ReductionPolicy
from rlprune.reduction import LayerAction

runner = CliRunner()
QUESTION = "town ?"
CONTEXT = "the keeper was in the town . " * 12


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, fragment: str) -> None:
    """Exit 1 with one `error:` line naming the problem, and no traceback."""
    output = result.output
    assert result.exit_code == 1, output
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert output.count("error:") == 1, output
    assert fragment.lower() in " ".join(output.split()).lower(), output


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "suite.jsonl"
    lines = [{"context": CONTEXT, "question": f"where is item {i} ?", "answer": "town", "kind": "k"} for i in range(2)]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


# -- generate: prompts, schedules, budgets, sampling ---------------------------------------------

GENERATE_CASES = [
    (["", "--raw"], "empty"),
    (["   ", "--raw"], "empty"),
    ([QUESTION, "--raw", "--context", "the town " * 200], "handles at most"),
    ([QUESTION, "--raw", "--schedule", "1:explode:0.5"], "unknown op"),
    ([QUESTION, "--raw", "--schedule", "1:prune:1.5"], "outside [0, 1]"),
    ([QUESTION, "--raw", "--schedule", "1:prune:-0.5"], "outside [0, 1]"),
    ([QUESTION, "--raw", "--schedule", "1:prune:nan"], "outside [0, 1]"),
    ([QUESTION, "--raw", "--schedule", "9:prune:0.5"], "out of range"),
    ([QUESTION, "--raw", "--schedule", "-1:prune:0.5"], "out of range"),
    ([QUESTION, "--raw", "--schedule", "x:prune:0.5"], "integer"),
    ([QUESTION, "--raw", "--schedule", "1:prune:0.5:telepathy"], "unknown scorer"),
    ([QUESTION, "--raw", "--schedule", "1:prune:0.5,1:merge:0.5"], "twice"),
    ([QUESTION, "--raw", "--schedule", "1"], "LAYER:OP"),
    ([QUESTION, "--raw", "--schedule", "1:prune:0.5", "--policy", "snapkv"], "either"),
    ([QUESTION, "--raw", "--budget", "0.5"], "--budget needs --policy"),
    ([QUESTION, "--raw", "--policy", "snapkv", "--budget", "0"], "(0, 1]"),
    ([QUESTION, "--raw", "--policy", "snapkv", "--budget", "1.5"], "(0, 1]"),
    ([QUESTION, "--raw", "--policy", "snapkv", "--budget", "-0.2"], "(0, 1]"),
    ([QUESTION, "--raw", "--policy", "snapkv", "--budget", "nan"], "(0, 1]"),
    ([QUESTION, "--raw", "--policy", "snapkv", "--budget", "inf"], "(0, 1]"),
    ([QUESTION, "--raw", "--policy", "telepathy"], "neither a policy checkpoint"),
    ([QUESTION, "--raw", "--policy", "fastv:layer=x"], "fastv"),
    ([QUESTION, "--raw", "--policy", "best-static:/no/such/table.json"], "no best-static table"),
    ([QUESTION, "--raw", "--sample", "--temperature", "0"], "temperature must be a positive number"),
    ([QUESTION, "--raw", "--context", "@/no/such/file"], "does not exist"),
    ([QUESTION, "--raw", "--device", "cuda"], "cuda"),
    ([QUESTION, "--raw", "--device", "toaster"], "device"),
    ([QUESTION, "--raw", "--dtype", "int8"], "dtype"),
    (["@/no/such/prompts.jsonl"], "does not exist"),
]


@pytest.mark.parametrize(("args", "fragment"), GENERATE_CASES, ids=[" ".join(a) for a, _ in GENERATE_CASES])
def test_generate_refuses_bad_input_in_one_line(tiny_model_dir, args, fragment):
    assert_clean_error(invoke("generate", *args, "--model", tiny_model_dir, "--max-new-tokens", 2), fragment)


def test_unknown_model_is_one_line(tmp_path):
    assert_clean_error(invoke("generate", QUESTION, "--model", tmp_path / "nothing-here"), "not a model folder")


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8 \xc3\x28", b"ok then \x80"])
def test_context_and_prompt_files_that_are_not_utf8(tiny_model_dir, tmp_path, content):
    context = tmp_path / "context.txt"
    context.write_bytes(content)
    assert_clean_error(invoke("generate", QUESTION, "--raw", "--context", f"@{context}", "--model", tiny_model_dir),
                       "not UTF-8")  # fmt: skip
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b'{"prompt": "hi"}\n' + content)
    assert_clean_error(invoke("generate", f"@{prompts}", "--model", tiny_model_dir), "not UTF-8")


def test_a_folder_given_as_context_file(tiny_model_dir, tmp_path):
    assert_clean_error(invoke("generate", QUESTION, "--context", f"@{tmp_path}", "--model", tiny_model_dir), "folder")


def test_a_budget_the_method_cannot_meet_is_warned_about(tiny_model_dir):
    result = invoke("generate", QUESTION, "--raw", "--context", "the town .", "--policy", "snapkv", "--budget", "0.3",
                    "--model", tiny_model_dir, "--max-new-tokens", 2, "--repeats", 1, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert abs(report["flops_ratio"] - 0.3) > 0.05  # a handful of tokens: little to remove
    assert "warning:" in result.output and "budget 0.3" in " ".join(result.output.split())


def test_a_budget_that_is_met_gives_no_warning(tiny_model_dir):
    result = invoke("generate", QUESTION, "--raw", "--context", CONTEXT, "--policy", "snapkv", "--budget", "0.6",
                    "--model", tiny_model_dir, "--max-new-tokens", 2, "--repeats", 1, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert abs(json.loads(result.stdout.strip().splitlines()[-1])["flops_ratio"] - 0.6) <= 0.05
    assert "warning:" not in result.output


# -- the Python API ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        ({"2": LayerAction("prune", 0.5)}, "layer numbers"),
        ({2.0: LayerAction("prune", 0.5)}, "layer numbers"),
        ({True: LayerAction("prune", 0.5)}, "layer numbers"),
        ({2: "prune:0.5"}, "not a LayerAction"),
        ({2: None}, "not a LayerAction"),
    ],
)
def test_malformed_schedules_from_python(llama, schedule, fragment):
    reducer = Reducer(llama)
    with pytest.raises(InvalidActionError, match=fragment):
        reducer.run(torch.arange(3, 40)[None], schedule)


BAD_SAMPLING = [(0.0, 0, 1.0), (-1.0, 0, 1.0), (float("nan"), 0, 1.0), (1.0, -3, 1.0), (1.0, 0, 0.0), (1.0, 0, 1.5)]


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), BAD_SAMPLING)
def test_bad_sampling_settings_fail_before_the_prefill(llama, temperature, top_k, top_p, monkeypatch):
    reducer = Reducer(llama)
    monkeypatch.setattr(Reducer, "run", lambda *a, **k: pytest.fail("the prefill ran"))
    with pytest.raises(InvalidActionError):
        reducer.generate(torch.arange(3, 40)[None], do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)


# -- eval: suites, options, journals --------------------------------------------------------------

EVAL_CASES = [
    (["--suite", "no-such-suite"], "unknown suite"),
    (["--suite", "grounded-qa", "--per-cell", "2"], "--per-cell"),
    (["--suite", "niah", "--depths", "0,2"], "--depths"),
    (["--suite", "niah", "--depths", "deep"], "--depths"),
    (["--budgets", "0"], "(0, 1]"),
    (["--budgets", "0.3,1.2"], "(0, 1]"),
    (["--budgets", "half"], "comma-separated numbers"),
    (["--budgets", ","], "at least one budget"),
    (["--baselines", "telepathy"], "neither a policy checkpoint"),
    (["--policy", "/no/such/folder"], "neither a policy checkpoint"),
    (["--adapter", "/no/such/adapter"], "adapter"),
]


@pytest.mark.parametrize(("args", "fragment"), EVAL_CASES, ids=[" ".join(a) for a, _ in EVAL_CASES])
def test_eval_refuses_bad_input_in_one_line(tiny_model_dir, tmp_path, args, fragment):
    result = invoke("eval", "--model", tiny_model_dir, "--out", tmp_path / "o", "--limit", 1, *args)
    assert_clean_error(result, fragment)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "holds no tasks"),
        (b"\n\n", "holds no tasks"),
        (b"not json\n", "not JSON"),
        (b"[1, 2]\n", "JSON object"),
        (b'{"question": ""}\n', "non-empty"),
        (b'{"question": "q", "context": 5}\n', "must be text"),
        (b'{"question": "q", "answers": "town"}\n', "list of strings"),
        (b'{"prompt": "p", "question": "q"}\n', "stands alone"),
        (b'{"question": "q \xff"}\n', "not UTF-8"),
    ],
)
def test_eval_refuses_malformed_suite_files(tiny_model_dir, tmp_path, body, fragment):
    suite = tmp_path / "mine.jsonl"
    suite.write_bytes(body)
    assert_clean_error(invoke("eval", "--suite", suite, "--model", tiny_model_dir, "--out", tmp_path / "o"), fragment)


def test_eval_out_that_is_a_file(tiny_model_dir, tmp_path, suite_file):
    blocker = tmp_path / "results"
    blocker.write_text("keep me")
    result = invoke("eval", "--suite", suite_file, "--model", tiny_model_dir, "--out", blocker, "--baselines", "none",
                    "--budgets", "0.5", "--max-new-tokens", 2)  # fmt: skip
    assert_clean_error(result, "is a file, not a folder")
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize(
    ("fault", "fragment"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only"),
    ],
)
def test_eval_out_that_cannot_be_written(tiny_model_dir, tmp_path, suite_file, monkeypatch, fault, fragment):
    target = tmp_path / "o"
    original = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self == target:
            fault.filename = str(self)
            raise fault
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert_clean_error(invoke("eval", "--suite", suite_file, "--model", tiny_model_dir, "--out", target), fragment)


def test_a_full_disk_is_one_line_and_the_journal_survives(tiny_model_dir, tmp_path, suite_file, monkeypatch):
    out = tmp_path / "o"
    args = ["eval", "--suite", suite_file, "--model", tiny_model_dir, "--out", out, "--baselines", "random",
            "--budgets", "0.5", "--max-new-tokens", 2, "--no-agreement"]  # fmt: skip
    assert invoke(*args).exit_code == 0
    before = (out / "records.jsonl").read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "results.json"))

    monkeypatch.setattr("rlprune.io.atomic_write", full)
    monkeypatch.setattr("rlprune.eval.report.atomic_write_text", full)
    assert_clean_error(invoke(*args), "disk is full")
    assert (out / "records.jsonl").read_bytes() == before


def _save(folder: Path, model, seed: int) -> Path:
    torch.manual_seed(seed)
    policy = ReductionPolicy(decision_layers=(1, 2))
    with torch.no_grad():
        policy.action_head.bias.copy_(torch.randn_like(policy.action_head.bias) * 3)
    return save_policy(policy, folder, model=model)


def _config(suite_file, **kw) -> EvalConfig:
    return EvalConfig(str(suite_file), budgets=(0.5,), max_new_tokens=2, bootstrap_samples=100, **kw)


def test_records_of_another_checkpoint_with_the_same_name_are_refused(llama_pair, tmp_path, suite_file):
    model, tokenizer = llama_pair
    first = _save(tmp_path / "a" / "policy", model, seed=1)
    second = _save(tmp_path / "b" / "policy", model, seed=2)
    out = tmp_path / "o"
    evaluate(_config(suite_file, policies=(str(first),), baselines=()), out, model=model, tokenizer=tokenizer,
             show_progress=False)  # fmt: skip
    before = snapshot(out)
    with pytest.raises(RLPruneError, match="'policy' made from another checkpoint.*--force-new"):
        Evaluation(_config(suite_file, policies=(str(second),), baselines=()), out, model=model, tokenizer=tokenizer)
    assert snapshot(out) == before
    fresh = evaluate(_config(suite_file, policies=(str(second),), baselines=()), out, model=model,
                     tokenizer=tokenizer, show_progress=False, fresh=True)  # fmt: skip
    assert (out / "records.jsonl.old").is_file()
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()[1:]]
    assert {r["method"] for r in records} == {"full model", "policy"} and len(fresh) == 2


def test_a_changed_best_static_table_is_another_method(llama_pair, tmp_path, suite_file):
    model, tokenizer = llama_pair
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"best": {"0.5": {"schedule": "1:prune:0.5:attention"}}}))
    config = _config(suite_file, baselines=(f"best-static:{table}",))
    evaluate(config, tmp_path / "o", model=model, tokenizer=tokenizer, show_progress=False)
    table.write_text(json.dumps({"best": {"0.5": {"schedule": "2:prune:0.5:key_norm"}}}))
    with pytest.raises(RLPruneError, match="another checkpoint or spec"):
        Evaluation(config, tmp_path / "o", model=model, tokenizer=tokenizer)


def test_two_evaluations_never_share_a_folder(llama_pair, tmp_path, suite_file):
    model, tokenizer = llama_pair
    config = _config(suite_file, baselines=("random",))
    with Evaluation(config, tmp_path, model=model, tokenizer=tokenizer):
        with pytest.raises(RLPruneError, match="another evaluation is writing"):
            Evaluation(config, tmp_path, model=model, tokenizer=tokenizer)
    Evaluation(config, tmp_path, model=model, tokenizer=tokenizer).close()  # free again once the first is done


def _journal(llama_pair, folder: Path, suite_file) -> tuple[EvalConfig, Path, list[str]]:
    """A finished evaluation in ``folder``: its config, journal path and journal lines."""
    model, tokenizer = llama_pair
    config = _config(suite_file, baselines=("random",))
    evaluate(config, folder, model=model, tokenizer=tokenizer, show_progress=False)
    journal = folder / "records.jsonl"
    return config, journal, journal.read_text().splitlines()


def test_a_torn_last_line_never_swallows_the_next_record(llama_pair, tmp_path, suite_file):
    model, tokenizer = llama_pair
    config, journal, lines = _journal(llama_pair, tmp_path, suite_file)
    journal.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])  # killed while writing the last record
    evaluate(config, tmp_path, model=model, tokenizer=tokenizer, show_progress=False)
    again = journal.read_text().splitlines()
    assert len(again) == len(lines) and all(json.loads(line) for line in again)


@pytest.mark.parametrize("header", [b"", b"garbage\n", b'{"settings": 1}\n', b"[]\n"])
def test_a_folder_holding_something_else_is_not_taken_for_a_journal(llama_pair, tmp_path, suite_file, header):
    model, tokenizer = llama_pair
    (tmp_path / "records.jsonl").write_bytes(header + b'{"item": 1}\n')
    before = snapshot(tmp_path)
    with pytest.raises(RLPruneError, match="not an rlprune evaluation journal|other settings"):
        Evaluation(_config(suite_file, baselines=("random",)), tmp_path, model=model, tokenizer=tokenizer)
    assert snapshot(tmp_path) == before


def test_a_journal_of_an_earlier_format_is_refused(llama_pair, tmp_path, suite_file):
    model, tokenizer = llama_pair
    config, journal, lines = _journal(llama_pair, tmp_path, suite_file)
    header = json.loads(lines[0])
    header["settings"]["format"] = 1
    journal.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with pytest.raises(RLPruneError, match="other settings \\(format\\)"):
        Evaluation(config, tmp_path, model=model, tokenizer=tokenizer)


# -- export ---------------------------------------------------------------------------------------


def test_export_never_overwrites_without_force(tmp_path):
    target = tmp_path / "policy"
    target.mkdir()
    (target / "config.json").write_text("{}")
    assert_clean_error(invoke("export", tmp_path / "run", "--out", target), "--force")
    assert (target / "config.json").read_text() == "{}"
    assert_clean_error(invoke("export", tmp_path / "run", "--out", target, "--force"), "no trained policy")


@pytest.fixture(scope="module")
def llama_pair():
    return tiny_model("llama"), tiny_tokenizer()


# -- models and caches ------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\0" * 4096, b"GGUF" + b"\xff" * 64])
def test_a_file_that_is_no_gguf_model(tmp_path, monkeypatch, content):
    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path / "home"))
    fake = tmp_path / "model.gguf"
    fake.write_bytes(content)
    assert_clean_error(invoke("info", "--model", fake), "could not be read as a GGUF model")
    assert fake.read_bytes() == content


def test_a_cache_folder_blocked_by_a_file(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("a file, not a folder")
    monkeypatch.setenv("RLPRUNE_HOME", str(home))
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"\0" * 64)
    assert_clean_error(invoke("info", "--model", fake), "in the way")
    assert home.read_text() == "a file, not a folder"
