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
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from rlprune.budget import oracle
from rlprune.data.evidence import locate_evidence
from rlprune.data.long import LongSuite
from rlprune.data.tasks import Task, answer_correct, generate_suite
from rlprune.engine import Reducer, ReducerConfig
from rlprune.errors import InvalidActionError, InvalidArgumentError
from rlprune.features import Features
from rlprune.io import atomic_write
from rlprune.models import load_model
from rlprune.policies.budget_head import BUDGET_FEATURES, DEFAULT_GRID, BudgetHead, target_feature
from rlprune.policies.checkpoint import load_policy, save_policy
from rlprune.policies.kinds import expect_kind
from rlprune.policies.span_head import SpanHeadPolicy
from rlprune.progress import Progress
from rlprune.prompts import build_prompt
from rlprune.reduction import LayerAction, removal_count, sentence_end_ids
from rlprune.train.recipe import SHORT_MIX

BACKENDS = ("sb3", "ray")
REWARDS = ("correct", "answer", "evidence")


@dataclass(frozen=True)
class BudgetHeadConfig:
    """What a budget head is trained on and how."""

    model: str = "smollm2-135m"
    span_policy: str = "smollm2-135m-span"
    grid: tuple[float, ...] = DEFAULT_GRID
    targets: tuple[float, ...] = (0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
    hidden: tuple[int, ...] = (32, 32)
    long_kinds: tuple[str, ...] = ("niah", "niah-multikey", "niah-multivalue")
    long_lengths: tuple[int, ...] = (512, 1024, 2048)
    long_per_cell: int = 4
    short_mix: dict[str, float] = field(default_factory=lambda: dict(SHORT_MIX))
    short_items: int = 400
    short_tokens: tuple[int, int] = (150, 1100)
    validation_items: int = 120
    seed: int = 1  # the span head trained on seed 0's prompts
    timesteps: int = 120_000
    n_envs: int = 8
    n_steps: int = 256
    learning_rate: float = 1e-3
    entropy: float = 0.01
    dual_rate: float = 0.01
    initial_price: float = 1.0
    # "evidence": the whole answer survives the cut; "answer": its likelihood after the reduced prefill;
    # "correct": the reduced model's greedy answer is right (slowest: one generation per prompt and ratio)
    reward: str = "evidence"
    answer_tokens: int = 24  # new tokens generated per answer for the "correct" reward
    thrift: float = 0.05  # a small cost on every ratio: of two ratios that keep the answer, the cheaper wins
    backend: str = "sb3"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InvalidArgumentError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.reward not in REWARDS:
            raise InvalidArgumentError(f"reward must be one of {', '.join(REWARDS)}, got {self.reward!r}")
        if isinstance(self.answer_tokens, bool) or not isinstance(self.answer_tokens, int) or self.answer_tokens < 1:
            raise InvalidArgumentError(f"answer_tokens must be a whole number >= 1, got {self.answer_tokens!r}")
        if not self.targets or any(not 0 < t <= 1 for t in self.targets):
            raise InvalidArgumentError(f"targets are average FLOPs ratios in (0, 1], got {list(self.targets)}")
        BudgetHead(self.grid, self.hidden)  # the grid and widths are checked where they are used


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


def train_sb3(config: BudgetHeadConfig, train: Outcomes, show_progress: bool = True) -> tuple[BudgetHead, Duals]:
    """PPO with Stable-Baselines3 on :class:`BudgetEnv` copies sharing one set of multipliers."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    duals = Duals(config.targets, config.dual_rate, config.initial_price)
    envs = DummyVecEnv(
        [
            lambda i=i: BudgetEnv(train, config.targets, duals, config.seed + i, config.reward, config.thrift)
            for i in range(config.n_envs)
        ]
    )
    model = PPO(
        "MlpPolicy",
        envs,
        n_steps=config.n_steps,
        batch_size=config.n_steps,
        n_epochs=5,
        learning_rate=config.learning_rate,
        gamma=0.0,  # one step per episode
        ent_coef=config.entropy,
        policy_kwargs={"net_arch": {"pi": list(config.hidden), "vf": list(config.hidden)}, "activation_fn": nn.Tanh},
        seed=config.seed,
        device="cpu",
    )

    class Advance(BaseCallback):
        def _on_step(self) -> bool:
            progress.update(bar, completed=self.num_timesteps)
            return True

    with Progress(disable=not show_progress) as progress:
        bar = progress.add_task("PPO on the budget (sb3)", total=config.timesteps)
        model.learn(config.timesteps, callback=Advance())
    head = BudgetHead(config.grid, config.hidden)
    actor = model.policy.mlp_extractor.policy_net
    linears = [module for module in actor if isinstance(module, nn.Linear)]
    for mine, theirs in zip([m for m in head.trunk if isinstance(m, nn.Linear)], linears, strict=True):
        mine.load_state_dict(theirs.state_dict())
    head.logits.load_state_dict(model.policy.action_net.state_dict())
    return export_head(head, train, config.targets), duals


def train_budget_head(
    config: BudgetHeadConfig, out: str | Path, show_progress: bool = True, cache: str | Path | None = None
) -> dict[str, Any]:
    """Score prompts, train the budget head with PPO and export span head + budget head to ``out``.

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
    if config.backend == "sb3":
        head, duals = train_sb3(config, train, show_progress)
    else:
        from rlprune.train.kinds.budget_rllib import train_rllib

        head, duals = train_rllib(config, train, show_progress)
    policy = SpanHeadPolicy(**(span.config() | head.config()))  # type: ignore[arg-type]
    policy.load_state_dict(span.state_dict(), strict=False)
    policy.budget_head.load_state_dict(head.state_dict())  # type: ignore[union-attr]
    summary = {
        "prompts": len(train),
        "validation_prompts": len(validation),
        "prices": {f"{t:g}": round(p, 4) for t, p in duals.prices.items()},
        "train": measure(head, train, config.targets),
        "validation": measure(head, validation, config.targets),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()},
    }
    save_policy(policy.eval(), out, model=model, training=summary)
    return summary


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


__all__ = [
    "BudgetEnv",
    "BudgetHeadConfig",
    "Duals",
    "Outcomes",
    "measure",
    "oracle_kept",
    "outcomes",
    "reduced_answers",
    "train_budget_head",
]
