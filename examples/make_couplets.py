#!/usr/bin/env python3
"""The rhyme experiment's pairs (examples/couplets.jsonl): two couplets that share their
second line, cut before its rhyme word, and whose first lines end in different rhyme sounds.
a's `target` rhymes with a's first line, `target_b` with b's. Kept only where a and b have the
same number of tokens with SmolLM2's tokenizer, so that residual patching applies: patching
a's line break (and the positions around it) from b asks whether the model then writes b's
rhyme, and from which layer on.

usage: make_couplets.py [MODEL_DIR]   (default: scripts/fetch-model.sh's SmolLM2-135M-Instruct)
"""
import json
from tokenizers import Tokenizer
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
model = sys.argv[1] if len(sys.argv) > 1 else subprocess.run(
    [os.path.join(HERE, "..", "scripts", "fetch-model.sh")], capture_output=True, text=True,
    check=True).stdout.strip()
tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
C = [
 ("cat-mat", "The cat was sleeping on the mat,", "The cat was sleeping on the bed,", "Until it woke and chased a", " rat", " thread"),
 ("shore-bay", "We walked along the sandy shore,", "We walked along the sandy bay,", "And heard the waves begin to", " roar", " play"),
 ("sky-ground", "The rain came falling from the sky,", "The rain came falling on the ground,", "The little birds began to", " fly", " sound"),
 ("moon-sky", "A dog was barking at the moon,", "A dog was barking at the sky,", "He wanted it to come back", " soon", " by"),
 ("night-day", "The snow fell softly through the night,", "The snow fell softly through the day,", "And covered all the world in", " white", " grey"),
 ("dark-night", "The stars were shining in the dark,", "The stars were shining in the night,", "We heard a dog begin to", " bark", " fight"),
 ("pie-cake", "My mother baked a berry pie,", "My mother baked a berry cake,", "It was so good I thought I'd", " cry", " bake"),
 ("train-bus", "I lost my hat upon the train,", "I lost my hat upon the bus,", "And so I had to stand in", " rain", " fuss"),
 ("sea-tide", "The ship was sailing out to sea,", "The ship was sailing on the tide,", "The captain smiled and sat to", " tea", " ride"),
 ("glee-joy", "The baby laughed and clapped with glee,", "The baby laughed and clapped with joy,", "And reached to grab her brand new", " key", " toy"),
 ("hill-town", "The wind was blowing on the hill,", "The wind was blowing through the town,", "And everything around was", " still", " brown"),
 ("tree-wall", "A bird was sitting in the tree,", "A bird was sitting on the wall,", "It sang a song for all to", " see", " call"),
 ("light-dawn", "We woke up early, at first light,", "We woke up early, at the dawn,", "And saw a deer upon the", " height", " lawn"),
 ("rain-snow", "The garden grew beneath the rain,", "The garden grew beneath the snow,", "And every flower bloomed", " again", " slow"),
 ("door-gate", "I heard a knocking at the door,", "I heard a knocking at the gate,", "I had not heard that sound", " before", " of late"),
 ("fire-stove", "We sat together by the fire,", "We sat together by the stove,", "And sang until we'd start to", " tire", " rove"),
]
out = []
for cid, a1, b1, l2, t, tb in C:
    a = a1 + "\n" + l2
    b = b1 + "\n" + l2
    na, nb = len(tok.encode(a).ids), len(tok.encode(b).ids)
    if na == nb:  # residual patching needs equal token counts
        out.append({"id": "couplet-" + cid, "a": a, "b": b, "target": t, "target_b": tb})
with open(os.path.join(HERE, "couplets.jsonl"), "w") as f:
    for r in out:
        f.write(json.dumps(r) + "\n")
print(f"{len(out)} of {len(C)} couplet pairs have equal token counts -> examples/couplets.jsonl")
