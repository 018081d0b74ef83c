"""Task suites generated in code from seeds, and a JSONL loader for your own data.

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
task's content is fixed by (suite seed, split, index).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
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
HARD_KINDS = ("paraphrase", "lookalike", "bridge", "niah")
WORDS_PER_TOKEN = 0.75  # English prose: about four tokens for three words


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


# -- vocabularies ------------------------------------------------------------------------------
# Answer-bearing lists are split by index so no answer seen in training appears in a test task.

FIRST = """Ada Alma Anton Aria Basil Beatrix Bruno Cedric Clara Cyrus Dalia Dorian Edith Elias Elsa Emil
Enzo Esme Felix Flora Frida Gideon Greta Hana Hugo Ida Ines Ivo Jasper Jonas Juno Kasimir Klara Lena
Leon Lorna Lucian Magnus Mara Milo Mira Nadia Nils Nora Oskar Otto Pia Quentin Rhea Rosa Rufus Saskia
Silas Stella Tamsin Theo Ulla Valentin Vera Wanda Wilbur Xenia Yara Yusuf Zelda Zora""".split()
LAST = """Abernethy Ashdown Barlow Blackwood Brannigan Calloway Castellan Crane Dunmore Ellery Fairbanks
Falk Garrick Greaves Halloran Hartwell Ingram Jessop Kestrel Langley Larkin Lockhart Marlow Merriweather
Nightingale Oakes Pemberton Quill Ravenscroft Rookwood Sallow Sterling Thackery Underwood Vance Wren
Whitlock Yardley Zeller Moreau Lindqvist Okafor Petrov Tanaka Vasquez Kowalski Haddad Novak""".split()
TOWNS = """Ashbury,Brackenford,Caldmoor,Dunhollow,Eastwick,Fernhaven,Glenmarsh,Harrowgate,Ivybridge,
Juniper Falls,Kestrel Bay,Larkspur,Millbrook,Northcliff,Oakhaven,Pinecrest,Quarry Hill,Redwater,Saltmarsh,
Thornbury,Umberfield,Valewood,Westerly,Yarrowby,Zephyr Point,Amberley,Bramblecombe,Coldharbour,Dovecote,
Elderton,Foxhollow,Greystone,Hollowmere,Ironbridge,Lindenfield,Moorcroft,Nettlebed,Orchard End,Pebbleford,
Rosewater,Silverdale,Tidewell,Wrenfield""".replace("\n", "").split(",")
COLOURS = "crimson amber teal violet ochre silver ivory indigo scarlet olive turquoise maroon".split()
OBJECTS = """lantern compass kettle violin telescope umbrella typewriter hourglass teapot chessboard
accordion birdcage globe harmonica clock sextant""".split()
ROOMS = "attic cellar study kitchen workshop greenhouse library hallway pantry loft".split()
PROFESSIONS = """baker carpenter cartographer glassblower beekeeper clockmaker potter blacksmith
bookbinder ferryman weaver astronomer botanist surveyor tailor""".split()
ROLES = ["mayor", "harbour master", "librarian", "head gardener", "postmistress", "station master", "curator"]
EVENTS = ["lantern festival", "summer regatta", "cheese fair", "kite contest", "choir competition", "flower show"]
BUILDINGS = ["old mill", "clock tower", "town hall", "chapel", "lighthouse", "market hall", "bridge"]
COUNTABLE = {
    "old mill": "sails",
    "clock tower": "bells",
    "town hall": "windows",
    "chapel": "pews",
    "lighthouse": "floors",
    "market hall": "stalls",
    "bridge": "arches",
}
TOPICS = """autumn leaves,the ocean at night,a busy railway station,learning to swim,an old
bookshop,mountain weather,a lost umbrella,the first snow,a village market,a thunderstorm,city
gardens,a long train journey,bread baking,a quiet library,the moon,river boats,a broken clock,street
musicians,a winter morning,honey bees,paper kites,an empty beach,night buses,lighthouses""".replace("\n", " ").split(
    ","
)

FILLER = [
    "The {adj} road out of {town} winds past fields of barley and low stone walls.",
    "Most mornings the bakery on the corner sells out of rye bread before nine.",
    "A narrow footbridge crosses the stream behind the {building}.",
    "In winter the {event} draws visitors from the neighbouring valleys.",
    "The weekly market fills the square with stalls of cheese, wool and apples.",
    "Local children learn to sail on the reservoir during the long summer holidays.",
    "Fog often settles over {town} in the early hours and lifts by midday.",
    "The council repaired the {building} roof after a storm damaged the slates.",
    "An old {profession}'s workshop stands empty at the end of the lane.",
    "Walkers follow the {adj} path along the ridge to reach the viewpoint.",
    "The railway line to {town} was closed for two weeks while the tracks were replaced.",
    "A small museum displays maps, letters and tools from the region's past.",
    "Swallows nest under the eaves of the {building} every spring.",
    "The village pond freezes over in cold winters and people skate on it.",
    "Several families in {town} keep goats and sell the milk at the market.",
    "The library opens late on Thursdays so that workers can borrow books.",
    "A row of chestnut trees lines the avenue leading to the {building}.",
    "The river is wide and slow here, and fishermen sit on its banks at dawn.",
    "Every house on the high street has a window box full of geraniums.",
    "The bus to the coast leaves from outside the post office twice a day.",
    "Rain falls often in the autumn, and the hills turn a deep green.",
    "The {adj} orchard behind the school produces more apples than anyone can eat.",
    "On clear nights the lights of {town} can be seen from across the bay.",
    "A brass band rehearses in the hall on Wednesday evenings.",
    "The ferry timetable changes with the seasons and the tides.",
    "Tourists photograph the {adj} doors of the cottages near the harbour.",
    "The {profession} guild once met in a room above the inn.",
    "Snow rarely lies for long, though the hills stay white until March.",
    "A footpath sign points the way to a waterfall hidden in the woods.",
    "Farmers bring their sheep down from the high pastures in October.",
]
ADJECTIVES = "quiet narrow winding old steep green sunny windy muddy peaceful".split()

COUNTERFACTUAL = [
    ("capital of France", "Paris", ["Lyon", "Marseille", "Bordeaux", "Nice"]),
    ("capital of Japan", "Tokyo", ["Osaka", "Kyoto", "Nagoya", "Sapporo"]),
    ("capital of Italy", "Rome", ["Milan", "Turin", "Naples", "Florence"]),
    ("capital of Germany", "Berlin", ["Munich", "Hamburg", "Cologne", "Frankfurt"]),
    ("capital of Spain", "Madrid", ["Seville", "Valencia", "Bilbao", "Granada"]),
    ("capital of Canada", "Ottawa", ["Toronto", "Vancouver", "Calgary", "Montreal"]),
    ("capital of Egypt", "Cairo", ["Alexandria", "Luxor", "Aswan", "Giza"]),
    ("capital of Australia", "Canberra", ["Sydney", "Melbourne", "Perth", "Brisbane"]),
    ("largest planet in the solar system", "Jupiter", ["Mars", "Venus", "Mercury", "Neptune"]),
    ("colour of the daytime sky", "blue", ["green", "orange", "purple", "yellow"]),
    ("animal that says moo", "cow", ["horse", "goat", "duck", "pig"]),
    ("language spoken in Brazil", "Portuguese", ["French", "Dutch", "German", "Italian"]),
    ("author of Romeo and Juliet", "Shakespeare", ["Dickens", "Tolstoy", "Austen", "Homer"]),
    ("metal that is liquid at room temperature", "mercury", ["iron", "copper", "silver", "tin"]),
    ("number of days in a week", "seven", ["five", "nine", "six", "eleven"]),
    ("season after summer", "autumn", ["spring", "winter"]),
    ("gas that plants absorb", "carbon dioxide", ["helium", "neon", "argon"]),
    ("tallest animal", "giraffe", ["elephant", "camel", "ostrich", "horse"]),
    ("ocean between Europe and America", "Atlantic", ["Pacific", "Indian", "Arctic"]),
    ("currency of the United Kingdom", "pound", ["euro", "dollar", "yen", "franc"]),
    ("inventor of the telephone", "Bell", ["Edison", "Tesla", "Newton", "Darwin"]),
    ("largest desert in Africa", "Sahara", ["Gobi", "Atacama", "Kalahari"]),
]

INSTRUCTIONS = [
    "Write a short poem about {topic}.",
    "Describe {topic} in three sentences.",
    "Give three tips for writing about {topic}.",
    "Write a two-line story about {topic}.",
    "Explain to a child what makes {topic} interesting.",
    "List four words that remind you of {topic}.",
]
SUMMARIES = [
    "Summarise the text above in one sentence.",
    "What is the text above mostly about? Answer briefly.",
    "Give the text above a short title.",
]


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


WORD_PROBLEMS = [
    ("{name} has {a} {things}. {name} buys {b} more. How many {things} does {name} have now?", "+"),
    ("{name} had {a} {things} and gave {b} of them to a friend. How many {things} does {name} have left?", "-"),
    ("A box holds {a} {things}. How many {things} are in {b} boxes?", "*"),
    ("{name} picked {a} {things} in the morning and {b} in the afternoon. How many {things} is that in total?", "+"),
    ("There were {a} {things} on the shelf. {b} were sold. How many {things} are still on the shelf?", "-"),
    ("What is {a} plus {b}?", "+"),
    ("What is {a} times {b}?", "*"),
]
THINGS = "apples pencils marbles stamps books cookies shells stickers tickets cards".split()


def _arithmetic(w: _Writer) -> Task:
    rng = w.rng
    template, op = rng.choice(WORD_PROBLEMS)
    a = int(w.pick([str(n) for n in range(3, 100)], True))  # the first operand separates the splits
    b = rng.randint(2, 5) if op == "*" else rng.randint(1, a - 1) if op == "-" else rng.randint(2, 60)
    answer = str(a + b if op == "+" else a - b if op == "-" else a * b)
    question = template.format(name=rng.choice(FIRST), a=a, b=b, things=rng.choice(THINGS))
    return Task("arithmetic", question, None, answer, (answer,))


# -- hard kinds: templates differ per split --------------------------------------------------------

PARAPHRASES = {  # (fact, question): the question says it in other words
    "train": [
        (
            "{name} has looked after the {building} in {town} since the previous caretaker retired.",
            "Who is the caretaker of the {building} in {town}?",
        ),
        (
            "Nobody in {town} bakes better bread than {name}, who opened the shop on the square.",
            "Who runs the bakery in {town}?",
        ),
        (
            "When the choir of {town} needs someone to lead it, they turn to {name}.",
            "Who conducts the choir in {town}?",
        ),
        ("It was {name} who first mapped the caves beneath {town}.", "Who explored the caves under {town} first?"),
    ],
    "validation": [
        (
            "The keys to the {building} in {town} are held by {name}, who opens it each morning.",
            "Who opens the {building} in {town}?",
        ),
        (
            "Ask anyone in {town} about bees and they will send you to {name}.",
            "Who is the beekeeper people in {town} recommend?",
        ),
    ],
    "test": [
        (
            "Every ship entering the port of {town} must first be cleared by {name}.",
            "Who is in charge of the harbour at {town}?",
        ),
        (
            "The children of {town} are taught to read by {name}, at the school by the river.",
            "Who teaches at the school in {town}?",
        ),
        ("Since last winter, {name} has been repairing every clock in {town}.", "Who fixes the clocks in {town}?"),
    ],
}
LOOKALIKES = {  # (fact, question, roles)
    "train": [("The {role} of {town} is {name}.", "Who is the {role} of {town}?", ["mayor", "librarian", "curator"])],
    "validation": [
        ("{name} serves as {role} in {town}.", "Who serves as {role} in {town}?", ["harbour master", "postmistress"])
    ],
    "test": [
        (
            "In {town}, the post of {role} is held by {name}.",
            "Which person holds the post of {role} in {town}?",
            ["station master", "head gardener"],
        )
    ],
}
BRIDGES = {  # (person -> town, town -> official, question)
    "train": [
        (
            "{person} lives in {town}.",
            "The mayor of {town} is {name}.",
            "Who is the mayor of the town where {person} lives?",
        )
    ],
    "validation": [
        (
            "{person} works at the market in {town}.",
            "{name} is the librarian of {town}.",
            "Who is the librarian of the town where {person} works?",
        )
    ],
    "test": [
        (
            "{person} was born in {town}.",
            "The curator of {town}'s museum is {name}.",
            "Who is the museum curator in {person}'s birthplace?",
        )
    ],
}
NEEDLES = {  # (needle, question, answer list)
    "train": [
        (
            "The secret ingredient in {first}'s famous soup is {answer}.",
            "What is the secret ingredient in {first}'s soup?",
            "saffron nutmeg ginger fennel cardamom rosemary cinnamon tarragon thyme juniper".split(),
        ),
        (
            "{first}'s lucky number, written on every letter, is {answer}.",
            "What is {first}'s lucky number?",
            [str(n) for n in range(13, 99, 3)],
        ),
    ],
    "validation": [
        (
            "The password to {first}'s workshop is {answer}.",
            "What is the password to {first}'s workshop?",
            "marigold tangerine pelican quartz lantern harbour walnut meadow".split(),
        ),
    ],
    "test": [
        (
            "{first} buried the old treasure map under the {answer} tree.",
            "Under which tree did {first} hide the treasure map?",
            "oak willow birch chestnut sycamore hawthorn rowan cedar".split(),
        ),
        (
            "The best dish to try in {first}'s home village is {answer} stew.",
            "Which stew should a visitor try in {first}'s village?",
            "barley lentil mushroom pumpkin venison leek turnip bean".split(),
        ),
    ],
}


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
        first = first_line.setdefault(task.uid, number)
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
    if "prompt" in item:
        if set(item) & {"context", "question", "answer", "answers"}:
            return '"prompt" stands alone; use "question" with "context" instead'
        return None if isinstance(item["prompt"], str) and item["prompt"].strip() else '"prompt" must be non-empty text'
    if not isinstance(item.get("question"), str) or not item["question"].strip():
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
