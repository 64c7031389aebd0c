"""Dev-time: writes the fixtures of CLIP checkpoints in transformers' layout (`CLIPModel`, as
`save_pretrained` writes it and the hub serves it) under tests/fixtures/clip/, toy size:

- `tiny-hf-clip/`: `config.json` with `hidden_act: gelu` (as LAION's transformers copies say),
  16-wide image heads, `model.safetensors`, and a `preprocessor_config.json` whose mean and
  std are not OpenAI's (so that reading it shows);
- `tiny-hf-clip-openai/`: `config.json` without `hidden_act` (transformers' default,
  QuickGELU, taken out after saving, as older and hand-written configs leave it) and the legacy
  `eos_token_id: 2` (pooling at the largest id), 8-wide image heads, the weights as
  `pytorch_model.bin` (what transformers 4 wrote; a torch zip of the same keys, with the
  position-id buffers its versions before 4.31 saved), no preprocessor config;
- `hf-clip.safetensors`: `get_image_features` / `get_text_features` of the fixture images
  (open_clip's OpenAI transform at 64 px, with each model's mean and std) and prompts
  (CLIP's BPE ids from open_clip's tokenizer, the padding masked), and the minival zero-shot
  top-1.

    /tmp/venv/bin/python scripts/dev/hf_clip_reference.py   (transformers 5.25, torch 2.15)
"""
import json
import os
import shutil
import sys

import open_clip
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

sys.path.insert(0, os.path.dirname(__file__))
from coca_reference import minival_logits  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")
MEAN = [0.5, 0.45, 0.4]
STD = [0.25, 0.3, 0.35]


def clip_config(vision_heads, act, legacy_eos):
    text = dict(vocab_size=49408, hidden_size=16, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77)
    vision = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=vision_heads, image_size=64, patch_size=16)
    if act:
        text["hidden_act"] = vision["hidden_act"] = act
    if legacy_eos:
        text["eos_token_id"] = 2
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)


class Encoders:
    """`encode_image` / `encode_text` over a transformers CLIPModel, as open_clip names them."""

    def __init__(self, model):
        self.model = model

    def encode_image(self, x):
        return self.model.get_image_features(pixel_values=x).pooler_output

    def encode_text(self, ids):
        return self.model.get_text_features(input_ids=ids,
                                            attention_mask=(ids != 0).long()).pooler_output


# name, image heads, activation written, legacy eos, weights file, preprocessor config
MODELS = [("tiny-hf-clip", 2, "gelu", False, "model.safetensors", True),
          ("tiny-hf-clip-openai", 4, None, True, "pytorch_model.bin", False)]


def main():
    torch.manual_seed(20261208)
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"]
    tok = open_clip.get_tokenizer("ViT-B-32")
    out = {}
    for name, heads, act, legacy, weights, pre in MODELS:
        cfg = clip_config(heads, act, legacy)
        model = CLIPModel(cfg).eval()
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k != "logit_scale":
                    # Off the initial values, rounded through fp16 (the saved weights are
                    # the ones computed with).
                    p.copy_((p + 0.05 * torch.randn_like(p)).half().float())
        d = os.path.join(CLIP, name)
        shutil.rmtree(d, ignore_errors=True)
        model.half().save_pretrained(d)
        model.float()
        if weights == "pytorch_model.bin":
            os.remove(os.path.join(d, "model.safetensors"))
            sd = {k: v.half() for k, v in model.state_dict().items()}
            # transformers before 4.31 saved the position-id buffers too.
            sd["text_model.embeddings.position_ids"] = torch.arange(77)[None]
            sd["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
            torch.save(sd, os.path.join(d, weights))
        if act is None:
            # transformers 5 writes every field of the towers' configs; older ones (and
            # hand-written configs) leave the default out: the reader must supply it.
            path = os.path.join(d, "config.json")
            written = json.load(open(path))
            for tower in ("text_config", "vision_config"):
                del written[tower]["hidden_act"]
            with open(path, "w") as f:
                json.dump(written, f, indent=2)
        mean, std = (MEAN, STD) if pre else (open_clip.OPENAI_DATASET_MEAN,
                                             open_clip.OPENAI_DATASET_STD)
        if pre:
            with open(os.path.join(d, "preprocessor_config.json"), "w") as f:
                json.dump({"crop_size": {"height": 64, "width": 64}, "do_center_crop": True,
                           "do_normalize": True, "do_resize": True,
                           "image_processor_type": "CLIPImageProcessor",
                           "image_mean": MEAN, "image_std": STD, "resample": 3,
                           "size": {"shortest_edge": 64}}, f, indent=2)
        preprocess = open_clip.image_transform(64, is_train=False, mean=mean, std=std)
        enc = Encoders(model)
        key = name.replace("-", "_")
        with torch.no_grad():
            x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
            out[f"{key}.image_features_raw"] = enc.encode_image(x)
            out[f"{key}.text_features_raw"] = enc.encode_text(tok(prompts))
            out[f"{key}.minival_top1"] = minival_logits(enc, tok, preprocess, man).argmax(1)
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(CLIP, "hf-clip.safetensors"),
              metadata={"prompts": json.dumps(prompts), "transformers": transformers.__version__,
                        "torch": torch.__version__})


if __name__ == "__main__":
    main()
