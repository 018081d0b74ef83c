"""What a task is and how an answer is judged: :class:`Task`, answer matching, and a JSONL loader
for your own data. The generated suites are in :mod:`rlprune.data.generators`.

Every task has a kind (:data:`KINDS`) and generated tasks a split (:data:`SPLITS`).
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from rlprune.data.text import fold, surrogate_field, visible
from rlprune.errors import RLPruneError

SPLITS = ("train", "validation", "test")
KINDS = (
    "grounded",
    "counterfactual",
    "kv",
    "two_hop",
    "instruction",
    "arithmetic",
    "paraphrase",
    "lookalike",
    "bridge",
    "niah",
)


@dataclass(frozen=True)
class Task:
    """One prompt: a question (or instruction), its context and, where known, its gold answer."""

    kind: str
    question: str
    context: str | None = None
    answer: str | None = None
    answers: tuple[str, ...] = ()  # accepted aliases, the answer included
    prior: str | None = None  # counterfactual tasks: what the model would say from memory
    meta: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def grounded(self) -> bool:
        """The answer must come from the context (so unsupported tokens are hallucinations)."""
        return self.context is not None and self.kind != "instruction"

    @property
    def uid(self) -> str:
        """A hash of everything that decides the prompt, the grade and the groups of this task: kind,
        context, question, answers, prior and metadata (the match mode and any ``--group-by`` field)
        so an evaluation never reuses a record made for other answers or other groups."""
        parts = [self.kind, self.context, self.question, self.answer, list(self.answers), self.prior, self.meta]
        text = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]  # never fails on odd text


ARTICLES = ("a", "an", "the")


def _words(text: str, articles: bool = False) -> list[str]:
    """The words of ``text`` folded for matching (:func:`~rlprune.data.text.fold`: NFKC, case-folded,
    no punctuation or invisible characters), without articles unless ``articles``."""
    words = fold(text).split()
    return words if articles else [w for w in words if w not in ARTICLES]


def normalize(text: str) -> str:
    """Folded words without articles, single spaces (SQuAD-style answer matching, Unicode-aware)."""
    return " ".join(_words(text))


def answer_words(alias: str) -> str:
    """What an output must contain, as whole words, to say ``alias``: the alias normalised, or a
    one-character alias ("A", a choice's letter) as itself, which normalising would drop as an article.
    Empty when the alias says nothing visible (``"The"``, ``"?"``, a zero-width space, a direction mark)."""
    kept = " ".join(_words(alias, articles=True))
    words = kept if len(kept) == 1 else normalize(alias)
    return words if visible(words) else ""


def answer_correct(output: str, task: Task) -> bool | None:
    """Whether ``output`` contains one of the task's answers (all of them where ``task.meta["match"]``
    is ``"all"``: questions with several answers); ``None`` when it has none that says anything."""
    aliases = task.answers or ((task.answer,) if task.answer else ())
    wanted = [words for words in map(answer_words, aliases) if words]
    if not wanted:
        return None
    said = f" {normalize(output)} "
    said_whole = f" {' '.join(_words(output, articles=True))} "  # one letter is looked for among all words
    found = [f" {words} " in (said_whole if len(words) == 1 else said) for words in wanted]
    return all(found) if task.meta.get("match") == "all" else any(found)


JSONL_FIELDS = ("prompt", "context", "question", "answer", "answers")
"""What a JSONL line may say about its prompt; any other field is kept as the task's metadata."""
MAX_SUITE_BYTES = 256 << 20
"""Most bytes a JSONL suite or prompt file may hold; a bigger one is refused unread."""


def load_jsonl(path: str | Path) -> list[Task]:
    """Tasks from JSONL: ``{"context", "question", "answer", "answers"}`` or ``{"prompt"}`` per line,
    plus any other fields (``id``, ``kind``, ``source`` ...), which are kept in ``Task.meta``.

    The suite is checked as a whole and every bad line is reported, with its number, in one error:
    a line that is not JSON or repeats a key (JSON would silently keep the last value), a line with a
    lone surrogate escape (``"\\ud800"``), an answer with nothing visible once folded, ``answer``
    and ``answers`` that disagree, and a line that repeats an earlier item (the same question,
    context, answers and fields), which would be counted twice. The file must be a regular file of
    at most :data:`MAX_SUITE_BYTES`.
    """
    from rlprune.io import JSONError, parse_json, read_text

    path = Path(path)
    tasks, problems, first_line = [], [], {}
    for number, line in enumerate(read_text(path, "suite file", MAX_SUITE_BYTES).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = parse_json(line)
        except JSONError as error:
            problems.append(f"line {number}: not JSON ({error})")
            continue
        problem = _jsonl_problem(item)
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        task = _jsonl_task(item)
        first = first_line.setdefault(_graded_as(task), number)
        if first != number:
            problems.append(
                f"line {number}: repeats line {first} (the same item would be counted twice); remove one, "
                'or tell them apart with a field such as "id"'
            )
            continue
        tasks.append(task)
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise RLPruneError(f"{path} has {len(problems)} malformed line(s):\n  {shown}")
    if not tasks:
        raise RLPruneError(f"{path} holds no tasks")
    return tasks


def _graded_as(task: Task) -> str:
    """What a suite's items must not share: the prompt, the groups and the answers as they are matched
    (folded: "Zoë" in NFC and in NFD, or "Ａｄａ" and "Ada", are graded alike, so two such lines are one
    item counted twice)."""
    answers = sorted({answer_words(a) for a in (*task.answers, *([task.answer] if task.answer else []))})
    parts = [task.kind, task.context, task.question, answers, task.prior, task.meta]
    return json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str)


def _shows(text: str) -> bool:
    """Whether ``text`` holds a character one can see (punctuation counts): not only spaces, format
    characters such as a zero-width space, or combining marks."""
    return any(unicodedata.category(char)[0] in "LNSP" for char in text)


def _nonfinite_field(value: object, where: str = "") -> str | None:
    """Where in a parsed JSON value a number is NaN or infinite (``NaN``, ``Infinity``: not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "a value"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _nonfinite_field(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found is not None:
            return found
    return None


def _jsonl_task(item: dict) -> Task:
    """The task a checked JSONL line describes."""
    meta = {k: v for k, v in item.items() if k not in JSONL_FIELDS}  # kept for --group-by and reports
    if "prompt" in item:
        return Task("instruction", item["prompt"], meta=meta)
    answers = tuple(item.get("answers") or ([item["answer"]] if item.get("answer") else []))
    kind = "grounded" if item.get("context") and answers else "instruction"
    return Task(kind, item["question"], item.get("context"), item.get("answer"), answers, meta=meta)


def _jsonl_problem(item: object) -> str | None:
    if not isinstance(item, dict):
        return "expected a JSON object"
    field = surrogate_field(item)
    if field is not None:
        return f"{field} holds a lone surrogate escape (such as \\ud800), which is not text; write the character itself"
    field = _nonfinite_field(item)
    if field is not None:
        return f"{field} is NaN or infinite, which JSON has no words for; write a number or text"
    if "prompt" in item:
        if set(item) & {"context", "question", "answer", "answers"}:
            return '"prompt" stands alone; use "question" with "context" instead'
        return (
            None
            if isinstance(item["prompt"], str) and _shows(item["prompt"])
            else '"prompt" must be text with something visible'
        )
    if not isinstance(item.get("question"), str) or not _shows(item["question"]):
        return 'needs a non-empty "question" (or a "prompt")'
    for key in ("context", "answer"):
        if key in item and item[key] is not None and not isinstance(item[key], str):
            return f'"{key}" must be text'
    if isinstance(item.get("context"), str) and not item["context"].strip():
        return '"context" is empty; give the passage, or leave "context" out for a question without one'
    answers = item.get("answers")
    if answers is not None and (not isinstance(answers, list) or not all(isinstance(a, str) for a in answers)):
        return '"answers" must be a list of strings'
    answer = item.get("answer")
    for alias in [*(answers or []), *([answer] if isinstance(answer, str) else [])]:
        if not answer_words(alias):
            return (
                f"answer {alias!r} is empty once articles, punctuation and invisible characters are ignored; "
                "give the words it must say"
            )
    if isinstance(answer, str) and answers is not None and answer_words(answer) not in map(answer_words, answers):
        return f'"answer" {answer!r} is not one of "answers"; add it there, or give only one of the two'
    if item.get("match") not in (None, "any", "all"):
        return f'"match" must be "any" or "all", got {item["match"]!r}'
    return None
