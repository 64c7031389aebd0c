"""Dev-time: writes tests/fixtures/clip/squash.json and longest.json, open_clip's
`resize_mode='squash'` (Apple's DFN tags in open_clip's table use it) and `'longest'` (the
longer side to n, the aspect kept, centred on a canvas of the image's zero pixel)
preprocessing of the fixture images:

- `levels`: for 224 and 64, each image's sha256 of its 8-bit CHW levels, i.e. open_clip's
  `image_transform(n, is_train=False, resize_mode=MODE)` without its final Normalize,
  times 255 (ToTensor's exact inverse);
- `bilinear-squash.json`, `bilinear-shortest.json`: the same levels and features with
  `interpolation='bilinear'` (open_clip's CLIPA and PE tags);
- `features`: the tiny ViT's (tests/fixtures/clip/tiny-clip-vit, 64 px) image features with
  `create_model_and_transforms(..., image_resize_mode=MODE)` and OpenAI's mean and std.

    /tmp/venv/bin/python scripts/dev/squash_reference.py   (open_clip_torch 3.3, Pillow)
"""
import hashlib
import json
import os

import open_clip
import torch
from open_clip.transform import image_transform
from PIL import Image

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")


def levels_sha(transform, img):
    # Compose([Resize, _convert_to_rgb, ToTensor, Normalize]): all but the Normalize.
    t = img
    for step in transform.transforms[:-1]:
        t = step(t)
    lv = torch.round(t * 255).to(torch.uint8).contiguous().numpy()
    return hashlib.sha256(lv.tobytes()).hexdigest()


def main():
    images = json.load(open(os.path.join(FX, "manifest.json")))["images"]
    for mode in ("squash", "longest"):
        write(images, mode)
    for mode in ("squash", "shortest"):
        levels = {}
        for n in (224, 64):
            tf = image_transform(n, is_train=False, resize_mode=mode, interpolation="bilinear")
            levels[str(n)] = [levels_sha(tf, Image.open(os.path.join(FX, p))) for p in images]
        model, _, preprocess = open_clip.create_model_and_transforms(
            "tiny-clip-vit", pretrained=os.path.join(CLIP, "tiny-clip-vit.pt"),
            image_resize_mode=mode, image_interpolation="bilinear")
        model.eval()
        with torch.no_grad():
            x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
            feats = model.encode_image(x)
        out = {"images": images, "resize_mode": mode, "interpolation": "bilinear",
               "levels_sha256": levels, "features": feats.tolist()}
        with open(os.path.join(CLIP, f"bilinear-{mode}.json"), "w") as f:
            json.dump(out, f)


def write(images, mode):
    levels = {}
    for n in (224, 64):
        tf = image_transform(n, is_train=False, resize_mode=mode)
        levels[str(n)] = [levels_sha(tf, Image.open(os.path.join(FX, p))) for p in images]
    open_clip.add_model_config(CLIP)
    model, _, preprocess = open_clip.create_model_and_transforms(
        "tiny-clip-vit", pretrained=os.path.join(CLIP, "tiny-clip-vit.pt"),
        image_resize_mode=mode)
    model.eval()
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
        feats = model.encode_image(x)
    out = {"images": images, "resize_mode": mode, "levels_sha256": levels,
           "features": feats.tolist()}
    with open(os.path.join(CLIP, f"{mode}.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
