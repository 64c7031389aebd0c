#!/usr/bin/env python3
"""Dev-time: tiny CLIP-layout checkpoints written by open_clip, and open_clip's own outputs for
them (tests/fixtures/clip): a ViT with QuickGELU as a TorchScript archive (torch.jit.script +
torch.jit.save, what OpenAI's releases are), a ViT with GELU and a ModifiedResNet as state dicts
(fp16 storage, values rounded to fp16 first so the fp32 reference is exact). The features are
open_clip's encode_image (its own preprocess) / encode_text on the fixture images and prompts;
the minival predictions use the fixture's class names and templates. A fourth, a ViT with
open_clip's mlp_ratio and layer scale, is stored as a state dict.

    python3 scripts/clip_reference.py   # needs torch, open_clip_torch, safetensors or numpy
"""
import json
import os

import numpy as np
import open_clip
import torch
from PIL import Image

FX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
OUT = os.path.join(FX, "clip")

TEXT = {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 3}
MODELS = {
    # name: (open_clip model config, how it is stored)
    "tiny-clip-vit-quickgelu": ({"embed_dim": 24, "quick_gelu": True,
                                 "vision_cfg": {"image_size": 64, "layers": 3, "width": 64,
                                                "head_width": 32, "patch_size": 16},
                                 "text_cfg": TEXT}, "torchscript"),
    "tiny-clip-vit": ({"embed_dim": 24,
                       "vision_cfg": {"image_size": 64, "layers": 3, "width": 64,
                                      "head_width": 32, "patch_size": 16},
                       "text_cfg": TEXT}, "state_dict"),
    "tiny-clip-rn": ({"embed_dim": 24,
                      "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8,
                                     "patch_size": None},
                      "text_cfg": TEXT}, "state_dict"),
    # open_clip's variations of the ViT block: an MLP of mlp_ratio x width (ViT-g-14's and
    # ViT-bigG-14's kind) and layer scale (ls_1 / ls_2 gains, ViT-M-16-alt's kind).
    "tiny-clip-vit-ls": ({"embed_dim": 24,
                          "vision_cfg": {"image_size": 64, "layers": 3, "width": 64,
                                         "head_width": 32, "patch_size": 16, "mlp_ratio": 2.5,
                                         "ls_init_value": 0.5},
                          "text_cfg": TEXT}, "state_dict"),
}


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = v.astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = json.load(open(os.path.join(FX, "manifest.json")))
    images = [os.path.join(FX, p) for p in manifest["images"]]
    prompts = manifest["prompts"]
    minival = [os.path.join(FX, p) for p in manifest["minival"]["files"]]
    tok = open_clip.get_tokenizer("ViT-B-32")
    expected, summary = {}, {}
    for seed, (name, (cfg, store)) in enumerate(MODELS.items()):
        torch.manual_seed(100 + seed)
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        open_clip.factory._MODEL_CONFIGS[name] = cfg
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        model.eval()
        with torch.no_grad():
            for p in model.parameters():
                # Random BN statistics and biases so every path matters; values fp16-exact.
                p.copy_(p + 0.02 * torch.randn_like(p))
                p.copy_(p.half().float())
            for n, b in model.named_buffers():
                if "running_var" in n:
                    b.copy_((0.5 + torch.rand_like(b)).half().float())
                elif "running_mean" in n:
                    b.copy_((0.1 * torch.randn_like(b)).half().float())
        path = os.path.join(OUT, name + (".ts.pt" if store == "torchscript" else ".pt"))
        if store == "torchscript":
            torch.jit.save(torch.jit.script(model), path)
        else:
            sd = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
            torch.save(sd, path)
        with torch.no_grad():
            px = torch.stack([preprocess(Image.open(p)) for p in images])
            img = model.encode_image(px).float()
            txt = model.encode_text(tok(prompts)).float()
            mpx = torch.stack([preprocess(Image.open(p)) for p in minival])
            mimg = model.encode_image(mpx).float()
            mimg = mimg / mimg.norm(dim=-1, keepdim=True)
            cls = []
            for c in manifest["classnames"]:
                e = model.encode_text(tok([t.replace("{}", c) for t in manifest["templates"]])).float()
                e = e / e.norm(dim=-1, keepdim=True)
                e = e.mean(0)
                cls.append(e / e.norm())
            logits = 100.0 * mimg @ torch.stack(cls).T
        key = name.replace("-", "_")
        expected[f"{key}.image_features_raw"] = img.numpy()
        expected[f"{key}.text_features_raw"] = txt.numpy()
        summary[name] = {"checkpoint": os.path.basename(path), "config": f"{name}.json",
                         "activation": "quickgelu" if cfg.get("quick_gelu") else "gelu",
                         "minival_pred_top1": logits.argmax(1).tolist()}
    save_safetensors(os.path.join(OUT, "expected.safetensors"), expected)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump({"open_clip": open_clip.__version__, "torch": torch.__version__,
                   "models": summary}, f, indent=1)
        f.write("\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
