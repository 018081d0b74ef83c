"""Rule-based reduction methods, one small class each, behind the :class:`Policy` protocol.

Each method has a schedule shape with one strength knob. Without a budget it uses its own
ratio; asked for a FLOPs budget, it solves for the strength that meets it on the prompt at hand,
so methods compare at matched FLOPs. Build one from a spec: ``make_baseline("fastv:layer=2")``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rlprune.config import data_path
from rlprune.engine.features import Features
from rlprune.errors import RLPruneError
from rlprune.io import read_json
from rlprune.reduction import KEEP, LayerAction, Pool, parse_schedule, parse_unit

if TYPE_CHECKING:
    from rlprune.policies.compat import ModelShape


class BaselineError(RLPruneError):
    """An unknown baseline or a bad parameter in a baseline spec."""


@dataclass
class Baseline:
    """A schedule shape ``strength -> {layer: action}``; subclasses define :meth:`schedule`."""

    name: ClassVar[str] = ""
    fit_hint: ClassVar[str] = "change the spec"
    """What a refusal of the compatibility check advises; it names the baseline by its spec (``fit_label``)."""

    @property
    def fit_label(self) -> str:
        return str(self)

    @property
    def strength(self) -> float:
        """The strength used without a budget."""
        return 0.0

    @property
    def max_strength(self) -> float:
        return 1.0

    def schedule(self, strength: float, num_layers: int) -> dict[int, LayerAction]:
        return {}

    @classmethod
    def from_params(cls, params: str) -> Baseline:
        """The baseline from the text after ``NAME:`` in a spec: ``key=value`` pairs by default."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, object] = {}
        for item in filter(None, (p.strip() for p in params.split(","))):
            key, equals, text = (part.strip() for part in item.partition("="))
            if key in values:
                raise BaselineError(f"{cls.name}: {key} is given twice; give each parameter once")
            if not equals or key not in fields:
                known = ", ".join(fields) or "none"
                raise BaselineError(f"{cls.name}: bad parameter {item!r}; write key=value with key one of: {known}")
            kind = {"int": int, "str": str}.get(str(getattr(fields[key].type, "__name__", fields[key].type)), float)
            try:
                values[key] = kind(text)
            except ValueError:
                raise BaselineError(
                    f"{cls.name}: {key}={text!r} must be {'an integer' if kind is int else 'a number'}"
                ) from None
        baseline = cls(**values)
        ratio = getattr(baseline, "ratio", 0.0)
        if not 0.0 <= ratio <= 1.0:
            raise BaselineError(f"{cls.name}: ratio={ratio} is outside [0, 1]")
        return baseline

    def check_model(self, shape: ModelShape) -> None:
        """Refuse a model this baseline's arguments do not fit (:func:`~rlprune.policies.compat.check_compatible`):
        every layer its schedule names lies inside the model."""
        for layer in sorted(self.schedule(self.max_strength, shape.layers)):
            shape.layer("a schedule's layer", layer)

    def check_whole(self, field: str, low: int) -> None:
        """Refuse an argument ``field`` that is not a whole number ``>= low``."""
        value = getattr(self, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BaselineError(f"{self.name}: {field}={value!r} must be a whole number >= {low}")

    def decision_layers(self, num_layers: int) -> tuple[int, ...]:
        layers = tuple(sorted(self.schedule(self.max_strength, num_layers)))
        bad = [layer for layer in layers if not 0 <= layer < num_layers]
        if bad:
            raise BaselineError(f"{self.name}: layer(s) {bad} do not exist in a model with {num_layers} layers")
        return layers

    def act(self, features: Features, budget: float | None, deterministic: bool = True) -> LayerAction:
        strength = self.strength if budget is None else self.solve(features, budget)
        return self.schedule(strength, features.num_layers).get(features.layer, KEEP)

    def spans(self, action: LayerAction) -> LayerAction:
        """``action`` with this baseline's span options (``pool=``, ``unit=``), where it has any."""
        pool, unit = getattr(self, "pool", ""), getattr(self, "unit", "token")
        if action.is_noop or (not pool and unit == "token"):
            return action
        return dataclasses.replace(action, pool=Pool.parse(pool) if pool else action.pool, unit=unit)

    def solve(self, features: Features, budget: float) -> float:
        """The weakest strength whose remaining schedule ends at or under ``budget`` (bisection)."""

        def ratio(strength: float) -> float:
            plan = self.schedule(strength, features.num_layers)
            return features.ratio_after({k: v for k, v in plan.items() if k >= features.layer})

        if ratio(0.0) <= budget:
            return 0.0
        low, high = 0.0, self.max_strength
        if ratio(high) > budget:
            return high  # as close as this method can get
        for _ in range(30):
            middle = (low + high) / 2
            low, high = (middle, high) if ratio(middle) > budget else (low, middle)
        return high

    def __str__(self) -> str:
        fields = sorted(dataclasses.fields(self), key=lambda f: f.name in SPAN_FIELDS)  # span options last
        shown = [f for f in fields if f.name not in SPAN_FIELDS or getattr(self, f.name) != f.default]
        params = ",".join(f"{f.name}={getattr(self, f.name)}" for f in shown)
        return f"{self.name}:{params}" if params else self.name


SPAN_FIELDS = ("pool", "unit")


@dataclass
class Spanned:
    """Span options of a rule-based method: ``pool=25`` or ``pool=-4:+16`` (how far a high score
    reaches), ``unit=sentence`` or ``unit=16`` (keep or drop whole sentences or chunks)."""

    pool: str = ""
    unit: str = "token"

    def __post_init__(self) -> None:
        try:
            if self.pool:
                self.pool = str(Pool.parse(self.pool))
            self.unit = parse_unit(self.unit)
        except RLPruneError as error:
            raise BaselineError(f"{getattr(self, 'name', 'baseline')}: {error}") from None

    def check_spans(self, shape: ModelShape) -> None:
        """Refuse a pool or chunk that reaches over the model's whole context (one span of everything)."""
        if self.pool:
            pool = Pool.parse(self.pool)
            shape.reach("pool", pool.before + pool.after + 1)
        if self.unit.isdigit():
            shape.reach("unit", int(self.unit))


def _prune(ratio: float, scorer: str, op: str = "prune") -> LayerAction:
    return LayerAction(op, min(max(ratio, 0.0), 1.0), scorer)


@dataclass
class NoReduction(Baseline):
    """The full model."""

    name: ClassVar[str] = "none"

    def act(self, features: Features, budget: float | None, deterministic: bool = True) -> LayerAction:
        return KEEP


@dataclass
class SingleLayerPrune(Spanned, Baseline):
    """Prune at one layer (or apply another ``op``) the tokens ``scorer`` ranks lowest."""

    scorer: ClassVar[str] = "attention"
    op: ClassVar[str] = "prune"
    layer: int = 2
    ratio: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_whole("layer", 0)

    @property
    def strength(self) -> float:
        return self.ratio

    def schedule(self, strength: float, num_layers: int) -> dict[int, LayerAction]:
        return {self.layer: self.spans(_prune(strength, self.scorer, self.op))}

    def check_model(self, shape: ModelShape) -> None:
        shape.layer("layer", self.layer)
        self.check_spans(shape)


@dataclass
class RandomPrune(SingleLayerPrune):
    """Prune random tokens at one layer: the floor any method must beat at the same FLOPs."""

    name: ClassVar[str] = "random"
    scorer: ClassVar[str] = "random"


@dataclass
class FastV(SingleLayerPrune):
    """FastV (Chen et al., 2024): after layer K, drop the tokens the last token attends to least."""

    name: ClassVar[str] = "fastv"
    scorer: ClassVar[str] = "last_query"


@dataclass
class SnapKV(SingleLayerPrune):
    """SnapKV-style selection (Li et al., 2024): the question window's attention, pooled so spans survive."""

    name: ClassVar[str] = "snapkv"
    scorer: ClassVar[str] = "attention"


@dataclass
class GemFilter(SingleLayerPrune):
    """GemFilter (Shi et al., 2024): the last token's attention at a middle layer picks the tokens to
    keep, then the prompt runs again from layer 0 on them alone (the ``reprefill`` op)."""

    name: ClassVar[str] = "gemfilter"
    scorer: ClassVar[str] = "last_query"
    op: ClassVar[str] = "reprefill"
    layer: int = 8


@dataclass
class PyramidDrop(Spanned, Baseline):
    """PyramidDrop (Xing et al., 2024): equal stages, each dropping the same share of what is left."""

    name: ClassVar[str] = "pyramid"
    stages: int = 3
    ratio: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_whole("stages", 1)

    @property
    def strength(self) -> float:
        return self.ratio

    def check_model(self, shape: ModelShape) -> None:
        """Each stage needs a layer of its own after layer 0: a model of L layers fits L - 1 stages."""
        shape.at_most("stages", self.stages, shape.layers - 1, "one stage per layer after layer 0")
        self.check_spans(shape)

    def schedule(self, strength: float, num_layers: int) -> dict[int, LayerAction]:
        layers = {round(num_layers * i / (self.stages + 1)) for i in range(1, self.stages + 1)}
        return {layer: self.spans(_prune(strength, "last_query")) for layer in sorted(layers) if 0 < layer < num_layers}


@dataclass
class ToMe(Spanned, Baseline):
    """ToMe-style merging (Bolya et al., 2023), causal: at every layer from ``start``, merge the
    most redundant share of tokens into similar later tokens."""

    name: ClassVar[str] = "tome"
    start: int = 1
    ratio: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_whole("start", 0)

    @property
    def strength(self) -> float:
        return self.ratio

    def check_model(self, shape: ModelShape) -> None:
        shape.layer("start", self.start)
        self.check_spans(shape)

    def schedule(self, strength: float, num_layers: int) -> dict[int, LayerAction]:
        ratio = min(max(strength, 0.0), 1.0)
        return {layer: self.spans(LayerAction("merge", ratio, "similarity")) for layer in range(self.start, num_layers)}


@dataclass
class Static(Baseline):
    """Any fixed schedule (``static:2:prune:0.5,12:merge:0.3``); a budget scales all its ratios."""

    name: ClassVar[str] = "static"
    schedule_text: str = "2:prune:0.5"

    def __post_init__(self) -> None:
        self._base = parse_schedule(self.schedule_text)

    @property
    def strength(self) -> float:
        return 1.0

    @property
    def max_strength(self) -> float:
        ratios = [a.ratio for a in self._base.values() if not a.is_noop]
        return 1.0 / min(ratios) if ratios else 1.0

    def schedule(self, strength: float, num_layers: int) -> dict[int, LayerAction]:
        return {
            layer: action if action.is_noop else dataclasses.replace(action, ratio=min(action.ratio * strength, 1.0))
            for layer, action in self._base.items()
        }

    @classmethod
    def from_params(cls, params: str) -> Static:
        return cls(params or cls.schedule_text)

    def __str__(self) -> str:
        return f"static:{self.schedule_text}"


TABLES = Path("eval", "best-static")
"""Where search results live: ``best-static:mixed-hard`` reads ``eval/best-static/mixed-hard.json`` in the
working directory, else the checkout's or the installed package's (:func:`rlprune.config.data_path`)."""


def table_path(spec: str) -> Path:
    """A best-static table given as a path or as the name of a shipped one."""
    path = Path(spec)
    if path.suffix == ".json" or path.exists():
        return path
    return data_path(TABLES, f"{spec}.json") or TABLES / f"{spec}.json"


@dataclass
class BestStatic(Baseline):
    """The strongest fixed schedule per budget, found by a grid search on a validation split.

    A learned policy has to beat the best fixed rule, not only the published ones. The search
    (:func:`rlprune.eval.best_static.search`, ``rlprune best-static``) writes a JSON table of the
    winning schedule per budget; at a budget this baseline runs the schedule found at the nearest
    searched budget, solved to meet the budget on the prompt at hand like any :class:`Static`.
    """

    name: ClassVar[str] = "best-static"
    table: str = "mixed-hard"

    def __post_init__(self) -> None:
        path = table_path(self.table)
        if not path.is_file():
            raise BaselineError(
                f"no best-static table at {path}; run `rlprune best-static --env PRESET --out {path}` first"
            )
        try:
            data = read_json(path, "best-static table")
            self._choices = {float(b): Static(entry["schedule"]) for b, entry in data["best"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, RLPruneError) as error:
            raise BaselineError(f"{path} is not a best-static table ({error}); run the search again") from None
        if not self._choices:
            raise BaselineError(f"{path} holds no schedules; run the search again")

    @classmethod
    def from_params(cls, params: str) -> BestStatic:
        return cls(params or cls.table)

    def choice(self, budget: float | None) -> Static:
        """The schedule for ``budget``: the one found at the nearest searched budget."""
        target = 0.5 if budget is None else budget
        return self._choices[min(self._choices, key=lambda b: abs(b - target))]

    def decision_layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(sorted({layer for s in self._choices.values() for layer in s.decision_layers(num_layers)}))

    def check_model(self, shape: ModelShape) -> None:
        for choice in self._choices.values():
            choice.check_model(shape)

    def act(self, features: Features, budget: float | None, deterministic: bool = True) -> LayerAction:
        schedule = self.choice(budget)
        if features.layer not in schedule.decision_layers(features.num_layers):
            return KEEP
        return schedule.act(features, budget, deterministic)

    def __str__(self) -> str:
        return f"best-static:{self.table}"


BASELINES: dict[str, type[Baseline]] = {
    cls.name: cls for cls in (NoReduction, RandomPrune, FastV, SnapKV, GemFilter, PyramidDrop, ToMe, Static, BestStatic)
}


def make_baseline(spec: str) -> Baseline:
    """Build a baseline from ``NAME[:PARAMS]`` (``fastv:layer=2``, ``static:2:prune:0.5``, ``best-static:TABLE``)."""
    if not isinstance(spec, str):
        raise BaselineError(f"a baseline spec is text such as fastv:layer=2, got {type(spec).__name__} {spec!r}")
    name, colon, params = spec.strip().partition(":")
    if colon and not params.strip():
        raise BaselineError(f"{spec!r} has nothing after ':'; drop the ':' or give the parameters (fastv:layer=2)")
    if name not in BASELINES:
        raise BaselineError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)} or a checkpoint folder")
    return BASELINES[name].from_params(params)
