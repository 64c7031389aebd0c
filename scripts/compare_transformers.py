"""Side-by-side CPU throughput on a transformers CLIP folder: transformers' `CLIPModel`
(`get_image_features` / `get_text_features`, fp32, and bf16 under torch.autocast) against
`pyramidclip bench --checkpoint FOLDER` (fp32, and --precision bf16) on the same weights, same
threads, alternating, medians. The folder is a random model of a hub config written here
(`openai/clip-vit-base-patch32`'s by default). The text rows take the prompts `bench --what
text` takes, cut after the batch's longest as `padding=True` cuts them. That the two compute the same features on such
folders is what `scripts/hf_clip_fullsize_check.py` checks.

    /tmp/venv/bin/python scripts/compare_transformers.py [--bin target/release/pyramidclip]
        [--threads 2] [--batch 16] [--seconds 5] [--repeat 3] [--model HUB_ID]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import CLIPConfig, CLIPModel

sys.path.insert(0, os.path.dirname(__file__))
from hf_clip_fullsize_check import MODELS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rate(fn, seconds, per_call):
    with torch.no_grad():
        fn()
        t, n = time.time(), 0
        while n < 2 or time.time() - t < seconds:
            fn()
            n += 1
    return n * per_call / (time.time() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "pyramidclip"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", default="openai/clip-vit-base-patch32", choices=list(MODELS))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    text, vision, proj, act = MODELS[a.model]
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=dict(text, hidden_act=act),
                                 vision_config=dict(vision, hidden_act=act),
                                 projection_dim=proj)).eval()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        folder = os.path.join(d, "model")
        model.save_pretrained(folder)
        n = vision["image_size"]
        x = torch.randn(a.batch, 3, n, n)
        # The prompts `bench --what text` takes (the first class's first templates), as
        # transformers' tokenizer with padding=True gives them: cut after the batch's longest.
        import open_clip
        prompts = [t(open_clip.IMAGENET_CLASSNAMES[0])
                   for t in open_clip.OPENAI_IMAGENET_TEMPLATES[:a.batch]]
        ids = open_clip.get_tokenizer("ViT-B-32")(prompts)
        ids = ids[:, :int((ids == 49407).nonzero()[:, 1].max()) + 1]

        def ours(what, precision):
            out = subprocess.run([a.bin, "bench", "--checkpoint", folder, "--what", what,
                                  "--device", "cpu", "--batch-size", str(a.batch), "--seconds",
                                  str(a.seconds), "--threads", str(a.threads), "--precision",
                                  precision, "--json"], check=True, capture_output=True,
                                 text=True).stdout
            r = json.loads(out)
            return r["images_per_s" if what == "image" else "prompts_per_s"], r["precision"]

        for prec in ["fp32", "bf16"]:
            def cast(fn):
                if prec == "fp32":
                    return fn

                def run():
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return fn()
                return run
            for what, fn in [("image", lambda: model.get_image_features(pixel_values=x)),
                             ("text", lambda: model.get_text_features(input_ids=ids))]:
                theirs, mine, got = [], [], prec
                for _ in range(a.repeat):
                    theirs.append(rate(cast(fn), a.seconds, a.batch))
                    r, got = ours(what, prec)
                    mine.append(r)
                o, t = statistics.median(mine), statistics.median(theirs)
                unit = "images/s" if what == "image" else "prompts/s"
                label = f"{what} encoder, {prec}" + ("" if got == prec else f" [ours: {got}]")
                rows.append((f"{label} ({unit})", o, t))
    print(f"\n{a.model} (random weights), {a.threads} threads, batch {a.batch}, medians of "
          f"{a.repeat} alternating runs of {a.seconds:g} s; torch {torch.__version__}")
    print("| what | pyramidclip | transformers | ratio |\n| --- | --- | --- | --- |")
    for label, o, t in rows:
        print(f"| {label} | {o:.2f} | {t:.2f} | {o / t:.2f}x |")


if __name__ == "__main__":
    main()
