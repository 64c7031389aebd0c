"""Image-caption selection throughput: `pyramidclip caption-selection` on a SugarCREPE-shaped
folder (seven TASK.json files over one image folder) against CLIP_benchmark's own
`image_caption_selection.evaluate` with its `SugarCrepe` dataset class and an open_clip model
(the same random weights), in one run on the same files and threads.

    python3 scripts/bench_selection.py --clip-benchmark PATH [--bin target/release/pyramidclip]
        [--model ViT-B-32] [--images 300] [--per-task 120] [--threads 2]

PATH is a CLIP_benchmark checkout (clip_benchmark/metrics, datasets/sugar_crepe.py). Both sides
run fp32 on the CPU, batch 64; CLIP_benchmark with a DataLoader of --threads workers and torch
limited to --threads threads, ours with --workers and RAYON_NUM_THREADS --threads. Ours also runs
each task on its own (seven invocations, as a per-task loop would) to show what the shared
encoding adds. Needs torch, open_clip_torch, Pillow, tqdm (dev-time only)."""
import argparse, json, os, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--clip-benchmark", required=True)
ap.add_argument("--bin", default="target/release/pyramidclip")
ap.add_argument("--model", default="ViT-B-32")
ap.add_argument("--images", type=int, default=300)
ap.add_argument("--per-task", type=int, default=120)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()

import numpy as np
import torch
import open_clip
from PIL import Image
from torch.utils.data import DataLoader, default_collate

sys.path.insert(0, a.clip_benchmark)
from clip_benchmark.datasets.sugar_crepe import SugarCrepe
from clip_benchmark.metrics import image_caption_selection

TASKS = ["add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj"]
WORDS = ("a the man woman dog cat red blue small large wooden table street car bus kite pizza "
         "plate sitting standing next to on under holding two three white black green").split()

root = tempfile.mkdtemp()
os.makedirs(os.path.join(root, "val2017"))
g = np.random.default_rng(0)
yy, xx = np.mgrid[0:480, 0:640]
names = []
for i in range(a.images):
    base = (xx[..., None] * (1 + i % 3) + yy[..., None] * (2 + i % 5) + np.arange(3) * 70) % 256
    img = np.clip(base + g.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    n = f"{i:012d}.jpg"
    Image.fromarray(img).save(os.path.join(root, "val2017", n), quality=90)
    names.append(n)
def sentence():
    return " ".join(g.choice(WORDS, int(g.integers(6, 14)))) + "."
for t in TASKS:
    ann = {}
    for k in range(a.per_task):
        ann[str(k * 3)] = {"filename": names[int(g.integers(0, len(names)))], "caption": sentence(),
                           "negative_caption": sentence()}
    json.dump(ann, open(os.path.join(root, f"{t}.json"), "w"))

torch.set_num_threads(a.threads)
model, _, preprocess = open_clip.create_model_and_transforms(a.model, pretrained=None)
model.eval()
ckpt = os.path.join(root, "model.pt")
torch.save(model.state_dict(), ckpt)
tokenizer = open_clip.get_tokenizer(a.model)

def collate(batch):
    t = list(zip(*batch))
    return default_collate(t[0]), t[1]

t0 = time.perf_counter()
theirs = {}
for t in TASKS:
    ds = SugarCrepe(root=os.path.join(root, "val2017"), ann_file=os.path.join(root, f"{t}.json"),
                    transform=preprocess)
    dl = DataLoader(ds, batch_size=64, num_workers=a.threads, collate_fn=collate)
    theirs[t] = image_caption_selection.evaluate(model, dl, tokenizer, "cpu", amp=False)
cb_s = time.perf_counter() - t0
instances = len(TASKS) * a.per_task

env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
base = [a.bin, "caption-selection", "--checkpoint", ckpt, "--visual-model", a.model,
        "--workers", str(a.threads), "--batch-size-test", "64", "-q"]
t0 = time.perf_counter()
out = os.path.join(root, "r.json")
subprocess.run(base + ["--captions", root, "--output", out], check=True, env=env,
               stdout=subprocess.DEVNULL)
ours_s = time.perf_counter() - t0
t0 = time.perf_counter()
for t in TASKS:
    subprocess.run(base + ["--captions", os.path.join(root, f"{t}.json")], check=True, env=env,
                   stdout=subprocess.DEVNULL)
ours_each_s = time.perf_counter() - t0

agree = 0
for t in TASKS:
    r = json.load(open(os.path.join(root, f"r-sugar_crepe-{t}.json")))
    agree += abs(r["metrics"]["acc"] - theirs[t]["acc"]) < 1e-6
distinct = len({v["filename"] for t in TASKS for v in json.load(open(os.path.join(root, f"{t}.json"))).values()})
print(json.dumps({
    "model": a.model, "threads": a.threads, "tasks": len(TASKS), "instances": instances,
    "distinct_images": distinct,
    "clip_benchmark_s": round(cb_s, 1), "clip_benchmark_instances_per_s": round(instances / cb_s, 1),
    "ours_one_run_s": round(ours_s, 1), "ours_instances_per_s": round(instances / ours_s, 1),
    "ours_task_by_task_s": round(ours_each_s, 1),
    "ratio_one_run": round(cb_s / ours_s, 2), "ratio_task_by_task": round(cb_s / ours_each_s, 2),
    "tasks_with_equal_acc": agree,
}, indent=1))
