"""Training text beyond the templates: multi-query needles, cloze questions over the essays, generated
everyday documents and prose; and the answer measures (echoes, other values) in records, reports and the reward."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from rlprune import build_prompt, load_model
from rlprune.data.cloze import BLANK, _spans, cloze_task
from rlprune.data.everyday import FIRST, ITEMS, LAST, PREFIXES, STYLES, TOKENS_PER_WORD
from rlprune.data.everyday_prose import GENRES
from rlprune.data.evidence import locate_evidence
from rlprune.data.long import LONG_KINDS, LongSuite
from rlprune.data.tasks import answer_correct
from rlprune.errors import RLPruneError
from rlprune.eval import FULL, EvalConfig, aggregate, evaluate, load_suite
from rlprune.metrics import echoes_question, names_other_value
from rlprune.train.recipe import SpanHeadConfig

EVAL = Path(__file__).parents[1] / "eval"
HELD_OUT = EVAL / "everyday-questions" / "everyday-questions.jsonl"
HELD_OUT_SETS = [HELD_OUT, EVAL / "everyday-questions-2" / "everyday-questions-2.jsonl"]  # both hand-written sets


def occurrences(value: str, text: str) -> int:
    return len(re.findall(r"(?<!\w)" + re.escape(value) + r"(?!\w)", text, re.IGNORECASE))


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random")


def test_cloze_spans_are_numbers_names_and_noun_phrases():
    sentence = "In 2005 we met Jessica Livingston, who ran the sales team at a bank in Boston."
    spans = ["2005", "Jessica Livingston", "sales team", "bank", "Boston"]
    assert [sentence[a:b] for a, b in _spans(sentence)] == spans
    assert _spans("The user tells you what to build.") == []  # "user tells" is closed by no boundary
    names = "Thanks to Sam Altman, Robert Morris and the readers."
    assert [names[a:b] for a, b in _spans(names)] == ["Sam Altman", "Robert Morris", "readers"]  # not across a comma


def test_cloze_questions_blank_one_span_of_a_sentence_in_the_window():
    suite = LongSuite("cloze", lengths=(300, 1200), depths=(0.0, 0.5, 1.0), per_cell=2)
    tasks = suite.tasks()
    assert len(tasks) == 12 and tasks == suite.tasks()  # fixed by the seed
    for task in tasks:
        quoted = re.fullmatch(r"Which words complete this sentence from the text: '(.*)'\?", task.question).group(1)
        assert quoted.count(BLANK) == 1 and quoted.replace(BLANK, task.answer) in task.context
        assert occurrences(task.answer, task.context) == 1  # the evidence is one place
        assert 1 <= len(task.answer.split()) <= 4 and answer_correct(task.answer, task)
        words = len(task.context.split())
        assert task.meta["length"] / 1.3 <= words <= task.meta["length"] / 1.3 + 60
        before = len(task.context[: task.context.index(quoted.split(BLANK)[0] + task.answer)].split())
        assert abs(before / (words - len(quoted.split())) - task.meta["depth"]) < 0.06  # of the words around it
    train = LongSuite("cloze", lengths=(300,), per_cell=4, split="train").tasks()
    assert not {t.meta["essay"] for t in train} & {t.meta["essay"] for t in tasks}  # held out by essay


def test_multi_query_asks_two_of_four_keys_and_needs_both():
    tasks = LongSuite("niah-multiquery", lengths=(300,), depths=(0.5,), per_cell=3).tasks()
    for task in tasks:
        first, second = task.answers
        assert all(occurrences(v, task.context) == 1 for v in (*task.answers, *task.meta["distractors"]))
        assert len(task.meta["distractors"]) == 2 and not set(task.meta["distractors"]) & set(task.answers)
        assert answer_correct(f"{first} and {second}", task) and not answer_correct(first, task)
        assert names_other_value(f"{first} and {task.meta['distractors'][0]}", task) is True


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_everyday_documents_hold_the_asked_fact_once(split):
    tasks = LongSuite("everyday-gen", lengths=(200, 800), depths=(0.0, 0.5, 1.0), per_cell=4, split=split).tasks()
    assert {t.meta["style"] for t in tasks} == set(STYLES)
    for task in tasks:
        assert occurrences(task.answer, task.context) == 1 and task.answer not in task.question
        lines = task.context.splitlines()
        spot = next(i for i, line in enumerate(lines) if re.search(r"(?<!\w)" + re.escape(task.answer), line))
        entries = len(lines) - 1  # the heading is line 0
        assert abs((spot - 1) / (entries - 1) - task.meta["depth"]) <= 0.5 / (entries - 1) + 1e-9  # the nearest entry
        assert all(d in task.context for d in task.meta["distractors"]) and task.answer not in task.meta["distractors"]
        assert names_other_value(task.meta["distractors"][0], task) is True
        assert names_other_value(task.answer, task) is False
        assert len(task.context.split()) >= task.meta["length"] / TOKENS_PER_WORD


def test_everyday_splits_differ_by_template_and_name_and_avoid_the_held_out_set():
    def people(split):
        tasks = LongSuite("everyday-gen", lengths=(400,), per_cell=6, split=split).tasks()
        return {m for t in tasks for m in re.findall(r"[A-Z][a-z]+ [A-Z][a-z]+", t.context) if m.split()[0] in FIRST}

    assert people("train") and not people("train") & people("test") and not people("validation") & people("test")
    for style in STYLES.values():
        questions = {split: {q for _, q, _ in style[split][1]} for split in style}
        assert not questions["train"] & questions["test"] and not questions["validation"] & questions["test"]
    held_out = " ".join(json.loads(line)["context"] for path in HELD_OUT_SETS for line in path.read_text().splitlines())
    for word in [*FIRST, *LAST, *PREFIXES, *ITEMS]:
        assert occurrences(word, held_out) == 0, word


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_everyday_prose_asks_one_sentence_in_other_words(split):
    tasks = LongSuite("everyday-prose", lengths=(96, 192), depths=(0.0, 0.5, 1.0), per_cell=8, split=split).tasks()
    assert {t.meta["genre"] for t in tasks} == set(GENRES[split])
    for task in tasks:
        assert occurrences(task.answer, task.context) == 1 and task.answer not in task.question
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", task.context)
        asked = next(s for s in sentences if re.search(r"(?<!\w)" + re.escape(task.answer) + r"(?!\w)", s))
        # the question shares at most one content word (four letters or more) with its sentence
        words = {w.lower() for w in re.findall(r"[A-Za-z']{4,}", asked)} - {"what", "which", "where", "when"}
        assert len(words & {w.lower() for w in re.findall(r"[A-Za-z']{4,}", task.question)}) <= 1, task.question
        assert all(occurrences(d, task.context) == 1 for d in task.meta["distractors"])
        assert task.answer not in task.meta["distractors"]
        assert len(task.context.split()) <= task.meta["length"] / 1.4 + 40  # a sentence may run past the length
    assert sum(bool(t.meta["distractors"]) for t in tasks) >= len(tasks) // 5  # values of the asked kind elsewhere


def test_everyday_prose_splits_differ_and_avoid_the_held_out_set():
    questions = {split: {q for _, texts in GENRES[split].values() for _, q, _ in texts if q} for split in GENRES}
    assert not questions["train"] & questions["test"] and not questions["validation"] & questions["test"]
    assert not set(GENRES["train"]) & set(GENRES["test"]) and not set(GENRES["validation"]) & set(GENRES["test"])
    held_out = [json.loads(line) for path in HELD_OUT_SETS for line in path.read_text().splitlines()]
    words = re.findall(r"[a-z']+", " ".join(f"{i['context']} {i['question']}" for i in held_out).lower())
    grams = {tuple(words[i : i + 4]) for i in range(len(words) - 3)}
    for genres in GENRES.values():
        for openings, sentences in genres.values():
            for text in [*openings, *(s for sentence in sentences for s in sentence[:2] if s)]:
                for part in re.split(r"{\w+}", text):
                    own = re.findall(r"[a-z']+", part.lower())
                    assert not {tuple(own[i : i + 4]) for i in range(len(own) - 3)} & grams, text


def test_every_new_kind_is_a_suite_a_span_recipe_accepts_and_its_evidence_is_found(tiny):
    _, tokenizer = tiny
    for name in ("niah-multiquery", "cloze", "everyday-gen", "everyday-prose"):
        suite, tasks = load_suite(name, limit=2, per_cell=1, depths=(0.5,))
        assert suite == name and len(tasks) == 2
        for task in tasks:  # the tiny tokenizer reads most words as one unknown token; offsets still locate them
            evidence = locate_evidence(build_prompt(tokenizer, task.question, task.context), task)
            assert evidence is not None and len(evidence) == len(task.answers)
    config = SpanHeadConfig(long_kinds=("niah-multiquery", "cloze", "everyday-gen", "variable-tracking"))
    assert set(config.long_kinds) <= set(LONG_KINDS)
    with pytest.raises(ValueError, match="long_kinds"):
        SpanHeadConfig(long_kinds=("essays",))
    with pytest.raises(RLPruneError, match="split"):
        LongSuite("cloze", split="dev")


@pytest.mark.parametrize(
    ("answer", "echo"),
    [
        ("What is the special magic number for Kalomiru?", True),
        ("The special magic number for Kalomiru is", True),
        ("The special magic number for Kalomiru is 4018627.", False),  # it answers
        ("Kalomiru.", False),  # one word of the question is not saying it back
        ("The magic number.", False),  # half of it is not most of it
        ("", False),
        ("Which words complete this sentence from the text: 'The ____ then was divided into two groups'", True),
        ("The world then was divided into two groups.", False),  # the blank filled
        ("Kalomiru number magic special", False),  # the words, but not in the question's order
        ("No, the special magic number for Kalomiru is not given.", False),  # a "no" answers
    ],
)
def test_an_echo_says_most_of_the_question_back_in_order_and_nothing_new(answer, echo):
    questions = {
        "Kalomiru": "What is the special magic number for Kalomiru?",
        "____": "Which words complete this sentence from the text: 'The ____ then was divided into two groups.'?",
    }
    question = questions["____" if "____" in answer or "world" in answer else "Kalomiru"]
    assert echoes_question(answer, question) is echo


def test_another_value_is_a_wrong_answer_naming_a_value_of_the_context():
    line = json.loads(HELD_OUT.read_text().splitlines()[0])  # the notice: the supervisor is Priya Okafor
    from rlprune.data.tasks import Task

    task = Task("grounded", line["question"], line["context"], line["answer"], tuple(line["answers"]))
    assert names_other_value("Contact Hallam Civil Engineering.", task) is True
    assert names_other_value("Priya Okafor, or Hallam Civil Engineering.", task) is False  # right, whatever else
    assert names_other_value("The council.", task) is False  # wrong, but names no value of the text
    numbers = Task("grounded", "What is the code for Rumi?", "Rumi: 4018. Ola: 7731. Founded 1999.", "4018", ("4018",))
    assert names_other_value("7731", numbers) and names_other_value("It was 1999.", numbers)
    lower = Task("grounded", "Where does Tom work?", "Tom works at the boatyard, Ann at the mill.", "boatyard")
    assert names_other_value("the mill", lower) is None  # no values of the answer's shape are known
    listed = Task("grounded", lower.question, lower.context, "boatyard", meta={"distractors": "mill"})
    assert names_other_value("At the mill.", listed) is True  # a JSONL line may name them
    assert names_other_value("x", Task("instruction", "Write a poem.")) is None


def test_records_and_tables_carry_echoes_and_other_values(tiny, tmp_path):
    model, tokenizer = tiny
    suite = tmp_path / "codes.jsonl"
    item = {"context": "the river code is 4018 and the town code is 7731 .", "question": "the river code ?"}
    suite.write_text(json.dumps(item | {"answer": "4018"}) + "\n")
    config = EvalConfig(str(suite), model="tiny-random", baselines=("snapkv",), budgets=(0.7,), max_new_tokens=4)
    rows = evaluate(config, tmp_path / "out", model=model, tokenizer=tokenizer, show_progress=False)
    records = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    for record in records:
        assert record["echo"] is echoes_question(record["answer"], item["question"])
        assert record["other_value"] is (not record["correct"] and "7731" in record["answer"].split())
    assert {r["method"] for r in rows} == {FULL, "snapkv"} and all(r["echo"] is not None for r in rows)
    made = [
        {"method": "m", "budget": 0.5, "item": str(i), "answer": "a", "new_tokens": 1, "echo": e, "other_value": o}
        for i, (e, o) in enumerate([(True, None), (False, True), (False, False), (False, None)])
    ]
    (row,) = aggregate(made, samples=50)
    assert row["echo"] == 0.25 and row["other_value"] == 0.5  # unknown values count in no share
    table = (tmp_path / "out" / "results.md").read_text()
    assert "echoes" in table and "other value" in table


def test_echo_and_loop_penalties_weigh_nothing_unless_a_preset_asks(tmp_path):
    from rlprune.envs import EnvConfig, Quality, RewardConfig
    from rlprune.envs.rewards import answer_penalty, final_reward

    q = Quality(kl=0.1, agreement=1.0, answer_accuracy=None, hallucination=0.0, hallucination_excess=0.0)
    question, echo = "What is the magic number for Rumi?", "The magic number for Rumi is"
    loop = "one two three four five six seven eight " * 2
    base = final_reward(q, 0.5, 0.5, RewardConfig())
    assert final_reward(q, 0.5, 0.5, RewardConfig(), answer=echo, question=question) == base
    preset = tmp_path / "echo.toml"
    preset.write_text('model = "tiny-random"\n[reward]\necho = 1.5\nloop = 0.5\n')
    config = EnvConfig.load(preset).reward
    assert (config.echo, config.loop) == (1.5, 0.5)
    assert answer_penalty(echo, question, config) == 1.5 and answer_penalty(loop, question, config) == 0.5
    assert answer_penalty("It is 4018.", question, config) == 0.0
    assert final_reward(q, 0.5, 0.5, config, answer=echo, question=question) == pytest.approx(base - 1.5)
    with pytest.raises(ValueError, match="echo"):
        RewardConfig(echo=-1.0)


def test_cloze_tasks_are_fixed_by_the_random_state():
    one, two = (
        cloze_task(random.Random(3), 600, 0.5, split="validation"),
        cloze_task(random.Random(3), 600, 0.5, split="validation"),
    )
    assert one == two and one.meta == two.meta


def test_the_second_held_out_pool_shares_no_item_or_text_with_the_first():
    first, second = (
        [json.loads(line) for line in (EVAL / "heldout-pool" / name).read_text(encoding="utf-8").splitlines()]
        for name in ("heldout-pool.jsonl", "heldout-pool-2.jsonl")
    )
    assert len(first) == 300 and len(second) == 303
    assert not {(i["context"], i["question"]) for i in first} & {(i["context"], i["question"]) for i in second}
    cloze = [{i["question"] for i in pool if i["suite"] == "cloze"} for pool in (first, second)]
    assert not cloze[0] & cloze[1]  # a sentence of a test essay is asked in one pool only
    everyday = [i for i in second if i["suite"] == "everyday-questions-2"]
    assert len(everyday) == 78 and all(i["answer"] in i["context"] for i in everyday)
    first_set = [json.loads(line) for line in HELD_OUT.read_text().splitlines()]
    assert not {i["context"] for i in first_set} & {i["context"] for i in everyday}

    def names(items: list[dict]) -> set[str]:  # capitalised words inside a sentence
        return {m for i in items for m in re.findall(r"(?<=[a-z,;:] )[A-Z][a-z]+", i["context"])}

    days = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
    common = days | {"Mr", "Ms", "Mrs", "Dr", "The", "Road", "Street", "Home", "Blue", "Lady"}  # parts of other names
    assert names(first_set) & names(everyday) <= common
