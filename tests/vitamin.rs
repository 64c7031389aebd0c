//! open_clip's ViTamin models (scripts/dev/vitamin_reference.py): timm ViTamin trunks at toy
//! size (convolutional stages in place of the patch conv, no class token, GeGLU MLPs with their
//! own LayerNorm, the mean of the tokens through `fc_norm`, open_clip's `head.proj` without
//! bias) with CLIP's causal text tower: `tiny-vitamin` with learned positions, `tiny-vitamin-xl`
//! without (as ViTamin-XL), its stem narrower than its first stage. Both engines, against
//! open_clip's `encode_image` / `encode_text` and its zero-shot top-1.

use crate::clip::{
    bf16_features_stay_close, clip_dir, embed_on_both_engines, features_match, fixture_args,
    minival_result, reference_with_prompts, s, tag_args, zero_shot_matches,
};
use crate::util::*;
use candle_core::Tensor;
use std::collections::HashMap;

const MODELS: [(&str, &str); 2] = [("tiny-vitamin", "safetensors"), ("tiny-vitamin-xl", "pt")];

fn reference() -> (HashMap<String, Tensor>, Vec<String>, Vec<String>) {
    reference_with_prompts("vitamin.safetensors")
}

fn yml() -> std::path::PathBuf {
    clip_dir().join("tiny-vitamin.yml")
}

/// The model arguments for fixture `name` (its file `ext`), named or found by shapes (the
/// input size of the model without positions from the matching config).
fn args(name: &str, ext: &str, named: bool) -> Vec<String> {
    fixture_args(name, ext, &yml(), named)
}

/// Image and text features within open_clip's, both engines, by name and by shapes; also
/// from the TorchScript archive of `tiny-vitamin-xl` (timm's trunk pickles an enum member).
#[test]
fn vitamin_features_match_open_clip() {
    let (want, images, prompts) = reference();
    let io = (&images[..], &prompts[..]);
    let models = [MODELS[0], MODELS[1], ("tiny-vitamin-xl", "ts.pt")];
    features_match(&want, io, &models, args, |_, log| {
        assert!(log.contains("family custom-text"), "{log}");
        assert_eq!(
            log.contains("(torchscript) from"),
            log.contains(".ts.pt"),
            "{log}"
        );
    });
}

#[test]
fn vitamin_bf16_features_stay_close() {
    let (want, images, prompts) = reference();
    bf16_features_stay_close(&want, (&images, &prompts), &MODELS, |name, ext| {
        args(name, ext, true)
    });
}

#[test]
fn vitamin_zero_shot_predicts_as_open_clip() {
    let (want, _, _) = reference();
    zero_shot_matches(&want, &MODELS, |name, ext| args(name, ext, true));
}

/// `embed` of `tiny-vitamin` under the fixture's config as `edit` changes it: it must fail
/// with one line on stderr, which is returned.
fn embed_fails_with_config(edit: impl Fn(&str) -> String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("edited.yml");
    let text = std::fs::read_to_string(yml()).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&cfg, edited).unwrap();
    let o = bin()
        .arg("embed")
        .args([
            "--checkpoint",
            &s(&clip_dir().join("tiny-vitamin.safetensors")),
            "--model-config",
            &s(&cfg),
            "--visual-model",
            "tiny-vitamin",
            "--text",
            "a photo",
            "--out",
            &s(&dir.path().join("f.safetensors")),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    err
}

/// A config whose trunk has neither a class token nor `avg_pool` has no pooling: refused in
/// one line naming the option.
#[test]
fn vitamin_config_needs_its_pooling() {
    let err = embed_fails_with_config(|t| t.replace(", avg_pool: true", ""));
    assert!(err.contains("avg_pool"), "{err}");
}

/// A config without the positions the checkpoint holds does not describe it: refused in one
/// line that names both architectures.
#[test]
fn vitamin_config_without_the_checkpoints_positions_is_refused() {
    let err = embed_fails_with_config(|t| {
        // The first entry is `tiny-vitamin`'s.
        assert!(t.find("tiny-vitamin:") < t.find("tiny-vitamin-xl:"));
        t.replacen(
            "head_proj: true}\n",
            "head_proj: true, pos_embed: false}\n",
            1,
        )
    });
    assert!(
        err.contains("mean of the tokens) but --visual-model tiny-vitamin"),
        "{err}"
    );
    assert!(err.contains("no positional embedding))"), "{err}");
}

/// `ViTamin-XL-256 datacomp1b` read from the hub cache where open_clip downloads it
/// (`jienengchen/ViTamin-XL-256px/pytorch_model.bin`), the fixture without positions standing
/// in; the tag's preprocessing is open_clip's default (bicubic, OpenAI's mean and std).
#[test]
fn vitamin_tag_loads_from_the_hub_cache() {
    let (want, images, prompts) = reference();
    let io = (&images[..], &prompts[..]);
    let dir = tempfile::tempdir().unwrap();
    let snap = hub_snapshot(&dir.path().join("hub"), "jienengchen/ViTamin-XL-256px");
    std::fs::copy(
        clip_dir().join("tiny-vitamin-xl.pt"),
        snap.join("pytorch_model.bin"),
    )
    .unwrap();
    let config = dir.path().join("models.yml");
    let text = std::fs::read_to_string(yml()).unwrap();
    std::fs::write(&config, text.replace("tiny-vitamin-xl:", "ViTamin-XL-256:")).unwrap();
    let args = tag_args(
        "ViTamin-XL-256",
        "datacomp1b",
        &config,
        &dir.path().join("hub"),
    );
    for (engine, _, ours) in embed_on_both_engines(&args, io) {
        let what = format!("ViTamin-XL-256 datacomp1b {engine}");
        for (a, b) in [
            ("image_features", "image_features_raw"),
            ("text_features", "text_features_raw"),
        ] {
            assert_rows_close(&ours[a], &want[&format!("tiny_vitamin_xl.{b}")], &what);
        }
    }
    let r = minival_result(&args);
    assert_eq!(r["family"], "custom-text");
}

/// `inspect` names ViTamin's stages, GeGLU, the mean pooling and the missing positions.
#[test]
fn inspect_describes_the_vitamin_tower() {
    for (name, ext, want) in [
        ("tiny-vitamin", "safetensors", "a timm ViT (patch 16, width 32, 2 layers, resolution 64, MLP width 64, no class token, ViTamin's convolutional stages ([2, 3] deep, [8, 16] wide, stem 8), GeGLU, mean of the tokens)"),
        ("tiny-vitamin-xl", "pt", "stem 12), GeGLU, mean of the tokens, no positional embedding)"),
    ] {
        let o = bin()
            .arg("inspect")
            .arg(clip_dir().join(format!("{name}.{ext}")))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains(want), "{out}");
    }
}

/// Without positions the weights do not hold the input size: where two configs fit them
/// (ViTamin-XL-256 and -336), the one found by shapes is used with a warning naming both
/// sizes; naming a config is quiet.
#[test]
fn vitamin_without_positions_warns_when_two_input_sizes_fit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("two-sizes.yml");
    let text = std::fs::read_to_string(yml()).unwrap();
    let xl = &text[text.find("tiny-vitamin-xl:").unwrap()..];
    let bigger = xl
        .replacen("tiny-vitamin-xl:", "tiny-vitamin-xl-64:", 1)
        .replacen("image_resolution: 48", "image_resolution: 64", 1);
    assert_ne!(
        bigger,
        xl.replacen("tiny-vitamin-xl:", "tiny-vitamin-xl-64:", 1)
    );
    std::fs::write(&cfg, format!("{text}\n{bigger}")).unwrap();
    for named in [None, Some("tiny-vitamin-xl-64")] {
        let o = bin()
            .arg("embed")
            .args(["--checkpoint", &s(&clip_dir().join("tiny-vitamin-xl.pt"))])
            .args(["--model-config", &s(&cfg), "--text", "a photo", "--out"])
            .arg(dir.path().join("f.safetensors"))
            .args(named.map(|n| ["--visual-model", n]).into_iter().flatten())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        let warned = err.contains(
            "the input size is not in these weights ({48, 64} px fit them): using 48 px (tiny-vitamin-xl's)",
        );
        assert_eq!(warned, named.is_none(), "{err}");
    }
    // `inspect` shows the same notice.
    let o = bin()
        .arg("inspect")
        .arg(clip_dir().join("tiny-vitamin-xl.pt"))
        .args(["--model-config", &s(&cfg)])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("notice:       the input size is not in these weights ({48, 64} px fit them)"),
        "{out}"
    );
}
