#!/usr/bin/env python3
"""Dev-time: expected retrieval metrics for tests/fixtures/retrieval, computed the way
CLIP_benchmark's zeroshot_retrieval does (scores = texts @ images.T of L2-normalised features;
a query counts when a positive is among its top-k by torch.topk-style selection), on the
reference code's own features in tests/fixtures/expected.safetensors. Also writes the same
captioned set in the file formats `pyramidclip retrieval` reads (JSON lines, Flickr text, COCO
JSON, Karpathy's split JSON with a train-split image that the test split leaves out, and LAVIS's
JSON list), and open_clip's training CSV twice (its default TSV layout with extra columns and a
blank line; a quoted comma-separated file with other column names), without the empty caption
(pandas reads an empty cell as NaN, which open_clip tokenizes as "nan"): what open_clip's
`CsvDataset` reads from them is checked against the pairs written, and their metrics are
`expected.json`'s `open_clip_csv`.

    python3 scripts/retrieval_reference.py   # needs numpy, and open_clip_train with pandas
"""
import csv
import json
import os
import struct

import numpy as np

FX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
OUT = os.path.join(FX, "retrieval")


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        if v["dtype"] != "F32":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype="<f4").reshape(v["shape"])
    return out


def recall_at_k(scores, positive_pairs, k):
    # torch.topk picks the k largest; a stable descending sort picks the same set unless
    # values tie exactly at the boundary.
    topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hit = np.take_along_axis(positive_pairs, topk, axis=1).sum(axis=1)
    return hit / positive_pairs.sum(axis=1)


def metrics(exp, model, groups):
    img = exp[f"{model}.image_features"][[g[0] for g in groups]].astype(np.float32)
    txt_idx = [c for _, caps in groups for c in caps]
    txt = exp[f"{model}.text_features"][txt_idx].astype(np.float32)
    cap_img = [i for i, (_, caps) in enumerate(groups) for _ in caps]
    scores = txt @ img.T
    pos = np.zeros_like(scores, dtype=bool)
    pos[np.arange(len(cap_img)), cap_img] = True
    m = {}
    for k in [1, 2, 3, 5, 10]:
        m[f"image_retrieval_recall@{k}"] = float((recall_at_k(scores, pos, k) > 0).mean())
        m[f"text_retrieval_recall@{k}"] = float((recall_at_k(scores.T, pos.T, k) > 0).mean())
    return m


# open_clip's validation on a CSV (`--val-data`): rows in this order, one image on rows 0, 4
# and 7 and another on rows 1 and 6, so the rows are not grouped by image: (image, prompt).
ROWS = [(2, 0), (22, 3), (17, 2), (0, 5), (2, 1), (14, 7), (22, 4), (2, 8)]


def open_clip_rows(exp, images, prompts):
    """Writes captions_open_clip_rows.tsv and returns, per model and per validation batch size,
    what open_clip_train's own `evaluate` reports for it: its CsvDataset reads the file, a
    stand-in model returns the reference's (L2-normalised) features of each row's image and
    caption and the checkpoint's exp(logit_scale), and evaluate's loop computes the loss and
    `get_clip_metrics`."""
    import types

    import torch
    from open_clip_train.data import CsvDataset
    from open_clip_train.train import evaluate

    path = os.path.join(OUT, "captions_open_clip_rows.tsv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["filepath", "title"])
        for img, c in ROWS:
            w.writerow([images[img], prompts[c]])
    ds = CsvDataset(path, None, img_key="filepath", caption_key="title", sep="\t")
    assert [(str(i), str(c)) for i, c in zip(ds.images, ds.captions)] == \
        [(images[i], prompts[c]) for i, c in ROWS]
    row_img = torch.tensor([images.index(str(i)) for i in ds.images])
    row_txt = torch.tensor([prompts.index(str(c)) for c in ds.captions])

    class Features(torch.nn.Module):
        def __init__(self, model, scale):
            super().__init__()
            self.img = torch.from_numpy(exp[f"{model}.image_features"].copy())
            self.txt = torch.from_numpy(exp[f"{model}.text_features"].copy())
            self.logit_scale = torch.nn.Parameter(torch.tensor(scale))

        def forward(self, image_rows, text_rows):
            return {"image_features": self.img[row_img[image_rows]],
                    "text_features": self.txt[row_txt[text_rows]],
                    "logit_scale": self.logit_scale.exp()}

    out = {}
    for model in ["tiny_RN", "tiny_ViT"]:
        ck = torch.load(os.path.join(FX, model.replace("_", "-") + ".pth.tar"),
                        map_location="cpu", weights_only=False)
        scale = float(ck.get("state_dict", ck)["logit_scale"])
        net = Features(model, scale)
        out[model.replace("_", "-")] = per_batch = {}
        for batch in [3, 64]:
            rows = torch.arange(len(ROWS))
            batches = [(rows[s:s + batch], rows[s:s + batch]) for s in range(0, len(ROWS), batch)]
            data = {"val": types.SimpleNamespace(dataloader=ListLoader(batches, len(ROWS)))}
            args = types.SimpleNamespace(device="cpu", precision="fp32", val_frequency=1, epochs=1,
                                         distributed=False, horovod=False, save_logs=False,
                                         rank=0, local_rank=0, zeroshot_frequency=0, wandb=False)
            m = evaluate(net, data, 1, args)
            # Its ranks are a stable descending sort's (rows of at most 16 values), which is
            # how ours break the exact ties of one image on several rows; counting ties in the
            # query's favour would not give them.
            logits = net.logit_scale.exp() * net.img[row_img] @ net.txt[row_txt].T
            for name, lg in [("image_to_text", logits), ("text_to_image", logits.T)]:
                lg = lg.detach().numpy()
                own = np.diag(lg)[:, None]
                stable = np.argsort(-lg, axis=1, kind="stable")
                ranks = np.where(stable == np.arange(len(ROWS))[:, None])[1] + 1
                assert ranks.mean() == m[f"{name}_mean_rank"], name
                favour = ((lg > own).sum(axis=1) + 1).mean()
                if name == "text_to_image":
                    assert favour != ranks.mean()
            per_batch[str(batch)] = {k: float(v) for k, v in m.items() if k != "epoch"}
    return out


class ListLoader(list):
    def __init__(self, batches, n):
        super().__init__(batches)
        self.num_samples = n


def main():
    manifest = json.load(open(os.path.join(FX, "manifest.json")))
    exp = load_safetensors(os.path.join(FX, "expected.safetensors"))
    images, prompts = manifest["images"], manifest["prompts"]
    # Seven images, nine captions (one to two each): every reference prompt is a caption.
    groups = [(2, [0, 1]), (17, [2]), (22, [3, 4]), (0, [5]), (9, [6]), (14, [7]), (20, [8])]
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "captions.jsonl"), "w") as f:
        for img, caps in groups:
            f.write(json.dumps({"image": images[img], "captions": [prompts[c] for c in caps]}) + "\n")
    with open(os.path.join(OUT, "captions_flickr.txt"), "w") as f:
        f.write("image,caption\n")
        for img, caps in groups:
            for c in caps:
                f.write(f"{images[img]},{prompts[c]}\n")
    coco = {"images": [], "annotations": []}
    for n, (img, caps) in enumerate(groups):
        coco["images"].append({"id": 100 + n, "file_name": images[img]})
        for c in caps:
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": 100 + n,
                                        "caption": prompts[c]})
    with open(os.path.join(OUT, "captions_coco.json"), "w") as f:
        json.dump(coco, f, indent=1)
    # Karpathy's dataset_*.json: paths as filepath/filename, captions as sentences' raw text.
    karpathy = {"dataset": "fixture", "images": [
        {"filepath": os.path.dirname(images[1]), "filename": os.path.basename(images[1]), "split": "train",
         "sentences": [{"raw": "not in the test split", "tokens": ["not"]}]}]}
    for n, (img, caps) in enumerate(groups):
        karpathy["images"].append({
            "filepath": os.path.dirname(images[img]), "filename": os.path.basename(images[img]),
            "split": "test", "imgid": n,
            "sentences": [{"raw": prompts[c], "tokens": prompts[c].lower().split()} for c in caps]})
    with open(os.path.join(OUT, "captions_karpathy.json"), "w") as f:
        json.dump(karpathy, f, indent=1)
    # LAVIS/BLIP annotation list: "caption" a list of strings (one image split over two items).
    lavis = [{"image": images[img], "caption": [prompts[c] for c in caps]} for img, caps in groups]
    lavis.append({"image": images[groups[0][0]], "caption": [prompts[groups[0][1][0]]]})
    lavis[0]["caption"] = lavis[0]["caption"][1:]
    with open(os.path.join(OUT, "captions_lavis.json"), "w") as f:
        json.dump(lavis, f, indent=1)
    csv_groups = [(img, [c for c in caps if prompts[c]]) for img, caps in groups]
    csv_groups = [(img, caps) for img, caps in csv_groups if caps]
    pairs = [(images[img], prompts[c]) for img, caps in csv_groups for c in caps]
    with open(os.path.join(OUT, "captions_open_clip.tsv"), "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["id", "filepath", "title", "source"])
        for n, (path, caption) in enumerate(pairs):
            w.writerow([n, path, caption, "fixture"])
            if n == 2:
                f.write("\n")
    with open(os.path.join(OUT, "captions_open_clip_custom.csv"), "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        w.writerow(["caption", "path"])
        for path, caption in pairs:
            w.writerow([caption, path])
    from open_clip_train.data import CsvDataset  # pandas reads the file, as in training

    for name, kw in [("captions_open_clip.tsv", {}),
                     ("captions_open_clip_custom.csv",
                      dict(img_key="path", caption_key="caption", sep=","))]:
        ds = CsvDataset(os.path.join(OUT, name), None, **{"img_key": "filepath",
                                                          "caption_key": "title", "sep": "\t",
                                                          **kw})
        assert list(zip(map(str, ds.images), map(str, ds.captions))) == pairs, name
    expected = {}
    for model in ["tiny_RN", "tiny_ViT"]:
        expected[model.replace("_", "-")] = metrics(exp, model, groups)
    expected["open_clip_csv"] = {m.replace("_", "-"): metrics(exp, m, csv_groups)
                                 for m in ["tiny_RN", "tiny_ViT"]}
    expected["open_clip_rows"] = open_clip_rows(exp, images, prompts)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
