"""Rewards for output-side token reduction, in TRL's reward-function form.

Each is a callable ``reward(completions, completion_ids, **columns) -> list[float]`` that TRL's
``GRPOTrainer`` accepts as it is, and that any TRL user can reuse. Dataset columns arrive as
keyword lists, one value per completion: ``answers`` (gold aliases) for every reward,
``ref_length`` and ``ref_correct`` (the base model's answer length and correctness on the same
prompt) for :class:`EfficiencyReward`, ``context`` for :class:`HallucinationPenalty`.

With n the generated tokens, y the answer, y* the gold answer and A accuracy:

    ExactLengthReward      r = 1[y = y*] - alpha * |n - n_target|
    MaxLengthReward        r = 1[y = y*] * clip(alpha * (n_target - n) + delta, 0, 1)
    EfficiencyReward       r = L_ref / L(y) - 1 + lambda * (A - A_ref)
    HallucinationPenalty   r = -weight * 1[the answer has content words in neither context nor question]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlprune.data.tasks import Task, answer_correct
from rlprune.metrics import unsupported_words


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or the last message of a conversational completion."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def is_correct(text: str, answers: Sequence[str] | None) -> float:
    """1.0 when ``text`` contains one of the gold aliases (normalised, as the eval harness judges)."""
    if not answers:
        return 0.0
    return float(bool(answer_correct(text, Task("output", "", answers=tuple(answers)))))


class _Reward:
    """Base: TRL logs each reward under its ``__name__``."""

    __name__ = "reward"

    def __call__(self, completions: list[Any], completion_ids: list[list[int]], **columns: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        lengths = [len(ids) for ids in completion_ids]
        rows = [{k: v[i] for k, v in columns.items() if isinstance(v, list)} for i in range(len(texts))]
        return [self.score(t, n, row) for t, n, row in zip(texts, lengths, rows, strict=True)]

    def score(self, text: str, n: int, row: dict[str, Any]) -> float:
        raise NotImplementedError


class ExactLengthReward(_Reward):
    """Correct, and exactly ``target_tokens`` long: every token off the target costs ``alpha``."""

    __name__ = "r_exact"

    def __init__(self, target_tokens: int, alpha: float = 0.01) -> None:
        self.target_tokens, self.alpha = target_tokens, alpha

    def score(self, text: str, n: int, row: dict[str, Any]) -> float:
        return is_correct(text, row.get("answers")) - self.alpha * abs(n - self.target_tokens)


class MaxLengthReward(_Reward):
    """Correct and within ``target_tokens``: full reward up to the target, fading linearly beyond it."""

    __name__ = "r_max"

    def __init__(self, target_tokens: int, alpha: float = 0.02, delta: float = 0.5) -> None:
        self.target_tokens, self.alpha, self.delta = target_tokens, alpha, delta

    def score(self, text: str, n: int, row: dict[str, Any]) -> float:
        budget = min(max(self.alpha * (self.target_tokens - n) + self.delta, 0.0), 1.0)
        return is_correct(text, row.get("answers")) * budget


class EfficiencyReward(_Reward):
    """Shorter than the base model's answer, without being less accurate than it was."""

    __name__ = "r_eff"

    def __init__(self, lam: float = 3.0) -> None:
        self.lam = lam

    def score(self, text: str, n: int, row: dict[str, Any]) -> float:
        reference = float(row["ref_length"])
        accuracy_gain = is_correct(text, row.get("answers")) - float(row["ref_correct"])
        return reference / max(n, 1) - 1.0 + self.lam * accuracy_gain


class HallucinationPenalty(_Reward):
    """On prompts with a context: a penalty when the answer says things neither context nor question say."""

    __name__ = "r_hallucination"

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def score(self, text: str, n: int, row: dict[str, Any]) -> float:
        context = row.get("context")
        if not context:
            return 0.0
        return -self.weight * float(bool(unsupported_words(text, context, row.get("question"))))


REWARDS = {"r_exact": ExactLengthReward, "r_max": MaxLengthReward, "r_eff": EfficiencyReward}
