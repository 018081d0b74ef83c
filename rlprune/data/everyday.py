"""Everyday documents from a generator: notice boards, bundles of letters, logs, timetables and
receipts, each a list of short entries of which one holds the asked fact.

A document grows entry by entry to about ``length`` tokens; the asked entry sits at ``depth`` of
it, and the other entries fill the same fields with other values (the task's ``distractors``: what
a wrong answer may name). The asked entry's values occur nowhere else in the document, so the
evidence is one place. Splits differ by entry template, heading, people, streets, towns and items,
and all of them were written apart from the hand-written held-out set in ``eval/everyday-questions``
(a test checks that no name of this module appears there).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence

from rlprune.data.tasks import Task

TOKENS_PER_WORD = 2.4  # SmolLM2's tokenizer on these documents: codes, times, amounts and names split up
SPLIT_PARTS = {"train": (0, 1, 2), "validation": (3,), "test": (4,)}

FIRST = """Aurelio Bettina Casimir Delphine Eamon Fenella Gaspard Hester Ignatius Jolene Leopold Marisol Nico
Ottilie Perpetua Quincy Rosalind Sebastian Tilda Umberto Viola Winifred Xavier Yolanda Zacharias Anouk
Bartholomew Cosima Desmond Philippa""".split()
LAST = """Achterberg Belcourt Cardew Drummond Etheridge Fennimore Gallagher Hawtrey Iredale Jellicoe Kinsella
Lumley Mabry Neville Osgood Pettigrew Quarmby Rutherford Sempill Tregarthen Upshaw Verlaine Wetherby Yelland
Ormerod""".split()
PREFIXES = """Almond Bluebell Copper Damson Elmstead Figtree Granite Heatherly Ivory Lavender Marigold Nutmeg
Oriel Poplar Quince Saffron Tansy Umber Walnut Yewdale""".split()
STREETS = "Street Crescent Terrace Way Parade Gardens Mews Drive".split()
TOWN_ENDS = "ford bury wick mouth stead field ton combe".split()
ITEMS = """sewing machine,garden hose,toaster,bookshelf,stepladder,desk lamp,rowing machine,fishing rod,
record player,camping stove,microwave,kayak paddle,coffee grinder,wheelbarrow,easel,baby gate,pressure
washer,hedge trimmer,bread maker,drum kit,dehumidifier,filing cabinet,paddling pool,tool chest,slow
cooker""".replace("\n", " ").split(",")

Template = tuple[str, str, str]  # (entry, question, the field that answers it)

STYLES: dict[str, dict[str, tuple[list[str], list[Template]]]] = {
    "notices": {
        "train": (
            ["NOTICE BOARD, {town} community centre", "Residents' notices, {street}"],
            [
                (
                    "{who} runs the {item} workshop in room {code} at {time}.",
                    "In which room is {who}'s workshop?",
                    "code",
                ),
                (
                    "For sale: a {item}, {amount} pounds, from {who}.",
                    "How much does {who} want for the {item}?",
                    "amount",
                ),
            ],
        ),
        "validation": (
            ["Village hall notices ({town})"],
            [
                (
                    "Found: one {item}. {who} handed it in to the desk on {street}.",
                    "Where did {who} hand in the {item}?",
                    "street",
                )
            ],
        ),
        "test": (
            ["Pinned to the board at the {town} sports club"],
            [
                (
                    "Repair afternoon with {who}: bring a broken {item}, doors open {time}.",
                    "When do the doors open for {who}'s repair afternoon?",
                    "time",
                )
            ],
        ),
    },
    "letters": {
        "train": (
            ["Post received this week", "Letters to the {town} parish newsletter"],
            [
                (
                    "Dear neighbour, my new telephone extension is {code}. Best wishes, {who}.",
                    "What is {who}'s new telephone extension?",
                    "code",
                ),
                (
                    "Dear friend, we have moved to {street} in {town}. Come and visit! Love, {who}.",
                    "Which town has {who} moved to?",
                    "town",
                ),
            ],
        ),
        "validation": (
            ["Mail for the {town} office"],
            [
                (
                    "To the post office: please send my letters on to {street}, {town}. Regards, {who}.",
                    "On which street should {who}'s letters arrive?",
                    "street",
                )
            ],
        ),
        "test": (
            ["Notes left on the kitchen table"],
            [
                (
                    "Hi! I still owe you {amount} pounds for the concert tickets, paying you back soon. {who}",
                    "How much does {who} still owe for the tickets?",
                    "amount",
                )
            ],
        ),
    },
    "logs": {
        "train": (
            ["Visitor log, {town} depot", "Reception sign-in sheet"],
            [
                ("{time} {who} signed in, visiting {street}.", "At what time did {who} sign in?", "time"),
                ("{time} parcel {code} collected by {who}.", "Which parcel did {who} collect?", "code"),
            ],
        ),
        "validation": (
            ["Meter readings, {street}"],
            [("{time}: engineer {who} read meter {code}.", "Which meter did engineer {who} read?", "code")],
        ),
        "test": (
            ["Tool library loans, {town} branch"],
            [
                (
                    "Loan {code}: the {item} went out with {who} at {time}.",
                    "At what time did {who} take out the {item}?",
                    "time",
                )
            ],
        ),
    },
    "timetables": {
        "train": (
            ["Departures from {town} bus station", "Weekend service, {town} line"],
            [
                ("The {time} service to {town} is driven by {who}.", "Who drives the {time} service to {town}?", "who"),
                ("{time} to {town}, platform {code}.", "From which platform does the {time} to {town} leave?", "code"),
            ],
        ),
        "validation": (
            ["Coach fares from {town}"],
            [
                (
                    "Coach to {town}: leaves at {time}, single fare {amount} pounds.",
                    "What is the single fare of the coach to {town}?",
                    "amount",
                )
            ],
        ),
        "test": (
            ["Summer sailings"],
            [
                (
                    "Ferry for {town} casts off at {time} from berth {code}.",
                    "At what time does the ferry for {town} cast off?",
                    "time",
                )
            ],
        ),
    },
    "receipts": {
        "train": (
            ["{town} hardware, till receipt", "Order summary"],
            [
                ("Order {code}: {item} for {who}, {amount} pounds.", "How much did order {code} cost?", "amount"),
                ("Item {code} {item} {amount}", "What was the price of item {code}?", "amount"),
            ],
        ),
        "validation": (
            ["Invoices paid this month"],
            [("Invoice {code} settled by {who}: {amount} pounds.", "Who settled invoice {code}?", "who")],
        ),
        "test": (
            ["Cafe bill, table by the window"],
            [
                (
                    "Line {code}, {item} hire, served by {who}, {amount} pounds.",
                    "Who served line {code} of the bill?",
                    "who",
                )
            ],
        ),
    },
}
"""Per style and split: the headings and the entry templates (with the question each asks)."""


def _part(values: Sequence[str], split: str) -> list[str]:
    return [v for i, v in enumerate(values) if i % 5 in SPLIT_PARTS[split]]


def draw_fields(rng: random.Random, split: str) -> dict[str, str]:
    """One entry's values: people, streets, towns and items from ``split``'s share of the lists."""
    prefix = _part(PREFIXES, split)
    return {
        "who": f"{rng.choice(_part(FIRST, split))} {rng.choice(_part(LAST, split))}",
        "street": f"{rng.choice(prefix)} {rng.choice(STREETS)}",
        "town": f"{rng.choice(prefix)}{rng.choice(TOWN_ENDS)}",
        "item": rng.choice(_part(ITEMS, split)),
        "time": f"{rng.randrange(6, 23)}:{rng.randrange(0, 60, 5):02d}",
        "amount": f"{rng.randint(2, 480)}.{rng.randrange(100):02d}",
        "code": f"{rng.choice(string.ascii_uppercase)}{rng.randint(100, 999)}",
    }


def fields_in(template: str) -> set[str]:
    return set(re.findall(r"{(\w+)}", template))


def occurs_once(value: str, text: str) -> bool:
    return len(re.findall(r"(?<!\w)" + re.escape(value) + r"(?!\w)", text)) == 1


def everyday_task(rng: random.Random, length: int, depth: float, *, split: str) -> Task:
    """One document of about ``length`` tokens whose entry at ``depth`` holds the asked fact."""
    style = rng.choice(sorted(STYLES))
    headings, templates = STYLES[style][split]
    entry, question, field = rng.choice(templates)
    asked = draw_fields(rng, split)
    unique = fields_in(question) | {field}  # what identifies the asked entry, and its answer
    heading = rng.choice(headings).format(**draw_fields(rng, split))
    entries: list[tuple[str, dict[str, str]]] = []
    words = len(heading.split())
    while words < length / TOKENS_PER_WORD or not entries:
        values = draw_fields(rng, split)
        while any(values[name] == asked[name] for name in unique):
            values = draw_fields(rng, split)
        entries.append((rng.choice(templates)[0], values))  # the other entries in any of the split's wordings
        words += len(entries[-1][0].format(**values).split())
    entries.insert(round(depth * len(entries)), (entry, asked))
    context = "\n".join([heading, *(wording.format(**values) for wording, values in entries)])
    if not all(occurs_once(asked[name], context) for name in unique if name in fields_in(entry)):
        return everyday_task(rng, length, depth, split=split)  # a value repeated inside a template: draw again
    others = sorted({values[field] for wording, values in entries if field in fields_in(wording)} - {asked[field]})
    meta = {"depth": depth, "length": length, "style": style, "distractors": others}
    answer = asked[field]
    return Task("everyday-gen", question.format(**asked), context, answer, (answer,), meta=meta)
