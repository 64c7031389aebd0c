"""Dev-time: writes the CLIPA fixtures under tests/fixtures/clip/: open_clip CLIPA models (CLIP's
key layout; the ViT without `ln_pre`, pooled by the mean of its patch tokens, then `ln_post` and
`proj`; the text tower without causal mask, pooled at the last position, `text_projection`
without bias; GELU; a BERT WordPiece tokenizer with `strip_sep_token`) at toy size:

- `bert-tokenizer/`: a WordPiece vocabulary (BERT's `[PAD]` 0, `[UNK]`, `[CLS]`, `[SEP]`,
  `[MASK]`) trained here on ImageNet prompts with `tokenizers`, saved by transformers'
  `BertTokenizer` (lowercasing, accents stripped, CJK split, `[CLS] ... [SEP]`), as
  `bert-base-uncased` is (the trainer orders tied `##` pieces differently from run to run, so
  a rerun writes another vocabulary and token ids; the weights are reproducible);
- `tiny-clipa.safetensors` / `.json`: 56 px, patch 14, 2 heads of 16, context 16;
- `tiny-clipa-r.pt` / `.json`: 64 px, patch 16, 4 heads of 8, ViT-bigG-CLIPA's `mlp_ratio`
  (4.9231), 3 blocks, context 32;
- `clipa.safetensors`: the ids open_clip's `HFTokenizer` gives the fixture prompts (plus
  `EXTRA`), each model's `encode_image` / `encode_text` (normalize=False) and minival zero-shot
  top-1, and the image features under the CLIPA tags' preprocessing (`_apcfg`: squashed,
  bilinear, ImageNet mean and std).

The JSON configs name `bert-base-uncased` as open_clip's do; the tests pass the fixture
tokenizer with --tokenizer. Weights are stored in fp16 and the features computed in f32.

    /tmp/venv/bin/python scripts/dev/clipa_reference.py   (open_clip_torch 3.3, transformers 5)
"""
import json
import os
import shutil
import string
import sys
import tempfile

import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import BertWordPieceTokenizer
from transformers import BertTokenizer

sys.path.insert(0, os.path.dirname(__file__))
from coca_reference import minival_logits, perturb_and_save  # noqa: E402
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")
TOK = os.path.join(CLIP, "bert-tokenizer")

# Prompts beyond the manifest's: case, punctuation, accents, CJK, an empty one, a long one.
EXTRA = ["A_Photo of the  CAT!!", "caf\u00e9 &amp; na\u00efve r\u00e9sum\u00e9",
         "s\u00c3\u00b3 t\u00e9 \u6771\u4eac", "", "a photo of a " + "goldfish, " * 40]

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

MODELS = [("tiny-clipa", ".safetensors",
           {"image_size": 56, "layers": 2, "width": 32, "head_width": 16, "patch_size": 14},
           {"context_length": 16, "width": 16, "heads": 2, "layers": 2}),
          ("tiny-clipa-r", ".pt",
           {"image_size": 64, "layers": 3, "width": 32, "head_width": 8, "patch_size": 16,
            "mlp_ratio": 4.9231},
           {"context_length": 32, "width": 24, "heads": 3, "layers": 2})]


def tokenizer():
    """A WordPiece vocabulary trained on ImageNet prompts (with ASCII punctuation and a few CJK
    characters), saved as transformers' BertTokenizer saves `bert-base-uncased`'s."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "data")
    names = [l.strip() for l in open(os.path.join(root, "imagenet_classnames.txt"))]
    tmpl = [l.strip() for l in open(os.path.join(root, "imagenet_templates.txt"))]
    corpus = [tmpl[i % len(tmpl)].replace("{}", c) for i, c in enumerate(names)]
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(corpus, vocab_size=500, special_tokens=SPECIALS,
                           initial_alphabet=list(string.punctuation) + ["\u6771", "\u4eac"])
    fast = BertTokenizer(vocab=wp.get_vocab())
    shutil.rmtree(TOK, ignore_errors=True)
    fast.save_pretrained(TOK)
    p = os.path.join(TOK, "tokenizer_config.json")
    cfg = json.load(open(p))
    for k in ("is_local", "local_files_only"):
        cfg.pop(k, None)
    with open(p, "w") as f:
        json.dump(cfg, f, indent=2)
    return wp.get_vocab_size()


def config(vision, text, tokenizer):
    return {"embed_dim": 24,
            "vision_cfg": dict(vision, no_ln_pre=True, pool_type="avg", final_ln_after_pool=True),
            "text_cfg": dict(text, vocab_size=512, hf_tokenizer_name=tokenizer,
                             tokenizer_kwargs={"strip_sep_token": True}, pool_type="last",
                             no_causal_mask=True)}


def main():
    torch.manual_seed(20261207)
    assert tokenizer() <= 512
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"] + EXTRA
    cfg_dir = tempfile.mkdtemp()
    out = {}
    for name, ext, vision, text in MODELS:
        with open(os.path.join(cfg_dir, name + ".json"), "w") as f:
            json.dump(config(vision, text, TOK), f)
        with open(os.path.join(CLIP, name + ".json"), "w") as f:
            json.dump(config(vision, text, "bert-base-uncased"), f, indent=2)
        open_clip.add_model_config(cfg_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        sd = perturb_and_save(model, os.path.join(CLIP, name + ext))
        assert "visual.ln_pre.weight" not in sd
        model.eval()
        tok = open_clip.get_tokenizer(name)
        key = name.replace("-", "_")
        with torch.no_grad():
            x = torch.stack([preprocess(Image.open(os.path.join(FX, p))) for p in images])
            ids = tok(prompts)
            out[f"{key}.tokens"] = ids.to(torch.int64)
            out[f"{key}.image_features_raw"] = model.encode_image(x, normalize=False)
            out[f"{key}.text_features_raw"] = model.encode_text(ids, normalize=False)
            out[f"{key}.minival_top1"] = minival_logits(model, tok, preprocess, man).argmax(1)
            # As the CLIPA tags preprocess (`_apcfg`): squashed, bilinear, ImageNet mean/std.
            tf = open_clip.image_transform(vision["image_size"], is_train=False,
                                           mean=IMAGENET_MEAN,
                                           std=IMAGENET_STD,
                                           resize_mode="squash", interpolation="bilinear")
            x = torch.stack([tf(Image.open(os.path.join(FX, p))) for p in images])
            out[f"{key}.image_features_tag"] = model.encode_image(x, normalize=False)
        print(name, ids[:3].tolist())
    import transformers
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(CLIP, "clipa.safetensors"),
              metadata={"prompts": json.dumps(prompts), "open_clip": open_clip.__version__,
                        "torch": torch.__version__, "transformers": transformers.__version__})


if __name__ == "__main__":
    main()
