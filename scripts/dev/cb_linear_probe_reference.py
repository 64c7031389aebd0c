"""Dev-time: writes tests/fixtures/probe/adamw.json, CLIP_benchmark's own linear probe
(`clip_benchmark.metrics.linear_probe.evaluate`, imported from a CLIP_benchmark checkout and
run unchanged on the CPU with amp off) on seeded synthetic features, and the torch random
draws it depends on.

- `rng`: per seed, `torch.Generator().manual_seed(seed)`'s first outputs of `randperm(10)`,
  `randperm(1000)` (head) and an int64 `random_()`, and `nn.Linear(7, 3)`'s initial weights
  after `torch.manual_seed(seed)`.
- `cases`: features (already L2-normalised, as CLIP_benchmark's Featurizer saves them) for
  train/val/test, and for each configuration CLIP_benchmark's metrics, the weight-decay trials
  (`train` + `infer` on val, in order), the final weights and every test image's logits in
  dataset order.

CLIP_benchmark draws its training order with `torch.randperm(len(train))` from the global
generator; this script seeds it with `torch.manual_seed(seed)` right before, the state a
fresh process with that seed has.

    /tmp/venv/bin/python scripts/dev/cb_linear_probe_reference.py /path/to/CLIP_benchmark
"""
import json
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
# CLIP_benchmark's train() moves the model to CUDA and wraps it in DataParallel; on a CPU-only
# machine `.cuda()` and `.to('cuda')` stay on the CPU so its own code runs (DataParallel without CUDA is a
# plain wrapper).
torch.nn.Module.cuda = lambda self, *a, **k: self
torch.Tensor.cuda = lambda self, *a, **k: self
_to = torch.Tensor.to
torch.Tensor.to = lambda self, *a, **k: _to(self, *("cpu" if x == "cuda" else x for x in a), **k)
from clip_benchmark.metrics import linear_probe as lp  # noqa: E402


def accuracy(output, target, topk=(1,)):
    # CLIP_benchmark's `accuracy`, its count taken by `.item()`: its `float()` of a
    # one-element array fails under NumPy 2.
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


lp.accuracy = accuracy

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "probe",
                   "adamw.json")


def rng_cases():
    out = []
    for seed in (0, 1, 2**40 + 5):
        g = torch.Generator().manual_seed(seed)
        p10 = torch.randperm(10, generator=g).tolist()
        p1000 = torch.randperm(1000, generator=g).tolist()[:20]
        r = int(torch.empty((), dtype=torch.int64).random_(generator=g).item())
        torch.manual_seed(seed)
        lin = torch.nn.Linear(7, 3)
        out.append({"seed": seed, "randperm10": p10, "randperm1000_head": p1000,
                    "random_i64": str(r), "linear_weight": lin.weight.flatten().tolist(),
                    "linear_bias": lin.bias.tolist()})
    return out


def features(rs, n_per_class, centres, spread):
    xs, ys = [], []
    for c, n in enumerate(n_per_class):
        x = centres[c] + spread * rs.standard_normal((n, centres.shape[1]))
        xs.append(x)
        ys += [c] * n
    x = np.concatenate(xs).astype(np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    order = rs.permutation(len(ys))
    return x[order], np.array(ys, dtype=np.int64)[order]


def run(split, fewshot_k, use_val, seed, lr, epochs, batch_size):
    trials, models = [], []
    train, infer = lp.train, lp.infer

    def train_rec(dl, i, o, wd, *a, **k):
        m = train(dl, i, o, wd, *a, **k)
        models.append((wd, m))
        return m

    def infer_rec(model, dl, *a, **k):
        logits, target = infer(model, dl, *a, **k)
        acc1 = (logits.argmax(1) == target).float().mean().item()
        trials.append(acc1)
        return logits, target

    lp.train, lp.infer = train_rec, infer_rec
    try:
        with tempfile.TemporaryDirectory() as root:
            d = os.path.join(root, "m")
            os.mkdir(d)
            for s in ("train", "val", "test"):
                torch.save(torch.from_numpy(split[s][0]), os.path.join(d, f"features_{s}.pt"))
                torch.save(torch.from_numpy(split[s][1]), os.path.join(d, f"targets_{s}.pt"))
            torch.manual_seed(seed)
            metrics = lp.evaluate(None, None, None, fewshot_k, batch_size, 0, lr, epochs, "m",
                                  seed, root, "cuda", val_dataloader=object() if use_val else None,
                                  normalize=True, amp=False)
    finally:
        lp.train, lp.infer = train, infer
    wd, final = models[-1]
    with torch.no_grad():
        logits = final(torch.from_numpy(split["test"][0]))
    lin = final.module
    # The last infer is the test set's; the others are the sweep's, one per train.
    sweep = [{"weight_decay": w, "val_acc1": a} for (w, _), a in zip(models[:-1], trials[:-1])]
    # JSON has no NaN: CLIP_benchmark's missing top-5 (fewer than 5 classes) is null.
    metrics = {k: None if isinstance(v, float) and v != v else v for k, v in metrics.items()}
    return {"fewshot_k": fewshot_k, "use_val": use_val, "seed": seed, "lr": lr,
            "epochs": epochs, "batch_size": batch_size, "metrics": metrics,
            "trials": sweep, "weight": lin.weight.flatten().tolist(),
            "bias": lin.bias.tolist(), "test_logits": logits.tolist()}


def image_cases():
    """CLIP_benchmark's probe of the fixture images' reference features (the split and classes
    of tests/fixtures/probe/expected.json), the training and test images each in
    ImageFolder's order (class, then file name; the GIF travels as `.png`)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from retrieval_reference import load_safetensors
    fx = os.path.join(os.path.dirname(OUT), "..")
    layout = json.load(open(os.path.join(fx, "probe", "expected.json")))["layout"]
    manifest = json.load(open(os.path.join(fx, "manifest.json")))["images"]
    exp = load_safetensors(os.path.join(fx, "expected.safetensors"))
    classes = layout["classes"]

    def folder_name(f):
        base = os.path.basename(f)
        return base[:-4] + ".png" if base.endswith(".gif") else base

    out = []
    for model in ["tiny_RN", "tiny_ViT"]:
        raw = torch.from_numpy(np.asarray(exp[f"{model}.image_features_raw"], dtype=np.float32))
        feats = torch.nn.functional.normalize(raw, dim=-1).numpy()
        split = {}
        for s in ("train", "test"):
            ims = [im for im in layout["images"] if im["split"] == s]
            ims.sort(key=lambda im: (im["class"], folder_name(im["file"])))
            rows = [manifest.index(im["file"]) for im in ims]
            y = np.array([classes.index(im["class"]) for im in ims], dtype=np.int64)
            split[s] = (feats[rows], y, [folder_name(im["file"]) for im in ims])
        split["val"] = split["train"]
        for fewshot_k, bs in ((-1, 64), (2, 4)):
            r = run({k: v[:2] for k, v in split.items()}, fewshot_k, False, 0, 0.1, 10, bs)
            pred = np.asarray(r["test_logits"]).argmax(1)
            out.append({"model": model.replace("_", "-"), "fewshot_k": fewshot_k,
                        "batch_size": bs, "metrics": r["metrics"],
                        "predictions": dict(zip(split["test"][2], map(int, pred)))})
    return out


def main():
    rs = np.random.RandomState(20261205)
    dim, classes = 16, 6
    centres = rs.standard_normal((classes, dim))
    split = {
        "train": features(rs, [40, 35, 30, 25, 30, 20], centres, 1.8),
        "val": features(rs, [10, 9, 8, 7, 8, 6], centres, 1.8),
        "test": features(rs, [20, 20, 20, 15, 15, 10], centres, 1.8),
    }
    cases = [
        run(split, -1, True, 0, 0.1, 10, 64),
        run(split, 5, True, 3, 0.1, 4, 16),
        run(split, -1, False, 1, 0.05, 3, 32),
    ]
    out = {"torch": torch.__version__, "dim": dim, "classes": classes,
           "features": {s: {"x": v[0].flatten().tolist(), "y": v[1].tolist()}
                        for s, v in split.items()},
           "rng": rng_cases(), "cases": cases, "images": image_cases()}
    with open(OUT, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
