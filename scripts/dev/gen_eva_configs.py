"""Dev-time: prints the built-in entries of configs/model_config.yml for open_clip's EVA and PE-Core models
(open_clip's model configs, MIT licence, with timm's trunk sizes per name), in our model-config
format. The sizes and options mirror src/models/config.rs EVA_VITS.

    /tmp/venv/bin/python scripts/dev/gen_eva_configs.py
"""
import os
import sys

import open_clip

sys.path.insert(0, os.path.dirname(__file__))
from gen_open_clip_pretrained import supported, EVA_VITS  # noqa: E402

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
                                              (32, 0, False))}
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
    out.append("\n".join(lines))
print("\n\n".join(out))
