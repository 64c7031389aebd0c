#!/usr/bin/env bash
# Mirror of the upstream test.sh: same variables, same flags, one `pyramidclip eval` process per
# GPU on this node. Shards write partial results to $OUTPUT_DIR (a shared filesystem when
# HOST_NUM > 1); global rank 0 merges them (--merge) into $OUTPUT.
#
#   HOST_NUM=1 HOST_GPU_NUM=4 INDEX=0 CHIEF_IP=127.0.0.1 \
#   DATA_PATH=/data/imagenet CHECKPOINT=pretrained_model/RN50.pth.tar bash scripts/test.sh
set -euo pipefail

HOST_NUM=${HOST_NUM:-1}          # nodes
HOST_GPU_NUM=${HOST_GPU_NUM:-1}  # processes (GPUs) per node
INDEX=${INDEX:-0}                # this node's rank
CHIEF_IP=${CHIEF_IP:-127.0.0.1}  # kept for parity with upstream; no network rendezvous is needed
VISUAL_MODEL=${VISUAL_MODEL:-RN50}
DATA_PATH=${DATA_PATH:-/path/to/imagenet}   # the directory that contains val/
CHECKPOINT=${CHECKPOINT:-pretrained_model/${VISUAL_MODEL}.pth.tar}
PRECISION=${PRECISION:-fp32}
BATCH_SIZE=${BATCH_SIZE:-256}
DATASET=${DATASET:-imagenet}
OUTPUT_DIR=${OUTPUT_DIR:-results/${VISUAL_MODEL}-partials}
OUTPUT=${OUTPUT:-results/${VISUAL_MODEL}-${DATASET}.json}
BIN=${PYRAMIDCLIP:-$(command -v pyramidclip || echo target/release/pyramidclip)}
export HOST_NUM HOST_GPU_NUM INDEX CHIEF_IP

mkdir -p "$(dirname "$OUTPUT")"
if [ "$HOST_NUM" -eq 1 ] && [ "$HOST_GPU_NUM" -eq 1 ]; then
  exec "$BIN" eval --visual_model "$VISUAL_MODEL" --batch_size_test "$BATCH_SIZE" --test_dataset "$DATASET" \
    --test_data_path "$DATA_PATH" --precision "$PRECISION" --evaluate "$CHECKPOINT" --output "$OUTPUT"
fi

pids=()
for ((local_rank = 0; local_rank < HOST_GPU_NUM; local_rank++)); do
  LOCAL_RANK=$local_rank "$BIN" eval --visual_model "$VISUAL_MODEL" --batch_size_test "$BATCH_SIZE" \
    --test_dataset "$DATASET" --test_data_path "$DATA_PATH" --precision "$PRECISION" --evaluate "$CHECKPOINT" \
    --output-dir "$OUTPUT_DIR" --merge --output "$OUTPUT" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
