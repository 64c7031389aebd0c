#!/usr/bin/env bash
# The CPU measurements issue #22 asks for, in one go, on a machine the project has not been
# measured on (an Intel Xeon with AMX first): the CPU and its AMX probe, `bench`'s share of the
# FMA / bf16 peak per encoder, the fp32 blocking sweep (`bench --what blocking`) and the fp32
# encoders again with its choice, then the PyTorch harness with its bf16 column. Dev-time only; the PyTorch part needs a venv with torch, numpy and safetensors.
#
#   scripts/cpu_report.sh [OUT_DIR] [PYTHON]      (default: target/cpu-report, python3)
# ~40 minutes on 2 cores. Everything lands in OUT_DIR (summary.txt first).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/cpu-report}
py=${2:-python3}
bin=target/release/pyramidclip
mkdir -p "$out"
[ -x "$bin" ] || cargo build --release
sum="$out/summary.txt"
{
    date -u
    git rev-parse --short HEAD
    lscpu | grep -E 'Model name|Thread|Core|Socket|L1d|L2|L3'
    echo "flags: $(grep -o -w -E 'avx512f|avx512_bf16|amx_tile|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "amx probe: $("$bin" dev amx-probe 2>&1 && echo ok)"
} > "$sum"
# The family's default blocking first (not one stored by an earlier `bench --what blocking`).
export PYRAMIDCLIP_GEMM_TUNED=0
# The bf16 rows measure the bf16 kernels wherever the CPU has them, also where `--precision
# bf16` would compute in fp32 because they are slower (the PyTorch harness at the end runs
# what a user gets).
export PYRAMIDCLIP_BF16=1
for p in fp32 bf16; do
    for w in image:RN50 image:ViT-B-32 image:ViT-B-16 text:ViT-B-32; do
        "$bin" bench --what "${w%%:*}" --visual-model "${w#*:}" --precision "$p" --seconds 8 \
            --json > "$out/bench-$p-${w/:/-}.json" 2> "$out/bench-$p-${w/:/-}.log"
    done
done
"$py" - "$out" >> "$sum" <<'EOF'
import glob, json, sys
# Share of the peak of the kernel that ran (AMX tiles, vdpbf16ps or FMA): the mean batch
# against the peak measured before, and paired (each batch against the peak measured right
# after it, the median: steady when a neighbour on a shared VM slows part of the run).
for f in sorted(glob.glob(sys.argv[1] + "/bench-*.json")):
    r = json.load(open(f))
    bf16 = r.get("precision") == "bf16"
    key = "bf16_peak" if bf16 else "fma_peak"
    peak = r.get("amx_peak_gflops", r.get("bf16_peak_gflops")) if bf16 else r.get("fma_peak_gflops")
    rate = r.get("images_per_s", r.get("prompts_per_s"))
    share = f"{100 * r['gflops'] / peak:.0f}% of peak" if peak else "no peak"
    if f"{key}_share_paired" in r:
        share += f", paired {100 * r[key + '_share_paired']:.0f}%"
    blocking = "" if bf16 else f", kc {r['gemm_kc']} mc {r['gemm_mc']}, {r.get('threads_per_l2', '?')} threads/L2"
    print(f"{r['what']:5} {r['model']:8} {r['precision']:4} {r.get('bf16_kernel', r.get('isa'))}: "
          f"{rate:.2f}/s, {r['gflops']:.0f} GFLOP/s, {share}{blocking}")
EOF
# The products alone (fastest iteration, against the peak of the kernel that runs them).
for p in fp32 bf16; do
    "$bin" bench --what gemm --precision "$p" --seconds 6 > "$out/gemm-$p.txt" 2>&1
    grep -E 'peak|GFLOP' "$out/gemm-$p.txt" >> "$sum"
done
unset PYRAMIDCLIP_GEMM_TUNED PYRAMIDCLIP_BF16
# The blocking sweep (about 5 minutes); it stores its choice in a private cache, so the
# rows above (the family's default) stay comparable, and the fp32 rows run again with it.
export XDG_CACHE_HOME="$out/cache"
"$bin" bench --what blocking > "$out/blocking.txt" 2>&1
tail -n 15 "$out/blocking.txt" >> "$sum"
for w in image:RN50 image:ViT-B-32 image:ViT-B-16 text:ViT-B-32; do
    "$bin" bench --what "${w%%:*}" --visual-model "${w#*:}" --precision fp32 --seconds 8 \
        --json > "$out/tuned-fp32-${w/:/-}.json" 2> "$out/tuned-fp32-${w/:/-}.log"
done
echo "fp32 with the blocking chosen above:" >> "$sum"
"$py" - "$out" >> "$sum" <<'EOF'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/tuned-fp32-*.json")):
    r = json.load(open(f))
    rate = r.get("images_per_s", r.get("prompts_per_s"))
    print(f"{r['what']:5} {r['model']:8} fp32 kc {r['gemm_kc']} mc {r['gemm_mc']} ({r['gemm_blocking']}): "
          f"{rate:.2f}/s, {100 * r['gflops'] / r['fma_peak_gflops']:.0f}% of peak, "
          f"paired {100 * r.get('fma_peak_share_paired', float('nan')):.0f}%")
EOF
"$py" scripts/compare_pytorch.py --bin "$bin" --bf16 --text-batch 16 80 --seconds 5 --repeat 3 \
    > "$out/compare_pytorch.txt" 2>&1
tail -n 25 "$out/compare_pytorch.txt" >> "$sum"
cat "$sum"
