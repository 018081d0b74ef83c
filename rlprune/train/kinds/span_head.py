"""Train a :class:`~rlprune.policies.span_head.SpanHeadPolicy` by supervision on where the evidence is.

For every training task whose gold answer occurs in its context, the model runs up to the head's
decision layer once (the same :meth:`Reducer.select` path inference takes) and the states the head
will read there are kept. The targets come from the task, not the prompt: the answer occurrence's
tokens and the sentence around them. A listwise loss pushes both above every other token, so any
top-k cut keeps them. Training tasks come from the train split only (their own templates, names
and essays); the test grids and suites are never seen.

Training is made as repeatable as is cheap (:func:`repeatable`): a fixed torch thread count,
deterministic kernels where torch has them, a seeded task and example order that no dict, set, hash
or directory-listing order reaches, and every prompt's states computed alone (batch of one). The same
machine then gives the same weights; another CPU's kernels round differently, so across machines
the result agrees within the tolerance tests/test_span_recipe.py checks, not bit for bit.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from rlprune.data.evidence import locate_evidence
from rlprune.data.generators import generate_suite
from rlprune.data.long import LongSuite
from rlprune.data.tasks import Task
from rlprune.engine import Reducer, ReducerConfig
from rlprune.errors import InvalidActionError, InvalidArgumentError
from rlprune.io import atomic_write_text
from rlprune.models import load_model, model_fingerprint
from rlprune.policies.checkpoint import find_policy, load_policy, read_config, save_policy
from rlprune.policies.compat import ModelShape
from rlprune.policies.kinds import expect_kind
from rlprune.policies.span_head import SpanHeadPolicy, listwise_loss
from rlprune.progress import Progress
from rlprune.prompts import build_prompt
from rlprune.reduction import sentence_end_ids, unit_ids
from rlprune.train.common.folder import SUMMARY, check_fresh_folder, last_checkpoint
from rlprune.train.kinds.span_ppo import tune_span_head

if TYPE_CHECKING:
    from rlprune.train.trainer import TrainOptions
from rlprune.train.recipe import Recipe, SpanHeadConfig, SpanPPOConfig

TRAIN_THREADS = 2
"""Torch threads while a span head trains, whatever the machine has: the thread count decides how
a CPU kernel splits its sums, so a fixed count keeps the rounding the same run to run."""


@contextmanager
def repeatable(threads: int | None = None) -> Iterator[None]:
    """``threads`` (default :data:`TRAIN_THREADS`) torch threads and deterministic algorithms inside;
    both are restored on the way out."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads or TRAIN_THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)  # ops without one warn rather than fail
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=warn_only)


@dataclass
class Example:
    """The states a head reads for one training prompt, and where its evidence is."""

    normed: Tensor  # (n, hidden) float16: carried prompt tokens after the decision layer's input norm
    window: int  # final tokens that are the question
    removable: Tensor  # (n,) bool
    answer: Tensor  # (n,) bool: tokens of the gold answer's occurrences
    sentence: Tensor  # (n,) bool: tokens of the sentences holding them


def training_tasks(config: SpanHeadConfig) -> list[Task]:
    """Train-split tasks: needles in real essays at several lengths and depths, and short grounded ones."""
    tasks: list[Task] = []
    for kind in config.long_kinds:
        suite = LongSuite(kind, lengths=config.long_lengths, per_cell=config.long_per_cell, split="train")
        tasks += suite.tasks()
    tasks += generate_suite(config.short_mix, "train", config.short_items, seed=config.seed, tokens=config.short_tokens)
    return tasks


@torch.no_grad()
def collect(reducer: Reducer, tokenizer, tasks: list[Task], layer: int, show_progress: bool = True) -> list[Example]:
    """One :class:`Example` per task whose answer occurs in its context."""
    ends = torch.tensor(reducer.config.sentence_ends or (), dtype=torch.long)
    examples = []
    with Progress(transient=True, disable=not show_progress) as progress:
        bar = progress.add_task(f"hidden states at layer {layer}", total=len(tasks))
        for task in tasks:
            progress.advance(bar)
            prompt = build_prompt(tokenizer, task.question, task.context)
            evidence = locate_evidence(prompt, task)
            if evidence is None:
                continue
            state = reducer.start(prompt.input_ids, decision_layers=(layer,), protect_last=prompt.protect_last)
            ctx = reducer.score_context(state)
            removable = state.removable().clone()
            answer = evidence.occurrences.any(0)
            units = unit_ids("sentence", ctx.positions, prompt.input_ids[0], ends)
            sentence = torch.isin(units, units[answer]) & ~answer
            # protected tokens are always kept: only the removable ones are targets to rank
            examples.append(
                Example(ctx.normed[0].half(), ctx.window, removable, answer & removable, sentence & removable)
            )
    return examples


def fit(
    head: SpanHeadPolicy, examples: list[Example], config: SpanHeadConfig, show_progress: bool = True
) -> list[float]:
    """Adam on the listwise loss, one example a step; returns the mean loss per epoch."""
    optimizer = torch.optim.Adam(head.parameters(), lr=config.learning_rate)
    order = list(range(len(examples)))
    rng = random.Random(config.seed)
    history = []
    head.train()
    with Progress(transient=True, disable=not show_progress) as progress:
        bar = progress.add_task("training the span head", total=config.epochs * len(examples))
        for _ in range(config.epochs):
            rng.shuffle(order)
            total = 0.0
            for index in order:
                example = examples[index]
                normed = example.normed.float()
                scores = head.scores(normed, normed[-example.window :])
                scores = scores.masked_fill(~example.removable, float("-inf"))
                loss = listwise_loss(scores, [example.answer, example.sentence], [1.0, config.sentence_weight])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
                progress.advance(bar)
            history.append(total / max(len(examples), 1))
    return history


def supervise(
    reducer: Reducer, tokenizer, tasks: list[Task], config: SpanHeadConfig, layer: int, show_progress: bool = True
) -> tuple[SpanHeadPolicy, list[Example], list[float]]:
    """A head at ``layer`` fitted to ``tasks``' evidence; seeded from ``config.seed`` just before it is
    built, so a head is the same whether it is trained alone or as another head's later one."""
    examples = collect(reducer, tokenizer, tasks, layer, show_progress)
    torch.manual_seed(config.seed)
    head = SpanHeadPolicy(reducer.dims.hidden, layer, config.rank, config.channels, config.kernel)
    return head, examples, fit(head, examples, config, show_progress)


def supervised_head(
    config: SpanHeadConfig, model, tokenizer, show_progress: bool = True, start: str | Path | None = None
) -> tuple[SpanHeadPolicy, dict[str, Any]]:
    """A head supervised on ``config``'s tasks (with its later head, if any), or the one at ``start``;
    and what its training measured."""
    if start is not None and config.later_layer is not None:
        raise InvalidArgumentError("a later head is trained by supervision: drop --start, or --later-layer")
    torch.manual_seed(config.seed)
    if start is not None:
        why = f"PPO here tunes a span head's scores, and {start} is not a span head"
        head = expect_kind(load_policy(start, model), "span", why)
        return head, {"start": str(start), "supervised": read_config(find_policy(start)).get("training", {})}
    shape = ModelShape.of(model)  # both layers fit the model before any supervision
    shape.layer("decision_layer (--layer)", config.decision_layer)
    if config.later_layer is not None:
        shape.layer("later_layer (--later-layer)", config.later_layer)
    reducer = Reducer(model, ReducerConfig(sentence_ends=sentence_end_ids(tokenizer)))
    tasks = training_tasks(config)
    head, examples, history = supervise(reducer, tokenizer, tasks, config, config.decision_layer, show_progress)
    summary = {"tasks": len(tasks), "examples": len(examples), "loss": history, "config": _jsonable(config)}
    if config.later_layer is not None:  # the same tasks and targets, read at the deeper layer
        later, _, summary["later_loss"] = supervise(
            reducer, tokenizer, tasks, config, config.later_layer, show_progress
        )
        if learned(summary["later_loss"]):
            head.hand_over(later, config.min_keep)
        else:  # a head that did not learn would cut at random wherever the budget let it
            summary["later_dropped"] = True
    return head, summary


def learned(loss: list[float]) -> bool:
    """Whether a supervised fit ended finite and, over more than one epoch, below its first epoch."""
    return math.isfinite(loss[-1]) and (len(loss) == 1 or loss[-1] < loss[0])


@repeatable()
def train_span_head(
    config: SpanHeadConfig,
    out: str | Path,
    show_progress: bool = True,
    *,
    start: str | Path | None = None,
    ppo: SpanPPOConfig | Recipe | None = None,
    run_folder: str | Path | None = None,
    resume: bool = False,
    allow: Sequence[str] = (),
) -> dict[str, Any]:
    """Supervise a span head (or load the one at ``start``), tune it by PPO on the real reward when
    ``ppo`` is given (through the shared loop, in ``run_folder``: a temporary one if ``None``), and
    export it to ``out`` as a policy checkpoint; returns a summary.

    On ``resume`` a run folder holding a checkpoint continues its PPO stage without supervising again
    (``allow``: the fields that may differ from the run's, such as a longer stage's ``span_ppo.updates``)."""
    model, tokenizer = load_model(config.model)
    last = last_checkpoint(Path(run_folder)) if resume and run_folder is not None else None
    if last is None:
        head, summary = supervised_head(config, model, tokenizer, show_progress, start)
    else:
        head, summary = expect_kind(load_policy(last, model), "span", "a span run's checkpoint"), {"resumed": True}
        if start is not None:  # the head the run began from is its start/ already
            print(f"note: --start {start} is not used: the run resumes from its checkpoint {last}", file=sys.stderr)
    head.select_by(config.unit, sentence_end_ids(tokenizer))  # the RL stage samples the units the head cuts by
    if ppo is not None:
        summary["ppo"] = tune_span_head(
            head, model, tokenizer, ppo, show_progress, out=run_folder, resume=resume, allow=allow
        )
    save_policy(head.eval(), out, fingerprint=model_fingerprint(model), training=summary)
    return summary


def _jsonable(config: SpanHeadConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


SPAN_UNUSED = ("env", "workers", "address", "timesteps", "override", "device", "dtype", "cache_dir")
"""Options of :class:`~rlprune.train.trainer.TrainOptions` a span head's training has no use for."""


def train_span(options: TrainOptions, recipe: Recipe) -> dict[str, Any]:
    """Train the recipe's span head (``policy = "span"``): supervision, then PPO with a ``[span_ppo]`` table.

    The head goes to ``OUT/policy`` and what was trained, with the wall time, to ``OUT/summary.json``
    (with ``options.policy_only``, the head goes to ``OUT`` itself); ``options.seed`` overrides the recipe's.
    A PPO stage runs in ``OUT`` as a run of the shared loop (``last/``, ``best/``, ``run.json``), so
    ``options.resume`` continues it.
    """
    on_ray = recipe.backend == "ray" and recipe.span_ppo is not None  # the PPO stage plays on Ray workers
    extend = options.resume and recipe.span_ppo is not None and options.timesteps is not None
    used = ({"workers", "address"} if on_ray else set()) | ({"timesteps"} if extend else set())
    unused = options.given([name for name in SPAN_UNUSED if name not in used])
    if unused:
        raise InvalidActionError(
            f"{', '.join(unused)} do not apply to a span-head recipe: it trains on its own [span_head] tasks "
            "(and [span_ppo] env) in one process; edit the recipe instead"
        )
    if options.resume and (recipe.span_ppo is None or options.policy_only):
        raise InvalidActionError(
            "a span head's supervision keeps no checkpoints to resume (it takes minutes): run it again; "
            "a run with a [span_ppo] stage resumes that stage"
        )
    out, config, ppo = Path(options.out), recipe.span_head, recipe.span_ppo
    if options.model is not None and options.model != config.model:
        if ppo is not None:  # the stage's environment preset names its model too
            raise InvalidActionError(
                f"--model {options.model} differs from the recipe's model {config.model}, and its RL stage plays "
                f"on the {ppo.env} preset's model; edit both, or train the supervised head alone (--recipe span-head)"
            )
        config = replace(config, model=options.model)  # a span head's supervision fits any supported model
    if options.seed is not None:
        config = replace(config, seed=options.seed)
        ppo = None if ppo is None else replace(ppo, seed=options.seed)
    if extend and ppo is not None:  # --timesteps on --resume: the stage runs to this many episodes, in whole updates
        ppo = replace(ppo, updates=math.ceil(options.timesteps / (ppo.prompts * ppo.group)))
    stage = None if ppo is None else replace(recipe, span_head=config, span_ppo=ppo)
    if stage is not None and on_ray:  # --workers and --address, as for every kind on ray
        run = replace(stage.run, n_envs=options.workers or stage.run.n_envs)
        stage = replace(stage, run=run, ray=replace(stage.ray, address=options.address or stage.ray.address))
    if options.policy_only:
        summary = train_span_head(config, out, not options.quiet, start=options.start, ppo=stage if on_ray else ppo)
        return summary | {"policy_kind": recipe.policy}
    if not options.resume:
        check_fresh_folder(out)
    began = time.perf_counter()
    summary = train_span_head(
        config,
        out / "policy",
        not options.quiet,
        start=options.start,
        ppo=stage,
        run_folder=out,
        resume=options.resume,
        allow=("run.timesteps", "span_ppo.updates") if extend else (),
    )
    summary |= {"seconds": time.perf_counter() - began, "policy_kind": recipe.policy}
    if "ppo" in summary:  # the steps the run reached: a resume of a finished run says so
        summary["timesteps"] = summary["ppo"]["timesteps"]
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary
