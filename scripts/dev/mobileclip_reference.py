"""Dev-time: writes the MobileCLIP fixtures under tests/fixtures/clip/: open_clip's MobileCLIP
models built on plain timm ViTs (`custom_text`; the trunk pooled at its class token, its own
head the projection; CLIP's text tower under `text.`, GELU, CLIP's BPE) at toy size, their
trunks registered here with timm's options:

- `tiny-mobileclip-b.safetensors`: as `vit_base_mci_224` (MobileCLIP-B, MobileCLIP2-B): the
  convolutional stem (4x4 / 4 conv to width / 4, BatchNorm, GELU; 2x2 / 2, BatchNorm, GELU;
  2x2 / 2 with bias to width) in place of the patch conv, the positional embedding over the
  patches only (`no_embed_class`), LayerNorm eps 1e-6; the causal text tower; 64 px;
- `tiny-mobileclip2-l.pt`: as `vit_large_patch14_clip_224` (MobileCLIP2-L-14): a LayerNorm
  before the blocks (`pre_norm`, the patch conv without bias), eps 1e-5; the text tower
  without causal mask (`no_causal_mask`), pooled at the end-of-text id; 56 px, patch 14;
- `tiny-mobileclip.yml`: the two in our model-config format;
- `mobileclip.safetensors`: each model's `encode_image` / `encode_text` (normalize=False) of
  the fixture images and prompts, and the minival zero-shot top-1; and the MobileCLIP-B
  model's image features under the `datacompdr` tag's preprocessing (mean 0, std 1, bilinear,
  shortest side then centre crop).

Weights are stored in fp16 and the features computed from them in f32; the BatchNorms' running
statistics are drawn too (mean ~ N(0, 0.1), variance in [0.5, 1.5]) so that folding them is
tested.

    /tmp/venv/bin/python scripts/dev/mobileclip_reference.py   (open_clip_torch 3.3, timm 1.0)
"""
import json
import os
import sys
import tempfile
from functools import partial

import open_clip
import timm
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import save_file
from timm.layers import LayerNorm
from timm.models import register_model
from timm.models.vision_transformer import _create_vision_transformer
from timm.models.vision_transformer_hybrid import ConvStem, _create_vision_transformer_hybrid

sys.path.insert(0, os.path.dirname(__file__))
from coca_reference import minival_logits, perturb_and_save  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")
WIDTH = 32


@register_model
def pyramidclip_mci(pretrained=False, **kwargs):
    backbone = ConvStem(channels=(WIDTH // 4, WIDTH // 4, WIDTH), stride=(4, 2, 2),
                        kernel_size=(4, 2, 2), padding=0, act_layer=nn.GELU)
    args = dict(img_size=64, embed_dim=WIDTH, depth=2, num_heads=2, no_embed_class=True)
    return _create_vision_transformer_hybrid(
        "vit_base_mci_224", backbone=backbone, embed_args=dict(proj=False),
        pretrained=False, **dict(args, **kwargs))


@register_model
def pyramidclip_vit_clip(pretrained=False, **kwargs):
    args = dict(img_size=56, patch_size=14, embed_dim=WIDTH, depth=2, num_heads=2,
                pre_norm=True, norm_layer=partial(LayerNorm, eps=1e-5))
    return _create_vision_transformer("vit_large_patch14_clip_224", pretrained=False,
                                      **dict(args, **kwargs))


# name, registered trunk, image size, no_causal_mask, extension, our options
MODELS = [
    ("tiny-mobileclip-b", "pyramidclip_mci", 64, False, ".safetensors",
     "{model: vit_base_mci_224, qkv_fused: true, swiglu: false, fused_bias: true, "
     "conv_stem: true, no_embed_class: true}", 16),
    ("tiny-mobileclip2-l", "pyramidclip_vit_clip", 56, True, ".pt",
     "{model: vit_large_patch14_clip_224, qkv_fused: true, swiglu: false, fused_bias: true, "
     "norm_pre: true, eps: 1.0e-5}", 14),
]


def config(trunk, image, no_causal):
    return {"embed_dim": 24, "custom_text": True,
            "vision_cfg": {"image_size": image, "timm_model_name": trunk,
                           "timm_model_pretrained": False, "timm_pool": "token",
                           "timm_proj": None},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2,
                         "layers": 2, "no_causal_mask": no_causal}}


def yml_entry(name, image, no_causal, opts, patch):
    lines = [f"{name}:", "    embed_dim: 24", f"    image_resolution: {image}",
             "    vision_layers: 2", f"    vision_width: {WIDTH}",
             f"    vision_patch_size: {patch}", "    context_length: 77",
             "    vocab_size: 49408", "    transformer_width: 16", "    transformer_heads: 2",
             "    transformer_layers: 2", "    family: custom-text", "    activation: gelu",
             "    vision_heads: 2", f"    vision_eva: {opts}"]
    if no_causal:
        lines.append("    text_no_causal_mask: true")
    return "\n".join(lines) + "\n"


def main():
    torch.manual_seed(20261206)
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"]
    cfg_dir = tempfile.mkdtemp()
    out, yml = {}, []
    for name, trunk, image, no_causal, ext, opts, patch in MODELS:
        yml.append(yml_entry(name, image, no_causal, opts, patch))
        with open(os.path.join(cfg_dir, name + ".json"), "w") as f:
            json.dump(config(trunk, image, no_causal), f)
        open_clip.add_model_config(cfg_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        with torch.no_grad():
            for k, b in model.named_buffers():
                if k.endswith("running_mean"):
                    b.copy_((0.1 * torch.randn_like(b)).half().float())
                elif k.endswith("running_var"):
                    b.copy_((0.5 + torch.rand_like(b)).half().float())
        perturb_and_save(model, os.path.join(CLIP, name + ext))
        model.eval()
        tok = open_clip.get_tokenizer(name)
        key = name.replace("-", "_")
        with torch.no_grad():
            x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
            out[f"{key}.image_features_raw"] = model.encode_image(x, normalize=False)
            out[f"{key}.text_features_raw"] = model.encode_text(tok(prompts), normalize=False)
            out[f"{key}.minival_top1"] = minival_logits(model, tok, preprocess, man).argmax(1)
            if trunk == "pyramidclip_mci":
                # As the MobileCLIP tags preprocess (`_mccfg`): mean 0, std 1, bilinear.
                tf = open_clip.image_transform(image, is_train=False, mean=(0.0,) * 3,
                                               std=(1.0,) * 3, resize_mode="shortest",
                                               interpolation="bilinear")
                x = torch.stack([tf(Image.open(os.path.join(FX, p))) for p in images])
                out[f"{key}.image_features_tag"] = model.encode_image(x, normalize=False)
    with open(os.path.join(CLIP, "tiny-mobileclip.yml"), "w") as f:
        f.write("# scripts/dev/mobileclip_reference.py: open_clip MobileCLIP models with tiny "
                "timm ViT trunks\n" + "\n".join(yml))
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(CLIP, "mobileclip.safetensors"),
              metadata={"prompts": json.dumps(prompts), "open_clip": open_clip.__version__,
                        "torch": torch.__version__, "timm": timm.__version__})


if __name__ == "__main__":
    main()
