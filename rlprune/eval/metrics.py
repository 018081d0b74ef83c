"""Per-answer quality measures and bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlprune.data.tasks import normalize

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


def content_words(text: str) -> set[str]:
    """The words of ``text`` that carry content: normalised, without stopwords."""
    return {w for w in normalize(text).split() if w not in STOPWORDS}


def unsupported_words(answer: str, *sources: str | None) -> list[str]:
    """Content words of ``answer`` found in none of ``sources`` (singular and plural match)."""
    known = set().union(*(content_words(s) for s in sources if s))
    return sorted(w for w in content_words(answer) if not {w, w + "s", w.removesuffix("s")} & known)


@dataclass(frozen=True)
class Agreement:
    """The reduced model against the full model, teacher-forced on the full model's answer."""

    kl: float  # mean KL(full || reduced) per answer token, in nats
    top1: float  # share of answer positions where both models' most likely tokens match
    out_of_context_mass: float  # mean probability on tokens in neither prompt nor full answer


@torch.no_grad()
def agreement(reduced_logits: Tensor, full_logprobs: Tensor, allowed_ids: Tensor) -> Agreement:
    """Compare logits ``(m, vocab)`` over the same teacher-forced continuation."""
    logprobs = reduced_logits.float().log_softmax(dim=-1)
    kl = (full_logprobs.exp() * (full_logprobs - logprobs)).sum(-1).clamp(min=0.0)
    top1 = (logprobs.argmax(-1) == full_logprobs.argmax(-1)).float()
    return Agreement(kl.mean().item(), top1.mean().item(), out_of_context_mass(logprobs, allowed_ids))


def degenerate(answer: str, n: int = 8) -> bool:
    """Whether the answer repeats some run of ``n`` words (a loop, not an answer that ends)."""
    words = answer.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) < len(grams)


def out_of_context_mass(logprobs: Tensor, allowed_ids: Tensor) -> float:
    """Mean probability on tokens outside ``allowed_ids`` (the full model's own, for reference)."""
    return (1.0 - logprobs.exp()[:, allowed_ids].sum(-1)).clamp(min=0.0).mean().item()


def bootstrap_interval(
    columns: Sequence[Sequence[float]],
    statistic: Callable[..., float],
    *,
    samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(*columns)`` over items resampled with replacement.

    The columns are aligned per item and resampled together, so paired statistics (a speedup
    over the full model on the same prompts) keep their pairing.
    """
    arrays = [np.asarray(c, dtype=float) for c in columns]
    n = len(arrays[0])
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(samples, n))
    values = np.array([statistic(*(a[p] for a in arrays)) for p in picks])
    tail = (1.0 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)
