"""Dev-time: CLIP_benchmark's zero-shot classification of the VTAB images that
scripts/dev/make_tfds_fixture.py read through task_adaptation (/tmp/tfds_arrays.pkl), with the
open_clip model tests/fixtures/clip/tiny-clip-vit: each image as VTABIterableDataset gives it
(`Image.fromarray(image, mode="RGB")`) through open_clip's preprocess; class vectors from
CLIP_benchmark's templates for the task (its en_zeroshot_classification_templates.json, looked
up as vtab/NAME, NAME, imagenet1k), each the normalised mean of the normalised prompt features;
logits 100 * image @ classifier, as clip_benchmark/metrics/zeroshot_classification.py scores
them. Writes tests/fixtures/tfds/zeroshot.json: per `vtab/NAME/SPLIT`, the top-1 and top-5
accuracy and each image's top-5 classes.

    CB_TEMPLATES=.../en_zeroshot_classification_templates.json \\
        /tmp/venv/bin/python scripts/dev/tfds_zeroshot_reference.py   # torch, open_clip_torch
"""
import json
import os
import pickle

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CLIP = os.path.join(ROOT, "tests", "fixtures", "clip")


def main():
    cfg = json.load(open(os.path.join(CLIP, "tiny-clip-vit.json")))
    open_clip.add_model_config(CLIP)  # registers tiny-clip-vit from its JSON
    model, _, preprocess = open_clip.create_model_and_transforms(
        "tiny-clip-vit", pretrained=os.path.join(CLIP, "tiny-clip-vit.pt"))
    assert cfg["vision_cfg"]["image_size"] == 64
    model.eval()
    tokenizer = open_clip.get_tokenizer("tiny-clip-vit")
    templates = json.load(open(os.environ["CB_TEMPLATES"]))
    arrays = pickle.load(open("/tmp/tfds_arrays.pkl", "rb"))
    out = {}
    for key in ["vtab/svhn/test", "vtab/resisc45/test", "vtab/caltech101/test",
                "vtab/dsprites_label_orientation/test", "vtab/smallnorb_label_elevation/test",
                "vtab/clevr_closest_object_distance/test", "vtab/dmlab/test",
                "vtab/cars/test", "vtab/food101/test"]:
        images, labels, classes = arrays[key]
        name = key.split("/")[1]
        t = next(templates[k] for k in (f"vtab/{name}", name, "imagenet1k") if k in templates)
        with torch.no_grad():
            weights = []
            for c in classes:
                e = model.encode_text(tokenizer([x.format(c=c) for x in t]))
                e = F.normalize(e, dim=-1).mean(dim=0)
                weights.append(e / e.norm())
            classifier = torch.stack(weights, dim=1)
            x = torch.stack([preprocess(Image.fromarray(a, mode="RGB")) for a in images])
            feats = F.normalize(model.encode_image(x), dim=-1)
            logits = 100.0 * feats @ classifier
        k = min(5, len(classes))
        top = logits.topk(k, 1, True, True)[1]
        y = torch.tensor(labels)
        acc1 = (top[:, 0] == y).float().mean().item()
        acc5 = (top == y[:, None]).any(1).float().mean().item()
        out[key] = {"acc1": acc1, "acc5": acc5, "top5": top.tolist(), "labels": labels}
    with open(os.path.join(ROOT, "tests", "fixtures", "tfds", "zeroshot.json"), "w") as f:
        json.dump(out, f, indent=0)


if __name__ == "__main__":
    main()
