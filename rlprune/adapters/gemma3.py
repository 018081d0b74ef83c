"""Gemma 3 (text): scaled embeddings, a rotary table per layer type, sliding-window layers,
``query_pre_attn_scalar`` scaling and optional final-logit soft-capping.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlprune.adapters.base import ModelAdapter, Rope, register_adapter


@register_adapter
class Gemma3Adapter(ModelAdapter):
    model_types = ("gemma3_text",)

    def rope_kind(self, layer: int) -> str:
        return self.config.layer_types[layer]

    def rotary(self, hidden: Tensor, positions: Tensor) -> Rope:
        kinds = dict.fromkeys(self.config.layer_types)
        position_ids = positions[None] if positions.dim() == 1 else positions
        return {kind: self.decoder.rotary_emb(hidden, position_ids, kind) for kind in kinds}

    def logits(self, hidden: Tensor) -> Tensor:
        logits = super().logits(hidden)
        cap = getattr(self.config, "final_logit_softcapping", None)
        return logits if cap is None else torch.tanh(logits / cap) * cap
