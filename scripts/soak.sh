#!/usr/bin/env bash
# Soak test (not CI): N small JPEGs (hard links of one fixture image, spread over 10 classes)
# through `pyramidclip eval` with the tiny ViT, once uninterrupted and once interrupted three
# times at random points (SIGINT, SIGTERM, SIGINT) and resumed. Checks: the final predictions CSV
# byte-identical to the uninterrupted one, exit 130 at each interrupt, no temporary files left;
# prints the wall time and the peak RSS at 10%, 50% and 100% of the uninterrupted run.
#
#   bash scripts/soak.sh [target/release/pyramidclip] [N=200000]
#   WDS=1 bash scripts/soak.sh ...   # the same images as webdataset shards (CLIP_benchmark layout)
set -euo pipefail
BIN=$(readlink -f "${1:-target/release/pyramidclip}")
N=${2:-200000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/pyramidclip-soak.XXXXXX)}
FIX=$ROOT/tests/fixtures
mkdir -p "$WORK/data"
for c in $(seq 0 9); do mkdir -p "$WORK/data/c$c"; done
if [ ! -f "$WORK/data/c9/$(printf 'img%07d.jpg' $((N - 1)))" ]; then
  python3 - "$FIX/images/shapes_small.jpg" "$WORK" "$N" <<'EOF'
import os, shutil, sys
src, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
# A file takes at most ~65,000 hard links: link from 16 copies.
copies = [os.path.join(work, f"src{k}.jpg") for k in range(16)]
for c in copies:
    shutil.copyfile(src, c)
for i in range(n):
    dst = os.path.join(work, "data", f"c{i % 10}", f"img{i:07d}.jpg")
    if not os.path.exists(dst):
        os.link(copies[i % 16], dst)
EOF
fi
seq 0 9 | sed 's/^/class /' > "$WORK/names.txt"
DATA=$WORK/data
if [ "${WDS:-0}" = 1 ]; then
  DATA=$WORK/wds
  if [ ! -f "$DATA/test/nshards.txt" ]; then
    python3 - "$WORK" "$N" <<'PY'
import io, os, sys, tarfile
work, n = sys.argv[1], int(sys.argv[2])
files = sorted((c, f) for c in os.listdir(f"{work}/data") for f in os.listdir(f"{work}/data/{c}"))
per = 10000
os.makedirs(f"{work}/wds/test", exist_ok=True)
shards = (len(files) + per - 1) // per
for s in range(shards):
    with tarfile.open(f"{work}/wds/test/{s}.tar", "w") as t:
        for k, (c, f) in enumerate(files[s * per:(s + 1) * per]):
            key = f"{c}_{f[:-4]}"
            t.add(f"{work}/data/{c}/{f}", arcname=key + ".jpg")
            b = c[1:].encode()
            ti = tarfile.TarInfo(key + ".cls"); ti.size = len(b); t.addfile(ti, io.BytesIO(b))
open(f"{work}/wds/test/nshards.txt", "w").write(f"{shards}\n")
PY
  fi
fi
run() { # run CSV [extra flags...]; replaces the (sub)shell, so `run ... &` gives the binary's PID
  local csv=$1; shift
  exec "$BIN" eval -e "$FIX/tiny-ViT.pth.tar" --model-config "$FIX/tiny-models.yml" \
    --test-data-path "$DATA" --classnames "$WORK/names.txt" --text-cache "$WORK/cache" \
    --batch-size-test 64 --quiet --save-predictions "$csv" "$@"
}
rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
done_images() { python3 -c "
import glob, json
d = [json.load(open(p)).get('done', 0) for p in glob.glob('$WORK/cache/progress/*.json')]
print(max(d) if d else 0)"; }

echo "== uninterrupted run over $N images"
start=$(date +%s.%N)
run "$WORK/full.csv" & pid=$!
marks=""
for pct in 10 50; do
  while kill -0 "$pid" 2>/dev/null && [ "$(done_images)" -lt $((N * pct / 100)) ]; do sleep 0.5; done
  marks="$marks ${pct}%:$(rss_kb "$pid")KB"
done
last=0
while kill -0 "$pid" 2>/dev/null; do last=$(rss_kb "$pid"); sleep 0.5; done
wait "$pid"
end=$(date +%s.%N)
echo "wall $(python3 -c "print(round($end - $start, 1))") s; peak RSS$marks ~100%:${last}KB"

echo "== interrupted three times, resumed"
rm -rf "$WORK/cache/progress" "$WORK/resumed.csv"
resume=""
for sig in INT TERM INT; do
  run "$WORK/resumed.csv" $resume 2>"$WORK/stderr" & pid=$!
  target=$(( $(done_images) + 1000 + RANDOM % (N / 5) ))
  while kill -0 "$pid" 2>/dev/null && [ "$(done_images)" -lt "$target" ]; do sleep 0.2; done
  kill -s "$sig" "$pid"
  set +e; wait "$pid"; code=$?; set -e
  echo "SIG$sig after ~$(done_images) images: exit $code ($(grep -o 'interrupted after [0-9]* of [0-9]* images' "$WORK/stderr"))"
  [ "$code" = 130 ] || { echo "FAIL: expected exit 130"; exit 1; }
  [ ! -e "$WORK/resumed.csv" ] || { echo "FAIL: a result was written after an interrupt"; exit 1; }
  resume=--resume
done
(run "$WORK/resumed.csv" --resume)
if cmp -s "$WORK/full.csv" "$WORK/resumed.csv"; then
  echo "byte-identical: yes ($(wc -l < "$WORK/full.csv") lines, sha256 $(sha256sum < "$WORK/full.csv" | cut -c1-16))"
else
  echo "FAIL: the resumed CSV differs"; exit 1
fi
left=$(find "$WORK" -name '*.tmp*' -o -name '*.lock' | wc -l)
echo "temporary files left: $left"
[ "$left" = 0 ] || exit 1
# The progress file and the spooled prediction rows go once the result is written.
spool=$(find "$WORK/cache/progress" -type f 2>/dev/null | wc -l)
echo "progress/spool files left: $spool"
[ "$spool" = 0 ] || exit 1
echo PASS
