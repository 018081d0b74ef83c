"""What a policy decides at one decision layer, and the text form of a fixed schedule."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from rlprune.errors import InvalidActionError
from rlprune.reduction.ops import OPS
from rlprune.reduction.scores import SCORERS
from rlprune.reduction.spans import Pool, parse_unit


@dataclass(frozen=True)
class LayerAction:
    """Reduce the tokens entering one decoder layer.

    Attributes:
        op: the name of a registered op (:data:`~rlprune.reduction.ops.OPS`), such as ``keep`` (do
            nothing), ``prune`` (drop tokens) or ``merge`` (fold tokens into a similar later token).
        ratio: fraction of the *removable* tokens (all but the protected ones) removed here.
        scorer: how token importance is measured; the least important tokens go first.
            One of :data:`rlprune.reduction.scores.SCORERS`.
        token_scores: with the ``learned`` scorer, the policy's score of every prompt token
            carried into the layer (higher keeps); the lowest ones go.
        pool: how far a high score reaches over its neighbours (:class:`Pool`); ``None`` uses the
            scorer's own shape for the reducer's pool width.
        unit: what is kept or dropped together: ``token``, ``sentence`` or a chunk size (``"16"``).
    """

    op: str = "keep"
    ratio: float = 0.0
    scorer: str = "attention"
    token_scores: Tensor | None = field(default=None, compare=False, repr=False)
    pool: Pool | None = None
    unit: str = "token"

    def __post_init__(self) -> None:
        if not isinstance(self.op, str) or self.op not in OPS:
            raise InvalidActionError(f"unknown op {self.op!r}: use one of {', '.join(OPS)}")
        if not isinstance(self.ratio, (int, float)) or not 0.0 <= float(self.ratio) <= 1.0:
            raise InvalidActionError(
                f"ratio {self.ratio!r} is outside [0, 1]: it is the fraction of removable tokens removed"
            )
        if self.scorer not in SCORERS:
            raise InvalidActionError(f"unknown scorer {self.scorer!r}: use one of {', '.join(sorted(SCORERS))}")
        if self.token_scores is not None and self.scorer != "learned":
            raise InvalidActionError(f"token_scores go with the 'learned' scorer, not {self.scorer!r}")
        if self.pool is not None and not isinstance(self.pool, Pool):
            object.__setattr__(self, "pool", Pool.parse(self.pool))
        object.__setattr__(self, "unit", parse_unit(self.unit))

    @property
    def is_noop(self) -> bool:
        return not OPS[self.op].reduces or self.ratio == 0.0

    def span_text(self) -> str:
        """``:pool=P:unit=U`` for whatever differs from the defaults (empty for plain selection)."""
        return (f":pool={self.pool}" if self.pool is not None else "") + (
            f":unit={self.unit}" if self.unit != "token" else ""
        )

    def __str__(self) -> str:
        return self.op if not OPS[self.op].reduces else f"{self.op}:{self.ratio:.3g}:{self.scorer}{self.span_text()}"


KEEP = LayerAction()

Schedule = Mapping[int, LayerAction]


SPAN_OPTIONS = ("pool", "unit")


def split_span_options(text: str) -> tuple[list[str], dict[str, str]]:
    """``"2:prune:0.5:relevance:pool=-4:+16"`` -> ``(["2", "prune", "0.5", "relevance"], {"pool": "-4:+16"})``;
    an option before a field, or one that is not a span option, is refused."""
    parts = re.split(r":(?!\+)", text.strip())  # the colon of a pool's "-4:+16" is not a separator
    fields = [p for p in parts if "=" not in p]
    options = dict(p.split("=", 1) for p in parts if "=" in p)
    if set(options) - set(SPAN_OPTIONS) or parts[: len(fields)] != fields:
        raise InvalidActionError(
            f"bad span options in {text!r}: options go last and are {' and '.join(SPAN_OPTIONS)}, "
            "e.g. relevance:pool=-4:+16:unit=16"
        )
    return fields, options


def scored(op: str, ratio: float, scorer: str) -> LayerAction:
    """``op`` removing ``ratio`` of the removable tokens as ``scorer`` ranks them: a scorer's name,
    optionally with span options (``"relevance:pool=-4:+16"``, ``"relevance:unit=16"``), which is
    how a policy's action space offers span shapes."""
    fields, options = split_span_options(scorer)
    if len(fields) != 1:
        raise InvalidActionError(f"bad scorer {scorer!r}: write SCORER[:pool=P][:unit=U], e.g. relevance:unit=16")
    pool = options.get("pool")
    return LayerAction(op, ratio, fields[0], pool=pool, unit=options.get("unit", "token"))  # type: ignore[arg-type]


def parse_schedule(text: str) -> dict[int, LayerAction]:
    """Parse ``"2:prune:0.5,12:merge:0.3:similarity"`` into ``{layer: LayerAction}``.

    Each item is ``LAYER:OP[:RATIO[:SCORER]]``, optionally followed by span options
    ``:pool=25`` or ``:pool=-4:+16`` and ``:unit=sentence`` or ``:unit=16``; an empty string means
    no reduction.
    """
    schedule: dict[int, LayerAction] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            fields, options = split_span_options(item)
        except InvalidActionError:
            fields, options = [], {}
        if not 2 <= len(fields) <= 4:
            raise InvalidActionError(
                f"bad schedule item {item!r}: write LAYER:OP[:RATIO[:SCORER]][:pool=P][:unit=U], "
                "e.g. 2:prune:0.5 or 2:prune:0.5:attention:pool=-4:+16:unit=sentence"
            )
        try:
            layer = int(fields[0])
            ratio = float(fields[2]) if len(fields) > 2 else 0.5
        except ValueError:
            raise InvalidActionError(
                f"bad schedule item {item!r}: LAYER must be an integer and RATIO a number"
            ) from None
        if layer in schedule:
            raise InvalidActionError(f"layer {layer} appears twice in the schedule {text!r}")
        scorer = fields[3] if len(fields) > 3 else LayerAction.scorer
        schedule[layer] = LayerAction(
            fields[1],  # type: ignore[arg-type]
            ratio,
            scorer,
            pool=options.get("pool"),  # type: ignore[arg-type]
            unit=options.get("unit", "token"),
        )
    return schedule


def format_schedule(schedule: Schedule) -> str:
    """Inverse of :func:`parse_schedule` (keep actions are left out)."""
    return ",".join(
        f"{layer}:{a.op}:{a.ratio:g}:{a.scorer}{a.span_text()}"
        for layer, a in sorted(schedule.items())
        if not a.is_noop
    )
