"""The one definition of every quality measure.

The reward, training validation, the best-static search and the evaluation harness all call
these functions, so the same outputs give the same numbers wherever they are measured.

Teacher-forced measures compare the reduced model's logits with the full model's distribution at
each position of the full model's own answer:

- **KL(full ‖ reduced)**, in nats per answer position, over the full model's :data:`TOP_K` most
  likely tokens plus one *tail* bin holding the rest of the vocabulary. The reward can only use
  what the reference cache stores (the top-k log-probabilities; the tail is what they leave), so
  evaluation, which has the full logits, reduces them to the same top-k and tail first. Merging
  the tail into one bin can only lower the KL (data processing), so this is a lower bound of the
  full-vocabulary KL: equal to it when the vocabulary fits in k, and on SmolLM2's grounded answers
  4% (KL 0.36) to 19% (KL 0.05) below it, ranking methods alike. What it misses is how the reduced
  model spreads, within the tail, the little mass the full model leaves there.
- **top-1 agreement**: the reduced model's most likely token is the full model's.
- **answer token accuracy**: share of the gold answer's tokens, where the full model's answer
  spells it, that the reduced model predicts top-1.
- **out-of-context mass**: probability on tokens found in neither the prompt nor the full model's
  answer (the hallucination term of the reward, on grounded tasks).

Measures of a generated answer:

- **answer match**: :func:`answer_correct` (with the tasks, in :mod:`rlprune.data.tasks`) and
  :func:`partial_answer`;
- **hallucinated**: a grounded answer with content words in neither the context, the question nor
  the full model's answer (:func:`hallucinated`);
- **evidence kept**: every token of an occurrence of the gold answer reached the last layer
  (:func:`evidence_kept`);
- **degenerate**: the answer loops (:func:`degenerate`);
- **echoes the question**: the answer says the question back instead of answering it
  (:func:`echoes_question`);
- **names another value**: a wrong answer names a value of the context that is not the gold one,
  e.g. the number of another key (:func:`names_other_value`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rlprune.data.evidence import Evidence, partial_answer
from rlprune.data.tasks import Task, answer_correct, normalize

TOP_K = 32
"""Tokens of the full model's distribution kept per position; the rest of the vocabulary is one bin."""
KL_DEFINITION = f"top-{TOP_K} + tail"
"""How KL is computed, as results record it."""
_FLOOR = math.log(1e-12)  # the least log-probability a reduced model is charged for a token

# Function words and words an answer uses to talk about the text: never evidence of invention.
STOPWORDS = frozenset(
    """a an the and or but if then so of in on at to for from by with about as into over under after
    before between during without within is are was were be been being am has have had do does did
    will would can could should may might must shall this that these those it its it's they them their
    there here he she him her his hers we us our you your i me my who whom whose which what when where
    why how not no yes all any each both some such only also very just than too more most other same
    own one first named called text passage context question answer according mentioned given based
    information provided provide provides says said states stated mentions mention indeed author
    explicitly specified specific""".split()
)


# -- teacher-forced measures ----------------------------------------------------------------------


@dataclass(frozen=True)
class TopK:
    """The full model's distribution at each answer position, as it is stored: its most likely
    tokens ``ids`` ``(m, k)`` and their log-probabilities ``logprobs`` ``(m, k)``, most likely first."""

    ids: Tensor
    logprobs: Tensor

    def to(self, device: torch.device | str) -> TopK:
        return TopK(self.ids.to(device), self.logprobs.to(device))


def log_probs(logits: Tensor) -> Tensor:
    """Log-probabilities of ``logits`` ``(..., vocab)``, in float32 whatever the model's dtype."""
    return logits.float().log_softmax(dim=-1)


def top_k(logits: Tensor, k: int = TOP_K) -> TopK:
    """The ``k`` most likely tokens of ``logits`` ``(m, vocab)`` (all of them where the vocabulary is smaller)."""
    top = log_probs(logits).topk(min(k, logits.shape[-1]), dim=-1)
    return TopK(top.indices, top.values)


def kl_divergence(reference: TopK, logprobs: Tensor) -> Tensor:
    """KL(full ‖ reduced) per position ``(m,)``, in nats, over the reference's top-k tokens and one
    tail bin; ``logprobs`` ``(m, vocab)`` are the reduced model's (see the module docstring)."""
    p_top = reference.logprobs.exp()
    q_top = logprobs.gather(-1, reference.ids).clamp(min=_FLOOR)
    kl = (p_top * (reference.logprobs - q_top)).sum(-1)
    if reference.ids.shape[-1] < logprobs.shape[-1]:  # the rest of the vocabulary, as one bin
        p_tail = (1.0 - p_top.sum(-1)).clamp(min=0.0)
        q_tail = logprobs.scatter(-1, reference.ids, -math.inf).logsumexp(-1).clamp(min=_FLOOR)
        kl = kl + torch.where(p_tail > 0, p_tail * (p_tail.clamp(min=1e-12).log() - q_tail), 0.0)
    return kl.clamp(min=0.0)


def top1_agreement(reference: TopK, logprobs: Tensor) -> Tensor:
    """Per position ``(m,)``: whether the full model's most likely token is the reduced model's
    (one of them, on a tie: the same logits always agree, whatever order ties are listed in)."""
    return logprobs.gather(-1, reference.ids[..., :1]).squeeze(-1) >= logprobs.max(dim=-1).values


def out_of_context_mass(logprobs: Tensor, allowed_ids: Tensor) -> Tensor:
    """Per position ``(m,)``: probability on tokens outside ``allowed_ids`` (those of the prompt and
    of the full model's answer)."""
    return (1.0 - logprobs.exp()[..., allowed_ids].sum(-1)).clamp(min=0.0)


def answer_token_accuracy(logprobs: Tensor, targets: Tensor, mask: Tensor) -> float | None:
    """Share of the ``mask``-ed ``targets`` (the gold answer's tokens in the full model's answer) the
    reduced model predicts top-1; ``None`` where the full model's answer does not spell the gold one."""
    if not mask.any():
        return None
    return (logprobs.argmax(dim=-1)[mask] == targets[mask]).float().mean().item()


def answer_likelihood(logprobs: Tensor, targets: Tensor, floor: float) -> float:
    """Mean log-probability the reduced model gives the full model's own answer ``targets``, teacher-forced,
    each token's term floored at ``-floor`` nats: a reward that needs no gold answer, only the full model."""
    if targets.numel() == 0:
        return 0.0
    return _picked(logprobs, targets).clamp(min=-floor).mean().item()


def greedy_reproduced(logprobs: Tensor, targets: Tensor) -> int:
    """How many leading tokens of ``targets`` (the full model's answer, teacher-forced) the reduced model
    predicts top-1 in a row: as long as each is its top-1, its own greedy decoding says the same, so this
    is the length of the answer it reproduces when it decodes (a tie counts as reproduced)."""
    if targets.numel() == 0:
        return 0
    kept = _picked(logprobs, targets) >= logprobs.max(dim=-1).values
    return int(kept.long().cumprod(0).sum())


def _picked(logprobs: Tensor, targets: Tensor) -> Tensor:
    """Each position's log-probability of its teacher-forced token ``targets`` ``(m,)``."""
    return logprobs.gather(-1, targets[:, None].to(logprobs.device)).squeeze(-1)


@dataclass(frozen=True)
class Agreement:
    """The reduced model against the full model, teacher-forced on the full model's answer."""

    kl: float  # mean KL(full || reduced) per answer position (top-k with the tail as one bin), nats
    top1: float  # share of answer positions where both models' most likely tokens match
    out_of_context_mass: float  # mean probability on tokens in neither prompt nor full answer


@torch.no_grad()
def agreement(logits: Tensor, reference: TopK, allowed_ids: Tensor) -> Agreement:
    """Compare the reduced model's ``logits`` ``(m, vocab)`` with the full model's ``reference`` on
    the same teacher-forced answer."""
    logprobs = log_probs(logits)
    reference = reference.to(logprobs.device)
    return Agreement(
        kl_divergence(reference, logprobs).mean().item(),
        top1_agreement(reference, logprobs).float().mean().item(),
        out_of_context_mass(logprobs, allowed_ids.to(logprobs.device)).mean().item(),
    )


def confidence(logits: Tensor, tokens: Sequence[int]) -> float | None:
    """The geometric-mean probability of ``tokens`` under teacher-forced ``logits`` ``(m, vocab)``:
    how sure a model is of its own answer (a difficulty proxy: low on items it finds hard); ``None``
    for an empty answer."""
    if not len(tokens):
        return None
    chosen = log_probs(logits[: len(tokens)]).gather(1, torch.tensor(list(tokens), device=logits.device)[:, None])
    return float(chosen.mean().exp())


# -- generated answers ----------------------------------------------------------------------------


def content_words(text: str) -> set[str]:
    """The words of ``text`` that carry content: normalised, without stopwords."""
    return {w for w in normalize(text).split() if w not in STOPWORDS}


def unsupported_words(answer: str, *sources: str | None) -> list[str]:
    """Content words of ``answer`` found in none of ``sources`` (singular and plural match)."""
    known = set().union(*(content_words(s) for s in sources if s))
    return sorted(w for w in content_words(answer) if not {w, w + "s", w.removesuffix("s")} & known)


def hallucinated(answer: str, task: Task, full_answer: str | None = None) -> bool | None:
    """Whether a grounded task's ``answer`` says content words found in neither its context, its
    question nor ``full_answer`` (the full model's); ``None`` where the task is not grounded."""
    if not task.grounded:
        return None
    return bool(unsupported_words(answer, task.context, task.question, full_answer))


def degenerate(answer: str, n: int = 8) -> bool:
    """Whether the answer repeats some run of ``n`` words (a loop, not an answer that ends)."""
    words = answer.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) < len(grams)


def _stem(word: str) -> str:
    return word.removesuffix("s")


def echoes_question(answer: str, question: str) -> bool:
    """Whether ``answer`` says ``question`` back instead of answering it: it repeats, in the
    question's order, more than half of the question's content words (and at least two), and says
    no content word of its own (singular and plural match). An answer that adds one new content
    word (a name, a number, or a "yes" or "no") is an answer, however much of the question it repeats."""
    asked = [_stem(w) for w in normalize(question).split() if w not in STOPWORDS]
    said = [_stem(w) for w in normalize(answer).split() if w not in STOPWORDS or w in ("yes", "no")]
    if not said or set(said) - set(asked):
        return False
    common = [0] * (len(said) + 1)  # the longest common subsequence, one row at a time
    for word in asked:
        previous = 0
        for j, other in enumerate(said, start=1):
            previous, common[j] = common[j], previous + 1 if word == other else max(common[j], common[j - 1])
    return common[-1] >= 2 and common[-1] > len(asked) / 2


NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
"""A number as answers and contexts write it: digits, with any ``.``, ``,`` or ``:`` inside."""
_NAME = re.compile(r"(?<![.!?:]\s)(?<![\n\r])(?<!^)\b[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*){0,3}")


def other_values(task: Task) -> set[str]:
    """The values of ``task``'s context that are not its answer, normalised: the ``distractors``
    its metadata lists (a JSONL line may list them), and the context's values of the gold answer's
    shape: numbers (digits, with any ``.``, ``,`` or ``:`` inside) where an answer holds one, else
    capitalised names (runs of up to four capitalised words that do not start a sentence or a line)
    where every answer is one. Values the question or an answer says, and function words, are left out."""
    aliases = task.answers or ((task.answer,) if task.answer else ())
    listed = task.meta.get("distractors") or ()
    found = {str(v) for v in ((listed,) if isinstance(listed, str) else listed)}
    if task.context and aliases:
        if any(NUMBER.search(a) for a in aliases):
            found |= set(NUMBER.findall(task.context))
        elif all(a.strip()[:1].isupper() for a in aliases):
            found |= set(_NAME.findall(task.context.strip()))
    known = f" {normalize(' '.join((task.question, *aliases)))} "
    return {v for v in map(normalize, found) if content_words(v) and f" {v} " not in known}


def names_other_value(answer: str, task: Task) -> bool | None:
    """Whether a wrong ``answer`` names one of :func:`other_values` (another key's number, another
    person of the text); ``None`` where the task has no answer or no such values are known."""
    correct = answer_correct(answer, task)
    values = other_values(task)
    if correct is None or not values:
        return None
    said = f" {normalize(answer)} "
    return not correct and any(f" {v} " in said for v in values)


def evidence_kept(evidence: Evidence | None, reaches_top: Tensor) -> tuple[bool | None, float | None]:
    """``(whole, share)`` of the gold answer's tokens that reached the last layer (see
    :meth:`Evidence.kept`); ``(None, None)`` where the answer is not in the context."""
    return (None, None) if evidence is None else evidence.kept(reaches_top)


__all__ = [
    "KL_DEFINITION",
    "STOPWORDS",
    "TOP_K",
    "Agreement",
    "TopK",
    "agreement",
    "answer_correct",
    "answer_token_accuracy",
    "content_words",
    "degenerate",
    "echoes_question",
    "evidence_kept",
    "hallucinated",
    "kl_divergence",
    "log_probs",
    "names_other_value",
    "other_values",
    "out_of_context_mass",
    "partial_answer",
    "top1_agreement",
    "top_k",
    "unsupported_words",
]
