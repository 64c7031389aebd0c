"""Dev-time: writes the CoCa fixtures under tests/fixtures/clip/:

- `tiny-coca.json` / `tiny-coca.pt`: an open_clip CoCa (`custom_text`, the image tower's
  attentional pooler with 8 queries, its text tower's appended class token) at toy size,
  image width 32 against embed_dim 24 (the pooler's separate q/k/v weights);
- `tiny-coca-square.json` / `.pt`: the same with image width 24 (the pooler's fused
  `in_proj_weight`);
- `coca.safetensors`: each model's `encode_image` / `encode_text` (normalize=False) of the
  fixture images and prompts, its zero-shot cosines and top-1 on minival, plus `coca_prompts`' prompts (id 0, "!", inside a prompt: the
  legacy class-token mask hides the key after it; a prompt filling the 76 ids, whose class
  token then sees itself).

Weights are stored in fp16 (the fixture's size) and the features computed from them in f32.

    /tmp/venv/bin/python scripts/dev/coca_reference.py   (open_clip_torch 3.3, torch 2.15)
"""
import json
import os

import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")

# Prompts beyond the fixture manifest's: "!" before "~" is id 0 (the pad id) mid-prompt.
EXTRA = ["a photo of a !~ cat", "!$% a garden !~", "a " + "dog !~ " * 30]


def minival_logits(model, tok, preprocess, man):
    """Zero-shot on minival as open_clip's classifier builds it: each prompt's feature
    normalised, averaged per class, normalised; the images' (raw) features' products with
    them."""
    cls = []
    for c in man["classnames"]:
        t = model.encode_text(tok([t.format(c) for t in man["templates"]]))
        t = torch.nn.functional.normalize(t, dim=-1).mean(0)
        cls.append(torch.nn.functional.normalize(t, dim=0))
    mv = torch.stack([preprocess(Image.open(os.path.join(FX, p)))
                      for p in man["minival"]["files"]])
    return model.encode_image(mv) @ torch.stack(cls).T


def perturb_and_save(model, path):
    """Moves `model`'s weights off their initial values (by 0.05 of a normal draw each, rounded
    through fp16 so the saved fp16 weights are the ones computed with) and writes its state
    dict in fp16 to `path` (`.pt`: torch.save; else safetensors)."""
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k not in ("logit_scale", "logit_bias"):
                p.copy_((p + 0.05 * torch.randn_like(p)).half().float())
    sd = {k: v.half() for k, v in model.state_dict().items()}
    if path.endswith(".pt"):
        torch.save(sd, path)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    return sd


def config(width):
    return {
        "embed_dim": 24,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": width, "head_width": 8, "patch_size": 16,
                       "attentional_pool": True, "attn_pooler_heads": 2,
                       "attn_pooler_queries": 8, "output_tokens": True},
        "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 16, "heads": 2,
                     "layers": 2, "embed_cls": True, "output_tokens": True},
        "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 16,
                           "heads": 2, "layers": 1, "attn_pooler_heads": 2},
        "custom_text": True,
    }


def main():
    torch.manual_seed(20261205)
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"] + EXTRA
    out = {}
    for name, width in [("tiny-coca", 32), ("tiny-coca-square", 24)]:
        with open(os.path.join(CLIP, name + ".json"), "w") as f:
            json.dump(config(width), f, indent=1)
        open_clip.add_model_config(CLIP)
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        # Random weights spread wider than the init (the pooler's query and LayerNorms too),
        # rounded to fp16 as stored.
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k == "logit_scale":
                    continue
                p.copy_((p + 0.05 * torch.randn_like(p)).half().float())
        sd = {k: v.half() for k, v in model.state_dict().items()}
        torch.save(sd, os.path.join(CLIP, name + ".pt"))
        model.eval()
        tok = open_clip.get_tokenizer(name)
        with torch.no_grad():
            x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
            ids = tok(prompts)
            key = name.replace("-", "_")
            out[f"{key}.image_features_raw"] = model.encode_image(x, normalize=False)
            out[f"{key}.text_features_raw"] = model.encode_text(ids, normalize=False)
            out[f"{key}.tokens"] = ids.to(torch.int64)
            logits = minival_logits(model, tok, preprocess, man)
            out[f"{key}.minival_logits"] = logits
            out[f"{key}.minival_top1"] = logits.argmax(1)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(CLIP, "coca.safetensors"),
              metadata={"prompts": json.dumps(prompts), "open_clip": open_clip.__version__,
                        "torch": torch.__version__})


if __name__ == "__main__":
    main()
