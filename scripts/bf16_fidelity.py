#!/usr/bin/env python3
"""Dev-time bf16 fidelity on full-size models: features from `pyramidclip embed --precision bf16`
(native engine) against the same binary in fp32, next to PyTorch's own
`torch.autocast("cpu", bfloat16)` against PyTorch fp32 on the same weights, plus zero-shot top-1
agreement over the 1,000 ImageNet prompts "a photo of a {c}.".

Weights: open_clip's `create_model(name, pretrained=None)`. open_clip zero-initialises every
ResNet block's last BatchNorm and keeps unit running statistics (timm's FastViT, MobileCLIP-S*'s
tower, starts its layer scales at 1e-5), which makes a random RN50's or MobileCLIP-S1's image
features almost identical for every image (1 - cosine between images ~1e-5 or less), so no
fidelity can be read off them; for towers with BatchNorm the layer scales are re-drawn
(0.2 (1 + 0.1 N(0,1))) and the BatchNorm scales (1 + 0.1 N(0,1), times 0.2 for each block's last one
as in trained ResNets; shifts 0.05 N(0,1)) and the running statistics calibrated on the images themselves (train-mode passes,
cumulative averages), giving features that differ between images as trained ones do.

    python3 scripts/bf16_fidelity.py target/release/pyramidclip [OUT_DIR] [MODELS...]
Images: tests/fixtures/images plus SYNTH (env, default 64) synthetic JPEGs (`pyramidclip dev
synth`); top-1 agreement over 87 images moves by 1.1 points per changed prediction, so the
session-12 figures use SYNTH=489 (512 images).
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import open_clip
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from clip_fullsize_check import cosines  # noqa: E402
from retrieval_reference import load_safetensors  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FX = os.path.join(ROOT, "tests", "fixtures")


def summary(ref_img, ref_txt, img, txt):
    """Per-row cosines (raw and with the mean image feature removed) and top-1 agreement."""
    ref_img, ref_txt, img, txt = (np.asarray(x, np.float64) for x in (ref_img, ref_txt, img, txt))
    m = ref_img.mean(0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    ref_logits = unit(ref_img) @ unit(ref_txt).T
    logits = unit(img) @ unit(txt).T
    same = ref_logits.argmax(1) == logits.argmax(1)
    top2 = np.sort(ref_logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    return {
        "image_min_cos": float(cosines(ref_img, img).min()),
        "image_min_centered_cos": float(cosines(ref_img - m, img - m).min()),
        "text_min_cos": float(cosines(ref_txt, txt).min()),
        "top1_agreement": float(same.mean()),
        # How close to a tie the changed predictions were (cosine logits).
        "median_top1_margin": float(np.median(margin)),
        "largest_changed_margin": float(margin[~same].max()) if (~same).any() else 0.0,
    }


def calibrate(model, batch):
    """Trained-like BatchNorm statistics and residual scales for a random convolutional tower
    (the ResNets, FastViT's MobileCLIP-S*): see the module docstring."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.visual.named_parameters():
            # FastViT's layer scales start at 1e-5, which leaves every block's branch out.
            if name.endswith("layer_scale.gamma"):
                p.copy_(0.2 * (1 + 0.1 * torch.randn(p.shape, generator=g)))
        for name, bn in model.visual.named_modules():
            if not isinstance(bn, torch.nn.BatchNorm2d):
                continue
            # The residual branches' last scale small, as in trained ResNets.
            scale = 0.2 if name.endswith("bn3") else 1.0
            bn.weight.copy_(scale * (1 + 0.1 * torch.randn(bn.weight.shape, generator=g)))
            bn.bias.copy_(0.05 * torch.randn(bn.bias.shape, generator=g))
            bn.reset_running_stats()
            bn.momentum = None
        model.visual.train()
        model.visual(batch)
    model.eval()


def main():
    binary = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
    os.makedirs(out, exist_ok=True)
    names = sys.argv[3:] or ["RN50", "ViT-B-32", "ViT-B-16"]
    manifest = json.load(open(os.path.join(FX, "manifest.json")))
    images = [os.path.join(FX, p) for p in manifest["images"]]
    synth = os.path.join(out, "synth")
    subprocess.run([binary, "dev", "synth", synth, "--images", os.environ.get("SYNTH", "64")], check=True,
                   capture_output=True)
    images += open(os.path.join(synth, "images.txt")).read().split()
    list_file = os.path.join(out, "images.txt")
    open(list_file, "w").write("\n".join(images) + "\n")
    classes = open(os.path.join(ROOT, "configs", "data", "imagenet_classnames.txt")).read().splitlines()
    prompts = [f"a photo of a {c}." for c in classes if c]
    prompt_file = os.path.join(out, "prompts.txt")
    open(prompt_file, "w").write("\n".join(prompts) + "\n")
    tok = open_clip.get_tokenizer("ViT-B-32")
    report = {}
    for name in names:
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        model.eval()
        batch = torch.stack([preprocess(Image.open(p)) for p in images])
        if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.visual.modules()):
            calibrate(model, batch)
        tokens = tok(prompts)
        torch.set_num_threads(2)
        with torch.no_grad():
            ref = (model.encode_image(batch).numpy(), model.encode_text(tokens).numpy())
            with torch.autocast("cpu", dtype=torch.bfloat16):
                amp = (model.encode_image(batch).float().numpy(),
                       model.encode_text(tokens).float().numpy())
        sd_path = os.path.join(out, f"{name}.bin")
        torch.save(model.state_dict(), sd_path)
        ours = {}
        for precision in ["fp32", "bf16"]:
            feats = os.path.join(out, f"{name}.{precision}.safetensors")
            cmd = [binary, "embed", "--checkpoint", sd_path, "--visual-model", name,
                   "--image-list", list_file, "--texts-file", prompt_file, "--raw",
                   "--engine", "native", "--precision", precision, "--out", feats]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{name} {precision}: {r.stderr.strip()}")
            f = load_safetensors(feats)
            ours[precision] = (f["image_features"], f["text_features"])
        spread = 1 - (lambda n: (n @ n.T).min())(ref[0] / np.linalg.norm(ref[0], axis=1, keepdims=True))
        report[name] = {
            "images": len(images), "prompts": len(prompts), "image_spread": float(spread),
            "ours_fp32_vs_open_clip_fp32": summary(*ref, *ours["fp32"]),
            "ours_bf16_vs_ours_fp32": summary(*ours["fp32"], *ours["bf16"]),
            "torch_autocast_vs_torch_fp32": summary(*ref, *amp),
        }
        print(name, json.dumps(report[name], indent=1), flush=True)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
