"""Plug a reduction policy into ordinary ``model.generate`` calls.

    with rlprune.apply(model, "snapkv", budget=0.5):
        model.generate(input_ids, max_new_tokens=32)

Inside the block, the model's calls from the thread that entered it run the prefill through
:class:`Reducer` with the policy and decode from the reduced per-layer cache; calls from other threads
run the full model. Blocks nest and exit in any order; when the last exits (also after an exception)
the model is exactly as before (:mod:`rlprune.dispatch`). A padded batch (``attention_mask``, left
padding as generation uses) runs as one reduced batch in which every prompt keeps its own tokens.
``rlprune.generate`` is the explicit form.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from rlprune import dispatch
from rlprune.budget import AverageBudget, AverageBudgetWarning, BudgetController, workload_budget
from rlprune.engine import Reducer, ReducerConfig, ReductionBatch, ReductionState
from rlprune.errors import InvalidActionError, InvalidArgumentError, RLPruneError
from rlprune.policies import Policy, PolicyError, check_compatible, resolve_policy
from rlprune.prompts import build_prompt
from rlprune.validate import check_budget, check_int, check_prompts, shown  # noqa: F401 (check_budget re-exported)

SAMPLING_OPTIONS = ("do_sample", "temperature", "top_k", "top_p", "generator", "eos_token_id")
"""The keyword arguments :func:`generate` passes on to :meth:`Reducer.generate`."""


def check_policy(policy: object, model: PreTrainedModel) -> Policy:
    """``policy`` as a :class:`Policy` that fits ``model``, refusing anything that is not a policy, a
    checkpoint folder or a baseline spec before a prompt runs."""
    if callable(getattr(policy, "act", None)) and callable(getattr(policy, "decision_layers", None)):
        return check_compatible(policy, model)
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
    """The forward one :func:`apply` block runs: prefill through the reducer, decoding from its cache."""

    def __init__(
        self, reducer: Reducer, policy: Policy, budget: float | BudgetController | None, protect_last: int | None
    ) -> None:
        self.reducer, self.policy, self.budget, self.protect_last = reducer, policy, budget, protect_last
        self._local = threading.local()  # the reduced state a thread decodes from

    @property
    def state(self) -> ReductionState | ReductionBatch | None:
        """The calling thread's last reduced prefill: what its decoding steps extend."""
        return getattr(self._local, "state", None)

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
        state = self.state
        if state is not None and cache is state.cache:  # decoding from the reduced cache
            logits = self.reducer.extend(state, input_ids)
        else:  # new prompts: reduced prefill
            state, logits = self._prefill(input_ids, attention_mask, logits_to_keep)
            self._local.state = state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            logits = logits[:, -logits_to_keep:]
        return CausalLMOutputWithPast(logits=logits, cache=state.cache)

    def _prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, logits_to_keep: int | torch.Tensor
    ) -> tuple[ReductionState | ReductionBatch, torch.Tensor]:
        batched = input_ids.shape[0] > 1
        if not batched and attention_mask is not None and not bool(attention_mask.all()):
            input_ids = input_ids[:, attention_mask[0].bool()]  # one padded prompt: its real tokens
        if batched and logits_to_keep != 1:
            raise RLPruneError("rlprune.apply on a batch gives logits for each prompt's last token only")
        with _batch(self.budget):
            outs = self.reducer.run(
                input_ids,
                policy=self.policy,
                budget=self.budget,
                attention_mask=attention_mask if batched else None,
                protect_last=self.protect_last,
                logits="last" if logits_to_keep == 1 else "all",
            )
        outs = outs if batched else [outs]
        if isinstance(self.budget, BudgetController):
            self.budget.record(out.flops_ratio for out in outs)
        if batched:
            return ReductionBatch([out.state for out in outs]), torch.cat([out.logits for out in outs])
        return outs[0].state, outs[0].logits


@contextmanager
def _batch(budget: float | BudgetController | None) -> Iterator[None]:
    """A batch's run: in average mode, the controller forgets the batch's ratios if the run fails."""
    try:
        yield
    except BaseException:
        if isinstance(budget, BudgetController):
            budget.abandon()
        raise


def _warn_shortfall(controller: BudgetController | float | None, owned: bool, where: str, stacklevel: int) -> None:
    """Warn when a workload's own average budget ended off its target (a caller's controller spans
    more than one call, so only the caller can judge its mean)."""
    missed = controller.shortfall() if owned and isinstance(controller, BudgetController) else None
    if missed is not None:
        warnings.warn(f"{where}: {missed}", AverageBudgetWarning, stacklevel=stacklevel + 1)


@contextmanager
def apply(
    model: PreTrainedModel,
    policy: Policy | str | Path,
    budget: float | AverageBudget | BudgetController | None = 0.5,
    *,
    budget_mode: str | None = None,
    floor: float | None = None,
    ceiling: float | None = None,
    protect_last: int | None = None,
) -> Iterator[Reducer]:
    """Within the block, ``model.generate`` (and pipelines built on the model) run reduced.

    The reduction holds for calls made in the thread (or asyncio task) that entered the block; a call
    on the same model elsewhere runs the full model. Blocks nest and may exit in any order; when the
    last one on a model exits, the model has exactly the forward the first one found
    (:mod:`rlprune.dispatch`).

    Args:
        model: a supported causal LM.
        policy: a policy, a checkpoint folder, or a baseline spec such as ``"fastv:layer=2"``.
        budget: target prefill FLOPs ratio in (0, 1]; ``None`` lets baselines use their own ratio. An
            :class:`~rlprune.budget.AverageBudget`, or a :class:`~rlprune.budget.BudgetController` to keep
            one stream across blocks and read its realised mean, is an average budget.
        budget_mode: ``"prompt"`` (the default for a ratio) holds every prompt to ``budget``;
            ``"average"`` holds the mean over the prompts the block runs, each prompt at the ratio the
            policy proposes for it (:mod:`rlprune.budget`). ``"prompt"`` with an average budget is refused.
        floor, ceiling: in average mode, the lowest and highest ratio one prompt may get.
        protect_last: final prompt tokens never removed (default: the reducer's, 8).

    A block's own average budget that ends more than :data:`~rlprune.budget.AVERAGE_TOLERANCE` off its
    target warns (:class:`~rlprune.budget.AverageBudgetWarning`) with the reason.
    """
    owned = not isinstance(budget, BudgetController)
    budget = workload_budget(budget, budget_mode, floor=floor, ceiling=ceiling)
    protect_last = None if protect_last is None else check_int(protect_last, "protect_last", error=InvalidActionError)
    reducer = Reducer(model)
    policy = check_policy(policy, model)
    with dispatch.scope(model, _ReducedForward(reducer, policy, budget, protect_last)):
        yield reducer
    _warn_shortfall(budget, owned, "rlprune.apply", stacklevel=3)  # past contextlib, at the with statement


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | Sequence[str],
    *,
    policy: Policy | str | Path = "none",
    budget: float | AverageBudget | BudgetController | None = 0.5,
    budget_mode: str | None = None,
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
    :meth:`Reducer.generate`. ``budget``, ``budget_mode``, ``floor`` and ``ceiling`` are as in
    :func:`apply`; the prompts of a list form one batch, so an average budget holds over them.
    """
    owned = not isinstance(budget, BudgetController)
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
    with _batch(budget):
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
        _warn_shortfall(budget, owned, "rlprune.generate", stacklevel=2)
    answers = [tokenizer.decode(r.tokens[0], skip_special_tokens=True).strip() for r in results]
    return answers[0] if isinstance(prompt, str) else answers
