"""The inference plug-in: model.generate and pipelines run reduced inside apply(), unchanged outside."""

from __future__ import annotations

import pytest
import torch
from transformers import pipeline

import rlprune
from rlprune import InvalidPromptError, RLPruneError, build_prompt, load_model
from rlprune.engine import ReductionBatch


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


def test_bad_budgets_are_refused(tiny):
    model, tokenizer = tiny
    for budget in (0, 1.5, -0.2):
        with pytest.raises(RLPruneError, match=r"\(0, 1\]"), rlprune.apply(model, "snapkv", budget=budget):
            pass
    assert "forward" not in model.__dict__


TEXTS = ["the keeper of the boat", "a longer prompt about the river town and its six bells", "boat"]


def padded(tokenizer, texts=TEXTS):
    tokenizer.padding_side = "left"  # as batched generation pads
    return tokenizer(texts, return_tensors="pt", padding=True)


def test_a_padded_batch_under_apply_none_gives_exactly_model_generate(tiny):
    model, tokenizer = tiny
    batch = padded(tokenizer)
    plain = model.generate(**batch, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with rlprune.apply(model, "none"):
        same = model.generate(**batch, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(plain, same)


def test_each_prompt_of_a_reduced_batch_gets_its_own_tokens(tiny):
    """Under a reducing policy, a batch gives each prompt what generating it alone gives."""
    model, tokenizer = tiny
    texts = [("the boat was in the town . " * 12) + f"who kept boat {i} ?" for i in range(3)]
    batch = padded(tokenizer, texts[:2] + ["the river . " * 30])
    with rlprune.apply(model, "snapkv", budget=0.5):
        together = model.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        state = model.forward.state
        for b in range(3):
            real = batch["input_ids"][b][batch["attention_mask"][b].bool()][None]
            alone = model.generate(real, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            assert torch.equal(together[b, -6:], alone[0, -6:])
    assert len({tuple(row.tokens_per_layer) for row in state}) > 1  # prompts kept different numbers of tokens


def test_a_pipeline_with_batch_size_runs_reduced(tiny):
    model, tokenizer = tiny
    tokenizer.padding_side = "left"
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    texts = ["the boat was in the town . " * 12, "the river . " * 20, "six bells"]
    plain = [o[0]["generated_text"] for o in generator(texts, max_new_tokens=6, do_sample=False, batch_size=3)]
    with rlprune.apply(model, "none"):
        same = [o[0]["generated_text"] for o in generator(texts, max_new_tokens=6, do_sample=False, batch_size=3)]
    assert same == plain
    with rlprune.apply(model, "snapkv", budget=0.5):
        reduced = [o[0]["generated_text"] for o in generator(texts, max_new_tokens=6, do_sample=False, batch_size=3)]
        batch = model.forward.state
    assert isinstance(batch, ReductionBatch) and len(batch) == 3  # the three prompts ran as one reduced batch
    assert all(row.tokens_per_layer[-1] < row.prompt_length for row in batch.rows[:2])  # the long prompts shrank
    assert all(text.startswith(prompt) for text, prompt in zip(reduced, texts, strict=True))


def test_explicit_generate_takes_a_list_of_prompts(tiny):
    model, tokenizer = tiny
    questions = ["What colour?", "Who kept it?"]
    answers = rlprune.generate(
        model, tokenizer, questions, context=["the boat . " * 30, "the keeper . " * 20], policy="snapkv",
        budget=0.5, max_new_tokens=5,
    )  # fmt: skip
    alone = [
        rlprune.generate(model, tokenizer, q, context=c, policy="snapkv", budget=0.5, max_new_tokens=5)
        for q, c in zip(questions, ["the boat . " * 30, "the keeper . " * 20], strict=True)
    ]
    assert answers == alone
    with pytest.raises(InvalidPromptError, match="1 contexts for 2 prompts"):
        rlprune.generate(model, tokenizer, questions, context=["x"])
