#!/usr/bin/env python3
"""Dev-time check of transformers-layout CLIP folders at full size: for each hub model's
config (written here, not downloaded), a random `CLIPModel` is saved with `save_pretrained`
(and a second time with `hidden_act` taken out of its config.json where it is QuickGELU, as
older configs leave the default out), then `pyramidclip embed --checkpoint FOLDER` runs on the
fixture images and prompts with each engine, and the features are compared per row with
transformers' `get_image_features` / `get_text_features` (fp32; pixels from open_clip's
OpenAI transform, ids from open_clip's tokenizer with the padding masked). It also builds
transformers' `CLIPTokenizer` from open_clip's vocabulary and merges and compares its ids with
`pyramidclip tokenize` on the fixture prompts and some harder ones.

    /tmp/venv/bin/python scripts/hf_clip_fullsize_check.py target/release/pyramidclip [OUT_DIR]
"""
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import open_clip
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

sys.path.insert(0, os.path.dirname(__file__))
from retrieval_reference import load_safetensors  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")

# The towers' fields of the hub configs (openai/clip-vit-base-patch32, -base-patch16,
# -large-patch14, laion/CLIP-ViT-B-32-laion2B-s34B-b79K).
MODELS = {
    "openai/clip-vit-base-patch32": (
        dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12),
        dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
             num_hidden_layers=12, image_size=224, patch_size=32), 512, "quick_gelu"),
    "openai/clip-vit-base-patch16": (
        dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12),
        dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
             num_hidden_layers=12, image_size=224, patch_size=16), 512, "quick_gelu"),
    "openai/clip-vit-large-patch14": (
        dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
        dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
             num_hidden_layers=24, image_size=224, patch_size=14), 768, "quick_gelu"),
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K": (
        dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12),
        dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
             num_hidden_layers=12, image_size=224, patch_size=32), 512, "gelu"),
}

HARD_PROMPTS = ["A Photo of THE   big\tdog.", "caf\u00e9 na\u00efve r\u00e9sum\u00e9",
                "\u5bff\u53f8 and \u30e9\u30fc\u30e1\u30f3", "it's a test-case: (1,234.5)!",
                "emoji \U0001F600 here", "", "x" * 400, "&amp; html &lt;b&gt;"]


def hf_tokenizer(out):
    """transformers' CLIPTokenizer over open_clip's vocabulary and merges."""
    tok = open_clip.tokenizer.SimpleTokenizer()
    d = os.path.join(out, "hf-tokenizer")
    os.makedirs(d, exist_ok=True)
    # open_clip names the two special tokens differently.
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump({names.get(k, k): v for k, v in tok.encoder.items()}, f)
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(path).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"))


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main():
    binary = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images = [os.path.join(FX, p) for p in man["images"]]
    prompts = man["prompts"]
    ot = open_clip.get_tokenizer("ViT-B-32")

    hf_tok = hf_tokenizer(out)
    texts = prompts + HARD_PROMPTS
    ours = subprocess.run([binary, "tokenize", *texts], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    same = 0
    for t, line in zip(texts, ours):
        ids = hf_tok(t, padding="max_length", truncation=True, max_length=77)["input_ids"]
        ids = [i if i != 49407 or k == ids.index(49407) else 0 for k, i in enumerate(ids)]
        mine = json.loads(line)
        same += ids == mine
        if ids != mine:
            print(f"tokens differ on {t!r}:\n  transformers {ids[:20]}\n  ours         {mine[:20]}")
    print(f"tokenizer: {same}/{len(texts)} prompts with identical ids to transformers' CLIPTokenizer")

    if os.environ.get("TOKENIZER_ONLY"):
        return
    torch.manual_seed(0)
    worst = 1.0
    for name, (text, vision, proj, act) in MODELS.items():
        cfg = CLIPConfig(text_config=dict(text, hidden_act=act),
                         vision_config=dict(vision, hidden_act=act), projection_dim=proj)
        model = CLIPModel(cfg).eval()
        variants = [("", False)] + ([("-default-act", True)] if act == "quick_gelu" else [])
        pre = open_clip.image_transform(vision["image_size"], is_train=False)
        with torch.no_grad():
            x = torch.stack([pre(Image.open(p)) for p in images])
            ids = ot(prompts)
            want_img = model.get_image_features(pixel_values=x).pooler_output.numpy()
            want_txt = model.get_text_features(
                input_ids=ids, attention_mask=(ids != 0).long()).pooler_output.numpy()
        for suffix, strip in variants:
            d = os.path.join(out, name.replace("/", "--") + suffix)
            model.save_pretrained(d)
            if strip:
                c = json.load(open(os.path.join(d, "config.json")))
                for t in ("text_config", "vision_config"):
                    c[t].pop("hidden_act", None)
                json.dump(c, open(os.path.join(d, "config.json"), "w"), indent=2)
            for engine in ("native", "candle"):
                f = os.path.join(out, "features.safetensors")
                r = subprocess.run([binary, "embed", "--checkpoint", d, "--engine", engine,
                                    "--raw", "--out", f, "--images", *images, "--text",
                                    *prompts], capture_output=True, text=True)
                if r.returncode != 0:
                    print(f"{name}{suffix} {engine}: FAILED\n{r.stderr}")
                    worst = 0.0
                    continue
                loaded = [ln for ln in r.stderr.splitlines() if ln.startswith("loaded")]
                got = load_safetensors(f)
                ci = cosines(got["image_features"], want_img).min()
                ct = cosines(got["text_features"], want_txt).min()
                worst = min(worst, ci, ct)
                print(f"{name}{suffix} {engine}: worst row cosine image {ci:.7f} text {ct:.7f}"
                      f" | {loaded[0] if loaded else ''}")
        del model
    print(f"worst row cosine over all: {worst:.7f}")


if __name__ == "__main__":
    main()
