#!/usr/bin/env bash
# Dev-time: wall time of `eval` on a TFDS split whose records are large (3,200 records of
# ~200 KB, 621 MB in 4 shards; each image a 32x32 PNG), so reading and checking the shards
# dominates, for two binaries in alternating rounds (OLD NEW OLD NEW ...).
#
#   scripts/bench_tfds_listing.sh OLD_BINARY NEW_BINARY [ROUNDS] [TF_PYTHON]
#   (TF_PYTHON: a Python with tensorflow and Pillow, default /tmp/tfvenv/bin/python)
set -euo pipefail
old=$1 new=$2 rounds=${3:-3} py=${4:-/tmp/tfvenv/bin/python}
root=$(cd "$(dirname "$0")/.." && pwd)
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
OUT="$data/svhn_cropped/3.1.0" SRC="$root/tests/fixtures/tfds/svhn_cropped/3.1.0" \
TF_CPP_MIN_LOG_LEVEL=3 "$py" - <<'PY'
import io, json, os, shutil
import numpy as np, tensorflow as tf
from PIL import Image
src, out = os.environ["SRC"], os.environ["OUT"]
os.makedirs(out)
shutil.copy(os.path.join(src, "features.json"), out)
info = json.load(open(os.path.join(src, "dataset_info.json")))
rng = np.random.default_rng(0)
buf = io.BytesIO()
Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
png, pad = buf.getvalue(), rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
shards, per = 4, 800
for s in range(shards):
    with tf.io.TFRecordWriter(f"{out}/svhn_cropped-test.tfrecord-{s:05d}-of-{shards:05d}") as w:
        for i in range(per):
            f = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                 "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 10])),
                 "pad": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pad]))}
            w.write(tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString())
info["splits"] = [dict(s, shardLengths=[str(per)] * shards) for s in info["splits"]
                  if s["name"] == "test"]
json.dump(info, open(os.path.join(out, "dataset_info.json"), "w"))
PY
fx="$root/tests/fixtures/clip"
for r in $(seq "$rounds"); do
  for b in "$old" "$new"; do
    s=$(date +%s.%N)
    "$b" eval --checkpoint "$fx/tiny-clip-vit.pt" --model-config "$fx/tiny-clip-vit.json" \
      --test-dataset tfds/svhn_cropped --test-data-path "$data" --no-text-cache -q \
      --output "$data/out.json" > /dev/null
    e=$(date +%s.%N)
    echo "round $r $b: $(echo "$e - $s" | bc) s"
  done
done
