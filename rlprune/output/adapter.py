"""Load a LoRA adapter trained by ``rlprune train-output`` into a base model."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import PreTrainedModel

from rlprune.errors import RLPruneError

CONFIG, WEIGHTS, PICKLED_WEIGHTS = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
"""peft's file names: the adapter's config, its safetensors weights, and the pickled weights never read."""


@contextmanager
def without_checkpointing_renames() -> Iterator[None]:
    """Hide transformers' FutureWarnings about its renamed gradient-checkpointing names, which TRL's
    config and peft still use: they concern those libraries, not the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        yield


def apply_adapter(model: PreTrainedModel, path: str | Path) -> PreTrainedModel:
    """``model`` with the adapter's weights merged in, in place (nothing on disk changes).

    Merging gives back a plain model of the same architecture, so the reducer, the policies and
    ``model.generate`` work on it unchanged. Load a reduction policy *before* merging: it is
    checked against the base model's weights. Only safetensors weights are read: peft would fall
    back to ``adapter_model.bin`` through ``torch.load`` (a pickle), so peft is shown a folder that
    holds nothing but the config and the safetensors file.
    """
    from peft import PeftModel
    from safetensors import SafetensorError

    folder = Path(path)
    if not (folder / CONFIG).is_file():
        raise RLPruneError(f"{folder} is not an adapter folder (no {CONFIG}); pass RUN/adapter")
    if not (folder / WEIGHTS).is_file():
        pickled = (
            f" (only {PICKLED_WEIGHTS}, a pickle rlprune never loads)" if (folder / PICKLED_WEIGHTS).exists() else ""
        )
        raise RLPruneError(
            f"{folder} has no {WEIGHTS}{pickled}; re-save the adapter with safetensors: "
            "model.save_pretrained(folder, safe_serialization=True)"
        )
    try:
        with tempfile.TemporaryDirectory(prefix="rlprune-adapter-") as staging, without_checkpointing_renames():
            for name in (CONFIG, WEIGHTS):
                os.symlink((folder / name).resolve(), Path(staging) / name)
            merged = PeftModel.from_pretrained(model, staging).merge_and_unload()
    except SafetensorError as error:
        raise RLPruneError(f"{folder / WEIGHTS} is corrupt or truncated ({error}); save the adapter again") from None
    except (RuntimeError, ValueError, KeyError) as error:
        raise RLPruneError(f"the adapter in {folder} does not fit this model ({error}); use its base model") from None
    merged.eval()
    return merged
