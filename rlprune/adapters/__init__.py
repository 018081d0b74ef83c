"""Model families the reducer runs: one adapter class per family (see :class:`ModelAdapter`)."""

from rlprune.adapters.base import (
    ADAPTERS,
    ModelAdapter,
    Rope,
    adapter_for,
    check_supported,
    register_adapter,
    supported_architectures,
)
from rlprune.adapters.gemma3 import Gemma3Adapter
from rlprune.adapters.llama import LlamaFamilyAdapter

__all__ = [
    "ADAPTERS",
    "Gemma3Adapter",
    "LlamaFamilyAdapter",
    "ModelAdapter",
    "Rope",
    "adapter_for",
    "check_supported",
    "register_adapter",
    "supported_architectures",
]
