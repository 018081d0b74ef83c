"""Build ``essay-questions.jsonl``: hand-written questions about the test essays' own sentences.

The questions are written in plain prose, apart from the task generators' templates, about facts
the essays themselves state; each passage is a run of the essay's own sentences around the fact,
so the style is real writing, not a generated haystack. Only test-split essays are used.

    python eval/essay-questions/build.py      # writes eval/essay-questions/essay-questions.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from rlprune.data.essays import essays

# (essay, sentence index of the fact, question, accepted answers)
QUESTIONS = [
    (
        "gap",
        3,
        "How many games could a top-ranked chess player play against an ordinary club player without losing once?",
        ["ten thousand"],
    ),
    ("gap", 12, "What did the author believe created electricity when he was five?", ["electric sockets"]),
    (
        "gap",
        48,
        "How many times as much as the average person does the CEO of a large public company make in the United States?",
        ["100"],
    ),
    ("gap", 49, "How many times as much as the average person do basketball players make?", ["128"]),
    ("gap", 49, "How many times as much as the average person do baseball players make?", ["72"]),
    ("gap", 52, "By what factor did the price of slaves vary in ancient Rome?", ["50"]),
    (
        "gap",
        138,
        "How many times as much land could a farmer plow in a day with a tractor as with a team of horses?",
        ["six"],
    ),
    ("gap", 145, "In what year could the author first buy a computer of his own?", ["1985"]),
    ("gap", 208, "How many times as much as a checkout clerk does the essay say a 747 pilot does not make?", ["40"]),
    ("gap", 221, "What share of the work at even the highest tech companies is of the unedifying kind?", ["90%", "90"]),
    ("gap", 233, "What was the tax on investment income in England in 1974?", ["98%", "98"]),
    ("gap", 261, "According to Columella, what was a skilled vine-dresser worth?", ["8,000", "8000"]),
    ("gap", 262, "How many sestertii did Decimus Eros Merula pay for his freedom?", ["50,000", "50000"]),
    ("gap", 266, "How much was an ordinary laborer worth in drachmae?", ["125 to 150", "125"]),
    ("gap", 270, "What did Eratosthenes use to estimate the Earth's circumference?", ["shadow lengths"]),
    ("gap", 282, "In what year was he made a Knight of the Garter?", ["1525"]),
    ("gap", 300, "What share of Princeton's class of 2007 came from private, non-sectarian schools?", ["36%", "36"]),
    ("gap", 301, "What is the corresponding number at Harvard?", ["28%", "28"]),
    (
        "before",
        53,
        "How many ideas in a lot of classes were the right shape to make good exam questions?",
        ["20 or 30", "20"],
    ),
    (
        "before",
        151,
        "For how many years was it the author's job to predict who would start successful startups?",
        ["9", "nine"],
    ),
    (
        "before",
        165,
        "What are the two things you need initially to start a startup?",
        ["an idea and cofounders", "idea and cofounders"],
    ),
    ("before", 213, "What two words sum up the ultimate advice for young would-be startup founders?", ["just learn"]),
    ("before", 208, "What is the component of entrepreneurship that really matters?", ["domain expertise"]),
    (
        "desres",
        6,
        "Besides a building or a chair, what else does the author compare designing a language to designing?",
        ["typeface", "a new typeface"],
    ),
    (
        "desres",
        64,
        "Which medium is nice and durable for finished ideas but inflexible for developing new ones?",
        ["Marble"],
    ),
    (
        "desres",
        81,
        "Whose novels are said to be so good partly because she read them out loud to her family?",
        ["Jane Austen"],
    ),
    ("desres", 87, "What might the alternative approach be called?", ["Hail Mary strategy", "Hail Mary"]),
    ("iflisp", 11, "In what year was the notebook the author came across written?", ["1983"]),
    ("iflisp", 12, "How old was the author when he wrote in that notebook?", ["19"]),
    ("iflisp", 4, "What sales rank does Pride and Prejudice have?", ["6191"]),
    (
        "love",
        25,
        "About how old was the author when his father told him he could be whatever he wanted?",
        ["9 or 10", "9"],
    ),
    ("love", 93, "Who taught the author the test of doing things that would make your friends say wow?", ["Gino Lee"]),
    (
        "love",
        177,
        "What is the only mechanism in the US for forcing people to do unpleasant jobs?",
        ["the draft", "draft"],
    ),
    ("popular", 57, "What system did Lisp originally come with to hack?", ["the Lisp Machine", "Lisp Machine"]),
    ("popular", 87, "How much more typing does using first and rest mean?", ["50%", "50"]),
    ("popular", 439, "Who proposed macros very close to the modern idea in 1964?", ["Timothy Hart"]),
    ("vb", 8, "How many weekends do you get with your 2 year old?", ["52"]),
    ("vb", 9, "How many times do you get to watch your child experience Christmas-as-magic?", ["8", "eight"]),
    ("vb", 91, "What is the title of James Salter's book mentioned in the essay?", ["Burning the Days"]),
]


def build(out: Path, seed: int = 0) -> int:
    """Write one JSONL line per question: a passage of 12-30 essay sentences holding the fact."""
    texts = dict(essays("test"))
    rng = random.Random(seed)
    lines = []
    for essay, index, question, answers in QUESTIONS:
        sentences = texts[essay]
        if not any(a.lower() in sentences[index].lower() for a in answers):
            raise ValueError(f"{essay}[{index}] does not state {answers}: {sentences[index]!r}")
        before, after = rng.randrange(2, 20), rng.randrange(2, 12)
        passage = " ".join(sentences[max(index - before, 0) : index + after + 1])
        lines.append({"context": passage, "question": question, "answers": answers, "essay": essay})
    out.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return len(lines)


if __name__ == "__main__":
    path = Path(__file__).with_name("essay-questions.jsonl")
    print(f"{build(path)} questions written to {path}")
