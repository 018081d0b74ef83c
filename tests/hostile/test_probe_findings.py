"""Inputs benchmarks/hostile_probe.py found accepted in silence or ending in a traceback: each now ends in one
clean error naming what is wrong (or, where harmless, loads as it should)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlprune import load_model
from rlprune.cli import app
from rlprune.data.tasks import load_jsonl
from rlprune.errors import RLPruneError
from rlprune.eval import EvalConfig, Evaluation
from rlprune.eval.options import parse_baselines, parse_budgets, parse_depths
from rlprune.io import check_folder
from rlprune.policies import (
    BaselineError,
    IncompatiblePolicyError,
    ReductionPolicy,
    SpanHeadPolicy,
    make_baseline,
    resolve_policy,
)

CONTEXT = "The keeper of the harbour is Ada Crane."
QUESTION = "Who is the keeper?"


@pytest.fixture(scope="module")
def tiny() -> tuple:
    return load_model("tiny-random")


def one_line(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def suite(tmp_path: Path, *items: dict | str) -> Path:
    path = tmp_path / "s.jsonl"
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i, ensure_ascii=False)) + "\n" for i in items))
    return path


# -- list options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "text", "option"),
    [
        (parse_budgets, "0.5,,0.7", "--budgets"),
        (parse_budgets, "0.5,", "--budgets"),
        (parse_baselines, " , fastv", "--baselines"),
        (parse_baselines, "fastv:layer=2,,snapkv", "--baselines"),
        (parse_depths, ",0.5", "--depths"),
    ],
)
def test_an_empty_item_in_a_list_option_is_refused_not_dropped(parse, text, option):
    with pytest.raises(RLPruneError) as error:
        parse(text)
    one_line(error, option, "empty item")


def test_a_list_with_spaces_after_commas_still_parses():
    assert parse_budgets("0.5, 0.7") == (0.5, 0.7)
    assert parse_baselines("fastv:layer=2,ratio=0.5, snapkv") == ("fastv:layer=2,ratio=0.5", "snapkv")


def test_a_repeated_depth_is_refused():
    with pytest.raises(RLPruneError) as error:
        parse_depths("0,0.5,0")
    one_line(error, "--depths", "repeats")


# -- baseline specs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("fastv:layer=1,layer=2", "layer is given twice"),
        ("snapkv:ratio=0.3,ratio = 0.3", "ratio is given twice"),
        ("static:", "nothing after ':'"),
        ("fastv:", "nothing after ':'"),
        (None, "got NoneType"),
        (3, "got int"),
    ],
)
def test_baseline_specs_that_would_be_silently_rewritten_are_refused(spec, named):
    with pytest.raises(BaselineError) as error:
        make_baseline(spec)
    one_line(error, named)


def test_a_spaced_parameter_still_reads():
    assert str(make_baseline("fastv:layer = 3")) == "fastv:layer=3,ratio=0.5"


# -- policies ---------------------------------------------------------------------------------------------


def test_a_layer_policy_with_no_decision_layer_is_refused(tiny):
    with pytest.raises(IncompatiblePolicyError) as error:
        resolve_policy(ReductionPolicy(hidden=(8,), decision_layers=()), tiny[0])
    one_line(error, "decision_layers is empty")


def test_the_no_reduction_baseline_still_resolves(tiny):
    assert str(resolve_policy("none", tiny[0])) == "none"


def test_negative_sentence_ends_are_an_argument_error_naming_the_field():
    with pytest.raises(RLPruneError) as error:
        SpanHeadPolicy(64, 1, unit="sentence", sentence_ends=[-1])
    one_line(error, "sentence_ends")


# -- suite text -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [("Zo\u00eb", "Zoe\u0308"), ("Ada", "\uff21\uff44\uff41")],
    ids=["nfc-nfd", "fullwidth"],
)
def test_answers_graded_alike_make_a_repeated_item(tmp_path, first, second):
    path = suite(tmp_path, {"context": CONTEXT, "question": QUESTION, "answer": first}, {
        "context": CONTEXT, "question": QUESTION, "answer": second
    })  # fmt: skip
    with pytest.raises(RLPruneError, match="line 2: repeats line 1"):
        load_jsonl(path)


@pytest.mark.parametrize(
    "item",
    [
        {"context": CONTEXT, "question": "\u200b\u200b", "answer": "Ada"},
        {"context": CONTEXT, "question": "\u2003\u0301", "answer": "Ada"},
        {"prompt": "\u200b"},
    ],
)
def test_a_question_or_prompt_with_nothing_visible_is_refused(tmp_path, item):
    with pytest.raises(RLPruneError, match="line 1"):
        load_jsonl(suite(tmp_path, item))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_a_line_are_refused_with_the_field(tmp_path, constant):
    line = json.dumps({"context": CONTEXT, "question": QUESTION, "answer": "Ada"})[:-1] + f', "x": [1, {constant}]}}'
    with pytest.raises(RLPruneError, match=r"line 1: x\[1\] is NaN or infinite"):
        load_jsonl(suite(tmp_path, line))


def test_a_question_of_punctuation_still_loads(tmp_path):
    assert load_jsonl(suite(tmp_path, {"question": "?"}))[0].question == "?"


# -- output folders ---------------------------------------------------------------------------------------


def test_check_folder_names_what_stands_in_the_way(tmp_path):
    (tmp_path / "file").write_text("mine")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    (tmp_path / "null").symlink_to("/dev/null")
    expected = {
        "file": "is a file, not a folder",
        "fifo": "is a FIFO (named pipe), not a folder",
        "dangling": "is a link to nothing",
        "null": "is a character device, not a folder",
    }
    for name, words in expected.items():
        with pytest.raises(RLPruneError) as error:
            check_folder(tmp_path / name)
        one_line(error, "--out", words)
    with pytest.raises(RLPruneError, match="--out is empty"):
        check_folder("")
    assert check_folder(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"


@pytest.mark.parametrize("out", ["", "fifo"])
def test_evaluation_from_python_refuses_an_empty_or_fifo_folder_and_writes_nothing(tiny, tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    path = suite(tmp_path, {"context": CONTEXT, "question": QUESTION, "answer": "Ada"})
    config = EvalConfig(str(path), model="tiny-random", baselines=("fastv",), budgets=(0.5,), evidence_only=True)
    with pytest.raises(RLPruneError, match="--out"):
        Evaluation(config, out, model=tiny[0], tokenizer=tiny[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "s.jsonl"]


@pytest.mark.parametrize(("field", "named"), [("baselines", "a baseline (--baselines)"), ("policies", "(--policy)")])
def test_an_empty_method_in_eval_config_names_its_own_field(field, named):
    with pytest.raises(RLPruneError) as error:
        EvalConfig("grounded-qa", budgets=(0.5,), **{field: ("",)})
    one_line(error, named, f"({field})")


# -- generate ---------------------------------------------------------------------------------------------


def test_generate_refuses_an_empty_schedule_rather_than_running_the_full_model():
    result = CliRunner().invoke(app, ["generate", QUESTION, "--model", "tiny-random", "--schedule", " "])
    assert result.exit_code == 1 and result.output.count("error:") == 1, result.output
    assert "--schedule is empty" in result.output


# -- apply ------------------------------------------------------------------------------------------------


def test_apply_refuses_the_bare_decoder_in_one_line(tiny):
    from rlprune import apply
    from rlprune.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError) as error, apply(tiny[0].model, "fastv"):
        pass
    one_line(error, "LlamaModel is not a causal language model with its head")
    assert "forward" not in tiny[0].model.__dict__


@pytest.mark.parametrize("budget", [0.9, None, "0.5"])
def test_a_budget_controller_refuses_anything_but_an_average_budget(budget):
    from rlprune.budget import BudgetController

    with pytest.raises(RLPruneError) as error:
        BudgetController(budget)
    one_line(error, "BudgetController takes an AverageBudget")
