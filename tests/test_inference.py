"""The inference plug-in: model.generate and pipelines run reduced inside apply(), unchanged outside."""

from __future__ import annotations

import pytest
import torch
from transformers import pipeline

import rlprune
from rlprune import InvalidPromptError, RLPruneError, build_prompt, load_model


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random")


def prompt_ids(tokenizer, words: int = 60):
    return build_prompt(tokenizer, "What colour is the boat?", "the boat was in the town . " * (words // 7)).input_ids


def test_policy_none_gives_exactly_the_plain_tokens(tiny):
    model, tokenizer = tiny
    ids = prompt_ids(tokenizer)
    plain = model.generate(ids, max_new_tokens=12, do_sample=False)
    with rlprune.apply(model, "none"):
        reduced = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(plain, reduced)


def test_a_reducing_policy_changes_the_forward_and_exit_restores_it(tiny):
    model, tokenizer = tiny
    ids = prompt_ids(tokenizer, 200)
    plain_logits = model(ids).logits
    with rlprune.apply(model, "snapkv", budget=0.5) as reducer:
        out = model.generate(ids, max_new_tokens=6, do_sample=False)
        state = model.forward.state
        assert state.tokens_per_layer[-1] < ids.shape[1]
        assert reducer.projected_flops(state) / reducer.full_flops(state) <= 0.55
    assert out.shape[1] == ids.shape[1] + 6
    assert "forward" not in model.__dict__
    assert torch.equal(model(ids).logits, plain_logits)


def test_the_model_is_restored_after_an_exception(tiny):
    model, tokenizer = tiny
    with pytest.raises(RuntimeError, match="boom"), rlprune.apply(model, "fastv", budget=0.6):
        raise RuntimeError("boom")
    assert "forward" not in model.__dict__


def test_a_text_generation_pipeline_on_a_patched_model(tiny):
    model, tokenizer = tiny
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    text = "the boat was in the town . " * 20
    plain = generator(text, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    with rlprune.apply(model, "none"):
        same = generator(text, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    with rlprune.apply(model, "pyramid", budget=0.5):
        reduced = generator(text, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert same == plain
    assert reduced.startswith(text) and len(reduced) > len(text)


def test_explicit_generate(tiny):
    model, tokenizer = tiny
    text = rlprune.generate(
        model, tokenizer, "What colour?", context="the boat . " * 30, policy="tome", budget=0.6, max_new_tokens=5
    )
    assert isinstance(text, str)


def test_bad_budgets_and_batches_are_refused(tiny):
    model, tokenizer = tiny
    for budget in (0, 1.5, -0.2):
        with pytest.raises(RLPruneError, match=r"\(0, 1\]"), rlprune.apply(model, "snapkv", budget=budget):
            pass
    ids = prompt_ids(tokenizer)
    with rlprune.apply(model, "snapkv"), pytest.raises(InvalidPromptError, match="one prompt at a time"):
        model.generate(ids.repeat(2, 1), max_new_tokens=2)
    assert "forward" not in model.__dict__
