"""Task generators: every kind of task generated in code from seeds, and suites mixing kinds.

Kinds:
- ``grounded``: a passage of varied distractor sentences with one key fact; the answer is a span.
- ``counterfactual``: the passage contradicts common knowledge and the question asks for it, so
  an answer from the model's prior instead of the context is a measurable hallucination.
- ``kv``: find the value of one key in a list of key-value pairs.
- ``two_hop``: the answer needs two facts placed apart in the passage.
- ``instruction``: an instruction with no gold answer, judged by agreement with the full model.
- ``arithmetic``: a one-step word problem with a number for an answer (no context), where a
  small chat model tends to explain at length what one number says.

Hard kinds (the ``mixed-hard`` preset), set in real prose (essays, see :mod:`rlprune.data.essays`),
each with sentence templates of its own per split, so the test split differs from training by
template, entity names and source text, not only by answer:
- ``paraphrase``: the question paraphrases the fact with few shared words, among look-alike facts.
- ``lookalike``: several facts of the same type about different towns; one is asked.
- ``bridge``: two hops (person -> town -> official), with look-alike facts about other people.
- ``niah``: one needle sentence in a long stretch of essays.

Splits are disjoint: every entity that can be an answer belongs to exactly one split, and a
task's content is fixed by (suite seed, split, index). The words and templates are in
:mod:`rlprune.data.templates`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from rlprune.data.tasks import KINDS, SPLITS, Task
from rlprune.data.templates import (
    ADJECTIVES,
    BRIDGES,
    BUILDINGS,
    COLOURS,
    COUNTABLE,
    COUNTERFACTUAL,
    EVENTS,
    FILLER,
    FIRST,
    INSTRUCTIONS,
    LAST,
    LOOKALIKES,
    NEEDLES,
    OBJECTS,
    PARAPHRASES,
    PROFESSIONS,
    ROLES,
    ROOMS,
    SUMMARIES,
    THINGS,
    TOPICS,
    TOWNS,
    WORD_PROBLEMS,
)
from rlprune.errors import RLPruneError

HARD_KINDS = ("paraphrase", "lookalike", "bridge", "niah")
WORDS_PER_TOKEN = 0.75  # English prose: about four tokens for three words


def _split_part(values: Sequence[str], split: str) -> list[str]:
    """The share of ``values`` reserved for ``split`` (3 of 5 for train, 1 of 5 each otherwise)."""
    parts = {"train": (0, 1, 2), "validation": (3,), "test": (4,)}[split]
    return [v for i, v in enumerate(values) if i % 5 in parts]


class _Writer:
    """Builds one passage: filler sentences around placed facts, about ``words`` words long."""

    def __init__(self, rng: random.Random, split: str, words: int) -> None:
        self.rng, self.split, self.words = rng, split, max(words, 20)
        self._fillers: list[str] = []

    def pick(self, values: Sequence[str], answer: bool = False) -> str:
        return self.rng.choice(_split_part(values, self.split) if answer else list(values))

    def filler(self) -> str:
        if not self._fillers:  # every template once before any repeats
            self._fillers = self.rng.sample(FILLER, len(FILLER))
        return self._fillers.pop().format(
            adj=self.rng.choice(ADJECTIVES),
            town=self.rng.choice(TOWNS),
            building=self.rng.choice(BUILDINGS),
            event=self.rng.choice(EVENTS),
            profession=self.rng.choice(PROFESSIONS),
        )

    def passage(self, facts: Sequence[str], distractors: Sequence[str] = ()) -> tuple[str, list[float]]:
        """Fillers and distractors up to the length, with each fact at a random depth."""
        sentences = list(distractors)
        while sum(len(s.split()) for s in sentences) + sum(len(f.split()) for f in facts) < self.words:
            sentences.append(self.filler())
        self.rng.shuffle(sentences)
        return self._place(sentences, facts)

    def _place(self, sentences: list[str], facts: Sequence[str]) -> tuple[str, list[float]]:
        """Insert each fact at a random sentence break; the text and each fact's relative depth."""
        depths = []
        for fact in facts:
            at = self.rng.randint(0, len(sentences))
            sentences.insert(at, fact)
            depths.append(at / max(len(sentences) - 1, 1))
        return " ".join(sentences), depths

    def prose(self, facts: Sequence[str], distractors: Sequence[str] = ()) -> tuple[str, list[float]]:
        """A run of the split's essays up to the length, distractors and facts at random sentence breaks."""
        from rlprune.data.essays import essays  # the package is only needed for the hard kinds

        pool = essays(self.split)
        sentences: list[str] = []
        need = self.words - sum(len(s.split()) for s in (*facts, *distractors))
        while sum(len(s.split()) for s in sentences) < need:
            _, text = self.rng.choice(pool)
            start = self.rng.randrange(len(text))
            for sentence in text[start:]:
                sentences.append(sentence)
                if sum(len(s.split()) for s in sentences) >= need:
                    break
        for sentence in distractors:
            sentences.insert(self.rng.randint(0, len(sentences)), sentence)
        return self._place(sentences, facts)


def _grounded(w: _Writer) -> Task:
    rng = w.rng
    kind = rng.choice(["person", "count", "year", "place", "colour"])
    town = w.pick(TOWNS)
    if kind == "person":
        role, name = rng.choice(ROLES), f"{w.pick(FIRST, True)} {w.pick(LAST, True)}"
        fact = f"The {role} of {town} is a {rng.choice(PROFESSIONS)} named {name}."
        other = f"The {role} of {w.pick([t for t in TOWNS if t != town])} is named {w.pick(FIRST)} {w.pick(LAST)}."
        return Task(
            "grounded",
            f"What is the name of the {role} of {town}?",
            None,
            name,
            (name,),
            meta={"fact": fact, "distractors": [other]},
        )
    if kind == "count":
        building = rng.choice(BUILDINGS)
        n = rng.randint(3, 99)
        fact = f"The {building} in {town} has {n} {COUNTABLE[building]}."
        question = f"How many {COUNTABLE[building]} does the {building} in {town} have?"
        return Task("grounded", question, None, str(n), (str(n),), meta={"fact": fact})
    if kind == "year":
        event, year = rng.choice(EVENTS), str(rng.randint(1700, 2020))
        fact = f"The {event} in {town} was first held in {year}."
        return Task(
            "grounded", f"In which year was the {event} in {town} first held?", None, year, (year,), meta={"fact": fact}
        )
    if kind == "place":
        person, place = f"{w.pick(FIRST)} {w.pick(LAST)}", w.pick(TOWNS, True)
        job = rng.choice(PROFESSIONS)
        fact = f"{person} moved to {place} to work as a {job}."
        return Task("grounded", f"Which town did {person} move to?", None, place, (place,), meta={"fact": fact})
    first, obj, room, colour = w.pick(FIRST), rng.choice(OBJECTS), rng.choice(ROOMS), w.pick(COLOURS, True)
    fact = f"{first} keeps a {colour} {obj} in the {room}."
    return Task(
        "grounded",
        f"What colour is the {obj} that {first} keeps in the {room}?",
        None,
        colour,
        (colour,),
        meta={"fact": fact},
    )


def _with_passage(task: Task, w: _Writer) -> Task:
    meta = dict(task.meta)
    context, depths = w.passage([meta.pop("fact")], meta.pop("distractors", []))
    return Task(task.kind, task.question, context, task.answer, task.answers, task.prior, {**meta, "depth": depths[0]})


def _counterfactual(w: _Writer) -> Task:
    subject, truth, alternatives = w.rng.choice(COUNTERFACTUAL)
    answer = w.pick(alternatives, True) if len(alternatives) >= 5 else w.rng.choice(alternatives)
    fact = f"In this country's schoolbooks, the {subject} is {answer}, and everyone here agrees."
    context, depths = w.passage([fact])
    question = f"According to the text, what is the {subject}?"
    return Task("counterfactual", question, context, answer, (answer,), prior=truth, meta={"depth": depths[0]})


def _kv(w: _Writer) -> Task:
    rng = w.rng
    pairs = max(4, w.words // 13)  # a pair line is about 13 words worth of tokens
    keys = {f"{rng.choice(ADJECTIVES)}-{rng.choice(OBJECTS)}-{rng.randint(10, 99)}" for _ in range(pairs)}
    table = {key: str(rng.randint(1000, 9999)) for key in sorted(keys)}
    items = list(table.items())
    rng.shuffle(items)
    key, value = rng.choice(items)
    context = "Access codes:\n" + "\n".join(f"{k}: {v}" for k, v in items)
    depth = [k for k, _ in items].index(key) / max(len(items) - 1, 1)
    return Task("kv", f"What is the access code for {key}?", context, value, (value,), meta={"depth": depth})


def _two_hop(w: _Writer) -> Task:
    person, town = f"{w.pick(FIRST)} {w.pick(LAST)}", w.pick(TOWNS)
    mayor = f"{w.pick(FIRST, True)} {w.pick(LAST, True)}"
    facts = [f"{person} lives in {town}.", f"The mayor of {town} is {mayor}."]
    context, depths = w.passage(facts)
    question = f"Who is the mayor of the town where {person} lives?"
    return Task("two_hop", question, context, mayor, (mayor,), meta={"depth": depths[0]})


def _instruction(w: _Writer) -> Task:
    if w.rng.random() < 0.5:
        context, _ = w.passage([])
        return Task("instruction", w.rng.choice(SUMMARIES), context)
    return Task("instruction", w.rng.choice(INSTRUCTIONS).format(topic=w.pick(TOPICS, True)))


def _arithmetic(w: _Writer) -> Task:
    rng = w.rng
    template, op = rng.choice(WORD_PROBLEMS)
    a = int(w.pick([str(n) for n in range(3, 100)], True))  # the first operand separates the splits
    b = rng.randint(2, 5) if op == "*" else rng.randint(1, a - 1) if op == "-" else rng.randint(2, 60)
    answer = str(a + b if op == "+" else a - b if op == "-" else a * b)
    question = template.format(name=rng.choice(FIRST), a=a, b=b, things=rng.choice(THINGS))
    return Task("arithmetic", question, None, answer, (answer,))


def _name(w: _Writer) -> str:
    return f"{w.pick(FIRST, True)} {w.pick(LAST, True)}"


def _towns(w: _Writer, count: int) -> list[str]:
    return w.rng.sample(_split_part(TOWNS, w.split), count)


def _paraphrase(w: _Writer) -> Task:
    fact, question = w.rng.choice(PARAPHRASES[w.split])
    towns, building = _towns(w, 4), w.rng.choice(BUILDINGS)
    name = _name(w)
    facts = [f.format(name=_name(w), town=t, building=building) for f, _ in PARAPHRASES[w.split] for t in towns[1:]]
    distractors = w.rng.sample(facts, min(3, len(facts)))  # look-alikes: same wording, other towns
    context, depths = w.prose([fact.format(name=name, town=towns[0], building=building)], distractors)
    asked = question.format(town=towns[0], building=building)
    return Task("paraphrase", asked, context, name, (name,), meta={"depth": depths[0]})


def _lookalike(w: _Writer) -> Task:
    fact, question, roles = w.rng.choice(LOOKALIKES[w.split])
    role, towns = w.rng.choice(roles), _towns(w, w.rng.randint(4, 7))
    names = [_name(w) for _ in towns]
    context, depths = w.prose([fact.format(role=role, town=t, name=n) for t, n in zip(towns, names, strict=True)])
    asked = w.rng.randrange(len(towns))
    q = question.format(role=role, town=towns[asked])
    return Task("lookalike", q, context, names[asked], (names[asked],), meta={"depth": depths[asked]})


def _bridge(w: _Writer) -> Task:
    lives, official, question = w.rng.choice(BRIDGES[w.split])
    towns = _towns(w, 3)
    people = [f"{w.pick(FIRST, True)} {w.pick(LAST, True)}" for _ in towns]
    names = [_name(w) for _ in towns]
    facts = [lives.format(person=p, town=t) for p, t in zip(people, towns, strict=True)]
    facts += [official.format(name=n, town=t) for n, t in zip(names, towns, strict=True)]
    context, depths = w.prose(facts)
    q = question.format(person=people[0])
    return Task("bridge", q, context, names[0], (names[0],), meta={"depth": depths[0]})


def _niah(w: _Writer) -> Task:
    needle, question, answers = w.rng.choice(NEEDLES[w.split])
    first, answer = w.pick(FIRST, True), w.rng.choice(answers)
    context, depths = w.prose([needle.format(first=first, answer=answer)])
    return Task("niah", question.format(first=first), context, answer, (answer,), meta={"depth": depths[0]})


GENERATORS: dict[str, Callable[[_Writer], Task]] = {
    "grounded": lambda w: _with_passage(_grounded(w), w),
    "counterfactual": _counterfactual,
    "kv": _kv,
    "two_hop": _two_hop,
    "instruction": _instruction,
    "arithmetic": _arithmetic,
    "paraphrase": _paraphrase,
    "lookalike": _lookalike,
    "bridge": _bridge,
    "niah": _niah,
}


def generate_task(kind: str, split: str, index: int, *, seed: int = 0, tokens: tuple[int, int] = (150, 1500)) -> Task:
    """Task ``index`` of ``kind`` in ``split``: the same arguments always give the same task.

    ``tokens`` is the range of passage lengths, in model tokens (approximate, counted in words).
    """
    if kind not in GENERATORS:
        raise RLPruneError(f"unknown task kind {kind!r}; use one of {', '.join(KINDS)}")
    if split not in SPLITS:
        raise RLPruneError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    rng = random.Random(f"{seed}/{split}/{kind}/{index}")
    words = int(rng.uniform(*tokens) * WORDS_PER_TOKEN)
    return GENERATORS[kind](_Writer(rng, split, words))


def generate_suite(
    mix: dict[str, float], split: str, size: int, *, seed: int = 0, tokens: tuple[int, int] = (150, 1500)
) -> list[Task]:
    """``size`` distinct tasks of ``split``, kinds drawn in the proportions of ``mix``."""
    unknown = sorted(set(mix) - set(KINDS))
    if unknown:
        raise RLPruneError(f"unknown task kind(s) {', '.join(unknown)} in the mix; use {', '.join(KINDS)}")
    if not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise RLPruneError("the task mix needs at least one kind with a positive weight")
    rng = random.Random(f"{seed}/{split}/mix")
    kinds, weights = zip(*sorted(mix.items()), strict=True)
    tasks: dict[tuple[str, ...], Task] = {}  # distinct by what the prompt and the answer say
    index = 0
    while len(tasks) < size:
        task = generate_task(rng.choices(kinds, weights)[0], split, index, seed=seed, tokens=tokens)
        tasks.setdefault((task.kind, task.context, task.question, task.answer), task)
        index += 1
        if index > 20 * size + 100:
            raise RLPruneError(f"could not generate {size} distinct {split} tasks from this mix")
    return list(tasks.values())
