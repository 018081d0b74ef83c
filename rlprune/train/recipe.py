"""Training recipes (``train/*.toml``): PPO hyper-parameters, how the run is organised, and what a
span head is trained on."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from rlprune.config import find_config, from_dict, load_toml
from rlprune.data.long import LONG_KINDS
from rlprune.data.tasks import KINDS
from rlprune.errors import InvalidArgumentError
from rlprune.policies.budget_head import DEFAULT_GRID, BudgetHead
from rlprune.policies.kinds import TRAINERS
from rlprune.reduction.spans import parse_unit


def check_number(name: str, value: object, low: float, high: float = math.inf, *, low_open: bool = True) -> None:
    """``value`` must be a finite number in ``(low, high]`` (``[low, high]`` without ``low_open``):
    a NaN or a wrong sign fails here, naming the field, rather than deep inside PyTorch."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} = {value!r} must be a finite number")
    if value < low or (low_open and value == low) or value > high:
        above = f"above {low:g}" if low_open else f"at least {low:g}"
        raise ValueError(f"{name} = {value!r} must be {above}" + (f" and at most {high:g}" if high < math.inf else ""))


def check_count(name: str, value: object, low: int = 1) -> None:
    """``value`` must be a whole number of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} = {value!r} must be a whole number")
    if value < low:
        raise ValueError(f"{name} = {value} must be at least {low}")


def check_widths(name: str, value: object) -> None:
    """``value`` must list one or more positive layer widths."""
    if not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"{name} = {value!r} must list positive layer widths, e.g. [64, 64]")
    for index, width in enumerate(value):
        check_count(f"{name}[{index}]", width)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} = {value!r} is unknown; use one of {', '.join(choices)}")


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters (Stable-Baselines3 names)."""

    learning_rate: float = 3e-4
    n_steps: int = 128  # per environment, per rollout
    batch_size: int = 64
    n_epochs: int = 4
    gamma: float = 1.0  # episodes are a few steps long; the final reward counts in full
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: tuple[int, ...] = (64, 64)
    token_hidden: tuple[int, ...] = (32, 32)  # token-level policies: the per-token scoring MLP

    def __post_init__(self) -> None:
        check_number("learning_rate", self.learning_rate, 0)
        check_count("n_steps", self.n_steps)
        check_count("batch_size", self.batch_size, 2)  # advantages are normalised per mini-batch
        check_count("n_epochs", self.n_epochs)
        check_number("gamma", self.gamma, 0, 1)
        check_number("gae_lambda", self.gae_lambda, 0, 1)
        check_number("clip_range", self.clip_range, 0)
        check_number("ent_coef", self.ent_coef, 0, low_open=False)
        check_number("vf_coef", self.vf_coef, 0, low_open=False)
        check_number("max_grad_norm", self.max_grad_norm, 0)
        check_widths("hidden", self.hidden)
        check_widths("token_hidden", self.token_hidden)


@dataclass(frozen=True)
class RunConfig:
    """Length, parallelism, checkpoints and validation of a training run."""

    timesteps: int = 20_000
    n_envs: int = 2  # sb3: episodes run side by side; ray: env runners
    envs: str = "batched"  # sb3: "batched" (one model, one batched forward) or "processes" (one model each)
    torch_threads: int = 1  # per environment process, so the cores are not oversubscribed
    seed: int = 0
    checkpoint_every: int = 1024  # timesteps between checkpoints (a kill loses at most this much)
    eval_every: int = 2048  # timesteps between validation runs
    eval_tasks: int = 16  # validation prompts per run, each at every eval budget
    eval_budgets: tuple[float, ...] = (0.4, 0.6, 0.8)

    def __post_init__(self) -> None:
        for name in ("timesteps", "n_envs", "torch_threads", "checkpoint_every", "eval_every", "eval_tasks"):
            check_count(name, getattr(self, name))
        check_choice("envs", self.envs, ("batched", "processes"))
        check_count("seed", self.seed, 0)
        if self.seed >= 2**32:
            raise ValueError(f"seed = {self.seed} must be below 2**32")
        if not isinstance(self.eval_budgets, (tuple, list)) or not self.eval_budgets:
            raise ValueError(f"eval_budgets = {self.eval_budgets!r} must list budgets in (0, 1], e.g. [0.5]")
        for index, budget in enumerate(self.eval_budgets):
            check_number(f"eval_budgets[{index}]", budget, 0, 1)


@dataclass(frozen=True)
class WarmStart:
    """Optional behaviour cloning of a baseline before PPO (e.g. ``snapkv``); off when empty.

    For token-level policies the baseline sets the layer head (how many tokens go where) and the
    teacher (:mod:`rlprune.train.kinds.teacher`) sets the token head; it always runs for them.
    """

    baseline: str = ""
    episodes: int = 200
    epochs: int = 20
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        if not isinstance(self.baseline, str):
            raise ValueError(f"baseline = {self.baseline!r} must be a string")
        check_count("episodes", self.episodes)
        check_count("epochs", self.epochs)
        check_number("learning_rate", self.learning_rate, 0)


@dataclass(frozen=True)
class RayConfig:
    """Where the ``ray`` backend runs; ``run.n_envs`` is its number of env runners."""

    address: str = ""  # empty: a local Ray sized to this machine; "auto" or HOST:PORT: a running cluster
    sample_timeout_s: float = 600.0  # how long one env runner may take for its share of a rollout

    def __post_init__(self) -> None:
        if not isinstance(self.address, str):
            raise ValueError(f"address = {self.address!r} must be a string")
        check_number("sample_timeout_s", self.sample_timeout_s, 0)


SHORT_MIX = {"grounded": 0.3, "paraphrase": 0.25, "lookalike": 0.25, "bridge": 0.1, "kv": 0.1}
"""The short grounded task kinds, and their shares, that span and budget heads train on."""


@dataclass(frozen=True)
class SpanHeadConfig:
    """What a span head is trained on and how."""

    model: str = "smollm2-135m"
    decision_layer: int = 2
    rank: int = 32
    channels: int = 16
    kernel: int = 15
    long_kinds: tuple[str, ...] = ("niah", "niah-multikey", "niah-multivalue")
    long_lengths: tuple[int, ...] = (512, 1024, 2048)
    long_per_cell: int = 3
    short_mix: dict[str, float] = field(default_factory=lambda: dict(SHORT_MIX))
    short_items: int = 240
    short_tokens: tuple[int, int] = (150, 1100)
    epochs: int = 12
    learning_rate: float = 3e-3
    sentence_weight: float = 0.5  # the answer's sentence counts half as much as the answer itself
    unit: str = "sentence"  # what the exported head keeps or drops together (SpanHeadPolicy.select_by)
    later_layer: int | None = None  # a second head here makes the cut when the budget allows (SpanHeadPolicy.hand_over)
    min_keep: float = 0.25  # ... when it still keeps this share of the removable tokens
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rank", "channels", "kernel", "long_per_cell", "short_items", "epochs"):
            check_count(name, getattr(self, name))
        check_count("decision_layer", self.decision_layer, 0)
        check_count("seed", self.seed, 0)
        check_number("learning_rate", self.learning_rate, 0)
        check_number("sentence_weight", self.sentence_weight, 0, low_open=False)
        if self.later_layer is not None:
            check_count("later_layer", self.later_layer, self.decision_layer + 1)
        check_number("min_keep", self.min_keep, 0, 1)
        if self.min_keep == 1:
            raise ValueError("min_keep = 1 must be below 1: it is the share of tokens the later head must keep")
        object.__setattr__(self, "unit", parse_unit(self.unit))  # a bad unit fails before any work
        for kind in self.long_kinds:
            check_choice("long_kinds", kind, LONG_KINDS)
        for kind in self.short_mix:
            check_choice("short_mix", kind, KINDS)


@dataclass(frozen=True)
class SpanPPOConfig:
    """How a span head is tuned by PPO (an environment preset gives the prompts, budgets and reward)."""

    env: str = "span"  # preset name or path; its decision layers are replaced by the head's layer
    updates: int = 24
    prompts: int = 8  # prompts per update
    group: int = 4  # samples per prompt, at one budget
    epochs: int = 4  # passes over each batch
    learning_rate: float = 3e-4
    clip_range: float = 0.2
    max_grad_norm: float = 0.5
    kl_start: float = 0.0  # weight of the KL penalty to the head the stage starts from
    temperature: float = 1.0  # keep-sets are sampled from the head's scores over this (> 1: more varied groups)
    validation_tasks: int = 32  # validation prompts scored before and after, at each of the budgets
    validation_budgets: tuple[float, ...] = (0.3, 0.5)
    eval_every: int = 8  # updates between validations (and at the end)
    checkpoint_every: int = 1  # updates between checkpoints of last/ (a kill loses at most this many)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("updates", "prompts", "epochs", "validation_tasks", "eval_every", "checkpoint_every"):
            check_count(name, getattr(self, name))
        check_count("group", self.group, 2)  # a group of one has no baseline to compare against
        check_count("seed", self.seed, 0)
        for name in ("learning_rate", "clip_range", "max_grad_norm", "temperature"):
            check_number(name, getattr(self, name), 0)
        check_number("kl_start", self.kl_start, 0, low_open=False)
        if not isinstance(self.validation_budgets, (tuple, list)) or not self.validation_budgets:
            raise ValueError(f"validation_budgets = {self.validation_budgets!r} must list budgets in (0, 1]")
        for index, budget in enumerate(self.validation_budgets):
            check_number(f"validation_budgets[{index}]", budget, 0, 1)


REWARDS = ("correct", "answer", "evidence")


@dataclass(frozen=True)
class BudgetHeadConfig:
    """What a budget head is trained on and how (the recipe's ``backend`` runs its PPO)."""

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

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise InvalidArgumentError(f"reward must be one of {', '.join(REWARDS)}, got {self.reward!r}")
        if isinstance(self.answer_tokens, bool) or not isinstance(self.answer_tokens, int) or self.answer_tokens < 1:
            raise InvalidArgumentError(f"answer_tokens must be a whole number >= 1, got {self.answer_tokens!r}")
        if not self.targets or any(not 0 < t <= 1 for t in self.targets):
            raise InvalidArgumentError(f"targets are average FLOPs ratios in (0, 1], got {list(self.targets)}")
        BudgetHead(self.grid, self.hidden)  # the grid and widths are checked where they are used


BACKENDS = ("sb3", "ray")


@dataclass(frozen=True)
class Recipe:
    """A training recipe: the backend, PPO settings and the run's organisation."""

    backend: str = "sb3"
    policy: str = "layer"  # "layer": op, share and scorer per layer; "token": plus a learned per-token head;
    # "span": a span head, supervised on where answers are ([span_head]), then PPO when [span_ppo] is given;
    # "budget": a budget head for a span head ([budget_head]), PPO under a constraint on the average ratio
    ppo: PPOConfig = field(default_factory=PPOConfig)
    run: RunConfig = field(default_factory=RunConfig)
    warm_start: WarmStart = field(default_factory=WarmStart)
    ray: RayConfig = field(default_factory=RayConfig)
    span_head: SpanHeadConfig = field(default_factory=SpanHeadConfig)
    span_ppo: SpanPPOConfig | None = None
    budget_head: BudgetHeadConfig = field(default_factory=BudgetHeadConfig)

    def __post_init__(self) -> None:
        check_choice("backend", self.backend, BACKENDS)
        check_choice("policy", self.policy, tuple(TRAINERS))
        parts = {"ppo": (self.ppo, PPOConfig), "run": (self.run, RunConfig)}
        parts |= {"warm_start": (self.warm_start, WarmStart), "ray": (self.ray, RayConfig)}
        parts |= {"span_head": (self.span_head, SpanHeadConfig), "budget_head": (self.budget_head, BudgetHeadConfig)}
        for name, (part, kind) in parts.items():
            if not isinstance(part, kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {type(part).__name__}")
        if self.ppo.n_steps * self.run.n_envs < 2:  # one sample per rollout cannot be normalised
            raise ValueError("ppo.n_steps * run.n_envs must be at least 2 (samples per rollout)")

    @property
    def rollout(self) -> int:
        """Steps collected per PPO update (``ppo.n_steps`` per environment x ``run.n_envs``)."""
        return self.ppo.n_steps * self.run.n_envs

    def in_whole_rollouts(self, reached: int = 0) -> Recipe:
        """This recipe with ``run.timesteps`` rounded up to whole rollouts after ``reached`` steps: the
        number PPO actually trains to, since it updates on whole rollouts (unchanged once reached)."""
        rest = self.run.timesteps - reached
        if rest <= 0 or rest % self.rollout == 0:
            return self
        return replace(self, run=replace(self.run, timesteps=reached + -(-rest // self.rollout) * self.rollout))

    @classmethod
    def load(cls, name_or_path: str | Path) -> Recipe:
        path = find_config(name_or_path, "train")
        return from_dict(cls, load_toml(path), path.name)
