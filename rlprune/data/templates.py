"""The words and sentence templates the task generators (:mod:`rlprune.data.generators`) draw from.

Answer-bearing lists are split by index (3 of 5 entries for training, 1 of 5 each for validation
and test), so no answer seen in training appears in a test task; the hard kinds have sentence
templates of their own per split.
"""

# -- vocabularies ------------------------------------------------------------------------------

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
