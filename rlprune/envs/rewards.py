"""Rewards: output quality, a hallucination penalty and FLOPs savings, against the full model.

Per step, the FLOPs saved by that step's action are paid as they are earned, down to the
episode's budget: savings beyond it earn nothing, so the budget is a target, not a floor. At the
end of an episode, the reduced model is teacher-forced on the full model's answer and judged:

    reward = flops * (FLOPs saved down to the budget, summed over steps)
           - kl * min(KL(full || reduced), kl_cap)
           + likelihood * mean log p(the full model's answer | reduced prompt)  (each token floored at -kl_cap)
           + agreement * top-1 agreement
           + greedy * share of the full model's answer the reduced model's greedy decoding says
                      again (up to the gold answer's end where the answer spells it, so 1
                      means it answers as the full model does)
           + answer * gold-answer token accuracy          (when the answer appears in the reference)
           - hallucination * excess unsupported mass      (grounded tasks)
           - over_budget * max(0, FLOPs ratio - budget)
           + evidence * share of the gold answer's tokens that reached the last layer
                                                          (where the answer is in the context)
           - echo * the reduced model's answer says the question back (metrics.echoes_question)
           - loop * the reduced model's answer loops (metrics.degenerate)
           + solved * the reduced model's answer contains the gold answer   (episodes that decode)
           + confidence * mean log p of the reduced model's answer tokens  (each floored at -kl_cap)

The likelihood term needs no label: it asks how likely the reduced model finds what the full model
said, so any text with a question is training data. The greedy term reads the same teacher-forced
logits for what is measured at evaluation: the reduced model decodes the full model's answer for as
long as each of its tokens is its top-1, so it needs no decoding and no label either. The evidence
term reads where the answer is from the task, never from what the policy observes.
The echo and loop terms judge a generated answer, so they count where the caller generated one and
passes it to :func:`final_reward`; all four terms after them weigh 0 by default.

An environment whose episodes decode (``episode.decode_tokens > 0``) judges what evaluation judges:
the reduced model's own greedy answer, decoded from the reduced cache (:class:`Decoded`): whether it
contains the gold answer (``solved``, the measure ``rlprune eval`` reports), how sure the model is of
it (``confidence``, which needs no label), and the echo and loop penalties on its text. It
teacher-forces nothing, so the terms read from a teacher-forced answer (kl through hallucination
above) weigh 0 there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rlprune.data.tasks import Task, answer_correct
from rlprune.envs.reference import Reference
from rlprune.metrics import (
    answer_likelihood,
    answer_token_accuracy,
    degenerate,
    echoes_question,
    greedy_reproduced,
    kl_divergence,
    log_probs,
    out_of_context_mass,
    top1_agreement,
)


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward terms (all non-negative; see the module docstring)."""

    kl: float = 1.0
    kl_cap: float = 5.0
    likelihood: float = 0.0
    agreement: float = 0.5
    greedy: float = 0.0
    answer: float = 1.0
    hallucination: float = 2.0
    flops: float = 1.0
    over_budget: float = 4.0
    evidence: float = 0.0
    echo: float = 0.0
    loop: float = 0.0
    solved: float = 0.0
    confidence: float = 0.0

    TEACHER_FORCED = ("kl", "likelihood", "agreement", "greedy", "answer", "hallucination")
    """The terms read from the teacher-forced full answer (an episode that decodes has none)."""
    DECODED = ("solved", "confidence")
    """The terms read from a decoded answer (only an episode that decodes has one)."""

    def weighted(self, names: tuple[str, ...]) -> list[str]:
        """Which of the terms ``names`` weigh more than 0."""
        return [name for name in names if getattr(self, name) > 0]

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"reward weight {name} must be a non-negative number, got {value}")


@dataclass(frozen=True)
class Quality:
    """How the reduced model did on the full model's answer."""

    kl: float  # mean KL(full || reduced) per answer token (top-k with the tail as one bin, rlprune.metrics)
    agreement: float  # share of answer tokens where both models' top-1 tokens match
    answer_accuracy: float | None  # share of gold-answer tokens the reduced model predicts top-1
    hallucination: float  # mean mass on tokens in neither prompt nor full answer (grounded tasks)
    hallucination_excess: float  # the same, above what the full model puts there
    likelihood: float = 0.0  # mean log p(full model's answer tokens), each floored at -kl_cap (see quality)
    greedy: float = 0.0  # share of the answer (to the gold answer's end, where it spells it) decoded alike

    @staticmethod
    def measures(q: Quality | None) -> dict[str, float]:
        """An episode's info entries for ``q`` (NaN for an episode that teacher-forced nothing)."""
        if q is None:
            return dict.fromkeys(TEACHER_FORCED_MEASURES, math.nan)
        answer = math.nan if q.answer_accuracy is None else q.answer_accuracy
        values = (q.kl, q.agreement, q.likelihood, q.greedy, answer, q.hallucination, q.hallucination_excess)
        return dict(zip(TEACHER_FORCED_MEASURES, values, strict=True))


TEACHER_FORCED_MEASURES = (
    "kl", "agreement", "likelihood", "greedy", "answer_accuracy", "hallucination", "hallucination_excess",
)  # fmt: skip
"""An episode's info entries read from the teacher-forced answer (:meth:`Quality.measures`)."""
DECODED_MEASURES = ("solved", "confidence", "echo", "loop")
"""An episode's info entries read from its decoded answer (:meth:`Decoded.measures`, with ``answer``: its text)."""


@dataclass(frozen=True)
class Decoded:
    """How the reduced model's own greedy answer went (episodes that decode)."""

    text: str
    solved: bool | None  # it contains the gold answer; None where the task has none
    confidence: float  # mean log-probability of its tokens (EOS included), each floored at -kl_cap

    @classmethod
    def judge(cls, text: str, logprobs: Tensor, task: Task, floor: float = RewardConfig.kl_cap) -> Decoded:
        """``text``, whose tokens had ``logprobs`` ``(m,)`` under the reduced model, as an answer to ``task``."""
        confidence = float(logprobs.clamp(min=-floor).mean()) if logprobs.numel() else -floor
        return cls(text, answer_correct(text, task), confidence)

    @staticmethod
    def measures(decoded: Decoded | None, question: str) -> dict[str, float | str]:
        """An episode's info entries for ``decoded``, the answer to ``question`` (NaN where none was)."""
        if decoded is None:
            return dict.fromkeys(DECODED_MEASURES, math.nan)
        solved = math.nan if decoded.solved is None else float(decoded.solved)
        echo, loop = float(echoes_question(decoded.text, question)), float(degenerate(decoded.text))
        return dict(zip(DECODED_MEASURES, (solved, decoded.confidence, echo, loop), strict=True)) | {
            "answer": decoded.text
        }


@torch.no_grad()
def quality(logits: Tensor, reference: Reference, floor: float = RewardConfig.kl_cap) -> Quality:
    """Compare the reduced model's logits on the reference continuation, shape ``(m, vocab)``, with
    the measures of :mod:`rlprune.metrics` (the ones evaluation reports); ``floor`` bounds each answer
    token's log-probability in the likelihood."""
    reference = reference.to(logits.device)
    logprobs = log_probs(logits)
    full = reference.top_k
    kl = kl_divergence(full, logprobs).mean().item()
    agreement = top1_agreement(full, logprobs).float().mean().item()
    answer = answer_token_accuracy(logprobs, reference.continuation, reference.answer_mask)
    if reference.grounded:
        unsupported = out_of_context_mass(logprobs, reference.allowed_ids)
        excess = (unsupported - reference.unsupported_mass).clamp(min=0.0).mean().item()
        hallucination = unsupported.mean().item()
    else:
        hallucination = excess = 0.0
    likelihood = answer_likelihood(logprobs, reference.continuation, floor)
    return Quality(kl, agreement, answer, hallucination, excess, likelihood, greedy_share(logprobs, reference))


def greedy_share(logprobs: Tensor, reference: Reference) -> float:
    """Share of the teacher-forced answer (the full model's, or its correction: ``reference.text``) the
    reduced model's greedy decoding reproduces, counted up to the last token of the gold answer where the
    answer spells it (1: it gives that answer), else over the whole answer."""
    targets = reference.continuation
    if targets.numel() == 0:
        return 1.0
    spelled = reference.answer_mask.nonzero()
    length = int(spelled.max()) + 1 if len(spelled) else len(targets)
    return min(greedy_reproduced(logprobs, targets), length) / length


def step_reward(projected_before: float, projected_after: float, budget: float, config: RewardConfig) -> float:
    """FLOPs saved by one action, as a share of the full prefill, down to the budget, weighted."""
    return config.flops * (max(projected_before, budget) - max(projected_after, budget))


def answer_penalty(answer: str, question: str, config: RewardConfig) -> float:
    """What a generated ``answer`` to ``question`` loses for saying the question back or looping."""
    return config.echo * echoes_question(answer, question) + config.loop * degenerate(answer)


def final_reward(
    q: Quality | None,
    flops_ratio: float,
    budget: float,
    config: RewardConfig,
    evidence_share: float | None = None,
    answer: str | None = None,
    question: str = "",
    decoded: Decoded | None = None,
) -> float:
    """The end-of-episode terms: quality on the teacher-forced answer (``q``, ``None`` where nothing was
    teacher-forced), the over-budget penalty, evidence kept, where the reduced model's answer to
    ``question`` was generated its echo and loop penalties, and where it was ``decoded`` in the
    episode whether it is right and how sure the model is of it (its text is then the ``answer``)."""
    reward = 0.0
    if q is not None:
        reward += -config.kl * min(q.kl, config.kl_cap) + config.agreement * q.agreement
        reward += config.likelihood * q.likelihood + config.greedy * q.greedy
        if q.answer_accuracy is not None:
            reward += config.answer * q.answer_accuracy
        reward -= config.hallucination * q.hallucination_excess
    if decoded is not None:
        answer = decoded.text
        reward += config.confidence * decoded.confidence
        if decoded.solved is not None:
            reward += config.solved * decoded.solved
    reward -= config.over_budget * max(0.0, flops_ratio - budget)
    if evidence_share is not None:
        reward += config.evidence * evidence_share
    if answer is not None:
        reward -= answer_penalty(answer, question, config)
    return reward
