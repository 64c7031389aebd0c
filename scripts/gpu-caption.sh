#!/usr/bin/env bash
# GPU captioning check, prepared for a device call (repo root, no Rust; python3 for the
# caption file): a random full-size CoCa (our `dev random-checkpoint`, decoder included) and
# IMAGES synthetic photos, captioned on the GPU (candle engine, fp32 and bf16) and on the
# machine's CPU (native engine, fp32), by the carried binary and, when given, the previous
# build. Prints each run's wall time and `elapsed_s`, and how many images get the same ids as
# the first run. Logs go to $OUT.
#   bash scripts/gpu-caption.sh .carry/pyramidclip.xz [.carry/pyramidclip-base.xz]
# Knobs: MODEL (coca_ViT-B-32), IMAGES (256), BATCH (64), DEVICE (cuda; cpu for a dry run).
set -uo pipefail
LOGS=${OUT:-/tmp}
W=/tmp/pc-caption
mkdir -p /tmp/pc-bin "$LOGS" "$W"
unpack() {
  case "$1" in
    *.xz) xz -dc "$1" > "$2" ;;
    *) cp "$1" "$2" ;;
  esac
  chmod +x "$2"
}
unpack "$1" /tmp/pc-bin/new || exit 1
bins=(new)
if [ -n "${2:-}" ]; then
  unpack "$2" /tmp/pc-bin/base && bins+=(base)
fi
DIR=$(cd "$(dirname "$0")" && pwd)
[ -f "$DIR/cuda-env.sh" ] && . "$DIR/cuda-env.sh"
MODEL=${MODEL:-coca_ViT-B-32}
IMAGES=${IMAGES:-256}
BATCH=${BATCH:-64}
DEVICE=${DEVICE:-cuda}
B=/tmp/pc-bin/new
$B dev random-checkpoint --visual-model "$MODEL" "$W/coca.safetensors" || exit 1
$B dev synth "$W/synth" --images "$IMAGES" 2>/dev/null || exit 1
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
ims = open(f"{w}/synth/images.txt").read().split()
json.dump({"images": [{"id": i, "file_name": p} for i, p in enumerate(ims)],
           "annotations": [{"id": i, "image_id": i, "caption": "a photo of an object."}
                           for i in range(len(ims))]}, open(f"{w}/caps.json", "w"))
PY
run() { # bin device engine precision
  local tag="$1-$2-$3-$4" t0 t1
  t0=$(date +%s.%N)
  /tmp/pc-bin/"$1" captioning --checkpoint "$W/coca.safetensors" --visual-model "$MODEL" \
    --captions "$W/caps.json" --images-root / --device "$2" --engine "$3" --precision "$4" \
    --batch-size-test "$BATCH" --output "$W/$tag.json" --save-captions "$W/$tag.jsonl" -q \
    > "$LOGS/$tag.log" 2>&1
  local rc=$?
  t1=$(date +%s.%N)
  python3 - "$W" "$tag" "$rc" "$t0" "$t1" <<'PY'
import json, os, sys
w, tag, rc, t0, t1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
if rc != 0:
    print(f"{tag}: exit {rc}"); sys.exit()
ids = [json.loads(l)["ids"] for l in open(f"{w}/{tag}.jsonl")]
first = f"{w}/first.json"
if not os.path.exists(first):
    json.dump({"tag": tag, "ids": ids}, open(first, "w"))
ref = json.load(open(first))
same = sum(a == b for a, b in zip(ids, ref["ids"]))
r = json.load(open(f"{w}/{tag}.json"))
print(f"{tag}: wall {t1 - t0:.1f} s, elapsed_s {r.get('elapsed_s', 0):.1f}, device {r.get('device')}, "
      f"dtype {r.get('dtype')}, ids equal to {ref['tag']} on {same}/{len(ids)}")
PY
}
rm -f "$W/first.json"
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
  for b in "${bins[@]}"; do
    run "$b" "$DEVICE" candle fp32
    run "$b" "$DEVICE" candle bf16
  done
  run new cpu native fp32
} 2>&1 | tee "$LOGS/caption.log"
