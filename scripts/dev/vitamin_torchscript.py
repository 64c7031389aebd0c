"""Dev-time: writes tests/fixtures/clip/tiny-vitamin-xl.ts.pt, the `tiny-vitamin-xl` fixture
(scripts/dev/vitamin_reference.py) as a TorchScript archive in fp16. timm's trunk keeps an enum
(`Format.NCHW`) that `torch.jit.save` pickles as its class applied to the member's value, which
the CLIP archives do not hold. Its features are vitamin.safetensors' (the same fp16 weights).

    /tmp/venv/bin/python scripts/dev/vitamin_torchscript.py   (open_clip_torch 3.3, timm 1.0)
"""
import json
import os
import sys
import tempfile

import open_clip
import torch

sys.path.insert(0, os.path.dirname(__file__))
from vitamin_reference import CLIP, config  # noqa: E402  (registers the tiny trunks)


def main():
    cfg_dir = tempfile.mkdtemp()
    with open(os.path.join(cfg_dir, "tiny-vitamin-xl.json"), "w") as f:
        json.dump(config("pyramidclip_vitamin_xl", 48), f)
    open_clip.add_model_config(cfg_dir)
    model = open_clip.create_model("tiny-vitamin-xl")
    sd = torch.load(os.path.join(CLIP, "tiny-vitamin-xl.pt"), map_location="cpu")
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    model.eval().half()
    path = os.path.join(CLIP, "tiny-vitamin-xl.ts.pt")
    torch.jit.save(torch.jit.script(model), path)
    print(path, os.path.getsize(path))


if __name__ == "__main__":
    main()
