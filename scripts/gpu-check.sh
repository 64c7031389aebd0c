#!/usr/bin/env bash
# GPU check for a machine with a GPU but no Rust toolchain and no network. Give it the binary
# built by scripts/build-cuda.sh. It finds the CUDA 13 runtime libraries inside the local PyTorch
# installation, writes a synthetic ImageFolder and random-weight full-size checkpoints (with the
# binary itself), checks GPU features against CPU features (fp32 cosine >= 0.9999, fp16/bf16 >=
# 0.999, same top-1 on >= 99% of images) and prints images/s at batch 256 in fp32 and fp16,
# model-only and end to end, for RN50, ViT-B-32, ViT-B-16, and open_clip's coca_ViT-B-32,
# convnext_base_w, ViT-B-16-SigLIP, xlm-roberta-base-ViT-B-32, EVA02-B-16, PE-Core-B-16,
# ViT-L-14-CLIPA and MobileCLIP-S2 (the CoCa pooler and mask, ConvNeXt's grouped convolutions,
# SigLIP's attention-pool head and GELU-tanh, the HF text tower's padding mask, EVA02's rotary
# embedding and SwiGLU, CLIPA's patch-token mean, FastViT's per-tap grouped convolutions, SE
# and the text tower without causal mask on the GPU; SigLIP's, XLM-R's and CLIPA's text through
# the fixture tokenizers). About 8 minutes on one H100; MODELS="RN50 ViT-B-32 ViT-B-16" for the first
# three only.
#   bash scripts/gpu-check.sh target-cuda/release/pyramidclip
# DEVICE=cpu runs the CPU half only (what a machine without a GPU can check).
set -euo pipefail
BIN=$(readlink -f "${1:-target-cuda/release/pyramidclip}")
WORK=${WORK:-${OUT:-/tmp}/pyramidclip-gpu-check}
DEVICE=${DEVICE:-cuda}
status=0
MODELS=${MODELS:-RN50 ViT-B-32 ViT-B-16 coca_ViT-B-32 convnext_base_w ViT-B-16-SigLIP xlm-roberta-base-ViT-B-32 EVA02-B-16 PE-Core-B-16 ViT-L-14-CLIPA MobileCLIP-S2}
FIXTURES=$(readlink -f "$(dirname "$0")/../tests/fixtures/clip")
SIGLIP_TOKENIZER=$FIXTURES/siglip-tokenizer
SECONDS_PER_BENCH=${SECONDS_PER_BENCH:-4}

if [ "$DEVICE" != cpu ]; then
  . "$(dirname "$0")/cuda-env.sh"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

mkdir -p "$WORK"
[ "$DEVICE" != cpu ] && { "$BIN" dev kernel-check --device cuda || status=1; }
"$BIN" dev synth "$WORK/data" --images 64 --classes 8
for M in $MODELS; do
  echo "== $M"
  ck=$WORK/$M.safetensors
  [ -f "$ck" ] || "$BIN" dev random-checkpoint --visual-model "$M" "$ck"
  tok=()
  case $M in
    *SigLIP*) tok=(--tokenizer "$SIGLIP_TOKENIZER");;
    nllb*) tok=(--tokenizer "$FIXTURES/nllb-tokenizer");;
    *roberta*) tok=(--tokenizer "$FIXTURES/hf-tokenizer");;
    *CLIPA*) tok=(--tokenizer "$FIXTURES/bert-tokenizer");;
  esac
  emb() { "$BIN" embed -e "$ck" --image-list "$WORK/data/images.txt" --texts-file "$WORK/data/texts.txt" --batch-size 64 "${tok[@]}" "$@"; }
  [ -f "$WORK/$M-cpu.safetensors" ] || emb --device cpu --out "$WORK/$M-cpu.safetensors" 2>/dev/null
  echo "cpu features: $(ls -l "$WORK/$M-cpu.safetensors" | awk '{print $5}') bytes"
  [ "$DEVICE" = cpu ] && continue
  for P in fp32 fp16 bf16; do
    thr=0.999; [ "$P" = fp32 ] && thr=0.9999
    emb --device cuda --precision "$P" --out "$WORK/$M-$P.safetensors" 2>/dev/null
    echo -n "$M $P vs cpu: "
    "$BIN" dev compare "$WORK/$M-cpu.safetensors" "$WORK/$M-$P.safetensors" --min-cosine "$thr" | tr '\n' ' ' || status=1
    echo
  done
  for P in fp32 fp16; do
    "$BIN" bench --visual-model "$M" --checkpoint "$ck" --device cuda --precision "$P" --batch-size 256 --what image --seconds "$SECONDS_PER_BENCH"
    "$BIN" bench --visual-model "$M" --checkpoint "$ck" --device cuda --precision "$P" --batch-size 256 --what eval --seconds "$SECONDS_PER_BENCH"
  done
done
exit $status
