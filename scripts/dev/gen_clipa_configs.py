"""Dev-time: prints the built-in entries of configs/model_config.yml for open_clip's CLIPA models
(open_clip's model configs, MIT licence), in our model-config format: CLIP's sizes, family
`clipa`, GELU, and the tokenizer open_clip's `HFTokenizer` loads.

    /tmp/venv/bin/python scripts/dev/gen_clipa_configs.py >> configs/model_config.yml
"""
import os
import sys

import open_clip

sys.path.insert(0, os.path.dirname(__file__))
from gen_open_clip_pretrained import supported, is_clipa  # noqa: E402

out = []
for name in supported():
    cfg = open_clip.get_model_config(name)
    if not is_clipa(cfg):
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
             f"    transformer_layers: {t['layers']}", "    family: clipa", "    activation: gelu"]
    if "head_width" in v:
        lines.insert(6, f"    vision_heads: {heads}")
    if mlp != 4 * width:
        lines.append(f"    vision_mlp_width: {mlp}")
    lines.append("    clipa: {" + f"tokenizer: {t['hf_tokenizer_name']}, clean: {kw.get('clean', 'whitespace')}, "
                 f"strip_sep: {str(bool(kw.get('strip_sep_token', False))).lower()}" + "}")
    out.append("\n".join(lines))
print("# open_clip's CLIPA models (open_clip_torch 3.3.0 model configs, MIT; "
      "scripts/dev/gen_clipa_configs.py).\n")
print("\n\n".join(out))
