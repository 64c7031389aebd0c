"""Dev-time: what CLIP_benchmark's `tfds/NAME` datasets give for the TFDS miniatures in
tests/fixtures/tfds (written by make_tfds_fixture.py): its build_tfds_dataset reads them through
timm's TFDS reader, which iterates `builder.as_dataset(split, shuffle_files=False)` decoding each
image with `tf.image.decode_jpeg(..., channels=3, dct_method="INTEGER_ACCURATE")` (PNG too) and
hands `Image.fromarray(image, mode="RGB")` to the transform; the classes are the `label`
feature's names. Writes tests/fixtures/tfds/tfds_expected.json, per `tfds/NAME/SPLIT`: the
records (FILE/INDEX, found by their image bytes' sha256), labels, classes and the sha256 of each
224 x 224 crop, as make_tfds_fixture.py does for VTAB.

    /tmp/tfvenv/bin/python scripts/dev/tfds_timm_reference.py
"""
import hashlib
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import make_tfds_fixture as fx  # noqa: E402

CASES = [("caltech101", "test"), ("cifar100", "test"), ("eurosat/rgb", "train"),
         ("oxford_flowers102", "validation"), ("svhn_cropped", "train[2:8]")]


def main():
    names = fx.record_names()
    out = {}
    for name, split in CASES:
        builder = tfds.builder(name, data_dir=fx.OUT)
        raw = builder.as_dataset(split=split, shuffle_files=False,
                                 decoders={"image": tfds.decode.SkipDecoding()})
        samples, crops = [], []
        for ex in raw:
            data = ex["image"].numpy()
            img = tf.image.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE").numpy()
            rec = names[hashlib.sha256(data).hexdigest()]
            samples.append([rec[0] if len(rec) == 1 else rec, int(ex["label"].numpy())])
            crops.append(fx.crop_sha(img))
        out[f"tfds/{name}/{split}"] = {
            "samples": samples, "crops": crops,
            "classes": list(builder.info.features["label"].names)}
    with open(os.path.join(fx.OUT, "tfds_expected.json"), "w") as f:
        json.dump(out, f, indent=0)


if __name__ == "__main__":
    main()
