"""Write everyday-questions.jsonl: short texts in everyday styles (notices, letters, minutes, logs,
recipes, labels) with questions worded apart from the text, written by hand for this file and
never drawn from rlprune's task generators. Run from anywhere: python eval/everyday-questions/build.py"""

import json
from pathlib import Path

TEXTS = [
    (
        "NOTICE TO RESIDENTS. Water to Alder Close and Birch Row will be switched off on Tuesday between "
        "9 a.m. and 1 p.m. while the main under the footpath is replaced. Residents of Cedar Lane are not "
        "affected. Bottled water can be collected from the community hall on Station Road, which opens at "
        "8.30 a.m. The work is being carried out by Hallam Civil Engineering on behalf of the district council. "
        "Questions about the work should be sent to the site supervisor, Priya Okafor, who can be reached on "
        "07700 900412. We apologise for any inconvenience and thank you for your patience.",
        [
            ("Who should people contact if they have questions about the repair?", ["Priya Okafor"]),
            ("Where can people pick up bottled water?", ["community hall", "Station Road"]),
        ],
    ),
    (
        "Dear Margaret, thank you for the lovely scarf; it arrived the morning of my birthday and I have worn it "
        "every day since. The weather here in Tromso has been bitter, minus fourteen at night, so it could not "
        "have come at a better time. Tom has started his new job at the boatyard and comes home smelling of "
        "varnish. The children are learning to ski; little Ada is braver than her brother and goes straight "
        "down the steepest slope. We hope to visit you in Lisbon in April, once the term is over. With love, Ingrid",
        [
            ("In which city does the writer of the letter live?", ["Tromso"]),
            ("Where does Tom work now?", ["boatyard"]),
            ("Which child is the more daring skier?", ["Ada"]),
        ],
    ),
    (
        "Minutes of the allotment committee, 3 March. Present: J. Fairbairn (chair), L. Mensah, R. Castillo, "
        "D. Novak. The treasurer reported a balance of 1,240 pounds. It was agreed to raise the annual plot fee "
        "from 35 to 40 pounds from next season. The broken gate on the north side will be repaired by "
        "R. Castillo before the end of the month. D. Novak will organise the seed swap, to be held on 12 April "
        "in the tool shed. The next meeting will take place on 7 April at 7 p.m.",
        [
            ("How much will a plot cost each year from next season?", ["40"]),
            ("Who is going to fix the gate?", ["Castillo"]),
            ("When is the seed swap?", ["12 April"]),
        ],
    ),
    (
        "Ship's log, day 6. Wind veered to the north-west overnight and freshened to force six by dawn. We took "
        "in a second reef at 0500. Position at noon: 48 degrees 12 minutes north, 9 degrees 40 minutes west. "
        "The cook, Samuel, burned his hand on the stove and has been excused watches for two days; Hannah has "
        "taken over the galley. Sighted a pod of pilot whales off the starboard bow at 1430. Fresh water "
        "remaining: 310 litres. Barometer steady at 1012.",
        [
            ("Who is cooking while Samuel recovers?", ["Hannah"]),
            ("How much fresh water is left on board?", ["310"]),
            ("What animals were seen in the afternoon?", ["pilot whales", "whales"]),
        ],
    ),
    (
        "Grandma Rosa's lentil soup (serves four). Soften one chopped onion and two sliced carrots in olive oil "
        "for ten minutes. Add two cloves of garlic and a teaspoon of cumin and cook for one minute more. Tip in "
        "200 grams of red lentils, a tin of tomatoes and a litre of stock. Simmer for 25 minutes, stirring now "
        "and then, until the lentils have collapsed. Season with salt and the juice of half a lemon. Rosa always "
        "served it with flatbread and a spoonful of yoghurt.",
        [
            ("How long should the soup simmer?", ["25 minutes", "25"]),
            ("What spice goes in with the garlic?", ["cumin"]),
            ("What did Rosa serve alongside the soup?", ["flatbread", "yoghurt"]),
        ],
    ),
    (
        "Gallery 4. Portrait of a Merchant, oil on oak panel, about 1532. This portrait was painted in Antwerp by "
        "an artist known only as the Master of the Blue Gloves, named after the pair of gloves the sitter holds. "
        "The sitter is thought to be Jan van Hove, a cloth trader whose coat of arms appears on the ring on his "
        "left hand. The panel was bought by the museum in 1911 from the collection of Lady Ashcombe. Recent "
        "cleaning revealed a small dog, painted over in the eighteenth century, at the lower right.",
        [
            ("Who is believed to be shown in the portrait?", ["Jan van Hove"]),
            ("In what year did the museum acquire the painting?", ["1911"]),
            ("What was found under the overpaint?", ["dog"]),
        ],
    ),
    (
        "Product recall. Brightway Home is recalling its 1.7 litre glass kettle, model BK-220, sold between June "
        "and September. In a small number of units the base can overheat. Customers should stop using the kettle "
        "at once and return it to any store for a full refund; a receipt is not needed. The similar 1.5 litre "
        "model, BK-150, is not affected. For more information call the freephone line on 0800 123 4567, open "
        "every day from 8 a.m. to 8 p.m.",
        [
            ("Which model number is being recalled?", ["BK-220"]),
            ("Do customers need a receipt to get their money back?", ["no", "not needed"]),
        ],
    ),
    (
        "Match report. Riverside Rovers came from behind to beat Hillcrest United 3-2 on Saturday. Hillcrest led "
        "2-0 at half-time through goals from Marcus Bell and Tomas Kral. After the break Rovers' substitute "
        "Leon Achebe scored twice in ten minutes, and captain Sofia Lind headed the winner from a corner in the "
        "89th minute. The crowd of 4,380 was the largest at the ground this season. Rovers now sit third in the "
        "table, two points behind the leaders.",
        [
            ("Who scored the winning goal?", ["Sofia Lind"]),
            ("How many people watched the match?", ["4,380", "4380"]),
            ("Which player came off the bench and scored two goals?", ["Leon Achebe"]),
        ],
    ),
    (
        "From the diary of a lighthouse visitor, 14 August. Climbed the 117 steps of the Greyhaven light this "
        "morning with the keeper's daughter, Elsie, who showed me the great lens, made in Paris in 1872. She "
        "says it floats on a bath of mercury so that it turns at the push of a finger. From the gallery we could "
        "see the Skerry Rocks, where the steamer Orion was lost in 1890. In the afternoon it rained and I read in "
        "the parlour while Elsie's father mended nets.",
        [
            ("Where was the lens made?", ["Paris"]),
            ("Which ship was wrecked on the rocks?", ["Orion"]),
            ("How many steps does the lighthouse have?", ["117"]),
        ],
    ),
    (
        "IT service desk: planned maintenance. On Saturday 22 June the email system will be unavailable from "
        "6 a.m. to 10 a.m. while the servers are moved to the new data centre in Leeds. The staff intranet and "
        "the booking system will keep working. Please save any drafts before Friday evening. If you notice "
        "problems after 10 a.m., raise a ticket with the service desk or phone extension 4417. The work is led "
        "by Owen Greaves from the infrastructure team.",
        [
            ("To which city are the servers being moved?", ["Leeds"]),
            ("Which phone extension should staff call about problems?", ["4417"]),
            ("Who is in charge of the work?", ["Owen Greaves"]),
        ],
    ),
    (
        "Lost cat! Pepper, a small grey tabby with one white paw and a green collar, went missing from Willow "
        "Street on Sunday evening. She is shy and may be hiding in a shed or garage. She is microchipped and is "
        "nine years old. If you see her, please do not chase her but ring Daniel on 07700 900877. A reward of "
        "50 pounds is offered for her safe return. Thank you to everyone who has already checked their gardens.",
        [
            ("What colour is the cat's collar?", ["green"]),
            ("How old is Pepper?", ["nine", "9"]),
            ("How much is the reward?", ["50"]),
        ],
    ),
    (
        "Field notes, Loch Arkaig, 2 May. Counted 23 red-throated divers on the water at first light, more than "
        "last year's 17. A single osprey fished the east bay at about 7 a.m. and carried a trout to the nest on "
        "the fallen pine. Heard a cuckoo from the birch wood but could not see it. Midges were bad by 9 a.m. "
        "and we left for the car park. Note for next visit: bring the long lens and check the nest from the "
        "south shore, where the view is better.",
        [
            ("How many divers were counted this year?", ["23"]),
            ("What did the osprey catch?", ["trout"]),
            ("From which shore is the nest easier to see?", ["south"]),
        ],
    ),
    (
        "Hotel check-in information. Welcome to the Linden House. Breakfast is served in the garden room from "
        "7 to 10 on weekdays and from 8 to 11 at weekends. The wifi password is printed on the back of your key "
        "card. Check-out is at 11 a.m.; late check-out until 2 p.m. costs 20 euros and must be booked the day "
        "before. Bicycles can be hired at reception for 12 euros a day. The nearest tram stop, Rosenplatz, is a "
        "three-minute walk to the left of the main door.",
        [
            ("Where is breakfast served?", ["garden room"]),
            ("How much does it cost to hire a bicycle for a day?", ["12"]),
            ("What is the name of the closest tram stop?", ["Rosenplatz"]),
        ],
    ),
    (
        "Obituary. Professor Helena Marsh, who has died aged 88, was a geologist whose work on the volcanic "
        "islands of the South Atlantic changed how we date lava flows. Born in Dundee, she studied at Edinburgh "
        "and spent most of her career at the University of Bristol. She led eleven expeditions to Tristan da "
        "Cunha and wrote the standard textbook on island volcanoes. In retirement she took up beekeeping. She is "
        "survived by her husband, the composer Felix Arden, and their two sons.",
        [
            ("Where was Helena Marsh born?", ["Dundee"]),
            ("Which university did she spend most of her career at?", ["Bristol"]),
            ("What hobby did she take up after retiring?", ["beekeeping"]),
        ],
    ),
    (
        "Bus timetable change. From Monday 4 November the number 38 will no longer stop at Quarry Lane. Its "
        "first departure from the bus station will be 6.15 a.m. instead of 6.40 a.m., and the last bus will leave "
        "at 11.05 p.m. The number 41 will run every 20 minutes rather than every 30 on weekdays. Passengers for "
        "Quarry Lane should use the number 41, which now stops outside the medical centre.",
        [
            ("Which bus should people take to get to Quarry Lane?", ["41"]),
            ("What time will the first number 38 leave?", ["6.15"]),
        ],
    ),
    (
        "Book club notes. This month we read The Salt Road by Amara Quist. Most of us enjoyed the first half, set "
        "in a fishing village, more than the second, which moves to the city. Harriet thought the grandmother "
        "was the best character; George found the ending rushed. We gave it an average of seven out of ten. "
        "Next month we are reading Winter Orchard by Paul Decker, chosen by Nadia, and we will meet at her "
        "flat on the 18th.",
        [
            ("Who wrote The Salt Road?", ["Amara Quist"]),
            ("What score did the group give the book?", ["seven", "7"]),
            ("Whose home will the next meeting be in?", ["Nadia"]),
        ],
    ),
    (
        "Repair ticket 5521. Customer: Ms L. Duarte. Item: washing machine, bought 2019. Fault: drum does not "
        "turn and the machine shows error E21. Technician Karl Weiss visited on 9 October and found a worn drive "
        "belt and a blocked drain pump. The belt was replaced; the pump was cleaned and tested. Parts: 18 euros. "
        "Labour: one hour at 55 euros. The machine was working normally when the technician left.",
        [
            ("What error code did the machine display?", ["E21"]),
            ("Which part had to be replaced?", ["drive belt", "belt"]),
            ("What is the name of the technician?", ["Karl Weiss"]),
        ],
    ),
    (
        "School trip letter. Dear parents, Year 5 will visit the Science Museum on Thursday 14 March. The coach "
        "leaves school at 8.45 a.m. sharp and returns at about 4 p.m. Children should bring a packed lunch, a "
        "drink in a plastic bottle and a waterproof coat. The cost of the trip is 8 pounds, payable online by "
        "Friday. We still need two more parent helpers; if you can come, please tell Mr Osei in the school "
        "office.",
        [
            ("Which museum are the pupils visiting?", ["Science Museum"]),
            ("How much does the trip cost?", ["8"]),
            ("Who should volunteer helpers speak to?", ["Mr Osei", "Osei"]),
        ],
    ),
    (
        "Garden centre advice. Tomatoes grown in pots need water every day in hot weather, and twice a day in a "
        "heatwave. Feed them once a week with a high-potash liquid feed as soon as the first flowers open. Pinch "
        "out the side shoots of cordon varieties such as Moneymaker, but leave bush types such as Tumbling Tom "
        "alone. Yellow leaves at the bottom of the plant are normal late in the season; a black patch at the "
        "base of the fruit, called blossom end rot, means the watering has been uneven.",
        [
            ("How often should potted tomatoes be fed?", ["once a week", "weekly"]),
            ("What causes blossom end rot?", ["uneven", "watering"]),
        ],
    ),
    (
        "Apartment listing. Bright two-bedroom flat on the third floor of a 1930s building on Kestrel Avenue. "
        "The living room faces south over the park and has a small balcony. The kitchen was refitted last year. "
        "There is no lift. Rent is 1,150 pounds a month, and a deposit of five weeks' rent is required. Pets are "
        "considered. Available from 1 September; viewings on Saturdays only through the agent, Marlow and Finch.",
        [
            ("On which floor is the flat?", ["third"]),
            ("What is the monthly rent?", ["1,150", "1150"]),
            ("Which agency handles the viewings?", ["Marlow and Finch"]),
        ],
    ),
]


def main() -> None:
    out = Path(__file__).with_name("everyday-questions.jsonl")
    lines = []
    for number, (context, questions) in enumerate(TEXTS):
        for question, answers in questions:
            item = {"context": context, "question": question, "answer": answers[0], "answers": answers,
                    "kind": "everyday", "text": number}  # fmt: skip
            lines.append(json.dumps(item))
    out.write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} questions over {len(TEXTS)} texts written to {out}")


if __name__ == "__main__":
    main()
