#!/usr/bin/env python3
"""Dev-time check of every built-in PyramidCLIP architecture at full size: for each model a
random checkpoint (`pyramidclip dev random-checkpoint`) goes through `pyramidclip embed`
(4 fixture images, 3 prompts, raw features, fp32), and the features are compared per row with
compare_pytorch.py's PyTorch model, written from the reference document and checked against
the reference's own fixture features first.

    python3 scripts/pyramidclip_fullsize_check.py [--bin target/release/pyramidclip] [MODELS...]

Default models: RN50 RN101 RN50x4 RN50x16 ViT-B-32 ViT-B-16 ViT-L-14 ViT-L-14-336px (upstream's
RN50x64 is 512 wide, about 27 GB in fp32: too large for a 24 GB machine). Needs torch, numpy,
safetensors; about 2 minutes and 8 GB on 2 cores.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_pytorch as cp  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(cp.ROOT, "target", "release", "pyramidclip"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("models", nargs="*", default=["RN50", "RN101", "RN50x4", "RN50x16", "ViT-B-32",
                                                  "ViT-B-16", "ViT-L-14", "ViT-L-14-336px"])
    a = ap.parse_args()
    cp.torch.set_num_threads(a.threads)
    cp.parity_check()
    cfgs = cp.load_configs(os.path.join(cp.ROOT, "configs", "model_config.yml"))
    for m in a.models:
        t = time.time()
        with tempfile.TemporaryDirectory() as d:
            ck = os.path.join(d, m + ".safetensors")
            subprocess.run([a.bin, "dev", "random-checkpoint", "--visual-model", m, ck], check=True,
                           capture_output=True)
            cp.full_parity(a.bin, m, ck, cp.load_state(ck), cfgs[m], d)
        print(f"{m}: {time.time() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
