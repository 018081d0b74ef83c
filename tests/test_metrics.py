"""The one definition of the quality measures, and that the reward, validation and evaluation share it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlprune import load_model
from rlprune.data.evidence import Evidence
from rlprune.data.generators import generate_task
from rlprune.data.tasks import Task
from rlprune.engine import Reducer
from rlprune.envs import EnvConfig
from rlprune.envs.reference import Reference, ReferenceCache
from rlprune.envs.rewards import quality
from rlprune.errors import RLPruneError
from rlprune.eval import EvalConfig, Evaluation
from rlprune.eval.best_static import answer_score
from rlprune.eval.suites import load_suite
from rlprune.metrics import (
    KL_DEFINITION,
    TOP_K,
    agreement,
    answer_correct,
    answer_token_accuracy,
    evidence_kept,
    hallucinated,
    kl_divergence,
    log_probs,
    partial_answer,
    top1_agreement,
    top_k,
    unsupported_words,
)
from rlprune.policies import resolve_policy
from rlprune.train.common.validation import Evaluator
from rlprune.train.recipe import Recipe


def full_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the whole vocabulary, per position, written out independently."""
    p, q = p_logits.double().log_softmax(-1), q_logits.double().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1)


def reference_for(full_logits: torch.Tensor, continuation: torch.Tensor, *, grounded: bool = True) -> Reference:
    """A hand-made reference whose stored distribution is ``full_logits``' top-k, as the cache stores it."""
    m, n = full_logits.shape[0], 4
    top = top_k(full_logits)
    allowed = torch.arange(10)
    return Reference(
        input_ids=torch.cat((torch.arange(n), continuation)).unsqueeze(0),
        prompt_length=n,
        protect_last=1,
        topk_ids=top.ids,
        topk_logprobs=top.logprobs,
        unsupported_mass=(1 - full_logits.softmax(-1)[:, allowed].sum(-1)).clamp(min=0),
        allowed_ids=allowed,
        answer_mask=torch.tensor([False, True, True] + [False] * (m - 3)),
        hidden=torch.zeros(1, n + m, 8),
        first_layer=1,
        grounded=grounded,
        full_correct=True,
        text="",
        evidence_occurrences=torch.zeros(0, n, dtype=torch.bool),
        evidence_groups=torch.zeros(0, dtype=torch.long),
    )


# -- KL -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [20, 500])
def test_the_kl_of_identical_distributions_is_zero(vocab):
    logits = torch.randn(6, vocab, generator=torch.Generator().manual_seed(vocab)) * 3
    kl = kl_divergence(top_k(logits), log_probs(logits))
    assert kl.shape == (6,) and kl.max().item() == pytest.approx(0.0, abs=1e-6)


def test_top_k_and_tail_kl_is_the_full_kl_when_the_vocabulary_fits_in_k():
    generator = torch.Generator().manual_seed(1)
    full, reduced = torch.randn(5, TOP_K, generator=generator) * 2, torch.randn(5, TOP_K, generator=generator) * 2
    assert top_k(full).ids.shape == (5, TOP_K)
    ours = kl_divergence(top_k(full), log_probs(reduced))
    assert torch.allclose(ours.double(), full_kl(full, reduced), atol=1e-5)
    assert ours.min() > 0.1  # different distributions are told apart
    smaller = torch.randn(5, 7, generator=generator)  # fewer tokens than k: every one is in the top-k
    assert torch.allclose(
        kl_divergence(top_k(smaller), log_probs(-smaller)).double(), full_kl(smaller, -smaller), atol=1e-5
    )


def test_top_k_and_tail_kl_is_a_lower_bound_of_the_full_kl_and_close_when_the_top_k_holds_the_mass():
    generator = torch.Generator().manual_seed(2)
    spread, other = torch.randn(8, 400, generator=generator), torch.randn(8, 400, generator=generator)
    ours = kl_divergence(top_k(spread), log_probs(other)).double()
    assert (ours <= full_kl(spread, other) + 1e-6).all() and (ours > 0).all()
    peaked = spread.clone()
    peaked[:, :5] += 12.0  # a greedy answer's distribution: a few tokens hold almost all the mass
    ours = kl_divergence(top_k(peaked), log_probs(other)).double()
    assert torch.allclose(ours, full_kl(peaked, other), rtol=1e-3, atol=1e-4)


def test_the_reduced_model_is_charged_for_the_tail_it_keeps():
    full = torch.full((1, 100), -20.0)
    full[0, :TOP_K] = 0.0  # the full model puts (almost) nothing outside its top-k
    reduced = torch.zeros(1, 100)  # the reduced model spreads a third of its mass there
    kl = kl_divergence(top_k(full), log_probs(reduced)).item()
    assert kl == pytest.approx(math.log(100 / TOP_K), rel=1e-3)


# -- top-1, answer tokens, out-of-context mass -----------------------------------------------------


def test_identical_logits_agree_top1_even_on_ties():
    logits = torch.tensor([[2.0, 2.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.bfloat16)
    assert top1_agreement(top_k(logits), log_probs(logits)).all()
    assert not top1_agreement(top_k(logits), log_probs(-logits)).any()


def test_answer_token_accuracy_counts_only_the_gold_answers_tokens():
    logprobs = log_probs(torch.eye(5) * 5)  # predicts token i at position i
    mask = torch.tensor([False, True, True, False, False])
    assert answer_token_accuracy(logprobs, torch.tensor([9, 1, 3, 9, 9]), mask) == 0.5
    assert answer_token_accuracy(logprobs, torch.arange(5), torch.zeros(5, dtype=torch.bool)) is None


def test_agreement_reports_the_out_of_context_mass():
    logits = torch.zeros(2, 10)
    measured = agreement(logits, top_k(logits), torch.arange(4))
    assert measured.kl == pytest.approx(0.0, abs=1e-6) and measured.top1 == 1.0
    assert measured.out_of_context_mass == pytest.approx(0.6, abs=1e-6)


# -- one definition: the reward, best-static, validation and evaluation ---------------------------


def test_the_rewards_kl_and_evaluations_kl_agree_on_the_same_logits():
    generator = torch.Generator().manual_seed(3)
    full, reduced = torch.randn(6, 300, generator=generator) * 2, torch.randn(6, 300, generator=generator) * 2
    continuation = full.argmax(-1)
    reference = reference_for(full, continuation)
    q = quality(reduced, reference)  # the reward, from what the reference cache stores
    e = agreement(reduced, top_k(full), torch.unique(torch.cat((torch.arange(4), continuation))))  # evaluation
    assert q.kl == pytest.approx(e.kl, rel=1e-6) and q.agreement == e.top1
    assert q.kl < full_kl(full, reduced).mean().item()  # the tail bin: a lower bound of the full KL
    assert q.answer_accuracy == answer_token_accuracy(log_probs(reduced), continuation, reference.answer_mask)
    assert quality(full, reference).kl == pytest.approx(0.0, abs=1e-6)


def test_the_reference_cache_stores_what_evaluation_derives_from_the_full_logits(tmp_path):
    model, tokenizer = load_model("tiny-random")
    reducer = Reducer(model)
    task = generate_task("grounded", "validation", 0, tokens=(40, 80))
    reference = ReferenceCache(reducer, tokenizer, first_layer=1, continuation_tokens=6, folder=tmp_path).get(task)
    full = reducer.run(reference.input_ids, prompt_length=reference.prompt_length, logits="continuation").logits[0]
    derived = top_k(full)
    assert torch.equal(derived.ids, reference.topk_ids)
    assert torch.allclose(derived.logprobs, reference.topk_logprobs, atol=1e-5)
    policy = resolve_policy("snapkv")
    reduced = reducer.run(
        reference.input_ids,
        policy=policy,
        budget=0.3,
        logits="continuation",
        prompt_length=reference.prompt_length,
        protect_last=reference.protect_last,
    ).logits[0]
    q, e = quality(reduced, reference), agreement(reduced, derived, reference.allowed_ids)
    assert q.kl > 0 and q.kl == pytest.approx(e.kl, rel=1e-4, abs=1e-6) and q.agreement == e.top1
    expected = q.agreement if q.answer_accuracy is None else q.answer_accuracy
    assert answer_score(reducer, reference, policy, 0.3) == pytest.approx(expected)


def test_validation_reports_the_measures_under_evaluations_names(tmp_path):
    model, tokenizer = load_model("tiny-random")
    recipe = Recipe.load("smoke")
    evaluator = Evaluator("smoke", recipe, str(tmp_path), model=model, tokenizer=tokenizer)
    summary = evaluator(resolve_policy("none"))
    assert set(Evaluator.MEASURES) <= set(summary)
    assert summary["kl"] == pytest.approx(0.0, abs=1e-5) and summary["top1"] == 1.0
    assert summary["flops_ratio"] == pytest.approx(1.0)
    reduced = evaluator(resolve_policy("snapkv"))
    assert reduced["kl"] > 0 and reduced["flops_ratio"] < 1.0


def test_evaluation_journals_name_their_kl_and_refuse_records_of_another(tmp_path):
    model, tokenizer = load_model("tiny-random")
    suite = tmp_path / "suite.jsonl"
    item = {"context": "The keeper of the lighthouse is Ada Crane. " * 4, "question": "Who?", "answer": "Ada Crane"}
    suite.write_text(json.dumps(item) + "\n")
    config = EvalConfig(str(suite), baselines=("snapkv",), budgets=(0.5,), max_new_tokens=4, bootstrap_samples=100)
    with Evaluation(config, tmp_path / "out", model=model, tokenizer=tokenizer) as evaluation:
        full, reduced = evaluation.run(show_progress=False)
    assert full["kl"] == pytest.approx(0.0, abs=1e-6) and full["top1"] == 1.0 and reduced["kl"] > 0
    journal = tmp_path / "out" / "records.jsonl"
    header, *records = journal.read_text().splitlines()
    settings = json.loads(header)["settings"]
    assert settings["kl"] == KL_DEFINITION
    del settings["kl"]  # a journal whose KL was another (the full vocabulary's)
    journal.write_text("\n".join([json.dumps({"settings": settings}), *records]) + "\n")
    with pytest.raises(RLPruneError, match=r"other settings \(kl\)"):
        Evaluation(config, tmp_path / "out", model=model, tokenizer=tokenizer)


# -- generated answers ------------------------------------------------------------------------------


GROUNDED = Task("grounded", "Who keeps the lighthouse?", "The keeper of the lighthouse is Ada Crane.", "Ada Crane")


def test_hallucinated_answers_say_content_words_found_nowhere():
    assert hallucinated("The keeper is Ada Crane.", GROUNDED) is False
    assert hallucinated("Bob Marley keeps it.", GROUNDED) is True
    assert hallucinated("Bob Marley keeps it.", GROUNDED, full_answer="Bob Marley") is False  # the full model said it
    assert hallucinated("The lighthouses keeper.", GROUNDED) is False  # plurals match
    assert hallucinated("Anything at all.", Task("arithmetic", "What is 2 + 2?", None, "4")) is None
    assert hallucinated("Anything at all.", Task("instruction", "Write a poem.", "some text")) is None
    assert unsupported_words("Bob keeps it.", GROUNDED.context) == ["bob", "keeps"]


def test_answer_match_normalises_and_respects_the_match_mode():
    assert answer_correct("It is ada crane!", GROUNDED) is True
    assert answer_correct("It is Ada.", GROUNDED) is False
    assert partial_answer("It is Ada.", GROUNDED) is True  # one word of the name, which the question does not say
    both = Task("niah", "Which numbers?", "x", answers=("4018627", "1234567"), meta={"match": "all"})
    assert answer_correct("4018627 and 1234567", both) is True and answer_correct("4018627", both) is False
    assert partial_answer("4018", both) is True
    assert answer_correct("anything", Task("instruction", "Write.")) is None


def test_evidence_kept_is_none_without_evidence_and_reads_the_occurrences():
    assert evidence_kept(None, torch.ones(5, dtype=torch.bool)) == (None, None)
    evidence = Evidence(torch.tensor([[False, True, True, False]]), torch.tensor([0]))
    assert evidence_kept(evidence, torch.tensor([True, True, True, True])) == (True, 1.0)
    assert evidence_kept(evidence, torch.tensor([True, True, False, True])) == (False, 0.5)


# -- the demo's questions through the harness -------------------------------------------------------


def test_a_preset_split_is_a_suite():
    name, tasks = load_suite("env:demo", limit=5)
    assert name == "demo-test" and tasks == EnvConfig.load("demo").tasks.tasks("test")[:5]
    name, tasks = load_suite("env:smoke:validation")
    assert name == "smoke-validation" and tasks == EnvConfig.load("smoke").tasks.tasks("validation")
    with pytest.raises(RLPruneError, match="names no preset"):
        load_suite("env:")
    with pytest.raises(RLPruneError, match="unknown"):
        load_suite("env:no-such-preset")
