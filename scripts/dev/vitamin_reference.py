"""Dev-time: writes the ViTamin fixtures under tests/fixtures/clip/: open_clip's ViTamin models
(`custom_text`; a timm ViTamin trunk: convolutional stages in place of the patch conv, no class
token, GeGLU MLPs, the mean of the tokens through `fc_norm`, then open_clip's `head.proj`
without bias (`timm_pool: ""`, `timm_proj: linear`); CLIP's text tower under `text.`, GELU,
CLIP's BPE) at toy size, their trunks registered here through timm's own ViTamin builder:

- `tiny-vitamin.safetensors`: stages 8 and 16 wide (stem 8), 2 and 3 deep, width 32, learned
  positions, 64 px (a 4 x 4 token grid);
- `tiny-vitamin-xl.pt`: as ViTamin-XL, no positional embedding (`pos_embed='none'`); a stem
  12 wide before stages 16 and 24 wide (both shortcuts widen), 48 px (sides 24, 12, 6, then
  a 3 x 3 token grid);
- `tiny-vitamin.yml`: the two in our model-config format;
- `vitamin.safetensors`: each model's `encode_image` / `encode_text` (normalize=False) of the
  fixture images and prompts, and the minival zero-shot top-1.

Weights are stored in fp16 and the features computed from them in f32.

    /tmp/venv/bin/python scripts/dev/vitamin_reference.py   (open_clip_torch 3.3, timm 1.0)
"""
import json
import os
import sys
import tempfile

import open_clip
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.models import register_model
from timm.models.vitamin import GeGluMlp, VitCfg, VitConvCfg, _create_vitamin

sys.path.insert(0, os.path.dirname(__file__))
from coca_reference import minival_logits, perturb_and_save  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")
WIDTH = 32


def trunk(name, stem, dims, depths, image, **extra):
    embed_cfg = VitCfg(embed_dim=dims + (WIDTH,), depths=depths + (1,), stem_width=stem,
                       conv_cfg=VitConvCfg(norm_layer="layernorm2d", norm_eps=1e-6),
                       head_type="1d")
    args = dict(img_size=image, embed_dim=WIDTH, depth=2, num_heads=2, mlp_layer=GeGluMlp,
                mlp_ratio=2.0, class_token=False, global_pool="avg", embed_cfg=embed_cfg,
                **extra)
    return _create_vitamin(name, pretrained=False, **args)


@register_model
def pyramidclip_vitamin(pretrained=False, **kwargs):
    return trunk("vitamin_small_224", 8, (8, 16), (2, 3), 64, **kwargs)


@register_model
def pyramidclip_vitamin_xl(pretrained=False, **kwargs):
    return trunk("vitamin_xlarge_256", 12, (16, 24), (2, 3), 48, pos_embed="none", **kwargs)


# name, registered trunk, image size, extension, stem, widths, depths, positions
MODELS = [
    ("tiny-vitamin", "pyramidclip_vitamin", 64, ".safetensors", 8, (8, 16), (2, 3), True),
    ("tiny-vitamin-xl", "pyramidclip_vitamin_xl", 48, ".pt", 12, (16, 24), (2, 3), False),
]


def config(trunk_name, image):
    return {"embed_dim": 24, "custom_text": True,
            "vision_cfg": {"image_size": image, "timm_model_name": trunk_name,
                           "timm_model_pretrained": False, "timm_pool": "",
                           "timm_proj": "linear"},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2,
                         "layers": 2}}


def yml_entry(name, image, stem, widths, depths, pos):
    opts = ["model: vitamin_small_224" if pos else "model: vitamin_xlarge_256",
            "qkv_fused: true", "swiglu: false", "fused_bias: true", "class_token: false",
            f"mbconv: {{stem: {stem}, widths: [{widths[0]}, {widths[1]}], "
            f"depths: [{depths[0]}, {depths[1]}]}}",
            "geglu: true", "avg_pool: true", "head_proj: true"]
    if not pos:
        opts.append("pos_embed: false")
    lines = [f"{name}:", "    embed_dim: 24", f"    image_resolution: {image}",
             "    vision_layers: 2", f"    vision_width: {WIDTH}",
             "    vision_patch_size: 16", "    context_length: 77",
             "    vocab_size: 49408", "    transformer_width: 16", "    transformer_heads: 2",
             "    transformer_layers: 2", "    family: custom-text", "    activation: gelu",
             "    vision_heads: 2", f"    vision_mlp_width: {2 * WIDTH}",
             "    vision_eva: {" + ", ".join(opts) + "}"]
    return "\n".join(lines) + "\n"


def main():
    torch.manual_seed(20261206)
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"]
    cfg_dir = tempfile.mkdtemp()
    out, yml = {}, []
    for name, trunk_name, image, ext, stem, widths, depths, pos in MODELS:
        yml.append(yml_entry(name, image, stem, widths, depths, pos))
        with open(os.path.join(cfg_dir, name + ".json"), "w") as f:
            json.dump(config(trunk_name, image), f)
        open_clip.add_model_config(cfg_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        perturb_and_save(model, os.path.join(CLIP, name + ext))
        model.eval()
        tok = open_clip.get_tokenizer(name)
        key = name.replace("-", "_")
        with torch.no_grad():
            x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
            out[f"{key}.image_features_raw"] = model.encode_image(x, normalize=False)
            out[f"{key}.text_features_raw"] = model.encode_text(tok(prompts), normalize=False)
            out[f"{key}.minival_top1"] = minival_logits(model, tok, preprocess, man).argmax(1)
    with open(os.path.join(CLIP, "tiny-vitamin.yml"), "w") as f:
        f.write("# scripts/dev/vitamin_reference.py: open_clip ViTamin models with tiny timm "
                "ViTamin trunks\n" + "\n".join(yml))
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(CLIP, "vitamin.safetensors"),
              metadata={"prompts": json.dumps(prompts), "open_clip": open_clip.__version__,
                        "torch": torch.__version__, "timm": timm.__version__})


if __name__ == "__main__":
    main()
