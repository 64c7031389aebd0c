"""Dev-time: prints the built-in entries of configs/model_config.yml for open_clip's EVA, PE-Core and MobileCLIP ViT models
(open_clip's model configs, MIT licence, with timm's trunk sizes per name), in our model-config
format. The sizes and options mirror src/models/config.rs EVA_VITS.

    /tmp/venv/bin/python scripts/dev/gen_eva_configs.py
"""
import os
import sys

import open_clip

sys.path.insert(0, os.path.dirname(__file__))
from gen_open_clip_pretrained import supported, EVA_VITS, FASTVITS, GAP_VIT, RELPOS_VIT, VITAMINS  # noqa: E402

# image, patch, width, depth, heads, MLP width; EVA02 B/L options; post-norm; PE's (rotary
# reference grid, offset, class token) or None.
G = (224, 14, 1408, 40, 16, 6144)
SIZES = {"eva_giant_patch14_224": (G, False, False, None),
         "eva_giant_patch14_clip_224": (G, False, False, None),
         "eva02_base_patch16_clip_224": ((224, 16, 768, 12, 12, 2048), True, False, None),
         "eva02_large_patch14_clip_224": ((224, 14, 1024, 24, 16, 2730), True, False, None),
         "eva02_large_patch14_clip_336": ((336, 14, 1024, 24, 16, 2730), True, False, None),
         "eva02_enormous_patch14_clip_224": ((224, 14, 1792, 64, 16, 15360), False, True, None),
         "vit_pe_core_tiny_patch16_384": ((384, 16, 192, 12, 3, 768), False, False, (24, 1, True)),
         "vit_pe_core_small_patch16_384": ((384, 16, 384, 12, 6, 1536), False, False,
                                           (24, 1, True)),
         "vit_pe_core_base_patch16_224": ((224, 16, 768, 12, 12, 3072), False, False,
                                          (14, 1, True)),
         "vit_pe_core_large_patch14_336": ((336, 14, 1024, 24, 16, 4096), False, False,
                                           (24, 1, True)),
         "vit_pe_core_gigantic_patch14_448": ((448, 14, 1536, 50, 16, 8960), False, False,
                                              (32, 0, False)),
         "vit_large_patch14_clip_224": ((224, 14, 1024, 24, 16, 4096), False, False, None),
         "vit_base_mci_224": ((224, 16, 768, 12, 12, 3072), False, False, None)}
# timm's plain ViTs: one q/k/v product with its bias; MobileCLIP2-L-14's with a norm before the
# blocks (eps 1e-5), MobileCLIP-B's with the convolutional stem and no positions for the class
# token.
PLAIN = {"vit_large_patch14_clip_224": ["norm_pre: true", "eps: 1.0e-5"],
         "vit_base_mci_224": ["conv_stem: true", "no_embed_class: true"]}
out = []
for name in supported():
    cfg = open_clip.get_model_config(name)
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    tn = v.get("timm_model_name")
    if tn not in EVA_VITS:
        continue
    (image, patch, width, depth, heads, mlp), eva02, post, pe = SIZES[tn]
    opts = [f"model: {tn}", f"qkv_fused: {str(not eva02).lower()}", f"swiglu: {str(eva02).lower()}"]
    if eva02:
        opts += ["mlp_norm: true", "attn_norm: true", "rope: 16"]
    if post:
        opts.append("post_norm: true")
    if tn in PLAIN:
        opts += ["fused_bias: true"] + PLAIN[tn]
    if pe:
        grid, offset, cls = pe
        opts += ["fused_bias: true", f"rope: {grid}", f"rope_offset: {offset}", "rope_xy: true",
                 f"class_token: {str(cls).lower()}", "norm_pre: true", "map_heads: 8",
                 "eps: 1.0e-5"]
    lines = [f"{name}:", f"    embed_dim: {cfg['embed_dim']}", f"    image_resolution: {image}",
             f"    vision_layers: {depth}", f"    vision_width: {width}", f"    vision_patch_size: {patch}",
             f"    context_length: {t['context_length']}", f"    vocab_size: {t['vocab_size']}",
             f"    transformer_width: {t['width']}", f"    transformer_heads: {t['heads']}",
             f"    transformer_layers: {t['layers']}", "    family: custom-text", "    activation: gelu",
             f"    vision_heads: {heads}"]
    if mlp != 4 * width:
        lines.append(f"    vision_mlp_width: {mlp}")
    lines.append("    vision_eva: {" + ", ".join(opts) + "}")
    if t.get("no_causal_mask"):
        lines.append("    text_no_causal_mask: true")
    out.append("\n".join(lines))
# timm's ViTamin trunks: (image, width, depth, heads, stem width, positions); 16 pixels a
# token, GeGLU MLPs twice the width.
VIT_L = lambda r: (r, 1024, 31, 16, 160, True)  # noqa: E731
VITAMIN = {"vitamin_small_224": (224, 384, 14, 6, 64, True),
           "vitamin_base_224": (224, 768, 14, 12, 128, True),
           **{f"vitamin_large_{r}": VIT_L(r) for r in (224, 256, 336, 384)},
           **{f"vitamin_large2_{r}": VIT_L(r) for r in (224, 256, 336, 384)},
           **{f"vitamin_xlarge_{r}": (r, 1152, 32, 16, 192, False) for r in (256, 336, 384)}}
for name in supported():
    cfg = open_clip.get_model_config(name)
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    tn = v.get("timm_model_name")
    if tn not in VITAMINS:
        continue
    image, width, depth, heads, stem, pos = VITAMIN[tn]
    # open_clip preprocesses at the config's `image_size`; without positions the trunk takes
    # it (ViTamin-XL-336 / -384 are given 256-pixel images: their configs say 256).
    assert v["image_size"] == image or not pos, (name, v["image_size"], image)
    image = v["image_size"]
    opts = [f"model: {tn}", "qkv_fused: true", "swiglu: false", "fused_bias: true",
            "class_token: false",
            f"mbconv: {{stem: {stem}, widths: [{stem}, {2 * stem}], depths: [2, 4]}}",
            "geglu: true", "avg_pool: true", "head_proj: true"]
    if not pos:
        opts.append("pos_embed: false")
    lines = [f"{name}:", f"    embed_dim: {cfg['embed_dim']}", f"    image_resolution: {image}",
             f"    vision_layers: {depth}", f"    vision_width: {width}",
             "    vision_patch_size: 16",
             f"    context_length: {t['context_length']}", f"    vocab_size: {t['vocab_size']}",
             f"    transformer_width: {t['width']}", f"    transformer_heads: {t['heads']}",
             f"    transformer_layers: {t['layers']}", "    family: custom-text", "    activation: gelu",
             f"    vision_heads: {heads}", f"    vision_mlp_width: {2 * width}",
             "    vision_eva: {" + ", ".join(opts) + "}"]
    out.append("\n".join(lines))
# timm's FastViT MCi trunks: depths, widths, MLP ratio, MCi3/4 (five stages, LayerNorm before
# attention, no SE in the downsampling, no 1x1 branch in the stem).
MCI = {"fastvit_mci0": ([2, 6, 10, 2], [64, 128, 256, 512], 3, False),
       "fastvit_mci1": ([4, 12, 20, 4], [64, 128, 256, 512], 3, False),
       "fastvit_mci2": ([4, 12, 24, 4], [80, 160, 320, 640], 3, False),
       "fastvit_mci3": ([2, 12, 24, 4, 2], [96, 192, 384, 768, 1536], 4, True),
       "fastvit_mci4": ([2, 12, 24, 4, 4], [128, 256, 512, 1024, 2048], 4, True)}
flags = lambda v: "[" + ", ".join(str(bool(x)).lower() for x in v) + "]"  # noqa: E731
for name in supported():
    cfg = open_clip.get_model_config(name)
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    tn = v.get("timm_model_name")
    if tn not in FASTVITS:
        continue
    depths, dims, ratio, l34 = MCI[tn]
    s = len(depths)
    opts = [f"model: {tn}", f"depths: {depths}", f"dims: {dims}",
            f"attention: {flags([i + 2 + l34 > s for i in range(s)])}",
            f"se: {flags([not l34 and i >= 2 for i in range(s)])}", f"mlp_ratio: {ratio}"]
    if l34:
        opts += ["layer_norm: true", "stem_scale_branch: false"]
    lines = [f"{name}:", f"    embed_dim: {cfg['embed_dim']}",
             f"    image_resolution: {v['image_size']}", f"    vision_layers: {depths}",
             f"    vision_width: {dims[0]}", f"    context_length: {t['context_length']}",
             f"    vocab_size: {t['vocab_size']}", f"    transformer_width: {t['width']}",
             f"    transformer_heads: {t['heads']}", f"    transformer_layers: {t['layers']}",
             "    family: custom-text", "    activation: gelu",
             "    vision_fastvit: {" + ", ".join(opts) + "}"]
    if t.get("no_causal_mask"):
        lines.append("    text_no_causal_mask: true")
    out.append("\n".join(lines))
# timm's average-pooled ViT (vit_medium_patch16_gap_256: no class token, the mean of the
# normed tokens) and relative-position ViT (vit_relpos_medium_patch16_cls_224: no absolute
# positions, each block's relative-position MLP, pooled at the class token): q/k/v without
# bias, layer scale, open_clip's linear projection; the text tower at the top level unless
# `custom_text`.
OWN = {GAP_VIT: "class_token: false, head_proj: true, qkv_bias: false, layer_scale: true, "
                "norm_mean: true",
       RELPOS_VIT: "head_proj: true, pos_embed: false, qkv_bias: false, layer_scale: true, "
                   "rel_pos: true"}
for name in supported():
    cfg = open_clip.get_model_config(name)
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    tn = v.get("timm_model_name")
    if tn not in OWN:
        continue
    family = "custom-text" if cfg.get("custom_text") else "clip"
    lines = [f"{name}:", f"    embed_dim: {cfg['embed_dim']}", f"    image_resolution: {v['image_size']}",
             "    vision_layers: 12", "    vision_width: 512", "    vision_patch_size: 16",
             f"    context_length: {t['context_length']}", f"    vocab_size: {t['vocab_size']}",
             f"    transformer_width: {t['width']}", f"    transformer_heads: {t['heads']}",
             f"    transformer_layers: {t['layers']}", f"    family: {family}", "    activation: gelu",
             "    vision_heads: 8",
             f"    vision_eva: {{model: {tn}, qkv_fused: true, swiglu: false, {OWN[tn]}}}"]
    out.append("\n".join(lines))
print("\n\n".join(out))
