"""Load a LoRA adapter trained by ``rlprune train-output`` into a base model."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import PreTrainedModel

from rlprune.errors import RLPruneError


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
    checked against the base model's weights.
    """
    from peft import PeftModel

    folder = Path(path)
    if not (folder / "adapter_config.json").is_file():
        raise RLPruneError(f"{folder} is not an adapter folder (no adapter_config.json); pass RUN/adapter")
    try:
        with without_checkpointing_renames():
            merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as error:
        raise RLPruneError(f"the adapter in {folder} does not fit this model ({error}); use its base model") from None
    merged.eval()
    return merged
