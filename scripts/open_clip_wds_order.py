#!/usr/bin/env python3
"""Dev-time: what open_clip's webdataset validation loader (open_clip_train's `get_wds_dataset`,
`is_train=False`) gives, checked against what `retrieval --pairing rows` assumes:

1. the shards of tests/downstream.rs `retrieval_pairing_rows_reads_webdataset_as_open_clip`
   (the 8 rows of tests/fixtures/retrieval/captions_open_clip_rows.tsv, rows 0-2, 6, 7 in
   shard 0 and rows 3-5 in shard 1, row 4's caption broken over two lines, row 1's sample
   also holding a png of another image): with 2 or 4 workers and batch 3 the loader gives
   the CSV's rows in the CSV's order and batches of 3, 3 and 2 rows, each caption the whole
   `txt` (so the expected metrics are the CSV's, `expected.json["open_clip_rows"][M]["3"]`),
   each sample's image its jpg; with 1 worker (or 0) the order is 0-2, 6, 7, 3-5. (The `txt`
   here starts with the row's number and `|`, which the stand-in tokenizer reads.)
2. random shard sizes, workers 0-5 and batch sizes 1-7: the order of the rows and the
   lengths of the batches equal `retrieval::loader_order`'s rule (each worker batches the
   shards s with s % workers == its id; one batch from each worker in turn, passing those
   that are done).

    /tmp/venv/bin/python scripts/open_clip_wds_order.py   # needs open_clip_train, webdataset
"""
import io
import os
import random
import tarfile
import tempfile
import types

import torch
from open_clip_train.data import get_wds_dataset

FX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def write_tar(path, members):
    with tarfile.open(path, "w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def loader(pattern, workers, batch, seen):
    def tokenizer(text):
        seen.append(text)
        return torch.tensor([[int(text.split("|", 1)[0]) if "|" in text else len(seen) - 1]])

    args = types.SimpleNamespace(val_data=pattern, val_num_samples=None, batch_size=batch,
                                 workers=workers, dataset_resampled=False)
    info = get_wds_dataset(args, lambda im: torch.tensor(im.size), is_train=False,
                           tokenizer=tokenizer)
    return info.dataloader


def rule(shard_sizes, workers, batch):
    """retrieval::loader_order's rule, on (shard, sample) ids."""
    w = max(workers, 1)
    streams = [[(s, i) for s in range(len(shard_sizes)) if s % w == k
                for i in range(shard_sizes[s])] for k in range(w)]
    queues = [[st[j:j + batch] for j in range(0, len(st), batch)] for st in streams]
    order, lens = [], []
    for r in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if r < len(q):
                order += q[r]
                lens.append(len(q[r]))
    return order, lens


def fixture_shards(d):
    rows = [line.rstrip("\n").split("\t") for line in
            open(os.path.join(FX, "retrieval", "captions_open_clip_rows.tsv"), encoding="utf-8")][1:]
    rows[4][1] = rows[4][1].replace("photo of", "photo\nof")
    shards = [[0, 1, 2, 6, 7], [3, 4, 5]]
    decoy = open(os.path.join(FX, "images", "blobs_rgba.png"), "rb").read()
    for s, members in enumerate(shards):
        out = []
        for r in members:
            img = open(os.path.join(FX, rows[r][0]), "rb").read()
            if r == 1:
                out.append((f"{r:04d}.png", decoy))
            out.append((f"{r:04d}.jpg", img))
            out.append((f"{r:04d}.txt", f"{r}|{rows[r][1]}".encode()))
        write_tar(os.path.join(d, f"{s}.tar"), out)
    return rows


def main():
    with tempfile.TemporaryDirectory() as d:
        rows = fixture_shards(d)
        from PIL import Image
        sizes = {r: Image.open(os.path.join(FX, rows[r][0])).size for r in range(8)}
        for workers, want in [(2, list(range(8))), (4, list(range(8))),
                              (1, [0, 1, 2, 6, 7, 3, 4, 5]), (0, [0, 1, 2, 6, 7, 3, 4, 5])]:
            seen = []
            batches = [(img, ids[:, 0].tolist()) for img, ids in
                       loader(os.path.join(d, "{0..1}.tar"), workers, 3, seen)]
            order = [r for _, ids in batches for r in ids]
            assert order == want, (workers, order)
            if workers > 1:
                assert [len(ids) for _, ids in batches] == [3, 3, 2]
            for img, ids in batches:
                for size, r in zip(img.tolist(), ids):
                    assert tuple(size) == sizes[r], (r, size)  # the jpg, not the png
            if workers == 0:  # the tokenizer ran in this process
                assert "4|a bad photo\nof the flower." in seen, seen
        print("fixture shards: order, batches, whole txt and jpg as the test expects")

        rnd = random.Random(5)
        runs = 0
        for trial in range(12):
            n = rnd.randint(1, 6)
            sizes = [rnd.randint(1, 9) for _ in range(n)]
            sub = os.path.join(d, f"t{trial}")
            os.makedirs(sub)
            for s, k in enumerate(sizes):
                write_tar(os.path.join(sub, f"{s}.tar"),
                          [m for i in range(k) for m in
                           ((f"{i:04d}.jpg", open(os.path.join(FX, "images", "blobs_small.jpg"), "rb").read()),
                            (f"{i:04d}.txt", f"{s * 100 + i}|x".encode()))])
            pattern = os.path.join(sub, "{0..%d}.tar" % (n - 1)) if n > 1 else os.path.join(sub, "0.tar")
            for workers in range(0, 6):
                batch = rnd.randint(1, 7)
                got = [ids[:, 0].tolist() for _, ids in loader(pattern, workers, batch, [])]
                order, lens = rule(sizes, workers, batch)
                assert [r for b in got for r in b] == [s * 100 + i for s, i in order], \
                    (sizes, workers, batch)
                assert [len(b) for b in got] == lens, (sizes, workers, batch)
                runs += 1
        print(f"random shards: {runs} loader runs follow the rule")


if __name__ == "__main__":
    main()
