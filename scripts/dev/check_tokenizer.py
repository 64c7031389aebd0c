"""Dev-time: compare `pyramidclip tokenize --jsonl` with the reference tokenizer (ftfy 6 +
html.unescape + the CLIP BPE, restated here from reference §6) on a generated corpus.
Needs ftfy and regex (pip). Usage: python3 scripts/dev/check_tokenizer.py [BINARY] [N]"""
import gzip, html, json, random, subprocess, sys, tempfile
import ftfy, regex

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/pyramidclip"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 20000


def byte_table():
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    order, chars, extra = list(keep), list(keep), 0
    for b in range(256):
        if b not in keep:
            order.append(b); chars.append(256 + extra); extra += 1
    return dict(zip(order, map(chr, chars)))


BYTES = byte_table()
merges = gzip.open("configs/data/bpe_simple_vocab_16e6.txt.gz").read().decode().split("\n")[1:49152 - 256 - 2 + 1]
merges = [tuple(m.split()) for m in merges]
vocab = list(BYTES.values()); vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
ENC = {v: i for i, v in enumerate(vocab)}
RANK = {m: i for i, m in enumerate(merges)}
PAT = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


def bpe(tok):
    if tok in ("<|startoftext|>", "<|endoftext|>"):
        return [tok]
    word = list(tok[:-1]) + [tok[-1] + "</w>"]
    while len(word) > 1:
        pairs = [(RANK.get((a, b), 1 << 30), a, b) for a, b in zip(word, word[1:])]
        r, a, b = min(pairs)
        if r == 1 << 30:
            break
        out, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                out.append(a + b); i += 2
            else:
                out.append(word[i]); i += 1
        word = out
    return word


def ref_ids(text):
    t = ftfy.fix_text(text)
    t = html.unescape(html.unescape(t)).strip()
    t = regex.sub(r"\s+", " ", t).strip().lower()
    ids = [49406]
    for piece in PAT.findall(t):
        ids += [ENC[s] for s in bpe("".join(BYTES[b] for b in piece.encode("utf-8")))]
    ids.append(49407)
    if len(ids) > 77:
        ids = ids[:77]; ids[-1] = 49407
    return ids + [0] * (77 - len(ids))


rng = random.Random(0)
words = ["photo", "café", "naïve", "über", "größe", "señor", "Ærø", "façade", "crème brûlée", "jalapeño", "tench", "goldfish",
         "🐱", "😀", "👨‍👩‍👧", "猫", "写真", "한국어", "صورة", "बिल्ली", "Ελλάδα", "москва", "ﬁsh", "ﬂower", "Ｆｕｌｌ", "ｗｉｄｔｈ",
         "&amp;", "&lt;b&gt;", "&quot;", "&#39;", "&eacute;", "&NTILDE;", "&nbsp;", "“quoted”", "‘single’", "don't", "it's",
         "<b>bold</b>", "x²", "½", "Ⅻ", "ℌ", "\u00a0", "\u200b", "\u2028", "\r\n", "\t", "\x1b[31mred\x1b[0m", "\u0301", "\ufeff"]
templates = [l.strip() for l in open("configs/data/imagenet_templates.txt")]
names = [l.strip() for l in open("configs/data/imagenet_classnames.txt")]


def mojibake(s):
    enc = rng.choice(["latin-1", "cp1252", "cp1251", "cp1250", "cp1253", "macroman", "cp437", "iso-8859-2"])
    try:
        return s.encode("utf-8").decode(enc, errors="replace" if rng.random() < 0.3 else "strict")
    except UnicodeError:
        return s.encode("utf-8").decode("latin-1")


def sample():
    r = rng.random()
    if r < 0.25:
        return rng.choice(templates).replace("{}", rng.choice(names))
    if r < 0.5:
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
    if r < 0.7:
        return mojibake(" ".join(rng.choice(words) for _ in range(rng.randint(1, 5))))
    if r < 0.85:
        return "".join(chr(rng.choice([rng.randint(32, 0x24F), rng.randint(0x2000, 0x2BFF), rng.randint(0x3000, 0x9FFF),
                                         rng.randint(0x1F300, 0x1FAFF), rng.randint(0x80, 0x9F)])) for _ in range(rng.randint(1, 30)))
    return "".join(chr(rng.randint(1, 0x2FFFF)) for _ in range(rng.randint(1, 20)))


cases = []
while len(cases) < N:
    t = sample()
    if any(0xD800 <= ord(c) <= 0xDFFF for c in t):
        continue
    cases.append(t)
with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    for t in cases:
        f.write(json.dumps({"text": t}) + "\n")
out = subprocess.run([BIN, "tokenize", "--jsonl", f.name], check=True, capture_output=True, text=True).stdout.splitlines()
bad = 0
for t, line in zip(cases, out):
    want = ref_ids(t)
    if json.loads(line) != want:
        bad += 1
        if bad <= 15:
            print("DIFF", repr(t), "\n  ours", json.loads(line)[:20], "\n  ref ", want[:20])
print(f"{len(cases) - bad}/{len(cases)} identical ({100 * (len(cases) - bad) / len(cases):.3f}%)")
