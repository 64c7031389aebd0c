"""PCAM reading throughput: `pyramidclip eval --test-dataset pcam` (decode-bound: the tiny
fixture model) against torchvision's `PCAM` (h5py) through a DataLoader with CLIP_benchmark's
transform, data only, in one run on the same files. PyTorch's figure leaves out the model, so
the ratio understates ours.

    python3 scripts/bench_pcam.py [--bin target/release/pyramidclip] [--root DIR] [--make 8192]
        [--workers 2] [--splits test val]
--make N writes PCAM-shaped files of N synthetic 96 x 96 images under a temporary root: `test`
contiguous (as the released files), `val` chunked per image with gzip (h5py, HDF5 1.8 format).
Needs torch, torchvision, h5py (dev-time only)."""
import argparse, json, os, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/pyramidclip")
ap.add_argument("--root")
ap.add_argument("--make", type=int, default=8192)
ap.add_argument("--workers", type=int, default=2)
ap.add_argument("--splits", nargs="+", default=["test", "val"])
a = ap.parse_args()

import h5py
import numpy as np
import torch
from torchvision import datasets, transforms as T

fixtures = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
root = a.root
if root is None:
    root = tempfile.mkdtemp()
    os.makedirs(os.path.join(root, "pcam"))
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    base = ((xx[None, :, :, None] * 3 + yy[None, :, :, None] * 5 + np.arange(3) * 60) % 256).astype(np.uint8)
    x = base + g.integers(0, 40, (a.make, 96, 96, 3), dtype=np.uint8)
    y = g.integers(0, 2, (a.make, 1, 1, 1)).astype(np.uint8)
    for stem, kw in (("test", {}), ("valid", {"chunks": (1, 96, 96, 3), "compression": "gzip"})):
        for name, data, k in (("x", x, kw), ("y", y, {})):
            with h5py.File(os.path.join(root, "pcam", f"camelyonpatch_level_2_split_{stem}_{name}.h5"), "w") as f:
                f.create_dataset(name, data=data, **k)

pipe = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                  lambda im: im.convert("RGB"), T.ToTensor(),
                  T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
torch.set_num_threads(1)
rows = []
for split in a.splits:
    ds = datasets.PCAM(root, split=split, transform=pipe)
    dl = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=a.workers)
    t, n = time.time(), 0
    for xb, _ in dl:
        n += len(xb)
    theirs = n / (time.time() - t)
    out = os.path.join(tempfile.mkdtemp(), "r.json")
    subprocess.run([a.bin, "eval", "--checkpoint", os.path.join(fixtures, "tiny-RN.pth.tar"),
                    "--model-config", os.path.join(fixtures, "tiny-models.yml"), "--test-dataset", "pcam",
                    "--split", split, "--test-data-path", root, "--templates", "dataset", "--no-text-cache",
                    "-q", "--output", out], check=True)
    r = json.load(open(out))
    assert r["num_images"] == n, (r["num_images"], n)
    rows.append((split, n, theirs, r["images_per_s"]))
print(f"{'split':6} {'images':>7} {'torchvision+h5py (data only) img/s':>36} {'pyramidclip eval img/s':>23} {'ratio':>6}")
for split, n, theirs, ours in rows:
    print(f"{split:6} {n:7} {theirs:36.1f} {ours:23.1f} {ours / theirs:6.2f}")
