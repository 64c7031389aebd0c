//! open_clip's CLIPA models (scripts/dev/clipa_reference.py): CLIP's key layout, the ViT
//! without `ln_pre` pooled by the mean of its patch tokens then `ln_post`, the text tower
//! without causal mask pooled at the last position, a BERT WordPiece tokenizer whose `[SEP]`
//! id is written as 0 (`strip_sep_token`). `tiny-clipa` (context 16) and `tiny-clipa-r`
//! (ViT-bigG-CLIPA's MLP ratio, context 32), loaded through open_clip JSON configs. Both
//! engines, against open_clip's `HFTokenizer` rows, `encode_image` / `encode_text` and its
//! zero-shot top-1.

use crate::clip::{
    bf16_features_stay_close, clip_dir, embed_on_both_engines, features_match, load_fails_naming,
    minival_result, reference_with_prompts, s, tag_args, token_rows, zero_shot_matches,
};
use crate::util::*;
use candle_core::Tensor;
use std::collections::HashMap;

/// The fixture models and their files' extensions.
const MODELS: [(&str, &str); 2] = [("tiny-clipa", "safetensors"), ("tiny-clipa-r", "pt")];

fn clipa_reference() -> (HashMap<String, Tensor>, Vec<String>, Vec<String>) {
    reference_with_prompts("clipa.safetensors")
}

fn tokenizer() -> String {
    s(&clip_dir().join("bert-tokenizer"))
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
        tokenizer(),
    ];
    if named {
        a.extend(["--visual-model".into(), name.to_string()]);
    }
    a
}

/// Image and text features (case, punctuation, accents, CJK, an empty prompt, prompts past
/// the context) within open_clip's, both engines, by name and by shapes.
#[test]
fn clipa_features_match_open_clip() {
    let (want, images, prompts) = clipa_reference();
    let io = (&images[..], &prompts[..]);
    features_match(&want, io, &MODELS, args, |_, log| {
        assert!(log.contains("family clipa"), "{log}");
        assert!(log.contains("bert-tokenizer"), "{log}");
    });
}

/// `tokenize --tokenizer --strip-sep-token` gives open_clip's `HFTokenizer` rows (`[CLS]` ...,
/// the `[SEP]` id written as 0, padded with `[PAD]` 0) at both contexts; without the flag the
/// separator's id stays.
#[test]
fn clipa_tokens_are_open_clips() {
    let (want, _, prompts) = clipa_reference();
    let tok = tokenizer();
    let tokenize = |ctx: usize, strip: bool| {
        let flags = [
            "--tokenizer",
            &tok,
            "--clean",
            "whitespace",
            "--strip-sep-token",
        ];
        token_rows(&flags[..4 + usize::from(strip)], ctx, &prompts)
    };
    for (name, ctx) in [("tiny-clipa", 16), ("tiny-clipa-r", 32)] {
        let key = name.replace('-', "_");
        let theirs = want[&format!("{key}.tokens")].to_vec2::<i64>().unwrap();
        assert_eq!(tokenize(ctx, true), theirs, "{key} context {ctx}");
        // `[SEP]` is id 3 in the fixture vocabulary: every row has one without the flag.
        let kept = tokenize(ctx, false);
        assert!(kept.iter().all(|r| r.contains(&3)), "{kept:?}");
        assert!(theirs.iter().all(|r| !r.contains(&3)), "{theirs:?}");
    }
}

#[test]
fn clipa_bf16_features_stay_close() {
    let (want, images, prompts) = clipa_reference();
    bf16_features_stay_close(&want, (&images, &prompts), &MODELS, |name, ext| {
        args(name, ext, true)
    });
}

#[test]
fn clipa_zero_shot_predicts_as_open_clip() {
    let (want, _, _) = clipa_reference();
    zero_shot_matches(&want, &MODELS, |name, ext| args(name, ext, true));
    // The result names the family and the tokenizer that computed it.
    let r = minival_result(&args("tiny-clipa", "safetensors", false));
    assert_eq!(r["family"], "clipa");
    assert!(r["tokenizer"].as_str().unwrap().ends_with("tokenizer.json"));
}

/// `inspect` names the CLIPA towers' pooling.
#[test]
fn inspect_describes_the_clipa_tower() {
    let o = bin()
        .arg("inspect")
        .arg(clip_dir().join("tiny-clipa-r.pt"))
        .args(["--model-config", &s(&clip_dir().join("tiny-clipa-r.json"))])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = "a ViT (patch 16, width 32, 3 layers, resolution 64, MLP width 157, no ln_pre, mean of the patch tokens)";
    assert!(out.contains(want), "{out}");
    let text = "text tower:   CLIP's (2 layers, width 24, 3 heads), without causal mask, pooled at the last position (`bert-base-uncased`'s ids, [SEP] as 0)";
    assert!(out.contains(text), "{out}");
}

/// `--visual-model ViT-L-14-CLIPA --checkpoint datacomp1b` reads the weights from the tag's hub
/// repo (`UCSC-VLAA/ViT-L-14-CLIPA-datacomp1B`) and the tokenizer from the config's
/// `bert-base-uncased` repo in the hub cache (its config naming no special tokens, as the
/// hub's), as open_clip downloads them, and preprocesses as
/// the tag says (squashed, bilinear, ImageNet's mean and std); without the tokenizer the load
/// fails with exit 4, naming the repo and --tokenizer.
#[test]
fn clipa_tags_load_weights_and_tokenizer_from_the_hub_cache() {
    let (want, images, prompts) = clipa_reference();
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let weights = hub_snapshot(&hub, "UCSC-VLAA/ViT-L-14-CLIPA-datacomp1B");
    std::fs::copy(
        clip_dir().join("tiny-clipa.safetensors"),
        weights.join("open_clip_model.safetensors"),
    )
    .unwrap();
    // As the hub's `bert-base-uncased` repo holds it: a config naming no special tokens
    // (transformers' BertTokenizer defaults: `[PAD]`, `[SEP]`).
    let tok = hub_snapshot(&hub, "bert-base-uncased");
    let json = clip_dir().join("bert-tokenizer/tokenizer.json");
    std::fs::copy(json, tok.join("tokenizer.json")).unwrap();
    let config = r#"{"do_lower_case": true, "model_max_length": 512}"#;
    std::fs::write(tok.join("tokenizer_config.json"), config).unwrap();
    // The tiny model stands for the named one (its config under that name).
    let config = dir.path().join("ViT-L-14-CLIPA.json");
    std::fs::copy(clip_dir().join("tiny-clipa.json"), &config).unwrap();
    let model = tag_args("ViT-L-14-CLIPA", "datacomp1b", &config, &hub);
    for (engine, log, ours) in embed_on_both_engines(&model, (&images, &prompts)) {
        assert!(log.contains(&s(&tok.join("tokenizer.json"))), "{log}");
        assert!(log.contains("`squash` with bilinear"), "{log}");
        let img = &want["tiny_clipa.image_features_tag"];
        assert_rows_close(&ours["image_features"], img, engine);
        let txt = &want["tiny_clipa.text_features_raw"];
        assert_rows_close(&ours["text_features"], txt, engine);
    }
    let r = minival_result(&model);
    assert_eq!(r["resize_mode"], "squash");
    assert_eq!(r["interpolation"], "bilinear");
    std::fs::remove_dir_all(&tok).unwrap();
    load_fails_naming(&model, &["`bert-base-uncased`", "--tokenizer", "CLIPA"]);
}
