"""Dev-time: writes tests/fixtures/captioning/ptb_cases.tsv, one caption and what pycocoevalcap's
PTBTokenizer (Stanford's PTB tokenizer 3.4.1 run by Java, lower-cased, punctuation tokens
dropped) makes of it per line, tab-separated: 3,000 COCO-style captions built from seeded
templates (case, contractions, possessives, abbreviations, times, numbers, quotes, brackets,
slashes, ampersands, dashes, ellipses, trailing spaces) and hand-picked probes of the
lexer's rules, some of which `caption_metrics::tokenize` does not copy (listed in its test).

    PYTHONPATH=/tmp/tf4 /tmp/venv/bin/python scripts/dev/ptb_reference.py   (pycocoevalcap 1.2, Java 17)
"""
import os
import random

from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures",
                   "captioning", "ptb_cases.tsv")

PROBES = r'''
A man riding a bike.
a man riding a bike .
Two dogs, playing in the park!
The dog's bone isn't here.
They're going; we've got it, I'm sure, you'll see, he'd go.
"Quoted text" and 'single quoted' words
Mr. Smith and Dr. Jones at St. Louis.
It costs $5.00 or 3,000 dollars, 50% off.
A 3-year-old child with a well-known toy.
e.g. this, i.e. that, etc. and so on.
Wait... what?! Really?
Black/white cat * with stars*
AT&T and Q&A; rock & roll
(in parentheses) [brackets] {braces}
a man at 3:30 p.m. on 12/25/2020
the U.S. flag. the u.s. flag. U.S.A.
can't won't don't cannot gonna wanna
emoji 😀 café naïve “smart quotes” ‘single’ — dash – en
a--b a - b a -- b
trailing space   
www.example.com http://x.org/a?b=c user@mail.com
it's 5'6" tall and 10'
o'clock rock'n'roll ma'am y'all
#hashtag @user
a.b.c. A.B. a. b.
3.5 .5 5. 1,000,000 1.000 -5 +5
Hello.World hello.world
the man's.
dogs' bones
I.
no.
No. 5
i like the st.
a man and etc.
at 5 p.m.
they went to the u.s.
a sign that says "stop."
he said 'no.'
a dog (brown).
a dog...
a dog....
a dog!!
a dog?!?
"a dog"
'tis the season
the '90s style
rock'n'roll
dogs' and cats'
JOHN'S DOG
a man 's bike
x's
a 2nd place and 1st
mr smith
Mr smith
MR. SMITH
inc. co. corp. ltd. jr. sr. vs. ft. mt. ave. rd. blvd. dept. st. no. vol. fig. jan. feb. sept. oct.
cake w/ icing and w/o
a b-52 bomber
it's 100°F and 5km
a+b=c a<b a>b a=b
a|b a~b a^b a_b a\b
100,000th 1st.
the 1960's
one -- two
---
a ** b
a.
A.
Z.
ok.
St.
etc.
'''

subj = ["A man", "a woman", "Two dogs", "The cat", "A group of people", "An older man's dog", "children", "A young girl", "the giraffe", "A 747 airplane", "2 boys", "St. Bernard dog", "Mr. Smith", "a T-shirt", "A black-and-white photo", "People's bikes", "the children's toys", "A U.S. flag", "an elephant", "3 zebras", "TWO MEN", "A pizza", "a plate of food", "A double-decker bus", "A man (in red)", "The kitchen", "a 'no parking' sign", "A \"stop\" sign", "some sheep", "A woman's hand"]
verb = ["riding", "standing next to", "sitting on", "holding", "looking at", "is laying on", "isn't near", "that's on", "flying over", "eating", "walking down", "parked near", "cutting", "playing with", "can't reach", "doesn't like", "jumping over", "in front of", "next to", "with"]
obj = ["a wave on top of a surfboard", "each other in a field", "a bed", "an umbrella in the rain", "a table with food on it", "a stove, sink and refrigerator", "the street", "a frisbee", "a red fire hydrant", "a large clock tower", "12:30 p.m.", "a laptop/computer", "a bowl of fruit & vegetables", "a kite", "the ocean", "a 3.5 inch screen", "1,000 balloons", "a $5 bill", "the U.S. capitol", "a sign that reads: STOP", "a cake (with candles)", "the TV", "a skateboard ramp", "his dog's bowl", "the bus stop", "snow-covered mountains", "50% of the pizza", "a toothbrush, etc.", "the man's hat", "a vase w/ flowers"]
end = [".", "", " .", "!", "...", ".  ", " ", "?", ";", ".\"", ")."]
extra = ["", "", "", ", and a dog", " while it's raining", " in the background", " -- very nice", " - outside", " on a sunny day", "; it's cold", " (blurry)", " near the St. Louis arch", " at night", " e.g. a park"]


def templated(n, seed=7):
    random.seed(seed)
    out = set()
    while len(out) < n:
        c = (random.choice(subj) + " " + random.choice(verb) + " " + random.choice(obj)
             + random.choice(extra) + random.choice(end))
        if random.random() < 0.3:
            c = c.lower()
        if random.random() < 0.1:
            c = c.replace(" ", "  ", 1)
        if random.random() < 0.05:
            c = " " + c
        if random.random() < 0.1:
            c = c.upper()
        out.add(c)
    return sorted(out)


def main():
    lines = [p for p in PROBES.split("\n") if p.strip()] + templated(3000)
    t = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(lines)})
    with open(OUT, "w", encoding="utf-8") as f:
        for i, c in enumerate(lines):
            f.write(c + "\t" + t[i][0] + "\n")


if __name__ == "__main__":
    main()
