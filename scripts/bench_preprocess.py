"""Decode + preprocess throughput per core: pyramidclip against PIL + torchvision on the same
files, in one run. Defaults to synthetic 500x375 JPEGs (4:2:0, quality 90) written by
`pyramidclip dev synth`; pass image paths to use others.
    python3 scripts/bench_preprocess.py [--bin target/release/pyramidclip] [IMAGE...]
Needs Pillow and torchvision (dev-time only)."""
import argparse, json, os, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/pyramidclip")
ap.add_argument("--seconds", type=float, default=10)
ap.add_argument("--resolution", type=int, default=224)
ap.add_argument("images", nargs="*")
a = ap.parse_args()

import torch
torch.set_num_threads(1)
from PIL import Image
from torchvision import transforms as T

tmp = tempfile.mkdtemp()
files = a.images
if not files:
    subprocess.run([a.bin, "dev", "synth", tmp, "--images", "16", "--classes", "1"], check=True, capture_output=True)
    files = [l.strip() for l in open(os.path.join(tmp, "images.txt")) if l.strip()]
n = a.resolution
pipe = T.Compose([T.Resize(n, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(n), lambda im: im.convert("RGB"),
                  T.ToTensor(), T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
blobs = [open(f, "rb").read() for f in files]
import io
def one_pass():
    for b in blobs:
        pipe(Image.open(io.BytesIO(b)))
one_pass()
t, k = time.time(), 0
while k < 2 or time.time() - t < a.seconds:
    one_pass(); k += 1
pil = k * len(blobs) / (time.time() - t)
out = subprocess.run([a.bin, "bench", "--what", "preprocess", "--seconds", str(a.seconds), "--json", "--images", *files],
                     check=True, capture_output=True, text=True).stdout
ours = json.loads(out)["images_per_s_per_core"]
print(f"decode + preprocess, one core, {len(files)} files: pyramidclip {ours:.1f} images/s, "
      f"PIL + torchvision {pil:.1f} images/s, ratio {ours / pil:.2f}x")
