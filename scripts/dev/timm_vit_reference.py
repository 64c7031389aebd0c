"""Dev-time: writes the fixtures of open_clip's two plain timm ViT configs under
tests/fixtures/clip/, toy-size stand-ins with CLIP's text tower at the top level (`custom_text`
unset: open_clip's `CLIP`, not `CustomTextCLIP`), GELU, CLIP's BPE, `timm_pool: ""`,
`timm_proj: linear`:

- `tiny-vit-gap.safetensors`: as `vit_medium_patch16_gap_256` (a timm `VisionTransformer`
  without class token, `global_pool='avg'` with `fc_norm=False`, so the final norm of every
  token then their mean; q/k/v without bias; layer scale, drawn around 0.5 so the blocks
  count);
- `tiny-vit-relpos.pt`: as `vit_relpos_medium_patch16_cls_224` (timm's
  `VisionTransformerRelPos`: no absolute positions, each block's relative-position MLP in its
  `cr` mode, its weights scaled up so the biases are of order one; a class token, q/k/v
  without bias, layer scale, pooled at the class token);
- `tiny-vit-relpos.ts.pt`: the latter as a TorchScript archive (with the buffers state dicts
  leave out);
- `tiny-timm-vit.yml`: the two in our model-config format;
- `timm-vit.safetensors`: their `encode_image` / `encode_text` (normalize=False) of the fixture
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
from timm.models.vision_transformer_relpos import _create_vision_transformer_relpos

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


@register_model
def pyramidclip_vit_relpos(pretrained=False, **kwargs):
    # vit_relpos_medium_patch16_cls_224's options at toy size.
    args = dict(img_size=64, patch_size=16, embed_dim=WIDTH, depth=2, num_heads=2,
                qkv_bias=False, fc_norm=False, rel_pos_dim=16, class_token=True,
                global_pool="token")
    return _create_vision_transformer_relpos("vit_relpos_medium_patch16_cls_224",
                                             pretrained=False, **dict(args, **kwargs))


def config(trunk):
    return {"embed_dim": 24,
            "vision_cfg": {"image_size": 64, "timm_model_name": trunk,
                           "timm_model_pretrained": False, "timm_pool": "",
                           "timm_proj": "linear"},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2,
                         "layers": 2}}


# name, registered trunk, extension
MODELS = [(NAME, "pyramidclip_vit_gap", ".safetensors"),
          ("tiny-vit-relpos", "pyramidclip_vit_relpos", ".pt")]

# Each model's options in our model-config format (what the weights cannot show).
OPTS = {NAME: "{model: vit_medium_patch16_gap_256, qkv_fused: true, swiglu: false, "
              "class_token: false, head_proj: true, qkv_bias: false, layer_scale: true, "
              "norm_mean: true}",
        "tiny-vit-relpos": "{model: vit_relpos_medium_patch16_cls_224, qkv_fused: true, "
                           "swiglu: false, head_proj: true, pos_embed: false, qkv_bias: false, "
                           "layer_scale: true, rel_pos: true}"}


def yml_entry(name):
    sizes = ["embed_dim: 24", "image_resolution: 64", "vision_layers: 2",
             f"vision_width: {WIDTH}", "vision_patch_size: 16", "context_length: 77",
             "vocab_size: 49408", "transformer_width: 16", "transformer_heads: 2",
             "transformer_layers: 2", "family: clip", "activation: gelu", "vision_heads: 2",
             f"vision_eva: {OPTS[name]}"]
    return f"{name}:\n" + "".join(f"    {line}\n" for line in sizes)


YML = ("# scripts/dev/timm_vit_reference.py: open_clip's plain timm ViT configs at toy size\n"
       + "\n".join(yml_entry(name) for name, _, _ in MODELS))


def main():
    torch.manual_seed(20261208)
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"]
    cfg_dir = tempfile.mkdtemp()
    out = {}
    for name, trunk_name, ext in MODELS:
        with open(os.path.join(cfg_dir, name + ".json"), "w") as f:
            json.dump(config(trunk_name), f)
        open_clip.add_model_config(cfg_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        assert type(model).__name__ == "CLIP", type(model)
        trunk = model.visual.trunk
        if name == NAME:
            assert trunk.cls_token is None and trunk.global_pool == "avg"
            assert isinstance(trunk.fc_norm, torch.nn.Identity)
        else:
            assert trunk.cls_token is not None and trunk.global_pool == "token"
            assert trunk.blocks[0].attn.rel_pos.mode == "cr"
            # Biases of order one (timm's init makes them ~0.01), so that their layout shows.
            with torch.no_grad():
                for blk in trunk.blocks:
                    blk.attn.rel_pos.mlp.fc2.weight.mul_(10.0)
        perturb_and_save(model, os.path.join(CLIP, name + ext))
        model.eval()
        if name != NAME:
            # As a TorchScript archive too: it holds the relative-position MLPs' coordinate
            # and index buffers, which state dicts leave out.
            torch.jit.save(torch.jit.script(model), os.path.join(CLIP, name + ".ts.pt"))
        tok = open_clip.get_tokenizer(name)
        key = name.replace("-", "_")
        with torch.no_grad():
            x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
            out[f"{key}.image_features_raw"] = model.encode_image(x, normalize=False)
            out[f"{key}.text_features_raw"] = model.encode_text(tok(prompts), normalize=False)
            out[f"{key}.minival_top1"] = minival_logits(model, tok, preprocess, man).argmax(1)
    with open(os.path.join(CLIP, "tiny-timm-vit.yml"), "w") as f:
        f.write(YML)
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(CLIP, "timm-vit.safetensors"),
              metadata={"prompts": json.dumps(prompts), "open_clip": open_clip.__version__,
                        "torch": torch.__version__, "timm": timm.__version__})


if __name__ == "__main__":
    main()
