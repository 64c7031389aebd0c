"""Dev-time: writes the EVA fixtures under tests/fixtures/clip/: open_clip EVA models
(`custom_text`; a timm `Eva` image tower pooled at its class token with the trunk's own head
as the projection; CLIP's text tower under `text.`, GELU, CLIP's BPE) at toy size, their trunks
registered here with timm's EVA options:

- `tiny-eva02.safetensors`: as EVA02-B/L (separate q/k/v, 2-D rotary embedding scaled to
  timm's 16 x 16 reference grid, LayerNorm after attention, SwiGLU MLPs with a LayerNorm),
  64 px, patch 16 (a 4 x 4 grid: the rotary positions are scaled by 4, as EVA02-L-14-336's
  by 2/3);
- `tiny-eva01.pt`: as EVA01-g (fused q/k/v with `q_bias` / `v_bias`, GELU MLPs), 56 px,
  patch 14, 4 heads of 8;
- `tiny-eva02e.pt`: as EVA02-E (EVA01's block, post-norm), 56 px, patch 14, 3 blocks;
- `tiny-pe.safetensors`: as PE-Core T/S/B/L (a LayerNorm before the blocks, the patch conv
  without bias, one q/k/v product with its own bias, the rotary embedding over an `xy` grid
  counted from 1 and scaled to a 6 x 6 reference, the attention-pool head with 8 heads, eps
  1e-5), 64 px, patch 16, context 32;
- `tiny-pe-g.pt`: as PE-Core-bigG (no class token, the grid counted from 0), 56 px, patch 14;
- `tiny-eva.yml`: the five in our model-config format;
- `eva.safetensors`: each model's `encode_image` / `encode_text` (normalize=False) of the
  fixture images and prompts, and the minival zero-shot top-1; and the PE models' image
  features under the PE tags' preprocessing (squash, bilinear, mean and std 0.5).

Weights are stored in fp16 and the features computed from them in f32.

    /tmp/venv/bin/python scripts/dev/eva_reference.py   (open_clip_torch 3.3, timm 1.0)
"""
import json
import os
import sys
import tempfile

import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.models import register_model
from functools import partial

from timm.layers import LayerNorm
from timm.models.eva import _create_eva

sys.path.insert(0, os.path.dirname(__file__))
from coca_reference import minival_logits  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")

EVA02 = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, qkv_fused=False,
             mlp_ratio=4 * 2 / 3, swiglu_mlp=True, scale_mlp=True, scale_attn_inner=True,
             use_rot_pos_emb=True, ref_feat_shape=(16, 16))
EVA01 = dict(img_size=56, patch_size=14, embed_dim=32, depth=2, num_heads=4,
             mlp_ratio=6144 / 1408)
EVA02E = dict(img_size=56, patch_size=14, embed_dim=32, depth=3, num_heads=2,
              mlp_ratio=15360 / 1792, use_post_norm=True)
PE = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0,
          global_pool="map", attn_type="rope", use_pre_transformer_norm=True,
          use_rot_pos_emb=True, ref_feat_shape=(6, 6), rope_grid_offset=1.,
          rope_grid_indexing="xy", attn_pool_num_heads=8, attn_pool_mlp_ratio=4.,
          norm_layer=partial(LayerNorm, eps=1e-5))
PE_G = dict(PE, img_size=56, patch_size=14, class_token=False, rope_grid_offset=0.,
            ref_feat_shape=(4, 4))


def trunk(variant, args, kwargs):
    kwargs.setdefault("global_pool", "token")
    return _create_eva(variant, pretrained=False, **dict(args, **kwargs))


@register_model
def pyramidclip_eva02(pretrained=False, **kwargs):
    return trunk("eva02_base_patch16_clip_224", EVA02, kwargs)


@register_model
def pyramidclip_eva01(pretrained=False, **kwargs):
    return trunk("eva_giant_patch14_clip_224", EVA01, kwargs)


@register_model
def pyramidclip_eva02e(pretrained=False, **kwargs):
    return trunk("eva02_enormous_patch14_clip_224", EVA02E, kwargs)


@register_model
def pyramidclip_pe(pretrained=False, **kwargs):
    kwargs.setdefault("global_pool", "map")
    return trunk("vit_pe_core_base_patch16_224", PE, kwargs)


@register_model
def pyramidclip_pe_g(pretrained=False, **kwargs):
    kwargs.setdefault("global_pool", "map")
    return trunk("vit_pe_core_gigantic_patch14_448", PE_G, kwargs)


MODELS = [("tiny-eva02", "pyramidclip_eva02", EVA02, ".safetensors"),
          ("tiny-eva01", "pyramidclip_eva01", EVA01, ".pt"),
          ("tiny-eva02e", "pyramidclip_eva02e", EVA02E, ".pt"),
          ("tiny-pe", "pyramidclip_pe", PE, ".safetensors"),
          ("tiny-pe-g", "pyramidclip_pe_g", PE_G, ".pt")]


def is_pe(a):
    return a.get("attn_type") == "rope"


def config(timm_name, a):
    return {"embed_dim": 24, "custom_text": True,
            "vision_cfg": {"image_size": a["img_size"], "timm_model_name": timm_name,
                           "timm_model_pretrained": False,
                           "timm_pool": "map" if is_pe(a) else "token", "timm_proj": None},
            "text_cfg": {"context_length": 32 if is_pe(a) else 77, "vocab_size": 49408,
                         "width": 16, "heads": 2, "layers": 2}}


def yml_entry(name, timm_name, a):
    """The model in our model-config format (the registered trunks are not timm's own, so
    their sizes and options are written out)."""
    eva02 = a.get("swiglu_mlp", False)
    width = a["embed_dim"]
    mlp = int(width * a["mlp_ratio"])
    opts = [f"model: {timm_name}", f"qkv_fused: {str(not eva02).lower()}",
            f"swiglu: {str(eva02).lower()}"]
    if eva02:
        opts += ["mlp_norm: true", "attn_norm: true", f"rope: {a['ref_feat_shape'][0]}"]
    if a.get("use_post_norm"):
        opts.append("post_norm: true")
    if is_pe(a):
        opts += ["fused_bias: true", f"rope: {a['ref_feat_shape'][0]}",
                 f"rope_offset: {int(a['rope_grid_offset'])}", "rope_xy: true",
                 f"class_token: {str(a.get('class_token', True)).lower()}", "norm_pre: true",
                 f"map_heads: {a['attn_pool_num_heads']}", "eps: 1.0e-5"]
    lines = [f"{name}:", "    embed_dim: 24", f"    image_resolution: {a['img_size']}",
             f"    vision_layers: {a['depth']}", f"    vision_width: {width}",
             f"    vision_patch_size: {a['patch_size']}",
             f"    context_length: {32 if is_pe(a) else 77}",
             "    vocab_size: 49408", "    transformer_width: 16", "    transformer_heads: 2",
             "    transformer_layers: 2", "    family: custom-text", "    activation: gelu",
             f"    vision_heads: {a['num_heads']}"]
    if mlp != 4 * width:
        lines.append(f"    vision_mlp_width: {mlp}")
    lines.append("    vision_eva: {" + ", ".join(opts) + "}")
    return "\n".join(lines) + "\n"


def main():
    torch.manual_seed(20261205)
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"]
    cfg_dir = tempfile.mkdtemp()
    out, yml = {}, []
    for name, timm_name, args, ext in MODELS:
        yml.append(yml_entry(name, timm_name, args))
        with open(os.path.join(cfg_dir, name + ".json"), "w") as f:
            json.dump(config(timm_name, args), f)
        open_clip.add_model_config(cfg_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k not in ("logit_scale", "logit_bias"):
                    p.copy_((p + 0.05 * torch.randn_like(p)).half().float())
        sd = {k: v.half() for k, v in model.state_dict().items()}
        if ext == ".pt":
            torch.save(sd, os.path.join(CLIP, name + ext))
        else:
            save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(CLIP, name + ext))
        model.eval()
        tok = open_clip.get_tokenizer(name)
        key = name.replace("-", "_")
        with torch.no_grad():
            x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
            out[f"{key}.image_features_raw"] = model.encode_image(x, normalize=False)
            out[f"{key}.text_features_raw"] = model.encode_text(tok(prompts), normalize=False)
            out[f"{key}.minival_top1"] = minival_logits(model, tok, preprocess, man).argmax(1)
            if is_pe(args):
                # As the PE tags preprocess (`_pecfg`): squashed, bilinear, mean and std 0.5.
                tf = open_clip.image_transform(args["img_size"], is_train=False,
                                               mean=(0.5,) * 3, std=(0.5,) * 3,
                                               resize_mode="squash", interpolation="bilinear")
                x = torch.stack([tf(Image.open(os.path.join(FX, p))) for p in images])
                out[f"{key}.image_features_tag"] = model.encode_image(x, normalize=False)
    with open(os.path.join(CLIP, "tiny-eva.yml"), "w") as f:
        f.write("# scripts/dev/eva_reference.py: open_clip EVA models with tiny timm EVA trunks\n"
                + "\n".join(yml))
    import timm
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(CLIP, "eva.safetensors"),
              metadata={"prompts": json.dumps(prompts), "open_clip": open_clip.__version__,
                        "torch": torch.__version__, "timm": timm.__version__})


if __name__ == "__main__":
    main()
