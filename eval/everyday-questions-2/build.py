"""Write everyday-questions-2.jsonl: a second set of short everyday texts (leaflets, letters, forms,
announcements, notes) with questions worded apart from the text, written by hand for the second
held-out pool, after the first set and apart from it and from rlprune's task generators (no text,
name or place of either appears here). Run from anywhere: python eval/everyday-questions-2/build.py"""

import json
from pathlib import Path

TEXTS = [
    (
        "Pharmacy leaflet. Take one tablet twice a day, with food, for seven days. Finish the whole course even "
        "if you feel better sooner. Do not drink alcohol while taking this medicine, as it may make you feel "
        "sick. If you miss a dose, take it as soon as you remember, unless the next dose is due within four "
        "hours. Store below 25 degrees and keep out of the reach of children. Dispensed by Fenwick Pharmacy, "
        "pharmacist on duty: Tomasz Wilk.",
        [
            ("How many days does the treatment last?", ["seven days", "seven"]),
            ("What should the patient avoid drinking?", ["alcohol"]),
            ("Who was the pharmacist on duty?", ["Tomasz Wilk"]),
        ],
    ),
    (
        "PENALTY CHARGE NOTICE. Vehicle registration KX19 RFT was observed parked on a double yellow line on "
        "Mill Street at 10.42 on 18 October. The penalty is 70 pounds, reduced to 35 pounds if paid within 14 "
        "days. You may pay online or by telephone. If you believe this notice was issued in error, write to "
        "Parking Appeals, Town Hall, Greyford, within 28 days, enclosing any photographs. Civil enforcement "
        "officer number 2217.",
        [
            ("On which street was the car parked?", ["Mill Street"]),
            ("How much is the fine if it is settled quickly?", ["35"]),
            ("How long does the driver have to challenge the notice?", ["28 days"]),
        ],
    ),
    (
        "Hi Joe, quick note before I leave. The plumber is coming on Wednesday around ten to service the "
        "boiler, so someone needs to be in. The spare key is under the blue flowerpot next to the back door, not "
        "the usual place. Please feed Biscuit twice a day; his food is in the cupboard above the fridge. The "
        "bins go out on Thursday night, recycling this week. I'm back on Sunday evening. Thanks! Marta",
        [
            ("What is the plumber going to work on?", ["boiler"]),
            ("Where is the spare key?", ["blue flowerpot", "flowerpot"]),
            ("When does Marta return?", ["Sunday evening", "Sunday"]),
        ],
    ),
    (
        "Library reminder. Dear Mr Oduya, the following item is now overdue: The Quiet Estuary by Ilse "
        "Dovrat, due back on 2 May. A charge of 20 pence a day is building on your account, up to a maximum "
        "of 6 pounds. You can renew the item once online unless another reader has reserved it. Northgate "
        "Library is open late on Tuesdays and Thursdays until 8 p.m. Kind regards, Lending Services.",
        [
            ("What is the title of the late book?", ["The Quiet Estuary"]),
            ("What is the most the reader can be charged?", ["6 pounds"]),
            ("On which days does the library stay open in the evening?", ["Tuesdays and Thursdays", "Tuesdays"]),
        ],
    ),
    (
        "Weekly class timetable, Eastbank Leisure Centre. Monday: aqua aerobics 9.30, spin 18.00. Tuesday: "
        "pilates 12.15 with Sunita. Wednesday: circuit training 7.00, family swim 16.30. Thursday: yoga 19.00 "
        "with Ruben. Friday: spin 7.00. Classes last 45 minutes unless stated. Book up to seven days ahead at "
        "reception. The sauna is closed for repairs until further notice.",
        [
            ("Who teaches the yoga class?", ["Ruben"]),
            ("When does the pilates class on Tuesday begin?", ["12.15"]),
            ("Which facility cannot be used at the moment?", ["sauna"]),
        ],
    ),
    (
        "Dear tenants of 14 Harcourt Road, I am writing to let you know that the communal hallway will be "
        "repainted during the week of 9 June. Please keep bicycles and pushchairs out of the hallway from "
        "Monday morning. The decorators, Pryce and Sons, will start at 8 a.m. each day. The front door will "
        "stay unlocked while they work, so please lock your own flat doors. If you have any problems, my "
        "mobile number is 07700 900873. Best wishes, Colin Ashworth, landlord.",
        [
            ("What work is planned for the building?", ["repainted", "repainting", "painting"]),
            ("Which firm is doing the work?", ["Pryce and Sons"]),
            ("What should residents move out of the hallway?", ["bicycles and pushchairs", "bicycles"]),
        ],
    ),
    (
        "Weather warning: amber. Heavy snow is expected across the northern hills from 6 p.m. on Friday until "
        "noon on Saturday. Between 10 and 20 centimetres may fall above 300 metres, with drifting in strong "
        "easterly winds. Travel delays on the A68 are likely and some rural communities may be cut off. Power "
        "cuts are possible. Check on elderly neighbours and carry a blanket, a torch and a charged phone if "
        "you must drive.",
        [
            ("Which road is likely to be disrupted?", ["A68"]),
            ("From which direction will the wind blow?", ["easterly", "east"]),
            ("When is the snow expected to stop?", ["noon on Saturday", "noon"]),
        ],
    ),
    (
        "Job advert. Harbourside Bakery is looking for an early-morning baker to join our small team. Shifts "
        "start at 4 a.m., four days a week. Experience with sourdough is essential; we will teach you the "
        "rest. Pay is 13.50 pounds an hour plus free bread. To apply, send a short letter to Agnieszka at the "
        "bakery by 30 January. Interviews will include a trial shift.",
        [
            ("What kind of bread must applicants already know how to make?", ["sourdough"]),
            ("How much does the job pay per hour?", ["13.50"]),
            ("Who should receive the application?", ["Agnieszka"]),
        ],
    ),
    (
        "Concert programme. The Wexcombe Chamber Orchestra, conducted by Isobel Grant. First half: Overture to "
        "The Silent Harbour by Peter Lund, followed by a cello concerto with soloist Mateo Reyes. Interval of "
        "twenty minutes; drinks are served in the foyer. Second half: Symphony No. 2 by Marit Voss. Please "
        "switch off mobile phones. The concert ends at about 9.45 p.m.",
        [
            ("Who plays the solo in the concerto?", ["Mateo Reyes"]),
            ("Who is conducting?", ["Isobel Grant"]),
            ("How long is the break?", ["twenty minutes"]),
        ],
    ),
    (
        "Discharge note, Oakfield Veterinary Clinic. Patient: Bramble, spaniel, 7 years. Bramble had a small "
        "lump removed from her left shoulder today. She may be sleepy this evening. Offer a small meal tonight "
        "and normal food from tomorrow. Keep her on the lead for ten days and stop her licking the wound; a "
        "cone has been supplied. Stitches to be removed on 21 July. Call us if the wound looks red or swollen. "
        "Vet: Dr Hamid Kazemi.",
        [
            ("What kind of dog is the patient?", ["spaniel"]),
            ("When will the stitches come out?", ["21 July"]),
            ("Where on her body was the operation?", ["left shoulder", "shoulder"]),
        ],
    ),
    (
        "Station announcement. We are sorry to announce that the 17.52 service to Carrow Bay is delayed by "
        "approximately 25 minutes. This is due to a signal failure near Linton Junction. The train will now "
        "depart from platform 3 instead of platform 1. Passengers for Holmfirth should change at Redbridge. "
        "Customers may be entitled to compensation; please keep your ticket.",
        [
            ("What caused the delay?", ["signal failure"]),
            ("From which platform will the train leave?", ["platform 3", "3"]),
            ("Where should travellers to Holmfirth change trains?", ["Redbridge"]),
        ],
    ),
    (
        "Neighbourhood newsletter, spring issue. The litter pick on 5 April collected 46 bags of rubbish from "
        "the canal towpath. Many thanks to the volunteers and to Ferris Hardware for lending gloves and "
        "grabbers. The Ashgrove playground will reopen in May with a new zip wire, paid for by the summer fair. "
        "Our street party is planned for 14 June; if you can help with tables, please speak to Wanjiru at number "
        "22.",
        [
            ("How many bags of rubbish were collected?", ["46"]),
            ("Which business lent equipment?", ["Ferris Hardware"]),
            ("What new item will the playground have?", ["zip wire"]),
        ],
    ),
    (
        "Claim acknowledgement. Dear Ms Oyelaran, thank you for reporting the water damage to your kitchen "
        "ceiling. Your claim reference is HX-40917. A loss adjuster, Graham Pike, will contact you within five "
        "working days to arrange a visit. Please do not throw away any damaged items until he has seen them, "
        "and keep receipts for any emergency repairs. Your policy excess is 250 pounds. Yours sincerely, "
        "Claims Team, Meridian Home Insurance.",
        [
            ("Which room was damaged?", ["kitchen"]),
            ("Who will come to inspect the damage?", ["Graham Pike"]),
            ("How much of the cost does the customer pay herself?", ["250"]),
        ],
    ),
    (
        "Campsite rules, Fernhollow Farm. Quiet hours are from 10.30 p.m. to 7 a.m. Campfires are allowed only "
        "in the metal fire pits, which can be hired from the farm shop for 5 pounds a night. Dogs must be kept "
        "on a lead near the sheep field. Hot showers are in the stone barn. The shop sells milk, eggs and "
        "firewood and closes at 6 p.m. Please take all rubbish with you when you leave.",
        [
            ("Where are the showers?", ["stone barn"]),
            ("What does it cost to hire a fire pit for a night?", ["5 pounds"]),
            ("When must campers be quiet from?", ["10.30 p.m.", "10.30"]),
        ],
    ),
    (
        "Assembly instructions, step 4. Attach the rear wheel to the frame using the two 15 millimetre nuts; "
        "tighten them firmly with the spanner supplied. Make sure the chain sits on the smallest cog. Step 5: "
        "fit the saddle, pushing the seat post in at least 8 centimetres, as marked by the line. Step 6: "
        "pump the tyres to 40 psi. Do not ride the bicycle until the brakes have been checked by an adult.",
        [
            ("How far must the seat post go in?", ["8 centimetres"]),
            ("What pressure should the tyres be?", ["40 psi"]),
            ("Which cog should the chain be on?", ["smallest"]),
        ],
    ),
    (
        "Postcard. Greetings from Crete! The village is tiny: one bakery, two tavernas and a church painted "
        "bright blue. We walked the gorge yesterday, sixteen kilometres, and my legs are still complaining. "
        "Dimitri, who runs our guesthouse, made us his mother's honey cake. The sea is warmer than I expected. "
        "Flying home on the 19th. Love to the cats, Eleanor and Pete.",
        [
            ("How long was the walk through the gorge?", ["sixteen kilometres"]),
            ("Who runs the place where they are staying?", ["Dimitri"]),
            ("What colour is the church?", ["blue"]),
        ],
    ),
    (
        "To the manager, Palisade Electronics. On 3 February I bought a pair of wireless headphones, model "
        "AV-90, from your Kingsmead branch for 89 pounds. After two weeks the left earpiece stopped working. "
        "When I returned them, the assistant refused a refund and offered only a repair taking six weeks. As "
        "the fault appeared within 30 days, I ask for a full refund. I enclose a copy of the receipt. Yours "
        "faithfully, Rhys Cadwallader.",
        [
            ("What did the customer buy?", ["wireless headphones", "headphones"]),
            ("Which part stopped working?", ["left earpiece"]),
            ("What does the writer want?", ["full refund", "refund"]),
        ],
    ),
    (
        "Nursery daily report for Leo, Wednesday. Leo arrived happy and spent the morning in the sand pit with "
        "his friend Amira. He ate all of his pasta at lunch but left the peas. Nap from 12.45 to 2.10. In the "
        "afternoon we painted leaves and went on a short walk to the duck pond. Nappy changes: three. Please "
        "bring spare socks and wellies tomorrow, as we will be in the garden.",
        [
            ("Who did Leo play with in the morning?", ["Amira"]),
            ("What did Leo not eat?", ["peas"]),
            ("What footwear should parents send tomorrow?", ["wellies"]),
        ],
    ),
    (
        "Restaurant review. The Tin Kettle, a new bistro on Quayside, is run by chef Olu Adeyemi, formerly of "
        "the Grand Hotel. The menu is short. The braised lamb was tender and generous, but the fish of the day, "
        "hake, arrived overcooked. Desserts are the highlight: the burnt honey tart is worth the trip on its "
        "own. Three courses cost about 42 pounds a head. Closed on Mondays. Three stars out of five.",
        [
            ("Which dish was cooked too long?", ["hake", "fish"]),
            ("Where did the chef work before?", ["Grand Hotel"]),
            ("Which dessert does the reviewer praise?", ["burnt honey tart", "honey tart"]),
        ],
    ),
    (
        "Laboratory safety briefing. Lab coats and safety glasses must be worn at all times beyond the yellow "
        "line. Spills of acid are neutralised with the sodium bicarbonate kept in the red bucket by the sink. "
        "The eye-wash station is next to the fume cupboard. Broken glass goes in the cardboard box marked "
        "GLASS ONLY, never in the general bin. The first-aider this term is Dr Freya Halvorsen, room 2.14.",
        [
            ("What is used to deal with spilt acid?", ["sodium bicarbonate"]),
            ("Where is the eye-wash station?", ["next to the fume cupboard", "fume cupboard"]),
            ("Who gives first aid this term?", ["Freya Halvorsen"]),
        ],
    ),
    (
        "Sailing club results, Sunday series race 3. Light and shifty winds, one lap shortened. First: Merlin, "
        "helmed by Jo Marchetti. Second: Blue Heron, Sam Okonkwo. Third: Tern, the Ferrante sisters. Two boats "
        "retired after capsizing at the windward mark. Series leader after three races: Blue Heron. Next race "
        "on 11 August, briefing at 10.30 in the clubhouse.",
        [
            ("Which boat won the race?", ["Merlin"]),
            ("Which boat leads the series?", ["Blue Heron"]),
            ("Where is the briefing before the next race?", ["clubhouse"]),
        ],
    ),
    (
        "Quotation from A. Rahman Plumbing and Heating. Work: replace the hot water cylinder in the airing "
        "cupboard with a 150 litre unvented cylinder, fit a new thermostat and flush the system. Parts: 640 "
        "pounds. Labour: two days, 480 pounds. Total including VAT: 1,344 pounds. Old cylinder taken away free "
        "of charge. This quote is valid for 30 days. Guarantee on workmanship: two years.",
        [
            ("How big is the new cylinder?", ["150 litre", "150"]),
            ("How long will the labour take?", ["two days"]),
            ("What is the full price?", ["1,344", "1344"]),
        ],
    ),
    (
        "Walking diary, day two. Left the hostel at Glenmore at eight under grey skies. The path climbed "
        "steadily through pine forest to the Ryvoan Pass, where we stopped for soup from the flask. Saw a "
        "crested tit, the first of the trip. Rain arrived after lunch and did not stop. Reached the bothy at "
        "Bynack Stable wet through at half past four. Andrew's boots are leaking; he is not happy.",
        [
            ("What bird did they see for the first time?", ["crested tit"]),
            ("Where did they spend the end of the day?", ["Bynack Stable", "bothy"]),
            ("Whose boots let water in?", ["Andrew"]),
        ],
    ),
    (
        "Wedding invitation. Mr and Mrs Henrik Sørensen request the pleasure of your company at the marriage "
        "of their daughter Freja to Callum Byrne on Saturday 6 September at 2 p.m. at St Brigid's Church, "
        "Ellesmere, and afterwards at Holly Tree Barn. Carriages at midnight. Please reply by 1 July to the "
        "address below, and let us know of any dietary needs.",
        [
            ("Whom is Freja marrying?", ["Callum Byrne"]),
            ("Where will the party after the ceremony be held?", ["Holly Tree Barn"]),
            ("By what date should guests answer?", ["1 July"]),
        ],
    ),
    (
        "Council tax reminder. Our records show that the instalment of 142 pounds due on 1 November for "
        "property 8 Thornfield Way has not been received. Please pay within seven days to avoid a summons. If "
        "you have already paid, please ignore this letter. If you are having difficulty paying, contact the "
        "Revenues Office on 0300 555 0190; you may be entitled to a discount, for example if you live alone.",
        [
            ("How much is the missed payment?", ["142"]),
            ("What happens if the bill is not paid?", ["summons"]),
            ("Who might get a reduction?", ["live alone", "alone"]),
        ],
    ),
    (
        "Museum audio guide, stop 12. In front of you is the steam engine Lady Wren, built in 1862 at the "
        "Cowley Works to pump water out of the tin mines at Polgarth. She worked for almost seventy years. "
        "Her great beam weighs 22 tonnes and moved eleven times a minute. The engine was rescued from scrap in "
        "1968 by a group of local enthusiasts and restored over twelve years. Press 13 to continue.",
        [
            ("Where was the engine made?", ["Cowley Works"]),
            ("What was the engine used for?", ["pump water", "pumping water"]),
            ("How heavy is the beam?", ["22 tonnes"]),
        ],
    ),
]


def main() -> None:
    out = Path(__file__).with_name("everyday-questions-2.jsonl")
    lines = []
    for number, (context, questions) in enumerate(TEXTS):
        for question, answers in questions:
            if answers[0] not in context:  # the evidence: the first answer, as the text spells it
                raise SystemExit(f"text {number}: {answers[0]!r} is not in the text")
            item = {"context": context, "question": question, "answer": answers[0], "answers": answers,
                    "kind": "everyday", "text": number}  # fmt: skip
            lines.append(json.dumps(item, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} questions over {len(TEXTS)} texts written to {out}")


if __name__ == "__main__":
    main()
