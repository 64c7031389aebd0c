"""Kernel-time shares from an `ncu --csv --page raw --metrics gpu__time_duration.sum` log: the
kernels of the last `--forwards` model forwards (the log's tail; the model load and warm-up come
first), grouped by what they do, with the top kernels by name. Used by scripts/gpu-profile.sh."""
import csv, io, re, sys
from collections import defaultdict

GROUPS = [  # first match wins
    ("gemm (cuBLAS/cuDNN)", r"gemm|xmma|cutlass|sm90_|sm80_|ampere|hopper|cudnn|implicit|conv2d_|fprop|dgrad|wgrad"),
    ("im2col", r"im2col"),
    ("cast", r"^cast_"),
    ("copy (strided)", r"copy|ucopy|transpose"),
    ("layernorm", r"layer_?norm|layernorm|rmsnorm"),
    ("softmax", r"softmax"),
    ("binary (add/mul)", r"^b(add|mul|sub|div|maximum|minimum)_"),
    ("unary/affine", r"^u|affine|sigmoid|gelu|relu|exp|sqrt"),
    ("reduce", r"reduce|sum|max|min|argmax"),
    ("ours (fused)", r"^pc_"),
]


def group(name):
    for g, pat in GROUPS:
        if re.search(pat, name):
            return g
    return "other"


def main(path, label):
    text = open(path, errors="replace").read()
    start = text.find('"ID"')
    rows = list(csv.reader(io.StringIO(text[start:])))
    head = rows[0]
    i_name, i_t = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
    unit = rows[1][i_t]
    scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "ns": 1e-3, "us": 1.0, "ms": 1e3}.get(unit, 1.0)
    ks = [(r[i_name], float(r[i_t].replace(",", "")) * scale) for r in rows[2:] if len(r) > i_t and r[i_t]]
    # bench runs warm-up + 2 forwards of one kernel sequence: the longest period P with the last
    # P names equal to the P before them is one forward (shorter ones are repeated blocks).
    names = [n for n, _ in ks]
    period = next((p for p in range(len(ks) // 2, 9, -1) if names[-p:] == names[-2 * p:-p]), None)
    ks = ks[-period:] if period else ks[len(ks) * 2 // 3:]
    total = sum(t for _, t in ks)
    by_group, by_name, count = defaultdict(float), defaultdict(float), defaultdict(int)
    for n, t in ks:
        short = n.split("(")[0][:70]
        by_group[group(short)] += t
        by_name[short] += t
        count[short] += 1
    print(f"-- {label}: {len(ks)} kernels, {total / 1e3:.2f} ms of kernel time in the last forward" + ("" if period else " (approx.)"))
    for g, t in sorted(by_group.items(), key=lambda x: -x[1]):
        print(f"   {g:24} {t / 1e3:8.2f} ms {100 * t / total:5.1f}%")
    for n, t in sorted(by_name.items(), key=lambda x: -x[1])[:12]:
        print(f"     {n:70} x{count[n]:<4} {t / 1e3:7.2f} ms {100 * t / total:5.1f}%")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else sys.argv[1])
