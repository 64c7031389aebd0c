#!/usr/bin/env bash
# Issue #18's device call, prepared: one command on the GPU machine (repo root, no Rust) that
# unpacks the carried binaries, times each kernel family of a forward, then prints the
# side-by-side table: ours vs PyTorch, and the previous build beside the new one when given
# (gpu_bench.py first checks the fused kernels against their CPU references). Logs go to $OUT.
#   bash scripts/gpu-round.sh .carry/pyramidclip.xz [.carry/pyramidclip-base.xz]
# Knobs: PROFILE=0 skips Nsight Compute; BENCH_ARGS passes flags to gpu_bench.py (default
# "--seconds 3"; add --rates-only or --no-compile to fit a shorter call).
set -uo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
LOGS=${OUT:-/tmp}
mkdir -p /tmp/pc-bin "$LOGS"
unpack() {
  case "$1" in
    *.xz) xz -dc "$1" > "$2" ;;
    *) cp "$1" "$2" ;;
  esac
  chmod +x "$2"
}
unpack "$1" /tmp/pc-bin/new || exit 1
base=()
if [ -n "${2:-}" ]; then
  unpack "$2" /tmp/pc-bin/base && base=(--bin2 /tmp/pc-bin/base)
fi
. "$DIR/cuda-env.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
if [ "${PROFILE:-1}" = 1 ]; then
  BATCH=${BATCH:-32} MODELS=${MODELS:-ViT-B-16 RN50} PROFILE_DIR=/tmp/pc-ncu \
    bash "$DIR/gpu-profile.sh" /tmp/pc-bin/new 2>&1 | tee "$LOGS/profile.log"
fi
# shellcheck disable=SC2086
PYTHONUNBUFFERED=1 python3 "$DIR/gpu_bench.py" --bin /tmp/pc-bin/new "${base[@]}" ${BENCH_ARGS:---seconds 3} \
  2>&1 | tee "$LOGS/bench.log"
