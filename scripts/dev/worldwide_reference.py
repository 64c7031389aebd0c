"""Dev-time: writes the MetaCLIP 2 "worldwide" fixtures under tests/fixtures/clip/: open_clip
models with CLIP's towers (causal text tower) fed by a HuggingFace tokenizer and pooled at its
end-of-sequence id (`text_cfg.pool_type: eos`, `eos_id`) rather than at the largest id, as
ViT-H-14-worldwide (XLM-V's tokenizer, eos 2) and ViT-L-14-worldwide (mT5's, eos 1,
`canonicalize` cleaning) are built, at toy size:

- `tiny-worldwide.safetensors` / `.json`: GELU, context 32, the fixture's byte-level BPE
  (`hf-tokenizer/`: `<s>` 0, `<pad>` 1, `</s>` 2) standing in for XLM-V's;
- `tiny-worldwide-mt5.pt` / `.json`: QuickGELU, context 16, the fixture's T5-style
  SentencePiece (`siglip-tokenizer/`: `</s>` 1) standing in for mT5's, `canonicalize`;
- `worldwide.safetensors`: the ids open_clip's `HFTokenizer` gives the fixture prompts (plus
  `EXTRA`), each model's `encode_image` / `encode_text` (normalize=False) and minival
  zero-shot top-1.

The JSON configs name the hub tokenizers as open_clip's do; the tests pass the fixture ones
with --tokenizer. Weights are stored in fp16 and the features computed from them in f32.

    /tmp/venv/bin/python scripts/dev/worldwide_reference.py   (open_clip_torch 3.3)
"""
import json
import os
import sys
import tempfile

import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from coca_reference import minival_logits, perturb_and_save  # noqa: E402
from clipa_reference import EXTRA  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")

# name, extension, quick_gelu, context, eos id, fixture tokenizer, hub tokenizer, cleaning
MODELS = [("tiny-worldwide", ".safetensors", False, 32, 2, "hf-tokenizer", "facebook/xlm-v-base",
           None),
          ("tiny-worldwide-mt5", ".pt", True, 16, 1, "siglip-tokenizer", "google/mt5-base",
           "canonicalize")]


def config(quick, ctx, eos, tokenizer, clean, vocab):
    text = {"hf_tokenizer_name": tokenizer, "pool_type": "eos", "eos_id": eos,
            "context_length": ctx, "vocab_size": vocab, "width": 16, "heads": 2, "layers": 2}
    if clean:
        text["tokenizer_kwargs"] = {"clean": clean}
    cfg = {"embed_dim": 24,
           "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16,
                          "patch_size": 16},
           "text_cfg": text}
    if quick:
        cfg["quick_gelu"] = True
    return cfg


def main():
    torch.manual_seed(20261208)
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"] + EXTRA
    cfg_dir = tempfile.mkdtemp()
    out = {}
    for name, ext, quick, ctx, eos, tok_dir, hub, clean in MODELS:
        local = os.path.join(CLIP, tok_dir)
        vocab = len(json.load(open(os.path.join(local, "tokenizer.json")))["model"]["vocab"])
        with open(os.path.join(cfg_dir, name + ".json"), "w") as f:
            json.dump(config(quick, ctx, eos, local, clean, vocab + 8), f)
        with open(os.path.join(CLIP, name + ".json"), "w") as f:
            json.dump(config(quick, ctx, eos, hub, clean, vocab + 8), f, indent=2)
        open_clip.add_model_config(cfg_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        perturb_and_save(model, os.path.join(CLIP, name + ext))
        model.eval()
        tok = open_clip.get_tokenizer(name)
        key = name.replace("-", "_")
        with torch.no_grad():
            x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
            ids = tok(prompts)
            # The eos pooling is not the largest id's for these prompts.
            assert (ids.argmax(1) != (ids == eos).int().argmax(1)).any()
            out[f"{key}.tokens"] = ids.to(torch.int64)
            out[f"{key}.image_features_raw"] = model.encode_image(x, normalize=False)
            out[f"{key}.text_features_raw"] = model.encode_text(ids, normalize=False)
            out[f"{key}.minival_top1"] = minival_logits(model, tok, preprocess, man).argmax(1)
        print(name, ids[:2].tolist())
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(CLIP, "worldwide.safetensors"),
              metadata={"prompts": json.dumps(prompts), "open_clip": open_clip.__version__,
                        "torch": torch.__version__})


if __name__ == "__main__":
    main()
