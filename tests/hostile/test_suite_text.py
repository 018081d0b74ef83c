"""Hostile suite text: a JSONL suite is checked as a whole, and matching folds Unicode on both sides.

Repeated items, an ``answer`` that disagrees with ``answers``, answers with nothing visible and lone
surrogate escapes are refused with their line numbers; a gold answer and an output that differ only
by Unicode form (NFD against NFC, fullwidth letters, ligatures, case) match.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlprune.cli import app
from rlprune.data.tasks import Task, answer_correct, load_jsonl
from rlprune.errors import RLPruneError
from rlprune.eval import load_suite

CONTEXT = "the keeper was in the town . " * 12
GOOD = {"context": CONTEXT, "question": "where is the keeper ?", "answer": "town"}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def refused(path: Path, *fragments: str) -> str:
    with pytest.raises(RLPruneError) as caught:
        load_jsonl(path)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- repeated items ---------------------------------------------------------------------------------


def test_a_line_repeated_verbatim_is_refused_with_both_line_numbers(tmp_path):
    line = json.dumps(GOOD)
    other = json.dumps({**GOOD, "question": "who is in the town ?"})
    message = refused(write_lines(tmp_path / "s.jsonl", [line, other, line]), "line 3: repeats line 1")
    assert "line 2" not in message


def test_the_same_item_written_differently_is_a_repeat_too(tmp_path):
    """Key order and spacing do not make another item: the item is what the journal keys on."""
    shuffled = json.dumps(dict(reversed(list(GOOD.items()))), indent=None, separators=(" , ", " : "))
    refused(write_lines(tmp_path / "s.jsonl", [json.dumps(GOOD), shuffled]), "line 2: repeats line 1")


def test_items_told_apart_by_a_field_both_load_and_count(tmp_path):
    suite = write_lines(tmp_path / "s.jsonl", [json.dumps({**GOOD, "id": 1}), json.dumps({**GOOD, "id": 2})])
    assert len(load_jsonl(suite)) == 2
    assert len(load_suite(str(suite))[1]) == 2


def test_eval_refuses_a_repeated_line_before_writing_anything(tiny_model_dir, tmp_path):
    suite = write_lines(tmp_path / "s.jsonl", [json.dumps(GOOD)] * 2)
    result = CliRunner().invoke(app, ["eval", "--suite", str(suite), "--model", str(tiny_model_dir), "--out",
                                      str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 1 and "line 2: repeats line 1" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


# -- answer beside answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answers", [["keeper"], [], ["Town of the keeper"]], ids=["another", "empty-list", "a-longer-one"]
)
def test_an_answer_that_is_not_among_answers_is_refused(tmp_path, answers):
    suite = write_lines(tmp_path / "s.jsonl", [json.dumps({**GOOD, "answers": answers})])
    refused(suite, "line 1:", '"answer" \'town\' is not one of "answers"')


@pytest.mark.parametrize("answers", [["town", "city"], ["The Town.", "city"], ["ＴＯＷＮ"]])
def test_an_answer_among_answers_loads_with_every_alias(tmp_path, answers):
    (task,) = load_jsonl(write_lines(tmp_path / "s.jsonl", [json.dumps({**GOOD, "answers": answers})]))
    assert task.answers == tuple(answers) and answer_correct("it is the city", task) is ("city" in answers)


# -- answers with nothing visible ---------------------------------------------------------------------

INVISIBLE = ["\u200b", "\u200e", "\u200f", "\u200b\u200e \u2060", "\ufeff", "\u00ad", "the \u200b", "\u0301", "«»"]


@pytest.mark.parametrize("answer", INVISIBLE, ids=[ascii(a) for a in INVISIBLE])
def test_an_answer_with_nothing_visible_is_refused(tmp_path, answer):
    for field in ({"answer": answer}, {"answer": None, "answers": ["town", answer]}):
        suite = write_lines(tmp_path / "s.jsonl", [json.dumps(GOOD), json.dumps({**GOOD, **field})])
        refused(suite, "line 2: answer", "is empty once articles, punctuation and invisible characters")


def test_invisible_characters_inside_a_visible_answer_are_ignored_when_matching(tmp_path):
    (task,) = load_jsonl(write_lines(tmp_path / "s.jsonl", [json.dumps({**GOOD, "answer": "to\u200bwn\u200e"})]))
    assert answer_correct("In the town.", task) is True


# -- lone surrogates ----------------------------------------------------------------------------------

SURROGATES = {
    "question": (r'{"question": "where \ud800 ?", "context": "c", "answer": "c"}', "question holds a lone surrogate"),
    "context": (r'{"question": "q", "context": "c \udfff", "answer": "c"}', "context holds a lone surrogate"),
    "answers": (r'{"question": "q", "context": "c", "answers": ["c", "\ud800"]}', "answers[1] holds"),
    "prompt": (r'{"prompt": "\ud83d"}', "prompt holds a lone surrogate"),
    "metadata": (r'{"question": "q", "context": "c", "answer": "c", "source": "\ud800"}', "source holds"),
    "nested": (r'{"question": "q", "context": "c", "answer": "c", "tags": {"a": ["x", "\udc00"]}}', "tags.a[1] holds"),
    "key": (r'{"question": "q", "context": "c", "answer": "c", "\ud800": 1}', "a key holds"),
}


@pytest.mark.parametrize("case", SURROGATES)
def test_a_lone_surrogate_is_refused_with_its_line_and_field(tmp_path, case):
    line, fragment = SURROGATES[case]
    message = refused(write_lines(tmp_path / "s.jsonl", [json.dumps(GOOD), line]), f"line 2: {fragment}")
    message.encode("utf-8")  # the message itself can be printed


def test_a_surrogate_pair_is_one_character_and_loads(tmp_path):
    (task,) = load_jsonl(write_lines(tmp_path / "s.jsonl", [r'{"question": "q \ud83d\ude00", "prompt2": 1}']))
    assert task.question == "q \U0001f600" and len(task.uid) == 16


# -- Unicode folding on both sides of a match ---------------------------------------------------------

FOLDED = [
    ("Zoe\u0308", "It was Zo\u00eb."),  # gold in NFD, output in NFC
    ("Zo\u00eb", "It was Zoe\u0308."),  # and the other way round
    ("Paris", "Ｐａｒｉｓ"),  # fullwidth letters
    ("ＰＡＲＩＳ", "paris"),
    ("fish", "a \ufb01sh"),  # the fi ligature
    ("Straße", "STRASSE"),  # case folding, not only lower case
    ("ΣΟΦΙΑ", "σοφια"),
    ("42", "\uff14\uff12 apples"),  # fullwidth digits
    ("A", "answer: \uff21"),  # a one-letter answer, fullwidth
    ("Ivan", "Ivan\u200b"),  # a zero-width space in the output
    ("Paris", "\u00abParis\u00bb"),  # Unicode punctuation is punctuation
]


@pytest.mark.parametrize(("gold", "output"), FOLDED, ids=[ascii(g) for g, _ in FOLDED])
def test_unicode_forms_of_one_answer_match(gold, output):
    assert answer_correct(output, Task("grounded", "q?", "c", gold, (gold,))) is True


@pytest.mark.parametrize(("gold", "output"), [("Zoë", "Zoe"), ("Paris", "Parish"), ("fish", "fisher")])
def test_folding_does_not_make_other_words_match(gold, output):
    assert answer_correct(output, Task("grounded", "q?", "c", gold, (gold,))) is False


def test_a_folded_gold_answer_loads_from_a_suite_and_matches(tmp_path):
    suite = write_lines(tmp_path / "s.jsonl", [json.dumps({"context": "Zoe\u0308 ran.", "question": "who?",
                                                           "answer": "Zoe\u0308"})])  # fmt: skip
    (task,) = load_jsonl(suite)
    assert answer_correct("Zo\u00eb", task) is True
