"""Dev-time: prints the built-in entries of configs/model_config.yml for open_clip's SigLIP
models (open_clip's model configs, MIT licence, with timm's trunk sizes per name), in our
model-config format. The sizes and tanh flags mirror src/models/config.rs SIGLIP_VITS.

    /tmp/venv/bin/python scripts/dev/gen_siglip_configs.py
"""
import os
import sys

import open_clip

sys.path.insert(0, os.path.dirname(__file__))
from gen_open_clip_pretrained import supported, SIGLIP_VITS
SIZES = {"base_patch32": (32, 768, 12, 12, 3072), "base_patch16": (16, 768, 12, 12, 3072),
         "large_patch16": (16, 1024, 24, 16, 4096), "so400m_patch14": (14, 1152, 27, 16, 4304),
         "so400m_patch16": (16, 1152, 27, 16, 4304), "giantopt_patch16": (16, 1536, 40, 16, 6144)}
TANH = {"vit_base_patch32_siglip_256", "vit_large_patch16_siglip_512", "vit_so400m_patch16_siglip_256",
        "vit_so400m_patch16_siglip_384", "vit_so400m_patch16_siglip_512",
        "vit_giantopt_patch16_siglip_256", "vit_giantopt_patch16_siglip_384"}
out = []
for name in supported():
    cfg = open_clip.get_model_config(name)
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    tn = v.get("timm_model_name")
    if tn not in SIGLIP_VITS:
        continue
    key = tn[len("vit_"):tn.index("_siglip")]
    patch, width, depth, heads, mlp = SIZES[key]
    tw = t["width"]
    tmlp = int(tw * t.get("mlp_ratio", 4.0))
    act = "gelu_tanh" if t.get("act_kwargs") == {"approximate": "tanh"} else "gelu"
    clean = t.get("tokenizer_kwargs", {}).get("clean", "whitespace")
    sig = (f"{{timm_model: {tn}, vision_activation: {'gelu_tanh' if tn in TANH else 'gelu'}, "
           + (f"text_mlp_width: {tmlp}, " if tmlp != 4 * tw else "")
           + f"tokenizer: {t['hf_tokenizer_name']}, clean: {clean}"
           + (", no_text_projection: true" if t.get("proj_type") == "none" else "") + "}")
    lines = [f"{name}:", f"    embed_dim: {cfg['embed_dim']}", f"    image_resolution: {v['image_size']}",
             f"    vision_layers: {depth}", f"    vision_width: {width}", f"    vision_patch_size: {patch}",
             f"    context_length: {t['context_length']}", f"    vocab_size: {t['vocab_size']}",
             f"    transformer_width: {tw}", f"    transformer_heads: {t['heads']}",
             f"    transformer_layers: {t['layers']}", "    family: siglip", f"    activation: {act}",
             f"    vision_heads: {heads}"]
    if mlp != 4 * width:
        lines.append(f"    vision_mlp_width: {mlp}")
    lines.append(f"    siglip: {sig}")
    out.append("\n".join(lines))
print("\n\n".join(out))
