"""Hostile evaluations: resumes never reuse a grade made for other answers or groups, repeated or
misspelt flags are refused before anything is written, every journal set aside is kept, suite
lines that cannot be graded are refused with their numbers, and a huge long-context grid is only
built as far as ``--limit`` reaches."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_model, tiny_tokenizer
from typer.testing import CliRunner

from rlprune.cli import app
from rlprune.data.long import LONG_KINDS, LongSuite
from rlprune.data.tasks import Task, answer_correct, load_jsonl
from rlprune.engine import Reducer
from rlprune.errors import RLPruneError
from rlprune.eval import EvalConfig, Evaluation, evaluate, load_suite
from rlprune.eval.suites import SUITES

CONTEXT = "the keeper was in the town . " * 12
GOOD = {"context": CONTEXT, "question": "where is the keeper ?", "answer": "town"}


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_error(result, *fragments: str) -> None:
    """Exit 1 with one `error:` line holding every fragment, and no traceback."""
    output = result.output
    assert result.exit_code == 1, output
    assert "Traceback" not in output and output.count("error:") == 1, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    for fragment in fragments:
        assert fragment.lower() in " ".join(output.split()).lower(), output


def write_suite(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def pair():
    """A tiny model whose full answer to every item below is "keeper keeper", and its tokenizer."""
    return tiny_model("llama", seed=4), tiny_tokenizer()


def config(suite: Path, **changes) -> EvalConfig:
    settings = dict(baselines=("random",), budgets=(0.5,), max_new_tokens=3, bootstrap_samples=100, agreement=False)
    return EvalConfig(str(suite), **{**settings, **changes})


def run(pair, suite: Path, out: Path, **changes) -> dict:
    model, tokenizer = pair
    evaluate(config(suite, **changes), out, model=model, tokenizer=tokenizer, show_progress=False)
    return json.loads((out / "results.json").read_text())


def item(index: int, **fields) -> dict:
    return {"context": CONTEXT, "question": f"where is item {index} ?", **fields}


# -- a resumed evaluation re-grades items whose answers, match mode or metadata changed -----------

RESUME_CASES = {
    # (suite lines before, suite lines after): each change decides a grade or a group
    "answers": ([item(i, answers=["zebra"]) for i in range(2)], [item(i, answers=["keeper"]) for i in range(2)]),
    "answers-added-beside-answer": (
        [item(i, answer="zebra") for i in range(2)],
        [item(i, answer="zebra", answers=["zebra", "keeper"]) for i in range(2)],
    ),
    "match-mode": (
        [item(i, answers=["keeper", "zebra"]) for i in range(2)],
        [item(i, answers=["keeper", "zebra"], match="all") for i in range(2)],
    ),
    "group-field": (
        [item(i, answer="keeper", source="a") for i in range(2)],
        [item(i, answer="keeper", source="ab"[i]) for i in range(2)],
    ),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_a_resume_after_the_suite_changed_regrades_every_changed_item(pair, tmp_path, monkeypatch, case):
    before, after = RESUME_CASES[case]
    suite, out = tmp_path / "suite.jsonl", tmp_path / "out"
    first = run(pair, write_suite(suite, before), out, group_by="source" if case == "group-field" else "kind")
    old_lines = (out / "records.jsonl").read_text().splitlines()
    calls = []
    original = Reducer.generate
    monkeypatch.setattr(Reducer, "generate", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    second = run(pair, write_suite(suite, after), out, group_by="source" if case == "group-field" else "kind")
    changed = sum(old != new for old, new in zip(before, after, strict=True))
    assert len(calls) == 1 + 2 * changed  # the warm-up, then each changed item under the full model and the baseline
    tasks = {t.uid: t for t in load_jsonl(suite)}
    assert {r["item"] for r in second["records"]} == set(tasks)
    assert len({r["item"] for r in first["records"]} - set(tasks)) == changed
    for record in second["records"]:
        task = tasks[record["item"]]
        assert record["correct"] == answer_correct(record["answer"], task)
        assert record.get("meta", {}) == task.meta
    was, now = ([r for r in run["records"] if r["method"] == "full model"] for run in (first, second))
    assert now and all(r["answer"] == "keeper keeper" for r in was + now)
    if case in ("answers", "answers-added-beside-answer"):  # a stale grade would stay wrong
        assert not any(r["correct"] for r in was) and all(r["correct"] for r in now)
    if case == "match-mode":  # a stale grade would stay right
        assert all(r["correct"] for r in was) and not any(r["correct"] for r in now)
    if case == "group-field":
        assert first["by_source"] == {} and sorted(second["by_source"]) == ["a", "b"]
    assert (out / "records.jsonl").read_text().splitlines()[: len(old_lines)] == old_lines  # append-only


def test_an_unchanged_suite_resumes_without_running_anything(pair, tmp_path):
    suite = write_suite(tmp_path / "suite.jsonl", [item(i, answer="keeper", source="a") for i in range(2)])
    run(pair, suite, tmp_path / "out")
    model, tokenizer = pair
    with Evaluation(config(suite), tmp_path / "out", model=model, tokenizer=tokenizer) as evaluation:
        assert evaluation.pending() == 0 and len(evaluation.records()) == 4


def test_records_of_an_older_item_identity_are_redone_not_refused(pair, tmp_path):
    """A journal written when an item's identity hashed only kind, context, question and answer."""
    suite = write_suite(tmp_path / "suite.jsonl", [item(i, answers=["keeper"]) for i in range(2)])
    out = tmp_path / "out"
    run(pair, suite, out)
    journal = out / "records.jsonl"
    header, *records = [json.loads(line) for line in journal.read_text().splitlines()]
    tasks = {t.uid: t for t in load_jsonl(suite)}
    for record in records:
        task = tasks[record["item"]]
        old = json.dumps([task.kind, task.context, task.question, task.answer], ensure_ascii=False)
        record["item"] = hashlib.sha256(old.encode()).hexdigest()[:16]
    journal.write_text("".join(json.dumps(line) + "\n" for line in [header, *records]))
    model, tokenizer = pair
    with Evaluation(config(suite), out, model=model, tokenizer=tokenizer) as evaluation:
        assert evaluation.pending() == 4
        assert {r["item"] for r in evaluation.run(show_progress=False)} == set(tasks)


def test_item_identity_covers_answers_match_prior_and_metadata():
    base = Task("grounded", "q?", "ctx", "Ada", ("Ada",), meta={"source": "a"})
    variants = [
        Task("grounded", "q?", "ctx", "Ada", ("Ada", "Ada Crane"), meta={"source": "a"}),
        Task("grounded", "q?", "ctx", "Ada", ("Ada",), meta={"source": "a", "match": "all"}),
        Task("grounded", "q?", "ctx", "Ada", ("Ada",), meta={"source": "b"}),
        Task("grounded", "q?", "ctx", "Ada", ("Ada",), prior="Bo", meta={"source": "a"}),
    ]
    assert len({base.uid, *(v.uid for v in variants)}) == 1 + len(variants)
    same = Task("grounded", "q?", "ctx", "Ada", ("Ada",), meta={"source": "a"})
    assert same.uid == base.uid


# -- repeated budgets and methods ----------------------------------------------------------------

REPEAT_CASES = [
    (["--budgets", "0.5,0.5"], "budget 0.5 is given twice"),
    (["--budgets", "0.3,0.5,0.50"], "budget 0.5 is given twice"),
    (["--budgets", "0.7, 0.3 ,0.7"], "budget 0.7 is given twice"),
    (["--baselines", "snapkv,snapkv"], "'snapkv' is given twice"),
    (["--baselines", "random, fastv ,random"], "'random' is given twice"),
    (["--baselines", "none", "--policy", "snapkv", "--policy", "snapkv"], "'snapkv' is given twice"),
    (["--baselines", "all", "--policy", "tome"], "'tome' is given twice"),
]


@pytest.mark.parametrize(("args", "fragment"), REPEAT_CASES, ids=[" ".join(a) for a, _ in REPEAT_CASES])
def test_repeated_budgets_and_methods_are_refused_before_anything_is_written(tiny_model_dir, tmp_path, args, fragment):
    suite = write_suite(tmp_path / "suite.jsonl", [GOOD])
    result = invoke("eval", "--suite", suite, "--model", tiny_model_dir, "--out", tmp_path / "o", *args)
    assert_clean_error(result, fragment, "give each")
    assert not (tmp_path / "o").exists()


def test_one_checkpoint_folder_given_twice_by_two_paths_is_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    suite = write_suite(tmp_path / "suite.jsonl", [GOOD])
    result = invoke("eval", "--suite", suite, "--model", tiny_model_dir, "--out", tmp_path / "o", "--baselines", "none",
                    "--policy", folder, "--policy", f"{tmp_path}/./ckpt/")  # fmt: skip
    assert_clean_error(result, "is given twice", "ckpt")


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        (dict(budgets=(0.5, np.float32(0.5))), "budget 0.5 is given twice"),
        (dict(budgets=(np.float64(0.3), 0.3)), "budget 0.3 is given twice"),
        (dict(baselines=("random", " random")), "'random' is given twice"),
        (dict(policies=("fastv",), baselines=("fastv", "snapkv")), "'fastv' is given twice"),
    ],
)
def test_the_python_api_refuses_repeats_too(changes, pattern):
    with pytest.raises(RLPruneError, match=pattern):
        EvalConfig("suite.jsonl", **changes)


def test_distinct_budgets_and_methods_are_still_accepted():
    accepted = EvalConfig("suite.jsonl", policies=("snapkv",), baselines=("snapkv:pool=-2:+6", "random"),
                          budgets=(0.3, np.float32(0.5), 0.7))  # fmt: skip
    assert len(accepted.budgets) == 3


# -- --group-by must name a field the items have --------------------------------------------------


@pytest.mark.parametrize("field", ["srcc", "Source", "", "answer", "method"])
def test_an_unknown_group_by_field_names_the_fields_the_items_have(tiny_model_dir, tmp_path, field):
    suite = write_suite(tmp_path / "suite.jsonl", [{**GOOD, "source": "hand"}, {**GOOD, "id": "q2", "source": "web"}])
    result = invoke("eval", "--suite", suite, "--model", tiny_model_dir, "--out", tmp_path / "o", "--group-by", field)
    assert_clean_error(result, f"--group-by {field!r}", "use one of id, kind, source")
    assert not (tmp_path / "o").exists()


def test_group_by_a_long_grids_own_field_is_accepted_and_a_typo_is_not(pair, tmp_path, monkeypatch):
    monkeypatch.setitem(SUITES, "niah-tiny", LongSuite("niah", lengths=(150,), depths=(0.0, 1.0), per_cell=1))
    model, tokenizer = pair
    Evaluation(config("niah-tiny", group_by="depth"), tmp_path / "a", model=model, tokenizer=tokenizer).close()
    with pytest.raises(RLPruneError, match="'lenght' is not a field.*depth, kind, length"):
        Evaluation(config("niah-tiny", group_by="lenght"), tmp_path / "b", model=model, tokenizer=tokenizer)


# -- --force-new keeps every earlier journal ---------------------------------------------------


@pytest.mark.parametrize("restarts", [1, 2, 3])
def test_every_fresh_start_keeps_every_earlier_journal(pair, tmp_path, capsys, restarts):
    suite = write_suite(tmp_path / "suite.jsonl", [item(0, answer="keeper")])
    out = tmp_path / "out"
    model, tokenizer = pair
    journals = []
    for number in range(restarts + 1):
        capsys.readouterr()
        evaluate(config(suite), out, model=model, tokenizer=tokenizer, show_progress=False, fresh=number > 0)
        if number:
            kept = out / ("records.jsonl.old" + (f".{number - 1}" if number > 1 else ""))
            assert f"kept in {kept}" in capsys.readouterr().err
        journals.append((out / "records.jsonl").read_bytes())
    names = ["records.jsonl.old"] + [f"records.jsonl.old.{n}" for n in range(1, restarts)]
    assert sorted(p.name for p in out.glob("records.jsonl.old*")) == sorted(names)
    assert [(out / name).read_bytes() for name in names] == journals[:-1]


def test_force_new_on_the_command_line_says_where_the_journal_went(tiny_model_dir, tmp_path):
    suite = write_suite(tmp_path / "suite.jsonl", [GOOD])
    out = tmp_path / "o"
    args = ["eval", "--suite", suite, "--model", tiny_model_dir, "--out", out, "--baselines", "none",
            "--budgets", "0.5", "--max-new-tokens", 2, "--no-agreement", "--bootstrap", 100]  # fmt: skip
    assert invoke(*args).exit_code == 0
    (out / "records.jsonl.old").write_text("an earlier journal\n")
    result = invoke(*args, "--force-new")
    assert result.exit_code == 0, result.output
    assert "records.jsonl.old.1" in " ".join(result.output.split())
    assert (out / "records.jsonl.old").read_text() == "an earlier journal\n"


# -- suite lines that cannot be graded are refused when the suite is loaded ---------------------

BAD_LINES = [
    ({"answers": ["The"], "match": "all"}, "answer 'The' is empty"),
    ({"answer": "The"}, "answer 'The' is empty"),
    ({"answer": "an"}, "answer 'an' is empty"),
    ({"answer": ""}, "answer '' is empty"),
    ({"answers": ["town", "?"]}, "answer '?' is empty"),
    ({"answers": ["town", "the ..."]}, "answer 'the ...' is empty"),
    ({"context": ""}, '"context" is empty'),
    ({"context": "   \n "}, '"context" is empty'),
    ({"match": "every"}, '"match" must be "any" or "all"'),
    ({"match": 1}, '"match" must be "any" or "all"'),
]


@pytest.mark.parametrize(("change", "fragment"), BAD_LINES, ids=[json.dumps(c) for c, _ in BAD_LINES])
def test_an_ungradable_suite_line_is_refused_with_its_number(tiny_model_dir, tmp_path, change, fragment):
    suite = write_suite(tmp_path / "suite.jsonl", [GOOD, {**GOOD, **change}])
    result = invoke("eval", "--suite", suite, "--model", tiny_model_dir, "--out", tmp_path / "o")
    assert_clean_error(result, f"line 2: {fragment}")
    assert "line 1:" not in result.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "change", [{"answer": "A"}, {"answer": "b", "answers": ["a", "B."], "match": "all"}, {"match": "any"}]
)
def test_one_letter_answers_and_an_explicit_match_mode_load(tmp_path, change):
    (task,) = load_jsonl(write_suite(tmp_path / "suite.jsonl", [{**GOOD, **change}]))
    assert task.kind == "grounded"


# -- answer matching -------------------------------------------------------------------------------

MATCHES = [
    ("", ["The"], "all", None),  # nothing to look for: no gold answer, never "correct"
    ("", ["Paris", "The"], "all", False),
    ("The answer is A.", ["A"], None, True),
    ("(a)", ["A"], None, True),
    ("A", ["A"], None, True),
    ("B", ["A"], None, False),
    ("ABC", ["A"], None, False),
    ("Bat", ["B"], None, False),
    ("option b, then c", ["B.", "C"], "all", True),
    ("option b", ["B.", "C"], "all", False),
    ("Paris and Lyon", ["Paris", "Lyon"], "all", True),
    ("Tobias Wrenfield", ["Tobias Wren"], None, False),
    ("It was the Tobias Wren.", ["Tobias Wren"], None, True),
]


@pytest.mark.parametrize(("output", "answers", "match", "expected"), MATCHES)
def test_answer_matching(output, answers, match, expected):
    task = Task("grounded", "q?", "ctx", None, tuple(answers), meta={"match": match} if match else {})
    assert answer_correct(output, task) is expected


# -- long-context grids are built lazily ----------------------------------------------------------


@pytest.mark.parametrize("kind", LONG_KINDS)
def test_a_huge_grid_cut_by_limit_builds_only_what_is_kept(kind, monkeypatch):
    built = []
    original = LongSuite._builder

    def counting(self):
        build = original(self)
        return lambda *a: built.append(1) or build(*a)

    monkeypatch.setattr(LongSuite, "_builder", counting)
    start = time.monotonic()
    name, tasks = load_suite(kind, limit=2, per_cell=100_000)
    assert time.monotonic() - start < 10
    assert name == kind and len(tasks) == 2 and len(built) == 2
    first = tasks[0].meta["length"]
    assert [t.meta["length"] for t in tasks] == [first, first] and [t.meta["depth"] for t in tasks] == [0.0, 0.0]


@pytest.mark.parametrize("spec", ["niah", "grounded-qa"])
def test_a_limited_suite_is_the_start_of_the_whole_one(spec):
    _, whole = load_suite(spec)
    _, first = load_suite(spec, limit=3)
    assert [t.uid for t in first] == [t.uid for t in whole[:3]]
