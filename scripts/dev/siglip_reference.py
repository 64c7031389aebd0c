"""Dev-time: writes the SigLIP fixtures under tests/fixtures/clip/: open_clip SigLIP models
(`custom_text`; a timm ViT image tower without class token, pooled by its attention-pool head
`map`; a text tower without causal mask, pooled at the last position, projected with a bias;
an HF SentencePiece tokenizer with open_clip's `canonicalize` cleaning) at toy size:

- `siglip-tokenizer/`: a T5-style SentencePiece unigram tokenizer (600 pieces, nmt_nfkc
  normalisation, pad `</s>` = 1 as open_clip's SigLIP tokenizers), trained here with
  sentencepiece and converted by transformers as the hub's were (`tokenizer.json`,
  `tokenizer_config.json`);
- `siglip2-tokenizer/`: a SentencePiece BPE with byte fallback (Gemma's kind, as SigLIP 2's),
  set up as open_clip's `SigLipTokenizer` sets Gemma's up (no BOS, EOS appended, `<pad>` 0), its
  `tokenizer.json` saved after a call with `max_length` (so it keeps a padding and truncation
  section that transformers replaces on each call); its rows at context 16 are `gemma.tokens`;
- `tiny-siglip.safetensors`: as ViT-B-16-SigLIP (GELU, 4x MLPs), 64 px, patch 16;
- `tiny-siglip-so.pt`: as ViT-SO400M-14-SigLIP2 / the gelu_tanh towers (GELU tanh in
  both towers, mlp_ratio 3.7362), 56 px, patch 14, context 16 (prompts get truncated);
- `tiny-siglip.yml`: both architectures in our model-config format (their trunks are
  registered here, not timm's own names);
- `tiny-siglip-noproj.safetensors`: as ViT-SO400M-16-SigLIP-i18n-256's text tower, without a
  projection (`proj_type: none`), context 16;
- `siglip.safetensors`: each model's `encode_image` / `encode_text` (normalize=False) of the
  fixture images and prompts (plus `EXTRA`), the token ids open_clip's tokenizer gives them,
  the minival zero-shot top-1, the rows of a left-padding, left-cutting config of the
  tokenizer at context 8 (`left.tokens`), and the image features under the webli tags' preprocessing
  (squash, mean and std 0.5).

Weights are stored in fp16 and the features computed from them in f32.

    /tmp/venv/bin/python scripts/dev/siglip_reference.py
    (open_clip_torch 3.3, timm 1.0, transformers 5, sentencepiece)
"""
import json
import os
import shutil
import sys
import tempfile

import open_clip
import sentencepiece as spm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.models import register_model
from timm.models.vision_transformer import _create_vision_transformer
from transformers import AutoTokenizer

sys.path.insert(0, os.path.dirname(__file__))
from coca_reference import minival_logits  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")
TOK = os.path.join(CLIP, "siglip-tokenizer")
TOK2 = os.path.join(CLIP, "siglip2-tokenizer")
REPO = "pyramidclip-test/tiny-siglip-tokenizer"

# Prompts beyond the manifest's: punctuation, underscores, case, HTML entities, mojibake,
# NFKC (full-width, ligatures), accents, CJK, an empty prompt, and one past 16 and 64 pieces.
EXTRA = ["A_Photo of the  CAT!!", "caf\u00e9 &amp; na\u00efve r\u00e9sum\u00e9",
         "\uff26\uff35\uff2c\uff2c \ufb01ve \u2163", "s\u00c3\u00b3 t\u00e9 \u6771\u4eac",
         "", "a photo of a " + "goldfish, " * 40]


@register_model
def pyramidclip_siglip_b(pretrained=False, **kwargs):
    args = dict(patch_size=16, embed_dim=32, depth=2, num_heads=2, class_token=False,
                global_pool="map", img_size=64)
    return _create_vision_transformer("vit_base_patch16_siglip_224", pretrained=False,
                                      **dict(args, **kwargs))


@register_model
def pyramidclip_siglip_so(pretrained=False, **kwargs):
    args = dict(patch_size=14, embed_dim=32, depth=2, num_heads=4, mlp_ratio=3.7362,
                class_token=False, global_pool="map", act_layer="gelu_tanh", img_size=56)
    return _create_vision_transformer("vit_so400m_patch16_siglip_256", pretrained=False,
                                      **dict(args, **kwargs))


def tokenizer():
    """Trains the tiny SentencePiece model on ImageNet prompts and converts it as open_clip's
    `SigLipTokenizer` made the hub's (T5, no extra ids, pad `</s>`)."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "data")
    names = [l.strip() for l in open(os.path.join(root, "imagenet_classnames.txt"))]
    tmpl = [l.strip() for l in open(os.path.join(root, "imagenet_templates.txt"))]
    corpus = [tmpl[i % len(tmpl)].replace("{}", c) for i, c in enumerate(names)]
    corpus += ["caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u6771\u4eac \u00fc \u00df"] * 3
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "corpus.txt"), "w") as f:
            f.write("\n".join(corpus))
        spm.SentencePieceTrainer.train(
            input=os.path.join(d, "corpus.txt"), model_prefix=os.path.join(d, "sp"),
            vocab_size=600, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            normalization_rule_name="nmt_nfkc", character_coverage=1.0, num_threads=1,
            minloglevel=2)
        src = os.path.join(d, "src")
        os.makedirs(src)
        shutil.copy(os.path.join(d, "sp.model"), os.path.join(src, "spiece.model"))
        with open(os.path.join(src, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "legacy": False,
                       "pad_token": "</s>"}, f)
        shutil.rmtree(TOK, ignore_errors=True)
        AutoTokenizer.from_pretrained(src).save_pretrained(TOK)
    # Machine-specific fields of the saved config are not the tokenizer's.
    p = os.path.join(TOK, "tokenizer_config.json")
    cfg = json.load(open(p))
    for k in ("is_local", "local_files_only"):
        cfg.pop(k, None)
    with open(p, "w") as f:
        json.dump(cfg, f, indent=2)


def gemma_tokenizer():
    """A SigLIP 2-style tokenizer: a SentencePiece BPE with byte fallback (Gemma's kind), as
    open_clip's `SigLipTokenizer` set it up (no BOS, EOS appended, `<pad>` = 0, right padding),
    called once with `max_length` before it is saved, so that its `tokenizer.json` keeps that
    call's padding and truncation (which transformers replaces on every call)."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "data")
    names = [l.strip() for l in open(os.path.join(root, "imagenet_classnames.txt"))]
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "corpus.txt"), "w") as f:
            f.write("\n".join(f"a photo of a {c}." for c in names))
            f.write("\ncaf\u00e9 na\u00efve \u6771\u4eac \u00fc \u00df\n")
        spm.SentencePieceTrainer.train(
            input=os.path.join(d, "corpus.txt"), model_prefix=os.path.join(d, "g"),
            vocab_size=700, model_type="bpe", byte_fallback=True, pad_id=0, eos_id=1,
            bos_id=2, unk_id=3, normalization_rule_name="identity", character_coverage=1.0,
            num_threads=1, minloglevel=2, split_digits=True, add_dummy_prefix=False,
            remove_extra_whitespaces=False, allow_whitespace_only_pieces=True)
        src = os.path.join(d, "src")
        os.makedirs(src)
        shutil.copy(os.path.join(d, "g.model"), os.path.join(src, "tokenizer.model"))
        with open(os.path.join(src, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "GemmaTokenizer", "add_bos_token": False,
                       "add_eos_token": True, "padding_side": "right", "pad_token": "<pad>",
                       "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}, f)
        t = AutoTokenizer.from_pretrained(src)
        t(["a photo of a cat"], max_length=16, padding="max_length", truncation=True)
        shutil.rmtree(TOK2, ignore_errors=True)
        t.save_pretrained(TOK2)
    p = os.path.join(TOK2, "tokenizer_config.json")
    cfg = json.load(open(p))
    for k in ("is_local", "local_files_only", "vocab_file"):
        cfg.pop(k, None)
    with open(p, "w") as f:
        json.dump(cfg, f, indent=2)


def config(timm_name, image_size, context, act_tanh, noproj=False):
    text = {"context_length": context, "vocab_size": 600, "hf_tokenizer_name": TOK,
            "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 32 if noproj else 24,
            "heads": 2, "layers": 2, "no_causal_mask": True, "proj_bias": True,
            "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}
    if noproj:
        # As ViT-SO400M-16-SigLIP-i18n-256: no text projection, the text width the embedding's.
        del text["proj_bias"]
        text["proj_type"] = "none"
    if act_tanh:
        text["mlp_ratio"] = 3.7362
        text["act_kwargs"] = {"approximate": "tanh"}
    return {"embed_dim": 32, "init_logit_bias": -10, "custom_text": True,
            "vision_cfg": {"image_size": image_size, "timm_model_name": timm_name,
                           "timm_model_pretrained": False, "timm_pool": "map",
                           "timm_proj": "none"},
            "text_cfg": text}


MODELS = [("tiny-siglip", "pyramidclip_siglip_b", 64, 64, False, ".safetensors"),
          ("tiny-siglip-so", "pyramidclip_siglip_so", 56, 16, True, ".pt"),
          ("tiny-siglip-noproj", "pyramidclip_siglip_b", 64, 16, False, ".safetensors")]


def yml_entry(name, timm_name, size, context, tanh, noproj=False):
    """The model in our model-config format (the registered trunks are not timm's own, so
    their sizes are written out)."""
    patch, heads = (14, 4) if tanh else (16, 2)
    act = "gelu_tanh" if tanh else "gelu"
    lines = [f"{name}:", "    embed_dim: 32", f"    image_resolution: {size}",
             "    vision_layers: 2", "    vision_width: 32", f"    vision_patch_size: {patch}",
             f"    context_length: {context}", "    vocab_size: 600",
             f"    transformer_width: {32 if noproj else 24}", "    transformer_heads: 2",
             "    transformer_layers: 2",
             "    family: siglip", f"    activation: {act}", f"    vision_heads: {heads}"]
    text_mlp = ""
    if tanh:
        lines.append(f"    vision_mlp_width: {int(32 * 3.7362)}")
        text_mlp = f"text_mlp_width: {int(24 * 3.7362)}, "
    tail = ", no_text_projection: true" if noproj else ""
    lines.append(f"    siglip: {{timm_model: {timm_name}, vision_activation: {act}, {text_mlp}"
                 f"tokenizer: {REPO}, clean: canonicalize{tail}}}")
    return "\n".join(lines) + "\n"


def main():
    torch.manual_seed(20261205)
    tokenizer()
    gemma_tokenizer()
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"] + EXTRA
    cfg_dir = tempfile.mkdtemp()
    out, yml = {}, []
    for name, timm_name, size, context, tanh, ext in MODELS:
        noproj = name.endswith("noproj")
        yml.append(yml_entry(name, timm_name, size, context, tanh, noproj))
        cfg = config(timm_name, size, context, tanh, noproj)
        with open(os.path.join(cfg_dir, name + ".json"), "w") as f:
            json.dump(cfg, f)
        open_clip.add_model_config(cfg_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k not in ("logit_scale", "logit_bias"):
                    p.copy_((p + 0.05 * torch.randn_like(p)).half().float())
        sd = {k: v.half() for k, v in model.state_dict().items()}
        if ext == ".pt":
            torch.save(sd, os.path.join(CLIP, name + ext))
        else:
            save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(CLIP, name + ext))
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
            # As the webli tags preprocess: squashed, normalised with 0.5 (`_slpcfg`).
            sq = open_clip.image_transform(size, is_train=False, mean=(0.5,) * 3,
                                           std=(0.5,) * 3, resize_mode="squash")
            x = torch.stack([sq(Image.open(os.path.join(FX, p))) for p in images])
            out[f"{key}.image_features_webli"] = model.encode_image(x, normalize=False)
    # A config padding and cutting on the left (`padding_side`, `truncation_side`), context 8.
    with tempfile.TemporaryDirectory() as d:
        shutil.copytree(TOK, d, dirs_exist_ok=True)
        p = os.path.join(d, "tokenizer_config.json")
        cfg = json.load(open(p))
        cfg.update(padding_side="left", truncation_side="left")
        with open(p, "w") as f:
            json.dump(cfg, f)
        left = open_clip.tokenizer.HFTokenizer(d, context_length=8, clean="canonicalize")
        out["left.tokens"] = left(prompts).to(torch.int64)
    gemma = open_clip.tokenizer.HFTokenizer(TOK2, context_length=16, clean="canonicalize")
    out["gemma.tokens"] = gemma(prompts).to(torch.int64)
    with open(os.path.join(CLIP, "tiny-siglip.yml"), "w") as f:
        f.write("# scripts/dev/siglip_reference.py: open_clip SigLIP models with tiny timm "
                "SigLIP ViTs\n" + "\n".join(yml))
    import transformers
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(CLIP, "siglip.safetensors"),
              metadata={"prompts": json.dumps(prompts), "open_clip": open_clip.__version__,
                        "torch": torch.__version__, "transformers": transformers.__version__})


if __name__ == "__main__":
    main()
