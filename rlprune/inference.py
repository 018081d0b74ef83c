"""Plug a reduction policy into ordinary ``model.generate`` calls.

    with rlprune.apply(model, "snapkv", budget=0.5):
        model.generate(input_ids, max_new_tokens=32)

Inside the block, the model's forward runs the prefill through :class:`Reducer` with the policy
and decodes from the reduced per-layer cache; on exit (also after an exception) the model is
exactly as before. A padded batch (``attention_mask``, left padding as generation uses) runs as
one reduced batch in which every prompt keeps its own tokens. ``rlprune.generate`` is the
explicit form.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from rlprune.budget import BudgetController, workload_budget
from rlprune.engine import Reducer, ReducerConfig, ReductionBatch, ReductionState
from rlprune.errors import InvalidActionError, InvalidArgumentError, RLPruneError
from rlprune.policies import Policy, PolicyError, resolve_policy
from rlprune.prompts import build_prompt
from rlprune.validate import check_budget, check_int, check_prompts, shown  # noqa: F401 (check_budget re-exported)

SAMPLING_OPTIONS = ("do_sample", "temperature", "top_k", "top_p", "generator", "eos_token_id")
"""The keyword arguments :func:`generate` passes on to :meth:`Reducer.generate`."""


def check_policy(policy: object, model: PreTrainedModel) -> Policy:
    """``policy`` as a :class:`Policy`, refusing anything that is not a policy, a checkpoint folder or a
    baseline spec before a prompt runs."""
    if callable(getattr(policy, "act", None)) and callable(getattr(policy, "decision_layers", None)):
        return policy
    if isinstance(policy, str) and policy.strip():
        return resolve_policy(policy, model)
    if isinstance(policy, os.PathLike):
        return resolve_policy(Path(policy), model)
    raise PolicyError(
        "policy must be a baseline spec such as 'snapkv' or 'fastv:layer=2', a checkpoint folder or a Policy "
        f"object; got {shown(policy)}"
    )


BUDGET_TOLERANCE = 0.05
"""How far a realised FLOPs ratio may sit from the asked budget before it is reported as a miss."""


def budget_missed(budget: float | None, flops_ratio: float) -> bool:
    """Whether ``flops_ratio`` misses ``budget`` by more than :data:`BUDGET_TOLERANCE` (either way)."""
    return budget is not None and abs(flops_ratio - budget) > BUDGET_TOLERANCE + 1e-9


class _ReducedForward:
    """The forward that replaces the model's own inside :func:`apply`."""

    def __init__(
        self, reducer: Reducer, policy: Policy, budget: float | BudgetController | None, protect_last: int | None
    ) -> None:
        self.reducer, self.policy, self.budget, self.protect_last = reducer, policy, budget, protect_last
        self.state: ReductionState | ReductionBatch | None = None

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
        cache = cache if cache is not None else past_key_values
        if self.state is not None and cache is self.state.cache:  # decoding from the reduced cache
            logits = self.reducer.extend(self.state, input_ids)
        else:  # new prompts: reduced prefill
            batched = input_ids.shape[0] > 1
            if not batched and attention_mask is not None and not bool(attention_mask.all()):
                input_ids = input_ids[:, attention_mask[0].bool()]  # one padded prompt: its real tokens
            if batched:
                if logits_to_keep != 1:
                    raise RLPruneError("rlprune.apply on a batch gives logits for each prompt's last token only")
            outs = self.reducer.run(
                input_ids,
                policy=self.policy,
                budget=self.budget,
                attention_mask=attention_mask if batched else None,
                protect_last=self.protect_last,
                logits="last" if logits_to_keep == 1 else "all",
            )
            if isinstance(self.budget, BudgetController):
                self.budget.record(out.flops_ratio for out in (outs if batched else [outs]))
            if batched:
                self.state = ReductionBatch([out.state for out in outs])
                logits = torch.cat([out.logits for out in outs])
            else:
                self.state, logits = outs.state, outs.logits
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            logits = logits[:, -logits_to_keep:]
        return CausalLMOutputWithPast(logits=logits, cache=self.state.cache)


@contextmanager
def apply(
    model: PreTrainedModel,
    policy: Policy | str | Path,
    budget: float | BudgetController | None = 0.5,
    *,
    budget_mode: str = "prompt",
    floor: float | None = None,
    ceiling: float | None = None,
    protect_last: int | None = None,
) -> Iterator[Reducer]:
    """Within the block, ``model.generate`` (and pipelines built on the model) run reduced.

    Args:
        model: a supported causal LM.
        policy: a policy, a checkpoint folder, or a baseline spec such as ``"fastv:layer=2"``.
        budget: target prefill FLOPs ratio in (0, 1]; ``None`` lets baselines use their own ratio.
        budget_mode: ``"prompt"`` holds every prompt to ``budget``; ``"average"`` holds the mean over
            the prompts the block runs, each prompt at the ratio the policy proposes for it
            (:mod:`rlprune.budget`; pass a :class:`~rlprune.budget.BudgetController` as ``budget`` to
            keep one stream across blocks and read its realised mean).
        floor, ceiling: in average mode, the lowest and highest ratio one prompt may get.
        protect_last: final prompt tokens never removed (default: the reducer's, 8).
    """
    budget = workload_budget(budget, budget_mode, floor=floor, ceiling=ceiling)
    protect_last = None if protect_last is None else check_int(protect_last, "protect_last", error=InvalidActionError)
    reducer = Reducer(model)
    policy = check_policy(policy, model)
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
    prompt: str | Sequence[str],
    *,
    policy: Policy | str | Path = "none",
    budget: float | BudgetController | None = 0.5,
    budget_mode: str = "prompt",
    floor: float | None = None,
    ceiling: float | None = None,
    context: str | Sequence[str | None] | None = None,
    max_new_tokens: int = 64,
    **sampling,
) -> str | list[str]:
    """Answer ``prompt`` (about ``context``, if given) with a reduced prefill; returns the text.

    A list of prompts (with a list of contexts, or one for all) runs as one batch and returns a
    list of answers. The question and everything after it are protected. ``sampling`` takes
    ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``generator`` and ``eos_token_id`` as in
    :meth:`Reducer.generate`. ``budget_mode``, ``floor`` and ``ceiling`` are as in :func:`apply`.
    """
    budget = workload_budget(budget, budget_mode, floor=floor, ceiling=ceiling)
    questions, contexts = check_prompts(prompt, context)
    unknown = sorted(set(sampling) - set(SAMPLING_OPTIONS))
    if unknown:
        raise InvalidArgumentError(
            f"unknown sampling option(s) {', '.join(unknown)}; use {', '.join(SAMPLING_OPTIONS)}"
        )
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise InvalidArgumentError(
            f"tokenizer must be the model's tokenizer (load_model returns it), got {shown(tokenizer)}"
        )
    reducer = Reducer(model, ReducerConfig())
    policy = check_policy(policy, model)
    built = [build_prompt(tokenizer, q, c) for q, c in zip(questions, contexts, strict=True)]
    results = reducer.generate(
        [b.input_ids[0] for b in built] if len(built) > 1 else built[0].input_ids,
        policy=policy,
        budget=budget,
        protect_last=[b.protect_last for b in built] if len(built) > 1 else built[0].protect_last,
        max_new_tokens=max_new_tokens,
        **sampling,
    )
    results = results if isinstance(results, list) else [results]
    if isinstance(budget, BudgetController):
        budget.record(r.prefill.flops_ratio for r in results)
    answers = [tokenizer.decode(r.tokens[0], skip_special_tokens=True).strip() for r in results]
    return answers[0] if isinstance(prompt, str) else answers
