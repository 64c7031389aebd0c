#!/usr/bin/env python3
"""Dev-time: top-1 agreement of `eval --precision bf16` with `eval --precision fp32`, with and
without the fp32 recheck of near-ties, on one checkpoint and one ImageFolder.

    python3 scripts/eval_agreement.py BIN CHECKPOINT DATA_DIR CLASSNAMES TEMPLATES [OUT_DIR]

Runs the three evaluations (fp32; bf16; bf16 --no-recheck) with --no-text-cache and batch 16,
then prints per run: images/s, top-1/top-5, how many predictions equal fp32's, and the
recheck's count and margin. Standard library only.
"""
import csv
import json
import os
import subprocess
import sys
import tempfile


def run(binary, ckpt, data, names, templates, out, tag, precision, extra):
    res, preds = os.path.join(out, f"{tag}.json"), os.path.join(out, f"{tag}.csv")
    cmd = [binary, "eval", "-e", ckpt, "--test-data-path", data, "--classnames", names,
           "--templates", templates, "--no-text-cache", "--batch-size-test", "16",
           "--precision", precision, "--output", res, "--save-predictions", preds, "-q"] + extra
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(res) as f:
        r = json.load(f)
    with open(preds) as f:
        top1 = {row["path"]: row["pred1"] for row in csv.DictReader(f)}
    return r, top1


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    binary, ckpt, data, names, templates = sys.argv[1:6]
    out = sys.argv[6] if len(sys.argv) > 6 else tempfile.mkdtemp()
    os.makedirs(out, exist_ok=True)
    runs = {}
    for tag, precision, extra in [("fp32", "fp32", []), ("bf16", "bf16", []),
                                  ("bf16-no-recheck", "bf16", ["--no-recheck"])]:
        runs[tag] = run(binary, ckpt, data, names, templates, out, tag, precision, extra)
    _, ref = runs["fp32"]
    for tag, (r, top1) in runs.items():
        same = sum(top1[p] == ref[p] for p in ref)
        rc = r.get("fp32_recheck") or {}
        print(f"{tag:16s} {r['images_per_s']:6.1f} img/s  top1 {r['top1']:.2f} top5 {r['top5']:.2f}  "
              f"same top-1 as fp32 {same}/{len(ref)}  rechecked {rc.get('images', '-')} "
              f"margin {rc.get('margin', '-')}")


if __name__ == "__main__":
    main()
