#!/usr/bin/env python3
"""Dev-time: expected retrieval metrics for tests/fixtures/retrieval, computed the way
CLIP_benchmark's zeroshot_retrieval does (scores = texts @ images.T of L2-normalised features;
a query counts when a positive is among its top-k by torch.topk-style selection), on the
reference code's own features in tests/fixtures/expected.safetensors. Also writes the same
captioned set in the file formats `pyramidclip retrieval` reads (JSON lines, Flickr text, COCO
JSON, Karpathy's split JSON with a train-split image that the test split leaves out, and LAVIS's
JSON list).

    python3 scripts/retrieval_reference.py   # needs numpy
"""
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
    expected = {}
    for model in ["tiny_RN", "tiny_ViT"]:
        img = exp[f"{model}.image_features"][[g[0] for g in groups]].astype(np.float32)
        txt_idx = [c for _, caps in groups for c in caps]
        txt = exp[f"{model}.text_features"][txt_idx].astype(np.float32)
        cap_img = [i for i, (_, caps) in enumerate(groups) for _ in caps]
        scores = txt @ img.T
        pos = np.zeros_like(scores, dtype=bool)
        pos[np.arange(len(cap_img)), cap_img] = True
        m = {}
        for k in [1, 5, 10]:
            m[f"image_retrieval_recall@{k}"] = float((recall_at_k(scores, pos, k) > 0).mean())
            m[f"text_retrieval_recall@{k}"] = float((recall_at_k(scores.T, pos.T, k) > 0).mean())
        for k in [1, 2, 3]:
            m[f"image_retrieval_recall@{k}"] = float((recall_at_k(scores, pos, k) > 0).mean())
            m[f"text_retrieval_recall@{k}"] = float((recall_at_k(scores.T, pos.T, k) > 0).mean())
        expected[model.replace("_", "-")] = m
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
