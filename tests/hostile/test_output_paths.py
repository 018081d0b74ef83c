"""Hostile paths and option lists: what is written is checked first, nothing foreign is replaced, a
baseline's name is never shadowed, every list option refuses an empty list and names itself.

An alarm fails a test that would block (a FIFO opened for writing or locking waits for a reader).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import tiny_model, tiny_tokenizer
from typer.testing import CliRunner

from rlprune.cli import app
from rlprune.errors import RLPruneError
from rlprune.eval import EvalConfig, evaluate, parse_baselines, parse_budgets
from rlprune.eval.harness import method_identity
from rlprune.io import atomic_write_text, check_writable, open_append
from rlprune.policies import Baseline, SpanHeadPolicy, resolve_policy, save_policy
from rlprune.policies.budget_head import MAX_GRID, BudgetHead

CONTEXT = "the keeper was in the town . " * 12
SUITE = [{"context": CONTEXT, "question": f"where is item {i} ?", "answer": "town"} for i in range(2)]


@pytest.fixture(autouse=True)
def no_blocking():
    def expire(*_):
        raise TimeoutError("an open blocked: a FIFO was opened as a file")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def pair():
    return tiny_model("llama", seed=4), tiny_tokenizer()


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def clean_error(result, *fragments: str, code: int = 1) -> str:
    output = " ".join(result.output.split())
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    for fragment in fragments:
        assert fragment in output, output
    return output


def suite_file(folder: Path) -> Path:
    path = folder / "suite.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in SUITE))
    return path


def run(pair, suite: Path, out: Path, **changes) -> list:
    model, tokenizer = pair
    settings = dict(baselines=("random",), budgets=(0.5,), max_new_tokens=2, bootstrap_samples=100, agreement=False)
    config = EvalConfig(str(suite), **{**settings, **changes})
    return evaluate(config, out, model=model, tokenizer=tokenizer, show_progress=False)


# -- what stands where a file is written or locked ----------------------------------------------------


@pytest.mark.parametrize("name", ["records.jsonl", ".lock"])
def test_a_fifo_journal_or_lock_is_refused_not_waited_on(pair, tmp_path, name):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / name)
    with pytest.raises(RLPruneError, match=r"cannot be written: it is a FIFO \(named pipe\), not a regular file"):
        run(pair, suite_file(tmp_path), out)
    assert not (out / "results.json").exists()


def test_a_folder_where_the_journal_goes_is_refused(pair, tmp_path):
    (tmp_path / "out" / "records.jsonl").mkdir(parents=True)
    with pytest.raises(RLPruneError, match="it is a folder, not a regular file"):
        run(pair, suite_file(tmp_path), tmp_path / "out")


def test_open_append_refuses_a_fifo_swapped_in_after_the_check(tmp_path, monkeypatch):
    """The open itself is non-blocking: a FIFO that appears between the check and the open is refused."""
    path = tmp_path / "records.jsonl"
    monkeypatch.setattr("rlprune.io.check_writable", lambda p, what: os.mkfifo(p) or Path(p))
    with pytest.raises(RLPruneError, match="cannot be written"):
        open_append(path, "journal")


@pytest.mark.parametrize("kind", ["fifo", "folder", "no-folder"])
def test_an_atomic_write_checks_its_path_first(tmp_path, kind):
    path = tmp_path / "results.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path = tmp_path / "missing" / "results.json"
    with pytest.raises(RLPruneError, match="results.json cannot be written: "):
        atomic_write_text(path, "{}")
    assert check_writable(tmp_path / "fine.json") == tmp_path / "fine.json"


# -- an empty --out, and files rlprune did not write ---------------------------------------------------


def test_an_empty_out_is_refused_and_the_current_folder_is_untouched(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results.json").write_text("mine")
    suite = suite_file(tmp_path)
    result = invoke("eval", "--suite", suite, "--model", tiny_model_dir, "--out", "", "--baselines", "none")
    clean_error(result, "--out", "is empty", code=2)
    assert (tmp_path / "results.json").read_text() == "mine" and not (tmp_path / "records.jsonl").exists()
    with pytest.raises(RLPruneError, match="out is empty"):
        evaluate(EvalConfig(str(suite)), "")


@pytest.mark.parametrize("command", [["export", "runs/x"], ["train-head"], ["train-budget"], ["best-static"]])
def test_every_out_option_refuses_an_empty_value(command):
    clean_error(invoke(*command, "--out", " "), "--out", "is empty", code=2)


@pytest.mark.parametrize("report", ["results.json", "results.md", "pareto.png"])
def test_eval_never_replaces_a_report_it_did_not_write(pair, tmp_path, monkeypatch, report):
    monkeypatch.chdir(tmp_path)
    (tmp_path / report).write_text("the user's own")
    with pytest.raises(RLPruneError, match=f"holds {report} but no records.jsonl: rlprune did not write it"):
        run(pair, suite_file(tmp_path), Path("."))
    assert (tmp_path / report).read_text() == "the user's own"
    assert not (tmp_path / "records.jsonl").exists() and not (tmp_path / ".lock").exists()


def test_an_evaluation_folder_of_its_own_is_rewritten_and_resumed(pair, tmp_path):
    out = tmp_path / "out"
    first = run(pair, suite_file(tmp_path), out)
    assert json.loads((out / "results.json").read_text())["items"] == 2
    assert run(pair, suite_file(tmp_path), out) == first  # its own reports, marked by its journal
    assert run(pair, suite_file(tmp_path), out, baselines=("tome",)) != first


# -- names: a baseline is never shadowed by a folder --------------------------------------------------


def test_a_folder_named_like_a_baseline_does_not_shadow_it(pair, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_policy(SpanHeadPolicy(pair[0].config.hidden_size, decision_layer=1), tmp_path / "random", model=pair[0])
    assert isinstance(resolve_policy("random"), Baseline)
    assert isinstance(resolve_policy("./random", pair[0]), SpanHeadPolicy)  # the folder, written as a path
    assert method_identity("random") == hashlib.sha256(b"random").hexdigest()
    rows = run(pair, suite_file(tmp_path), tmp_path / "out")
    assert {row["method"] for row in rows} == {"full model", "random"}


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_an_empty_policy_is_refused_by_name(tiny_model_dir, tmp_path, command):
    extra = ["--out", tmp_path / "o"] if command == "eval" else ["hello"]
    result = invoke(command, "--model", tiny_model_dir, "--policy", " ", *extra)
    clean_error(result, "the policy (--policy) is empty")


# -- fingerprints read only what a checkpoint declares, bounded -----------------------------------------


def test_a_huge_extra_file_in_a_policy_folder_is_not_read(tmp_path):
    folder = save_policy(SpanHeadPolicy(16, decision_layer=1), tmp_path / "head")
    before = method_identity(str(folder))
    with open(folder / "notes.bin", "wb") as handle:  # 3 GiB, sparse: reading it whole takes GBs of memory
        handle.truncate(3 << 30)
    start = time.monotonic()
    assert method_identity(str(folder)) == before
    assert time.monotonic() - start < 5


def test_huge_policy_weights_are_refused_unread(tmp_path):
    folder = save_policy(SpanHeadPolicy(16, decision_layer=1), tmp_path / "head")
    with open(folder / "policy.safetensors", "r+b") as handle:
        handle.truncate(3 << 30)
    with pytest.raises(RLPruneError, match="policy file .*policy.safetensors is too big"):
        method_identity(str(folder))


# -- list options: an empty list is refused, and every message names its option ---------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--budgets", ","], "--budgets lists nothing"),
        (["--budget-mode", "average", "--oracle-grid", ""], "--oracle-grid lists nothing"),
        (["--budget-mode", "average", "--oracle-grid", "2"], "each --oracle-grid value must be a number in (0, 1]"),
        (["--baselines", ""], "--baselines '' names no baseline"),
        (["--baselines", " , "], "--baselines ' , ' names no baseline"),
        (["--suite", "niah", "--depths", ""], "--depths '' must be comma-separated numbers"),
        (["--budgets", "0"], "each --budgets value must be a number in (0, 1]"),
    ],
)
def test_eval_list_options(tiny_model_dir, tmp_path, options, fragment):
    result = invoke("eval", "--model", tiny_model_dir, "--out", tmp_path / "o", *options)
    clean_error(result, fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("grid", "fragment"),
    [
        ("0", "each --grid value must be a number in (0, 1]"),
        ("", "--grid lists nothing"),
        (",".join(f"{(i + 1) / 65:.4f}" for i in range(MAX_GRID + 1)), "a budget grid (--grid) holds at most 64"),
    ],
    ids=["zero", "empty", "65-ratios"],
)
def test_train_budget_refuses_a_bad_grid_up_front(tmp_path, grid, fragment):
    clean_error(invoke("train-budget", "--out", tmp_path / "o", "--grid", grid), fragment)


def test_a_grid_as_big_as_a_checkpoint_holds_saves_and_loads():
    grid = [(i + 1) / MAX_GRID for i in range(MAX_GRID)]
    assert BudgetHead(grid).grid == tuple(grid)


def test_a_policy_load_policy_would_refuse_is_not_saved(tmp_path):
    with pytest.raises(RLPruneError, match="cannot be saved as a checkpoint: network.default_budget is 1.5"):
        save_policy(SpanHeadPolicy(16, decision_layer=1, default_budget=1.5), tmp_path / "head")
    assert not (tmp_path / "head" / "config.json").exists()


@pytest.mark.parametrize(
    ("text", "specs"),
    [
        ("snapkv,fastv:layer=2,ratio=0.5", ("snapkv", "fastv:layer=2,ratio=0.5")),
        ("fastv:layer=2, ratio=0.5 ,tome", ("fastv:layer=2,ratio=0.5", "tome")),
        ("random,tome", ("random", "tome")),
        ("static:2:prune:0.5,3:merge:0.3,tome", ("static:2:prune:0.5,3:merge:0.3", "tome")),
        ("tome,ratio=0.5", ("tome", "ratio=0.5")),  # no spec to continue: refused later as unknown
        ("all", ("random", "fastv", "snapkv", "pyramid", "tome")),
        ("none", ()),
    ],
)
def test_a_key_after_a_comma_continues_the_baseline_spec(text, specs):
    assert parse_baselines(text) == specs


def test_a_spec_with_two_parameters_runs_in_eval(pair, tmp_path):
    rows = run(pair, suite_file(tmp_path), tmp_path / "o", baselines=parse_baselines("snapkv,fastv:layer=1,ratio=0.5"))
    assert {row["method"] for row in rows} == {"full model", "snapkv", "fastv:layer=1,ratio=0.5"}


def test_parse_budgets_names_the_option_it_was_given():
    with pytest.raises(RLPruneError, match="each --grid value must be a number in"):
        parse_budgets("0.5,1.5", "--grid")


# -- options that only matter with another, and a model that differs from a preset's -----------------------


def test_min_keep_without_a_later_head_is_refused(tmp_path):
    result = invoke("train-head", "--out", tmp_path / "o", "--min-keep", "0.3")
    clean_error(result, "--min-keep sets the later head's share; add --later-layer")


def test_a_model_other_than_the_ppo_presets_is_refused(tmp_path):
    result = invoke("train-head", "--out", tmp_path / "o", "--model", "tiny-random", "--ppo-updates", "1")
    clean_error(result, "--model tiny-random differs from the --ppo-env preset's model smollm2-135m")


# -- messages say what is wrong with a file ------------------------------------------------------------------


def test_a_gguf_linked_to_a_device_is_called_a_device(tmp_path):
    (tmp_path / "m.gguf").symlink_to("/dev/zero")
    clean_error(invoke("info", "--model", tmp_path / "m.gguf"), "it is a character device, not a regular file")
    clean_error(invoke("info", "--model", tmp_path / "gone.gguf"), "gone.gguf does not exist")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its mode")
def test_unreadable_policy_weights_are_called_unreadable(tmp_path):
    folder = save_policy(SpanHeadPolicy(16, decision_layer=1), tmp_path / "head")
    (folder / "policy.safetensors").chmod(0)
    with pytest.raises(RLPruneError, match="cannot be read \\(permission denied\\)"):
        resolve_policy(str(folder))
