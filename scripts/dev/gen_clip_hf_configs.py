"""Dev-time: prints the built-in entries of configs/model_config.yml for open_clip's CLIP-layout
models with a HuggingFace tokenizer (open_clip's model configs, MIT licence), in our
model-config format: CLIPA's (family `clipa`, GELU, the tokenizer with `strip_sep_token`) and
MetaCLIP 2's "worldwide" ones (family `clip`, pooled at the tokenizer's `eos_id`).

    /tmp/venv/bin/python scripts/dev/gen_clip_hf_configs.py clipa >> configs/model_config.yml
    /tmp/venv/bin/python scripts/dev/gen_clip_hf_configs.py worldwide >> configs/model_config.yml
"""
import os
import sys

import open_clip

sys.path.insert(0, os.path.dirname(__file__))
from gen_open_clip_pretrained import supported, is_clipa, is_worldwide  # noqa: E402

which = sys.argv[1]
out = []
for name in supported():
    cfg = open_clip.get_model_config(name)
    if not (is_clipa(cfg) if which == "clipa" else is_worldwide(cfg)):
        continue
    if name.endswith("-quickgelu"):
        # `NAME-quickgelu` resolves to NAME with QuickGELU.
        continue
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    width = v["width"]
    heads = width // v.get("head_width", 64)
    mlp = int(width * v.get("mlp_ratio", 4.0))
    kw = t.get("tokenizer_kwargs", {})
    lines = [f"{name}:", f"    embed_dim: {cfg['embed_dim']}", f"    image_resolution: {v['image_size']}",
             f"    vision_layers: {v['layers']}", f"    vision_width: {width}",
             f"    vision_patch_size: {v['patch_size']}",
             f"    context_length: {t['context_length']}", f"    vocab_size: {t['vocab_size']}",
             f"    transformer_width: {t['width']}", f"    transformer_heads: {t['heads']}",
             f"    transformer_layers: {t['layers']}",
             f"    family: {'clipa' if which == 'clipa' else 'clip'}",
             f"    activation: {'quickgelu' if cfg.get('quick_gelu') else 'gelu'}"]
    if "head_width" in v:
        lines.insert(6, f"    vision_heads: {heads}")
    if mlp != 4 * width:
        lines.append(f"    vision_mlp_width: {mlp}")
    if which == "clipa":
        lines.append("    clipa: {" + f"tokenizer: {t['hf_tokenizer_name']}, "
                     f"clean: {kw.get('clean', 'whitespace')}, "
                     f"strip_sep: {str(bool(kw.get('strip_sep_token', False))).lower()}" + "}")
    else:
        lines.append("    text_eos: {" + f"tokenizer: {t['hf_tokenizer_name']}, "
                     f"clean: {kw.get('clean', 'whitespace')}, eos_id: {t.get('eos_id', 2)}" + "}")
    out.append("\n".join(lines))
label = ("CLIPA models" if which == "clipa"
         else "MetaCLIP 2 worldwide models (pooled at the tokenizer's eos_id)")
print(f"# open_clip's {label} (open_clip_torch 3.3.0 model configs, MIT; "
      "scripts/dev/gen_clip_hf_configs.py).\n")
print("\n\n".join(out))
