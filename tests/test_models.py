"""Model loading: local folders, the converted-GGUF cache, prompts."""

from __future__ import annotations

import torch
from conftest import tiny_tokenizer

from rlprune import build_prompt, load_model, models


def test_local_folder_loads_frozen_in_eval_mode(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tokenizer("the town")["input_ids"]
    assert model.config._attn_implementation == "sdpa"


def test_converted_gguf_is_reused_without_reading_the_file_again(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path))
    gguf = tmp_path / "weights.gguf"
    gguf.write_bytes(b"not read when a converted copy exists")
    folder = models.converted_folder(gguf)
    assert folder.parent == tmp_path / "models"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert models._converted_folder(gguf) == folder


def test_home_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path))
    assert models.rlprune_home() == tmp_path


def test_grounded_prompt_protects_the_question_and_what_follows():
    tokenizer = tiny_tokenizer()
    prompt = build_prompt(tokenizer, "name of the boat ?", context="the keeper was in the town .")
    ids = prompt.input_ids[0].tolist()
    tail = tokenizer.convert_ids_to_tokens(ids[-prompt.protect_last :])
    # no chat template: the base-model layout, whose answer cue is protected with the question
    assert tail == ["Question", ":", "name", "of", "the", "boat", "?", "Answer", ":"]
    assert build_prompt(tokenizer, "name of the boat ?", context="the town .", chat=False).text.endswith("?")
    assert torch.equal(prompt.input_ids, torch.tensor([tokenizer(prompt.text)["input_ids"]]))
