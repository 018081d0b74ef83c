"""Plug a reduction policy into ordinary ``model.generate`` calls.

    with rlprune.apply(model, "snapkv", budget=0.5):
        model.generate(input_ids, max_new_tokens=32)

Inside the block, the model's forward runs the prefill through :class:`Reducer` with the policy
and decodes from the reduced per-layer cache; on exit (also after an exception) the model is
exactly as before. ``rlprune.generate`` is the explicit form.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from rlprune.errors import InvalidPromptError, RLPruneError
from rlprune.policies import Policy, decider, resolve_policy
from rlprune.prompts import build_prompt
from rlprune.runner import Reducer, ReducerConfig, ReductionState


def check_budget(budget: float | None) -> None:
    if budget is not None and not (isinstance(budget, (int, float)) and 0 < budget <= 1):
        raise RLPruneError(f"budget {budget!r} must lie in (0, 1]: it is the target prefill FLOPs ratio")


class _ReducedForward:
    """The forward that replaces the model's own inside :func:`apply`."""

    def __init__(self, reducer: Reducer, policy: Policy, budget: float | None, protect_last: int | None) -> None:
        self.reducer, self.policy, self.budget, self.protect_last = reducer, policy, budget, protect_last
        self.state: ReductionState | None = None

    def __call__(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache=None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if input_ids is None or inputs_embeds is not None:
            raise RLPruneError("rlprune.apply needs token ids (input_ids), not embeddings")
        if input_ids.shape[0] != 1:
            raise InvalidPromptError(f"rlprune.apply handles one prompt at a time, got a batch of {input_ids.shape[0]}")
        cache = cache if cache is not None else past_key_values
        if self.state is not None and cache is self.state.cache:  # decoding from the reduced cache
            logits = self.reducer.extend(self.state, input_ids[0])
        else:  # a new prompt: reduced prefill
            if attention_mask is not None and not bool(attention_mask.all()):
                raise InvalidPromptError("rlprune.apply does not handle padded prompts; pass one unpadded prompt")
            out = self.reducer.run(
                input_ids,
                decider(self.policy, self.reducer, self.budget),
                decision_layers=self.policy.decision_layers(self.reducer.dims.layers),
                protect_last=self.protect_last,
                logits="last" if logits_to_keep == 1 else "all",
            )
            self.state, logits = out.state, out.logits
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            logits = logits[:, -logits_to_keep:]
        return CausalLMOutputWithPast(logits=logits, cache=self.state.cache)


@contextmanager
def apply(
    model: PreTrainedModel,
    policy: Policy | str | Path,
    budget: float | None = 0.5,
    *,
    protect_last: int | None = None,
) -> Iterator[Reducer]:
    """Within the block, ``model.generate`` (and pipelines built on the model) run reduced.

    Args:
        model: a supported causal LM.
        policy: a policy, a checkpoint folder, or a baseline spec such as ``"fastv:layer=2"``.
        budget: target prefill FLOPs ratio in (0, 1]; ``None`` lets baselines use their own ratio.
        protect_last: final prompt tokens never removed (default: the reducer's, 8).
    """
    check_budget(budget)
    policy = resolve_policy(policy, model)
    reducer = Reducer(model)
    before = model.__dict__.get("forward")
    model.forward = _ReducedForward(reducer, policy, budget, protect_last)
    try:
        yield reducer
    finally:
        if before is None:
            del model.forward
        else:
            model.forward = before


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    *,
    policy: Policy | str | Path = "none",
    budget: float | None = 0.5,
    context: str | None = None,
    max_new_tokens: int = 64,
    **sampling,
) -> str:
    """Answer ``prompt`` (about ``context``, if given) with a reduced prefill; returns the text.

    The question and everything after it are protected. ``sampling`` takes ``do_sample``,
    ``temperature``, ``top_k``, ``top_p`` and ``generator`` as in :meth:`Reducer.generate`.
    """
    check_budget(budget)
    policy = resolve_policy(policy, model)
    built = build_prompt(tokenizer, prompt, context)
    reducer = Reducer(model, ReducerConfig())
    result = reducer.generate(
        built.input_ids,
        decider(policy, reducer, budget),
        decision_layers=policy.decision_layers(reducer.dims.layers),
        protect_last=built.protect_last,
        max_new_tokens=max_new_tokens,
        **sampling,
    )
    return tokenizer.decode(result.tokens[0], skip_special_tokens=True).strip()
