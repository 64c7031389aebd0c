#!/usr/bin/env python3
"""Image-encoder throughput of an open_clip model in PyTorch (fp32, and bf16 under
torch.autocast on the CPU) against `pyramidclip bench --what image` (fp32 and bf16) on the same
checkpoint, batch and threads, in one run on one machine: the ratios for architectures outside
`scripts/compare_pytorch.py` (CoCa, the timm ConvNeXt towers).

    python3 scripts/bench_open_clip_image.py target/release/pyramidclip MODEL CHECKPOINT \
        [--batch 8] [--threads 2] [--seconds 25]

CHECKPOINT: an open_clip state dict of MODEL (e.g. written by scripts/clip_fullsize_check.py).
"""
import argparse
import json
import subprocess
import time

import open_clip
import torch


def torch_rate(model, x, seconds, bf16):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model.encode_image(x)
        t, n = time.time(), 0
        while time.time() - t < seconds:
            model.encode_image(x)
            n += x.shape[0]
    return n / (time.time() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("model")
    ap.add_argument("checkpoint")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=25)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, _, _ = open_clip.create_model_and_transforms(a.model, pretrained=None)
    model.load_state_dict(torch.load(a.checkpoint))
    model.eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    x = torch.randn(a.batch, 3, size, size)
    report = {"model": a.model, "batch": a.batch, "threads": a.threads}
    for precision in ["fp32", "bf16"]:
        theirs = torch_rate(model, x, a.seconds, precision == "bf16")
        r = subprocess.run([a.binary, "bench", "--checkpoint", a.checkpoint, "--visual-model",
                            a.model, "--what", "image", "--precision", precision,
                            "--batch-size", str(a.batch), "--threads", str(a.threads),
                            "--seconds", str(a.seconds), "--json"],
                           capture_output=True, text=True, check=True)
        ours = json.loads(r.stdout)
        report[precision] = {"pytorch_images_per_s": round(theirs, 2),
                             "ours_images_per_s": round(ours["images_per_s"], 2),
                             "ratio": round(ours["images_per_s"] / theirs, 2),
                             "ours_precision": ours["precision"], "cpu": ours["cpu_model"]}
        print(a.model, precision, report[precision], flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
