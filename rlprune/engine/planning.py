"""Planning one decision: what scorers see of a row before a layer, and the plan its action's op makes."""

from __future__ import annotations

from torch import Tensor

from rlprune.adapters import ModelAdapter
from rlprune.engine.inputs import ReducerConfig
from rlprune.engine.state import ReductionState
from rlprune.flops import ModelDims
from rlprune.reduction import OPS, LayerAction, Planning, ReductionPlan, ScoreContext


def score_context(adapter: ModelAdapter, config: ReducerConfig, state: ReductionState) -> ScoreContext:
    """What scorers (and policy features) see of the prompt tokens before the next layer.

    A teacher-forced continuation is left out, so it never influences which tokens go.
    """
    p = state.n_prompt_tokens
    positions, log_sizes = state.positions[:p], state.log_sizes()
    cos, sin = state.rope[adapter.rope_kinds[state.layer]]
    return ScoreContext(
        adapter=adapter,
        layer=state.layer,
        normed=adapter.input_norm(state.layer, state.hidden[:, :p]),
        positions=positions,
        log_sizes=None if log_sizes is None else log_sizes[:p],
        cos=cos[:, positions],
        sin=sin[:, positions],
        window=config.query_window(state.protect_last),
        pool=config.pool,
    )


def plan(
    adapter: ModelAdapter,
    dims: ModelDims,
    config: ReducerConfig,
    sentence_ends: Tensor | None,
    state: ReductionState,
    action: LayerAction,
) -> ReductionPlan:
    """What ``action`` does before layer ``state.layer``: its op's plan on this row."""
    planning = Planning(
        layer=state.layer,
        removable=state.removable(),
        prompt_tokens=state.n_prompt_tokens,
        input_ids=state.input_ids[0],
        sentence_ends=sentence_ends,
        dims=dims,
        window=config.query_window(state.protect_last),
        merge_window=config.merge_window,
        context=lambda: score_context(adapter, config, state),
    )
    return OPS[action.op].plan(planning, action)
