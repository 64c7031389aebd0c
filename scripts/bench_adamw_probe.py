#!/usr/bin/env python3
"""Benchmark: `linear-probe --fit adamw`'s training against CLIP_benchmark's own `train()`
(clip_benchmark/metrics/linear_probe.py, run on the CPU with amp off) on the same seeded
synthetic features, same machine, same run, the same number of threads.

Both train one `nn.Linear` for --epochs passes of batches of 64 with AdamW, the same seed and
the same rows in the same order, so besides the time the test predictions are compared.

    /tmp/venv/bin/python scripts/bench_adamw_probe.py /path/to/CLIP_benchmark \\
        [--bin target/release/pyramidclip] [--n 50000] [--dim 512] [--classes 100] [--threads 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from safetensors.numpy import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cb_src")
    ap.add_argument("--bin", default="target/release/pyramidclip")
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spread", type=float, default=12.0)
    a = ap.parse_args()

    sys.path.insert(0, a.cb_src)
    torch.nn.Module.cuda = lambda self, *x, **k: self
    torch.Tensor.cuda = lambda self, *x, **k: self
    from clip_benchmark.metrics import linear_probe as lp

    torch.set_num_threads(a.threads)
    rs = np.random.RandomState(0)
    centres = rs.standard_normal((a.classes, a.dim)).astype(np.float32)

    def make(n):
        y = rs.randint(0, a.classes, size=n)
        x = (centres[y] + a.spread * rs.standard_normal((n, a.dim))).astype(np.float32)
        return x, y.astype(np.int64)

    (xtr, ytr), (xte, yte) = make(a.n), make(a.test)
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "f.safetensors")
        save_file({"train_x": xtr, "train_y": ytr, "test_x": xte, "test_y": yte}, f)
        env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
        t = time.time()
        out = subprocess.run([a.bin, "dev", "probe-fit", f, "--fit", "adamw", "--epochs",
                              str(a.epochs), "--weight-decay", str(a.weight_decay)],
                             check=True, capture_output=True, env=env)
        wall = time.time() - t
        ours = json.loads(out.stdout)

    norm = torch.nn.functional.normalize
    xt, xe = norm(torch.from_numpy(xtr), dim=-1), norm(torch.from_numpy(xte), dim=-1)
    loader = torch.utils.data.DataLoader(lp.FeatureDataset(xt, torch.from_numpy(ytr)),
                                         batch_size=64, shuffle=True, num_workers=0)
    t = time.time()
    model = lp.train(loader, a.dim, a.classes, a.weight_decay, 0.1, a.epochs, False, "cpu", 0)
    torch_s = time.time() - t
    with torch.no_grad():
        theirs = model(xe).argmax(1).numpy()
    pred = np.array(ours["predictions"])
    print(f"{a.n} x {a.dim} features, {a.classes} classes, {a.epochs} epochs, batch 64, "
          f"{a.threads} threads (torch {torch.__version__})")
    print(f"  CLIP_benchmark train() in PyTorch: {torch_s:.2f} s")
    print(f"  pyramidclip --fit adamw: {ours['seconds']:.2f} s (process {wall:.2f} s)")
    print(f"  ratio {torch_s / ours['seconds']:.2f}x; test predictions equal on "
          f"{100 * np.mean(pred == theirs):.2f}%, top-1 {100 * ours['acc1']:.2f} vs "
          f"{100 * np.mean(theirs == yte):.2f}")


if __name__ == "__main__":
    main()
