"""Where a task's gold answer sits in its prompt, and whether reduction kept it.

A reduced answer can only be right if the answer's own tokens survive the reduction. Measuring
that needs no generation: locate every occurrence of the gold answer in the context, run the
reduced prefill, and check which of those tokens still reach the last layer (kept, or merged into
a kept token). It ranks methods over hundreds of items in minutes, and it is a training signal
the policy never sees (the answer is known from the task, not from the prompt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from rlprune.data.tasks import Task, normalize
from rlprune.prompts import Prompt


@dataclass(frozen=True)
class Evidence:
    """Occurrences of the gold answer(s) in a prompt.

    Attributes:
        occurrences: ``(k, n)`` bool, one row per occurrence: the prompt tokens that spell it.
        groups: ``(k,)`` which required answer each occurrence belongs to. One group when any
            alias will do; one per answer when all are required (``match: "all"``).
    """

    occurrences: Tensor
    groups: Tensor

    def __len__(self) -> int:
        return int(self.occurrences.shape[0])

    def kept(self, reaches_top: Tensor) -> tuple[bool, float]:
        """``(whole, share)`` given which prompt tokens reached the last layer.

        ``whole``: every required answer has an occurrence all of whose tokens survived;
        ``share``: the mean over required answers of the best occurrence's surviving share.
        """
        n = self.occurrences.shape[1]
        survived = reaches_top[:n].to(self.occurrences.device)
        hits = (self.occurrences & survived).sum(1).float()
        share = hits / self.occurrences.sum(1).clamp(min=1).float()
        best = torch.zeros(int(self.groups.max()) + 1).scatter_reduce(0, self.groups, share, reduce="amax")
        return bool((best >= 1.0).all()), float(best.mean())


def _aliases(task: Task) -> tuple[str, ...]:
    return tuple(a for a in (task.answers or ((task.answer,) if task.answer else ())) if normalize(a))


def locate_evidence(prompt: Prompt, task: Task) -> Evidence | None:
    """Every occurrence of the task's gold answer in the context part of ``prompt``.

    ``None`` when the task has no context or answer, or no required answer occurs in the context
    (then nothing can be kept or lost, and the item counts in no evidence measure).
    """
    if task.context is None or prompt.offsets is None:
        return None
    aliases = _aliases(task)
    if not aliases:
        return None
    text, n = prompt.text, len(prompt)
    context_end = text.rfind("Question: ") if "Question: " in text else len(text)
    starts = torch.tensor([s for s, _ in prompt.offsets], dtype=torch.long)
    ends = torch.tensor([e for _, e in prompt.offsets], dtype=torch.long)
    required = [(a,) for a in aliases] if task.meta.get("match") == "all" else [aliases]
    rows, groups = [], []
    for group, names in enumerate(required):
        found = False
        for alias in names:
            pattern = re.compile(r"(?<!\w)" + re.escape(alias.strip()) + r"(?!\w)", re.IGNORECASE)
            for match in pattern.finditer(text, 0, context_end):
                row = (starts < match.end()) & (ends > match.start())
                if row.any():
                    rows.append(row[:n])
                    groups.append(group)
                    found = True
        if not found:
            return None  # a required answer is not in the context: the item measures nothing here
    return Evidence(torch.stack(rows), torch.tensor(groups, dtype=torch.long))


def partial_answer(output: str, task: Task) -> bool | None:
    """Whether a wrong ``output`` says a strict part of the gold answer: a prefix of a number
    (``4018`` for ``4018627``) or one word of a several-word name (``Quellbrook`` of ``Old
    Quellbrook``) that the question does not already say. ``None`` when the task has no answer."""
    aliases = _aliases(task)
    if not aliases:
        return None
    said = normalize(output)
    if any(f" {normalize(a)} " in f" {said} " for a in aliases):
        return False  # the whole answer is there
    asked = set(normalize(task.question).split())
    said_words = set(said.split())
    for alias in aliases:
        words = normalize(alias).split()
        if len(words) > 1 and any(w in said_words and w not in asked for w in words):
            return True
        for number in re.findall(r"\d+", alias):
            if any(1 < len(d) < len(number) and number.startswith(d) for d in re.findall(r"\d+", output)):
                return True
    return False
