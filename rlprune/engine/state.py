"""What a prompt carries through the reduced forward: its state, its batch, its shared KV cache and
the result of its prefill.

A :class:`ReductionState` is one prompt (one row); a :class:`ReductionBatch` holds several rows that
run every decoder layer together and write one :class:`SharedCache`. A single prompt is a batch of
one with nothing padded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import DynamicCache

from rlprune import flops
from rlprune.adapters import ModelAdapter, Rope
from rlprune.reduction import LayerAction, ReductionPlan, apply_plan, track_owners


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

    def add_slots(
        self, layer: int, positions: Tensor, valid: Tensor | None, log_sizes: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Record the slots layer ``layer`` is about to append (``(B, q)`` positions, validity and log
        merge sizes) and return what its keys will then be: positions, validity and log sizes."""
        if layer >= len(self.key_positions):
            self.key_positions.append(positions)
            self.key_valid.append(valid)
            self.key_log_sizes.append(log_sizes)
            return positions, valid, log_sizes
        old_positions, old_valid, old_sizes = (
            self.key_positions[layer],
            self.key_valid[layer],
            self.key_log_sizes[layer],
        )
        key_valid = None
        if old_valid is not None or valid is not None:
            key_valid = torch.cat((_all_true(old_positions, old_valid), _all_true(positions, valid)), 1)
        key_log_sizes = None
        if old_sizes is not None or log_sizes is not None:
            key_log_sizes = torch.cat((_zeros_like(old_positions, old_sizes), _zeros_like(positions, log_sizes)), 1)
        key_positions = torch.cat((old_positions, positions), dim=1)
        self.key_positions[layer], self.key_valid[layer] = key_positions, key_valid
        self.key_log_sizes[layer] = key_log_sizes
        return key_positions, key_valid, key_log_sizes

    def add_placeholder(self, positions: Tensor) -> None:
        """A layer that was skipped (resumed from a cached hidden state): known slots, no keys."""
        self.key_positions.append(positions)
        self.key_valid.append(None)
        self.key_log_sizes.append(None)

    def replace_rows(self, scratch: SharedCache, rows: list[int], batch: int, layers: int) -> None:
        """Rows ``rows`` of this ``batch``-row cache take layers ``0 .. layers - 1`` from ``scratch``, where
        they ran again alone (its row ``j`` is row ``rows[j]`` here).

        When every row was re-run the layers are replaced whole, so they hold only the new entries;
        otherwise the new entries are appended and the rows' old ones hidden, as padding is. A skipped
        layer of a resumed batch has no keys to replace and is never decoded from, so it stays as it is.
        """
        for layer in range(layers):
            if len(rows) == batch:
                if layer < len(self.cache.layers):
                    self.cache.layers[layer] = scratch.cache.layers[layer]
                else:
                    self.cache.layers.append(scratch.cache.layers[layer])
                self.key_positions[layer] = scratch.key_positions[layer]
                self.key_valid[layer] = scratch.key_valid[layer]
                self.key_log_sizes[layer] = scratch.key_log_sizes[layer]
            elif layer < len(self.cache.layers) and getattr(self.cache.layers[layer], "is_initialized", False):
                self._append_rows(scratch, rows, batch, layer)

    def _append_rows(self, scratch: SharedCache, rows: list[int], batch: int, layer: int) -> None:
        """Append ``scratch``'s layer ``layer`` to the rows ``rows`` and hide their older slots."""
        index = torch.tensor(rows, device=self.key_positions[layer].device)

        def widened(values: Tensor, fill: float | bool = 0) -> Tensor:  # scratch rows placed among ``batch``
            out = values.new_full((batch, *values.shape[1:]), fill)
            out[index] = values
            return out

        old, new = self.cache.layers[layer], scratch.cache.layers[layer]
        old.keys = torch.cat((old.keys, widened(new.keys)), dim=-2)
        old.values = torch.cat((old.values, widened(new.values)), dim=-2)
        positions, new_positions = self.key_positions[layer], scratch.key_positions[layer]
        still_used = _all_true(positions, self.key_valid[layer]).clone()
        still_used[index] = False
        added = widened(_all_true(new_positions, scratch.key_valid[layer]), False)
        self.key_valid[layer] = torch.cat((still_used, added), dim=1)
        old_sizes, new_sizes = self.key_log_sizes[layer], scratch.key_log_sizes[layer]
        if old_sizes is not None or new_sizes is not None:
            sizes = widened(_zeros_like(new_positions, new_sizes))
            self.key_log_sizes[layer] = torch.cat((_zeros_like(positions, old_sizes), sizes), dim=1)
        self.key_positions[layer] = torch.cat((positions, widened(new_positions)), dim=1)


def _all_true(like: Tensor, valid: Tensor | None) -> Tensor:
    return torch.ones_like(like, dtype=torch.bool) if valid is None else valid


def _zeros_like(like: Tensor, values: Tensor | None) -> Tensor:
    return torch.zeros(like.shape, device=like.device) if values is None else values


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

    @classmethod
    def embedded(
        cls,
        adapter: ModelAdapter,
        ids: Tensor,
        shared: SharedCache,
        *,
        decision_layers: tuple[int, ...],
        protect_first: int,
        protect_last: int,
        prompt_length: int,
        row: int = 0,
    ) -> ReductionState:
        """Prompt ``ids`` ``(1, n)`` embedded, every token carried, before layer 0."""
        n = ids.shape[1]
        positions = torch.arange(n, device=ids.device)
        hidden = adapter.embed(ids)
        return cls(
            input_ids=ids,
            hidden=hidden,
            positions=positions,
            sizes=torch.ones(n, device=ids.device),
            rope=adapter.rotary(hidden, positions),
            shared=shared,
            decision_layers=decision_layers,
            protect_first=protect_first,
            protect_last=protect_last,
            prompt_length=prompt_length,
            next_position=n,
            row=row,
            owners=positions.clone(),
        )

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

    def apply(self, plan: ReductionPlan) -> None:
        """Remove the tokens ``plan`` removes (merged ones folded into their targets)."""
        if len(plan):
            self.owners = track_owners(self.owners, self.positions, plan)
            self.hidden, self.positions, self.sizes = apply_plan(self.hidden, self.positions, self.sizes, plan)
            self.merged |= plan.into is not None

    def rewind(self, hidden: Tensor) -> None:
        """Back to layer 0 carrying the same tokens, each standing for itself again (``hidden``: their
        embeddings). What merges folded into them and what was removed is gone; the per-layer
        bookkeeping starts over."""
        everything = torch.arange(self.input_ids.shape[1], device=self.positions.device)
        self.owners = torch.where(torch.isin(everything, self.positions), everything, -1)
        self.hidden = hidden
        self.sizes = torch.ones_like(self.sizes)
        self.merged = False
        self.layer = 0
        self.kv_counts = []
        self.tokens_per_layer = []

    def decided(self, action: LayerAction, cost: float) -> None:
        """Record the decision taken before ``layer`` and what choosing its tokens cost."""
        self.flops += cost
        self.actions[self.layer] = action
        self.decisions_made += 1


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


def rows_of(state: ReductionState | ReductionBatch) -> list[ReductionState]:
    """The rows of a batch, or a single prompt as a batch of one."""
    return state.rows if isinstance(state, ReductionBatch) else [state]


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
