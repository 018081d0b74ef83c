"""Train a budget head: the outcome tables, PPO on the recipe's backend (the ``budget`` entry of its
kind table: :data:`~rlprune.train.backends.sb3.SB3_KINDS`, :data:`~rlprune.train.backends.rllib.RLLIB_KINDS`),
and the export of the span head with its budget head (:mod:`.budget_head` holds the pieces)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError

from rlprune.data.tasks import Task
from rlprune.engine import Reducer, ReducerConfig
from rlprune.errors import InvalidActionError
from rlprune.io import atomic_write_text
from rlprune.models import load_model
from rlprune.policies.checkpoint import load_policy, save_policy
from rlprune.policies.kinds import expect_kind
from rlprune.policies.span_head import SpanHeadPolicy
from rlprune.reduction import sentence_end_ids
from rlprune.train.common.folder import SUMMARY, check_fresh_folder
from rlprune.train.kinds.budget_head import BudgetKind, Outcomes, measure, outcomes, training_tasks
from rlprune.train.recipe import BudgetHeadConfig, Recipe

if TYPE_CHECKING:
    from rlprune.train.trainer import TrainOptions

BUDGET_UNUSED = ("env", "workers", "address", "timesteps", "override", "device", "dtype", "start")
"""Options of :class:`~rlprune.train.trainer.TrainOptions` a budget head's training has no use for
(its PPO length and environments are the recipe's ``[budget_head]`` settings)."""


def train_budget(options: TrainOptions, recipe: Recipe) -> dict[str, Any]:
    """Train the recipe's budget head (``policy = "budget"``) on ``recipe.backend`` and export it with its
    span head to ``OUT/policy``, the summary and wall time to ``OUT/summary.json`` (with
    ``options.policy_only``, the policy goes to ``OUT`` itself); ``options.cache_dir`` keeps the outcome
    tables; ``options.seed`` overrides the recipe's."""
    unused = options.given(BUDGET_UNUSED)
    if unused:
        raise InvalidActionError(
            f"{', '.join(unused)} do not apply to a budget-head recipe: it trains on its own [budget_head] "
            "prompts; edit the recipe instead"
        )
    if options.resume:
        raise InvalidActionError("a budget-head run keeps no checkpoints to resume (it takes minutes): run it again")
    config = recipe.budget_head
    if options.model is not None and options.model != config.model:
        raise InvalidActionError(f"--model {options.model} differs from the recipe's model {config.model}")
    if options.seed is not None:
        config = dataclasses.replace(config, seed=options.seed)
    out, show, backend = Path(options.out), not options.quiet, recipe.backend
    if options.policy_only:
        summary = train_budget_head(config, out, show, cache=options.cache_dir, backend=backend)
        return summary | {"policy_kind": recipe.policy}
    check_fresh_folder(out)
    began = time.perf_counter()
    summary = train_budget_head(config, out / "policy", show, cache=options.cache_dir, backend=backend)
    summary |= {"seconds": time.perf_counter() - began, "policy_kind": recipe.policy}
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


def train_budget_head(
    config: BudgetHeadConfig,
    out: str | Path,
    show_progress: bool = True,
    cache: str | Path | None = None,
    backend: str = "sb3",
) -> dict[str, Any]:
    """Score prompts, train the budget head with PPO on ``backend`` and export span head + budget head to ``out``.

    With ``cache``, the outcome tables (the slow part with ``reward="correct"``) are kept there
    and reused by a later run whose prompts, grid and reward are the same.
    """
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(config.model)
    why = f"a budget head reads a span head's scores, and {config.span_policy} is not a span head"
    span = expect_kind(load_policy(config.span_policy, model), "span", why)
    span.drop_later()  # ratios are chosen and scored for the first head's cut, so that head cuts at every ratio
    reducer = Reducer(model, ReducerConfig(sentence_ends=sentence_end_ids(tokenizer)))
    seen = {task.uid for task in _span_training_tasks(config)}
    train_tasks = [task for task in training_tasks(config, "train") if task.uid not in seen]
    quality = {"quality": config.reward, "answer_tokens": config.answer_tokens, "show_progress": show_progress}

    def table(split: str, tasks: list[Task]) -> Outcomes:
        path = None if cache is None else Path(cache) / f"{_table_key(config, span, split)}.safetensors"
        if path is not None and path.exists():
            try:
                return Outcomes.load(path)
            except (SafetensorError, KeyError, OSError):
                pass  # a damaged table is scored again and rewritten
        result = outcomes(reducer, tokenizer, span, tasks, config.grid, **quality)
        if path is not None:
            result.save(path)
        return result

    train = table("train", train_tasks)
    validation = table("validation", training_tasks(config, "validation"))
    head, duals = budget_kind(backend).learn(config, train, show_progress)
    policy = SpanHeadPolicy(**(span.config() | head.config()))  # type: ignore[arg-type]
    policy.load_state_dict(span.state_dict(), strict=False)
    policy.budget_head.load_state_dict(head.state_dict())  # type: ignore[union-attr]
    summary = {
        "prompts": len(train),
        "validation_prompts": len(validation),
        "prices": {f"{t:g}": round(p, 4) for t, p in duals.prices.items()},
        "train": measure(head, train, config.targets),
        "validation": measure(head, validation, config.targets),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
        | {"backend": backend},
    }
    save_policy(policy.eval(), out, model=model, training=summary)
    return summary


BACKEND_KINDS = {"sb3": "rlprune.train.backends.sb3:SB3_KINDS", "ray": "rlprune.train.backends.rllib:RLLIB_KINDS"}
"""Each backend's kind table, imported when a run uses it (Ray is heavy)."""


def budget_kind(backend: str) -> BudgetKind:
    """How ``backend`` trains a budget head: the ``budget`` entry of its kind table."""
    module, attr = BACKEND_KINDS[backend].split(":")
    return getattr(importlib.import_module(module), attr)["budget"]


def _table_key(config: BudgetHeadConfig, span: SpanHeadPolicy, split: str) -> str:
    """What an outcome table depends on, hashed: the span head's weights and the prompt, grid and
    reward settings (the PPO settings do not change it)."""
    fields = ("model", "span_policy", "grid", "long_kinds", "long_lengths", "long_per_cell", "short_mix",
              "short_items", "short_tokens", "validation_items", "seed", "reward", "answer_tokens")  # fmt: skip
    settings = {name: getattr(config, name) for name in fields} | {"split": split}
    hasher = hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode())
    for tensor in span.state_dict().values():
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest = hasher.hexdigest()[:16]
    return f"{split}-{config.reward}-{digest}"


def _span_training_tasks(config: BudgetHeadConfig) -> list[Task]:
    """The prompts the shipped span head trained on (kept out of the budget head's)."""
    from rlprune.train.kinds.span_head import training_tasks as span_tasks
    from rlprune.train.recipe import SpanHeadConfig

    return span_tasks(SpanHeadConfig(model=config.model))
