#!/usr/bin/env python3
"""Sweep the fp32 products' cache blocking (depth per pass `kc`, rows per packed block `mc`) on
the encoders, on this CPU, each setting against the default measured in the same run.

The blocking is a speed setting only (every output is one FMA chain over the whole depth,
whatever the blocking: `native::gemm::Blocking`), so a better setting found here changes no
result. Each setting runs `pyramidclip bench --json` with PYRAMIDCLIP_GEMM_KC / _MC, alternating
with the default (A B A B ...), and is scored by the median ratio of its rate to the default's
neighbouring runs.

    python3 scripts/tune_blocking.py [--bin target/release/pyramidclip] [--threads 2]
        [--what image:ViT-B-32 text:ViT-B-32 image:RN50] [--kc 256 512 1024 1536]
        [--mc 112 224 336 448] [--seconds 4] [--repeat 2]
Dev-time only (no dependencies beyond the standard library).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(a, what, model, kc=None, mc=None):
    env = dict(os.environ)
    env.pop("PYRAMIDCLIP_GEMM_KC", None)
    env.pop("PYRAMIDCLIP_GEMM_MC", None)
    # The default is the family's, not a blocking `bench --what blocking` stored for this CPU.
    env["PYRAMIDCLIP_GEMM_TUNED"] = "0"
    if kc:
        env["PYRAMIDCLIP_GEMM_KC"] = str(kc)
    if mc:
        env["PYRAMIDCLIP_GEMM_MC"] = str(mc)
    out = subprocess.run(
        [a.bin, "bench", "--what", what, "--visual-model", model, "--device", "cpu",
         "--precision", "fp32", "--threads", str(a.threads), "--seconds", str(a.seconds), "--json"],
        check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out)
    rate = r["images_per_s"] if what == "image" else r["prompts_per_s"]
    return rate, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "pyramidclip"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--what", nargs="+", default=["image:ViT-B-32", "text:ViT-B-32", "image:RN50"])
    ap.add_argument("--kc", type=int, nargs="+", default=[256, 512, 1024, 1536])
    ap.add_argument("--mc", type=int, nargs="+", default=[112, 224, 336, 448])
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()

    results = {}
    info, default = {}, None
    for item in a.what:
        what, model = item.split(":")
        for kc in a.kc:
            for mc in a.mc:
                ratios = []
                for _ in range(a.repeat):
                    base, info = bench(a, what, model)
                    mine, _ = bench(a, what, model, kc, mc)
                    after, _ = bench(a, what, model)
                    ratios.append(mine / statistics.mean([base, after]))
                    default = (info["gemm_kc"], info["gemm_mc"])
                results.setdefault((kc, mc), {})[item] = statistics.median(ratios)
                print(f"{item:16} kc {kc:5} mc {mc:4}: {statistics.median(ratios):.3f}x the default",
                      file=sys.stderr, flush=True)
    print(f"\nCPU: {info.get('cpu_model', '?')}, {a.threads} threads, kernel {info.get('isa')}, "
          f"default kc {default[0]} mc {default[1]}; ratio to the default in the same run "
          f"(median of {a.repeat})")
    items = a.what
    print(f"{'kc':>5} {'mc':>4} " + " ".join(f"{i:>16}" for i in items) + f" {'geomean':>8}")
    scored = []
    for (kc, mc), r in results.items():
        g = statistics.geometric_mean([r[i] for i in items])
        scored.append((g, kc, mc, r))
    for g, kc, mc, r in sorted(scored, reverse=True):
        print(f"{kc:5} {mc:4} " + " ".join(f"{r[i]:15.3f}x" for i in items) + f" {g:7.3f}x")
    g, kc, mc, _ = max(scored)
    print(f"\nbest: PYRAMIDCLIP_GEMM_KC={kc} PYRAMIDCLIP_GEMM_MC={mc} ({g:.3f}x the default)")


if __name__ == "__main__":
    sys.exit(main())
