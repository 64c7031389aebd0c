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
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
