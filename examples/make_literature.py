#!/usr/bin/env python3
"""Write examples/literature.jsonl: the prompts that reproduce three published findings.

    python3 examples/make_literature.py --tokenizer TOK.json > examples/literature.jsonl
    python3 examples/make_literature.py --tokenizer TOK.json --check examples/literature.jsonl

The record ids carry the design (the report and `punctum.sink_share` read them):

- ``sink-natural-NN``: natural text cut to exactly LENGTH tokens (default 64, the length
  at which Gu et al., ICLR 2025, measured the attention-sink share of heads).
- ``sink-repeat-NN``: one token repeated LENGTH times, the control on which Gu et al.
  found no sink in models with rotary positions.
- ``massive-NN``: short sentences with an early "." or line break, in the shape of Sun et
  al.'s (COLM 2024) "Summer is warm. Winter is cold.\\n", where massive activations sit
  on the first token and on the first delimiter.

Every record is a single prompt (no ``b``). The paragraphs and sentences below were
written for this project. The cut is made at a token boundary of the given tokenizer
(a Hugging Face tokenizer.json, read with the `tokenizers` package) and checked by
re-tokenizing the cut text; with another model's tokenizer the texts come out at that
tokenizer's LENGTH tokens. Without --tokenizer nothing can be cut: the script refuses.
"""
from __future__ import annotations

import argparse
import json
import sys

LENGTH = 64

NATURAL = [
    "The old lighthouse at the end of the harbour has not guided a ship for forty years, "
    "but the town still pays a keeper to climb its stairs every evening. She lights a small "
    "lamp in the window of the lantern room, writes the weather in a notebook, and walks "
    "back down before the last bus leaves the square. Nobody remembers who first asked "
    "for this, and nobody has asked her to stop.",
    "Bread dough rises because yeast eats the sugars in the flour and breathes out carbon "
    "dioxide, which the stretchy gluten network traps in thousands of tiny pockets. A warm "
    "kitchen speeds the process up, a cold one slows it down, and too much salt can stop it "
    "almost completely. Bakers who want a deeper flavour often let the dough rest overnight "
    "in the refrigerator before shaping it.",
    "When the river froze that winter, the children of the valley built a road of lanterns "
    "across the ice so that the families on the far bank could walk over for the market. "
    "Each evening someone had to check the lanterns, refill the oil, and listen for the "
    "deep cracking sound that meant the ice was moving. The road lasted six weeks, and the "
    "market never closed once.",
    "Most modern bicycles use a chain to carry the force of the rider's legs from the pedals "
    "to the rear wheel, and a set of gears to change how far the bicycle travels with each "
    "turn of the cranks. Low gears make hills easier but slow you down on the flat, while "
    "high gears do the opposite. Learning when to shift is most of the skill of riding well.",
    "My grandmother kept every letter she ever received in shoe boxes under her bed, sorted "
    "by year and tied with kitchen string. After she died we spent a whole weekend reading "
    "them aloud at the dining table, laughing at the gossip and going quiet at the sad ones. "
    "Some were from people none of us had ever heard of, and we still wonder who they were.",
    "A good map tells you more than where the roads go. The shading shows you where the "
    "ground rises, the thin blue lines show you where water will collect after rain, and the "
    "little black squares show you where people chose to live long before the roads were "
    "built. Reading all of that at once takes practice, but once you can do it the "
    "landscape starts to explain itself.",
    "The committee met on Tuesday to discuss the new timetable for the evening classes, "
    "which had been criticised by several students for starting too early. After a long "
    "debate the members agreed to move the language courses to half past seven and to keep "
    "the pottery workshop where it was, since the kiln needs to cool overnight. The changes "
    "will take effect after the spring holidays.",
    "Octopuses can change the colour and texture of their skin in a fraction of a second, "
    "even though most of them are thought to be colour blind. Their skin contains millions "
    "of tiny sacs of pigment that muscles can stretch or squeeze, and some researchers "
    "believe the skin itself may be able to sense light. How the animal decides which "
    "pattern to show is still largely a mystery.",
    "The train was already twenty minutes late when it stopped in the middle of a field, "
    "and the conductor announced that a tree had fallen across the line ahead. Passengers "
    "opened their flasks and sandwiches, a group of students started a card game in the "
    "corridor, and an old man near the window pointed out a family of deer at the edge of "
    "the woods. Nobody seemed to mind very much.",
    "To plant a young apple tree, dig a hole twice as wide as its roots but no deeper, "
    "loosen the soil at the sides, and set the tree so that the graft stays well above the "
    "ground. Fill the hole with the soil you removed, press it down firmly with your boot, "
    "and water it slowly until the ground stops taking it in. Add a stake if the site is "
    "windy.",
    "In the small market town where I grew up, the clock on the church tower was always "
    "four minutes fast, and everyone knew it. Shops opened by the tower and closed by their "
    "own watches, buses left by the timetable, and the school bell followed whatever the "
    "headmaster's wife said. When the clock was finally repaired, half the town was late "
    "for a week.",
    "Volcanic islands begin as eruptions on the sea floor, where lava cools so quickly in "
    "the cold water that it forms rounded pillows of rock. Over thousands of years the "
    "pile grows until it breaks the surface, and then wind, rain and waves start to wear "
    "it down again. Plants arrive as seeds carried by birds or floating on the tide, and "
    "slowly the bare rock becomes a forest.",
    "The museum's newest exhibition collects the everyday objects that people carried with "
    "them when they moved to the city in the last century: a wooden spoon, a pair of "
    "mended boots, a tin of buttons, a photograph with its corners worn round. Each object "
    "comes with a short recording of the family who lent it, telling the story of the "
    "journey in their own words.",
    "Keeping bees teaches patience more than anything else. You cannot hurry a colony, and "
    "you cannot open the hive whenever you are curious, because every inspection costs "
    "the bees a day of work repairing what you disturbed. The best beekeepers I know spend "
    "more time watching the entrance of the hive than looking inside it, reading the "
    "traffic of the workers like a newspaper.",
    "The recipe for the soup has been in our family for at least three generations, and no "
    "two of us make it the same way. My mother adds a spoonful of vinegar at the end, my "
    "uncle insists on smoked paprika, and my cousin, who lives abroad now, uses whatever "
    "beans she can find in the local shop. We argue about it every winter, and we all "
    "secretly like each other's versions.",
    "Sound travels about four times faster in water than in air, which is why whales can "
    "hear each other across enormous distances in the open ocean. Their low calls lose "
    "very little energy as they spread, and in some layers of the sea the sound is bent "
    "back towards the middle like light in a glass fibre. Scientists listen to these calls "
    "to count whales they never see.",
    "On the first morning of the expedition the fog was so thick that the guide made us "
    "hold a rope tied between our waists. We walked for three hours without seeing more "
    "than a few steps ahead, following the sound of the stream on our left, until the sun "
    "burned through just below the pass and the whole valley opened beneath us, green and "
    "silent and enormous.",
    "A library card is one of the most generous things a town can give its people. With it "
    "you can borrow books, films and music, use a computer, print a form, attend a talk, or "
    "simply sit somewhere warm and quiet for an afternoon without anyone asking you to buy "
    "anything. Many libraries now lend tools, seeds and musical instruments as well, and "
    "the queues prove they are wanted.",
    "The first thing you notice about the desert at night is the silence, and the second "
    "is the cold. The sand that burned your feet at noon gives up its heat within an hour "
    "of sunset, and by midnight you are wearing every layer you brought. Then you lie back "
    "and see more stars than you believed could fit in one sky, and you forget about the "
    "cold for a while.",
    "Engineers who design bridges have to think about forces that most of us never notice: "
    "the steady weight of the deck, the changing load of the traffic, the push of the wind "
    "from the side, and the slow expansion of the steel on a hot day. A well designed "
    "bridge lets all of these forces flow down into the ground along paths that the "
    "materials can safely carry.",
    "Every spring the swallows come back to the same barn, sometimes to the very same mud "
    "nest they built the year before. They spend the summer hunting insects over the "
    "meadows, raise two or three broods, and then one morning in September they are simply "
    "gone, on their way to Africa. The farmer says the barn feels empty for days after they "
    "leave, and he is right.",
    "The new software update changes the way the program saves your work. Instead of "
    "writing a copy of the whole document every few minutes, it now records only the "
    "changes you made since the last save, which is faster and uses less space on the "
    "disk. If the computer crashes, the program rebuilds the document from the last full "
    "copy and the list of changes.",
    "We reached the island late in the afternoon, tired and sunburnt, and found that the "
    "only guest house had given our room to someone else. The owner apologised, made a few "
    "telephone calls, and an hour later her brother arrived with a tractor to take us to "
    "his farm on the other side of the hill. It was the best night of the whole trip, and "
    "the breakfast was unforgettable.",
    "Chess players often say that the hardest part of the game is not calculating moves "
    "but deciding which moves are worth calculating at all. A strong player looks at the "
    "position, sees two or three plans that make sense, and spends her time on those. A "
    "beginner tries to look at everything, gets lost in the possibilities, and then plays "
    "the first move that does not lose a piece.",
]

# each must be a single token with its leading space in the tokenizer used
REPEAT = [" the", " and", " of", " blue", " house", " river", " seven", " cat"]

# Sun et al.'s shape: an early "." or line break, short sentences
MASSIVE = [
    "Summer is warm. Winter is cold.\nSpring is mild, and autumn is often wet.",
    "The sky is blue. The grass is green.\nThe sun is bright today.",
    "Cats sleep. Dogs bark.\nBirds sing in the morning, and owls call at night.",
    "Dear Anna,\nThank you for the letter. We are all well here.",
    "Shopping list\nmilk, eggs, bread, apples.\nDo not forget the coffee.",
    "It rained. The roads were wet.\nWe stayed at home and read.",
    "Water boils at one hundred degrees. Ice melts at zero.\nBoth facts hold at sea level.",
    "Monday\nThe meeting starts at nine. Bring the report.",
    "Tom is tall. His sister is taller.\nTheir father is the tallest of all.",
    "The shop opens at eight.\nIt closes at six. On Sundays it is closed.",
    "Rivers flow to the sea. The sea is salty.\nRain falls on the hills again.",
    "Hello.\nMy name is Sam, and I live near the station.",
]


def _load(path):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        sys.exit("make_literature.py: needs the `tokenizers` package (the test venv has it)")
    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is one line
        sys.exit(f"{path}: cannot read the tokenizer: {e}")


def _n_tok(tok, text):
    return len(tok.encode(text, add_special_tokens=False).ids)


def _cut(tok, text, length, what):
    """text cut at the end of its length-th token; re-tokenized to exactly length tokens."""
    enc = tok.encode(text, add_special_tokens=False)
    if len(enc.ids) < length:
        sys.exit(f"{what}: only {len(enc.ids)} tokens, {length} needed")
    raw = text.encode("utf-8")
    for k in range(length, len(enc.ids) + 1):
        end = enc.offsets[k - 1][1]
        cut = raw[: len(text[:end].encode("utf-8"))].decode("utf-8")
        if _n_tok(tok, cut) == length:
            return cut
    sys.exit(f"{what}: no cut of the text re-tokenizes to {length} tokens")


def records(tok, length=LENGTH):
    out = []
    for k, text in enumerate(NATURAL, 1):
        out.append({"id": f"sink-natural-{k:02d}", "a": _cut(tok, text, length, f"natural {k}")})
    for k, piece in enumerate(REPEAT, 1):
        text = piece * length
        if _n_tok(tok, text) != length:
            sys.exit(f"repeat {piece!r}: {_n_tok(tok, text)} tokens, not {length} (not one "
                     "token with its leading space in this tokenizer)")
        out.append({"id": f"sink-repeat-{k:02d}", "a": text})
    for k, text in enumerate(MASSIVE, 1):
        out.append({"id": f"massive-{k:02d}", "a": text})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, help="a Hugging Face tokenizer.json")
    ap.add_argument("--length", type=int, default=LENGTH, help="tokens per sink prompt")
    ap.add_argument("--check", metavar="JSONL",
                    help="compare with this file instead of printing; exit 1 if it differs")
    args = ap.parse_args(argv)
    lines = [json.dumps(r, ensure_ascii=False) for r in records(_load(args.tokenizer),
                                                                 args.length)]
    if args.check:
        with open(args.check, encoding="utf-8") as fh:
            have = [ln for ln in fh.read().splitlines() if ln.strip()]
        if have != lines:
            bad = next((i for i, (a, b) in enumerate(zip(have, lines)) if a != b),
                       min(len(have), len(lines)))
            print(f"{args.check}: differs from the generated records at line {bad + 1}",
                  file=sys.stderr)
            return 1
        print(f"{args.check}: {len(lines)} records, as generated")
        return 0
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
