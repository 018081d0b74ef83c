"""The full model's outputs per prompt, computed once and kept on disk.

A training episode needs the full model's answer (to teacher-force it through the reduced
model), its log-probabilities on that answer (for the KL) and the hidden state entering the
first decision layer (so the layers before it never run again). All of it is stored as
safetensors, keyed by the model's fingerprint and a hash of the prompt and settings.

What is teacher-forced is the *target* (:data:`TARGETS`): the full model's own answer, or with
``"corrected"`` the gold answer put in where the full model's answer misses it
(:func:`corrected_answer`), so a reward on the target's likelihood says something on the items
the full model gets wrong too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from rlprune import metrics
from rlprune.data.evidence import Evidence, locate_evidence
from rlprune.data.tasks import Task, answer_correct
from rlprune.engine import Reducer
from rlprune.io import atomic_write
from rlprune.metrics import TOP_K, TopK
from rlprune.models import fingerprint_id, rlprune_home
from rlprune.progress import Progress
from rlprune.prompts import build_prompt

FORMAT = 2  # 2: where the gold answer sits in the prompt (evidence)
TARGETS = ("full", "corrected")
"""What a reference teacher-forces: the full model's greedy answer, or that answer corrected to the
gold one where it misses it (:func:`corrected_answer`)."""


@dataclass
class Reference:
    """What the full model did on one prompt."""

    input_ids: Tensor  # (1, prompt + continuation)
    prompt_length: int
    protect_last: int
    topk_ids: Tensor  # (m, k) the full model's most likely tokens at each continuation step
    topk_logprobs: Tensor  # (m, k) their log-probabilities
    unsupported_mass: Tensor  # (m,) the full model's mass on tokens in neither prompt nor answer
    allowed_ids: Tensor  # tokens found in the prompt or the full model's answer
    answer_mask: Tensor  # (m,) continuation tokens that spell the gold answer
    hidden: Tensor  # (1, prompt + continuation, hidden) entering the first decision layer
    first_layer: int
    grounded: bool
    full_correct: bool | None  # the full model's answer contains a gold alias
    text: str  # the teacher-forced answer: the full model's, or its correction (``ReferenceCache.target``)
    evidence_occurrences: Tensor  # (k, prompt) bool: the gold answer's occurrences in the context (k may be 0)
    evidence_groups: Tensor  # (k,) which required answer each occurrence spells

    @property
    def evidence(self) -> Evidence | None:
        """Where the gold answer is in the prompt, ``None`` when it is not there (the policy never sees it)."""
        return Evidence(self.evidence_occurrences, self.evidence_groups) if len(self.evidence_groups) else None

    @property
    def top_k(self) -> TopK:
        """The full model's stored distribution over the continuation, as :mod:`rlprune.metrics` reads it."""
        return TopK(self.topk_ids, self.topk_logprobs)

    @property
    def continuation(self) -> Tensor:
        return self.input_ids[0, self.prompt_length :]

    def to(self, device: torch.device | str) -> Reference:
        """The same reference with its tensors on ``device`` (itself when they are there already)."""
        if self.topk_ids.device == torch.device(device):
            return self
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, Tensor):
                moved[name] = value.to(device)
        return Reference(**moved)


class ReferenceCache:
    """Computes, stores and serves :class:`Reference` objects for one model and one setting."""

    def __init__(
        self,
        reducer: Reducer,
        tokenizer: PreTrainedTokenizerBase,
        *,
        first_layer: int,
        continuation_tokens: int = 16,
        top_k: int = TOP_K,
        folder: str | Path | None = None,
        memory_items: int = 64,
        target: str = "full",
    ) -> None:
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
        self.reducer, self.tokenizer, self.target = reducer, tokenizer, target
        self.first_layer, self.continuation_tokens, self.top_k = first_layer, continuation_tokens, top_k
        self.folder = Path(folder) if folder else rlprune_home() / "references" / fingerprint_id(reducer.model)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._memory: OrderedDict[str, Reference] = OrderedDict()
        self._memory_items = memory_items

    def key(self, task: Task) -> str:
        settings = [FORMAT, task.kind, task.context, task.question, task.answers, task.prior]
        settings += [self.first_layer, self.continuation_tokens, self.top_k, self.reducer.config.protect_first]
        settings += [] if self.target == "full" else [self.target]  # full-answer references keep their keys
        return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:24]

    def get(self, task: Task) -> Reference:
        """The task's reference, from memory, from disk, or computed now and stored."""
        key = self.key(task)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        path = self.folder / f"{key}.safetensors"
        reference = self._load(path) if path.is_file() else None
        if reference is None:
            reference = self.compute(task)
            self._save(reference, path)
        self._memory[key] = reference
        if len(self._memory) > self._memory_items:
            self._memory.popitem(last=False)
        return reference

    def warm(self, tasks: Iterable[Task], description: str = "reference outputs") -> None:
        """Make sure every task's reference is on disk, with a progress bar."""
        missing = [t for t in tasks if not (self.folder / f"{self.key(t)}.safetensors").is_file()]
        if not missing:
            return
        with Progress(transient=True) as progress:
            bar = progress.add_task(f"{description} (full model, once)", total=len(missing))
            for task in missing:
                self._save(self.compute(task), self.folder / f"{self.key(task)}.safetensors")
                progress.advance(bar)

    @torch.no_grad()
    def compute(self, task: Task) -> Reference:
        """Run the full model: greedy answer (corrected where the target says so), its
        log-probabilities, the early hidden state."""
        reducer, tokenizer = self.reducer, self.tokenizer
        prompt = build_prompt(tokenizer, task.question, task.context)
        generated = reducer.generate(prompt.input_ids, max_new_tokens=self.continuation_tokens)
        continuation = generated.tokens[0].cpu()
        said = tokenizer.decode(continuation, skip_special_tokens=True)
        full_correct = answer_correct(said, task)
        if self.target == "corrected" and full_correct is False:
            for text in (corrected_answer(said, task), f"{gold_answer(task)}."):  # the gold alone if too long
                continuation = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
                if len(continuation) <= self.continuation_tokens:
                    break
            continuation = continuation[: self.continuation_tokens]
        ids = torch.cat((prompt.input_ids, continuation[None].to(prompt.input_ids.device)), dim=1)
        n = len(prompt)
        # one pass: stop at the first decision layer to keep its input, then finish without reduction
        state = reducer.start(
            ids, decision_layers=[self.first_layer], prompt_length=n, protect_last=prompt.protect_last
        )
        hidden = state.hidden
        full = reducer.finish(state, logits="continuation")
        top = metrics.top_k(full.logits[0], self.top_k)
        allowed = torch.unique(ids[0])
        unsupported = metrics.out_of_context_mass(metrics.log_probs(full.logits[0]), allowed)
        text = tokenizer.decode(continuation, skip_special_tokens=True)
        evidence = locate_evidence(prompt, task)
        return Reference(
            input_ids=ids.cpu(),
            prompt_length=n,
            protect_last=prompt.protect_last,
            topk_ids=top.ids.cpu(),
            topk_logprobs=top.logprobs.cpu(),
            unsupported_mass=unsupported.cpu(),
            allowed_ids=allowed.cpu(),
            answer_mask=answer_token_mask(tokenizer, continuation, task),
            hidden=hidden.cpu(),
            first_layer=self.first_layer,
            grounded=task.grounded,
            full_correct=full_correct,
            text=text,
            evidence_occurrences=torch.zeros(0, n, dtype=torch.bool) if evidence is None else evidence.occurrences,
            evidence_groups=torch.zeros(0, dtype=torch.long) if evidence is None else evidence.groups,
        )

    def _save(self, reference: Reference, path: Path) -> None:
        tensors = {
            name: getattr(reference, name).contiguous()
            for name in ("input_ids", "topk_ids", "topk_logprobs", "unsupported_mass", "allowed_ids", "hidden")
        }
        tensors["answer_mask"] = reference.answer_mask.to(torch.uint8)
        tensors["evidence_occurrences"] = reference.evidence_occurrences.to(torch.uint8).contiguous()
        tensors["evidence_groups"] = reference.evidence_groups.contiguous()
        metadata = {
            "format": str(FORMAT),
            "prompt_length": str(reference.prompt_length),
            "protect_last": str(reference.protect_last),
            "first_layer": str(reference.first_layer),
            "grounded": json.dumps(reference.grounded),
            "full_correct": json.dumps(reference.full_correct),
            "text": reference.text,
        }
        atomic_write(path, lambda staging: save_file(tensors, staging, metadata=metadata))

    @staticmethod
    def _load(path: Path) -> Reference | None:
        """A stored reference, or ``None`` if the file is unreadable (it is then recomputed)."""
        try:
            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata()
            tensors = load_file(path)
            if metadata.get("format") != str(FORMAT):
                return None
            return Reference(
                input_ids=tensors["input_ids"],
                prompt_length=int(metadata["prompt_length"]),
                protect_last=int(metadata["protect_last"]),
                topk_ids=tensors["topk_ids"],
                topk_logprobs=tensors["topk_logprobs"],
                unsupported_mass=tensors["unsupported_mass"],
                allowed_ids=tensors["allowed_ids"],
                answer_mask=tensors["answer_mask"].bool(),
                hidden=tensors["hidden"],
                first_layer=int(metadata["first_layer"]),
                grounded=json.loads(metadata["grounded"]),
                full_correct=json.loads(metadata["full_correct"]),
                text=metadata["text"],
                evidence_occurrences=tensors["evidence_occurrences"].bool(),
                evidence_groups=tensors["evidence_groups"],
            )
        except (OSError, KeyError, ValueError, RuntimeError, SafetensorError):
            return None


def gold_answer(task: Task) -> str:
    """The task's gold answer as an answer says it: its first alias, or where it asks for several
    (``meta["match"] == "all"``) all of them joined by "and"."""
    aliases = [a for a in (task.answers or ((task.answer,) if task.answer else ())) if a.strip()]
    if not aliases:
        raise ValueError("only a task with a gold answer can be corrected")
    return " and ".join(aliases) if task.meta.get("match") == "all" else aliases[0]


def corrected_answer(said: str, task: Task) -> str:
    """The full model's wrong answer ``said``, corrected: cut where it first names another value of
    the context (:func:`rlprune.metrics.other_values`: another key's number, another person; for a
    numeric answer any number the question does not hold) and finished with the gold answer
    (:func:`gold_answer`), so the correction keeps the model's own phrasing ("The special magic
    number for X is" + gold); where it names none, ``"The answer is"`` + gold."""
    gold = gold_answer(task)
    values = set(metrics.other_values(task))
    if metrics.NUMBER.search(gold):  # a number the model made up is a wrong value too
        values |= {n for n in metrics.NUMBER.findall(said) if n not in metrics.NUMBER.findall(task.question)}
    starts = []
    for value in values:
        pattern = r"(?<![\w-])" + r"\W+".join(map(re.escape, value.split())) + r"(?![\w-])"  # not in "kettle-24"
        found = re.search(pattern, said, flags=re.IGNORECASE)
        if found:
            starts.append(found.start())
    prefix = said[: min(starts)].rstrip() if starts else ""
    return f"{prefix or 'The answer is'} {gold}."


def answer_token_mask(tokenizer: PreTrainedTokenizerBase, continuation: Tensor, task: Task) -> Tensor:
    """Which continuation tokens spell one of the task's answers (all False when none appears)."""
    mask = torch.zeros(continuation.numel(), dtype=torch.bool)
    aliases = [a for a in (task.answers or ((task.answer,) if task.answer else ())) if a.strip()]
    if not aliases:
        return mask
    pieces = [tokenizer.decode([int(t)]) for t in continuation]
    text = "".join(pieces).lower()
    starts, offset = [], 0
    for piece in pieces:
        starts.append(offset)
        offset += len(piece)
    for alias in aliases:
        at = text.find(alias.lower())
        if at < 0:
            continue
        end = at + len(alias)
        for i, start in enumerate(starts):
            if start < end and start + len(pieces[i]) > at:
                mask[i] = True
        return mask
    return mask
