"""Grid search for the strongest fixed schedule on a preset's validation split (``rlprune best-static``).

Every (decision layer, scorer, op), and for the question-aware scorers every span shape (pool
reach, sentence unit), is solved for each budget on each validation prompt, run
through the one reducer with the full model's answer teacher-forced, and scored by the share of
gold-answer tokens it predicts (top-1 agreement with the full model where the answer does not
appear in it). The best schedule per budget is written as a table that the ``best-static``
baseline reads.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.progress import Progress

from rlprune.envs import EnvConfig
from rlprune.envs.reference import Reference, ReferenceCache
from rlprune.envs.rewards import quality
from rlprune.io import atomic_write_text
from rlprune.models import fingerprint_id, load_model
from rlprune.policies import Policy, decider
from rlprune.policies.baselines import Static
from rlprune.reduction import sentence_end_ids
from rlprune.runner import Reducer, ReducerConfig

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
    )
    cache.warm(tasks)
    return reducer, [cache.get(t) for t in tasks]


def answer_score(reducer: Reducer, reference: Reference, policy: Policy, budget: float) -> float:
    """Share of gold-answer tokens ``policy`` still predicts top-1 with the full model's answer
    teacher-forced (top-1 agreement where the answer does not appear in it)."""
    out = reducer.run(
        reference.input_ids,
        decider(policy, reducer, budget),
        decision_layers=policy.decision_layers(reducer.dims.layers),
        logits="continuation",
        prompt_length=reference.prompt_length,
        protect_last=reference.protect_last,
    )
    q = quality(out.logits[0], reference)
    return q.agreement if q.answer_accuracy is None else q.answer_accuracy


def search(
    preset: str | Path | EnvConfig,
    budgets: Sequence[float] = (0.3, 0.5),
    items: int = 24,
    layers: Sequence[int] = LAYERS,
    spans: Sequence[str] = SPANS,
    *,
    model=None,
    tokenizer=None,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Score every candidate at every budget on the first ``items`` validation prompts of ``preset``."""
    reducer, references = validation_references(preset, items, model=model, tokenizer=tokenizer, cache_dir=cache_dir)
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
        "metric": "teacher-forced gold-answer token accuracy (top-1 agreement where the answer is absent)",
        "best": {b: {"schedule": text, "score": scores[b][text]} for b, text in best.items()},
        "scores": scores,
    }


def write_table(result: dict[str, Any], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return out
