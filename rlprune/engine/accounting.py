"""FLOPs and KV-cache charges of a reduced pass, and the projections policies plan with.

Charges are made as the loop runs (:func:`charge_layer`, :func:`charge_decode_layer`,
:func:`charge_logits`); projections (:func:`project_flops`) add up the same pieces for a schedule
not yet applied, so a baseline solving for a budget, a policy turning a share into a token count and
the reducer agree to the FLOP.
"""

from __future__ import annotations

from collections.abc import Mapping

from rlprune import flops
from rlprune.engine.state import ReductionState
from rlprune.flops import ModelDims
from rlprune.reduction import OPS, LayerAction, Price, removal_count


def charge_layer(dims: ModelDims, state: ReductionState, prefill: bool = True) -> None:
    """Charge one prefill layer: the prompt's tokens to the prefill, a continuation to decoding.

    ``prefill=False`` leaves the prompt's tokens out: a re-run the op that asked for it already priced.
    """
    p, m = state.n_prompt_tokens, state.continuation_length
    state.tokens_per_layer.append(state.n_tokens)
    if prefill:
        state.flops += flops.layer_flops(dims, p, layer=state.layer)
    if m:
        state.decode_flops += flops.layer_flops(dims, m, cached=p, layer=state.layer)


def charge_decode_layer(dims: ModelDims, state: ReductionState, layer: int, new: int) -> None:
    """Charge ``new`` decoded tokens through ``layer``, on top of the keys the row had before them."""
    state.decode_flops += flops.layer_flops(dims, new, state.kv_counts[layer] - new, layer=layer)


def charge_logits(dims: ModelDims, state: ReductionState, prompt: int, continuation: int) -> None:
    """Charge the LM head: logits at ``prompt`` prompt positions to the prefill, the rest to decoding."""
    state.flops += flops.lm_head_flops(dims, prompt)
    state.decode_flops += flops.lm_head_flops(dims, continuation)


def choice_flops(
    dims: ModelDims, action: LayerAction, tokens: int, count: int, window: int, merge_window: int, layer: int = 0
) -> float:
    """What ``action``'s op charges at decision layer ``layer`` for removing ``count`` of ``tokens`` prompt
    tokens: choosing them (scoring, merge matching) and any layers it runs again (its own price)."""
    return OPS[action.op].cost(action, Price(dims, layer, tokens, count, window, merge_window))


def project_flops(
    dims: ModelDims,
    state: ReductionState,
    schedule: Mapping[int, LayerAction] | None,
    window: int,
    merge_window: int,
) -> float:
    """Prefill FLOPs of the prompt if ``schedule`` is applied from now on and nothing else removed.

    The one FLOPs projection: planning and the layer charges use the same pieces.
    """
    schedule = schedule or {}
    total, layer = state.flops, state.layer
    n, removable = state.n_prompt_tokens, int(state.removable().sum())
    for at in sorted(k for k in schedule if k >= state.layer):
        total += flops.layers_flops(dims, layer, at, n)
        action, layer = schedule[at], at
        count = removal_count(action, removable)
        total += choice_flops(dims, action, n, count, window, merge_window, layer=at)
        n, removable = n - count, removable - count
    return total + flops.layers_flops(dims, layer, dims.layers, n) + flops.lm_head_flops(dims, 1)


def projected_flops(dims: ModelDims, state: ReductionState, window: int, merge_window: int) -> float:
    """Prefill FLOPs of the prompt if no further token is removed (spent so far plus the rest)."""
    return project_flops(dims, state, None, window, merge_window)


def projected_kv_ratio(dims: ModelDims, state: ReductionState) -> float:
    """The prompt's KV-cache size over the full model's if nothing else is removed from now on."""
    run = [n - state.continuation_length for n in state.tokens_per_layer]
    tokens = run + [state.n_prompt_tokens] * (dims.layers - len(run))
    full = [state.prompt_length] * dims.layers
    return flops.kv_cache_bytes(dims, tokens) / flops.kv_cache_bytes(dims, full)


def full_flops(dims: ModelDims, state: ReductionState) -> float:
    """Prefill FLOPs of the prompt without reduction (with logits for its last position)."""
    return flops.full_prefill_flops(dims, state.prompt_length)
