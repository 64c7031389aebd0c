"""Dev-time: writes the fixtures of open_clip's HuggingFace text towers (`HFTextEncoder`:
`xlm-roberta-base-ViT-B-32`, `xlm-roberta-large-ViT-H-14`, `roberta-ViT-B-32`) under
tests/fixtures/clip/, at toy size:

- `hf-tokenizer/`: a byte-level BPE (RoBERTa's kind: `<s>` 0, `<pad>` 1, `</s>` 2, the
  RoBERTa post-processor), trained here with `tokenizers` and saved by transformers;
- `tiny-xlmr.safetensors`: as xlm-roberta-base-ViT-B-32 (an XLM-RoBERTa encoder, the mean
  pooler over non-pad positions, open_clip's MLP projection; GELU ViT), 64 px, patch 16;
- `tiny-roberta-cls.pt`: as roberta-ViT-B-32 with `hf_pooler_type: cls_pooler` and
  `hf_proj_type: linear` (the encoder's own pooler, dense + tanh, at `<s>`; QuickGELU ViT),
  context 16 (prompts get cut);
- `nllb-tokenizer/`: a SentencePiece-style BPE (Metaspace) with NLLB's template: the
  language code `eng_Latn` first, `</s>` last, `<pad>` 1;
- `tiny-nllb.pt`: as nllb-clip-base (NLLB's M2M100 encoder: scaled embeddings, sinusoidal
  positions, pre-LayerNorm blocks with ReLU, `cls_pooler` at the language code, a linear
  projection); its state dict holds the position table as older transformers saved it;
- `tiny-nllb-siglip.safetensors`: as nllb-clip-base-siglip (SigLIP's image tower, the tiny
  timm trunk of scripts/dev/siglip_reference.py, with the NLLB text tower and a logit bias);
- `tiny-hf.yml`: the four in our model-config format (their HF text configs written out);
- `hf-text.safetensors`: each model's `encode_image` / `encode_text` (normalize=False) of the
  fixture images and prompts (plus `EXTRA`), the ids open_clip's tokenizer gives them and
  the minival zero-shot top-1.

Weights are stored in fp16 and the features computed from them in f32.

    /tmp/venv/bin/python scripts/dev/hf_text_reference.py
    (open_clip_torch 3.3, transformers 5, tokenizers)
"""
import json
import os
import shutil
import sys
import tempfile

import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders, trainers
from transformers import (M2M100Config, PreTrainedTokenizerFast, RobertaConfig,
                          XLMRobertaConfig)

sys.path.insert(0, os.path.dirname(__file__))
from coca_reference import minival_logits  # noqa: E402
import siglip_reference  # noqa: E402,F401  (registers its tiny timm SigLIP trunk)

FX = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")
TOK = os.path.join(CLIP, "hf-tokenizer")
NLLB_TOK = os.path.join(CLIP, "nllb-tokenizer")
REPO = "pyramidclip-test/tiny-hf-tokenizer"

# Prompts beyond the manifest's: case, punctuation, accents, CJK, an empty one, a long one.
EXTRA = ["A_Photo of the  CAT!!", "caf\u00e9 &amp; na\u00efve r\u00e9sum\u00e9",
         "s\u00c3\u00b3 t\u00e9 \u6771\u4eac", "", "a photo of a " + "goldfish, " * 40]

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def save_tokenizer(fast, d):
    """Saves `fast` to `d` afresh, less the machine-specific fields of its config."""
    shutil.rmtree(d, ignore_errors=True)
    fast.save_pretrained(d)
    p = os.path.join(d, "tokenizer_config.json")
    cfg = json.load(open(p))
    for k in ("is_local", "local_files_only"):
        cfg.pop(k, None)
    with open(p, "w") as f:
        json.dump(cfg, f, indent=2)


def tokenizer():
    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "data")
    names = [l.strip() for l in open(os.path.join(root, "imagenet_classnames.txt"))]
    tmpl = [l.strip() for l in open(os.path.join(root, "imagenet_templates.txt"))]
    corpus = [tmpl[i % len(tmpl)].replace("{}", c) for i, c in enumerate(names)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=512)
    save_tokenizer(fast, TOK)
    return tok.get_vocab_size()


def nllb_tokenizer():
    """NLLB's kind: SentencePiece pieces (Metaspace), the language code before the text and
    `</s>` after it, `<pad>` 1."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "data")
    names = [l.strip() for l in open(os.path.join(root, "imagenet_classnames.txt"))]
    corpus = [f"a photo of a {c}." for c in names] + ["caf\u00e9 na\u00efve \u6771\u4eac"]
    specials = ["<s>", "<pad>", "</s>", "<unk>", "eng_Latn", "fra_Latn"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=650, special_tokens=specials))
    eng = tok.token_to_id("eng_Latn")
    tok.post_processor = processors.TemplateProcessing(
        single="eng_Latn $A </s>", pair="eng_Latn $A $B </s>",
        special_tokens=[("eng_Latn", eng), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", model_max_length=1024)
    save_tokenizer(fast, NLLB_TOK)
    return tok.get_vocab_size()


# name, HF config class, model_type, pooler, projection, quick_gelu, context, extension
MODELS = [("tiny-xlmr", XLMRobertaConfig, "xlm-roberta", "mean_pooler", "mlp", False, 77,
           ".safetensors"),
          ("tiny-roberta-cls", RobertaConfig, "roberta", "cls_pooler", "linear", True, 16,
           ".pt"),
          ("tiny-nllb", M2M100Config, "m2m_100", "cls_pooler", "linear", False, 77, ".pt"),
          ("tiny-nllb-siglip", M2M100Config, "m2m_100", "cls_pooler", "linear", False, 77,
           ".safetensors")]
WIDTH, HEADS, LAYERS, MLP, POSITIONS = 128, 2, 2, 256, 80


def positions(name):
    """NLLB's own 1024 for the SigLIP one, whose table is not saved (shapes then match a
    config's), else 80."""
    return 1024 if name.endswith("siglip") else POSITIONS


def yml_entry(name, model_type, pooler, proj, quick, context, vocab):
    if name.endswith("siglip"):
        # SigLIP's image tower: the tiny trunk (32 wide, patch 16, 2 heads) as timm's B-16.
        e = yml_entry(name[:-len("-siglip")], model_type, pooler, proj, quick, context, vocab)
        e = e.replace(name[:-len("-siglip")] + ":", name + ":")
        e = e.replace("    vision_width: 64", "    vision_width: 32")
        e = e.replace("    family: hf-text", "    family: siglip")
        e = e.replace(f"positions: {POSITIONS},", f"positions: {positions(name)},")
        tok = REPO.replace("hf", "nllb")
        return e + (f"    siglip: {{timm_model: vit_base_patch16_siglip_224, vision_activation: gelu, "
                    f"tokenizer: {tok}, clean: whitespace}}\n")
    m2m = model_type == "m2m_100"
    pool = {"mean_pooler": "mean", "cls_pooler": "cls_hidden" if m2m else "cls"}[pooler]
    tok = REPO.replace("hf", "nllb") if m2m else REPO
    return "\n".join([
        f"{name}:", "    embed_dim: 32", "    image_resolution: 64", "    vision_layers: 2",
        "    vision_width: 64", "    vision_patch_size: 16", f"    context_length: {context}",
        f"    vocab_size: {vocab}", f"    transformer_width: {WIDTH}",
        f"    transformer_heads: {HEADS}", f"    transformer_layers: {LAYERS}",
        "    family: hf-text", f"    activation: {'quickgelu' if quick else 'gelu'}", "    vision_heads: 2",
        f"    hf_text: {{model: {model_type}, model_type: {model_type}, tokenizer: {tok}, "
        f"intermediate: {MLP}, positions: {POSITIONS}, type_vocab: {0 if m2m else 1}, "
        + ("scale_embedding: true, " if m2m else "")
        + f"pad_id: 1, eps: 1.0e-5, activation: {'relu' if m2m else 'gelu'}, pooler: {pool}, "
        f"proj: {proj}}}"]) + "\n"


def main():
    torch.manual_seed(20261206)
    vocab = tokenizer()
    nllb_vocab = nllb_tokenizer()
    man = json.load(open(os.path.join(FX, "manifest.json")))
    images, prompts = man["images"], man["prompts"] + EXTRA
    cfg_dir = tempfile.mkdtemp()
    out, yml = {}, []
    for name, hf_cls, model_type, pooler, proj, quick, context, ext in MODELS:
        m2m = model_type == "m2m_100"
        v = nllb_vocab if m2m else vocab
        tok_dir = NLLB_TOK if m2m else TOK
        yml.append(yml_entry(name, model_type, pooler, proj, quick, context, v))
        hf_dir = os.path.join(cfg_dir, name + "-hf")
        if m2m:
            hf_cls(vocab_size=v, d_model=WIDTH, encoder_layers=LAYERS,
                   encoder_attention_heads=HEADS, encoder_ffn_dim=MLP, decoder_layers=1,
                   decoder_attention_heads=HEADS, decoder_ffn_dim=MLP,
                   max_position_embeddings=positions(name), scale_embedding=True, pad_token_id=1,
                   bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                   activation_function="relu").save_pretrained(hf_dir)
        else:
            hf_cls(vocab_size=v, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                   num_attention_heads=HEADS, intermediate_size=MLP,
                   max_position_embeddings=POSITIONS, type_vocab_size=1, pad_token_id=1,
                   bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5).save_pretrained(hf_dir)
        vision = {"image_size": 64, "layers": 2, "width": 64, "head_width": 32,
                  "patch_size": 16}
        extra = {}
        if name.endswith("siglip"):
            vision = {"image_size": 64, "timm_model_name": "pyramidclip_siglip_b",
                      "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"}
            extra = {"custom_text": True, "init_logit_bias": -10}
        cfg = {"embed_dim": 32, "quick_gelu": quick, **extra,
               "vision_cfg": vision,
               "text_cfg": {"hf_model_name": hf_dir, "hf_tokenizer_name": tok_dir,
                            "hf_model_pretrained": False, "hf_pooler_type": pooler,
                            "hf_proj_type": proj, "context_length": context}}
        with open(os.path.join(cfg_dir, name + ".json"), "w") as f:
            json.dump(cfg, f)
        open_clip.add_model_config(cfg_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained_hf=False)
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k not in ("logit_scale", "logit_bias"):
                    p.copy_((p + 0.05 * torch.randn_like(p)).half().float())
        sd = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
        if m2m and ext == ".pt":
            # Older transformers saved the position table (a parameter then); in f32.
            sd["text.transformer.embed_positions.weights"] = \
                model.text.transformer.embed_positions.weights.clone()
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
        print(name, sorted(k for k in sd if k.startswith("text.") and ".layer.1." not in k))
    with open(os.path.join(CLIP, "tiny-hf.yml"), "w") as f:
        f.write("# scripts/dev/hf_text_reference.py: open_clip models with tiny HuggingFace "
                "(RoBERTa / XLM-RoBERTa) text towers\n" + "\n".join(yml))
    import transformers
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(CLIP, "hf-text.safetensors"),
              metadata={"prompts": json.dumps(prompts), "open_clip": open_clip.__version__,
                        "torch": torch.__version__, "transformers": transformers.__version__})


if __name__ == "__main__":
    main()
