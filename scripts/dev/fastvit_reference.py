"""Dev-time: writes the MobileCLIP-S fixtures under tests/fixtures/clip/: open_clip's
MobileCLIP-S* / MobileCLIP2-S* models (`custom_text`; a timm FastViT MCi trunk, average pooled,
its `head.fc` the projection; CLIP's text tower under `text.` without causal mask, pooled at
the end-of-text id) at toy size, their trunks registered here with timm's MCi options:

- `tiny-fastvit-s.safetensors`: as MCi0-2 (MobileCLIP-S1/S2, MobileCLIP2-S0/S2): four stages
  (32, 32, 64, 64 wide), RepMixer blocks then an attention stage with the conditional
  positional encoding, BatchNorm before attention, SE in the last two stages' downsampling,
  the stem's 1x1 branches; trained (unfolded) weights; 64 px;
- `tiny-fastvit-l.pt`: as MCi3 / MCi4 (MobileCLIP2-S3/S4): five stages, two attention stages,
  LayerNorm2d (eps 1e-5) before attention, no SE in the downsampling, no 1x1 branch in the
  stem; saved after timm's `reparameterize_model` (`reparam_conv` keys; its features those of
  the folded weights as saved); 64 px;
- `tiny-fastvit.yml`: the two in our model-config format;
- `fastvit.safetensors`: each model's `encode_image` / `encode_text` (normalize=False) of the
  fixture images and prompts (the S model's computed with the trained branches), and the
  minival zero-shot top-1; and the S model's image features under the MobileCLIP tags'
  preprocessing (mean 0, std 1, bilinear, shortest side then centre crop).

Weights are stored in fp16 and the features computed from them in f32; the BatchNorms' running
statistics and the layer scales are drawn too (the layer scales start at 1e-5) so that folding
them is tested.

    /tmp/venv/bin/python scripts/dev/fastvit_reference.py   (open_clip_torch 3.3, timm 1.0)
"""
import json
import os
import sys
import tempfile
from functools import partial

import open_clip
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.layers import LayerNorm2d
from timm.models import register_model
from timm.models.fastvit import RepConditionalPosEnc, _create_fastvit
from timm.utils.model import reparameterize_model

sys.path.insert(0, os.path.dirname(__file__))
from coca_reference import minival_logits  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")
CPE = partial(RepConditionalPosEnc, spatial_shape=(7, 7))
S = dict(layers=(1, 2, 1, 2), embed_dims=(32, 32, 64, 64), mlp_ratios=(3, 3, 3, 3),
         se_downsamples=(False, False, True, True), pos_embs=(None, None, None, CPE),
         token_mixers=("repmixer", "repmixer", "repmixer", "attention"), lkc_use_act=True)
L = dict(layers=(1, 1, 2, 1, 2), embed_dims=(32, 32, 64, 64, 128), mlp_ratios=(4,) * 5,
         se_downsamples=(False,) * 5, downsamples=(False, True, True, True, True),
         pos_embs=(None, None, None, CPE, CPE),
         token_mixers=("repmixer", "repmixer", "repmixer", "attention", "attention"),
         lkc_use_act=True, norm_layer=partial(LayerNorm2d, eps=1e-5), stem_use_scale_branch=False)


@register_model
def pyramidclip_fastvit_s(pretrained=False, **kwargs):
    return _create_fastvit("fastvit_mci0", pretrained=False, **dict(S, **kwargs))


@register_model
def pyramidclip_fastvit_l(pretrained=False, **kwargs):
    return _create_fastvit("fastvit_mci3", pretrained=False, **dict(L, **kwargs))


# name, registered trunk, its options, extension, folded before saving
MODELS = [("tiny-fastvit-s", "pyramidclip_fastvit_s", S, ".safetensors", False),
          ("tiny-fastvit-l", "pyramidclip_fastvit_l", L, ".pt", True)]


def config(trunk):
    return {"embed_dim": 24, "custom_text": True,
            "vision_cfg": {"image_size": 64, "timm_model_name": trunk,
                           "timm_model_pretrained": False, "timm_pool": "avg",
                           "timm_proj": None},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2,
                         "layers": 2, "no_causal_mask": True}}


def yml_entry(name, trunk, a):
    n = len(a["layers"])
    flags = lambda v: "[" + ", ".join(str(bool(x)).lower() for x in v) + "]"  # noqa: E731
    opts = [f"model: {trunk}", f"depths: {list(a['layers'])}", f"dims: {list(a['embed_dims'])}",
            f"attention: {flags([m == 'attention' for m in a['token_mixers']])}",
            f"se: {flags(a['se_downsamples'])}", f"mlp_ratio: {a['mlp_ratios'][0]}"]
    if "norm_layer" in a:
        opts.append("layer_norm: true")
    if a.get("stem_use_scale_branch", True) is False:
        opts.append("stem_scale_branch: false")
    assert n == len(a["embed_dims"])
    lines = [f"{name}:", "    embed_dim: 24", "    image_resolution: 64",
             f"    vision_layers: {list(a['layers'])}", f"    vision_width: {a['embed_dims'][0]}",
             "    context_length: 77", "    vocab_size: 49408", "    transformer_width: 16",
             "    transformer_heads: 2", "    transformer_layers: 2", "    family: custom-text",
             "    activation: gelu", "    vision_fastvit: {" + ", ".join(opts) + "}",
             "    text_no_causal_mask: true"]
    return "\n".join(lines) + "\n"


def perturb(model):
    """Moves every parameter and BatchNorm statistic off its initial value, through fp16."""
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k in ("logit_scale", "logit_bias"):
                continue
            if k.endswith("gamma"):
                p.copy_(0.5 + 0.5 * torch.rand_like(p))
            else:
                p.copy_(p + 0.05 * torch.randn_like(p))
            p.copy_(p.half().float())
        for k, b in model.named_buffers():
            if k.endswith("running_mean"):
                b.copy_((0.1 * torch.randn_like(b)).half().float())
            elif k.endswith("running_var"):
                b.copy_((0.5 + torch.rand_like(b)).half().float())


def main():
    torch.manual_seed(20261207)
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"]
    cfg_dir = tempfile.mkdtemp()
    out, yml = {}, []
    for name, trunk, args, ext, fold in MODELS:
        yml.append(yml_entry(name, trunk, args))
        with open(os.path.join(cfg_dir, name + ".json"), "w") as f:
            json.dump(config(trunk), f)
        open_clip.add_model_config(cfg_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        perturb(model)
        model.eval()
        if fold:
            # Folded, then rounded through fp16 as saved: the features are the folded model's.
            model = reparameterize_model(model)
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.half().float())
        tok = open_clip.get_tokenizer(name)
        key = name.replace("-", "_")
        with torch.no_grad():
            x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
            out[f"{key}.image_features_raw"] = model.encode_image(x, normalize=False)
            out[f"{key}.text_features_raw"] = model.encode_text(tok(prompts), normalize=False)
            out[f"{key}.minival_top1"] = minival_logits(model, tok, preprocess, man).argmax(1)
            if not fold:
                # As the MobileCLIP tags preprocess (`_mccfg`): mean 0, std 1, bilinear.
                tf = open_clip.image_transform(64, is_train=False, mean=(0.0,) * 3,
                                               std=(1.0,) * 3, resize_mode="shortest",
                                               interpolation="bilinear")
                x = torch.stack([tf(Image.open(os.path.join(FX, p))) for p in images])
                out[f"{key}.image_features_tag"] = model.encode_image(x, normalize=False)
        sd = {k: v.half() for k, v in model.state_dict().items()}
        if ext == ".pt":
            torch.save(sd, os.path.join(CLIP, name + ext))
        else:
            save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(CLIP, name + ext))
    with open(os.path.join(CLIP, "tiny-fastvit.yml"), "w") as f:
        f.write("# scripts/dev/fastvit_reference.py: open_clip MobileCLIP-S models with tiny "
                "timm FastViT trunks\n" + "\n".join(yml))
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(CLIP, "fastvit.safetensors"),
              metadata={"prompts": json.dumps(prompts), "open_clip": open_clip.__version__,
                        "torch": torch.__version__, "timm": timm.__version__})


if __name__ == "__main__":
    main()
