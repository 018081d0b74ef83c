"""Evidence kept: which of the gold answer's tokens reach the last layer, and partial answers."""

from __future__ import annotations

import pytest
import torch
from conftest import random_ids, tiny_model, tiny_tokenizer
from test_runner import _record

from rlprune import LayerAction, Reducer
from rlprune.data.evidence import locate_evidence, partial_answer
from rlprune.data.tasks import Task
from rlprune.prompts import build_prompt
from rlprune.reduction import ReductionPlan, track_owners

CONTEXT = "the town was on the river . the keeper of the boat rang six bells in the year . the name was a keeper"
TASK = Task("grounded", "name of the keeper", CONTEXT, "six bells", ("six bells",))


def test_owners_follow_prunes_and_merges_by_hand():
    owners = torch.arange(8)
    positions = torch.arange(8)
    # merge 2 into 3 and 5 into 7, prune 6
    plan = ReductionPlan(torch.tensor([2, 5, 6]), torch.tensor([3, 7, -1]))
    owners = track_owners(owners, positions, plan)
    assert owners.tolist() == [0, 1, 3, 3, 4, 7, -1, 7]
    # next layer: tokens at original 0, 1, 3, 4, 7 remain; prune the one holding 3 (and so 2 with it)
    positions = torch.tensor([0, 1, 3, 4, 7])
    owners = track_owners(owners, positions, ReductionPlan(torch.tensor([2])))
    assert owners.tolist() == [0, 1, -1, -1, 4, 7, -1, 7]


@pytest.mark.parametrize("op", ["prune", "merge"])
def test_reaches_top_matches_the_plans(op):
    reducer = Reducer(tiny_model("llama"))
    plans = _record(reducer)
    schedule = {1: LayerAction(op, 0.4, "similarity"), 3: LayerAction(op, 0.5, "attention")}
    out = reducer.run(random_ids(60, seed=2), schedule, protect_last=5)
    reaches = out.state.reaches_top()
    carried = torch.zeros(60, dtype=torch.bool)
    carried[out.state.positions] = True
    assert carried[reaches].all() or op == "merge"  # a pruned token's content never survives
    assert reaches[carried].all()  # every carried token holds at least itself
    if op == "prune":
        assert torch.equal(reaches, carried)
    else:  # a merged token's content lives on in a carried token; only unmatched ones are dropped
        dropped = sum(int((p.into < 0).sum()) for p in plans.values())
        assert int((~reaches).sum()) <= dropped + sum(len(p) for p in plans.values())
        assert int(reaches.sum()) > int(carried.sum())  # merges kept content beyond the carried tokens


def test_batch_rows_track_their_own_evidence():
    reducer = Reducer(tiny_model("llama"))
    prompts = [random_ids(50, seed=5)[0], random_ids(37, seed=6)[0]]
    schedule = {2: LayerAction("merge", 0.5, "attention")}
    together = reducer.run(prompts, schedule, protect_last=4)
    for prompt, out in zip(prompts, together, strict=True):
        alone = reducer.run(prompt, schedule, protect_last=4)
        assert torch.equal(out.state.reaches_top(), alone.state.reaches_top())


def test_removing_the_answer_tokens_loses_the_evidence():
    tokenizer = tiny_tokenizer()
    prompt = build_prompt(tokenizer, TASK.question, TASK.context)
    evidence = locate_evidence(prompt, TASK)
    assert evidence is not None and len(evidence) == 1
    spelled = prompt.input_ids[0][evidence.occurrences[0]]
    assert tokenizer.decode(spelled) == "six bells"  # the two tokens of the answer
    n = prompt.input_ids.shape[1] - 0
    reducer = Reducer(tiny_model("llama"))
    for answer_score, kept in ((-10.0, False), (10.0, True)):
        scores = torch.zeros(n)
        scores[evidence.occurrences[0]] = answer_score
        action = LayerAction("prune", 0.5, "learned", token_scores=scores)
        out = reducer.run(prompt.input_ids, {2: action}, protect_last=prompt.protect_last)
        whole, share = evidence.kept(out.state.reaches_top())
        assert (whole, share) == (kept, 1.0 if kept else 0.0)
    # half the answer gone: not whole, half the share
    scores = torch.zeros(n)
    first, second = torch.nonzero(evidence.occurrences[0])[:, 0].tolist()
    scores[first], scores[second] = 10.0, -10.0
    out = reducer.run(prompt.input_ids, {2: LayerAction("prune", 0.5, "learned", token_scores=scores)},
                      protect_last=prompt.protect_last)  # fmt: skip
    assert evidence.kept(out.state.reaches_top()) == (False, 0.5)


def test_evidence_needs_every_answer_when_all_are_required():
    task = Task("grounded", "who", CONTEXT, "six", ("six", "river"), meta={"match": "all"})
    prompt = build_prompt(tiny_tokenizer(), task.question, task.context)
    evidence = locate_evidence(prompt, task)
    assert evidence.groups.tolist() == [0, 1]
    reaches = torch.ones(prompt.input_ids.shape[1], dtype=torch.bool)
    reaches[evidence.occurrences[1]] = False
    assert evidence.kept(reaches) == (False, 0.5)


def test_no_evidence_without_an_answer_in_the_context():
    tokenizer = tiny_tokenizer()
    missing = Task("grounded", "who", CONTEXT, "Bruno", ("Bruno",))
    assert locate_evidence(build_prompt(tokenizer, missing.question, missing.context), missing) is None
    bare = Task("instruction", "name six", None, "six", ("six",))
    assert locate_evidence(build_prompt(tokenizer, bare.question), bare) is None
    # the question's own words are not evidence: only the context is searched
    echoed = Task("grounded", "keeper Bruno", CONTEXT, "Bruno", ("Bruno",))
    assert locate_evidence(build_prompt(tokenizer, echoed.question, echoed.context), echoed) is None


@pytest.mark.parametrize(
    ("output", "partial"),
    [
        ("The special magic number for Humhumqua is 4018.", True),
        ("The special magic number for Humhumqua is 4018627.", False),
        ("The special magic number for Humhumqua is 1.", False),
        ("It was Quellbrook.", True),
        ("It was Old Quellbrook.", False),
        ("The mayor of Quellbrook is the person.", True),
    ],
)
def test_partial_answers(output, partial):
    number = Task("niah", "What is the special magic number for Humhumqua?", "x", "4018627", ("4018627",))
    name = Task("grounded", "Who was the mayor?", "x", "Old Quellbrook", ("Old Quellbrook",))
    task = number if any(c.isdigit() for c in output) else name
    assert partial_answer(output, task) is partial
    assert partial_answer(output, Task("grounded", "q", "x")) is None
