"""Span-aware selection: how far a high score reaches, and whether whole sentences or chunks go together.

An answer is a span, and it usually *follows* the words the question matches ("the magic number
for Humhumqua is 4018627"). Ranking tokens one by one keeps the matching words and cuts the value
after them. Two tools fix that, for every scorer:

- :class:`Pool`: each token takes the best score within reach, ``before`` tokens to its left and
  ``after`` tokens to its right of a high score (``pool=25`` is centred, ``pool=-4:+16`` reaches
  further forward than back);
- a *unit*: tokens are kept or dropped by whole sentences or fixed-size chunks, ranked by their
  best pooled score. The last unit removed may be cut, so a FLOPs budget is still met exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rlprune.errors import InvalidActionError

MAX_REACH = 4096
"""The longest reach a pool may have on either side."""

UNITS_HELP = "token, sentence or a chunk size such as 16"


@dataclass(frozen=True)
class Pool:
    """Max-pooling whose reach may differ on the two sides of a high score.

    Attributes:
        before: how many tokens *before* a high-scoring token are raised to its score.
        after: how many tokens *after* it are raised.
    """

    before: int = 0
    after: int = 0

    def __post_init__(self) -> None:
        for side in ("before", "after"):
            value = getattr(self, side)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REACH:
                raise InvalidActionError(
                    f"a pool's reach {side} a high score must be an integer in [0, {MAX_REACH}], got {value!r}"
                )

    @classmethod
    def centred(cls, width: int) -> Pool:
        """A window of ``width`` tokens around each score (the classic max-pool of that width)."""
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise InvalidActionError(f"a pool width must be a positive integer, got {width!r}")
        return cls(before=width - 1 - width // 2, after=width // 2)

    @classmethod
    def forward(cls, width: int) -> Pool:
        """Each score reaches the ``width - 1`` tokens after it (a cue carries to what follows it)."""
        return cls(before=0, after=max(width, 1) - 1)

    @classmethod
    def parse(cls, text: str | int) -> Pool:
        """``25`` (centred width), ``-4:+16`` or ``-4+16`` (reach before and after)."""
        if isinstance(text, int) and not isinstance(text, bool):
            return cls.centred(text)
        spec = str(text).strip()
        if re.fullmatch(r"\d+", spec):
            return cls.centred(int(spec))
        match = re.fullmatch(r"-(\d+):?\+(\d+)", spec)
        if not match:
            raise InvalidActionError(
                f"bad pool {text!r}: write a width such as 25, or the reach before and after a high score "
                "such as -4:+16"
            )
        return cls(before=int(match[1]), after=int(match[2]))

    @property
    def is_identity(self) -> bool:
        return self.before == 0 and self.after == 0

    def apply(self, scores: Tensor) -> Tensor:
        """Each token's best score among the tokens whose reach covers it, ``(n,)``."""
        if self.is_identity or scores.numel() == 0:
            return scores
        padded = F.pad(scores[None, None].float(), (self.after, self.before), value=float("-inf"))
        pooled = F.max_pool1d(padded, self.before + self.after + 1, 1)[0, 0]
        return pooled.to(scores.dtype)

    def __str__(self) -> str:
        if self.before == self.after:
            return str(2 * self.before + 1)
        return f"-{self.before}:+{self.after}"


def parse_unit(text: str | int) -> str:
    """A selection unit in its canonical form: ``token``, ``sentence`` or a chunk size as digits."""
    spec = str(text).strip().lower()
    if spec in ("token", "sentence"):
        return spec
    if re.fullmatch(r"\d+", spec) and 1 <= int(spec) <= MAX_REACH:
        return str(int(spec))
    if spec.startswith("chunk") and re.fullmatch(r"chunk\D?(\d+)", spec):
        return parse_unit(re.fullmatch(r"chunk\D?(\d+)", spec)[1])
    raise InvalidActionError(f"bad unit {text!r}: use {UNITS_HELP}")


def unit_ids(unit: str, positions: Tensor, input_ids: Tensor, sentence_ends: Tensor | None) -> Tensor | None:
    """The unit each carried token belongs to, ``(n,)`` non-decreasing ids, or ``None`` for ``token``.

    Units are fixed by *original* positions, so a unit means the same text at every layer whatever
    was removed before: a chunk of 16 is original positions 0-15, 16-31, ...; a sentence ends after
    a token in ``sentence_ends`` (ids whose text ends a sentence or a line).
    """
    if unit == "token":
        return None
    if unit == "sentence":
        if sentence_ends is None:
            raise InvalidActionError(
                "unit=sentence needs the tokenizer's sentence ends: build the Reducer with "
                "ReducerConfig(sentence_ends=sentence_end_ids(tokenizer)), or use a chunk size such as unit=16"
            )
        ends = torch.isin(input_ids, sentence_ends.to(input_ids.device))
        starts = torch.cumsum(ends.long(), 0) - ends.long()  # a sentence includes its own final token
        return starts[positions]
    return torch.div(positions, int(unit), rounding_mode="floor")


def unit_ranking(scores: Tensor, units: Tensor | None, unit_scores: Tensor | None = None) -> Tensor:
    """Scores that rank whole units first (by their best token, or by ``unit_scores``, one per unit
    id), tokens within a unit second.

    The returned values order tokens lexicographically by (unit score, token score), so removing
    the ``k`` lowest removes the weakest units whole and cuts into at most one more.
    """
    if units is None or scores.numel() == 0:
        return scores
    finite = torch.nan_to_num(scores.float(), nan=-1e30, posinf=1e30, neginf=-1e30)
    best = unit_scores
    if best is None:
        best = torch.full((int(units.max()) + 1,), -1e30, device=scores.device).scatter_reduce(
            0, units, finite, reduce="amax"
        )
    order = torch.argsort(finite, stable=True)
    order = order[torch.argsort(units[order], stable=True)]  # units stay together where their scores tie
    order = order[torch.argsort(best[units][order], stable=True)]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return rank.to(torch.float32)


SENTENCE_END = re.compile(r"([.!?;:]['\")\]]*|\n)\s*$")


def sentence_end_ids(tokenizer) -> tuple[int, ...]:
    """Ids of the tokens whose text ends a sentence or a line, for ``unit=sentence``."""
    vocabulary: Iterable[int] = range(len(tokenizer))
    return tuple(i for i in vocabulary if SENTENCE_END.search(tokenizer.decode([i]) or ""))
