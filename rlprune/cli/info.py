"""``rlprune info``: the model's shape, parameter count and the cache folder."""

from __future__ import annotations

from rich.table import Table

from rlprune.cli.common import DeviceOption, DtypeOption, ModelOption, console, user_errors


@user_errors
def info(model: ModelOption = "smollm2-135m", device: DeviceOption = "cpu", dtype: DtypeOption = "float32") -> None:
    """Show the model's shape, parameter count and the cache folder."""
    from rlprune.adapters import adapter_for
    from rlprune.models import count_parameters, load_model, rlprune_home

    lm, _ = load_model(model, device=device, dtype=dtype)
    dims = adapter_for(lm).dims()
    table = Table(title=f"rlprune info: {model}", show_header=False)
    rows = {
        "architecture": f"{lm.config.model_type} ({type(lm).__name__})",
        "layers": dims.layers,
        "hidden size": dims.hidden,
        "attention heads": f"{dims.heads} query, {dims.kv_heads} key/value, head dim {dims.head_dim}",
        "MLP size": dims.intermediate,
        "sliding windows": _windows(dims.windows),
        "device": str(lm.device),
        "vocabulary": dims.vocab,
        "max positions": getattr(lm.config, "max_position_embeddings", "?"),
        "parameters": f"{count_parameters(lm):,}",
        "dtype": str(lm.dtype).removeprefix("torch."),
        "attention kernel": lm.config._attn_implementation,
        "cache folder": str(rlprune_home()),
    }
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)


def _windows(windows: tuple[int | None, ...]) -> str:
    """Which layers attend through a sliding window, and how far back they see."""
    sliding = [i for i, w in enumerate(windows) if w is not None]
    if not sliding:
        return "none (every layer global)"
    return f"{len(sliding)} of {len(windows)} layers see {max(w for w in windows if w)} positions back"
