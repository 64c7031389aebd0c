#!/usr/bin/env python3
"""Dev-time: scikit-learn's answers for the linear-probe tests (committed under
tests/fixtures/probe), from the reference code's own raw image features
(tests/fixtures/expected.safetensors) and from a seeded synthetic problem.

The same images in webdataset shards are decoded as webdataset decodes them,
`convert('RGB')` before the resize (palette images then resize bicubically, RGBA/LA/CMYK
without their fourth channel): their features come from compare_pytorch.py's PyTorch model
of the reference (checked against the reference's fixture features first) on pixels PIL
and torchvision make that way, and each case's `wds_predictions` from them. The same code
run on the images as opened reproduces the reference's own pixels first.

    python3 scripts/probe_reference.py   # needs numpy, scikit-learn, torch, torchvision, PIL
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


def convert_first_features(images):
    """Raw image features of both tiny models with each image converted to RGB before the
    resize (what webdataset's decoders hand the transforms)."""
    import torch
    from PIL import Image
    from torchvision import transforms as T
    import compare_pytorch as cp

    exp = load_safetensors(os.path.join(FX, "expected.safetensors"))
    crop = T.Compose([T.Resize(64, interpolation=T.InterpolationMode.BICUBIC),
                      T.CenterCrop(64), lambda im: im.convert("RGB"), T.PILToTensor()])
    own = np.stack([crop(Image.open(os.path.join(FX, p))).numpy() for p in images])
    want = cp.load_file(os.path.join(FX, "expected.safetensors"))["pixels_64_u8"]
    same = [i for i, p in enumerate(images) if not p.endswith(".webp")]
    assert (own[same] == want[same]).all(), "PIL/torchvision do not give the reference's pixels"
    first = np.stack([crop(Image.open(os.path.join(FX, p)).convert("RGB")).numpy()
                      for p in images])
    changed = [os.path.basename(p) for p, a, b in zip(images, own, first) if (a != b).any()]
    mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32).reshape(1, 3, 1, 1)
    px = torch.from_numpy((first.astype(np.float32) / 255.0 - mean) / std)
    cp.parity_check()
    cfgs = cp.load_configs(os.path.join(FX, "tiny-models.yml"))
    out = {}
    for name in ["tiny-RN", "tiny-ViT"]:
        sd = cp.load_state(os.path.join(FX, name + ".pth.tar"))
        with torch.no_grad():
            out[name.replace("-", "_")] = cp.ref_model(sd, cfgs[name]).visual(px).numpy()
        assert np.allclose(exp[f"{name.replace('-', '_')}.image_features_raw"][[
            i for i, p in enumerate(images) if os.path.basename(p) not in changed]],
            out[name.replace("-", "_")][[i for i, p in enumerate(images)
                                         if os.path.basename(p) not in changed]], atol=1e-4)
    return out, changed


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
    wds_feats, changed = convert_first_features(images)
    for model in ["tiny_RN", "tiny_ViT"]:
        tr = [i for i, s in enumerate(split) if s == "train"]
        te = [i for i, s in enumerate(split) if s == "test"]
        y = np.array([classes.index(klass(p)) for p in images])
        for c, normalize in [(0.316, False), (10.0, True)]:
            case = {"model": model.replace("_", "-"), "C": c, "normalize": normalize}
            for key, feats in [("predictions", exp[f"{model}.image_features_raw"]),
                               ("wds_predictions", wds_feats[model])]:
                clf, _ = fit(feats[tr], y[tr], c, normalize)
                xt = feats[te].astype(np.float64)
                if normalize:
                    xt = xt / np.linalg.norm(xt, axis=1, keepdims=True)
                pred = clf.predict(xt)
                case[key] = {os.path.basename(images[i]): int(p) for i, p in zip(te, pred)}
                if key == "predictions":
                    case["n_iter"] = int(clf.n_iter_[0])
            cases.append(case)
    layout = {"classes": classes,
              "images": [{"file": p, "class": klass(p), "split": s} for p, s in zip(images, split)],
              "converted_first_differ": changed}
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
