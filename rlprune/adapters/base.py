"""The model-adapter seam: every detail of a model family the reducer, scorers, features and FLOPs need.

Nothing outside :mod:`rlprune.adapters` reaches into ``model.model``. A family is one subclass of
:class:`ModelAdapter` registered with :func:`register_adapter`; see ``llama.py`` and ``gemma3.py``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedModel

from rlprune import flops
from rlprune.errors import UnsupportedModelError

Rope = dict[str, tuple[Tensor, Tensor]]
"""Rotary ``(cos, sin)`` per rope kind, each ``(1, positions, head_dim)``."""


class ModelAdapter:
    """One model family as the reducer sees it.

    Subclasses set :attr:`model_types` (the ``config.model_type`` values they run) and override
    what differs from the Llama layout: ``model.model.{embed_tokens, layers, norm, rotary_emb}``,
    ``model.lm_head``, ``layer.input_layernorm`` and ``layer.self_attn.{q,k}_proj`` (with optional
    ``q_norm``/``k_norm``).
    """

    model_types: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.config = model.config
        self.decoder: nn.Module = model.model
        self.layers: nn.ModuleList = self.decoder.layers
        self.windows: tuple[int | None, ...] = self.sliding_windows()
        self.rope_kinds: tuple[str, ...] = tuple(self.rope_kind(i) for i in range(len(self.layers)))

    # -- shapes -----------------------------------------------------------------------------

    def sliding_windows(self) -> tuple[int | None, ...]:
        """Per layer: how many positions back a query sees (itself included), ``None`` for all."""
        n = self.config.num_hidden_layers
        window = getattr(self.config, "sliding_window", None)
        if not window or getattr(self.config, "use_sliding_window", True) is False:
            return (None,) * n
        types = getattr(self.config, "layer_types", None)
        if types is None:  # Mistral: one window for every layer
            return (int(window),) * n
        return tuple(int(window) if t == "sliding_attention" else None for t in types)

    def dims(self, dtype: torch.dtype | None = None) -> flops.ModelDims:
        """The shapes FLOPs and cache sizes depend on, sliding windows included."""
        config = self.config
        heads = config.num_attention_heads
        return flops.ModelDims(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            vocab=config.vocab_size,
            bytes_per_value=torch.finfo(dtype or self.model.dtype).bits // 8,
            windows=self.windows,
        )

    # -- the forward pieces -----------------------------------------------------------------

    def embed(self, ids: Tensor) -> Tensor:
        """Token embeddings entering layer 0 (any embedding scale applied)."""
        return self.decoder.embed_tokens(ids)

    def rope_kind(self, layer: int) -> str:
        """Which rotary table layer ``layer`` uses (a key of :meth:`rotary`'s result)."""
        return "default"

    def rotary(self, hidden: Tensor, positions: Tensor) -> Rope:
        """Rotary ``(cos, sin)`` at ``positions`` (``(n,)`` or ``(B, n)``) for every rope kind the layers use."""
        return {"default": self.decoder.rotary_emb(hidden, position_ids=_batched(positions))}

    def input_norm(self, layer: int, hidden: Tensor) -> Tensor:
        """Layer ``layer``'s pre-attention norm (what its projections and the scorers read)."""
        return self.layers[layer].input_layernorm(hidden)

    def project(self, layer: int, normed: Tensor, which: str) -> Tensor:
        """Queries (``"q"``) or keys (``"k"``) of ``normed`` before rotary, ``(1, heads, n, head_dim)``."""
        attn = self.layers[layer].self_attn
        states = getattr(attn, f"{which}_proj")(normed).view(1, normed.shape[1], -1, attn.head_dim)
        norm = getattr(attn, f"{which}_norm", None)
        if norm is not None:
            states = norm(states)
        return states.transpose(1, 2)

    def query_scale(self, layer: int) -> float:
        """The factor on query-key products (``head_dim ** -0.5`` unless the family says otherwise)."""
        return float(self.layers[layer].self_attn.scaling)

    @staticmethod
    def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate ``(1, heads, n, head_dim)`` states by ``(1, n, head_dim)`` tables (rotate-half convention)."""
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def logits(self, hidden: Tensor) -> Tensor:
        """Final norm and LM head (and any final soft-capping) on the top layer's hidden states."""
        return self.model.lm_head(self.decoder.norm(hidden))

    def new_cache(self) -> DynamicCache:
        """A per-layer KV cache that keeps every entry: the reducer's masks, not the cache, apply windows."""
        return DynamicCache()

    def attention_mask(
        self,
        layer: int,
        query_positions: Tensor,
        key_positions: Tensor,
        key_log_sizes: Tensor | None,
        dtype: torch.dtype,
        last_position: int | None = None,
        key_valid: Tensor | None = None,
    ) -> Tensor | None:
        """Additive mask ``(B, 1, q, k)`` for layer ``layer``: causal by original position, inside the
        layer's sliding window, hiding key slots a row does not use, with ``log(size)`` on merged keys.

        Positions are ``(q,)``/``(k,)`` for one row or ``(B, q)``/``(B, k)``. Returns ``None`` where
        the kernel's own causal masking is the same thing (no merged keys, no padded slot, one query
        or queries that are the keys, and no key outside the window), so SDPA keeps its fastest path.
        ``last_position``, the highest query position as a Python integer, lets that window check
        skip a device round-trip (positions start at 0, so it bounds the span).
        """
        query_positions, key_positions = _batched(query_positions), _batched(key_positions)
        q, k = query_positions.shape[-1], key_positions.shape[-1]
        window = self.windows[layer]
        if key_log_sizes is None and key_valid is None and (q == 1 or q == k):
            if last_position is None:
                last_position = int((query_positions[:, -1] - key_positions[:, 0]).max())
            if window is None or last_position < window:
                return None
        visible = key_positions[:, None, :] <= query_positions[:, :, None]
        if window is not None:
            visible &= key_positions[:, None, :] > query_positions[:, :, None] - window
        if key_valid is not None:
            visible &= _batched(key_valid)[:, None, :]
        if key_log_sizes is None:
            bias = torch.zeros(k, dtype=dtype, device=visible.device)
        else:
            bias = _batched(key_log_sizes).to(dtype)[:, None, :]
        return torch.where(visible, bias, torch.finfo(dtype).min)[:, None]


def _batched(values: Tensor) -> Tensor:
    """``(n,)`` as ``(1, n)``; ``(B, n)`` as it is."""
    return values[None] if values.dim() == 1 else values


ADAPTERS: dict[str, type[ModelAdapter]] = {}


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Make ``cls`` the adapter for each of its ``model_types``."""
    for model_type in cls.model_types:
        ADAPTERS[model_type] = cls
    return cls


def supported_architectures() -> tuple[str, ...]:
    return tuple(sorted(ADAPTERS))


def check_supported(config) -> None:
    """Raise :class:`UnsupportedModelError` unless an adapter runs this architecture."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise UnsupportedModelError(
            f"architecture {model_type!r} is not supported; rlprune has adapters for "
            f"{', '.join(supported_architectures())} (SmolLM is llama). Adding a family is one adapter "
            "file in rlprune/adapters/"
        )
    if getattr(config, "attn_logit_softcapping", None):
        raise UnsupportedModelError(
            f"{model_type} with attention-logit soft-capping is not supported: the SDPA kernels the reducer "
            "uses cannot apply it"
        )


def adapter_for(model: PreTrainedModel) -> ModelAdapter:
    """The adapter that runs ``model``: a causal LM with its head (``AutoModelForCausalLM``), not the bare
    decoder (``model.model``) nor anything else."""
    if hasattr(getattr(model, "config", None), "model_type"):
        check_supported(model.config)  # another family says so first, whatever its attribute names
    parts = ("config", "model", "lm_head")
    if not all(hasattr(model, part) for part in parts) or not hasattr(model.config, "model_type"):
        raise UnsupportedModelError(
            f"{type(model).__name__} is not a causal language model with its head; pass the model "
            "AutoModelForCausalLM (or rlprune.load_model) gives, not its decoder"
        )
    check_supported(model.config)
    return ADAPTERS[model.config.model_type](model)
