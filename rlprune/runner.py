"""The one reduced forward and decode path.

Every consumer (the Gymnasium environment, the inference plug-in, the evaluation harness and every
baseline) runs a model through :class:`Reducer`, so a policy behaves the same in training and at
inference. The reducer calls the model's own decoder layers on the tokens that remain, with their
*original* position ids (rotary embeddings stay correct), an attention mask built from original
positions, and a per-layer KV cache whose length may differ from layer to layer. Every model detail
comes from the family's :class:`~rlprune.adapters.ModelAdapter`, on whatever device and dtype the
model is.

Several prompts run as one batch (:class:`ReductionBatch`): each row is its own
:class:`ReductionState` (its tokens, its decisions, its accounting), and between decisions the
rows are padded together so every decoder layer runs once for the whole batch, writing one shared
KV cache whose unused slots the masks hide (:class:`SharedCache`). A single prompt is a batch of
one with nothing padded, so it takes exactly the path it always took.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rlprune import flops
from rlprune.adapters import Rope, adapter_for
from rlprune.errors import InvalidActionError, InvalidArgumentError, InvalidPromptError, UnsupportedModelError
from rlprune.reduction import (
    KEEP,
    SCORERS,
    LayerAction,
    ReductionPlan,
    ScoreContext,
    apply_plan,
    match_merge_targets,
    select_least_important,
    track_owners,
    unit_ids,
    unit_ranking,
)
from rlprune.timing import Stopwatch
from rlprune.validate import check_flag, check_int, check_number, is_integer, shown


def removal_count(action: LayerAction, removable: int) -> int:
    """How many of ``removable`` tokens ``action`` removes."""
    return 0 if action.is_noop else round(action.ratio * removable)


ActionSource = Mapping[int, LayerAction] | Callable[["ReductionState"], LayerAction] | None
"""A fixed schedule ``{layer: action}``, or a callable deciding at each decision layer (per row)."""

Prompts = Tensor | Sequence[int] | Sequence[Sequence[int] | Tensor]
"""One prompt (ids, shape ``(n,)`` or ``(1, n)``) or several: a list of id sequences, or a
``(B, n)`` tensor (with an ``attention_mask`` where it is padded, on either side)."""


def check_schedule(schedule: Mapping[int, LayerAction], num_layers: int) -> None:
    """A schedule maps layer numbers (ints) to :class:`LayerAction`: say so before a layer runs."""
    for layer, action in schedule.items():
        if not is_integer(layer):
            raise InvalidActionError(
                f"schedule keys are layer numbers (ints), got {layer!r}; write {{2: LayerAction('prune', 0.5)}} "
                "or use parse_schedule('2:prune:0.5')"
            )
        if not isinstance(action, LayerAction):
            raise InvalidActionError(f"the schedule's action at layer {layer} is {action!r}, not a LayerAction")


@dataclass(frozen=True)
class ReducerConfig:
    """How tokens are protected and scored; shared by every run of a :class:`Reducer`.

    Attributes:
        protect_first: the first tokens (attention sinks) that are never removed.
        protect_last: the last tokens (question and generation prompt) that are never removed;
            a prompt can override it in :meth:`Reducer.start`.
        window: how many final tokens act as queries for the ``attention`` scorer; ``None`` uses
            the protected tail.
        pool: max-pooling width over attention scores, so whole spans survive together (an
            action's own :class:`~rlprune.reduction.Pool` overrides it).
        merge_window: how many of the following receivable tokens a merged token may join.
        decision_layers: layers where a policy decides; ``None`` means every layer from 1.
        sentence_ends: token ids that end a sentence or a line, for actions with ``unit="sentence"``
            (:func:`~rlprune.reduction.sentence_end_ids` finds them in a tokenizer).
    """

    protect_first: int = 1
    protect_last: int = 8
    window: int | None = None
    pool: int = 9
    merge_window: int = 8
    decision_layers: tuple[int, ...] | None = None
    sentence_ends: tuple[int, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("protect_first", "protect_last", "pool", "merge_window"):
            minimum = 0 if name.startswith("protect") else 1
            check_int(getattr(self, name), f"ReducerConfig.{name}", minimum=minimum, error=InvalidActionError)
        if self.window is not None:
            check_int(self.window, "ReducerConfig.window", minimum=1, error=InvalidActionError)


@dataclass
class ReductionState:
    """A prompt part-way through the reduced prefill, then through decoding.

    The reducer updates it in place. Tokens are always kept in their original order.
    """

    input_ids: Tensor  # (1, sequence): the prompt, then any teacher-forced continuation
    hidden: Tensor  # (1, n, hidden): residual stream entering layer ``layer``
    positions: Tensor  # (n,) original position of each carried token
    sizes: Tensor  # (n,) float: original tokens each carried token stands for (merges)
    rope: Rope  # per rope kind: cos, sin for every input position, (1, sequence, head_dim)
    shared: SharedCache  # the batch's KV cache; this prompt is row ``row`` of it
    decision_layers: tuple[int, ...]
    protect_first: int
    protect_last: int
    prompt_length: int  # tokens before the continuation; only these are ever scored or removed
    resumed: bool = False  # started from a cached hidden state: early layers have no KV cache
    merged: bool = False  # some carried token stands for several (its keys get a log-size bias)
    layer: int = 0  # next layer to run
    decisions_made: int = 0
    row: int = 0
    kv_counts: list[int] = field(default_factory=list)  # per layer: keys this row has in the cache
    tokens_per_layer: list[int] = field(default_factory=list)
    actions: dict[int, LayerAction] = field(default_factory=dict)
    flops: float = 0.0  # prefill FLOPs so far, scoring included
    decode_flops: float = 0.0
    next_position: int = 0  # position id of the next token fed after the prompt
    owners: Tensor | None = None  # (sequence,) per input token: position of the carried token holding it, or -1

    def reaches_top(self) -> Tensor:
        """Bool ``(sequence,)``: whether each input token's content is still carried (kept, or merged
        into a kept token). After :meth:`Reducer.finish` it says what reached the last layer."""
        if self.owners is None:
            return torch.ones(self.input_ids.shape[1], dtype=torch.bool, device=self.input_ids.device)
        return self.owners >= 0

    @property
    def continuation_length(self) -> int:
        """Teacher-forced tokens after the prompt (always kept, never used to choose tokens)."""
        return int(self.input_ids.shape[1]) - self.prompt_length

    @property
    def n_tokens(self) -> int:
        return int(self.positions.numel())

    @property
    def n_prompt_tokens(self) -> int:
        """Carried tokens that belong to the prompt."""
        return self.n_tokens - self.continuation_length

    @property
    def next_decision(self) -> int | None:
        """The layer where the next decision is due, or ``None`` when all are made."""
        if self.decisions_made < len(self.decision_layers):
            return self.decision_layers[self.decisions_made]
        return None

    @property
    def done(self) -> bool:
        """No decision is left to make."""
        return self.next_decision is None

    def protected(self) -> Tensor:
        """Bool mask over carried tokens that may never be removed."""
        tail_start = self.prompt_length - self.protect_last
        return (self.positions < self.protect_first) | (self.positions >= tail_start)

    def removable(self) -> Tensor:
        return ~self.protected()

    def log_sizes(self) -> Tensor | None:
        """``log(size)`` per carried token for proportional attention, ``None`` when none was merged."""
        return self.sizes.log() if self.merged else None

    def cache_lengths(self) -> list[int]:
        return list(self.kv_counts)

    @property
    def cache(self) -> DynamicCache:
        """The KV cache this prompt decodes from (shared with the other rows of its batch)."""
        return self.shared.cache


@dataclass
class SharedCache:
    """One KV cache for the rows of a batch, with where each of its slots came from.

    Rows keep different numbers of tokens, so a layer's cache is ``(B, heads, slots, head_dim)``
    and some slots of a row are padding: ``key_valid`` marks the used ones and the masks hide the
    rest. Windows are applied by the masks too, so the cache never drops an entry on its own.
    """

    cache: DynamicCache
    key_positions: list[Tensor] = field(default_factory=list)  # per layer (B, slots): original positions
    key_valid: list[Tensor | None] = field(default_factory=list)  # per layer (B, slots); None: all used
    key_log_sizes: list[Tensor | None] = field(default_factory=list)  # per layer (B, slots); None: no merges


@dataclass
class ReductionBatch:
    """Several prompts reduced together: each row decides for itself, layers run once for all rows."""

    rows: list[ReductionState]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, index: int) -> ReductionState:
        return self.rows[index]

    @property
    def layer(self) -> int:
        return self.rows[0].layer

    @property
    def next_decision(self) -> int | None:
        return self.rows[0].next_decision

    @property
    def done(self) -> bool:
        return self.rows[0].done

    @property
    def cache(self) -> DynamicCache:
        return self.rows[0].shared.cache


@dataclass
class ReductionOutput:
    """The result of a reduced prefill: logits, the reduced cache and the accounting."""

    logits: Tensor  # (1, positions, vocab): see Reducer.finish
    logit_positions: Tensor  # original positions the logits were computed at
    state: ReductionState
    dims: flops.ModelDims

    @property
    def cache(self) -> DynamicCache:
        return self.state.cache

    @property
    def tokens_per_layer(self) -> list[int]:
        return list(self.state.tokens_per_layer)

    @property
    def flops(self) -> float:
        """Prefill FLOPs of the prompt, token scoring included (a continuation counts as decoding)."""
        return self.state.flops

    @property
    def flops_full(self) -> float:
        """Prefill FLOPs of the unreduced model for the same prompt and prompt logits."""
        prompt_logits = int((self.logit_positions < self.state.prompt_length).sum())
        return flops.full_prefill_flops(self.dims, self.state.prompt_length, prompt_logits)

    @property
    def flops_ratio(self) -> float:
        return self.flops / self.flops_full

    @property
    def kv_bytes(self) -> int:
        """Bytes of the prompt's reduced KV cache."""
        prompt_tokens = [n - self.state.continuation_length for n in self.state.tokens_per_layer]
        return flops.kv_cache_bytes(self.dims, prompt_tokens)

    @property
    def kv_bytes_full(self) -> int:
        return flops.kv_cache_bytes(self.dims, [self.state.prompt_length] * self.dims.layers)


@dataclass
class GenerationResult:
    """New tokens from :meth:`Reducer.generate` and the prefill they continued from."""

    tokens: Tensor  # (1, new) generated ids, EOS included when reached
    prefill: ReductionOutput
    stopped_at_eos: bool
    prefill_seconds: float = 0.0  # wall time of the reduced prefill (policy decisions included)
    decode_seconds: float = 0.0  # wall time of the decoding steps after the first token

    @property
    def decode_tokens_per_second(self) -> float | None:
        """Tokens decoded per second from the cache (the first token comes from the prefill)."""
        steps = self.tokens.shape[1] - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds > 0 else None

    @property
    def sequences(self) -> Tensor:
        """Prompt followed by the generated tokens, like ``model.generate`` returns."""
        return torch.cat((self.prefill.state.input_ids, self.tokens), dim=1)


class Reducer:
    """Runs a frozen causal LM with token reduction between decoder layers.

    Typical use::

        reducer = Reducer(model)
        state = reducer.start(input_ids, decision_layers=(2, 12))
        while not state.done:
            state = reducer.step(state, policy(state))
        out = reducer.finish(state)

    or, in one call, ``reducer.run(input_ids, {2: LayerAction("prune", 0.5)})``.
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
        prompts, batched = self._prompts(input_ids, attention_mask)
        layers = self._validate_layers(decision_layers)
        tails = self._per_row(protect_last, len(prompts), "protect_last")
        lengths = self._per_row(prompt_length, len(prompts), "prompt_length")
        resumes = self._per_row(resume_from, len(prompts), "resume_from") if batched else [resume_from]
        shared = SharedCache(self.adapter.new_cache())
        rows = []
        for row, (ids, tail, length) in enumerate(zip(prompts, tails, lengths, strict=True)):
            n = ids.shape[1]
            length = n if length is None else check_int(length, "prompt_length", minimum=1, error=InvalidPromptError)
            tail = (
                self.config.protect_last if tail is None else check_int(tail, "protect_last", error=InvalidActionError)
            )
            if not 1 <= length <= n:
                raise InvalidPromptError(f"prompt_length must lie in [1, {n}], got {length}")
            positions = torch.arange(n, device=ids.device)
            hidden = self.adapter.embed(ids)
            state = ReductionState(
                input_ids=ids,
                hidden=hidden,
                positions=positions,
                sizes=torch.ones(n, device=ids.device),
                rope=self.adapter.rotary(hidden, positions),
                shared=shared,
                decision_layers=layers,
                protect_first=self.config.protect_first,
                protect_last=tail,
                prompt_length=length,
                next_position=n,
                row=row,
                owners=positions.clone(),
            )
            rows.append(state)
        first = layers[0] if layers else self.dims.layers
        if any(hidden is not None for hidden in resumes):
            if any(hidden is None for hidden in resumes):
                raise InvalidPromptError("resume_from must give a hidden state for every prompt of the batch or none")
            for row, hidden in zip(rows, resumes, strict=True):
                self._resume(row, hidden, first)
        self._advance(rows, first)
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
        rows = self._rows(state)
        if rows[0].done:
            raise RuntimeError("no decision layer is left; call finish()")
        actions = self._per_row(action, len(rows), "action")
        for row, chosen in zip(rows, actions, strict=True):
            chosen = KEEP if chosen is None else chosen
            if not isinstance(chosen, LayerAction):
                raise InvalidActionError(f"expected a LayerAction, got {type(chosen).__name__}")
            plan = self.plan(row, chosen)
            if len(plan):
                row.owners = track_owners(row.owners, row.positions, plan)
                row.hidden, row.positions, row.sizes = apply_plan(row.hidden, row.positions, row.sizes, plan)
                row.merged |= plan.into is not None
            row.flops += plan.flops
            row.actions[row.layer] = chosen
            row.decisions_made += 1
        if not rows[0].done or advance:
            self._advance(rows, rows[0].next_decision if not rows[0].done else self.dims.layers)
        return state

    @torch.no_grad()
    def plan(self, state: ReductionState, action: LayerAction) -> ReductionPlan:
        """Which tokens ``action`` removes before layer ``state.layer`` (and where merged ones go)."""
        removable = state.removable()
        count = removal_count(action, int(removable.sum()))
        if count == 0:
            return ReductionPlan.empty(state.positions.device)
        context = self.score_context(state)
        tail = context.normed.new_full((state.continuation_length,), float("inf"))  # a continuation stays
        if action.token_scores is not None:
            scores = action.token_scores.to(device=tail.device, dtype=tail.dtype)
            if scores.shape != (state.n_prompt_tokens,):
                raise InvalidActionError(
                    f"token_scores has shape {tuple(scores.shape)}; expected ({state.n_prompt_tokens},), one per "
                    "prompt token carried into the layer"
                )
            scores = scores if action.pool is None else action.pool.apply(scores)
        else:
            scores = SCORERS[action.scorer].score(context, action.pool)
        units = unit_ids(action.unit, context.positions, state.input_ids[0], self._sentence_ends)
        scores = unit_ranking(scores, units)
        remove = select_least_important(torch.cat((scores.to(tail.dtype), tail)), removable, count)
        cost = self.choice_flops(action, state.n_prompt_tokens, len(remove), context.window)
        if action.op == "prune":
            return ReductionPlan(remove, flops=cost)
        can_receive = removable[: state.n_prompt_tokens].clone()
        can_receive[remove] = False
        into = match_merge_targets(context.normed[0], remove, can_receive, self.config.merge_window)
        return ReductionPlan(remove, into, flops=cost)

    def choice_flops(self, action: LayerAction, tokens: int, count: int, window: int) -> float:
        """What choosing ``count`` of ``tokens`` prompt tokens to remove costs (scoring, merge matching)."""
        if count == 0:
            return 0.0
        cost = SCORERS[action.scorer].flops(self.dims, tokens, window)
        if action.op == "merge":
            cost += flops.merge_match_flops(self.dims, count, self.config.merge_window)
        return cost

    def project_flops(self, state: ReductionState, schedule: Mapping[int, LayerAction] | None = None) -> float:
        """Prefill FLOPs of the prompt if ``schedule`` is applied from now on and nothing else removed.

        The one FLOPs projection: :meth:`plan` and the layer accounting use the same pieces, so a
        baseline solving for a budget, a policy turning a share into a token count and the reducer
        agree to the FLOP.
        """
        schedule = schedule or {}
        dims, window = self.dims, self.config.window or max(state.protect_last, 1)
        total, layer = state.flops, state.layer
        n, removable = state.n_prompt_tokens, int(state.removable().sum())
        for at in sorted(k for k in schedule if k >= state.layer):
            total += flops.layers_flops(dims, layer, at, n)
            action, layer = schedule[at], at
            count = removal_count(action, removable)
            total += self.choice_flops(action, n, count, window)
            n, removable = n - count, removable - count
        return total + flops.layers_flops(dims, layer, dims.layers, n) + flops.lm_head_flops(dims, 1)

    @torch.no_grad()
    def score_context(self, state: ReductionState) -> ScoreContext:
        """What scorers (and policy features) see of the prompt tokens before the next layer.

        A teacher-forced continuation is left out, so it never influences which tokens go.
        """
        p = state.n_prompt_tokens
        positions, log_sizes = state.positions[:p], state.log_sizes()
        cos, sin = state.rope[self.adapter.rope_kinds[state.layer]]
        return ScoreContext(
            adapter=self.adapter,
            layer=state.layer,
            normed=self.adapter.input_norm(state.layer, state.hidden[:, :p]),
            positions=positions,
            log_sizes=None if log_sizes is None else log_sizes[:p],
            cos=cos[:, positions],
            sin=sin[:, positions],
            window=self.config.window or max(state.protect_last, 1),
            pool=self.config.pool,
        )

    def projected_kv_ratio(self, state: ReductionState) -> float:
        """The prompt's KV-cache size over the full model's if nothing else is removed from now on."""
        run = [n - state.continuation_length for n in state.tokens_per_layer]
        tokens = run + [state.n_prompt_tokens] * (self.dims.layers - len(run))
        full = [state.prompt_length] * self.dims.layers
        return flops.kv_cache_bytes(self.dims, tokens) / flops.kv_cache_bytes(self.dims, full)

    def projected_flops(self, state: ReductionState) -> float:
        """Prefill FLOPs of the prompt if no further token is removed (spent so far plus the rest)."""
        return self.project_flops(state)

    def full_flops(self, state: ReductionState) -> float:
        """Prefill FLOPs of the prompt without reduction (with logits for its last position)."""
        return flops.full_prefill_flops(self.dims, state.prompt_length)

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
        self._check_logits(logits)
        rows = self._rows(state)
        for row in rows:
            row.decisions_made = len(row.decision_layers)
        self._advance(rows, self.dims.layers)
        if logits == "last":  # one LM-head call for every row's final token
            last = torch.cat([row.hidden[:, -1:] for row in rows]) if len(rows) > 1 else rows[0].hidden[:, -1:]
            heads = self.adapter.logits(last).split(1)
            indices = [slice(-1, None)] * len(rows)
        else:
            indices = [self._logit_index(row, logits) for row in rows]
            heads = [self.adapter.logits(row.hidden[:, index]) for row, index in zip(rows, indices, strict=True)]
        outputs = []
        for row, index, out in zip(rows, indices, heads, strict=True):
            positions = row.positions[index]
            in_prompt = int((positions < row.prompt_length).sum())
            row.flops += flops.lm_head_flops(self.dims, in_prompt)
            row.decode_flops += flops.lm_head_flops(self.dims, positions.numel() - in_prompt)
            outputs.append(ReductionOutput(logits=out, logit_positions=positions, state=row, dims=self.dims))
        return outputs if isinstance(state, ReductionBatch) else outputs[0]

    @staticmethod
    def _check_logits(logits: object) -> None:
        if not isinstance(logits, str) or logits not in ("last", "all", "continuation"):
            raise InvalidArgumentError(f"logits must be 'last', 'all' or 'continuation', got {shown(logits)}")

    @staticmethod
    def _logit_index(row: ReductionState, logits: str) -> slice:
        if logits == "all":
            return slice(None)
        m = row.continuation_length
        if m == 0:
            raise InvalidArgumentError("logits='continuation' needs a continuation: pass prompt_length to start()")
        return slice(-m - 1, -1)

    def run(
        self,
        input_ids: Prompts,
        actions: ActionSource = None,
        *,
        attention_mask: Tensor | None = None,
        logits: str = "last",
        decision_layers: Sequence[int] | None = None,
        protect_last: int | Sequence[int] | None = None,
        prompt_length: int | None = None,
        resume_from: Tensor | None = None,
    ) -> ReductionOutput | list[ReductionOutput]:
        """A whole reduced prefill: a schedule ``{layer: action}`` or a callable deciding per layer
        (and per row, for several prompts, which then give one output each).

        Keyword arguments are those of :meth:`start` and :meth:`finish`.
        """
        self._check_logits(logits)  # before the prefill, not after it
        state = self.select(
            input_ids,
            actions,
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
        if isinstance(actions, Mapping):
            if decision_layers is not None:
                raise ValueError("a schedule fixes its own decision layers; do not pass decision_layers")
            check_schedule(actions, self.dims.layers)
            decision_layers = sorted(actions)
            decide: Callable[[ReductionState], LayerAction] = lambda s: actions[s.layer]  # noqa: E731
        elif actions is None:
            decision_layers, decide = (), lambda s: KEEP
        elif callable(actions):
            decide = actions
        else:
            raise InvalidActionError(
                f"actions must be a {{layer: LayerAction}} mapping or a callable, got {type(actions).__name__}"
            )
        state = self.start(
            input_ids,
            attention_mask=attention_mask,
            decision_layers=decision_layers,
            protect_last=protect_last,
            prompt_length=prompt_length,
            resume_from=resume_from,
        )
        while not state.done:
            state = self.step(state, [decide(row) for row in self._rows(state)], advance=False)
        return state

    # -- decoding --------------------------------------------------------------------------

    @torch.no_grad()
    def extend(self, state: ReductionState | ReductionBatch, token_ids: Tensor | Sequence[int]) -> Tensor:
        """Feed new tokens through every layer on top of the reduced cache; returns their logits.

        One token is a decoding step; several are teacher forcing (each sees the earlier ones).
        For a batch, ``token_ids`` is ``(B, m)``: the same number of new tokens for every row.
        """
        rows = self._rows(state)
        if rows[0].layer < self.dims.layers:
            raise RuntimeError("finish() the prefill before extending it")
        if rows[0].resumed:
            raise RuntimeError("a state resumed from a cached hidden state has no cache for its first layers")
        ids = torch.as_tensor(token_ids, device=rows[0].input_ids.device).reshape(len(rows), -1)
        m = ids.shape[1]
        furthest = max(row.next_position for row in rows) + m
        if furthest > self.max_positions > 0:
            raise InvalidPromptError(f"{furthest} positions exceed the model's limit of {self.max_positions}")
        offsets = torch.arange(m, device=ids.device)
        positions = torch.stack([offsets + row.next_position for row in rows])
        hidden = self.adapter.embed(ids)
        rope = self.adapter.rotary(hidden, positions)
        for i in range(self.dims.layers):
            cached = [row.kv_counts[i] for row in rows]
            hidden = self._run_layer(rows, i, hidden, positions, None, None, rope, [m] * len(rows), furthest - 1)
            for row, count in zip(rows, cached, strict=True):
                row.decode_flops += flops.layer_flops(self.dims, m, count, layer=i)
        for row in rows:
            row.next_position += m
            row.decode_flops += flops.lm_head_flops(self.dims, m)
        return self.adapter.logits(hidden)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Prompts,
        actions: ActionSource = None,
        *,
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

        Several prompts decode together, one result each; a row that reached EOS is fed its
        last token until every row is done, and its result stops at its EOS.
        """
        max_new_tokens = check_int(max_new_tokens, "max_new_tokens", minimum=1)
        do_sample = check_flag(do_sample, "do_sample")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InvalidArgumentError(f"generator must be a torch.Generator or None, got {shown(generator)}")
        stop = set(self._eos_ids(eos_token_id))
        prompts, batched = self._prompts(input_ids, attention_mask)
        longest = max(ids.shape[1] for ids in prompts)
        if self.max_positions and longest + max_new_tokens > self.max_positions:
            raise InvalidPromptError(
                f"prompt ({longest} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the model's "
                f"{self.max_positions} positions; shorten the prompt or ask for fewer tokens"
            )
        warpers = self._warpers(temperature, top_k, top_p) if do_sample else None  # bad settings fail first
        clock = Stopwatch(self.model.device)
        prefills = self.run(
            prompts if batched else prompts[0], actions, decision_layers=decision_layers, protect_last=protect_last
        )
        prefills = prefills if batched else [prefills]
        prefill_seconds = clock.lap()
        stop_ids = torch.tensor(sorted(stop), device=prompts[0].device)
        logits = torch.cat([out.logits[:, -1] for out in prefills])
        state = ReductionBatch([out.state for out in prefills]) if batched else prefills[0].state
        new: list[Tensor] = []
        finished = torch.zeros(len(prompts), dtype=torch.bool, device=logits.device)
        for i in range(max_new_tokens):
            token = self._choose(logits, warpers, generator)
            if new:
                token = torch.where(finished, new[-1], token)  # a finished row repeats its last token
            new.append(token)
            if stop:
                finished |= torch.isin(token, stop_ids)
            if i == max_new_tokens - 1 or (stop and bool(finished.all())):  # no device sync without an EOS
                break
            logits = self.extend(state, token[:, None])[:, -1]
        decode_seconds = clock.lap()
        tokens = torch.stack(new, dim=1)
        results = [
            self._result(tokens[b : b + 1], stop, out, prefill_seconds, decode_seconds)
            for b, out in enumerate(prefills)
        ]
        return results if batched else results[0]

    @staticmethod
    def _result(
        tokens: Tensor, stop: set[int], prefill: ReductionOutput, prefill_seconds: float, decode_seconds: float
    ) -> GenerationResult:
        """One row's tokens, cut after its first EOS."""
        ids = tokens[0].tolist()
        end = next((i + 1 for i, t in enumerate(ids) if t in stop), len(ids))
        return GenerationResult(
            tokens=tokens[:, :end],
            prefill=prefill,
            stopped_at_eos=ids[end - 1] in stop,
            prefill_seconds=prefill_seconds,
            decode_seconds=decode_seconds,
        )

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _rows(state: ReductionState | ReductionBatch) -> list[ReductionState]:
        return state.rows if isinstance(state, ReductionBatch) else [state]

    @staticmethod
    def _per_row(value, rows: int, name: str) -> list:
        """``value`` for every row, or its items when it is a sequence with one per row."""
        if isinstance(value, Sequence) and not isinstance(value, (str, LayerAction)):
            if len(value) != rows:
                raise InvalidActionError(f"{name} has {len(value)} items for {rows} prompt(s); give one per prompt")
            return list(value)
        return [value] * rows

    def _prompts(self, input_ids: Prompts, attention_mask: Tensor | None) -> tuple[list[Tensor], bool]:
        """Each prompt as a validated ``(1, n)`` tensor, and whether several were given."""
        if attention_mask is not None and not (
            isinstance(attention_mask, Tensor) and isinstance(input_ids, Tensor) and input_ids.dim() == 2
        ):
            raise InvalidPromptError(
                "attention_mask goes with a (B, n) tensor of input_ids, as a tensor of the same shape; "
                "leave it out for a list of prompts"
            )
        if (
            isinstance(input_ids, Tensor)
            and input_ids.dim() == 2
            and (input_ids.shape[0] > 1 or attention_mask is not None)
        ):
            if attention_mask is not None:
                if attention_mask.shape != input_ids.shape:
                    raise InvalidPromptError(
                        f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)}"
                    )
                keep = attention_mask.bool().cpu()
                return [
                    self._validate_ids(ids[mask.to(ids.device)]) for ids, mask in zip(input_ids, keep, strict=True)
                ], True
            return [self._validate_ids(ids) for ids in input_ids], True
        if isinstance(input_ids, (list, tuple)) and input_ids:
            first = input_ids[0]  # a number (or a 0-d tensor) starts one prompt; anything else is a row
            if not isinstance(first, numbers.Number) and not (isinstance(first, Tensor) and first.dim() == 0):
                return [self._validate_ids(ids) for ids in input_ids], True
        return [self._validate_ids(input_ids)], False

    def _advance(self, rows: list[ReductionState], stop: int) -> None:
        """Run the prefill through layers ``rows[0].layer .. stop - 1``: every row's carried tokens,
        padded together, through each layer once."""
        if rows[0].layer >= stop:
            return
        hidden, positions, valid, log_sizes, rope = self._pad(rows)
        counts = [row.n_tokens for row in rows]
        last_position = max(row.next_position for row in rows) - 1
        while rows[0].layer < stop:
            index = rows[0].layer
            hidden = self._run_layer(rows, index, hidden, positions, valid, log_sizes, rope, counts, last_position)
            for row in rows:
                self._account_layer(row)
                row.layer += 1
        for row, n in zip(rows, counts, strict=True):
            row.hidden = hidden if len(rows) == 1 else hidden[row.row : row.row + 1, :n]

    @staticmethod
    def _pad(rows: list[ReductionState]):
        """The rows' carried tokens as one right-padded batch: hidden, positions, validity (``None``
        when no row is padded), log merge sizes (``None`` when nothing was merged) and rotary tables."""
        if len(rows) == 1:
            row = rows[0]
            log_sizes = row.log_sizes()
            rope = {kind: (cos[:, row.positions], sin[:, row.positions]) for kind, (cos, sin) in row.rope.items()}
            return row.hidden, row.positions[None], None, None if log_sizes is None else log_sizes[None], rope
        width = max(row.n_tokens for row in rows)
        first = rows[0]
        hidden = first.hidden.new_zeros(len(rows), width, first.hidden.shape[-1])
        positions = first.positions.new_zeros(len(rows), width)
        valid = torch.zeros(len(rows), width, dtype=torch.bool, device=positions.device)
        merged = any(row.merged for row in rows)
        log_sizes = hidden.new_zeros(len(rows), width, dtype=torch.float32) if merged else None
        for b, row in enumerate(rows):
            n = row.n_tokens
            hidden[b, :n], positions[b, :n], valid[b, :n] = row.hidden[0], row.positions, True
            if merged and row.merged:
                log_sizes[b, :n] = row.sizes.log()
        # a rotary table depends on the position only: the longest prompt's covers every row
        longest = max(rows, key=lambda row: row.input_ids.shape[1])
        rope = {kind: (cos[0, positions], sin[0, positions]) for kind, (cos, sin) in longest.rope.items()}
        all_full = all(row.n_tokens == width for row in rows)
        return hidden, positions, None if all_full else valid, log_sizes, rope

    def _account_layer(self, state: ReductionState) -> None:
        """Charge one prefill layer: the prompt's tokens to the prefill, a continuation to decoding."""
        p, m = state.n_prompt_tokens, state.continuation_length
        state.tokens_per_layer.append(state.n_tokens)
        state.flops += flops.layer_flops(self.dims, p, layer=state.layer)
        if m:
            state.decode_flops += flops.layer_flops(self.dims, m, cached=p, layer=state.layer)

    def _resume(self, state: ReductionState, hidden: Tensor, layer: int) -> None:
        """Start at ``layer`` from a cached hidden state, charging the skipped layers as if run."""
        if layer >= self.dims.layers:
            raise InvalidArgumentError("resume_from needs at least one decision layer")
        if not isinstance(hidden, Tensor):
            raise InvalidArgumentError(f"resume_from must be a hidden-state tensor, got {shown(hidden)}")
        if hidden.shape != state.hidden.shape:
            raise InvalidArgumentError(
                f"resume_from has shape {tuple(hidden.shape)}, expected {tuple(state.hidden.shape)}"
            )
        state.hidden = hidden.to(device=state.hidden.device, dtype=state.hidden.dtype)
        state.resumed = True
        for skipped in range(layer):
            state.layer = skipped
            if state.row == 0:  # the skipped layers have no cache, only placeholders (never extended)
                state.shared.key_positions.append(state.positions[None])
                state.shared.key_valid.append(None)
                state.shared.key_log_sizes.append(None)
            state.kv_counts.append(state.n_tokens)
            self._account_layer(state)
        state.layer = layer

    def _run_layer(
        self,
        rows: list[ReductionState],
        index: int,
        hidden: Tensor,
        positions: Tensor,
        valid: Tensor | None,
        log_sizes: Tensor | None,
        rope: Rope,
        counts: list[int],
        last_position: int,
    ) -> Tensor:
        """Call decoder layer ``index`` on the rows' ``hidden`` ``(B, q, hidden)`` and append their keys
        and values to the shared cache (``counts[b]`` of row ``b``'s ``q`` slots are real).

        This is the only place a decoder layer runs: prefill and decoding, one prompt or many.
        """
        shared = rows[0].shared
        if index < len(shared.key_positions):
            key_positions = torch.cat((shared.key_positions[index], positions), dim=1)
            old_valid, old_sizes = shared.key_valid[index], shared.key_log_sizes[index]
            key_valid = None
            if old_valid is not None or valid is not None:
                key_valid = torch.cat(
                    (_all_true(shared.key_positions[index], old_valid), _all_true(positions, valid)), 1
                )
            key_log_sizes = None
            if old_sizes is not None or log_sizes is not None:
                key_log_sizes = torch.cat(
                    (_zeros_like(shared.key_positions[index], old_sizes), _zeros_like(positions, log_sizes)), 1
                )
            shared.key_positions[index], shared.key_valid[index] = key_positions, key_valid
            shared.key_log_sizes[index] = key_log_sizes
            for row, count in zip(rows, counts, strict=True):
                row.kv_counts[index] += count
        else:
            key_positions, key_valid, key_log_sizes = positions, valid, log_sizes
            shared.key_positions.append(key_positions)
            shared.key_valid.append(key_valid)
            shared.key_log_sizes.append(key_log_sizes)
            for row, count in zip(rows, counts, strict=True):
                row.kv_counts.append(count)
        mask = self.adapter.attention_mask(
            index,
            positions,
            key_positions,
            key_log_sizes,
            hidden.dtype,
            last_position=last_position,
            key_valid=key_valid,
        )
        out = self.layers[index](
            hidden,
            attention_mask=mask,
            position_ids=positions,
            cache=shared.cache,
            use_cache=True,
            position_embeddings=rope[self.adapter.rope_kinds[index]],
        )
        return out[0] if isinstance(out, tuple) else out

    def _validate_ids(self, input_ids: Tensor | Sequence[int]) -> Tensor:
        device = self.model.device
        try:
            ids = torch.as_tensor(input_ids, device=device)
        except (TypeError, ValueError, RuntimeError):
            raise InvalidPromptError(
                f"input_ids must be token ids (a tensor or a list of ints), got {shown(input_ids)}"
            ) from None
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2 or ids.shape[0] != 1:
            raise InvalidPromptError(
                f"expected a prompt of token ids, shape (n,) or (1, n), or a batch of them; got {tuple(ids.shape)}"
            )
        n = ids.shape[1]
        if n == 0:
            raise InvalidPromptError("the prompt is empty: give at least one token")
        if ids.dtype not in (torch.int32, torch.int64):
            raise InvalidPromptError(f"token ids must be integers, got {ids.dtype}")
        if self.max_positions and n > self.max_positions:
            raise InvalidPromptError(
                f"the prompt has {n} tokens but the model handles at most {self.max_positions}; shorten it"
            )
        low, high = torch.aminmax(ids)
        if int(low) < 0 or int(high) >= self.dims.vocab:
            raise InvalidPromptError(f"token ids must lie in [0, {self.dims.vocab}); is the tokenizer for this model?")
        return ids.long()

    def _validate_layers(self, decision_layers: Sequence[int] | None) -> tuple[int, ...]:
        if decision_layers is None:
            decision_layers = self.config.decision_layers or range(1, self.dims.layers)
        listed = isinstance(decision_layers, Iterable) and not isinstance(decision_layers, (str, bytes, Mapping))
        items = list(decision_layers) if listed else []
        if not listed or not all(is_integer(i) for i in items):
            raise InvalidActionError(
                f"decision_layers must be a list of layer numbers (ints), got {shown(decision_layers)}"
            )
        layers = tuple(sorted({int(i) for i in items}))
        bad = [i for i in layers if not 0 <= i < self.dims.layers]
        if bad:
            raise InvalidActionError(
                f"decision layer(s) {bad} out of range: this model has layers 0..{self.dims.layers - 1}"
            )
        return layers

    def _eos_ids(self, eos_token_id: int | Sequence[int] | None) -> list[int]:
        if eos_token_id is None:
            eos_token_id = getattr(self.model.generation_config, "eos_token_id", None)
            if eos_token_id is None:
                eos_token_id = self.model.config.eos_token_id
        if eos_token_id is None:
            return []
        ids = [eos_token_id] if not isinstance(eos_token_id, Iterable) else list(eos_token_id)
        return [check_int(i, "eos_token_id") for i in ids]

    @staticmethod
    def _warpers(temperature: float, top_k: int, top_p: float) -> LogitsProcessorList:
        greedy = " when sampling (for greedy decoding, do not sample: no --sample)"
        temperature = check_number(temperature, "temperature", hint=greedy, error=InvalidActionError)
        top_k = check_int(top_k, "top_k", error=InvalidActionError)
        top_p = check_number(top_p, "top_p", at_most=1.0, error=InvalidActionError)
        warpers = LogitsProcessorList()
        if temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        return warpers

    @staticmethod
    def _choose(logits: Tensor, warpers: LogitsProcessorList | None, generator: torch.Generator | None) -> Tensor:
        """The next token of every row, ``(B,)``: greedy, or sampled after the warpers."""
        if warpers is None:
            return logits.argmax(dim=-1)
        scores = warpers(logits.new_zeros(logits.shape[0], 1, dtype=torch.long), logits.float())
        return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)[:, 0]


def _all_true(like: Tensor, valid: Tensor | None) -> Tensor:
    return torch.ones_like(like, dtype=torch.bool) if valid is None else valid


def _zeros_like(like: Tensor, values: Tensor | None) -> Tensor:
    return torch.zeros(like.shape, device=like.device) if values is None else values
