"""Decoding from a reduced prefill: feeding tokens on top of the reduced cache, choosing the next
token (greedy or sampled) and the generation loop :meth:`Reducer.generate` runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rlprune import flops
from rlprune.engine.inputs import ActionSource, Prompts
from rlprune.engine.loop import LayerLoop, Padded
from rlprune.engine.policy import Budget, Policy
from rlprune.engine.state import ReductionBatch, ReductionOutput, ReductionState
from rlprune.errors import InvalidActionError, InvalidArgumentError, InvalidPromptError
from rlprune.timing import Stopwatch
from rlprune.validate import check_flag, check_int, check_number, shown

if TYPE_CHECKING:
    from rlprune.engine.reducer import Reducer


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


def extend(
    loop: LayerLoop, rows: list[ReductionState], token_ids: Tensor | Sequence[int], max_positions: int
) -> Tensor:
    """Feed new tokens ``(B, m)`` through every layer on top of the rows' reduced caches; their logits."""
    if rows[0].layer < loop.dims.layers:
        raise RuntimeError("finish() the prefill before extending it")
    if rows[0].resumed:
        raise RuntimeError("a state resumed from a cached hidden state has no cache for its first layers")
    ids = torch.as_tensor(token_ids, device=rows[0].input_ids.device).reshape(len(rows), -1)
    m = ids.shape[1]
    furthest = max(row.next_position for row in rows) + m
    if furthest > max_positions > 0:
        raise InvalidPromptError(f"{furthest} positions exceed the model's limit of {max_positions}")
    offsets = torch.arange(m, device=ids.device)
    positions = torch.stack([offsets + row.next_position for row in rows])
    hidden = loop.adapter.embed(ids)
    rope = loop.adapter.rotary(hidden, positions)
    hidden = loop.feed(rows, Padded(hidden, positions, None, None, rope, [m] * len(rows), furthest - 1))
    for row in rows:
        row.next_position += m
        row.decode_flops += flops.lm_head_flops(loop.dims, m)
    return loop.adapter.logits(hidden)


def eos_ids(model: torch.nn.Module, eos_token_id: int | Sequence[int] | None) -> list[int]:
    """The stop tokens: those given, else the model's generation config's, else its config's."""
    if eos_token_id is None:
        eos_token_id = getattr(model.generation_config, "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = model.config.eos_token_id
    if eos_token_id is None:
        return []
    ids = [eos_token_id] if not isinstance(eos_token_id, Iterable) else list(eos_token_id)
    return [check_int(i, "eos_token_id") for i in ids]


def warpers(temperature: float, top_k: int, top_p: float) -> LogitsProcessorList:
    """The sampling warpers for these settings (checked: bad ones fail before the prefill)."""
    greedy = " when sampling (for greedy decoding, do not sample: no --sample)"
    temperature = check_number(temperature, "temperature", hint=greedy, error=InvalidActionError)
    top_k = check_int(top_k, "top_k", error=InvalidActionError)
    top_p = check_number(top_p, "top_p", at_most=1.0, error=InvalidActionError)
    chain = LogitsProcessorList()
    if temperature != 1.0:
        chain.append(TemperatureLogitsWarper(temperature))
    if top_k:
        chain.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        chain.append(TopPLogitsWarper(top_p))
    return chain


def choose(logits: Tensor, chain: LogitsProcessorList | None, generator: torch.Generator | None) -> Tensor:
    """The next token of every row, ``(B,)``: greedy, or sampled after the warpers."""
    if chain is None:
        return logits.argmax(dim=-1)
    scores = chain(logits.new_zeros(logits.shape[0], 1, dtype=torch.long), logits.float())
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)[:, 0]


def eos_end(ids: Sequence[int], stop: set[int]) -> int:
    """How many of ``ids`` a row keeps: up to and with its first stop token, else all."""
    return next((i + 1 for i, t in enumerate(ids) if t in stop), len(ids))


def row_result(
    tokens: Tensor, stop: set[int], prefill: ReductionOutput, prefill_seconds: float, decode_seconds: float
) -> GenerationResult:
    """One row's tokens, cut after its first EOS."""
    ids = tokens[0].tolist()
    end = eos_end(ids, stop)
    return GenerationResult(
        tokens=tokens[:, :end],
        prefill=prefill,
        stopped_at_eos=ids[end - 1] in stop,
        prefill_seconds=prefill_seconds,
        decode_seconds=decode_seconds,
    )


def generate(
    reducer: Reducer,
    input_ids: Prompts,
    actions: ActionSource,
    *,
    policy: Policy | None,
    budget: Budget,
    attention_mask: Tensor | None,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_token_id: int | Sequence[int] | None,
    generator: torch.Generator | None,
    decision_layers: Sequence[int] | None,
    protect_last: int | Sequence[int] | None,
) -> GenerationResult | list[GenerationResult]:
    """:meth:`Reducer.generate`: the reduced prefill (``reducer.run``), then one ``reducer.extend``
    per new token until every row reached EOS or the limit."""
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", minimum=1)
    do_sample = check_flag(do_sample, "do_sample")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InvalidArgumentError(f"generator must be a torch.Generator or None, got {shown(generator)}")
    stop = set(eos_ids(reducer.model, eos_token_id))
    prompts, batched = reducer.inputs.prompts(input_ids, attention_mask)
    longest = max(ids.shape[1] for ids in prompts)
    if reducer.max_positions and longest + max_new_tokens > reducer.max_positions:
        raise InvalidPromptError(
            f"prompt ({longest} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"{reducer.max_positions} positions; shorten the prompt or ask for fewer tokens"
        )
    chain = warpers(temperature, top_k, top_p) if do_sample else None  # bad settings fail first
    clock = Stopwatch(reducer.model.device)
    prefills = reducer.run(
        prompts if batched else prompts[0],
        actions,
        policy=policy,
        budget=budget,
        decision_layers=decision_layers,
        protect_last=protect_last,
    )
    prefills = prefills if batched else [prefills]
    prefill_seconds = clock.lap()
    logits = torch.cat([out.logits[:, -1] for out in prefills])
    state = ReductionBatch([out.state for out in prefills]) if batched else prefills[0].state
    tokens, _ = decode(reducer, state, logits, max_new_tokens, stop, chain, generator)
    decode_seconds = clock.lap()
    results = [
        row_result(tokens[b : b + 1], stop, out, prefill_seconds, decode_seconds) for b, out in enumerate(prefills)
    ]
    return results if batched else results[0]


def decode(
    reducer: Reducer,
    state: ReductionState | ReductionBatch,
    logits: Tensor,
    max_new_tokens: int,
    stop: set[int],
    chain: LogitsProcessorList | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The decoding loop: from a finished prefill's last ``logits`` ``(B, vocab)``, one token per row and
    step (greedy without ``chain``) fed on top of the reduced cache, until every row said a ``stop``
    token or ``max_new_tokens`` were made. Returns the tokens ``(B, new)`` and each one's log-probability
    under the model ``(B, new)``; a row that stopped repeats its last token."""
    stop_ids = torch.tensor(sorted(stop), device=logits.device)
    new: list[Tensor] = []
    chosen: list[Tensor] = []
    finished = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    for i in range(max_new_tokens):
        token = choose(logits, chain, generator)
        if new:
            token = torch.where(finished, new[-1], token)  # a finished row repeats its last token
        new.append(token)
        chosen.append(logits.float().log_softmax(-1).gather(1, token[:, None])[:, 0])
        if stop:
            finished |= torch.isin(token, stop_ids)
        if i == max_new_tokens - 1 or (stop and bool(finished.all())):  # no device sync without an EOS
            break
        logits = reducer.extend(state, token[:, None])[:, -1]
    return torch.stack(new, dim=1), torch.stack(chosen, dim=1)
