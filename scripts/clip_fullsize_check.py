#!/usr/bin/env python3
"""Dev-time check of CLIP-family loading on full-size random checkpoints written by open_clip
(what the held-back checks use): for each model, a state dict and a TorchScript archive go
through `pyramidclip embed` (state dict with --visual-model NAME and without, archive without where the model scripts), and the
features are compared per row with open_clip's encode_image / encode_text (fp32).

    python3 scripts/clip_fullsize_check.py target/release/pyramidclip [OUT_DIR] [MODELS...]

For the largest models (ViT-bigG-14 and up, 10 GB in fp32) `FULLSIZE_IMAGES=N` takes the first N
fixture images and `FULLSIZE_NO_TORCHSCRIPT=1` skips the archive; open_clip's model is freed
before our binary runs, so the two never hold the weights at once.

SigLIP models tokenize with the fixture's SentencePiece tokenizer (tests/fixtures/clip/
siglip-tokenizer, 600 pieces, inside every SigLIP vocabulary) on both sides: the hub's are not
downloaded here. Models with an HF text tower (xlm-roberta-base-ViT-B-32, ...) take the
fixture's byte-level BPE (tests/fixtures/clip/hf-tokenizer, 700 ids), and their encoder is
built from transformers' config class with the hub config's sizes (HF_CONFIGS). CLIPA models
take the fixture's WordPiece vocabulary (tests/fixtures/clip/bert-tokenizer, 500 ids) with
`strip_sep_token`. MetaCLIP 2's worldwide models take the byte-level BPE for XLM-V's (eos 2)
and the SentencePiece for mT5's (eos 1).
"""
import gc
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import open_clip
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from retrieval_reference import load_safetensors  # noqa: E402

FX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
SIGLIP_TOKENIZER = os.path.join(FX, "clip", "siglip-tokenizer")
HF_TOKENIZER = os.path.join(FX, "clip", "hf-tokenizer")
NLLB_TOKENIZER = os.path.join(FX, "clip", "nllb-tokenizer")
BERT_TOKENIZER = os.path.join(FX, "clip", "bert-tokenizer")
NLLB = dict(scale_embedding=True, activation_function="relu", max_position_embeddings=1024,
            decoder_layers=1, decoder_ffn_dim=64, decoder_start_token_id=2)
# The hub config.json fields of open_clip's HF text models (not downloaded here).
HF_CONFIGS = {
    "roberta-base": ("RobertaConfig", dict(vocab_size=50265, hidden_size=768,
                                           num_hidden_layers=12, num_attention_heads=12,
                                           intermediate_size=3072)),
    "xlm-roberta-base": ("XLMRobertaConfig", dict(vocab_size=250002, hidden_size=768,
                                                  num_hidden_layers=12, num_attention_heads=12,
                                                  intermediate_size=3072)),
    "xlm-roberta-large": ("XLMRobertaConfig", dict(vocab_size=250002, hidden_size=1024,
                                                   num_hidden_layers=24,
                                                   num_attention_heads=16,
                                                   intermediate_size=4096)),
    "facebook/nllb-200-distilled-600M": ("M2M100Config", dict(
        vocab_size=256206, d_model=1024, encoder_layers=12, encoder_attention_heads=16,
        encoder_ffn_dim=4096, **NLLB)),
    "facebook/nllb-200-distilled-1.3B": ("M2M100Config", dict(
        vocab_size=256206, d_model=1024, encoder_layers=24, encoder_attention_heads=16,
        encoder_ffn_dim=8192, **NLLB)),
}


def hf_tokenizer_dir(name):
    """The fixture tokenizer standing in for model `name`'s: NLLB's kind or RoBERTa's."""
    hf = open_clip.get_model_config(name)["text_cfg"]["hf_model_name"]
    return NLLB_TOKENIZER if "nllb" in hf else HF_TOKENIZER


def local_hf_config(name, out):
    """Registers open_clip config `name` again with its HF text model's config written under
    `out` (transformers builds the encoder from it, randomly initialised)."""
    import transformers
    cfg = open_clip.get_model_config(name)
    hf = cfg["text_cfg"]["hf_model_name"]
    cls, kw = HF_CONFIGS[hf]
    d = os.path.join(out, "hf-" + hf.replace("/", "--"))
    common = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2)
    if cls != "M2M100Config":
        common.update(max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
    getattr(transformers, cls)(**common, **kw).save_pretrained(d)
    tok = hf_tokenizer_dir(name)
    cfg["text_cfg"]["hf_model_name"] = d
    cfg["text_cfg"]["hf_tokenizer_name"] = tok
    cdir = os.path.join(out, "configs-" + name)
    os.makedirs(cdir, exist_ok=True)
    with open(os.path.join(cdir, name + ".json"), "w") as f:
        json.dump(cfg, f)
    open_clip.add_model_config(cdir)


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main():
    binary = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
    os.makedirs(out, exist_ok=True)
    names = sys.argv[3:] or ["RN50", "ViT-B-32-quickgelu", "ViT-B-16"]
    manifest = json.load(open(os.path.join(FX, "manifest.json")))
    images = [os.path.join(FX, p) for p in manifest["images"]]
    if os.environ.get("FULLSIZE_IMAGES"):
        images = images[:int(os.environ["FULLSIZE_IMAGES"])]
    prompts = [p for p in manifest["prompts"] if p]
    prompt_file = os.path.join(out, "prompts.txt")
    open(prompt_file, "w").write("\n".join(prompts) + "\n")
    report = {}
    for name in names:
        cfg = open_clip.get_model_config(name)
        tok_args = []
        hf_text = bool(cfg["text_cfg"].get("hf_model_name"))
        if hf_text:
            local_hf_config(name, out)
            tok = open_clip.tokenizer.HFTokenizer(hf_tokenizer_dir(name), context_length=77)
            tok_args = ["--tokenizer", hf_tokenizer_dir(name)]
        elif cfg["vision_cfg"].get("no_ln_pre"):
            # CLIPA: the fixture's WordPiece vocabulary stands in for bert-base-uncased's.
            tok = open_clip.tokenizer.HFTokenizer(
                BERT_TOKENIZER, context_length=cfg["text_cfg"]["context_length"],
                **cfg["text_cfg"].get("tokenizer_kwargs", {}))
            tok_args = ["--tokenizer", BERT_TOKENIZER]
        elif cfg["text_cfg"].get("hf_tokenizer_name") == "facebook/xlm-v-base":
            # MetaCLIP 2 worldwide (eos 2): the fixture's byte-level BPE stands in for XLM-V's.
            tok = open_clip.tokenizer.HFTokenizer(
                HF_TOKENIZER, context_length=cfg["text_cfg"]["context_length"],
                **cfg["text_cfg"].get("tokenizer_kwargs", {}))
            tok_args = ["--tokenizer", HF_TOKENIZER]
        elif cfg["text_cfg"].get("hf_tokenizer_name"):
            tok = open_clip.tokenizer.HFTokenizer(
                SIGLIP_TOKENIZER, context_length=cfg["text_cfg"]["context_length"],
                **cfg["text_cfg"].get("tokenizer_kwargs", {}))
            tok_args = ["--tokenizer", SIGLIP_TOKENIZER]
        else:
            tok = open_clip.get_tokenizer(name)  # CoCa's takes 76 ids
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None, **({"pretrained_hf": False} if hf_text else {}))
        model.eval()
        with torch.no_grad():
            img = model.encode_image(torch.stack([preprocess(Image.open(p)) for p in images]))
            txt = model.encode_text(tok(prompts))
        sd_path = os.path.join(out, f"{name}.bin")
        torch.save(model.state_dict(), sd_path)
        runs = [("state_dict", sd_path, ["--visual-model", name]), ("detected", sd_path, [])]
        try:  # CoCa and FastViT (MobileCLIP-S*) do not script
            if os.environ.get("FULLSIZE_NO_TORCHSCRIPT"):
                raise RuntimeError("FULLSIZE_NO_TORCHSCRIPT")
            ts_path = os.path.join(out, f"{name}.ts.pt")
            torch.jit.save(torch.jit.script(model), ts_path)
            runs.append(("torchscript", ts_path, []))
        except Exception as e:  # noqa: BLE001
            print(name, "not scripted:", type(e).__name__, flush=True)
        del model
        gc.collect()
        for label, path, extra in runs:
            for engine in ["native", "candle"]:
                feats = os.path.join(out, f"{name}.{label}.{engine}.safetensors")
                cmd = [binary, "embed", "--checkpoint", path, "--images", *images,
                       "--texts-file", prompt_file, "--raw", "--out", feats, "--engine", engine,
                       *tok_args, *extra]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    report[f"{name} {label} {engine}"] = "FAILED: " + r.stderr.strip()
                    print(name, label, engine, "FAILED:", r.stderr.strip(), flush=True)
                    continue
                ours = load_safetensors(feats)
                ci = cosines(ours["image_features"], img.numpy())
                ct = cosines(ours["text_features"], txt.numpy())
                loaded = [l for l in r.stderr.splitlines() if l.startswith(("loaded", "family"))]
                report[f"{name} {label} {engine}"] = {
                    "image_min_cos": float(ci.min()), "text_min_cos": float(ct.min()),
                    "log": loaded}
                print(name, label, engine, f"{ci.min():.7f} {ct.min():.7f}", loaded, flush=True)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
