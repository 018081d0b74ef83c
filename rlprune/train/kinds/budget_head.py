"""Train a :class:`~rlprune.policies.budget_head.BudgetHead`: per-prompt ratios under a constraint on the average.

A shipped span head scores every training prompt once at its decision layer. For every ratio of
the grid the head's own cut is worked out exactly (the reducer's projection and removal count), so
each prompt gets a row of outcomes: the realised FLOPs ratio and whether the whole gold answer
survives (:class:`Outcomes`). PPO then learns, in a one-step Gymnasium environment
(:class:`BudgetEnv`), which ratio to ask for given the scores' :func:`budget_features` and a target
average. Its reward is the evidence kept minus a price on FLOPs above the target; one Lagrange
multiplier per target rises while the running average of that target's episodes is above it and
falls while below (:class:`Duals`), so the policy learns to spend where the answer would otherwise
be lost. Both backends train it: Stable-Baselines3 in process, RLlib on Ray env runners (each runner
holds its own multipliers; they see the same prompts, so they settle on the same prices).

Training prompts are train-split tasks drawn with another seed than the span head's own, so the
head's scores on them look like its scores on new prompts; the validation split measures the result.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from rlprune.budget import oracle
from rlprune.data.evidence import locate_evidence
from rlprune.data.generators import generate_suite
from rlprune.data.long import LongSuite
from rlprune.data.tasks import Task, answer_correct
from rlprune.engine import Reducer
from rlprune.engine.features import Features
from rlprune.errors import InvalidActionError, InvalidArgumentError
from rlprune.io import atomic_write
from rlprune.policies.budget_head import BUDGET_FEATURES, BudgetHead, target_feature
from rlprune.policies.span_head import SpanHeadPolicy
from rlprune.progress import Progress
from rlprune.prompts import build_prompt
from rlprune.reduction import LayerAction, removal_count
from rlprune.train.recipe import REWARDS, BudgetHeadConfig


@dataclass
class Outcomes:
    """Per prompt: the budget features (target left out) and, per grid ratio, what the head's cut gives."""

    features: Tensor  # (prompts, len(BUDGET_FEATURES) - 1)
    ratios: Tensor  # (prompts, grid): the realised prefill FLOPs ratio
    kept: Tensor  # (prompts, grid) bool: the whole gold answer survives the cut
    answer: Tensor  # (prompts, grid): the answer's quality (likelihood, correctness, or the evidence kept)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def to_lists(self) -> dict[str, list]:
        """Plain lists, to send to Ray env runners with their config."""
        return {name: getattr(self, name).tolist() for name in ("features", "ratios", "kept", "answer")}

    @classmethod
    def from_lists(cls, data: dict[str, list]) -> Outcomes:
        return cls(*(torch.tensor(data[name]) for name in ("features", "ratios", "kept", "answer")))

    def save(self, path: Path) -> None:
        """Write the table as safetensors, atomically (a later run with the same settings reuses it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: getattr(self, name).contiguous() for name in ("features", "ratios", "kept", "answer")}
        atomic_write(path, lambda staging: save_file(tensors, staging))

    @classmethod
    def load(cls, path: Path) -> Outcomes:
        return cls(*(load_file(path)[name] for name in ("features", "ratios", "kept", "answer")))


def training_tasks(config: BudgetHeadConfig, split: str = "train") -> list[Task]:
    """Needles at several lengths and short grounded tasks of ``split``, drawn with ``config.seed``."""
    tasks: list[Task] = []
    per_cell = config.long_per_cell if split == "train" else 1
    for kind in config.long_kinds:
        suite = LongSuite(kind, lengths=config.long_lengths, per_cell=per_cell, split=split, seed=config.seed)
        tasks += suite.tasks()
    items = config.short_items if split == "train" else config.validation_items
    tasks += generate_suite(config.short_mix, split, items, seed=config.seed, tokens=config.short_tokens)
    return tasks


@torch.no_grad()
def outcomes(
    reducer: Reducer,
    tokenizer,
    head: SpanHeadPolicy,
    tasks: Sequence[Task],
    grid: Sequence[float],
    quality: str = "evidence",
    answer_tokens: int = 24,
    show_progress: bool = True,
) -> Outcomes:
    """One row per task whose answer occurs in its context (the others say nothing about the budget).

    ``quality`` fills :attr:`Outcomes.answer`: ``"evidence"`` copies the evidence kept (no extra
    cost); ``"answer"`` runs every grid ratio's reduced prefill to the end and teacher-forces the
    gold answer; ``"correct"`` generates ``answer_tokens`` greedy tokens at every grid ratio (one
    batch per prompt) and judges them as evaluation does.
    """
    if quality not in REWARDS:
        raise InvalidArgumentError(f"quality must be one of {', '.join(REWARDS)}, got {quality!r}")
    features, ratios, kept, answer = [], [], [], []
    layer = head.decision_layer
    with Progress(transient=True, disable=not show_progress) as progress:
        bar = progress.add_task(f"span head scores at layer {layer}", total=len(tasks))
        for task in tasks:
            progress.advance(bar)
            prompt = build_prompt(tokenizer, task.question, task.context)
            evidence = locate_evidence(prompt, task)
            if evidence is None:
                continue
            state = reducer.start(prompt.input_ids, decision_layers=(layer,), protect_last=prompt.protect_last)
            removable = state.removable()
            count = int(removable.sum())
            if count == 0:
                continue
            scores = head.token_scores(Features(reducer, state, 1.0))
            rank = torch.empty(count, dtype=torch.long)
            rank[scores[removable].argsort(descending=True, stable=True)] = torch.arange(count)
            actions, row_ratios, row_kept = [], [], []
            for ratio in grid:
                at = Features(reducer, state, ratio)
                action = at.action_for_share(head.op, "learned", 1.0)
                survivors = ~removable.clone()
                survivors[removable] = rank < count - removal_count(action, count)
                row_ratios.append(at.ratio_after({layer: action}))
                row_kept.append(evidence.kept(survivors)[0])
                actions.append(dataclasses.replace(action, token_scores=scores))
            if quality == "answer":
                gold = tokenizer.encode(task.answer, add_special_tokens=False)
                answer.append([_answer_likelihood(reducer, prompt, {layer: a}, gold) for a in actions])
            elif quality == "correct":
                texts = reduced_answers(reducer, tokenizer, prompt, layer, actions, answer_tokens)
                answer.append([float(bool(answer_correct(text, task))) for text in texts])
            else:
                answer.append([float(k) for k in row_kept])
            # the target is an input of its own (BudgetEnv prepends it): 0.0 stands in for it here
            features.append(head.budget_features(Features(reducer, state, 0.0), scores[removable])[1:])
            ratios.append(row_ratios)
            kept.append(row_kept)
    if not features:
        raise InvalidArgumentError("no task's answer occurs in its context: nothing to train a budget head on")
    return Outcomes(torch.stack(features), torch.tensor(ratios), torch.tensor(kept), torch.tensor(answer))


def _answer_likelihood(reducer: Reducer, prompt, schedule: dict[int, LayerAction], gold: list[int]) -> float:
    """The geometric-mean probability of the gold answer's tokens after the reduced prefill ``schedule`` gives."""
    out = reducer.run(prompt.input_ids, schedule, protect_last=prompt.protect_last)
    logits = out.logits[0, -1:]
    if len(gold) > 1:
        logits = torch.cat([logits, reducer.extend(out.state, gold[:-1])[0]])
    logprobs = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(gold)[:, None])
    return float(logprobs.mean().exp())


def reduced_answers(
    reducer: Reducer, tokenizer, prompt, layer: int, actions: Sequence[LayerAction], tokens: int
) -> list[str]:
    """The greedy answer after each of ``actions`` at ``layer``: one batched generation, row ``i`` cut by
    ``actions[i]``."""
    results = reducer.generate(
        [prompt.input_ids[0]] * len(actions),
        lambda state: actions[state.row],
        decision_layers=(layer,),
        protect_last=prompt.protect_last,
        max_new_tokens=tokens,
    )
    return [tokenizer.decode(result.tokens[0], skip_special_tokens=True) for result in results]


def normalization(outcomes: Outcomes, targets: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Centre and scale of the :data:`BUDGET_FEATURES` over the training prompts and targets."""
    target = torch.tensor([target_feature(t) for t in targets])
    center = torch.cat([target.mean()[None], outcomes.features.mean(0)])
    spread = torch.cat([target.std()[None] if len(targets) > 1 else torch.ones(1), outcomes.features.std(0)])
    return center.float(), spread.nan_to_num(1.0).clamp_min(1e-3).float()


def export_head(head: BudgetHead, outcomes: Outcomes, targets: Sequence[float]) -> BudgetHead:
    """``head`` (trained on the environment's normalised observations) reading raw features."""
    head.center, head.scale = normalization(outcomes, targets)
    return head.eval()


class Duals:
    """One Lagrange multiplier per target: the price of a FLOPs ratio above it, moved by each episode's."""

    def __init__(self, targets: Sequence[float], rate: float, initial: float) -> None:
        self.rate = rate
        self.prices = {float(t): float(initial) for t in targets}

    def price(self, target: float) -> float:
        return self.prices[target]

    def update(self, target: float, ratio: float) -> None:
        self.prices[target] = max(self.prices[target] + self.rate * (ratio - target), 0.0)


class BudgetEnv(gym.Env):
    """One step per episode: a training prompt and a target average; the action picks a grid ratio.

    The reward is the answer's quality at that ratio (its likelihood, or 1 if the whole answer
    survives the span head's cut, as ``reward`` says) minus the target's current price times how far
    the realised ratio is above the target (below earns it), minus ``thrift`` times the ratio (so the
    head asks for what a prompt needs, not more, when the target leaves room; the controller spends
    the room on every prompt alike).
    """

    def __init__(
        self,
        outcomes: Outcomes,
        targets: Sequence[float],
        duals: Duals,
        seed: int = 0,
        reward: str = "evidence",
        thrift: float = 0.05,
    ) -> None:
        self.thrift = thrift
        self.outcomes, self.targets, self.duals = outcomes, tuple(float(t) for t in targets), duals
        self.center, self.scale = normalization(outcomes, self.targets)
        self.quality = outcomes.kept.float() if reward == "evidence" else outcomes.answer.float()
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(len(BUDGET_FEATURES),), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(int(outcomes.ratios.shape[1]))
        self._rng = random.Random(seed)
        self._prompt, self._target = 0, self.targets[0]

    def _observation(self) -> np.ndarray:
        target = torch.tensor([target_feature(self._target)])
        raw = torch.cat([target, self.outcomes.features[self._prompt]])
        return ((raw - self.center) / self.scale).numpy().astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = random.Random(seed)
        self._prompt = self._rng.randrange(len(self.outcomes))
        self._target = self._rng.choice(self.targets)
        return self._observation(), {}

    def step(self, action: int):
        if not 0 <= int(action) < self.action_space.n:
            raise InvalidActionError(f"a budget action is a grid index in 0..{self.action_space.n - 1}, got {action}")
        ratio = float(self.outcomes.ratios[self._prompt, int(action)])
        quality = float(self.quality[self._prompt, int(action)])
        price = self.duals.price(self._target)
        self.duals.update(self._target, ratio)
        reward = quality - price * (ratio - self._target) - self.thrift * ratio
        info = {"flops_ratio": ratio, "quality": quality, "target": self._target, "price": price}
        return self._observation(), reward, True, False, info

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BudgetEnv:
        """Built inside a Ray env runner from :func:`rllib_env_config`'s plain config."""
        duals = Duals(config["targets"], config["dual_rate"], config["initial_price"])
        # every env of every runner draws its own prompts
        seed = (
            int(config["seed"])
            + 1000 * int(getattr(config, "worker_index", 0))
            + int(getattr(config, "vector_index", 0))
        )
        return cls(
            Outcomes.from_lists(config["outcomes"]), config["targets"], duals, seed, config["reward"], config["thrift"]
        )


def choices(head: BudgetHead, outcomes: Outcomes, target: float) -> Tensor:
    """The grid index the head picks for every prompt at ``target``."""
    target_column = torch.full((len(outcomes), 1), target_feature(target))
    with torch.no_grad():
        return head(torch.cat([target_column, outcomes.features], 1)).argmax(-1)


def oracle_kept(outcomes: Outcomes, target: float) -> float:
    """Share of prompts whose evidence survives when each prompt's ratio is chosen knowing the outcomes
    (:func:`rlprune.budget.oracle` on the evidence kept)."""
    return oracle(outcomes.ratios, outcomes.kept, target)[0] / len(outcomes)


def measure(head: BudgetHead, outcomes: Outcomes, targets: Sequence[float]) -> dict[str, dict[str, float]]:
    """Per target: the head's evidence kept and mean ratio, the same at the fixed grid ratio nearest the
    head's mean, and the oracle's at the head's mean."""
    grid = torch.tensor(head.grid)
    rows = outcomes.ratios.new_tensor(range(len(outcomes))).long()
    report = {}
    for target in targets:
        picked = choices(head, outcomes, target)
        mean = float(outcomes.ratios[rows, picked].mean())
        nearest = int((grid - target).abs().argmin())
        report[f"{target:g}"] = {
            "adaptive_answer": float(outcomes.answer[rows, picked].float().mean()),
            "fixed_answer": float(outcomes.answer[:, nearest].float().mean()),
            "adaptive_kept": float(outcomes.kept[rows, picked].float().mean()),
            "adaptive_mean": mean,
            "adaptive_std": float(outcomes.ratios[rows, picked].std()),
            "fixed_kept": float(outcomes.kept[:, nearest].float().mean()),
            "fixed_mean": float(outcomes.ratios[:, nearest].mean()),
            "oracle_kept_at_adaptive_mean": oracle_kept(outcomes, mean),
        }
    return report


__all__ = [
    "BudgetEnv",
    "Duals",
    "Outcomes",
    "measure",
    "oracle_kept",
    "outcomes",
    "reduced_answers",
]


@dataclass(frozen=True)
class BudgetKind:
    """How a backend trains a budget head on :class:`BudgetEnv` (the ``budget`` entry of its kind table)."""

    learn: Callable[[BudgetHeadConfig, Outcomes, bool], tuple[BudgetHead, Duals]]
    """``(config, outcomes, show_progress) -> (head, prices)``: PPO on the outcome table, exported with
    :func:`export_head`, and the Lagrange multipliers it settled on."""
