#!/usr/bin/env bash
# Kernel-time shares of the image encoders on the GPU (issue #18): Nsight Compute times every
# kernel of `bench --seconds 0` (warm-up + 2 forwards); scripts/ncu_summary.py keeps the last
# forward and groups its kernels (GEMM, casts, copies, element-wise, LayerNorm, softmax, ...).
#   bash scripts/gpu-profile.sh target-cuda/release/pyramidclip
# MODELS, PRECISIONS, BATCH and WHAT choose what runs; the raw logs go to PROFILE_DIR (or $OUT).
set -euo pipefail
BIN=$(readlink -f "${1:-target-cuda/release/pyramidclip}")
DIR=$(cd "$(dirname "$0")" && pwd)
. "$DIR/cuda-env.sh"
LOGS=${PROFILE_DIR:-${OUT:-/tmp}}
mkdir -p "$LOGS"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
for M in ${MODELS:-RN50 ViT-B-16}; do
  for P in ${PRECISIONS:-fp16}; do
    log=$LOGS/ncu-$M-$P.csv
    t0=$(date +%s)
    timeout "${NCU_TIMEOUT:-120}" "$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --page raw \
      "$BIN" bench --visual-model "$M" --device cuda --precision "$P" --batch-size "${BATCH:-128}" \
      --what "${WHAT:-image}" --seconds 0 > "$log" 2> "$log.err" || { tail -5 "$log.err"; continue; }
    echo "ncu $M $P: $(( $(date +%s) - t0 )) s"
    python3 "$DIR/ncu_summary.py" "$log" "$M $P batch ${BATCH:-128}"
  done
done
