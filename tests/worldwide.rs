//! MetaCLIP 2's "worldwide" models (scripts/dev/worldwide_reference.py): CLIP's towers fed by a
//! HuggingFace tokenizer, the causal text tower pooled at the tokenizer's end-of-sequence id
//! (`pool_type: eos`) rather than at the largest id. `tiny-worldwide` (eos 2, a byte-level BPE
//! standing in for XLM-V's, GELU) and `tiny-worldwide-mt5` (eos 1, a T5-style SentencePiece
//! standing in for mT5's, `canonicalize`, QuickGELU), loaded through open_clip JSON configs.
//! Both engines, against open_clip's `HFTokenizer` rows, `encode_image` / `encode_text` and its
//! zero-shot top-1.

use crate::clip::{
    bf16_features_stay_close, clip_dir, embed_on_both_engines, features_match, load_fails_naming,
    minival_result, reference_with_prompts, s, tag_args, token_rows, zero_shot_matches,
};
use crate::util::*;
use candle_core::Tensor;
use std::collections::HashMap;

/// The fixture models and their files' extensions.
const MODELS: [(&str, &str); 2] = [
    ("tiny-worldwide", "safetensors"),
    ("tiny-worldwide-mt5", "pt"),
];

fn worldwide_reference() -> (HashMap<String, Tensor>, Vec<String>, Vec<String>) {
    reference_with_prompts("worldwide.safetensors")
}

/// The fixture tokenizer standing in for model `name`'s, and its cleaning.
fn tokenizer(name: &str) -> (String, &'static str) {
    if name.ends_with("mt5") {
        (s(&clip_dir().join("siglip-tokenizer")), "canonicalize")
    } else {
        (s(&clip_dir().join("hf-tokenizer")), "whitespace")
    }
}

/// The model arguments for fixture `name` (its file `ext`): its open_clip config and the
/// fixture tokenizer, named or found by shapes.
fn args(name: &str, ext: &str, named: bool) -> Vec<String> {
    let mut a = vec![
        "--checkpoint".to_string(),
        s(&clip_dir().join(format!("{name}.{ext}"))),
        "--model-config".into(),
        s(&clip_dir().join(format!("{name}.json"))),
        "--tokenizer".into(),
        tokenizer(name).0,
    ];
    if named {
        a.extend(["--visual-model".into(), name.to_string()]);
    }
    a
}

/// Image and text features within open_clip's, both engines, by name and by shapes (the
/// pooling, not in the weights, from the matching config).
#[test]
fn worldwide_features_match_open_clip() {
    let (want, images, prompts) = worldwide_reference();
    let io = (&images[..], &prompts[..]);
    features_match(&want, io, &MODELS, args, |_, log| {
        assert!(log.contains("family clip"), "{log}");
    });
}

/// The token rows are open_clip's `HFTokenizer`'s, and the end-of-sequence id is not where
/// the largest id is for every prompt: pooling at the largest id would differ.
#[test]
fn worldwide_tokens_are_open_clips() {
    let (want, _, prompts) = worldwide_reference();
    for (name, ctx, eos) in [("tiny-worldwide", 32, 2), ("tiny-worldwide-mt5", 16, 1)] {
        let (tok, clean) = tokenizer(name);
        let ours = token_rows(&["--tokenizer", &tok, "--clean", clean], ctx, &prompts);
        let key = name.replace('-', "_");
        let theirs = want[&format!("{key}.tokens")].to_vec2::<i64>().unwrap();
        assert_eq!(ours, theirs, "{key} context {ctx}");
        let differs = theirs.iter().any(|r| {
            let largest = r.iter().enumerate().max_by_key(|&(i, t)| (t, -(i as i64)));
            largest.map(|(i, _)| i) != r.iter().position(|&t| t == eos)
        });
        assert!(differs, "{key}");
    }
}

#[test]
fn worldwide_bf16_features_stay_close() {
    let (want, images, prompts) = worldwide_reference();
    bf16_features_stay_close(&want, (&images, &prompts), &MODELS, |name, ext| {
        args(name, ext, true)
    });
}

#[test]
fn worldwide_zero_shot_predicts_as_open_clip() {
    let (want, _, _) = worldwide_reference();
    zero_shot_matches(&want, &MODELS, |name, ext| args(name, ext, true));
    let r = minival_result(&args("tiny-worldwide-mt5", "pt", false));
    assert_eq!(r["family"], "clip");
    assert_eq!(r["activation"], "quickgelu");
}

/// `--visual-model ViT-H-14-worldwide-quickgelu --checkpoint metaclip2_worldwide` (the tag
/// trained with QuickGELU) reads the weights from the tag's hub repo (timm's) and the
/// tokenizer from the config's `facebook/xlm-v-base` repo in the hub cache, as open_clip
/// downloads them; without the tokenizer the load fails with exit 4, naming the repo and
/// --tokenizer.
#[test]
fn worldwide_tags_load_weights_and_tokenizer_from_the_hub_cache() {
    let (want, images, prompts) = worldwide_reference();
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let weights = hub_snapshot(&hub, "timm/vit_huge_patch14_clip_224.metaclip2_worldwide");
    std::fs::copy(
        clip_dir().join("tiny-worldwide-mt5.pt"),
        weights.join("open_clip_pytorch_model.bin"),
    )
    .unwrap();
    let tok = hub_snapshot(&hub, "facebook/xlm-v-base");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(clip_dir().join("siglip-tokenizer").join(f), tok.join(f)).unwrap();
    }
    // The tiny QuickGELU model stands for the named one (its config under that name, GELU as
    // open_clip's ViT-H-14-worldwide.json, its tokenizer XLM-V's repo).
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(clip_dir().join("tiny-worldwide-mt5.json")).unwrap(),
    )
    .unwrap();
    cfg.as_object_mut().unwrap().remove("quick_gelu");
    cfg["text_cfg"]["hf_tokenizer_name"] = "facebook/xlm-v-base".into();
    let config = dir.path().join("ViT-H-14-worldwide.json");
    std::fs::write(&config, cfg.to_string()).unwrap();
    let model = tag_args(
        "ViT-H-14-worldwide-quickgelu",
        "metaclip2_worldwide",
        &config,
        &hub,
    );
    for (engine, log, ours) in embed_on_both_engines(&model, (&images, &prompts)) {
        assert!(log.contains(&s(&tok.join("tokenizer.json"))), "{log}");
        assert!(log.contains("activation quickgelu"), "{log}");
        for what in ["image", "text"] {
            let theirs = &want[&format!("tiny_worldwide_mt5.{what}_features_raw")];
            assert_rows_close(&ours[&format!("{what}_features")], theirs, engine);
        }
    }
    std::fs::remove_dir_all(&tok).unwrap();
    let needles = ["`facebook/xlm-v-base`", "--tokenizer", "MetaCLIP 2"];
    load_fails_naming(&model, &needles);
}

/// `inspect` names the text tower's pooling at the end-of-sequence id.
#[test]
fn inspect_describes_the_worldwide_text_tower() {
    let o = bin()
        .arg("inspect")
        .arg(clip_dir().join("tiny-worldwide.safetensors"))
        .args([
            "--model-config",
            &s(&clip_dir().join("tiny-worldwide.json")),
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = "text tower:   CLIP's (2 layers, width 16, 2 heads), pooled at the first end-of-sequence id 2 (`facebook/xlm-v-base`'s)";
    assert!(out.contains(want), "{out}");
}
