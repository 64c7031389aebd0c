"""Dev-time: prints the built-in entries of configs/model_config.yml for open_clip's EVA, PE-Core and MobileCLIP ViT models
(open_clip's model configs, MIT licence, with timm's trunk sizes per name), in our model-config
format. The sizes and options mirror src/models/config.rs EVA_VITS.

    /tmp/venv/bin/python scripts/dev/gen_eva_configs.py
"""
import os
import sys

import open_clip

sys.path.insert(0, os.path.dirname(__file__))
from gen_open_clip_pretrained import supported, EVA_VITS, FASTVITS  # noqa: E402

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
print("\n\n".join(out))
