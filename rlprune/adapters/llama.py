"""Llama-family decoders: Llama (and SmolLM), Mistral, Qwen2 and Qwen3.

They share the Llama layout the base adapter assumes; Qwen3's per-head ``q_norm``/``k_norm`` and
Mistral's and Qwen2's sliding windows are read from the modules and the config.
"""

from __future__ import annotations

from rlprune.adapters.base import ModelAdapter, register_adapter


@register_adapter
class LlamaFamilyAdapter(ModelAdapter):
    model_types = ("llama", "mistral", "qwen2", "qwen3")
