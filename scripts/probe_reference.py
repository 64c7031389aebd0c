#!/usr/bin/env python3
"""Dev-time: scikit-learn's answers for the linear-probe tests (committed under
tests/fixtures/probe), from the reference code's own raw image features
(tests/fixtures/expected.safetensors) and from a seeded synthetic problem.

    python3 scripts/probe_reference.py   # needs numpy and scikit-learn
"""
import json
import os
import sys

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(__file__))
from retrieval_reference import load_safetensors  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
OUT = os.path.join(FX, "probe")


def klass(name):
    base = os.path.basename(name)
    if base.startswith("blobs"):
        return "blobs"
    return "shapes_jpeg" if base.endswith(".jpg") else "shapes_other"


def fit(x, y, c, normalize):
    x = x.astype(np.float64)
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    clf = LogisticRegression(random_state=0, C=c, max_iter=1000)
    clf.fit(x, y)
    return clf, x


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = json.load(open(os.path.join(FX, "manifest.json")))
    exp = load_safetensors(os.path.join(FX, "expected.safetensors"))
    images = manifest["images"]
    classes = sorted({klass(p) for p in images})
    seen = {c: 0 for c in classes}
    split = []
    for p in images:
        c = klass(p)
        split.append("train" if seen[c] % 2 == 0 else "test")
        seen[c] += 1
    cases = []
    for model in ["tiny_RN", "tiny_ViT"]:
        feats = exp[f"{model}.image_features_raw"]
        tr = [i for i, s in enumerate(split) if s == "train"]
        te = [i for i, s in enumerate(split) if s == "test"]
        y = np.array([classes.index(klass(p)) for p in images])
        for c, normalize in [(0.316, False), (10.0, True)]:
            clf, _ = fit(feats[tr], y[tr], c, normalize)
            xt = feats[te].astype(np.float64)
            if normalize:
                xt = xt / np.linalg.norm(xt, axis=1, keepdims=True)
            pred = clf.predict(xt)
            cases.append({
                "model": model.replace("_", "-"), "C": c, "normalize": normalize,
                "predictions": {os.path.basename(images[i]): int(p) for i, p in zip(te, pred)},
                "n_iter": int(clf.n_iter_[0]),
            })
    layout = {"classes": classes,
              "images": [{"file": p, "class": klass(p), "split": s} for p, s in zip(images, split)]}
    # A larger seeded problem for the solver itself: four overlapping Gaussian classes.
    rng = np.random.default_rng(0)
    n, d, k = 240, 12, 4
    centers = rng.normal(size=(k, d)) * 1.2
    y = rng.integers(0, k, size=n)
    x = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    synth = {"dim": d, "classes": k, "x": x.ravel().tolist(), "y": y.tolist(), "fits": []}
    for c in [0.01, 0.316, 100.0]:
        clf, xx = fit(x, y, c, False)
        z = xx @ clf.coef_.T + clf.intercept_
        z = z - z.max(axis=1, keepdims=True)
        ce = -(z[np.arange(n), y] - np.log(np.exp(z).sum(axis=1))).mean()
        loss = ce + 0.5 / (c * n) * (clf.coef_ ** 2).sum()
        # The optimum itself (a far tighter tolerance), to tell solver slack from error.
        opt = LogisticRegression(C=c, max_iter=100000, tol=1e-12).fit(xx, y)
        synth["fits"].append({"C": c, "coef": clf.coef_.ravel().tolist(),
                              "opt_coef": opt.coef_.ravel().tolist(),
                              "opt_intercept": opt.intercept_.tolist(),
                              "intercept": clf.intercept_.tolist(), "loss": float(loss),
                              "predictions": clf.predict(xx).tolist(), "n_iter": int(clf.n_iter_[0])})
    # Subsets of the same problem: two classes (scikit-learn fits one binomial weight vector),
    # and three of the four (it models only the classes the training labels hold).
    synth["subsets"] = []
    for keep, c in [([0, 2], 0.316), ([0, 2], 100.0), ([0, 1, 3], 0.316)]:
        rows = np.isin(y, keep)
        clf, xx = fit(x[rows], y[rows], c, False)
        synth["subsets"].append({"classes": keep, "C": c, "coef": clf.coef_.ravel().tolist(),
                                 "intercept": clf.intercept_.tolist(),
                                 "predictions": clf.predict(xx).tolist(),
                                 "n_iter": int(clf.n_iter_[0])})
    out = {"sklearn": sklearn.__version__, "layout": layout, "cases": cases, "synthetic": synth}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
