"""Model loading: local folders, the converted-GGUF cache, prompts."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from conftest import tiny_tokenizer

from rlprune import build_prompt, load_model, models


def test_local_folder_loads_frozen_in_eval_mode(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tokenizer("the town")["input_ids"]
    assert model.config._attn_implementation == "sdpa"


def test_converted_gguf_is_reused_and_its_hash_computed_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path))
    gguf = tmp_path / "weights.gguf"
    gguf.write_bytes(b"not converted again when a converted copy exists")
    folder = models.converted_folder(gguf)
    assert folder.parent == tmp_path / "models"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert models._converted_folder(gguf) == folder
    opened = []
    original = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(self) or original(self, *a, **k))
    assert models.converted_folder(gguf) == folder and gguf not in opened  # remembered by path, size, mtime


def test_gguf_files_with_one_name_and_size_never_share_a_converted_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path / "home"))
    first, second = tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf"
    for path, fill in ((first, b"1"), (second, b"\0")):
        path.parent.mkdir()
        path.write_bytes(fill * 1000)
    assert models.converted_folder(first) != models.converted_folder(second)
    before = models.converted_folder(first)
    first.write_bytes(b"2" * 1000)  # same path and size, new content (and modification time)
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    assert models.converted_folder(first) != before
    (tmp_path / "home" / "gguf-hashes.json").write_text("not json")  # a damaged index is recomputed
    assert models.converted_folder(second).name.startswith("model-")


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
