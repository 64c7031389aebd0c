#!/usr/bin/env bash
# Builds the CUDA binary on a machine without a GPU or a CUDA installation: a CUDA 13.0 toolkit
# comes from NVIDIA's PyPI wheels (pinned to 13.0.x: the lent GPU machines run driver 580 / CUDA
# 13.0, which cannot load PTX from a newer toolkit), laid out under .cuda/, then
#   cargo build --release --features cuda   (CARGO_TARGET_DIR=target-cuda)
# Result: target-cuda/release/pyramidclip, one x86-64 binary (kernels embedded as PTX for sm_90).
# Set CUDNN=1 to add cuDNN, CUDA_COMPUTE_CAP for another GPU generation.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD/.cuda
SITE=$ROOT/site
CUDA=$ROOT/toolkit
PY=${PYTHON:-python3}

if [ ! -x "$CUDA/bin/nvcc" ]; then
  echo "installing the CUDA 13.0 toolkit wheels into $SITE"
  pkgs=(
    "nvidia-cuda-nvcc==13.0.88"
    "nvidia-cuda-crt==13.0.88"
    "nvidia-nvvm==13.0.88"
    "nvidia-cuda-runtime==13.0.96"
    "nvidia-cuda-cccl==13.0.85"
    "nvidia-cuda-nvrtc==13.0.88"
    "nvidia-cublas==13.0.*"
    "nvidia-curand==10.4.0.*"
  )
  [ "${CUDNN:-0}" = 1 ] && pkgs+=("nvidia-cudnn-cu13")
  rm -rf "$SITE"
  "$PY" -m pip install --quiet --no-deps --upgrade --target "$SITE" "${pkgs[@]}"
  # One CUDA_ROOT with bin/, include/, lib64/ and nvvm/ as a toolkit has them.
  rm -rf "$CUDA"
  mkdir -p "$CUDA/bin" "$CUDA/include" "$CUDA/lib64"
  # CUDA 13 wheels share one tree (nvidia/cu13); older ones use one directory per component.
  for d in "$SITE"/nvidia/*/; do
    [ -d "$d/bin" ] && cp -rs "$d/bin/." "$CUDA/bin/" 2>/dev/null || true
    [ -d "$d/include" ] && cp -rs "$d/include/." "$CUDA/include/" 2>/dev/null || true
    [ -d "$d/lib" ] && cp -rs "$d/lib/." "$CUDA/lib64/" 2>/dev/null || true
    [ -d "$d/nvvm" ] && cp -rs "$d/nvvm" "$CUDA/" 2>/dev/null || true
  done
  # The wheels ship versioned sonames only; add the unversioned names the linker looks for.
  for f in "$CUDA"/lib64/*.so.*; do
    base=${f%%.so.*}.so
    [ -e "$base" ] || ln -s "$(basename "$f")" "$base"
  done
  chmod +x "$CUDA"/bin/* "$CUDA"/nvvm/bin/* 2>/dev/null || true
fi

# The driver library (libcuda.so.1) comes with the GPU driver, not with the wheels. Link against
# a stub with its soname; the real one is found at run time on the GPU machine.
if [ ! -e "$CUDA/lib64/stubs/libcuda.so" ]; then
  mkdir -p "$CUDA/lib64/stubs"
  echo 'void pyramidclip_libcuda_stub(void) {}' > "$ROOT/stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib64/stubs/libcuda.so" "$ROOT/stub.c"
fi

export CUDA_ROOT=$CUDA CUDA_PATH=$CUDA CUDA_TOOLKIT_ROOT_DIR=$CUDA
export PATH=$CUDA/bin:$PATH
export LD_LIBRARY_PATH=$CUDA/lib64:${LD_LIBRARY_PATH:-}
export LIBRARY_PATH=$CUDA/lib64:$CUDA/lib64/stubs:${LIBRARY_PATH:-}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}
nvcc --version | tail -2
features=cuda
[ "${CUDNN:-0}" = 1 ] && features=cudnn
# Link against the stub; while the linker names driver symbols the stub lacks (it lists at most
# 20 per run), add them and relink.
touch "$ROOT/symbols.txt"
for attempt in $(seq 1 30); do
  if cargo build --release --features "$features" 2>"$ROOT/build.err"; then break; fi
  new=$(grep -o 'undefined symbol: cu[A-Za-z0-9_]*' "$ROOT/build.err" | awk '{print $3}' | sort -u)
  if [ -z "$new" ]; then cat "$ROOT/build.err" >&2; exit 1; fi
  sort -u "$ROOT/symbols.txt" <(echo "$new") -o "$ROOT/symbols.txt"
  sed 's/.*/int &(void) { return 999; }/' "$ROOT/symbols.txt" > "$ROOT/stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib64/stubs/libcuda.so" "$ROOT/stub.c"
  echo "libcuda stub: $(wc -l < "$ROOT/symbols.txt") driver symbols, relinking"
done
bin=$CARGO_TARGET_DIR/release/pyramidclip
ls -l "$bin"
echo "built $bin ($(du -h "$bin" | cut -f1)); run scripts/gpu-check.sh on a GPU machine"
