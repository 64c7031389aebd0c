#!/usr/bin/env python3
"""Dev-time: tests/fixtures/retrieval/cb, CLIP_benchmark's multilingual retrieval layout
(Crossmodal-3600: ROOT/xm3600/captions.jsonl + ROOT/xm3600/images/KEY.jpg) scored by
CLIP_benchmark's own code.

The captions are the reference prompts and the images fixture images, so the reference code's
features in tests/fixtures/expected.safetensors stand for the model (as in
scripts/selection_reference.py). CLIP_benchmark's `crossmodal3600.create_annotation_file` writes
ROOT/crossmodal3600_captions-{en,de}.json from captions.jsonl (one key has no image: it leaves
it out with a warning), its `Crossmodal3600` class reads them, and its
`zeroshot_retrieval.evaluate` scores them on a stand-in model returning those features.

Run from the repository root (CLIP_benchmark writes the image paths as it sees them, so the
files name them relative to it):

    python3 scripts/multilingual_retrieval_reference.py --clip-benchmark PATH/TO/CLIP_benchmark
    # needs torch, torchvision, pillow, tqdm; PATH holds clip_benchmark/metrics and
    # clip_benchmark/datasets/crossmodal3600.py

Writes the layout and expected.json (per language and model: the recalls, and the (image,
caption) pairs read).
"""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from retrieval_reference import load_safetensors  # noqa: E402

FX = os.path.join("tests", "fixtures")
ROOT = os.path.join(FX, "retrieval", "cb")

# (key, fixture image or None for a key whose image is missing, en captions, de captions):
# CLIP_benchmark keeps only the first caption of a language.
ITEMS = [
    ("0a1b2c3d4e5f6001", 4, [0, 3], [5]),
    ("0a1b2c3d4e5f6002", 5, [2], [0, 1]),
    ("0a1b2c3d4e5f6003", 9, [5, 0], [7]),
    ("0a1b2c3d4e5f6004", None, [1], [1]),
    ("0a1b2c3d4e5f6005", 14, [7], [2, 4]),
    ("0a1b2c3d4e5f6006", 19, [6], [3]),
    ("0a1b2c3d4e5f6007", 20, [1, 8], [6]),
    ("0a1b2c3d4e5f6008", 21, [4], [8]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip-benchmark", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.clip_benchmark)
    import torch
    from torch.utils.data import DataLoader
    from clip_benchmark.datasets.crossmodal3600 import Crossmodal3600, create_annotation_file
    from clip_benchmark.metrics import zeroshot_retrieval

    manifest = json.load(open(os.path.join(FX, "manifest.json")))
    exp = load_safetensors(os.path.join(FX, "expected.safetensors"))
    images, prompts = manifest["images"], manifest["prompts"]

    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "xm3600", "images"))
    with open(os.path.join(ROOT, "xm3600", "captions.jsonl"), "w", encoding="utf-8") as f:
        for key, img, en, de in ITEMS:
            if img is not None:
                # The release's images are all JPEGs named KEY.jpg; one fixture here is a WebP
                # under that name (PIL and pyramidclip go by content).
                shutil.copyfile(os.path.join(FX, images[img]),
                                os.path.join(ROOT, "xm3600", "images", key + ".jpg"))
            line = {"image/key": key, "image/locale": "en"}
            for lang, caps in (("en", en), ("de", de)):
                line[lang] = {"caption": [prompts[c] for c in caps],
                              "caption/tokenized": [prompts[c].lower() for c in caps]}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")

    # The dataset hands the transform a converted copy (no file name): it is known by its pixels.
    from PIL import Image
    index = {Image.open(os.path.join(FX, images[img])).convert("RGB").tobytes(): img
             for _, img, _, _ in ITEMS if img is not None}
    assert len(index) == sum(img is not None for _, img, _, _ in ITEMS)

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

    def collate(batch):
        t = list(zip(*batch))
        return torch.stack(t[0]), t[1]

    expected = {}
    for lang in ("en", "de"):
        create_annotation_file(ROOT, lang)
        ann = os.path.join(ROOT, f"crossmodal3600_captions-{lang}.json")
        expected[lang] = {}
        for name in ("tiny_RN", "tiny_ViT"):
            model = Model(name)
            ds = Crossmodal3600(root=ROOT, ann_file=ann, transform=lambda im: model.img[
                index[im.tobytes()]].reshape(1, 1, -1))
            dl = DataLoader(ds, batch_size=3, shuffle=False, collate_fn=collate)
            m = zeroshot_retrieval.evaluate(model, dl, tokenizer, "cpu", amp=False,
                                            recall_k_list=[1, 2, 3, 5])
            expected[lang][name.replace("_", "-")] = {
                "metrics": {k: float(v) for k, v in m.items()},
                "pairs": [[os.path.basename(p), t] for p, t in ds.data],
            }
    with open(os.path.join(ROOT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
