#!/usr/bin/env bash
# Side-by-side GPU benchmark (issue #18), one call on the GPU machine (no Rust needed): the
# binary built by scripts/build-cuda.sh against PyTorch's reference-architecture model on the
# same GPU — images/s at batch 256 in fp32 and fp16 (autocast, channels-last ResNet,
# torch.compile where it builds) for RN50, ViT-B-32, ViT-B-16, the text encoder in prompts/s,
# `eval` end to end over 10,000 synthetic 500x375 JPEGs against model-only, and GPU-vs-CPU
# feature checks; ratios printed. Needs python3 with torch (CUDA), numpy, safetensors, pyyaml.
#   bash scripts/gpu-bench.sh target-cuda/release/pyramidclip [gpu_bench.py flags...]
set -euo pipefail
BIN=$(readlink -f "${1:-target-cuda/release/pyramidclip}")
shift || true
. "$(dirname "$0")/cuda-env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
exec python3 "$(dirname "$0")/gpu_bench.py" --bin "$BIN" "$@"
