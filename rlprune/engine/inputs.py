"""What a :class:`~rlprune.engine.Reducer` is given, checked before any layer runs: its config, the
prompts, the decision layers, schedules and per-row options.

Bad input fails here with a clear message, never deep inside a torch call.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rlprune.engine.policy import Budget, Decide, Policy, consult
from rlprune.errors import InvalidActionError, InvalidArgumentError, InvalidPromptError
from rlprune.reduction import KEEP, LayerAction
from rlprune.validate import check_int, is_integer, shown

if TYPE_CHECKING:
    from rlprune.engine.reducer import Reducer
    from rlprune.engine.state import ReductionState

ActionSource = Mapping[int, LayerAction] | Callable[["ReductionState"], LayerAction] | None
"""A fixed schedule ``{layer: action}``, or a callable deciding at each decision layer (per row)."""

Prompts = Tensor | Sequence[int] | Sequence[Sequence[int] | Tensor]
"""One prompt (ids, shape ``(n,)`` or ``(1, n)``) or several: a list of id sequences, or a
``(B, n)`` tensor (with an ``attention_mask`` where it is padded, on either side)."""


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

    def query_window(self, protect_last: int) -> int:
        """How many final tokens act as queries for a prompt protecting ``protect_last`` tokens."""
        return self.window or max(protect_last, 1)


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


def decisions(
    reducer: Reducer,
    actions: ActionSource,
    decision_layers: Sequence[int] | None,
    policy: Policy | None,
    budget: Budget,
) -> tuple[Sequence[int] | None, Decide]:
    """The decision layers and the per-row decision of what :meth:`Reducer.run` was given: a policy at
    its budget (:func:`~rlprune.engine.policy.consult`), a schedule, a callable or nothing."""
    if policy is not None:
        if actions is not None or decision_layers is not None:
            raise InvalidArgumentError(
                "give policy= or actions (with decision_layers), not both: a policy names its own decision layers"
            )
        return consult(policy, reducer, budget)
    if budget is not None:
        raise InvalidArgumentError("budget= goes with policy=; a schedule or a callable sets its own ratios")
    if callable(getattr(actions, "act", None)):
        raise InvalidActionError("a policy goes in as policy=, e.g. reducer.run(ids, policy=policy, budget=0.5)")
    if isinstance(actions, Mapping):
        if decision_layers is not None:
            raise ValueError("a schedule fixes its own decision layers; do not pass decision_layers")
        check_schedule(actions, reducer.dims.layers)
        return sorted(actions), lambda s: actions[s.layer]
    if actions is None:
        return (), lambda s: KEEP
    if callable(actions):
        return decision_layers, actions
    raise InvalidActionError(
        f"actions must be a {{layer: LayerAction}} mapping or a callable, got {type(actions).__name__}"
    )


def per_row(value, rows: int, name: str) -> list:
    """``value`` for every row, or its items when it is a sequence with one per row."""
    if isinstance(value, Sequence) and not isinstance(value, (str, LayerAction)):
        if len(value) != rows:
            raise InvalidActionError(f"{name} has {len(value)} items for {rows} prompt(s); give one per prompt")
        return list(value)
    return [value] * rows


def check_action(action: LayerAction | None) -> LayerAction:
    """``action``, or :data:`KEEP` for ``None``; anything else is refused."""
    action = KEEP if action is None else action
    if not isinstance(action, LayerAction):
        raise InvalidActionError(f"expected a LayerAction, got {type(action).__name__}")
    return action


def prompt_options(n: int, tail: int | None, length: int | None, config: ReducerConfig) -> tuple[int, int]:
    """A prompt's protected tail and prompt length (``n`` ids given), defaults from ``config``."""
    length = n if length is None else check_int(length, "prompt_length", minimum=1, error=InvalidPromptError)
    tail = config.protect_last if tail is None else check_int(tail, "protect_last", error=InvalidActionError)
    if not 1 <= length <= n:
        raise InvalidPromptError(f"prompt_length must lie in [1, {n}], got {length}")
    return tail, length


class PromptChecker:
    """Turns what a caller passes as prompts and decision layers into checked values for one model."""

    def __init__(self, model: torch.nn.Module, vocab: int, num_layers: int, max_positions: int) -> None:
        self.model, self.vocab, self.num_layers, self.max_positions = model, vocab, num_layers, max_positions

    def prompts(self, input_ids: Prompts, attention_mask: Tensor | None) -> tuple[list[Tensor], bool]:
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
                    self.validate_ids(ids[mask.to(ids.device)]) for ids, mask in zip(input_ids, keep, strict=True)
                ], True
            return [self.validate_ids(ids) for ids in input_ids], True
        if isinstance(input_ids, (list, tuple)) and input_ids:
            first = input_ids[0]  # a number (or a 0-d tensor) starts one prompt; anything else is a row
            if not isinstance(first, numbers.Number) and not (isinstance(first, Tensor) and first.dim() == 0):
                return [self.validate_ids(ids) for ids in input_ids], True
        return [self.validate_ids(input_ids)], False

    def validate_ids(self, input_ids: Tensor | Sequence[int]) -> Tensor:
        """One prompt as a ``(1, n)`` long tensor on the model's device, or a clear error."""
        try:
            ids = torch.as_tensor(input_ids, device=self.model.device)
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
        if int(low) < 0 or int(high) >= self.vocab:
            raise InvalidPromptError(f"token ids must lie in [0, {self.vocab}); is the tokenizer for this model?")
        return ids.long()

    def layers(self, decision_layers: Iterable[int] | None, default: Iterable[int] | None) -> tuple[int, ...]:
        """Decision layers, sorted and distinct, each one a layer of the model."""
        if decision_layers is None:
            decision_layers = default or range(1, self.num_layers)
        listed = isinstance(decision_layers, Iterable) and not isinstance(decision_layers, (str, bytes, Mapping))
        items = list(decision_layers) if listed else []
        if not listed or not all(is_integer(i) for i in items):
            raise InvalidActionError(
                f"decision_layers must be a list of layer numbers (ints), got {shown(decision_layers)}"
            )
        layers = tuple(sorted({int(i) for i in items}))
        bad = [i for i in layers if not 0 <= i < self.num_layers]
        if bad:
            raise InvalidActionError(
                f"decision layer(s) {bad} out of range: this model has layers 0..{self.num_layers - 1}"
            )
        return layers


def check_logits(logits: object) -> None:
    if not isinstance(logits, str) or logits not in ("last", "all", "continuation"):
        raise InvalidArgumentError(f"logits must be 'last', 'all' or 'continuation', got {shown(logits)}")


def logit_index(row: ReductionState, logits: str) -> slice:
    """Which carried tokens of ``row`` get logits for ``"all"`` or ``"continuation"``."""
    if logits == "all":
        return slice(None)
    m = row.continuation_length
    if m == 0:
        raise InvalidArgumentError("logits='continuation' needs a continuation: pass prompt_length to start()")
    return slice(-m - 1, -1)
