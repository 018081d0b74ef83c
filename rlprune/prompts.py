"""Turn a question (and optional context passage) into token ids, and mark what must be protected."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from rlprune.errors import InvalidPromptError

INSTRUCTION_TAIL = 8
"""Final tokens of a bare instruction (no context) that stay protected."""


@dataclass(frozen=True)
class Prompt:
    """Token ids of one prompt and how many final tokens (question and generation prompt) to protect."""

    input_ids: torch.Tensor  # (1, n)
    protect_last: int
    text: str
    offsets: tuple[tuple[int, int], ...] | None = field(default=None, compare=False, repr=False)  # chars per token

    def __len__(self) -> int:
        return int(self.input_ids.shape[1])


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    context: str | None = None,
    *,
    chat: bool = True,
    system: str | None = None,
) -> Prompt:
    """Render ``context`` and ``question`` as one user turn (with the chat template when there is one;
    a base model without one reads ``context``, ``Question: ...`` and ``Answer:``).

    Everything from the question to the end of the prompt is protected from reduction, so the
    question stays intact and its tokens act as the queries that score the context.
    """
    if not question.strip():
        raise InvalidPromptError("the prompt is empty: give a question or instruction")
    if context is not None and not context.strip():
        raise InvalidPromptError("the context is empty: leave it out or give some text")
    user = question if context is None else f"{context.strip()}\n\nQuestion: {question.strip()}"
    templated = chat and bool(getattr(tokenizer, "chat_template", None))
    if templated:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    elif chat and context is not None:  # a base model has no template: the plain reading-comprehension layout
        text = f"{user}\nAnswer:"
    else:
        text = user
    # a template writes its own special tokens; plain text gets the tokenizer's (Gemma needs its <bos>)
    encoded = tokenizer(text, add_special_tokens=not templated, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    if not ids:
        raise InvalidPromptError("the prompt encodes to no tokens")
    offsets = encoded["offset_mapping"]
    if context is not None:
        protect_last = sum(1 for start, _ in offsets if start >= text.rfind("Question: "))
    else:  # a bare instruction: protect its last words and the generation prompt after it
        user_end = text.rfind(user) + len(user)
        protect_last = sum(1 for start, _ in offsets if start >= user_end) + INSTRUCTION_TAIL
    spans = tuple((int(start), int(end)) for start, end in offsets)
    return Prompt(torch.tensor([ids]), min(max(protect_last, 1), len(ids)), text, spans)
