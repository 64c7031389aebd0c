#!/usr/bin/env python3
"""Dev-time: tests/fixtures/selection, the image-caption selection task (CLIP_benchmark's
`image_caption_selection`: SugarCREPE, Winoground) scored by CLIP_benchmark's own code.

The sets are built from the fixture images and the reference prompts, so the reference code's
features in tests/fixtures/expected.safetensors stand for the model: CLIP_benchmark's
`image_caption_selection.evaluate` runs on a stand-in model whose `encode_image` and
`encode_text` return those features (the transform maps each opened image file to its row, the
tokenizer each caption to its row). SugarCREPE is read by CLIP_benchmark's own `SugarCrepe`
dataset class; Winoground by a class that reads `examples.jsonl` as the Hugging Face loader
does (images/NAME.png), since CLIP_benchmark's needs `datasets` and the network.

Writes sugar_crepe.json, winoground/examples.jsonl (+ images/), instances.jsonl and
expected.json (per model: the three metrics, and per instance text/image correctness).

    python3 scripts/selection_reference.py --clip-benchmark PATH/TO/CLIP_benchmark
    # needs torch, pillow, tqdm; PATH holds clip_benchmark/metrics and datasets/sugar_crepe.py
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from retrieval_reference import load_safetensors  # noqa: E402

FX = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
OUT = os.path.join(FX, "selection")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip-benchmark", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.clip_benchmark)
    import torch
    from torch.utils.data import DataLoader, Dataset, Subset, default_collate
    from PIL import Image
    from clip_benchmark.datasets.sugar_crepe import SugarCrepe
    from clip_benchmark.metrics import image_caption_selection

    manifest = json.load(open(os.path.join(FX, "manifest.json")))
    exp = load_safetensors(os.path.join(FX, "expected.safetensors"))
    images, prompts = manifest["images"], manifest["prompts"]
    os.makedirs(OUT, exist_ok=True)

    # SugarCREPE: {id: {filename, caption, negative_caption}}, ids as strings (not contiguous,
    # as the released files' are after filtering); filenames relative to the images root.
    sugar = {}
    for i in range(14):
        img = images[(5 * i + 2) % len(images)]
        pos = i % len(prompts)
        neg = (4 * i + 3) % len(prompts)
        if neg == pos:
            neg = (neg + 1) % len(prompts)
        sugar[str(3 * i + 1)] = {"filename": img, "caption": prompts[pos],
                                 "negative_caption": prompts[neg]}
    with open(os.path.join(OUT, "sugar_crepe.json"), "w") as f:
        json.dump(sugar, f, indent=1, ensure_ascii=False)

    # Winoground: examples.jsonl + images/NAME.png. Two instances use real copies named as the
    # release names them; the others name fixture images by a relative path.
    wino_dir = os.path.join(OUT, "winoground")
    os.makedirs(os.path.join(wino_dir, "images"), exist_ok=True)
    for n, src in [("ex_0_img_0", "images/blobs_palette.png"), ("ex_0_img_1", "images/shapes_palette.png")]:
        shutil.copyfile(os.path.join(FX, src), os.path.join(wino_dir, "images", n + ".png"))
    wino_images = {"ex_0_img_0": "images/blobs_palette.png", "ex_0_img_1": "images/shapes_palette.png"}
    wino = [{"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1",
             "caption_0": prompts[0], "caption_1": prompts[1], "tag": "fixture"}]
    # Random tiny models mostly fail Winoground; the other instances are picked, in a fixed
    # order of candidates, so that each model's text and image choices come out both right and
    # wrong somewhere (a scorer that always says "wrong" must fail the test).
    feats = {m: (exp[f"{m}.image_features"], exp[f"{m}.text_features"]) for m in ["tiny_RN", "tiny_ViT"]}

    def wino_outcome(m, ia, ib, c0, c1):
        im, tx = feats[m]
        s = im[[ia, ib]] @ tx[[c0, c1]].T
        return bool((s.argmax(1) == [0, 1]).all()), bool((s.argmax(0) == [0, 1]).all())

    seen = set()
    candidates = [(ia, ib, c0, c1) for ia in range(len(images)) for ib in range(len(images))
                  for c0 in range(len(prompts)) for c1 in range(len(prompts)) if ia != ib and c0 != c1]
    candidates = [candidates[(k * 7919) % len(candidates)] for k in range(len(candidates))]
    picked = []
    for ia, ib, c0, c1 in candidates:
        key = tuple(wino_outcome(m, ia, ib, c0, c1) for m in feats)
        if key in seen:
            continue
        seen.add(key)
        picked.append((ia, ib, c0, c1))
        if len(picked) == 7:
            break
    for i, (ia, ib, c0, c1) in enumerate(picked, start=1):
        a, b = images[ia], images[ib]
        wino.append({"id": i, "image_0": "../../" + a, "image_1": "../../" + b,
                     "caption_0": prompts[c0], "caption_1": prompts[c1]})
        wino_images["../../" + a] = a
        wino_images["../../" + b] = b
    with open(os.path.join(wino_dir, "examples.jsonl"), "w") as f:
        for e in wino:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")

    # Generic JSON lines: any number of images and captions, image i with caption i.
    generic = [
        {"id": "a", "images": [images[2]], "captions": [prompts[2], prompts[0], prompts[5]]},
        {"id": "b", "images": [images[4], images[9], images[17]], "captions": [prompts[3], prompts[4]]},
        {"id": "c", "image": images[11], "captions": [prompts[6], prompts[7]]},
        {"id": "d", "images": [images[0], images[22]], "captions": [prompts[1]]},
        {"id": "e", "images": [images[2], images[20]], "captions": [prompts[8], prompts[2]]},
    ]
    with open(os.path.join(OUT, "instances.jsonl"), "w") as f:
        for e in generic:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")

    index = {os.path.realpath(os.path.join(FX, p)): i for i, p in enumerate(images)}

    class Model:
        def __init__(self, name):
            self.img = torch.from_numpy(exp[f"{name}.image_features"].copy())
            self.txt = torch.from_numpy(exp[f"{name}.text_features"].copy())

        def encode_image(self, x):
            return x.reshape(x.shape[0], -1)

        def encode_text(self, t):
            return self.txt[t]

    def tokenizer(texts):
        return torch.tensor([prompts.index(t) for t in texts])

    def transform_for(model):
        # The opened file's row of the reference image features, shaped [C=1, H=1, W=D].
        return lambda im: model.img[index[os.path.realpath(im.filename)]].reshape(1, 1, -1)

    def collate(batch):
        t = list(zip(*batch))
        return default_collate(t[0]), t[1]

    class Wino(Dataset):
        def __init__(self, transform):
            self.rows = [json.loads(l) for l in open(os.path.join(wino_dir, "examples.jsonl"))]
            self.transform = transform

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            r = self.rows[i]
            ims = [Image.open(os.path.join(FX, wino_images[r[k]])) for k in ("image_0", "image_1")]
            return torch.stack([self.transform(im) for im in ims]), [r["caption_0"], r["caption_1"]]

    class Generic(Dataset):
        def __init__(self, transform):
            self.transform = transform

        def __len__(self):
            return len(generic)

        def __getitem__(self, i):
            e = generic[i]
            paths = e.get("images") or [e["image"]]
            ims = [self.transform(Image.open(os.path.join(FX, p))) for p in paths]
            return torch.stack(ims), e["captions"]

    expected = {}
    for name in ["tiny_RN", "tiny_ViT"]:
        model = Model(name)
        tf = transform_for(model)
        sets = {
            "sugar_crepe": SugarCrepe(root=FX, ann_file=os.path.join(OUT, "sugar_crepe.json"), transform=tf),
            "winoground": Wino(tf),
            "instances": Generic(tf),
        }
        out = {}
        for key, ds in sets.items():
            # Generic instances differ in size: one per batch, as any batch size gives the same.
            bs = 1 if key == "instances" else 4
            loader = DataLoader(ds, batch_size=bs, collate_fn=collate)
            m = image_caption_selection.evaluate(model, loader, tokenizer, "cpu", amp=False)
            per = []
            for i in range(len(ds)):
                one = DataLoader(Subset(ds, [i]), batch_size=1, collate_fn=collate)
                r = image_caption_selection.evaluate(model, one, tokenizer, "cpu", amp=False)
                per.append([bool(r["text_acc"]), bool(r["image_acc"])])
            out[key] = {"metrics": m, "instances": per}
        expected[name.replace("_", "-")] = out
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps({k: {s: v[s]["metrics"] for s in v} for k, v in expected.items()}, indent=1))


if __name__ == "__main__":
    main()
