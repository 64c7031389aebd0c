#!/usr/bin/env python3
"""Dev-time: tests/fixtures/selection/winoground-hf, the Winoground fixture set as Hugging Face
`datasets` caches it (what CLIP_benchmark's `winoground` reads through
`load_dataset("facebook/winoground", cache_dir=ROOT)`): ROOT/facebook___winoground/default/
0.0.0/HASH/winoground-test.arrow, written by `datasets`' own ArrowWriter with the dataset's
features (Image columns hold each image's encoded bytes), three rows per record batch.

It then reads the file back with `datasets.Dataset.from_file`, runs CLIP_benchmark's own
`WinoGround.__getitem__` over it and its `image_caption_selection.evaluate` on the reference
features (as scripts/selection_reference.py does for examples.jsonl), and checks the scores
equal tests/fixtures/selection/expected.json's `winoground` entry, which the test then holds
pyramidclip to.

    python3 scripts/winoground_hf_reference.py --clip-benchmark PATH/TO/CLIP_benchmark
    # needs datasets, torch, pillow, tqdm
"""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from retrieval_reference import load_safetensors  # noqa: E402

FX = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
WINO = os.path.join(FX, "selection", "winoground")
OUT = os.path.join(FX, "selection", "winoground-hf")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip-benchmark", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.clip_benchmark)
    import datasets
    import torch
    from datasets.arrow_writer import ArrowWriter
    from PIL import Image
    from torch.utils.data import DataLoader, default_collate
    from clip_benchmark.datasets.winoground import WinoGround
    from clip_benchmark.metrics import image_caption_selection

    features = datasets.Features({
        "id": datasets.Value("int32"), "image_0": datasets.Image(), "image_1": datasets.Image(),
        "caption_0": datasets.Value("string"), "caption_1": datasets.Value("string"),
        "tag": datasets.Value("string"), "secondary_tag": datasets.Value("string"),
        "num_main_preds": datasets.Value("int32"), "collapsed_tag": datasets.Value("string")})
    rows = [json.loads(l) for l in open(os.path.join(WINO, "examples.jsonl"))]

    def image_file(name):
        own = os.path.join(WINO, "images", name + ".png")
        return own if os.path.exists(own) else os.path.normpath(os.path.join(WINO, name))

    shutil.rmtree(OUT, ignore_errors=True)
    folder = os.path.join(OUT, "facebook___winoground", "default", "0.0.0", "4e5a9a0b7c1d2e3f")
    os.makedirs(folder)
    path = os.path.join(folder, "winoground-test.arrow")
    with ArrowWriter(features=features, path=path, writer_batch_size=3) as w:
        for r in rows:
            ex = {"id": r["id"], "caption_0": r["caption_0"], "caption_1": r["caption_1"],
                  "tag": r.get("tag", ""), "secondary_tag": "", "num_main_preds": 1,
                  "collapsed_tag": "Object"}
            for k in ("image_0", "image_1"):
                f = image_file(r[k])
                ex[k] = {"bytes": open(f, "rb").read(), "path": os.path.basename(f)}
            w.write(features.encode_example(ex))
        w.finalize()
    datasets.DatasetInfo(features=features).write_to_directory(folder)

    exp = load_safetensors(os.path.join(FX, "expected.safetensors"))
    manifest = json.load(open(os.path.join(FX, "manifest.json")))
    prompts = manifest["prompts"]
    index = {Image.open(os.path.join(FX, p)).convert("RGB").tobytes(): i
             for i, p in enumerate(manifest["images"])}
    want = json.load(open(os.path.join(FX, "selection", "expected.json")))

    def tokenizer(texts):
        return torch.tensor([prompts.index(t) for t in texts])

    def collate(batch):
        t = list(zip(*batch))
        return default_collate(t[0]), t[1]

    for name in ["tiny_RN", "tiny_ViT"]:
        img = torch.from_numpy(exp[f"{name}.image_features"].copy())
        txt = torch.from_numpy(exp[f"{name}.text_features"].copy())

        class Model:
            def encode_image(self, x):
                return x.reshape(x.shape[0], -1)

            def encode_text(self, t):
                return txt[t]

        ds = WinoGround.__new__(WinoGround)
        ds.ds = datasets.Dataset.from_file(path)
        # The decoded image (no file name) is known by its pixels.
        ds.transform = lambda im: img[index[im.convert("RGB").tobytes()]].reshape(1, 1, -1)
        m = image_caption_selection.evaluate(Model(), DataLoader(ds, batch_size=4, collate_fn=collate),
                                             tokenizer, "cpu", amp=False)
        theirs = want[name.replace("_", "-")]["winoground"]["metrics"]
        print(name, m, theirs)
        assert all(abs(m[k] - theirs[k]) < 1e-6 for k in theirs), (m, theirs)


if __name__ == "__main__":
    main()
