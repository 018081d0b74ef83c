"""``TokenReductionEnv``: one prompt per episode, one decision layer per step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlprune.config import ConfigError, find_config, from_dict, load_toml
from rlprune.data.tasks import KINDS, SPLITS, Task, generate_suite, load_jsonl
from rlprune.envs.reference import Reference, ReferenceCache
from rlprune.envs.rewards import RewardConfig, final_reward, quality, step_reward
from rlprune.features import OBSERVATION_BOUNDS, OBSERVATION_SIZE, ActionSpec, Features, flops_projected, observe
from rlprune.models import load_model
from rlprune.reduction import LayerAction
from rlprune.runner import Reducer, ReducerConfig, ReductionOutput, ReductionState


@dataclass(frozen=True)
class TaskConfig:
    """Which prompts episodes use."""

    mix: dict[str, float] = field(default_factory=lambda: {"grounded": 1.0})
    tokens: tuple[int, ...] = (150, 1500)  # passage length range, in tokens
    train_size: int = 256
    validation_size: int = 64
    test_size: int = 128
    seed: int = 0
    jsonl: str = ""  # your own tasks instead of generated ones (used for every split)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown task kind(s) {', '.join(unknown)} in mix; use {', '.join(KINDS)}")
        if len(self.tokens) != 2 or not 1 <= self.tokens[0] <= self.tokens[1]:
            raise ValueError(f"tokens must be [min, max] with 1 <= min <= max, got {list(self.tokens)}")
        if min(self.train_size, self.validation_size, self.test_size) < 1:
            raise ValueError("split sizes must be at least 1")

    def size(self, split: str) -> int:
        return {"train": self.train_size, "validation": self.validation_size, "test": self.test_size}[split]

    def tasks(self, split: str) -> list[Task]:
        """The split's tasks: generated from the seed, or read from ``jsonl`` (the same for every split)."""
        if self.jsonl:
            return load_jsonl(self.jsonl)
        return generate_suite(self.mix, split, self.size(split), seed=self.seed, tokens=self.tokens)


@dataclass(frozen=True)
class EpisodeConfig:
    """Where decisions happen and what budget an episode gets."""

    decision_layers: tuple[int, ...] = (2, 6, 12, 20)
    budget: tuple[float, ...] = (0.3, 0.9)  # one value (fixed) or [low, high] drawn per episode
    continuation_tokens: int = 16  # length of the full model's answer used for the quality terms
    protect_first: int = 1

    def __post_init__(self) -> None:
        layers = self.decision_layers
        if not layers or list(layers) != sorted(set(layers)) or layers[0] < 0:
            raise ValueError(f"decision_layers must be distinct, ascending and >= 0, got {list(layers)}")
        if len(self.budget) not in (1, 2) or self.budget[0] > self.budget[-1]:
            raise ValueError(f"budget must be one number or [low, high], got {list(self.budget)}")
        if not all(0 < b <= 1 for b in self.budget):
            raise ValueError(f"budget {list(self.budget)} must lie in (0, 1]: it is a prefill FLOPs ratio")
        if self.continuation_tokens < 1:
            raise ValueError("continuation_tokens must be at least 1")


@dataclass(frozen=True)
class EnvConfig:
    """An environment preset (``envs/*.toml``): the model, the tasks, the episodes, the reward."""

    model: str = "smollm2-135m"
    device: str = "cpu"  # where the model runs: cpu, cuda, cuda:N or mps
    dtype: str = "float32"  # float32, bfloat16 or float16
    tasks: TaskConfig = field(default_factory=TaskConfig)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    @classmethod
    def load(cls, name_or_path: str | Path) -> EnvConfig:
        """Read a preset by name (``grounded-qa``) or path; unknown keys and bad values are errors."""
        path = find_config(name_or_path, "envs")
        data = load_toml(path)
        for key in ("budget",):  # a single number is a fixed budget
            if isinstance(data.get("episode", {}).get(key), (int, float)):
                data["episode"][key] = [data["episode"][key]]
        return from_dict(cls, data, path.name)


class TokenReductionEnv(gym.Env):
    """Learn to reduce tokens: an episode is one prompt, a step is one decision layer.

    Observation: a ``Box`` vector, see :data:`rlprune.features.OBSERVATION_FIELDS`.
    Action: ``MultiDiscrete([op, share, scorer])``, see :class:`rlprune.features.ActionSpec`;
    ``action_masks()`` marks the choices that apply.
    Reward: see :mod:`rlprune.envs.rewards`. The final ``info`` holds ``flops_ratio``, ``kl``,
    ``agreement``, ``answer_accuracy``, ``hallucination``, ``budget``, and ``evidence_kept`` and
    ``evidence_share`` (whether and how much of the gold answer's tokens reached the last layer;
    NaN where the answer is not in the context).

    Args:
        preset: a preset name or path, or an :class:`EnvConfig`.
        split: ``train``, ``validation`` or ``test``.
        model, tokenizer: an already loaded model (default: the preset's).
        budget: fix the budget instead of drawing it from the preset's range.
        tasks: use these tasks instead of the preset's.
        cache_dir: where reference outputs are stored (default under ``$RLPRUNE_HOME``).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        preset: str | Path | EnvConfig = "grounded-qa",
        *,
        split: str = "train",
        model=None,
        tokenizer=None,
        budget: float | None = None,
        tasks: list[Task] | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.config = preset if isinstance(preset, EnvConfig) else EnvConfig.load(preset)
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if budget is not None and not 0 < budget <= 1:
            raise ConfigError(f"budget {budget} must lie in (0, 1]: it is a prefill FLOPs ratio")
        if model is None:
            model, tokenizer = load_model(self.config.model, device=self.config.device, dtype=self.config.dtype)
        episode = self.config.episode
        self.reducer = Reducer(model, ReducerConfig(protect_first=episode.protect_first))
        if episode.decision_layers[-1] >= self.reducer.dims.layers:
            raise ConfigError(
                f"decision layer {episode.decision_layers[-1]} does not exist: the model has "
                f"{self.reducer.dims.layers} layers (0..{self.reducer.dims.layers - 1})"
            )
        self.tokenizer = tokenizer
        self.split = split
        self.tasks = tasks if tasks is not None else self.config.tasks.tasks(split)
        self.fixed_budget = budget
        self.references = ReferenceCache(
            self.reducer,
            tokenizer,
            first_layer=episode.decision_layers[0],
            continuation_tokens=episode.continuation_tokens,
            folder=cache_dir,
        )
        self.action_spec = ActionSpec()
        self.action_space = spaces.MultiDiscrete(self.action_spec.nvec)
        self.observation_space = spaces.Box(*OBSERVATION_BOUNDS, shape=(OBSERVATION_SIZE,), dtype=np.float32)
        self._state: ReductionState | None = None
        self._reference: Reference | None = None
        self._task: Task | None = None
        self.budget = 1.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode on a random task; ``options`` may fix ``task_index`` and ``budget``."""
        super().reset(seed=seed)
        reference = self.draw_episode(options)
        self.enter(self.reducer.start(reference.input_ids, **self.start_arguments(reference)))
        return self._observation(), self.episode_info()

    def step(self, action):
        action, before = self.decide(action)
        self._state = self.reducer.step(self._state, action)
        reward, info = self.after_step(action, before)
        if not self._state.done:
            return self._observation(), reward, False, False, info
        return self.conclude(self.reducer.finish(self._state, logits="continuation"), reward, info)

    # -- the pieces of an episode, shared with the vector environment -----------------------

    def draw_episode(self, options: dict[str, Any] | None = None) -> Reference:
        """Choose the task and budget of a new episode; returns the full model's reference for it."""
        options = options or {}
        index = int(options.get("task_index", self.np_random.integers(len(self.tasks))))
        self._task = self.tasks[index % len(self.tasks)]
        budget = options.get("budget", self.fixed_budget)
        self.budget = float(budget) if budget is not None else self._draw_budget()
        self._reference = self.references.get(self._task)
        return self._reference

    def start_arguments(self, reference: Reference) -> dict[str, Any]:
        """How :meth:`Reducer.start` begins an episode on ``reference`` (after its cached early layers)."""
        return {
            "decision_layers": self.config.episode.decision_layers,
            "protect_last": reference.protect_last,
            "prompt_length": reference.prompt_length,
            "resume_from": reference.hidden,
        }

    def enter(self, state: ReductionState) -> None:
        self._state = state

    def episode_info(self) -> dict[str, Any]:
        return {"task": self._task.uid, "kind": self._task.kind, "budget": self.budget}

    def decide(self, action) -> tuple[LayerAction, float]:
        """The :class:`LayerAction` for ``action`` at the current layer, and the projected FLOPs before it."""
        if self._state is None or self._state.done:
            raise RuntimeError("call reset() before step()")
        before = flops_projected(self.reducer, self._state)
        if not isinstance(action, LayerAction):  # scripted callers may pass a LayerAction directly
            action = self.action_spec.decode(action, Features(self.reducer, self._state, self.budget))
        return action, before

    def after_step(self, action: LayerAction, before: float) -> tuple[float, dict[str, Any]]:
        """The step's FLOPs reward and info, once the reducer has applied ``action``."""
        after = flops_projected(self.reducer, self._state)
        reward = step_reward(before, after, self.budget, self.config.reward)
        layer = max(self._state.actions)  # the layer the action was taken at
        return reward, {"layer": layer, "action": str(action), "flops_projected": after}

    def conclude(self, out: ReductionOutput, reward: float, info: dict[str, Any]):
        """The final step's transition: quality of the finished episode's continuation logits."""
        q = quality(out.logits[0], self._reference)
        flops_ratio = out.flops / out.flops_full
        evidence = self._reference.evidence
        kept, share = evidence.kept(out.state.reaches_top()) if evidence is not None else (math.nan, None)
        reward += final_reward(q, flops_ratio, self.budget, self.config.reward, share)
        info |= {
            "flops_ratio": flops_ratio,
            "kl": q.kl,
            "agreement": q.agreement,
            "answer_accuracy": math.nan if q.answer_accuracy is None else q.answer_accuracy,
            "hallucination": q.hallucination,
            "hallucination_excess": q.hallucination_excess,
            "budget": self.budget,
            "kind": self._task.kind,
            "tokens_per_layer": out.tokens_per_layer,
            "evidence_kept": float(kept),
            "evidence_share": math.nan if share is None else share,
        }
        return np.zeros(OBSERVATION_SIZE, dtype=np.float32), reward, True, False, info

    def action_masks(self) -> np.ndarray:
        """Valid choices per action dimension, concatenated (for sb3-contrib's MaskablePPO)."""
        if self._state is None or self._state.done:
            return np.ones(sum(self.action_spec.nvec), dtype=bool)
        return self.action_spec.masks(Features(self.reducer, self._state, self.budget))

    def _observation(self) -> np.ndarray:
        return observe(self.reducer, self._state, self.budget)

    def _draw_budget(self) -> float:
        budget = self.config.episode.budget
        return float(budget[0]) if len(budget) == 1 else float(self.np_random.uniform(budget[0], budget[1]))
