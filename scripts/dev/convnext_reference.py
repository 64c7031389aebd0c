"""Dev-time: writes the ConvNeXt fixtures under tests/fixtures/clip/: open_clip CLIP models
whose image tower is a timm ConvNeXt (open_clip's `TimmModel`, as its convnext_* configs
build it: timm's trunk with its own average pool and head norm, then open_clip's projection),
at toy size through a ConvNeXt registered with timm here (channels-last LayerNorms and linear
MLPs, as convnext_tiny ... convnext_xxlarge):

- `tiny-convnext.pt`: the MLP projection (`timm_proj: mlp`), LayerNorm eps 1e-6 (timm's);
- `tiny-convnext-linear.pt`: the linear projection, eps 1e-5 (as convnext_xxlarge);
- `tiny-convnext.yml`: both architectures in our model-config format;
- `convnext.safetensors`: each model's `encode_image` / `encode_text` (normalize=False) of the
  fixture images and prompts, and its minival zero-shot top-1.

Weights are stored in fp16 and the features computed from them in f32.

    /tmp/venv/bin/python scripts/dev/convnext_reference.py   (open_clip_torch 3.3, timm 1.0)
"""
import json
import os
import sys

import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.models import register_model
from timm.models.convnext import _create_convnext

sys.path.insert(0, os.path.dirname(__file__))
from coca_reference import minival_logits  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")
DEPTHS, DIMS = [1, 1, 2, 1], [16, 24, 32, 40]


@register_model
def pyramidclip_convnext_e6(pretrained=False, **kwargs):
    return _create_convnext("convnext_atto", pretrained=False,
                            **dict(dict(depths=DEPTHS, dims=DIMS, conv_mlp=False), **kwargs))


@register_model
def pyramidclip_convnext_e5(pretrained=False, **kwargs):
    return _create_convnext("convnext_atto", pretrained=False,
                            **dict(dict(depths=DEPTHS, dims=DIMS, conv_mlp=False,
                                        norm_eps=1e-5), **kwargs))


MODELS = [("tiny-convnext", "pyramidclip_convnext_e6", "mlp", 1e-6),
          ("tiny-convnext-linear", "pyramidclip_convnext_e5", "linear", 1e-5)]


def main():
    torch.manual_seed(20261205)
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"]
    cfg_dir = "/tmp/pyramidclip-convnext-cfg"
    os.makedirs(cfg_dir, exist_ok=True)
    out, yml = {}, []
    for name, timm_name, proj, eps in MODELS:
        cfg = {"embed_dim": 24,
               "vision_cfg": {"timm_model_name": timm_name, "timm_model_pretrained": False,
                              "timm_pool": "", "timm_proj": proj, "timm_drop": 0.0,
                              "timm_drop_path": 0.1, "image_size": 64},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16,
                            "heads": 2, "layers": 2}}
        with open(os.path.join(cfg_dir, name + ".json"), "w") as f:
            json.dump(cfg, f)
        open_clip.add_model_config(cfg_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k != "logit_scale":
                    p.copy_((p + 0.05 * torch.randn_like(p)).half().float())
        torch.save({k: v.half() for k, v in model.state_dict().items()},
                   os.path.join(CLIP, name + ".pt"))
        model.eval()
        tok = open_clip.get_tokenizer(name)
        key = name.replace("-", "_")
        with torch.no_grad():
            x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
            out[f"{key}.image_features_raw"] = model.encode_image(x, normalize=False)
            out[f"{key}.text_features_raw"] = model.encode_text(tok(prompts), normalize=False)
            logits = minival_logits(model, tok, preprocess, man)
            out[f"{key}.minival_top1"] = logits.argmax(1)
        yml.append(f"""{name}:
    embed_dim: 24
    image_resolution: 64
    vision_layers: {DEPTHS}
    vision_width: {DIMS[0]}
    vision_patch_size: ~
    context_length: 77
    vocab_size: 49408
    transformer_width: 16
    transformer_heads: 2
    transformer_layers: 2
    family: clip
    activation: gelu
    vision_timm: {{model: {timm_name}, depths: {DEPTHS}, dims: {DIMS}, eps: {eps}, proj: {proj}}}
""")
    with open(os.path.join(CLIP, "tiny-convnext.yml"), "w") as f:
        f.write("# scripts/dev/convnext_reference.py: open_clip CLIP models with tiny timm "
                "ConvNeXt image towers\n" + "\n".join(yml))
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(CLIP, "convnext.safetensors"),
              metadata={"open_clip": open_clip.__version__, "torch": torch.__version__})


if __name__ == "__main__":
    main()
