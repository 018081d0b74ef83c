"""The one layer loop: every decoder layer of a reduced pass runs here, prefill and decoding alike.

The loop calls the model's own decoder layers on the tokens the rows carry, padded together, with
their *original* position ids (rotary embeddings stay correct), an attention mask built from
original positions, and the batch's shared KV cache whose length may differ from layer to layer.
Every model detail comes from the family's :class:`~rlprune.adapters.ModelAdapter`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlprune.adapters import ModelAdapter, Rope
from rlprune.engine import accounting
from rlprune.engine.inputs import logit_index
from rlprune.engine.state import ReductionOutput, ReductionState, SharedCache
from rlprune.errors import InvalidArgumentError
from rlprune.flops import ModelDims
from rlprune.validate import shown


@dataclass
class Padded:
    """Rows' tokens as one batch: ``(B, q, hidden)`` states and ``(B, q)`` positions, the validity of
    each slot (``None`` when none is padding), log merge sizes (``None`` without merges), rotary
    tables at the positions, how many slots of each row are real, and the highest position."""

    hidden: Tensor
    positions: Tensor
    valid: Tensor | None
    log_sizes: Tensor | None
    rope: Rope
    counts: list[int]
    last_position: int


def pad(rows: list[ReductionState]) -> Padded:
    """The rows' carried tokens as one right-padded batch (a single row is used as it is)."""
    counts = [row.n_tokens for row in rows]
    last_position = max(row.next_position for row in rows) - 1
    if len(rows) == 1:
        row = rows[0]
        log_sizes = row.log_sizes()
        rope = {kind: (cos[:, row.positions], sin[:, row.positions]) for kind, (cos, sin) in row.rope.items()}
        sizes = None if log_sizes is None else log_sizes[None]
        return Padded(row.hidden, row.positions[None], None, sizes, rope, counts, last_position)
    width = max(counts)
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
    all_full = all(n == width for n in counts)
    return Padded(hidden, positions, None if all_full else valid, log_sizes, rope, counts, last_position)


class LayerLoop:
    """Runs decoder layers for the rows of a batch and charges each layer to each row."""

    def __init__(self, adapter: ModelAdapter, dims: ModelDims) -> None:
        self.adapter = adapter
        self.layers = adapter.layers
        self.dims = dims

    def advance(self, rows: list[ReductionState], stop: int, prefill: bool = True) -> None:
        """Run the prefill through layers ``rows[0].layer .. stop - 1``: every row's carried tokens,
        padded together, through each layer once (``prefill=False``: a re-run already priced)."""
        start = rows[0].layer
        if start >= stop:
            return
        padded = pad(rows)

        def charge(index: int) -> None:
            for row in rows:
                accounting.charge_layer(self.dims, row, prefill)
                row.layer += 1

        hidden = self.run(rows, range(start, stop), padded, charge)
        for row, n in zip(rows, padded.counts, strict=True):
            row.hidden = hidden if len(rows) == 1 else hidden[row.row : row.row + 1, :n]

    def restart(self, rows: list[ReductionState], restarting: list[ReductionState]) -> None:
        """Run the layers before the current one again for the rows ``restarting`` (of ``rows``), on the
        tokens they carry now, from their embeddings: a re-prefill. Their KV cache of those layers is
        replaced by the new entries; the op that asked for it priced the re-run."""
        layer, shared = rows[0].layer, rows[0].shared
        scratch = SharedCache(self.adapter.new_cache())
        originals = [row.row for row in restarting]
        for index, row in enumerate(restarting):
            row.rewind(self.adapter.embed(row.input_ids[:, row.positions]))
            row.shared, row.row = scratch, index
        try:
            self.advance(restarting, layer, prefill=False)
        finally:
            for row, original in zip(restarting, originals, strict=True):
                row.shared, row.row = shared, original
        shared.replace_rows(scratch, originals, len(rows), layer)
        if len(restarting) == len(rows):  # every layer so far now has its cache, a resumed batch's too
            for row in rows:
                row.resumed = False

    def feed(self, rows: list[ReductionState], padded: Padded) -> Tensor:
        """Decode: new tokens (the same number per row, none padded) through every layer on top of
        the rows' caches; returns the top layer's hidden states."""
        new = padded.counts[0]

        def charge(index: int) -> None:
            for row in rows:
                accounting.charge_decode_layer(self.dims, row, index, new)

        return self.run(rows, range(self.dims.layers), padded, charge)

    def run(self, rows: list[ReductionState], layers: range, padded: Padded, charge: Callable[[int], None]) -> Tensor:
        """The loop: each layer of ``layers`` on ``padded``, then ``charge(layer)``."""
        hidden = padded.hidden
        for index in layers:
            hidden = self.run_layer(rows, index, hidden, padded)
            charge(index)
        return hidden

    def run_layer(self, rows: list[ReductionState], index: int, hidden: Tensor, padded: Padded) -> Tensor:
        """Call decoder layer ``index`` on the rows' ``hidden`` ``(B, q, hidden)`` and append their keys
        and values to the shared cache (``padded.counts[b]`` of row ``b``'s ``q`` slots are real).

        This is the only place a decoder layer runs: prefill and decoding, one prompt or many.
        """
        shared = rows[0].shared
        fresh = index >= len(shared.key_positions)
        key_positions, key_valid, key_log_sizes = shared.add_slots(
            index, padded.positions, padded.valid, padded.log_sizes
        )
        for row, count in zip(rows, padded.counts, strict=True):
            if fresh:
                row.kv_counts.append(count)
            else:
                row.kv_counts[index] += count
        mask = self.adapter.attention_mask(
            index,
            padded.positions,
            key_positions,
            key_log_sizes,
            hidden.dtype,
            last_position=padded.last_position,
            key_valid=key_valid,
        )
        out = self.layers[index](
            hidden,
            attention_mask=mask,
            position_ids=padded.positions,
            cache=shared.cache,
            use_cache=True,
            position_embeddings=padded.rope[self.adapter.rope_kinds[index]],
        )
        return out[0] if isinstance(out, tuple) else out

    def resume(self, state: ReductionState, hidden: Tensor, layer: int) -> None:
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
                state.shared.add_placeholder(state.positions[None])
            state.kv_counts.append(state.n_tokens)
            accounting.charge_layer(self.dims, state)
        state.layer = layer

    def head(self, rows: list[ReductionState], logits: str) -> list[ReductionOutput]:
        """The LM head on the rows' top hidden states at the positions ``logits`` names (see
        :meth:`Reducer.finish`), charged to each row."""
        if logits == "last":  # one LM-head call for every row's final token
            last = torch.cat([row.hidden[:, -1:] for row in rows]) if len(rows) > 1 else rows[0].hidden[:, -1:]
            heads = self.adapter.logits(last).split(1)
            indices = [slice(-1, None)] * len(rows)
        else:
            indices = [logit_index(row, logits) for row in rows]
            heads = [self.adapter.logits(row.hidden[:, index]) for row, index in zip(rows, indices, strict=True)]
        outputs = []
        for row, index, out in zip(rows, indices, heads, strict=True):
            positions = row.positions[index]
            in_prompt = int((positions < row.prompt_length).sum())
            accounting.charge_logits(self.dims, row, in_prompt, positions.numel() - in_prompt)
            outputs.append(ReductionOutput(logits=out, logit_positions=positions, state=row, dims=self.dims))
        return outputs
