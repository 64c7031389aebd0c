"""Dev-time: writes configs/open_clip_pretrained.tsv, open_clip's table of pretrained tags
(open_clip/pretrained.py, MIT licence) for the architectures pyramidclip builds: per (model
name, tag), where open_clip downloads the weights (its Hugging Face repo and file, its URL) and
what the tag was trained with (QuickGELU; its preprocessing: mean, std, interpolation, resize). pyramidclip
reads the weights from those caches; nothing is downloaded.

    /tmp/venv/bin/python scripts/dev/gen_open_clip_pretrained.py   (open_clip_torch)
"""
import os

import open_clip
from open_clip import pretrained

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONVNEXTS = {"convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
             "convnext_xlarge", "convnext_xxlarge"}
# timm's SigLIP ViTs with the attention-pool head (`src/models/config.rs` SIGLIP_VITS).
SIGLIP_VITS = {f"vit_{n}_siglip_{r}" for n, rs in [
    ("base_patch32", [256]), ("base_patch16", [224, 256, 384, 512]),
    ("large_patch16", [256, 384, 512]), ("so400m_patch14", [224, 378, 384]),
    ("so400m_patch16", [256, 384, 512]), ("giantopt_patch16", [256, 384])] for r in rs}
# transformers models with their hub configs in src/models/config.rs (HF_TEXT_MODELS).
HF_TEXT = {"roberta-base", "xlm-roberta-base", "xlm-roberta-large",
           "facebook/nllb-200-distilled-600M", "facebook/nllb-200-distilled-1.3B"}
# timm's EVA trunks (`src/models/config.rs` EVA_VITS).
EVA_VITS = {"eva_giant_patch14_224", "eva_giant_patch14_clip_224", "eva02_base_patch16_clip_224",
            "eva02_large_patch14_clip_224", "eva02_large_patch14_clip_336",
            "eva02_enormous_patch14_clip_224", "vit_pe_core_tiny_patch16_384",
            "vit_pe_core_small_patch16_384", "vit_pe_core_base_patch16_224",
            "vit_pe_core_large_patch14_336", "vit_pe_core_gigantic_patch14_448",
            # Plain timm ViTs with the same keys (MobileCLIP-B's hybrid stem, MobileCLIP2-L-14's).
            "vit_large_patch14_clip_224", "vit_base_mci_224"}
# timm's ViTamin trunks (the same keys after their convolutional stages; `EVA_VITS` there).
VITAMINS = {f"vitamin_{n}_{r}" for n, rs in [
    ("small", [224]), ("base", [224]), ("large", [224, 256, 336, 384]),
    ("large2", [224, 256, 336, 384]), ("xlarge", [256, 336, 384])] for r in rs}
# timm's ViT without class token, pooled by the mean of its normed tokens (`EvaKind::Gap`),
# and its relative-position ViT with a class token (`EvaKind::RelPos`).
GAP_VIT = "vit_medium_patch16_gap_256"
RELPOS_VIT = "vit_relpos_medium_patch16_cls_224"
# timm's FastViT MCi trunks (`src/models/config.rs` FASTVITS).
FASTVITS = {f"fastvit_mci{i}" for i in range(5)}
HF_POOLERS = {"mean_pooler", "cls_pooler", "cls_last_hidden_state_pooler"}
OPENAI = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def is_clipa(cfg):
    """open_clip's CLIPA: CLIP's towers without `ln_pre`, the patch tokens' mean then `ln_post`,
    a bidirectional text tower pooled at the last position, a HuggingFace tokenizer."""
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    return (not cfg.get("custom_text") and not v.get("timm_model_name")
            and not t.get("hf_model_name") and bool(t.get("hf_tokenizer_name"))
            and v.get("no_ln_pre") is True and v.get("pool_type") == "avg"
            and v.get("final_ln_after_pool") is True and t.get("no_causal_mask") is True
            and t.get("pool_type") == "last" and not t.get("proj_bias")
            and not t.get("embed_cls") and not v.get("attentional_pool")
            and set(t.get("tokenizer_kwargs", {})) <= {"clean", "strip_sep_token"})


def is_worldwide(cfg):
    """MetaCLIP 2 worldwide: CLIP's towers with a HuggingFace tokenizer, the text pooled at its
    `eos_id`."""
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    return (not cfg.get("custom_text") and not v.get("timm_model_name")
            and not t.get("hf_model_name") and bool(t.get("hf_tokenizer_name"))
            and t.get("pool_type") == "eos" and "multimodal_cfg" not in cfg
            and not any(v.get(k) for k in ("no_ln_pre", "final_ln_after_pool",
                                           "attentional_pool"))
            and v.get("pool_type", "tok") == "tok"
            and not any(t.get(k) for k in ("no_causal_mask", "proj_bias", "embed_cls"))
            and set(t.get("tokenizer_kwargs", {})) <= {"clean"})


def supported():
    """The model names whose configs pyramidclip accepts (OpenAI-style CLIP towers, CoCa's with
    open_clip's own towers, timm ConvNeXt and EVA image towers, SigLIP's, CLIPA's, RoBERTa /
    XLM-RoBERTa / NLLB text towers)."""
    out = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name)
        v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if is_clipa(cfg) or is_worldwide(cfg):
            out.append(name)
            continue
        if t.get("hf_model_name"):
            # HF text towers: RoBERTa / XLM-RoBERTa / NLLB with CLIP's image tower or SigLIP's
            # (NLLB-SigLIP), not CoCa's.
            siglip_image = (v.get("timm_model_name") in SIGLIP_VITS
                            and v.get("timm_pool") == "map" and v.get("timm_proj") == "none")
            if (t["hf_model_name"] in HF_TEXT and "multimodal_cfg" not in cfg
                    and (not v.get("timm_model_name") or siglip_image)
                    and t.get("hf_pooler_type", "mean_pooler") in HF_POOLERS):
                out.append(name)
            continue
        if v.get("timm_model_name") in SIGLIP_VITS:
            # SigLIP: the trunk's attention-pool head, the text tower as open_clip's SigLIP
            # configs set it, a SentencePiece tokenizer from the hub (not the multilingual
            # ones' configs with other options).
            if (cfg.get("custom_text") and v.get("timm_pool") == "map"
                    and v.get("timm_proj") == "none" and t.get("no_causal_mask")
                    and (t.get("proj_bias") or t.get("proj_type") == "none")
                    and t.get("pool_type") == "last"
                    and t.get("hf_tokenizer_name")
                    and not t.get("hf_model_name")):
                out.append(name)
            continue
        if v.get("timm_model_name") in FASTVITS:
            # MobileCLIP-S*: the trunk's average pool and own head, CLIP's text tower.
            if (cfg.get("custom_text") and v.get("timm_pool") == "avg"
                    and v.get("timm_proj") is None and "multimodal_cfg" not in cfg
                    and not any(t.get(k) for k in ("proj_bias", "embed_cls",
                                                    "hf_tokenizer_name", "act_kwargs"))
                    and t.get("pool_type", "argmax") == "argmax"):
                out.append(name)
            continue
        if v.get("timm_model_name") in (GAP_VIT, RELPOS_VIT):
            # timm's average-pooled ViT (the mean of the normed tokens) and relative-position
            # ViT (its class token): open_clip's linear projection without bias, CLIP's causal
            # text tower (at the top level or under `text.`).
            own = "avg" if v["timm_model_name"] == GAP_VIT else "token"
            if (v.get("timm_pool") in ("", own) and v.get("timm_proj") == "linear"
                    and not v.get("timm_proj_bias") and "multimodal_cfg" not in cfg
                    and not any(t.get(k) for k in ("proj_bias", "embed_cls", "no_causal_mask",
                                                    "hf_tokenizer_name", "act_kwargs"))
                    and t.get("pool_type", "argmax") == "argmax"):
                out.append(name)
            continue
        if v.get("timm_model_name") in VITAMINS:
            # ViTamin: the trunk's mean of the tokens, open_clip's linear projection without
            # bias, CLIP's causal text tower under `text.`.
            if (cfg.get("custom_text") and v.get("timm_pool") == ""
                    and v.get("timm_proj") == "linear" and not v.get("timm_proj_bias")
                    and "multimodal_cfg" not in cfg
                    and not any(t.get(k) for k in ("proj_bias", "embed_cls", "no_causal_mask",
                                                    "hf_tokenizer_name", "act_kwargs"))
                    and t.get("pool_type", "argmax") == "argmax"):
                out.append(name)
            continue
        if v.get("timm_model_name") in EVA_VITS:
            # EVA / PE / MobileCLIP's ViTs: the trunk's class token (PE: its attention-pool
            # head) and own head, CLIP's text tower under `text.` (causal or not).
            pool = "map" if v["timm_model_name"].startswith("vit_pe_core") else "token"
            if (cfg.get("custom_text") and v.get("timm_pool") == pool
                    and v.get("timm_proj") is None and "multimodal_cfg" not in cfg
                    and not any(t.get(k) for k in ("proj_bias", "embed_cls",
                                                    "hf_tokenizer_name", "act_kwargs"))
                    and t.get("pool_type", "argmax") == "argmax"):
                out.append(name)
            continue
        if v.get("timm_model_name"):
            # timm's ConvNeXt trunks with open_clip's linear or MLP projection.
            if (v["timm_model_name"] in CONVNEXTS and v.get("timm_pool", "avg") in ("", "avg")
                    and v.get("timm_proj", "linear") in ("linear", "mlp")
                    and not v.get("timm_proj_bias") and not cfg.get("custom_text")):
                out.append(name)
            continue
        if "multimodal_cfg" in cfg:
            if (cfg.get("custom_text") and v.get("attentional_pool") is True
                    and t.get("embed_cls") and not t.get("correct_cls_mask")):
                out.append(name)
            continue
        if cfg.get("custom_text"):
            continue
        if any(v.get(k) for k in ("attentional_pool", "no_ln_pre", "final_ln_after_pool",
                                   "global_average_pool")):
            continue
        if v.get("pool_type", "tok") != "tok" or t.get("pool_type", "argmax") != "argmax":
            continue
        if t.get("no_causal_mask") or t.get("proj_bias") or t.get("embed_cls"):
            continue
        out.append(name)
    return out


def main():
    rows = ["# model\ttag\thf_hub\turl\tquick_gelu\tmean\tstd\tinterpolation\tresize_mode"]
    for name in supported():
        for tag in pretrained.list_pretrained_tags_by_model(name):
            c = pretrained.get_pretrained_cfg(name, tag)
            nums = lambda v: ",".join(repr(float(x)) for x in v)  # noqa: E731
            rows.append("\t".join([name, tag, c.get("hf_hub", ""), c.get("url", ""),
                                   str(bool(c.get("quick_gelu", False))).lower(),
                                   nums(c.get("mean", OPENAI[0])), nums(c.get("std", OPENAI[1])),
                                   c.get("interpolation", "bicubic"),
                                   c.get("resize_mode", "shortest")]))
    with open(os.path.join(ROOT, "configs", "open_clip_pretrained.tsv"), "w") as f:
        f.write(f"# open_clip {open_clip.__version__} pretrained tags (MIT licence); "
                "scripts/dev/gen_open_clip_pretrained.py\n")
        f.write("\n".join(rows) + "\n")
    print(len(rows) - 1, "tags")


if __name__ == "__main__":
    main()
