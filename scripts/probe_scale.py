#!/usr/bin/env python3
"""The linear probe at a real dataset's size: our L-BFGS fit against scikit-learn's
LogisticRegression(lbfgs) on the same synthetic features, in one run on this machine.

Features are a Gaussian mixture shaped like raw CLIP image features (class means plus noise, norms
around 10); the sizes default to CIFAR-100's (50,000 train / 10,000 test, 100 classes, 512 dims).
Prints, per C: both fits' seconds, iterations, objective value, test top-1, and the share of test
predictions that agree. Needs numpy, safetensors and scikit-learn; the binary is
target/release/pyramidclip unless --bin.

    python3 scripts/probe_scale.py [--train 50000 --test 10000 --classes 100 --dim 512] [--c 0.316 3.16]
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
from safetensors.numpy import save_file
from sklearn.linear_model import LogisticRegression


def objective(clf, x, y, c):
    if clf.coef_.shape[0] == 1:
        # Two classes: scikit-learn's binomial loss on the second class.
        z = x @ clf.coef_[0] + clf.intercept_[0]
        t = (y == clf.classes_[1]).astype(np.float64)
        return (np.logaddexp(0, z) - t * z).mean() + 0.5 / (c * len(y)) * (clf.coef_ ** 2).sum()
    z = x @ clf.coef_.T + clf.intercept_
    z -= z.max(axis=1, keepdims=True)
    ce = -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean()
    return ce + 0.5 / (c * len(y)) * (clf.coef_ ** 2).sum()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=50000)
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--c", type=float, nargs="+", default=[0.316])
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--normalize", action="store_true", help="both fit L2-normalised rows (float64, as the CLIP example's callers do)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spread", type=float, default=0.04, help="class means' spread per dim (noise is 0.45)")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "pyramidclip"))
    a = ap.parse_args()

    rng = np.random.default_rng(0)
    means = rng.normal(0, a.spread, (a.classes, a.dim))
    def draw(n):
        y = rng.integers(0, a.classes, n)
        x = means[y] + rng.normal(0, 0.45, (n, a.dim))
        return x.astype(np.float32), y.astype(np.int64)
    trx, tr_y = draw(a.train)
    tex, te_y = draw(a.test)
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads),
               OPENBLAS_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "f.safetensors")
        save_file({"train_x": trx, "train_y": tr_y, "test_x": tex, "test_y": te_y}, f)
        print(f"{a.train} train / {a.test} test, {a.classes} classes, {a.dim} dims, {a.threads} threads")
        for c in a.c:
            out = subprocess.run([a.bin, "dev", "probe-fit", f, "--c", str(c), "--max-iter", str(a.max_iter)]
                                 + (["--normalize"] if a.normalize else []),
                                 env=env, check=True, capture_output=True, text=True).stdout
            ours = json.loads(out)
            x64, t64 = trx.astype(np.float64), tex.astype(np.float64)
            if a.normalize:
                x64 = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
                t64 = t64 / np.linalg.norm(t64, axis=1, keepdims=True)
            t0 = time.perf_counter()
            clf = LogisticRegression(C=c, max_iter=a.max_iter).fit(x64, tr_y)
            sk_s = time.perf_counter() - t0
            sk_pred = clf.predict(t64)
            agree = float((np.array(ours["predictions"]) == sk_pred).mean())
            sk_loss = objective(clf, x64, tr_y, c)
            print(json.dumps({
                "C": c,
                "ours_s": round(ours["seconds"], 2), "sklearn_s": round(sk_s, 2),
                "speedup": round(sk_s / ours["seconds"], 2),
                "ours_iter": ours["iterations"], "sklearn_iter": int(clf.n_iter_[0]),
                "ours_loss": ours["loss"], "sklearn_loss": float(sk_loss),
                "ours_acc1": ours["acc1"], "sklearn_acc1": float((sk_pred == te_y).mean()),
                "agree": agree,
            }))


if __name__ == "__main__":
    main()
