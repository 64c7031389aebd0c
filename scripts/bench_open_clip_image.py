#!/usr/bin/env python3
"""Image- (or text-) encoder throughput of an open_clip model in PyTorch (fp32, and bf16 under
torch.autocast on the CPU) against `pyramidclip bench --what image|text` (fp32 and bf16) on the
same checkpoint, batch and threads, in one run on one machine: the ratios for architectures
outside `scripts/compare_pytorch.py` (CoCa, the timm ConvNeXt towers, SigLIP).

    python3 scripts/bench_open_clip_image.py target/release/pyramidclip MODEL CHECKPOINT \
        [--what image|text] [--batch 8] [--threads 2] [--seconds 25] [--precisions fp32,bf16]

CHECKPOINT: an open_clip state dict of MODEL (e.g. written by scripts/clip_fullsize_check.py).
Text: ImageNet prompts through CLIP's tokenizer for CLIP towers; for SigLIP's and CLIPA's,
which compute every position whatever the ids, random ids of its context (ours: CLIP's ids
folded into its vocabulary, `bench`); for HF text towers (xlm-roberta-base-ViT-B-32, ...), ImageNet prompts
through the fixture's byte-level BPE (tests/fixtures/clip/hf-tokenizer; the hub's XLM-R
tokenizer is not downloaded here), their encoder built from the hub config's sizes
(clip_fullsize_check.local_hf_config). PyTorch's encoder computes all 77 positions under the
padding mask; ours up to the batch's last non-pad id (CLIP's ids folded into the vocabulary).
"""
import argparse
import json
import subprocess
import time

import os
import sys
import tempfile

import open_clip
import torch

sys.path.insert(0, os.path.dirname(__file__))


def torch_rate(encode, x, seconds, bf16):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        encode(x)
        t, n = time.time(), 0
        while time.time() - t < seconds:
            encode(x)
            n += x.shape[0]
    return n / (time.time() - t)


def prompts(model_name, n, ctx, vocab):
    """`n` ImageNet prompts as the model's tokenizer gives them (random ids for SigLIP)."""
    cfg = open_clip.get_model_config(model_name)
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
    texts = [OPENAI_IMAGENET_TEMPLATES[i % 80](IMAGENET_CLASSNAMES[i // 80]) for i in range(n)]
    if cfg["text_cfg"].get("hf_model_name"):
        from clip_fullsize_check import hf_tokenizer_dir
        return open_clip.tokenizer.HFTokenizer(hf_tokenizer_dir(model_name),
                                               context_length=ctx)(texts)
    if cfg["text_cfg"].get("hf_tokenizer_name"):
        return torch.randint(0, vocab, (n, ctx))
    return open_clip.get_tokenizer(model_name)(texts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("model")
    ap.add_argument("checkpoint")
    ap.add_argument("--what", choices=["image", "text"], default="image")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=25)
    ap.add_argument("--precisions", default="fp32,bf16",
                    help="fp32 only on a CPU without bf16 instructions (AVX2)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    hf_text = bool(open_clip.get_model_config(a.model)["text_cfg"].get("hf_model_name"))
    extra = {}
    if hf_text:
        from clip_fullsize_check import local_hf_config
        local_hf_config(a.model, tempfile.mkdtemp())
        extra["pretrained_hf"] = False
    model, _, _ = open_clip.create_model_and_transforms(a.model, pretrained=None, **extra)
    model.load_state_dict(torch.load(a.checkpoint))
    model.eval()
    if a.what == "image":
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        x, encode, key = torch.randn(a.batch, 3, size, size), model.encode_image, "images_per_s"
    else:
        text = model.text if hasattr(model, "text") else model
        ctx, vocab = text.context_length, text.vocab_size
        if hf_text:
            ctx = 77  # the tokenizer's (HFTextEncoder's context_length is the position table's)
        x, encode, key = prompts(a.model, a.batch, ctx, vocab), model.encode_text, "prompts_per_s"
    report = {"model": a.model, "what": a.what, "batch": a.batch, "threads": a.threads}
    for precision in a.precisions.split(","):
        theirs = torch_rate(encode, x, a.seconds, precision == "bf16")
        r = subprocess.run([a.binary, "bench", "--checkpoint", a.checkpoint, "--visual-model",
                            a.model, "--what", a.what, "--precision", precision,
                            "--batch-size", str(a.batch), "--threads", str(a.threads),
                            "--seconds", str(a.seconds), "--json"],
                           capture_output=True, text=True, check=True)
        ours = json.loads(r.stdout)
        report[precision] = {"pytorch_per_s": round(theirs, 2),
                             "ours_per_s": round(ours[key], 2),
                             "ratio": round(ours[key] / theirs, 2),
                             "ours_precision": ours["precision"], "cpu": ours["cpu_model"]}
        print(a.model, precision, report[precision], flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
