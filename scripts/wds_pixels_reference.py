#!/usr/bin/env python3
"""Dev-time: the pixels webdataset-based loaders hand the model (tests/fixtures/wds), for the
test that `pyramidclip` decodes webdataset members the same way. webdataset's image decoders
(`pil`, which CLIP_benchmark's loader names, and `pilrgb`, open_clip's) open the member and
`convert('RGB')` it before any transform, so the resize sees RGB where a file opened as it is
(the reference's loader, open_clip's CSV dataset) is resized in its own mode: palette and
bilevel images with NEAREST, RGBA and LA with premultiplied alpha, CMYK as CMYK.

Writes two images with partial transparency (RGBA, LA) and `convert_first.safetensors`: for
those and for the fixture images whose pixels change, the 64 x 64 crop (uint8 CHW) that
webdataset's `pil` decoder and open_clip's transforms (Resize(64, BICUBIC), CenterCrop(64),
convert('RGB'), ToTensor without the division) give, checked to differ from the crop of the
image as opened.

    /tmp/venv/bin/python scripts/wds_pixels_reference.py   # needs PIL, torchvision, webdataset, safetensors
"""
import io
import os

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from torchvision import transforms as T
from webdataset.autodecode import ImageHandler

FX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
OUT = os.path.join(FX, "wds")
FIXTURES = ["blobs_palette.png", "shapes_cmyk.jpg", "shapes_gif.gif", "shapes_palette.png"]


def alpha_images():
    y, x = np.mgrid[0:60, 0:90]
    rgb = np.stack([(x * 255 // 89), (y * 255 // 59), ((x + y) * 255 // 148)], -1).astype(np.uint8)
    alpha = ((x * 3 + y * 5) % 256).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    la = Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")
    rgba.save(os.path.join(OUT, "alpha_rgba.png"))
    la.save(os.path.join(OUT, "alpha_la.png"))
    return ["alpha_rgba.png", "alpha_la.png"]


def main():
    os.makedirs(OUT, exist_ok=True)
    made = alpha_images()
    crop = T.Compose([T.Resize(64, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(64),
                      lambda im: im.convert("RGB"), T.PILToTensor()])
    decode = ImageHandler("pil")
    out = {}
    for name in FIXTURES + made:
        path = os.path.join(FX, "images", name) if name in FIXTURES else os.path.join(OUT, name)
        data = open(path, "rb").read()
        first = crop(decode("x." + name.rsplit(".", 1)[1], data)).numpy()
        own = crop(Image.open(io.BytesIO(data))).numpy()
        assert (first != own).any(), name
        out[name] = np.ascontiguousarray(first)
        print(f"{name}: {(first != own).mean() * 100:.1f}% of levels differ from the crop as opened")
    save_file(out, os.path.join(OUT, "convert_first.safetensors"))


if __name__ == "__main__":
    main()
