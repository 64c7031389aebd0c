"""Dev-time: writes tests/fixtures/tfds/interleave.json, the order in which tensorflow_datasets
hands over the examples of a split read with `shuffle_files=False` (what task_adaptation's
`get_tf_data(..., for_eval=True)` and timm's reader in evaluation both ask for): TFDS
interleaves the split's files, 16 open at a time, 16 examples from each in turn.

A small dataset of integer ids is prepared by TFDS itself in many shards (more files than the
interleave's 16 slots, more examples per file than its 16-example blocks); the examples each
shard holds are read back with `tf.data.TFRecordDataset`, so each id is known as (file, index
in file). Then several split strings are read through `builder.as_dataset` and their order is
written as [file, index] pairs, with the shard lengths from dataset_info.json.

    /tmp/tfvenv/bin/python scripts/dev/tfds_interleave_reference.py
    (tensorflow-cpu, tensorflow-datasets)
"""
import glob
import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "tfds", "interleave.json")
DATA = "/tmp/tfds_interleave"
SIZES = {"train": 430, "test": 47}


class Order(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"id": tf.int64}))

    def _split_generators(self, dl_manager):
        return {s: self._generate_examples(s, n) for s, n in SIZES.items()}

    def _generate_examples(self, split, n):
        # Ids unique across splits (test's from 10000), so each names one record.
        base = 10000 if split == "test" else 0
        for i in range(n):
            yield f"{split}{i}", {"id": base + i}


def main():
    shutil.rmtree(DATA, ignore_errors=True)
    builder = Order(data_dir=DATA)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=21))
    where = {}
    lengths = {}
    for split in SIZES:
        files = sorted(glob.glob(os.path.join(builder.data_dir, f"order-{split}.tfrecord-*")))
        lengths[split] = [s for s in builder.info.splits[split].shard_lengths]
        assert len(files) == len(lengths[split])
        for f, path in enumerate(files):
            recs = list(tf.data.TFRecordDataset(path))
            assert len(recs) == lengths[split][f]
            for i, r in enumerate(recs):
                ex = tf.train.Example.FromString(r.numpy())
                where[ex.features.feature["id"].int64_list.value[0]] = [split, f, i]
    cases = []
    for spec in ["train", "test", "train[5:333]", "train[:80%]", "train[80%:]",
                 "train[17:40]+test", "test[-20:]+train[100:150]"]:
        ds = builder.as_dataset(split=spec, shuffle_files=False)
        order = [int(ex["id"].numpy()) for ex in ds]
        cases.append({"split": spec, "order": [where[i] for i in order]})
    with open(OUT, "w") as f:
        json.dump({"shard_lengths": lengths, "cases": cases}, f)
    for c in cases:
        print(c["split"], len(c["order"]), c["order"][:20])


if __name__ == "__main__":
    main()
