"""Dev-time: writes tests/fixtures/clip/normalize_half.json, open_clip's image features of the
fixture images for the tiny ViT (tests/fixtures/clip/tiny-clip-vit) when the preprocessing
normalises with mean and std 0.5, as open_clip's tag table sets for LAION's ViT-L-14
`laion2b_s32b_b82k` (`create_model_and_transforms(..., image_mean=..., image_std=...)`).

    /tmp/venv/bin/python scripts/dev/normalize_reference.py   (open_clip_torch, Pillow)
"""
import json
import os

import open_clip
import torch
from PIL import Image

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")


def main():
    open_clip.add_model_config(CLIP)
    model, _, preprocess = open_clip.create_model_and_transforms(
        "tiny-clip-vit", pretrained=os.path.join(CLIP, "tiny-clip-vit.pt"),
        image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
    model.eval()
    images = json.load(open(os.path.join(FX, "manifest.json")))["images"]
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
        feats = model.encode_image(x)
    out = {"images": images, "mean": [0.5] * 3, "std": [0.5] * 3,
           "features": feats.tolist()}
    with open(os.path.join(CLIP, "normalize_half.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
