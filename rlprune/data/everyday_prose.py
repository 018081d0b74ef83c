"""Everyday prose from a generator: club newsletters, postcards, office memos, guest folders, notes
for a pet sitter and farm diaries, each a handful of sentences of which one holds the asked fact.

Unlike :mod:`rlprune.data.everyday`, whose questions repeat the name or code of the asked entry, a
question here paraphrases its sentence, as people ask about what they have read ("How many members
does the club have?" for "Membership reached 412 this season"): finding the evidence means matching
meaning and the kind of value asked (a number, a time, a person, a place), not a shared word. The
other sentences of the document hold values of the same kinds (the task's ``distractors``).

A document is its genre's opening and as many of its sentences, in random order, as fit in about
``length`` tokens (a genre holds about 140 tokens in all); the asked sentence sits at ``depth``.
Splits differ by genre, sentence and question, and by people, streets, towns and items (the
lists of :mod:`rlprune.data.everyday`); all of them were written apart from the hand-written
held-out set in ``eval/everyday-questions`` (a test checks that no name or wording of this module
appears there).
"""

from __future__ import annotations

import random

from rlprune.data.everyday import draw_fields, fields_in, occurs_once
from rlprune.data.tasks import Task

TOKENS_PER_WORD = 1.4  # SmolLM2's tokenizer on these documents
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()

Sentence = tuple[str, str | None, str | None]  # (sentence, the question that paraphrases it, the field asked)

GENRES: dict[str, dict[str, tuple[list[str], list[Sentence]]]] = {
    "train": {
        "club newsletter": (
            ["News from the {town} rowing club.", "Walking club newsletter, {town} branch."],
            [
                (
                    "Our treasurer reports that the club account now holds {amount} pounds after the spring fair.",
                    "How much money does the club have in the bank?",
                    "amount",
                ),
                (
                    "Membership reached {count} this season, the highest since the club was founded.",
                    "How many members does the club have?",
                    "count",
                ),
                (
                    "The annual dinner takes place at the boathouse in {town} on the last Friday of June.",
                    "Where will the yearly meal be held?",
                    "town",
                ),
                (
                    "{who} has kindly agreed to look after the kit cupboard from now on.",
                    "Who minds the equipment store?",
                    "who",
                ),
                (
                    "Please bring back the {item} that went missing after the open day.",
                    "What should someone return to the club?",
                    "item",
                ),
                (
                    "Saturday sessions will now begin at {time}, half an hour earlier than before.",
                    "When do the weekend outings start?",
                    "time",
                ),
                ("Many thanks to {who} and everyone else who helped paint the changing rooms.", None, None),
                (
                    "The quiz night raised {amount} pounds for the lifeboat charity.",
                    "How much was collected for the sea rescue service?",
                    "amount",
                ),
            ],
        ),
        "postcard": (
            ["Greetings from {town}!", "Hello from the seaside."],
            [
                (
                    "We are staying in a little flat above a bakery on {street}.",
                    "On which road is their holiday home?",
                    "street",
                ),
                (
                    "The ferry out to the island costs {amount} pounds each way, which seemed a lot.",
                    "What is the price of a boat trip?",
                    "amount",
                ),
                (
                    "Yesterday we walked {count} kilometres along the cliffs and my legs still ache.",
                    "How far did they hike?",
                    "count",
                ),
                (
                    "Our landlady, {who}, brings us fresh eggs every morning.",
                    "Who owns the place they are renting?",
                    "who",
                ),
                (
                    "The last bus back from the market leaves at {time}, so we never stay late.",
                    "At what time is the final ride home?",
                    "time",
                ),
                (
                    "I bought you a small {item} at the flea market; I hope you like it.",
                    "What present did the writer find?",
                    "item",
                ),
                ("It has rained only once, on our first afternoon, when we hid in a cafe until {time}.", None, None),
                ("The sea is still too cold for swimming, though {who}'s children go in anyway.", None, None),
            ],
        ),
        "office memo": (
            ["Memo to all staff.", "From the facilities team, {town} office."],
            [
                (
                    "The fire drill is planned for {time} on Wednesday, so please do not book meetings then.",
                    "When will the building be emptied for practice?",
                    "time",
                ),
                (
                    "Expense claims above {amount} pounds now need a manager's signature.",
                    "Above what figure must a boss approve spending?",
                    "amount",
                ),
                (
                    "Meeting room {code} is closed for repainting until further notice.",
                    "Which room cannot be used?",
                    "code",
                ),
                (
                    "{who} from payroll is retiring after twenty years with the company.",
                    "Who is leaving the firm?",
                    "who",
                ),
                (
                    "The new coffee machine on the second floor makes up to {count} cups a day.",
                    "How many drinks can the new appliance serve daily?",
                    "count",
                ),
                (
                    "Parcels for staff will now be held at the desk on {street}.",
                    "Where can employees collect deliveries?",
                    "street",
                ),
                (
                    "The cleaners now start at {time}, so please switch off your monitor before you leave.",
                    "When does the cleaning crew arrive?",
                    "time",
                ),
                (
                    "Thank you all for your patience during the move, and welcome to {who}, who joins the sales team.",
                    "Who is the newest colleague?",
                    "who",
                ),
            ],
        ),
        "guest folder": (
            ["Welcome to the cottage!", "Guest folder, {street}."],
            [
                (
                    "The key safe by the back door opens with the code {code}.",
                    "Which combination works the lock by the rear entrance?",
                    "code",
                ),
                (
                    "Bins are collected early on {day} morning, so please put them out the night before.",
                    "On which day is the rubbish taken away?",
                    "day",
                ),
                (
                    "If the boiler stops working, call {who}, who lives two doors down.",
                    "Whom should guests phone when there is no hot water?",
                    "who",
                ),
                (
                    "Please leave the house by {time} on the day you go home.",
                    "By what hour must visitors be gone?",
                    "time",
                ),
                (
                    "The nearest shop is in {town}, a short drive over the hill.",
                    "Where can guests buy groceries?",
                    "town",
                ),
                (
                    "A deposit of {amount} pounds is returned within a week of your stay.",
                    "How much money is paid back after the holiday?",
                    "amount",
                ),
                ("Please do not feed the ducks any bread; {who} at the farm shop sells proper duck food.", None, None),
                (
                    "Spare towels are in the chest at the top of the stairs, and the code for the internet is {code}.",
                    "What do you enter to get online?",
                    "code",
                ),
            ],
        ),
        "pet sitter": (
            ["Notes for the pet sitter.", "Thank you for minding the animals!"],
            [
                (
                    "The dog gets his dinner at {time} and will remind you if you forget.",
                    "What time is the pup's evening meal?",
                    "time",
                ),
                ("His vet is {who}, at the surgery by the station.", "Who looks after the pet's health?", "who"),
                (
                    "One bag from the cupboard under the sink lasts about {count} days.",
                    "For how many days is a pack of food enough?",
                    "count",
                ),
                ("If anything goes wrong, ring my sister in {town}.", "Where does the owner's sibling live?", "town"),
                (
                    "I have left {amount} pounds in the blue jar for anything you need to buy.",
                    "How much cash is there for expenses?",
                    "amount",
                ),
                ("The parrot's cage should be cleaned every {day}.", "On which day is the bird's home tidied?", "day"),
                ("Please keep the garden gate shut; the postman comes at about {time}.", None, None),
                (
                    "The goldfish need nothing; {who} next door feeds them if we are gone more than {count} days.",
                    None,
                    None,
                ),
            ],
        ),
        "farm diary": (
            ["Farm diary, {town}.", "Notes from the smallholding."],
            [
                (
                    "Sold {count} dozen eggs at the Saturday market.",
                    "What quantity went at the weekend stall?",
                    "count",
                ),
                ("The hay delivery from {who} arrived two days late.", "Who supplied the animal feed?", "who"),
                (
                    "Paid {amount} pounds for a new gate for the top field.",
                    "How much did the new entrance to the pasture cost?",
                    "amount",
                ),
                (
                    "Milking now starts at {time} while the mornings are dark.",
                    "When do they begin with the cows each day?",
                    "time",
                ),
                (
                    "Lent the old {item} to the neighbours for the harvest.",
                    "What did the people next door borrow?",
                    "item",
                ),
                ("The vet is coming on {day} to look at the lame ewe.", "When will the sheep be examined?", "day"),
                ("Frost last night; the water troughs froze solid and took until {time} to thaw.", None, None),
                (
                    "The new lambs are doing well; we now have {count} of them.",
                    "How many young sheep are there?",
                    "count",
                ),
            ],
        ),
    },
    "validation": {
        "library newsletter": (
            ["Library news, {town}."],
            [
                (
                    "The reading group now meets at {time} on the first Tuesday of the month.",
                    "When does the book circle get together?",
                    "time",
                ),
                (
                    "Late fees have gone up to {amount} pounds a week.",
                    "What is the charge for returning something overdue?",
                    "amount",
                ),
                (
                    "Our volunteer {who} has catalogued the whole local history collection.",
                    "Who sorted the old records of the area?",
                    "who",
                ),
                (
                    "The mobile van will stop outside the school on {street}.",
                    "Where does the travelling service park?",
                    "street",
                ),
                ("Last year we lent out {count} audiobooks.", "How many recorded stories were borrowed?", "count"),
                ("The children's corner has {count} new cushions.", None, None),
                ("Wifi is free for all members; the password changes every {day}.", None, None),
            ],
        ),
        "camp report": (
            ["Scout camp report."],
            [
                (
                    "We pitched our tents in a field just outside {town}.",
                    "Near which place did the group sleep?",
                    "town",
                ),
                (
                    "The hike on the second day covered {count} kilometres.",
                    "How far did they go on foot after the first day?",
                    "count",
                ),
                ("{who} cooked sausages for everyone on the last night.", "Who made the final supper?", "who"),
                ("The coach home left at {time}, an hour late.", "When did the bus depart for the return?", "time"),
                ("Each child paid {amount} pounds towards the trip.", "How much did every scout contribute?", "amount"),
                ("It rained on the first night, but no tent leaked, and by {time} the sun was out.", None, None),
                ("{who} won the prize for the tidiest tent.", "Who was praised for keeping things neat?", "who"),
            ],
        ),
    },
    "test": {
        "choir notes": (
            ["Choir notes."],
            [
                (
                    "Rehearsals move to {time} on Thursdays from next week.",
                    "When will the singers practise from now on?",
                    "time",
                ),
                (
                    "Our conductor, {who}, has chosen the programme for the winter concert.",
                    "Who picked the music?",
                    "who",
                ),
                ("Tickets cost {amount} pounds each.", "What is the price of a seat?", "amount"),
                ("We will perform in the church on {street}.", "Where is the show?", "street"),
                ("We now have {count} voices, ten more than last year.", "How many singers are there?", "count"),
                ("Please learn the second verse by heart before {day}.", None, None),
                ("{who} will bring mince pies for the interval.", None, None),
            ],
        ),
        "house notes": (
            ["Notes for the house sitter."],
            [
                ("The alarm code is {code}.", "What do you type to turn off the security system?", "code"),
                ("Post goes to {who} next door.", "Who takes in the letters?", "who"),
                ("The plumber comes on {day} to look at the dripping tap.", "When is the repairman due?", "day"),
                (
                    "The window cleaner is owed {amount} pounds, in the drawer.",
                    "How much is set aside for the windows?",
                    "amount",
                ),
                ("The recycling goes to the depot in {town}.", "Where do the glass and paper go?", "town"),
                ("Water the tomatoes every evening, and the lawn only if it stays dry until {day}.", None, None),
                ("The cat is fed by {who} at {time}.", None, None),
            ],
        ),
    },
}
"""Per split and genre: the openings and the sentences (each with the question that asks it, if any)."""


def _values(rng: random.Random, split: str) -> dict[str, str]:
    return {**draw_fields(rng, split), "count": str(rng.randint(12, 950)), "day": rng.choice(WEEKDAYS)}


def prose_task(rng: random.Random, length: int, depth: float, *, split: str) -> Task:
    """One document of up to about ``length`` tokens whose sentence at ``depth`` holds the asked fact."""
    genre = rng.choice(sorted(GENRES[split]))
    openings, sentences = GENRES[split][genre]
    asked = rng.choice([s for s in sentences if s[1] is not None])
    others = [s for s in sentences if s is not asked]
    rng.shuffle(others)
    opening = rng.choice(openings).format(**_values(rng, split))
    words = len(opening.split()) + len(asked[0].split())
    body: list[Sentence] = []
    for sentence in others:
        if words >= length / TOKENS_PER_WORD:
            break
        body.append(sentence)
        words += len(sentence[0].split())
    body.insert(round(depth * len(body)), asked)
    values = [_values(rng, split) for _ in body]
    context = " ".join([opening, *(s[0].format(**v) for s, v in zip(body, values, strict=True))])
    wording, question, field = asked
    answer = values[body.index(asked)][field]
    if not occurs_once(answer, context):
        return prose_task(rng, length, depth, split=split)  # the value drawn twice: draw the document again
    others_values = {v[field] for s, v in zip(body, values, strict=True) if s is not asked and field in fields_in(s[0])}
    meta = {"depth": depth, "length": length, "genre": genre, "distractors": sorted(others_values - {answer})}
    return Task("everyday-prose", question, context, answer, (answer,), meta=meta)
