"""``TokenReductionEnv``: one prompt per episode, one decision layer per step."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from rlprune.config import ConfigError, find_config, from_dict, load_toml
from rlprune.data.generators import generate_suite
from rlprune.data.long import LONG_KINDS, LongSuite
from rlprune.data.tasks import KINDS, SPLITS, Task, load_jsonl
from rlprune.engine import Reducer, ReducerConfig, ReductionBatch, ReductionOutput, ReductionState
from rlprune.engine import generate as decoding
from rlprune.engine.features import (
    OBSERVATION_BOUNDS,
    OBSERVATION_SIZE,
    SCORER_CHOICES,
    ActionSpec,
    Features,
    flops_projected,
    observe,
)
from rlprune.envs.reference import TARGETS, Reference, ReferenceCache
from rlprune.envs.rewards import Decoded, Quality, RewardConfig, final_reward, quality, step_reward
from rlprune.errors import InvalidActionError, RLPruneError
from rlprune.metrics import evidence_kept
from rlprune.models import load_model
from rlprune.reduction import LayerAction

EPISODE_OPTIONS = ("task_index", "budget")
"""The keys ``reset(options=...)`` understands."""


@dataclass(frozen=True)
class Answer:
    """The reduced model's greedy answer to an episode's prompt, decoded from its reduced cache."""

    tokens: list[int]  # up to its first EOS, which is included
    logprobs: Tensor  # (len(tokens),) each token's log-probability under the reduced model


def finish_episodes(
    reducer: Reducer, state: ReductionState | ReductionBatch, decode_tokens: int = 0
) -> list[tuple[ReductionOutput, Answer | None]]:
    """Finish the episodes' prefill, one row each: the logits that predict the teacher-forced answer, or
    with ``decode_tokens`` the last prompt position's, and the greedy answer the rows decode together
    from their reduced caches (:func:`rlprune.engine.generate.decode`, the loop generation runs)."""
    decode_tokens = check_int("decode_tokens", decode_tokens, 0)
    outputs = reducer.finish(state, logits="last" if decode_tokens else "continuation")
    outputs = outputs if isinstance(outputs, list) else [outputs]
    if not decode_tokens:
        return [(out, None) for out in outputs]
    stop = set(decoding.eos_ids(reducer.model, None))
    logits = torch.cat([out.logits[:, -1] for out in outputs])
    tokens, logprobs = decoding.decode(reducer, state, logits, decode_tokens, stop)
    answers = []
    for row in range(len(outputs)):
        end = decoding.eos_end(tokens[row].tolist(), stop)
        answers.append(Answer(tokens[row, :end].tolist(), logprobs[row, :end].cpu()))
    return list(zip(outputs, answers, strict=True))


def is_budget(value: object) -> bool:
    """Whether ``value`` is a budget: a finite number in (0, 1] (numpy scalars too, never a bool)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and 0 < value <= 1


def check_budget(value: object, name: str = "budget") -> float:
    """``value`` as a float budget, or an error naming ``name``: a budget is a prefill FLOPs ratio."""
    if not is_budget(value):
        raise RLPruneError(f"{name} must be a finite number in (0, 1] (a prefill FLOPs ratio), got {value!r}")
    return float(value)


def check_int(name: str, value: object, low: int, high: int | None = None, note: str = "") -> int:
    """``value`` as an int in ``[low, high)`` (no upper bound without ``high``): Python or numpy
    integers only, never a bool or a float, so that ``2.7`` or ``"1"`` is not quietly rounded."""
    if isinstance(value, Integral) and not isinstance(value, bool) and low <= value and (high is None or value < high):
        return int(value)
    bounds = f"in [{low}, {high})" if high is not None else f"of at least {low}"
    raise RLPruneError(f"{name} must be an integer {bounds}{note}, got {value!r}")


def out_of_bounds(space: spaces.Space) -> str:
    """What the values of an action in ``space`` must be, for an error message."""
    if isinstance(space, spaces.MultiDiscrete):
        return "each value must lie in [0, n) for the n its position has in nvec"
    if isinstance(space, spaces.Box):
        kind = "an integer" if np.issubdtype(space.dtype, np.integer) else "a finite number"
        if np.ptp(space.low) == 0 and np.ptp(space.high) == 0:
            return f"each value must be {kind} in [{space.low.flat[0]:g}, {space.high.flat[0]:g}]"
        return f"each value must be {kind} between the space's low and high at its position"
    return "a value lies outside the space"


def check_action(action: object, space: spaces.Space, name: str = "action") -> np.ndarray:
    """``action`` as an array of ``space``'s dtype, or :class:`InvalidActionError` naming it and the space.

    Strict: a discrete space takes integers only (``1.7`` is not rounded, ``-1`` does not wrap), and
    the shape must be the space's.
    """
    integer = np.issubdtype(space.dtype, np.integer)
    try:
        array = np.asarray(action)
    except (TypeError, ValueError):  # ragged lists
        array = np.asarray(None)
    if array.dtype.kind not in ("iu" if integer else "iuf"):
        problem = f"it must be an array of {'integers' if integer else 'numbers'}"
    elif array.shape != space.shape:
        problem = f"its shape must be {space.shape}, not {array.shape}"
    elif not space.contains(converted := array.astype(space.dtype)):
        problem = out_of_bounds(space)
    else:
        return converted
    text = repr(action)
    text = text if len(text) <= 60 else text[:57] + "..."
    raise InvalidActionError(f"{name} {text} is not in the action space {' '.join(str(space).split())}: {problem}")


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
    # long-context grids on the split's essays (rlprune.data.long), shuffled in with the mix's tasks
    long_kinds: tuple[str, ...] = ()
    long_lengths: tuple[int, ...] = (1024,)
    long_per_cell: int = 1  # tasks per length x depth cell (five depths), per kind and split
    # your own prompts shuffled into the generated train split, each train_jsonl_repeat times: the
    # reward that needs no label (likelihood of the full model's own answer) learns from any text
    train_jsonl: str = ""
    train_jsonl_repeat: int = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown task kind(s) {', '.join(unknown)} in mix; use {', '.join(KINDS)}")
        unknown = sorted(set(self.long_kinds) - set(LONG_KINDS))
        if unknown:
            raise ValueError(f"unknown long kind(s) {', '.join(unknown)}; use {', '.join(LONG_KINDS)}")
        if self.long_kinds and (self.long_per_cell < 1 or not self.long_lengths or min(self.long_lengths) < 1):
            raise ValueError("long_lengths must list positive token counts and long_per_cell be at least 1")
        if len(self.tokens) != 2 or not 1 <= self.tokens[0] <= self.tokens[1]:
            raise ValueError(f"tokens must be [min, max] with 1 <= min <= max, got {list(self.tokens)}")
        if min(self.train_size, self.validation_size, self.test_size) < 1:
            raise ValueError("split sizes must be at least 1")
        if isinstance(self.train_jsonl_repeat, bool) or not isinstance(self.train_jsonl_repeat, int):
            raise ValueError(f"train_jsonl_repeat must be a whole number, got {self.train_jsonl_repeat!r}")
        if self.train_jsonl_repeat < 1:
            raise ValueError(f"train_jsonl_repeat must be at least 1, got {self.train_jsonl_repeat}")
        if self.train_jsonl and self.jsonl:
            raise ValueError("jsonl replaces the generated splits, train_jsonl adds to one: set one of them")

    def size(self, split: str) -> int:
        return {"train": self.train_size, "validation": self.validation_size, "test": self.test_size}[split]

    def tasks(self, split: str) -> list[Task]:
        """The split's tasks: generated from the seed (with ``train_jsonl``'s in the train split), or
        read from ``jsonl`` (the same for every split)."""
        if self.jsonl:
            return load_jsonl(self.jsonl)
        tasks = generate_suite(self.mix, split, self.size(split), seed=self.seed, tokens=self.tokens)
        own = load_jsonl(self.train_jsonl) * self.train_jsonl_repeat if split == "train" and self.train_jsonl else []
        if not self.long_kinds and not own:
            return tasks
        for kind in self.long_kinds:
            grid = LongSuite(kind, lengths=tuple(self.long_lengths), per_cell=self.long_per_cell, split=split)
            tasks += grid.tasks()
        tasks += own
        random.Random(f"{split}:{self.seed}").shuffle(tasks)  # so the first validation prompts hold every kind
        return tasks


@dataclass(frozen=True)
class EpisodeConfig:
    """Where decisions happen and what budget an episode gets."""

    decision_layers: tuple[int, ...] = (2, 6, 12, 20)
    budget: tuple[float, ...] = (0.3, 0.9)  # one value (fixed) or [low, high] drawn per episode
    continuation_tokens: int = 16  # length of the full model's answer used for the quality terms
    target: str = "full"  # what is teacher-forced: "full" (its answer) or "corrected" (gold where it misses)
    protect_first: int = 1
    decode_tokens: int = 0  # > 0: instead, the reduced model decodes its own greedy answer (up to this many tokens)
    scorers: tuple[str, ...] = SCORER_CHOICES  # what a layer policy ranks tokens by, span options allowed

    @property
    def action_spec(self) -> ActionSpec:
        """The choices a layer policy has at each decision (op, share, and the scorers above)."""
        return ActionSpec(scorers=tuple(self.scorers))

    def __post_init__(self) -> None:
        layers = self.decision_layers
        if not layers or list(layers) != sorted(set(layers)) or layers[0] < 0:
            raise ValueError(f"decision_layers must be distinct, ascending and >= 0, got {list(layers)}")
        if not all(is_budget(b) for b in self.budget):
            raise ValueError(f"budget {list(self.budget)} must lie in (0, 1]: it is a prefill FLOPs ratio")
        if len(self.budget) not in (1, 2) or self.budget[0] > self.budget[-1]:
            raise ValueError(f"budget must be one number or [low, high], got {list(self.budget)}")
        ActionSpec(scorers=tuple(self.scorers))  # a bad scorer or span option fails with the preset
        if self.continuation_tokens < 1:
            raise ValueError("continuation_tokens must be at least 1")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; use one of {', '.join(TARGETS)}")
        if self.decode_tokens < 0:
            raise ValueError("decode_tokens must be 0 (teacher-force the full model's answer) or a number of tokens")


@dataclass(frozen=True)
class EnvConfig:
    """An environment preset (``envs/*.toml``): the model, the tasks, the episodes, the reward."""

    model: str = "smollm2-135m"
    device: str = "cpu"  # where the model runs: cpu, cuda, cuda:N or mps
    dtype: str = "float32"  # float32, bfloat16 or float16
    tasks: TaskConfig = field(default_factory=TaskConfig)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        reward = self.reward
        if self.episode.decode_tokens and reward.weighted(reward.TEACHER_FORCED):
            raise ConfigError(
                f"episodes that decode (decode_tokens = {self.episode.decode_tokens}) teacher-force nothing: set "
                f"{', '.join(reward.weighted(reward.TEACHER_FORCED))} to 0 in [reward] and weigh solved, "
                "confidence, echo and loop instead"
            )
        if not self.episode.decode_tokens and reward.weighted(reward.DECODED):
            raise ConfigError(
                f"{' and '.join(reward.weighted(reward.DECODED))} judge the reduced model's decoded answer: "
                "set decode_tokens in [episode] (e.g. 24) so episodes decode one"
            )

    @classmethod
    def load(cls, name_or_path: str | Path) -> EnvConfig:
        """Read a preset by name (``grounded-qa``) or path; unknown keys and bad values are errors, and
        so is a missing ``model`` (a preset says which model it trains, never a default one silently)."""
        path = find_config(name_or_path, "envs")
        data = load_toml(path)
        for key in ("budget",):  # a single number is a fixed budget
            if isinstance(data.get("episode", {}).get(key), (int, float)):
                data["episode"][key] = [data["episode"][key]]
        config = from_dict(cls, data, path.name)
        if "model" not in data:
            raise ConfigError(
                f"{path} has no model key: name the model to train on at its top, before any [table], e.g. "
                f'model = "{cls.model}" (an alias, a local model folder or a .gguf file)'
            )
        return config


class TokenReductionEnv(gym.Env):
    """Learn to reduce tokens: an episode is one prompt, a step is one decision layer.

    Observation: a ``Box`` vector, see :data:`rlprune.engine.features.OBSERVATION_FIELDS`.
    Action: ``MultiDiscrete([op, share, scorer])``, see :class:`rlprune.engine.features.ActionSpec`;
    ``action_masks()`` marks the choices that apply.
    Reward: see :mod:`rlprune.envs.rewards`. The final ``info`` holds ``flops_ratio``, ``kl``,
    ``agreement``, ``likelihood``, ``greedy``, ``answer_accuracy``, ``hallucination``, ``budget``,
    and ``evidence_kept`` and ``evidence_share`` (whether and how much of the gold answer's tokens
    reached the last layer; NaN where the answer is not in the context). Where episodes decode
    (``episode.decode_tokens``) it holds ``answer`` (the reduced model's text), ``solved``,
    ``confidence``, ``echo`` and ``loop`` instead of the teacher-forced measures (NaN then).

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
        self.fixed_budget = None if budget is None else check_budget(budget)
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
        self.references = ReferenceCache(
            self.reducer,
            tokenizer,
            first_layer=episode.decision_layers[0],
            continuation_tokens=episode.continuation_tokens,
            folder=cache_dir,
            target=episode.target,
        )
        self.action_spec = episode.action_spec
        self.action_space = spaces.MultiDiscrete(self.action_spec.nvec)
        self.observation_space = spaces.Box(*OBSERVATION_BOUNDS, shape=(OBSERVATION_SIZE,), dtype=np.float32)
        self._state: ReductionState | None = None
        self._reference: Reference | None = None
        self._task: Task | None = None
        self.budget = 1.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode on a random task; ``options`` may fix ``task_index`` and ``budget`` (see
        :meth:`check_options`)."""
        super().reset(seed=seed)
        reference = self.draw_episode(options)
        self.enter(self.reducer.start(self.episode_input(reference), **self.start_arguments(reference)))
        return self.current_observation(), self.episode_info()

    def step(self, action):
        action, before = self.decide(action)
        self._state = self.reducer.step(self._state, action)
        reward, info = self.after_step(action, before)
        if not self._state.done:
            return self.current_observation(), reward, False, False, info
        ((out, answer),) = finish_episodes(self.reducer, self._state, self.config.episode.decode_tokens)
        return self.conclude(out, reward, info, answer)

    # -- the pieces of an episode, shared with the vector environment -----------------------

    def check_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """``reset``'s options, checked before the episode changes: only :data:`EPISODE_OPTIONS`;
        ``task_index`` an integer in [0, number of tasks), ``budget`` a finite number in (0, 1]."""
        if options is None:
            return {}
        if not isinstance(options, Mapping):
            raise RLPruneError(f"options must be a dict (keys {', '.join(EPISODE_OPTIONS)}), got {options!r}")
        unknown = [repr(key) for key in options if key not in EPISODE_OPTIONS]
        if unknown:
            raise RLPruneError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(EPISODE_OPTIONS)}")
        checked = dict(options)
        if "task_index" in checked:
            note = f" (this environment has {len(self.tasks)} {self.split} tasks)"
            checked["task_index"] = check_int("task_index", checked["task_index"], 0, len(self.tasks), note)
        if "budget" in checked:
            checked["budget"] = check_budget(checked["budget"])
        return checked

    def draw_episode(self, options: Mapping[str, Any] | None = None) -> Reference:
        """Choose the task and budget of a new episode; returns the full model's reference for it."""
        options = self.check_options(options)
        index = options.get("task_index", int(self.np_random.integers(len(self.tasks))))
        self._task = self.tasks[index]
        budget = options.get("budget", self.fixed_budget)
        self.budget = budget if budget is not None else self._draw_budget()
        self._reference = self.references.get(self._task)
        return self._reference

    @property
    def decodes(self) -> bool:
        """Whether an episode ends with the reduced model's own greedy answer (else it teacher-forces)."""
        return self.config.episode.decode_tokens > 0

    def episode_input(self, reference: Reference) -> Tensor:
        """The tokens an episode runs, ``(1, n)``: the prompt and the full model's answer to teacher-force,
        or the prompt alone where the episode decodes."""
        return reference.input_ids[:, : reference.prompt_length] if self.decodes else reference.input_ids

    def start_arguments(self, reference: Reference) -> dict[str, Any]:
        """How :meth:`Reducer.start` begins an episode on ``reference``: after its cached early layers, or
        where the episode decodes from layer 0 (decoding needs every layer's cache)."""
        return {
            "decision_layers": self.config.episode.decision_layers,
            "protect_last": reference.protect_last,
            "prompt_length": reference.prompt_length,
            "resume_from": None if self.decodes else reference.hidden,
        }

    def enter(self, state: ReductionState) -> None:
        self._state = state

    def episode_info(self) -> dict[str, Any]:
        return {"task": self._task.uid, "kind": self._task.kind, "budget": self.budget}

    def decide(self, action) -> tuple[LayerAction, float]:
        """The :class:`LayerAction` for ``action`` at the current layer, and the projected FLOPs before it."""
        if self._state is None or self._state.done:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, LayerAction):  # scripted callers may pass a LayerAction directly
            action = self.action_spec.decode(check_action(action, self.action_space), self.features())
        return action, flops_projected(self.reducer, self._state)

    def after_step(self, action: LayerAction, before: float) -> tuple[float, dict[str, Any]]:
        """The step's FLOPs reward and info, once the reducer has applied ``action``."""
        after = flops_projected(self.reducer, self._state)
        reward = step_reward(before, after, self.budget, self.config.reward)
        layer = max(self._state.actions)  # the layer the action was taken at
        return reward, {"layer": layer, "action": str(action), "flops_projected": after}

    def conclude(self, out: ReductionOutput, reward: float, info: dict[str, Any], answer: Answer | None = None):
        """The final step's transition: quality of the finished episode's continuation logits, or of the
        reduced model's own ``answer`` where the episode decodes."""
        config = self.config.reward
        if answer is None:
            q, decoded = quality(out.logits[0], self._reference, config.kl_cap), None
        else:
            text = self.tokenizer.decode(answer.tokens, skip_special_tokens=True)
            q, decoded = None, Decoded.judge(text, answer.logprobs, self._task, config.kl_cap)
        flops_ratio = out.flops / out.flops_full
        kept, share = evidence_kept(self._reference.evidence, out.state.reaches_top())
        question = self._task.question
        reward += final_reward(q, flops_ratio, self.budget, config, share, question=question, decoded=decoded)
        info |= Quality.measures(q) | Decoded.measures(decoded, question)
        info |= {
            "flops_ratio": flops_ratio,
            "budget": self.budget,
            "kind": self._task.kind,
            "tokens_per_layer": out.tokens_per_layer,
            "evidence_kept": math.nan if kept is None else float(kept),
            "evidence_share": math.nan if share is None else share,
        }
        return np.zeros(OBSERVATION_SIZE, dtype=np.float32), reward, True, False, info

    def action_masks(self) -> np.ndarray:
        """Valid choices per action dimension, concatenated (for sb3-contrib's MaskablePPO)."""
        if self._state is None or self._state.done:
            return np.ones(sum(self.action_spec.nvec), dtype=bool)
        return self.action_spec.masks(self.features())

    @property
    def task(self) -> Task | None:
        """The current episode's task (``None`` before the first reset)."""
        return self._task

    @property
    def reference(self) -> Reference | None:
        """The current episode's full-model reference (``None`` before the first reset)."""
        return self._reference

    def features(self) -> Features:
        """What a policy may look at before the current decision layer."""
        return Features(self.reducer, self._state, self.budget)

    def current_observation(self) -> np.ndarray:
        """The observation of the current decision layer."""
        return observe(self.reducer, self._state, self.budget)

    def _draw_budget(self) -> float:
        budget = self.config.episode.budget
        return float(budget[0]) if len(budget) == 1 else float(self.np_random.uniform(budget[0], budget[1]))
