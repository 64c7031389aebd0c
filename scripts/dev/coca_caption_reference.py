"""Dev-time: writes the captioning fixtures under tests/fixtures/captioning/ from CLIP_benchmark's
own `captioning` task:

- `captions_coco.json`: a COCO-format caption file over 12 of the fixture images (ids out of
  file order, 2-5 reference captions each, with the punctuation, case, contractions and
  brackets that COCO's references have);
- `tests/fixtures/clip/tiny-coca-eos.{json,pt}`: `tiny-coca-gen` (the toy CoCa whose decoder
  runs, written by coca_generative_reference.py) with the end token's column of the
  decoder's projection set to 1.3 times that of the id the toy model picks most, so that
  captions end at the shortest length allowed, between, or not at all (the random model's
  never end);
- `coca_captions.json`: for both models, each image's generated ids and caption as
  open_clip's `CoCa.generate` (its defaults, as CLIP_benchmark calls it) and CLIP_benchmark's
  decoding give them, read through torchvision's `CocoCaptions` and CLIP_benchmark's collate
  function at batch sizes 5 and 64; and pycocoevalcap's scores of those captions against the
  references (its PTBTokenizer (Java), Bleu, METEOR (Java), ROUGE_L, CIDEr; SPICE needs
  Stanford models downloaded and is left out);
- `metric_cases.json`: pycocoevalcap's tokenization of every caption and its scores on
  hand-written candidate sets against the same references (close, partial, empty and
  unrelated candidates), to hold the metrics to on realistic text.

    cd tests/fixtures && PYTHONPATH=/tmp/tf4 /tmp/venv/bin/python ../../scripts/dev/coca_caption_reference.py
    (open_clip_torch 3.3, torch 2.15, torchvision 0.29, transformers 4.56.2 (open_clip's
    generate needs its BeamSearchScorer), clip_benchmark 1.6.2, pycocoevalcap 1.2, Java 17)
"""
import json
import os

import open_clip
import torch
from torchvision.datasets import CocoCaptions

from clip_benchmark.datasets.builder import image_captions_collate_fn
from open_clip.tokenizer import _tokenizer
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

FX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures")
OUT = os.path.join(FX, "captioning")

REFS = {
    "blobs_rgb.jpg": ["A close-up of colourful blobs on a plain background.",
                      "Several round, blurry shapes in red and green.",
                      "an abstract picture with soft colored spots"],
    "shapes_rgb.jpg": ["A red square next to a blue circle.", "Geometric shapes on a white wall",
                       "there are two shapes: a square and a circle", "A SQUARE AND A CIRCLE."],
    "shapes_wide.jpg": ["A wide banner showing shapes.", "a long picture of a few shapes"],
    "blobs_gray.jpg": ["A black and white photo of blobs.", "Grey spots on a grey background.",
                       "a gray, grainy image"],
    "shapes_exact224.jpg": ["Shapes in a small square picture", "a square image (224 pixels) of shapes",
                            "The picture's shapes aren't moving."],
    "shapes_odd.jpg": ["Two shapes at odd angles.", "A circle and a square that don't line up",
                       "shapes; red, blue and green", "a man's drawing of shapes"],
    "shapes_tall.jpg": ["A tall, narrow view of shapes.", "a tall picture"],
    "shapes_palette.png": ["A simple drawing with few colours.", "a palette image of shapes",
                           "\"Shapes\" in flat colors"],
    "blobs_small.jpg": ["A tiny image of blobs", "small blurry spots", "It's a very small picture..."],
    "shapes_progressive.jpg": ["A square and a circle, drawn in 2 colors.",
                               "shapes on a light background", "a red-and-blue drawing"],
    "shapes_gray.jpg": ["A gray picture of shapes.", "Shapes in black & white",
                        "a grayscale photo of a circle and a square"],
    "shapes_webp.webp": ["A drawing of shapes saved as WebP.", "some shapes!",
                         "a square, a circle... and nothing else"],
}

CANDIDATES = {
    "close": ["colorful blobs on a plain background", "a red square next to a blue circle",
              "a wide picture of shapes", "a black and white photo of blobs",
              "shapes in a small square picture", "a circle and a square at odd angles",
              "a tall narrow picture of shapes", "a simple drawing with few colors",
              "a tiny image of blobs", "a square and a circle in two colors",
              "a gray picture of shapes", "a drawing of shapes"],
    "partial": ["a picture", "a blue circle", "shapes", "a photo of a dog", "a square picture",
                "two shapes", "a tall man", "a palette", "blobs", "a red circle on a table",
                "a photo", "some shapes on a wall"],
    "odd": ["", "A Red Square, Next To A Blue Circle!", "wide wide wide wide wide",
            "the the the", "shapes (224) aren't moving", "a man's drawing", "tall.",
            "\"flat\" colours", "it's small...", "red-and-blue", "black & white",
            "a square, a circle; nothing else"],
}


def scores(gts, res):
    out = {}
    for scorer, names in [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]),
                          (Meteor(), ["METEOR"]), (Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"])]:
        score, _ = scorer.compute_score(gts, res)
        score = score if isinstance(score, list) else [score]
        out.update({n: float(s) for n, s in zip(names, score)})
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    names = list(REFS)
    # Ids out of the file's order: CocoCaptions reads the images sorted by id.
    ids = [300 + (7 * i) % len(names) for i in range(len(names))]
    coco = {"images": [{"id": i, "file_name": "images/" + n} for i, n in zip(ids, names)],
            "annotations": []}
    for i, n in zip(ids, names):
        for c in REFS[n]:
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": i,
                                        "caption": c})
    ann = os.path.join(OUT, "captions_coco.json")
    with open(ann, "w") as f:
        json.dump(coco, f, indent=1)
        f.write("\n")

    clip = os.path.join(FX, "clip")
    with open(os.path.join(clip, "tiny-coca-gen.json")) as f:
        config = json.load(f)
    with open(os.path.join(clip, "tiny-coca-eos.json"), "w") as f:
        json.dump(config, f, indent=1)
    open_clip.add_model_config(clip)
    sd = torch.load(os.path.join(clip, "tiny-coca-gen.pt"))
    proj = sd["text_decoder.text_projection"].float()
    proj[:, 49407] = 1.3 * proj[:, 37934]
    sd["text_decoder.text_projection"] = proj.half()
    torch.save(sd, os.path.join(clip, "tiny-coca-eos.pt"))
    out = {"open_clip": open_clip.__version__, "torch": torch.__version__}
    for name in ["tiny-coca-gen", "tiny-coca-eos"]:
        out[name] = run_model(clip, name, ann)
    with open(os.path.join(OUT, "coca_captions.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    order = out["tiny-coca-gen"]["images"]

    tok = PTBTokenizer()
    order = [n[len("images/"):] for n in order]
    cases = {"references": [[n, REFS[n]] for n in order], "candidates": {}, "tokenized": {}}
    texts = [c for n in order for c in REFS[n]] + [c for v in CANDIDATES.values() for c in v]
    t = tok.tokenize({i: [{"caption": c}] for i, c in enumerate(texts)})
    cases["tokenized"] = {c: t[i][0] for i, c in enumerate(texts)}
    gts_t = tok.tokenize({i: [{"caption": c} for c in REFS[n]] for i, n in enumerate(order)})
    for name, cands in CANDIDATES.items():
        res_t = tok.tokenize({i: [{"caption": c}] for i, c in enumerate(cands)})
        cases["candidates"][name] = {"captions": cands, "metrics": scores(gts_t, res_t)}
    with open(os.path.join(OUT, "metric_cases.json"), "w") as f:
        json.dump(cases, f, indent=1, ensure_ascii=False)
        f.write("\n")


def run_model(clip, name, ann):
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=os.path.join(clip, name + ".pt"))
    model.eval()
    ds = CocoCaptions(root=FX, annFile=ann, transform=preprocess)
    out = {}
    for batch in [5, 64]:
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False,
                                             collate_fn=image_captions_collate_fn)
        rows = []
        for img, captions in loader:
            with torch.no_grad():
                gen = model.generate(img)
            for seq, true in zip(gen.numpy(), captions):
                text = (_tokenizer.decode(seq).split("<end_of_text>")[0]
                        .replace("<start_of_text>", "").strip())
                rows.append({"ids": [int(t) for t in seq], "caption": text, "true": true})
        out[str(batch)] = rows
    rows = out["5"]
    assert [r["caption"] for r in rows] == [r["caption"] for r in out["64"]]
    with open(ann) as f:
        images = json.load(f)["images"]
    out["images"] = [im["file_name"] for im in sorted(images, key=lambda im: im["id"])]
    gts = {i: [{"caption": t} for t in r["true"]] for i, r in enumerate(rows)}
    res = {i: [{"caption": r["caption"]}] for i, r in enumerate(rows)}
    tok = PTBTokenizer()
    out["metrics"] = scores(tok.tokenize(gts), tok.tokenize(res))
    return out


if __name__ == "__main__":
    main()
