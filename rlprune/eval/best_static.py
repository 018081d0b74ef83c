"""Grid search for the strongest fixed schedule on a preset's validation split (``rlprune best-static``).

Every (decision layer, scorer, op), and for the question-aware scorers every span shape (pool
reach, sentence unit), is solved for each budget on each validation prompt, run
through the one reducer with the full model's answer teacher-forced, and scored by the share of
gold-answer tokens it predicts (top-1 agreement with the full model where the answer does not
appear in it). The best schedule per budget is written as a table that the ``best-static``
baseline reads.

The grid is checked before anything runs: at least one budget, each once; layers the model has;
span shapes that parse; and a table path that can be written, so a search is never lost at the end.
"""

from __future__ import annotations

import itertools
import json
import numbers
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from rlprune.engine import Reducer, ReducerConfig
from rlprune.envs import EnvConfig
from rlprune.envs.reference import Reference, ReferenceCache
from rlprune.errors import InvalidActionError, RLPruneError
from rlprune.inference import check_budget
from rlprune.io import atomic_write_text
from rlprune.metrics import answer_token_accuracy, log_probs, top1_agreement
from rlprune.models import fingerprint_id, load_model
from rlprune.policies import Policy
from rlprune.policies.baselines import Static
from rlprune.progress import Progress
from rlprune.reduction import parse_schedule, sentence_end_ids

T = TypeVar("T")

LAYERS = (2, 4, 8)
SCORERS = ("attention", "relevance", "key_norm", "similarity")
OPS = ("prune", "merge")
SPANS = ("pool=25", "pool=-4:+16", "unit=sentence")
"""Span shapes tried, besides each scorer's own, with the scorers that see the question (pruning)."""
SPAN_SCORERS = ("attention", "relevance")


def candidates(layers: Sequence[int] = LAYERS, spans: Sequence[str] = SPANS) -> list[str]:
    """Schedule texts of the grid (the ratio is a placeholder: it is solved for each budget)."""
    plain = [f"{layer}:{op}:0.5:{scorer}" for layer, scorer, op in itertools.product(layers, SCORERS, OPS)]
    spanned = [
        f"{layer}:prune:0.5:{scorer}:{span.replace(',', ':')}"
        for layer, scorer, span in itertools.product(layers, SPAN_SCORERS, spans)
    ]
    return plain + spanned


def _join(values: Sequence[object]) -> str:
    return ", ".join(str(value) for value in values)


def _each_once(flag: str, values: tuple[T, ...], example: str, *, required: bool = True) -> tuple[T, ...]:
    """``values`` with none repeated (a repeat would be searched twice) and, where ``required``, at least one."""
    if required and not values:
        raise InvalidActionError(f"{flag} lists nothing; give at least one, e.g. {flag} {example}")
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise InvalidActionError(f"{flag} lists {_join(repeated)} more than once; give each once")
    return values


def check_budgets(budgets: Sequence[float]) -> tuple[float, ...]:
    """The budgets to search: at least one, each in (0, 1] and given once."""
    for budget in budgets:
        check_budget(budget)
    return _each_once("--budgets", tuple(float(budget) for budget in budgets), "0.3,0.5")


def check_spans(spans: Sequence[str]) -> tuple[str, ...]:
    """The span shapes to search (none is fine), each parsed once now rather than deep in the search."""
    for shape in spans:
        try:
            parse_schedule(f"2:prune:0.5:attention:{shape.replace(',', ':')}")
        except InvalidActionError:
            raise InvalidActionError(
                f"--spans {shape!r} is not a span shape; give pool=P, pool=-B:+F or unit=sentence, "
                '";"-separated, e.g. --spans "pool=25;unit=sentence"'
            ) from None
    return _each_once("--spans", tuple(spans), "pool=25", required=False)


def grid_layers(layers: Sequence[int] | None, model_layers: int) -> tuple[tuple[int, ...], str]:
    """The decision layers to search, and a note naming default layers the model lacks ("" if none).

    Layers given must all exist in the model; by default those of :data:`LAYERS` that it has are searched.
    """
    has = f"the model has {model_layers} layers (0..{model_layers - 1})"
    if layers is None:
        kept = tuple(layer for layer in LAYERS if layer < model_layers)
        left_out = [layer for layer in LAYERS if layer >= model_layers]
        if not kept:
            raise InvalidActionError(f"none of the default layers {_join(LAYERS)} exists: {has}; choose with --layers")
        note = f"layers {_join(left_out)} left out of the search: {has}; choose with --layers" if left_out else ""
        return kept, note
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
            raise InvalidActionError(f"--layers holds {layer!r}; give layer numbers such as 2,4,8")
    missing = [int(layer) for layer in layers if not 0 <= layer < model_layers]
    if missing:
        raise InvalidActionError(f"--layers {_join(missing)}: {has}; choose layers from 0 to {model_layers - 1}")
    return _each_once("--layers", tuple(int(layer) for layer in layers), "2,4,8"), ""


def check_table_path(out: str | Path) -> Path:
    """Where the table goes, checked before a search that may take hours: a file name (not a folder)
    whose folder exists or can be made (missing folders are created when the table is written)."""
    out = Path(out)
    if out.is_dir():
        raise RLPruneError(f"--out {out} is a folder; give the table's file name, e.g. --out {out / 'table.json'}")
    parent = next((folder for folder in out.parents if folder.exists()), Path.cwd())
    if not parent.is_dir():
        raise RLPruneError(f"--out {out} cannot be written: {parent} is a file, not a folder; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RLPruneError(f"--out {out} cannot be written: permission denied in {parent}; choose another --out")
    return out


def validation_references(
    preset: str | Path | EnvConfig,
    items: int,
    *,
    model=None,
    tokenizer=None,
    cache_dir: str | Path | None = None,
) -> tuple[Reducer, list[Reference]]:
    """A reducer for the preset's model and the full model's references for its first validation prompts."""
    config = EnvConfig.load(preset) if not isinstance(preset, EnvConfig) else preset
    if model is None:
        model, tokenizer = load_model(config.model, device=config.device, dtype=config.dtype)
    episode = config.episode
    reducer = Reducer(
        model, ReducerConfig(protect_first=episode.protect_first, sentence_ends=sentence_end_ids(tokenizer))
    )
    tasks = config.tasks.tasks("validation")[:items]
    cache = ReferenceCache(
        reducer,
        tokenizer,
        first_layer=episode.decision_layers[0],
        continuation_tokens=episode.continuation_tokens,
        folder=cache_dir,
        target=episode.target,
    )
    cache.warm(tasks)
    return reducer, [cache.get(t) for t in tasks]


def answer_score(reducer: Reducer, reference: Reference, policy: Policy, budget: float) -> float:
    """Share of gold-answer tokens ``policy`` still predicts top-1 with the full model's answer
    teacher-forced (top-1 agreement where the answer does not appear in it)."""
    out = reducer.run(
        reference.input_ids,
        policy=policy,
        budget=budget,
        logits="continuation",
        prompt_length=reference.prompt_length,
        protect_last=reference.protect_last,
    )
    logprobs, reference = log_probs(out.logits[0]), reference.to(out.logits.device)
    accuracy = answer_token_accuracy(logprobs, reference.continuation, reference.answer_mask)
    return top1_agreement(reference.top_k, logprobs).float().mean().item() if accuracy is None else accuracy


def search(
    preset: str | Path | EnvConfig,
    budgets: Sequence[float] = (0.3, 0.5),
    items: int = 24,
    layers: Sequence[int] | None = None,
    spans: Sequence[str] = SPANS,
    *,
    model=None,
    tokenizer=None,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Score every candidate at every budget on the first ``items`` validation prompts of ``preset``.

    ``layers`` (default: those of :data:`LAYERS` the model has, with a note on the others) must exist
    in the model; bad budgets, layers or span shapes fail before the full model's references are made.
    """
    budgets, spans = check_budgets(budgets), check_spans(spans)
    if isinstance(items, bool) or not isinstance(items, numbers.Integral) or items < 1:
        raise InvalidActionError(f"--items must be a whole number of at least 1, got {items!r}")
    config = EnvConfig.load(preset) if not isinstance(preset, EnvConfig) else preset
    if model is None:
        model, tokenizer = load_model(config.model, device=config.device, dtype=config.dtype)
    layers, note = grid_layers(layers, Reducer(model).dims.layers)
    if note and show_progress:
        print(f"note: {note}", file=sys.stderr)
    reducer, references = validation_references(config, items, model=model, tokenizer=tokenizer, cache_dir=cache_dir)
    texts = candidates(layers, spans)
    scores: dict[str, dict[str, float]] = {str(b): {} for b in budgets}
    with Progress(transient=True, disable=not show_progress) as progress:
        bar = progress.add_task("best-static grid", total=len(texts) * len(budgets) * len(references))
        for budget, text in itertools.product(budgets, texts):
            total = 0.0
            for reference in references:
                total += answer_score(reducer, reference, Static(text), budget)
                progress.advance(bar)
            scores[str(budget)][text] = total / len(references)
    best = {b: max(table, key=table.get) for b, table in scores.items()}
    return {
        "preset": str(preset),
        "model": fingerprint_id(reducer.model),
        "items": len(references),
        "layers": list(layers),
        "metric": "teacher-forced gold-answer token accuracy (top-1 agreement where the answer is absent)",
        "best": {b: {"schedule": text, "score": scores[b][text]} for b, text in best.items()},
        "scores": scores,
    }


def write_table(result: dict[str, Any], out: str | Path) -> Path:
    """Write the table to ``out`` whole (its folder is created if missing)."""
    out = check_table_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return out
