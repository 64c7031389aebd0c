#!/usr/bin/env python3
"""Zero-shot class vectors of a CLIP-family model: pyramidclip against open_clip on the same CPU
threads, timed the way CLIP_benchmark builds its classifier (per class: tokenize the 80 ImageNet
templates, `encode_text` them as one batch, normalise, average). Dev-time only.

    python3 scripts/compare_open_clip_text.py [--bin target/release/pyramidclip]
        [--models ViT-B-32 RN50] [--classes 20] [--threads 2] [--bf16] [--out DIR]

Weights: open_clip's `create_model(name, pretrained=None)` written as a state dict. Ours:
`pyramidclip embed --texts-file` over the same prompts (raw features), timed over all the
prompts minus a one-prompt run (model loading left out). open_clip runs the 77-position
context for every prompt; ours stops at the batch's last end-of-text position (CLIP's pooled
row does not depend on what follows under the causal mask), prompts taken in order of length.
Per-row cosine of our features against open_clip's fp32 ones is printed with the rates.
--bf16 adds open_clip under torch.autocast("cpu", bfloat16) against ours with --precision bf16.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import open_clip
import torch

sys.path.insert(0, os.path.dirname(__file__))
from retrieval_reference import load_safetensors  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def lines(path):
    return [x for x in open(path).read().splitlines() if x]


def ours(binary, ck, name, prompt_file, precision, threads):
    """Seconds for `embed --texts-file` and the features it wrote."""
    out = prompt_file + f".{precision}.safetensors"
    cmd = [binary, "embed", "--checkpoint", ck, "--visual-model", name, "--texts-file",
           prompt_file, "--raw", "--precision", precision, "--out", out, "--batch-size", "128"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return time.perf_counter() - t, np.asarray(load_safetensors(out)["text_features"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "pyramidclip"))
    ap.add_argument("--models", nargs="+", default=["ViT-B-32", "RN50"])
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = a.out or tempfile.mkdtemp()
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(a.threads)
    classes = lines(os.path.join(ROOT, "configs", "data", "imagenet_classnames.txt"))[:a.classes]
    templates = lines(os.path.join(ROOT, "configs", "data", "imagenet_templates.txt"))
    prompts = [t.replace("{}", c) for c in classes for t in templates]
    prompt_file = os.path.join(out, "prompts.txt")
    open(prompt_file, "w").write("\n".join(prompts) + "\n")
    one_file = os.path.join(out, "one.txt")
    open(one_file, "w").write(prompts[0] + "\n")
    tok = open_clip.get_tokenizer("ViT-B-32")
    precisions = ["fp32", "bf16"] if a.bf16 else ["fp32"]
    print(f"{len(prompts)} prompts ({len(classes)} classes x {len(templates)} templates), "
          f"{a.threads} threads")
    for name in a.models:
        torch.manual_seed(0)
        model = open_clip.create_model(name, pretrained=None).eval()
        ck = os.path.join(out, f"{name}.bin")
        torch.save(model.state_dict(), ck)
        ref = None
        for precision in precisions:
            feats, classifier = [], []
            ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
            t = time.perf_counter()
            with torch.no_grad(), ctx:
                for i in range(len(classes)):
                    batch = prompts[i * len(templates):(i + 1) * len(templates)]
                    f = model.encode_text(tok(batch)).float()
                    feats.append(f)
                    classifier.append(torch.nn.functional.normalize(f, dim=-1).mean(0))
            torch_s = time.perf_counter() - t
            feats = torch.cat(feats).numpy()
            if ref is None:
                ref = feats
            t_all, mine = ours(a.bin, ck, name, prompt_file, precision, a.threads)
            t_one, _ = ours(a.bin, ck, name, one_file, precision, a.threads)
            ours_s = t_all - t_one
            unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
            cos = (unit(mine.astype(np.float64)) * unit(ref.astype(np.float64))).sum(1)
            n = len(prompts)
            print(f"{name} {precision}: open_clip {n / torch_s:.1f} prompts/s, ours "
                  f"{(n - 1) / ours_s:.1f} prompts/s ({torch_s / ours_s:.2f}x); worst row cosine "
                  f"vs open_clip fp32 {cos.min():.7f}", flush=True)


if __name__ == "__main__":
    main()
