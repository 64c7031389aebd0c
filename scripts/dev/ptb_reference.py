"""Dev-time: writes tests/fixtures/captioning/ptb_cases.tsv, one caption and what pycocoevalcap's
PTBTokenizer (Stanford's PTB tokenizer 3.4.1 run by Java, lower-cased, punctuation tokens
dropped) makes of it per line, tab-separated: 3,000 COCO-style captions built from seeded
templates (case, contractions, possessives, abbreviations, times, numbers, quotes, brackets,
slashes, ampersands, dashes, ellipses, trailing spaces), hand-picked probes of the lexer's
rules, some of which `caption_metrics::tokenize` does not copy (listed in its test), and
1,000 seeded lines of the rarer rules' tokens.

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

# Probes of the rarer rules (apostrophes inside and around words, clitics, URLs, e-mail
# addresses, SGML-like tags, smileys, ampersands, numbers before letters, `!`/`?` runs,
# currency signs, fractions, symbols, HTML entities).
RARE_PROBES = r'''
see http://x.org/a?b=c.
visit www.google.com/maps today
mail me@x.com.
https://a.b/c,d
a.com b.net c.org d.edu e.io
5'6" tall
6' tall
a 6'2" man
12" pizza
he's 6'
'twas night
'tis
y'all come
rock 'n' roll
fish'n'chips
100,000th
1,000nd 2,000st
the 21st century
a <b> c
a<b>c
<html>
x < y
a>b
1st.
2,500th place
a 10'x12' room
4'x8'
a dog's tail
dogs' tails
o'neill
O'Brien
ma'am
ne'er
d'you
y'know
'cause
'em
'til
'90s
the '90s
c'mon
abc'def
ab'cd
b'cd
bc'd
a'5
5'a
55'66
l'amour
d'arc
j'ai
a'bc
i'bc
y'bc
z'bc
n'bc
x'y
x'yz
ba'cd
ba'Cd
BA'CD
ROCK'N'ROLL
Y'ALL
shi'ite
bo'ab
boy'ab
ol' man
l'
d' x
somethin' else
dunkin' donuts
nor'easter
s'mores
ev'ry
li'l
o'o
cont'd
e'er
'n
'n'
n'
'N'
rock'n
'till
'Til
'20s
'10s
'99
'99s
10's
the 1990's
a'b'c'd
dog's'
it's'
''hi''
'hello'
's
're
boys'
James'
x'
'x
abc'
'abc
can't
cant
won't
y'
don't'
'nice day
'emma
'tiller
'causeway
'sam
'sea
'dog
'mary
'reed
'vex
'llama
'dx
'd
'm
'twasn't
'tisk
'tis.
'90s.
'99.
'90sx
'20S
'EM
'TIL
'Cause
'TIS
'S
'Re
dog'S
we'Re
we'RE
Ol' man
OL'
J'
L'Amour
D'Arcy
Y'
y'1
y'.
'n'roll
rock'n'
rock'n'.
he said 'n' so
ma'am.
Shi'ite
C'mon
c'mons
E'er
nat'l
cont'd.
't
'tw
tis
don't
DON'T
ain't
dunkin'
Dunkin'
DUNKIN'
somethin'
Somethin'
olé
l'1
d'5
o'5
a'b
qu'il
aujourd'hui
rock’n’roll
it’s
’tis
‘tis
y’all
ma’am
l’amour
5’6
NOR'EASTER
Nor'easter
S'MORES
S'mores
EV'RY
Ev'ry
Li'l
LI'L
NAT'L
Nat'l
O'O
Cont'd.
CONT'D.
doesn't
n't
isn't.
can’t
ain’t
rock'n'roll's
'n's
ma'am's
o'clock's
y'all's
ol's
shouldn't've
y'all'd
d'you've
l'amour'
J'ai
D'
ab'n'
ab'n'cd'n'
x'n
x'nt
C'MON
it´s
it‘s
rock‘n‘roll
we’ll
’em
’90s
’n’
'N
'ns
'emx
'em's
O'Neill's
shi'ite's
ma’am’s
'tis'
'cause'
the '99 team
'99 '00 '5
'5s
'80S
'70's
70's
M'Baye
N'Djamena
q'ab
Q'ab
I'bc
Y'bc
Z'bc
na'A
na'y
ya'o
yy'o
b2'o
ab'ba
mmm'mm
hmm'
1,000s
3,000m
1.5x
2.5mm
10,000-foot
1,000,000th
5,000+
1,00th
12,345.6th
1,000th.
(1,000th)
$1,000s
(http://a.com)
http://a.com,
http://a.com/x-
http://a.com/(x)y
https://a.com/a_b~c
HTTP://A.COM
mailto:x@y.com
ftp://a.b
a http://b.c/d'e f
http://a.com/"q"
http://x.y/a|b
http://x.y/a<b
http://
http://.
see http://x.org!
url:http://x.org
http://x.org/a.b.c...
http://x.org/*
http://x.org/a;b
http://x.org/a:
<b>bold</b> text
a <br/> b
<!-- c -->
< b >
<1>
<?xml?>
a<b c>d
x<y>z
<a href="x">
1<2
3:30pm
1.5x2
v1.5
1,000x1,000
4.5-star
1.5's
1,000's
2.5mm.
-1.5x
+1.5x
1.5%
1.5.6x
12:30:45pm
1.5X
1.5é
1,5
3.14
.5x
5.x
1,000,00a1
http://x.org/
https://x.org/a/b/
http://x.org/a~
http://x.org/a'
http://x.org/a's
x <B>y</B>
<b\ta>
a<b>
<b\a>
<b'a>
<b`a>
<b=a>
<b;a>
<b&a>
<b<a>
<b{a}>
<b(a)>
<b1>
<bé>
<b/>
<b a="1" c=2>
</>
<!>
<?>
<a>b<c>
<a<b>
b&a
AT&T
At&T
AT&t
A&B&C
A&
&A
R&D's
AT&T.
black&white
B&W
S&P500
a&b&c
x&amp;y
&amp;
Q&A
1&2
b`a
``x''
a`
:man
;x
,x
:)
:-)
;)
:(
a :)
hello!!world
what?!now
a!b
x?y
%x
!x
?x
:5
,5
::x
:Dog
:pizza
=Dx
:o)
:'(
>:(
<:)
:]
:|
:@
:\
:{
x :P
a:)
time:Dinner
hi!
hi!there
a.b!c
ab!!
a!b!c
a?!b
3!x
x!3
é!é
No.
it is No.
yes no.
the No. 
no. 5
No.5
say no.
No. no.
Dr.
it is Dr.
the dog No.
Fig.
vol.
the vol.
est.
a No.
No. 
dont
im
youre
didnt
doesnt
aint
theyre
isnt
wont
4x4 truck
5x5
#1 fan
b&w photo
w/ cheese
1980s
80s
2-3 people
24/7
1/2 of
3/4
9/11
o.k.
t.v.
e-mail
wi-fi
7-eleven
co-op
cooking/baking
and/or
he/she
w/o
a 2x4
the 1st and 2nd
10am
10 a.m
5pm.
6ft
6ft.
5'
a 20-something
a #2 pencil
50/50
Q: what
A: yes
x2
2x
00
100$
£5
5£
€5
100°
°F
½ cup
¼
3½
naïve
café's
façade
São Paulo
Zürich
jalapeño
¥5
5¥
¢5
₹5
$
£
€
a £ b
5€
5$
100€.
#hashtag
#1
#
##
#a1
# 1
a#1
1#
¾
⅓
⅔
⅛
1¾
a½
½.
(½)
5 ½
₤5
₩5
&quot;hi&quot;
a &lt; b
a &gt; b
it&#39;s
&nbsp;
5°C
100°F
°
5°
x²
Coca-Cola™
Apple®
2×2
6÷2
±5
a·b
§5
©2010
w/
c/o
the 1990s.
pm.
a.m.,
A.M.
U.K.'s
Dr.'s
e-mail.
O.K.!
Ph.D.
ph.d
Jr.,
vs
vs.
v.
approx.
i.e.,
etc.)
Mt. Fuji
Ft. Worth
Sgt. Pepper
Gov.
Capt.
Inc.'s
St.Louis
No.1
no 1
a dog.The cat
end."
end.'
end.)
…
wait…
…what
a...b
a. . . b
a --b
--a
a—b
a–b
a - b
a -b
-a
b-
1-2
-5
5-
x--
'''

# Tokens of those rules, joined by spaces into seeded "captions" (`mixed`).
RARE = ["a","man","dog","The","woman's","dogs'","isn't","can't","won't","they're","we'll","I'm","you'd","he's",
 "o'clock","O'Brien","ma'am","y'all","rock'n'roll","'n'","'em","'til","'cause","'90s","'99","'tis","'twas",
 "ol'","l'amour","d'Arcy","j'ai","Shi'ite","c'mon","li'l","5'6\"","6'","10'x12'","12\"","2.5mm","1,000th","3:30pm",
 "1.5x","100,000","3.14","-2.5","+5","$5.00","50%","AT&T","Q&A","black&white","&","&amp;","rock & roll",
 "http://x.org/a?b=c","https://a.com/b/","www.google.com","me@x.com","<b>","</b>","<br/>","<a href=\"x\">","a<b",
 "x > y","(a","b)","[c]","{d}","\"quoted\"","'single'","“smart”","‘curly’","it’s","don’t","ma’am","’em",
 "e.g.","i.e.","U.S.","Mr.","Dr.","St.","etc.","p.m.","No.","5","...","!","?",",",";",":","--","-","well-known",
 "3-year-old","x-ray","self-driving","don't'","dogs's","it's.","'s","n't","y'","'n","d'","l'","x'y","ab'cd","na'am",
 "M'Baye","N'Djamena","cont'd.","e'er","s'mores","nor'easter","rock’n’roll","y’all","'80s","'70's","the'",
 "hello!!","what?!","wow...","end.","a.b.c.","U.S.A.","tv's","cd's","1990's","mid-'90s","`","``","''"]


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


def mixed(n, seed=23):
    random.seed(seed)
    out = []
    for _ in range(n):
        line = " ".join(random.choice(RARE) for _ in range(random.randint(3, 12)))
        if random.random() < 0.5:
            line += random.choice([".", "!", "?", " .", "'", "\""])
        out.append(line)
    return out


def main():
    probes = [p for p in (PROBES + RARE_PROBES).split("\n") if p.strip()]
    lines = probes + templated(3000) + mixed(1000)
    t = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(lines)})
    with open(OUT, "w", encoding="utf-8") as f:
        for i, c in enumerate(lines):
            f.write(c + "\t" + t[i][0] + "\n")


if __name__ == "__main__":
    main()
