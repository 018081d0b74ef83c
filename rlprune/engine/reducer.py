"""The reducer: the one entry point of the reduced forward and decode path.

Every consumer (the Gymnasium environment, the inference plug-in, the evaluation harness and every
baseline) runs a model through :class:`Reducer`, so a policy behaves the same in training and at
inference. The reducer composes the engine's parts: checked inputs (:mod:`~rlprune.engine.inputs`),
per-row state (:mod:`~rlprune.engine.state`), the one layer loop (:mod:`~rlprune.engine.loop`),
FLOPs and KV accounting (:mod:`~rlprune.engine.accounting`) and decoding
(:mod:`~rlprune.engine.generate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from transformers import PreTrainedModel

from rlprune.adapters import adapter_for
from rlprune.engine import accounting, planning
from rlprune.engine import generate as decoding
from rlprune.engine.generate import GenerationResult
from rlprune.engine.inputs import (
    ActionSource,
    PromptChecker,
    Prompts,
    ReducerConfig,
    check_action,
    check_logits,
    decisions,
    per_row,
    prompt_options,
)
from rlprune.engine.loop import LayerLoop
from rlprune.engine.policy import Budget, Policy
from rlprune.engine.state import ReductionBatch, ReductionOutput, ReductionState, SharedCache, rows_of
from rlprune.errors import InvalidArgumentError, InvalidPromptError, UnsupportedModelError
from rlprune.reduction import LayerAction, ReductionPlan, ScoreContext
from rlprune.validate import check_flag, shown


class Reducer:
    """Runs a frozen causal LM with token reduction between decoder layers.

    Typical use::

        reducer = Reducer(model)
        state = reducer.start(input_ids, decision_layers=(2, 12))
        while not state.done:
            state = reducer.step(state, policy(state))
        out = reducer.finish(state)

    or, in one call, ``reducer.run(input_ids, policy=policy, budget=0.5)`` or ``reducer.run(input_ids, schedule)``.
    """

    def __init__(self, model: PreTrainedModel, config: ReducerConfig | None = None) -> None:
        if not isinstance(model, torch.nn.Module) or getattr(model, "config", None) is None:
            raise InvalidArgumentError(
                f"model must be a Hugging Face causal LM (load_model gives one), got {shown(model)}"
            )
        if config is not None and not isinstance(config, ReducerConfig):
            raise InvalidArgumentError(f"config must be a ReducerConfig or None, got {shown(config)}")
        self.adapter = adapter_for(model)
        kernel = getattr(model.config, "_attn_implementation", None) or "sdpa"
        if kernel != "sdpa":  # the reducer's masks leave plain causal attention to the SDPA kernel
            raise UnsupportedModelError(
                f"the model uses the {kernel!r} attention kernel; load it with attn_implementation='sdpa' "
                "(load_model's default)"
            )
        self.model = model
        self.config = config or ReducerConfig()
        self.layers = self.adapter.layers
        self.dims = self.adapter.dims()
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        self.inputs = PromptChecker(model, self.dims.vocab, self.dims.layers, self.max_positions)
        self.loop = LayerLoop(self.adapter, self.dims)
        ends = self.config.sentence_ends
        self._sentence_ends = None if ends is None else torch.tensor(ends, dtype=torch.long)

    # -- prefill ---------------------------------------------------------------------------

    @torch.no_grad()
    def start(
        self,
        input_ids: Prompts,
        *,
        attention_mask: Tensor | None = None,
        decision_layers: Sequence[int] | None = None,
        protect_last: int | Sequence[int] | None = None,
        prompt_length: int | Sequence[int] | None = None,
        resume_from: Tensor | Sequence[Tensor] | None = None,
    ) -> ReductionState | ReductionBatch:
        """Embed the prompt(s) and run the layers before the first decision layer.

        Args:
            input_ids: one prompt, optionally followed by a continuation to teacher-force, or
                several prompts (see :data:`Prompts`); several give a :class:`ReductionBatch`.
            attention_mask: for a padded ``(B, n)`` batch, which ids are real (left or right padding).
            decision_layers: where decisions are due (default: the reducer's config).
            protect_last: final prompt tokens never removed (default: the reducer's config); one
                number, or one per prompt.
            prompt_length: where the prompt ends when ``input_ids`` carries a continuation. The
                continuation is kept whole and ignored when choosing tokens, so its logits equal
                decoding it from the reduced prompt cache (one number, or one per prompt).
            resume_from: the full model's hidden state entering the first decision layer, from a
                cache (one per prompt for a batch); the layers before it are then skipped (and not
                cached, so such a state can be finished but not extended).
        """
        prompts, batched = self.inputs.prompts(input_ids, attention_mask)
        layers = self.inputs.layers(decision_layers, self.config.decision_layers)
        tails = per_row(protect_last, len(prompts), "protect_last")
        lengths = per_row(prompt_length, len(prompts), "prompt_length")
        resumes = per_row(resume_from, len(prompts), "resume_from") if batched else [resume_from]
        shared = SharedCache(self.adapter.new_cache())
        rows = []
        for row, (ids, tail, length) in enumerate(zip(prompts, tails, lengths, strict=True)):
            tail, length = prompt_options(ids.shape[1], tail, length, self.config)
            options = dict(protect_first=self.config.protect_first, protect_last=tail, prompt_length=length)
            rows.append(ReductionState.embedded(self.adapter, ids, shared, decision_layers=layers, row=row, **options))
        first = layers[0] if layers else self.dims.layers
        if any(hidden is not None for hidden in resumes):
            if any(hidden is None for hidden in resumes):
                raise InvalidPromptError("resume_from must give a hidden state for every prompt of the batch or none")
            for row, hidden in zip(rows, resumes, strict=True):
                self.loop.resume(row, hidden, first)
        self.loop.advance(rows, first)
        return ReductionBatch(rows) if batched else rows[0]

    @torch.no_grad()
    def step(
        self,
        state: ReductionState | ReductionBatch,
        action: LayerAction | Sequence[LayerAction] | None = None,
        *,
        advance: bool = True,
    ) -> ReductionState | ReductionBatch:
        """Apply ``action`` before the next decision layer, then run up to the following one.

        For a batch, ``action`` is one action for every row or a sequence with one per row. With
        ``advance=False`` the layers after the *last* decision are left for :meth:`finish`.
        """
        if not isinstance(state, (ReductionState, ReductionBatch)):
            raise InvalidArgumentError(f"state must be what start() or step() returned, got {shown(state)}")
        advance = check_flag(advance, "advance")
        rows = rows_of(state)
        if rows[0].done:
            raise RuntimeError("no decision layer is left; call finish()")
        actions = per_row(action, len(rows), "action")
        restarting = []
        for row, chosen in zip(rows, actions, strict=True):
            chosen = check_action(chosen)
            plan = self.plan(row, chosen)
            row.apply(plan)
            row.decided(chosen, plan.flops)
            if plan.restart and len(plan):
                restarting.append(row)
        if restarting:
            self.loop.restart(rows, restarting)
        if not rows[0].done or advance:
            self.loop.advance(rows, rows[0].next_decision if not rows[0].done else self.dims.layers)
        return state

    @torch.no_grad()
    def plan(self, state: ReductionState, action: LayerAction) -> ReductionPlan:
        """Which tokens ``action`` removes before layer ``state.layer`` (and where merged ones go)."""
        return planning.plan(self.adapter, self.dims, self.config, self._sentence_ends, state, action)

    def choice_flops(self, action: LayerAction, tokens: int, count: int, window: int, layer: int = 0) -> float:
        """What ``action`` charges at decision layer ``layer`` for removing ``count`` of ``tokens`` prompt
        tokens: its op's price (scoring, merge matching, layers run again)."""
        merge_window = self.config.merge_window
        return accounting.choice_flops(self.dims, action, tokens, count, window, merge_window, layer)

    def project_flops(self, state: ReductionState, schedule: Mapping[int, LayerAction] | None = None) -> float:
        """Prefill FLOPs of the prompt if ``schedule`` is applied from now on and nothing else removed.

        The one FLOPs projection: :meth:`plan` and the layer accounting use the same pieces, so a
        baseline solving for a budget, a policy turning a share into a token count and the reducer
        agree to the FLOP.
        """
        window = self.config.query_window(state.protect_last)
        return accounting.project_flops(self.dims, state, schedule, window, self.config.merge_window)

    @torch.no_grad()
    def score_context(self, state: ReductionState) -> ScoreContext:
        """What scorers (and policy features) see of the prompt tokens before the next layer.

        A teacher-forced continuation is left out, so it never influences which tokens go.
        """
        return planning.score_context(self.adapter, self.config, state)

    def projected_kv_ratio(self, state: ReductionState) -> float:
        """The prompt's KV-cache size over the full model's if nothing else is removed from now on."""
        return accounting.projected_kv_ratio(self.dims, state)

    def projected_flops(self, state: ReductionState) -> float:
        """Prefill FLOPs of the prompt if no further token is removed (spent so far plus the rest)."""
        return self.project_flops(state)

    def full_flops(self, state: ReductionState) -> float:
        """Prefill FLOPs of the prompt without reduction (with logits for its last position)."""
        return accounting.full_flops(self.dims, state)

    @torch.no_grad()
    def finish(
        self, state: ReductionState | ReductionBatch, logits: str = "last"
    ) -> ReductionOutput | list[ReductionOutput]:
        """Run the remaining layers (undecided ones keep every token) and the LM head.

        Args:
            logits: ``"last"`` for the final position only (generation), ``"all"`` for every
                token still carried at the top of the model, ``"continuation"`` for the positions
                that predict each teacher-forced token (the prompt's last and the continuation's
                all but last).

        Returns one output per row for a batch.
        """
        check_logits(logits)
        rows = rows_of(state)
        for row in rows:
            row.decisions_made = len(row.decision_layers)
        self.loop.advance(rows, self.dims.layers)
        outputs = self.loop.head(rows, logits)
        return outputs if isinstance(state, ReductionBatch) else outputs[0]

    def run(
        self,
        input_ids: Prompts,
        actions: ActionSource = None,
        *,
        policy: Policy | None = None,
        budget: Budget = None,
        attention_mask: Tensor | None = None,
        logits: str = "last",
        decision_layers: Sequence[int] | None = None,
        protect_last: int | Sequence[int] | None = None,
        prompt_length: int | None = None,
        resume_from: Tensor | None = None,
    ) -> ReductionOutput | list[ReductionOutput]:
        """A whole reduced prefill (one output per prompt for several), decided by ``policy`` at ``budget``
        (a ratio in (0, 1], ``None`` for the policy's own, or a :class:`~rlprune.budget.BudgetController`:
        :mod:`rlprune.engine.policy`), by ``actions`` (a schedule ``{layer: action}``, or a callable deciding
        per row at each of ``decision_layers``) or by nothing (the full model). The other keyword
        arguments are those of :meth:`start` and :meth:`finish`.
        """
        check_logits(logits)  # before the prefill, not after it
        state = self.select(
            input_ids,
            actions,
            policy=policy,
            budget=budget,
            attention_mask=attention_mask,
            decision_layers=decision_layers,
            protect_last=protect_last,
            prompt_length=prompt_length,
            resume_from=resume_from,
        )
        return self.finish(state, logits=logits)

    @torch.no_grad()
    def select(
        self,
        input_ids: Prompts,
        actions: ActionSource = None,
        *,
        policy: Policy | None = None,
        budget: Budget = None,
        attention_mask: Tensor | None = None,
        decision_layers: Sequence[int] | None = None,
        protect_last: int | Sequence[int] | None = None,
        prompt_length: int | None = None,
        resume_from: Tensor | None = None,
    ) -> ReductionState | ReductionBatch:
        """Every decision of :meth:`run`, without the layers after the last one.

        The state then says which tokens survive (:meth:`ReductionState.reaches_top`) and what the
        whole prefill costs (:meth:`project_flops`): all an evidence measure needs, at a fraction of
        the time. :meth:`finish` completes it into exactly what :meth:`run` returns.
        """
        decision_layers, decide = decisions(self, actions, decision_layers, policy, budget)
        state = self.start(
            input_ids,
            attention_mask=attention_mask,
            decision_layers=decision_layers,
            protect_last=protect_last,
            prompt_length=prompt_length,
            resume_from=resume_from,
        )
        decide_rows = getattr(decide, "decide_rows", None)  # average budgets: a batch's rows get their ratios together
        while not state.done:
            rows = rows_of(state)
            state = self.step(state, decide_rows(rows) if decide_rows else [decide(row) for row in rows], advance=False)
        return state

    # -- decoding --------------------------------------------------------------------------

    @torch.no_grad()
    def extend(self, state: ReductionState | ReductionBatch, token_ids: Tensor | Sequence[int]) -> Tensor:
        """Feed new tokens through every layer on top of the reduced cache; returns their logits.

        One token is a decoding step; several are teacher forcing (each sees the earlier ones).
        For a batch, ``token_ids`` is ``(B, m)``: the same number of new tokens for every row.
        """
        return decoding.extend(self.loop, rows_of(state), token_ids, self.max_positions)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Prompts,
        actions: ActionSource = None,
        *,
        policy: Policy | None = None,
        budget: Budget = None,
        attention_mask: Tensor | None = None,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        eos_token_id: int | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        decision_layers: Sequence[int] | None = None,
        protect_last: int | Sequence[int] | None = None,
    ) -> GenerationResult | list[GenerationResult]:
        """Reduced prefill, then decoding from the reduced per-layer cache until EOS or the limit.

        The prefill is decided as in :meth:`run`. Several prompts decode together, one result each; a
        row that reached EOS is fed its last token until every row is done, and its result stops at its EOS.
        """
        return decoding.generate(
            self,
            input_ids,
            actions,
            policy=policy,
            budget=budget,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            eos_token_id=eos_token_id,
            generator=generator,
            decision_layers=decision_layers,
            protect_last=protect_last,
        )
