"""Task suites: deterministic, disjoint splits, lengths as asked; the JSONL loader; answer matching."""

from __future__ import annotations

import json

import pytest
import torch

from rlprune import build_prompt
from rlprune.engine import Reducer
from rlprune.envs import KINDS, ReferenceCache, Task, answer_correct, generate_suite, generate_task, load_jsonl
from rlprune.envs.env import EpisodeConfig
from rlprune.envs.reference import answer_token_mask, corrected_answer
from rlprune.envs.rewards import quality
from rlprune.errors import RLPruneError
from rlprune.models import load_model


@pytest.mark.parametrize("kind", KINDS)
def test_tasks_are_fixed_by_seed(kind):
    assert generate_task(kind, "train", 7) == generate_task(kind, "train", 7)
    assert generate_task(kind, "train", 7) != generate_task(kind, "train", 8)
    assert generate_task(kind, "train", 7, seed=1) != generate_task(kind, "train", 7)


def test_splits_are_disjoint_down_to_the_answers():
    mix = {kind: 1.0 for kind in KINDS if kind != "instruction"}
    splits = {split: generate_suite(mix, split, 150) for split in ("train", "validation", "test")}
    uids = {split: {t.uid for t in tasks} for split, tasks in splits.items()}
    assert not uids["train"] & uids["test"] and not uids["train"] & uids["validation"]
    person_answers = {
        split: {t.answer for t in tasks if t.kind in ("grounded", "two_hop") and " " in (t.answer or "")}
        for split, tasks in splits.items()
    }
    assert person_answers["test"] and not person_answers["train"] & person_answers["test"]


@pytest.mark.parametrize("kind", ["grounded", "counterfactual", "two_hop", "kv"])
def test_answers_are_spans_of_the_context(kind):
    for task in generate_suite({kind: 1.0}, "validation", 20):
        assert task.answer in task.context
        if kind == "counterfactual":
            assert task.prior and task.prior != task.answer


def test_passage_lengths_follow_the_requested_range():
    _, tokenizer = load_model("tiny-random")  # bytes: about five per token of English
    short = [len(t.context.split()) for t in generate_suite({"grounded": 1}, "train", 30, tokens=(150, 200))]
    long = [len(t.context.split()) for t in generate_suite({"grounded": 1}, "train", 30, tokens=(1200, 1500))]
    assert 100 <= min(short) and max(short) <= 180
    assert 850 <= min(long) and max(long) <= 1200
    depths = [t.meta["depth"] for t in generate_suite({"grounded": 1}, "train", 60)]
    assert min(depths) < 0.2 and max(depths) > 0.8  # the fact moves through the passage


def test_answer_matching_is_normalised():
    task = Task("grounded", "q?", "ctx", "Tobias Wren", ("Tobias Wren",))
    assert answer_correct("It was tobias wren.", task)
    assert answer_correct("The keeper: TOBIAS WREN!", task)
    assert not answer_correct("Tobias Wrenfield", task)
    assert answer_correct("anything", Task("instruction", "q?")) is None


def test_jsonl_loader_reads_both_shapes(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        json.dumps({"context": "Ann has a red hat.", "question": "What colour?", "answer": "red"})
        + "\n\n"
        + json.dumps({"prompt": "Write a haiku."})
        + "\n"
        + json.dumps({"question": "Who?", "context": "Bo ran.", "answers": ["Bo", "Bob"]})
        + "\n"
    )
    tasks = load_jsonl(path)
    assert [t.kind for t in tasks] == ["grounded", "instruction", "grounded"]
    assert tasks[0].answers == ("red",) and tasks[2].answers == ("Bo", "Bob")


def test_jsonl_loader_reports_every_bad_line_with_its_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok?"}\nnot json\n{"question": ""}\n{"prompt": "x", "context": "y"}\n{"q": 1}\n')
    with pytest.raises(RLPruneError) as error:
        load_jsonl(path)
    message = str(error.value)
    assert "4 malformed line(s)" in message
    for number in (2, 3, 4, 5):
        assert f"line {number}:" in message
    assert "line 1:" not in message


def test_reference_cache_stores_and_reloads(tmp_path):
    model, tokenizer = load_model("tiny-random")
    reducer = Reducer(model)
    task = generate_task("grounded", "train", 0, tokens=(40, 80))
    cache = ReferenceCache(reducer, tokenizer, first_layer=1, continuation_tokens=6, folder=tmp_path)
    computed = cache.get(task)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    reloaded = ReferenceCache(reducer, tokenizer, first_layer=1, continuation_tokens=6, folder=tmp_path).get(task)
    for name in ("input_ids", "topk_ids", "topk_logprobs", "hidden", "answer_mask", "allowed_ids"):
        assert torch.equal(getattr(computed, name), getattr(reloaded, name))
    assert computed.prompt_length == len(build_prompt(tokenizer, task.question, task.context))
    # the stored hidden state is what the model computes entering layer 1
    start = reducer.start(computed.input_ids, decision_layers=[1], prompt_length=computed.prompt_length)
    assert torch.equal(start.hidden, computed.hidden)
    # the stored log-probabilities judge the full model as perfect
    full = reducer.run(computed.input_ids, prompt_length=computed.prompt_length, logits="continuation")
    q = quality(full.logits[0], computed)
    assert q.kl < 1e-6 and q.agreement == 1.0


def test_a_wrong_answer_is_corrected_in_its_own_words():
    task = Task(
        "kv", "What is the code for amber-gate?", "amber-gate: 4821. oak-door: 7310.", "4821", ("4821",),
        meta={"distractors": ["7310"]},
    )  # fmt: skip
    right = "The code for amber-gate is 4821."
    assert corrected_answer("The code for amber-gate is 7310, as the list says.", task) == right
    assert corrected_answer("The code for amber-gate is 1999.", task) == right  # a number of its own
    assert corrected_answer("I cannot tell.", task) == "The answer is 4821."
    keyed = Task("kv", "What is the code for kettle-24?", "kettle-24: 9582. lantern-24: 1118. x: 24", "9582", ("9582",))
    assert corrected_answer("The code for kettle-24 is 1118.", keyed) == "The code for kettle-24 is 9582."  # not "-24"
    context = "In the village the bees are kept by Ada Lark and the hens by Bo Finch."
    people = Task("grounded", "Who keeps the bees?", context, "Ada Lark", ("Ada Lark",))
    assert corrected_answer("The bees are kept by bo  finch.", people) == "The bees are kept by Ada Lark."
    both = Task("kv", "Which numbers?", "7 and 9 and 5", answers=("7", "9"), meta={"match": "all"})
    assert corrected_answer("They are 5 and 9.", both) == "They are 7 and 9."
    with pytest.raises(ValueError, match="gold answer"):
        corrected_answer("anything", Task("instruction", "Write a haiku."))


def test_a_corrected_reference_teacher_forces_the_gold_answer_where_the_full_model_misses_it(tmp_path):
    model, tokenizer = load_model("tiny-random")  # random weights: its answers miss
    reducer = Reducer(model)
    task = generate_task("kv", "train", 3, tokens=(40, 80))
    settings = {"first_layer": 1, "continuation_tokens": 16, "folder": tmp_path}
    caches = {target: ReferenceCache(reducer, tokenizer, **settings, target=target) for target in ("full", "corrected")}
    own, corrected = caches["full"].get(task), caches["corrected"].get(task)
    assert own.full_correct is False and corrected.full_correct is False
    assert caches["full"].key(task) != caches["corrected"].key(task)
    assert torch.equal(own.input_ids[0, : own.prompt_length], corrected.input_ids[0, : corrected.prompt_length])
    # one token a byte: "The answer is ..." is too long for 16 tokens, so the gold answer stands alone
    assert corrected_answer(own.text, task).startswith("The answer is") and corrected.text == f"{task.answer}."
    assert tokenizer.decode(corrected.continuation[corrected.answer_mask]).strip() == task.answer
    # the stored distribution is the full model's on the corrected answer, so it judges itself perfect
    full = reducer.run(corrected.input_ids, prompt_length=corrected.prompt_length, logits="continuation")
    assert quality(full.logits[0], corrected).kl < 1e-6
    # without a gold answer there is nothing to correct: the full model's own answer is kept
    haiku = Task("instruction", "Write a haiku about rain.")
    assert torch.equal(caches["corrected"].get(haiku).input_ids, caches["full"].get(haiku).input_ids)
    with pytest.raises(ValueError, match="unknown target"):
        ReferenceCache(reducer, tokenizer, first_layer=1, folder=tmp_path, target="gold")
    with pytest.raises(ValueError, match="unknown target"):
        EpisodeConfig(target="gold")  # a preset's [episode] target is checked when it loads


def test_a_corrupt_reference_is_recomputed(tmp_path):
    model, tokenizer = load_model("tiny-random")
    cache = ReferenceCache(Reducer(model), tokenizer, first_layer=1, continuation_tokens=4, folder=tmp_path)
    task = generate_task("kv", "train", 1, tokens=(40, 80))
    path = tmp_path / f"{cache.key(task)}.safetensors"
    path.write_bytes(b"truncated")
    assert cache.get(task).prompt_length > 0
    assert path.stat().st_size > 100


def test_answer_tokens_are_found_in_the_continuation():
    _, tokenizer = load_model("tiny-random")
    continuation = torch.tensor(tokenizer("The keeper was Tobias Wren.", add_special_tokens=False)["input_ids"])
    mask = answer_token_mask(tokenizer, continuation, Task("grounded", "q", "c", "Tobias Wren", ("Tobias Wren",)))
    assert tokenizer.decode(continuation[mask]) == "Tobias Wren"


def test_hard_kinds_hold_out_templates_names_and_essays():
    import re

    from rlprune.data.essays import essays
    from rlprune.data.generators import HARD_KINDS

    names = {split: {name for name, _ in essays(split)} for split in ("train", "validation", "test")}
    assert names["train"] and names["test"] and not names["train"] & names["test"]
    assert not names["train"] & names["validation"]

    def shape(question: str) -> str:  # the template: names, towns and numbers blanked out
        return re.sub(r"\b[A-Z][a-z']+\b|\d+", "_", question)

    for kind in HARD_KINDS:
        train = generate_suite({kind: 1.0}, "train", 40, tokens=(250, 400))
        test = generate_suite({kind: 1.0}, "test", 40, tokens=(250, 400))
        assert not {shape(t.question) for t in train} & {shape(t.question) for t in test}, kind
        assert not {t.answer for t in train} & {t.answer for t in test}, kind
        sentences = {s for t in train for s in re.split(r"(?<=[.!?]) ", t.context)}
        shared = [s for t in test for s in re.split(r"(?<=[.!?]) ", t.context) if s in sentences and len(s) > 60]
        assert not shared, shared[:2]


@pytest.mark.parametrize("kind", ["niah", "niah-multikey", "niah-multivalue", "niah-multiquery", "variable-tracking"])
def test_long_context_grids_hide_their_facts_at_the_asked_depth(kind):
    from rlprune.data.long import LongSuite

    suite = LongSuite(kind, lengths=(300, 600), depths=(0.0, 0.5, 1.0), per_cell=2)
    tasks = suite.tasks()
    assert len(tasks) == 2 * 3 * 2 and [t.meta["length"] for t in tasks[:6]] == [300] * 6  # shortest first
    for task in tasks:
        words = len(task.context.split())
        assert task.meta["length"] / 1.3 <= words <= task.meta["length"] / 1.3 + 120
        first = task.answers[0]
        where = task.context.index(f"VAR {first} =" if kind == "variable-tracking" else first) / len(task.context)
        assert abs(where - task.meta["depth"]) < 0.15  # the asked fact (a chain's start) sits at the depth
        assert all(answer in task.context for answer in task.answers)
        assert answer_correct(" and ".join(task.answers), task)
    if kind in ("niah-multivalue", "niah-multiquery", "variable-tracking"):  # every answer is needed
        assert not answer_correct(tasks[0].answers[0], tasks[0])
    if kind == "variable-tracking":  # the chain reads in order
        names = tasks[0].answers
        spots = [tasks[0].context.index(f"VAR {name} =") for name in names]
        assert spots == sorted(spots)
    train = LongSuite(kind, lengths=(300,), depths=(0.5,), per_cell=4, split="train").tasks()
    assert not {t.context[:200] for t in train} & {t.context[:200] for t in tasks}  # other essays
