"""Dev-time: writes the fixtures of open_clip's average-pooled timm ViT under tests/fixtures/clip/:
a toy-size stand-in for `vit_medium_patch16_gap_256` (open_clip's config of that name: a timm
`VisionTransformer` without class token, `global_pool='avg'` with `fc_norm=False`, so the
final norm of every token then their mean; q/k/v without bias; layer scale; `timm_pool: ""`,
`timm_proj: linear`) with CLIP's text tower at the top level (`custom_text` unset: open_clip's
`CLIP`, not `CustomTextCLIP`), GELU, CLIP's BPE:

- `tiny-vit-gap.safetensors`: the weights (fp16; the layer scale drawn around 0.5 so the
  blocks count);
- `tiny-vit-gap.yml`: the model in our model-config format;
- `timm-vit.safetensors`: its `encode_image` / `encode_text` (normalize=False) of the fixture
  images and prompts, and the minival zero-shot top-1.

    /tmp/venv/bin/python scripts/dev/timm_vit_reference.py   (open_clip_torch 3.3, timm 1.0)
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
from timm.models.vision_transformer import _create_vision_transformer

sys.path.insert(0, os.path.dirname(__file__))
from coca_reference import minival_logits, perturb_and_save  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")
WIDTH = 32
NAME = "tiny-vit-gap"


@register_model
def pyramidclip_vit_gap(pretrained=False, **kwargs):
    # vit_medium_patch16_gap_256's options at toy size.
    args = dict(img_size=64, patch_size=16, embed_dim=WIDTH, depth=2, num_heads=2,
                class_token=False, global_pool="avg", qkv_bias=False, init_values=0.5,
                fc_norm=False)
    return _create_vision_transformer("vit_medium_patch16_gap_256", pretrained=False,
                                      **dict(args, **kwargs))


CONFIG = {"embed_dim": 24,
          "vision_cfg": {"image_size": 64, "timm_model_name": "pyramidclip_vit_gap",
                         "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear"},
          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2,
                       "layers": 2}}

YML = f"""# scripts/dev/timm_vit_reference.py: open_clip's average-pooled timm ViT at toy size
{NAME}:
    embed_dim: 24
    image_resolution: 64
    vision_layers: 2
    vision_width: {WIDTH}
    vision_patch_size: 16
    context_length: 77
    vocab_size: 49408
    transformer_width: 16
    transformer_heads: 2
    transformer_layers: 2
    family: clip
    activation: gelu
    vision_heads: 2
    vision_eva: {{model: vit_medium_patch16_gap_256, qkv_fused: true, swiglu: false, class_token: false, head_proj: true, qkv_bias: false, layer_scale: true, norm_mean: true}}
"""


def main():
    torch.manual_seed(20261208)
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"]
    cfg_dir = tempfile.mkdtemp()
    with open(os.path.join(cfg_dir, NAME + ".json"), "w") as f:
        json.dump(CONFIG, f)
    open_clip.add_model_config(cfg_dir)
    model, _, preprocess = open_clip.create_model_and_transforms(NAME)
    assert type(model).__name__ == "CLIP", type(model)
    trunk = model.visual.trunk
    assert trunk.cls_token is None and trunk.global_pool == "avg"
    assert isinstance(trunk.fc_norm, torch.nn.Identity)
    perturb_and_save(model, os.path.join(CLIP, NAME + ".safetensors"))
    model.eval()
    tok = open_clip.get_tokenizer(NAME)
    key = NAME.replace("-", "_")
    out = {}
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
        out[f"{key}.image_features_raw"] = model.encode_image(x, normalize=False)
        out[f"{key}.text_features_raw"] = model.encode_text(tok(prompts), normalize=False)
        out[f"{key}.minival_top1"] = minival_logits(model, tok, preprocess, man).argmax(1)
    with open(os.path.join(CLIP, NAME + ".yml"), "w") as f:
        f.write(YML)
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(CLIP, "timm-vit.safetensors"),
              metadata={"prompts": json.dumps(prompts), "open_clip": open_clip.__version__,
                        "torch": torch.__version__, "timm": timm.__version__})


if __name__ == "__main__":
    main()
