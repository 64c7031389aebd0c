#!/usr/bin/env python3
"""Dev-time: `pyramidclip retrieval --pairing rows` against open_clip's own validation of a CSV
(`open_clip_train`: `get_csv_dataset` reads and batches the rows, `evaluate` computes
`clip_val_loss` and `get_clip_metrics`), end to end on full-size models with open_clip's random
weights (`create_model(name, pretrained=None)`, seed 0; a CoCa's decoder projection, which
open_clip leaves at zero, drawn with std width^-0.5; a checkpoint with BatchNorm is
calibrated as `bf16_fidelity.py` does), both in fp32.

The CSV: ROWS rows (env, default 300) over the fixture images and SYNTH synthetic ones, each
image on 1-4 rows spread through the file, each row its own caption "a photo of a {class}."
(the ImageNet class names, in a shuffled order). One image on several rows (or two files of
the same pixels) scores exactly the same against every caption in ours (a file is encoded
once); in PyTorch copies can differ in the last bits (a batch of another size), and for rows
of more than 16 values `torch.argsort` orders exact ties its own way. The script reports how
many text->image ranks differ and whether each differs only in its order among the rows
scoring the same as its own (within 1e-6).

WDS=N (env) writes the rows as N webdataset shards instead (consecutive rows per shard, only
the jpg/png/jpeg/webp images, every SPLIT_EVERY-th caption, default 5th, broken over two
lines) and runs open_clip's
`get_wds_dataset` with WORKERS dataloader workers (default 4, open_clip's), ours with
`--loader-workers WORKERS`.

    python3 scripts/open_clip_val_check.py target/release/pyramidclip [OUT_DIR] [MODELS...]
"""
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import types

import numpy as np
import open_clip
import torch
from open_clip_train.data import get_csv_dataset, get_wds_dataset
from open_clip_train.train import evaluate

sys.path.insert(0, os.path.dirname(__file__))
from bf16_fidelity import calibrate  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FX = os.path.join(ROOT, "tests", "fixtures")


def main():
    binary = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
    os.makedirs(out, exist_ok=True)
    names = sys.argv[3:] or ["ViT-B-32", "RN50"]
    n_rows = int(os.environ.get("ROWS", "300"))
    batch = int(os.environ.get("BATCH", "64"))
    manifest = json.load(open(os.path.join(FX, "manifest.json")))
    # The fixtures whose extension open_clip's PIL and our reader both take as a photo.
    images = [os.path.join(FX, p) for p in manifest["images"]]
    shards = int(os.environ.get("WDS", "0"))
    workers = int(os.environ.get("WORKERS", "4"))
    split_every = int(os.environ.get("SPLIT_EVERY", "5"))
    if shards:
        images = [p for p in images if p.rsplit(".", 1)[-1] in ("jpg", "png", "jpeg", "webp")]
    synth = os.path.join(out, "synth")
    subprocess.run([binary, "dev", "synth", synth, "--images", os.environ.get("SYNTH", "150")],
                   check=True, capture_output=True)
    images += open(os.path.join(synth, "images.txt")).read().split()
    rng = random.Random(0)
    classes = [c for c in open(os.path.join(ROOT, "configs", "data",
                                            "imagenet_classnames.txt")).read().splitlines() if c]
    rng.shuffle(classes)
    rows = []
    while len(rows) < n_rows:
        img = rng.choice(images)
        rows += [img] * min(rng.randint(1, 4), n_rows - len(rows))
    rng.shuffle(rows)
    captions = [f"a photo of a {c}." for c in classes[:n_rows]]
    path = os.path.join(out, "val.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["filepath", "title"])
        w.writerows(zip(rows, captions))
    if shards:
        import io
        import tarfile
        per = -(-n_rows // shards)
        for s in range(shards):
            with tarfile.open(os.path.join(out, f"{s}.tar"), "w") as t:
                for i in range(s * per, min(n_rows, (s + 1) * per)):
                    text = captions[i].replace("photo of ", "photo of\n") \
                        if split_every and i % split_every == 0 else captions[i]
                    for name, data in [(f"{i:06d}.{rows[i].rsplit('.', 1)[-1]}",
                                        open(rows[i], "rb").read()),
                                       (f"{i:06d}.txt", text.encode())]:
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        t.addfile(info, io.BytesIO(data))
        path = os.path.join(out, "{0..%d}.tar" % (shards - 1))
    torch.set_num_threads(2)
    report = {}
    for name in names:
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None,
                                                                      output_dict=True)
        if hasattr(model, "text_decoder"):
            # open_clip leaves a CoCa decoder's vocabulary projection at zero without
            # pretrained weights (every logit 0): drawn as its init_parameters would.
            proj = model.text_decoder.text_projection
            with torch.no_grad():
                proj.normal_(std=proj.shape[0] ** -0.5)
        model.eval()
        if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.visual.modules()):
            from PIL import Image
            calibrate(model, torch.stack([preprocess(Image.open(p)) for p in images[:64]]))
        args = types.SimpleNamespace(
            val_data=path, csv_img_key="filepath", csv_caption_key="title", csv_separator="\t",
            batch_size=batch, workers=0, distributed=False, horovod=False, device="cpu",
            precision="fp32", val_frequency=1, epochs=1, save_logs=False, wandb=False, rank=0,
            local_rank=0, zeroshot_frequency=0)
        if shards:
            args.val_data, args.val_num_samples, args.workers = path, None, workers
            args.dataset_resampled = False
            val = get_wds_dataset(args, preprocess, is_train=False,
                                  tokenizer=open_clip.get_tokenizer(name))
        else:
            val = get_csv_dataset(args, preprocess, is_train=False,
                                  tokenizer=open_clip.get_tokenizer(name))
        theirs = evaluate(model, {"val": val}, 1, args)
        sd_path = os.path.join(out, f"{name}.bin")
        torch.save(model.state_dict(), sd_path)
        result = os.path.join(out, f"{name}.json")
        ranks_csv = os.path.join(out, f"{name}.ranks.csv")
        cmd = [binary, "retrieval", "--checkpoint", sd_path, "--visual-model", name,
               "--captions", path, "--pairing", "rows", "--batch-size-test", str(batch),
               "--engine", "native", "--precision", "fp32", "--output", result,
               "--save-ranks", ranks_csv, "-q"]
        if shards:
            cmd += ["--loader-workers", str(workers)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{name}: {r.stderr.strip()}")
        ours = json.load(open(result))["metrics"]
        # Which text->image ranks differ, and whether each is a tie of a repeated image:
        # open_clip's logits from its own features, ranked both ways.
        with torch.no_grad():
            feats = [(model.encode_image(i, normalize=True), model.encode_text(t, normalize=True))
                     for i, t in val.dataloader]
        img = torch.cat([f[0] for f in feats])
        txt = torch.cat([f[1] for f in feats])
        logits = (model.logit_scale.exp() * img @ txt.t()).t().detach().numpy()
        own = np.diag(logits)[:, None]
        torch_rank = (torch.argsort(torch.from_numpy(logits), descending=True).numpy()
                      == np.arange(n_rows)[:, None]).argmax(axis=1) + 1
        ours_rank = np.zeros(n_rows, dtype=int)
        for line in list(csv.reader(open(ranks_csv)))[1:]:
            if line[0] == "text_to_image":
                ours_rank[int(line[1])] = int(line[4])
        diff = np.nonzero(torch_rank != ours_rank)[0]
        # Where a row can land when only its order among the rows scoring the same as its
        # own (within 1e-6, float noise) is open.
        eps = 1e-6 * (1 + np.abs(own))
        first = (logits > own + eps).sum(axis=1) + 1
        last = (logits >= own - eps).sum(axis=1)
        other = [int(q) for q in diff
                 if not all(first[q] <= r[q] <= last[q] for r in (torch_rank, ours_rank))]
        for q in other:
            print(f"row {q}: ours {ours_rank[q]}, torch {torch_rank[q]}, ties between "
                  f"{first[q]} and {last[q]}", file=sys.stderr)
        report[name] = {
            "rows": n_rows, "images": len(set(rows)), "batch": batch,
            "shards": shards, "workers": workers if shards else None,
            "metrics": {k: [ours.get(k), float(v)] for k, v in theirs.items() if k != "epoch"},
            "text_to_image_ranks_differing": int(len(diff)),
            "differing_only_among_ties": not other,
        }
        print(json.dumps({name: report[name]}, indent=1), flush=True)
    json.dump(report, open(os.path.join(out, "report.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
