//! open_clip's plain timm ViT configs (scripts/dev/timm_vit_reference.py): `tiny-vit-gap` as
//! `vit_medium_patch16_gap_256` (no class token, the mean of the tokens after the final norm,
//! q/k/v without bias, layer scale) and `tiny-vit-relpos` as
//! `vit_relpos_medium_patch16_cls_224` (no absolute positions, each block's relative-position
//! MLP biasing its scores, a class token, q/k/v without bias), both with open_clip's
//! `head.proj` and CLIP's text tower at the top level (open_clip's `CLIP`). Both engines,
//! against open_clip's `encode_image` / `encode_text` and its zero-shot top-1.

use crate::clip::{
    bf16_features_stay_close, clip_dir, features_match, fixture_args, reference_with_prompts, s,
    zero_shot_matches,
};
use crate::util::*;
use candle_core::Tensor;
use std::collections::HashMap;

const MODELS: [(&str, &str); 2] = [("tiny-vit-gap", "safetensors"), ("tiny-vit-relpos", "pt")];

fn reference() -> (HashMap<String, Tensor>, Vec<String>, Vec<String>) {
    reference_with_prompts("timm-vit.safetensors")
}

fn yml() -> std::path::PathBuf {
    clip_dir().join("tiny-timm-vit.yml")
}

fn args(name: &str, ext: &str, named: bool) -> Vec<String> {
    fixture_args(name, ext, &yml(), named)
}

/// Image and text features within open_clip's, both engines, by name and by shapes (the
/// trunk's pool, layer scale, relative-position MLPs and missing q/k/v bias found from the
/// keys); also from the TorchScript archive of `tiny-vit-relpos` (with the coordinate and
/// index buffers timm leaves out of state dicts).
#[test]
fn average_pooled_vit_features_match_open_clip() {
    let (want, images, prompts) = reference();
    let io = (&images[..], &prompts[..]);
    let models = [MODELS[0], MODELS[1], ("tiny-vit-relpos", "ts.pt")];
    features_match(&want, io, &models, args, |_, log| {
        assert!(log.contains("family clip, activation gelu"), "{log}");
    });
}

/// A named config that leaves out the layer scale the checkpoint's keys hold is refused,
/// saying so (the gains, ~0.5 here, would otherwise be dropped).
#[test]
fn average_pooled_vit_config_without_its_layer_scale_is_refused() {
    let text = std::fs::read_to_string(yml()).unwrap();
    assert!(text.contains(", layer_scale: true"));
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("no-scale.yml");
    std::fs::write(&changed, text.replace(", layer_scale: true", "")).unwrap();
    let o = bin()
        .arg("embed")
        .args([
            "--text",
            "a photo",
            "--out",
            &s(&dir.path().join("f.safetensors")),
            "--checkpoint",
            &s(&clip_dir().join("tiny-vit-gap.safetensors")),
            "--model-config",
            &s(&changed),
            "--visual-model",
            "tiny-vit-gap",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("layer scale") && err.contains("--visual-model tiny-vit-gap"),
        "{err}"
    );
}

#[test]
fn average_pooled_vit_bf16_features_stay_close() {
    let (want, images, prompts) = reference();
    bf16_features_stay_close(&want, (&images, &prompts), &MODELS, |name, ext| {
        args(name, ext, true)
    });
}

#[test]
fn average_pooled_vit_zero_shot_predicts_as_open_clip() {
    let (want, _, _) = reference();
    zero_shot_matches(&want, &MODELS, |name, ext| args(name, ext, true));
}
