//! open_clip's MobileCLIP models on plain timm ViTs (scripts/dev/mobileclip_reference.py):
//! `tiny-mobileclip-b` as `vit_base_mci_224` (MobileCLIP-B, MobileCLIP2-B: the convolutional
//! stem with BatchNorm and GELU, the positional embedding over the patches only) with CLIP's
//! causal text tower; `tiny-mobileclip2-l` as `vit_large_patch14_clip_224` (MobileCLIP2-L-14: a
//! LayerNorm before the blocks) with the text tower without causal mask, pooled at the
//! end-of-text id. And on timm's FastViT MCi trunks (scripts/dev/fastvit_reference.py):
//! `tiny-fastvit-s` as MCi0-2 (MobileCLIP-S1/S2, MobileCLIP2-S0/S2: BatchNorm before attention,
//! SE in the downsampling; trained MobileOne branches, folded at load) and `tiny-fastvit-l` as
//! MCi3/4 (MobileCLIP2-S3/S4: five stages, LayerNorm before attention; saved folded by timm's
//! `reparameterize_model`), both with the text tower without causal mask. Both engines, against
//! open_clip's `encode_image` / `encode_text` and its zero-shot top-1.

use crate::clip::{
    bf16_features_stay_close, clip_dir, embed_on_both_engines, embed_raw, features_match,
    minival_result, reference_with_prompts, s, tag_args, zero_shot_matches,
};
use crate::util::*;
use candle_core::Tensor;
use std::collections::HashMap;

/// The fixture models and their files' extensions: on ViTs, and on FastViTs.
const MODELS: [(&str, &str); 2] = [
    ("tiny-mobileclip-b", "safetensors"),
    ("tiny-mobileclip2-l", "pt"),
];
const FASTVITS: [(&str, &str); 2] = [("tiny-fastvit-s", "safetensors"), ("tiny-fastvit-l", "pt")];

fn mobileclip_reference() -> (HashMap<String, Tensor>, Vec<String>, Vec<String>) {
    reference_with_prompts("mobileclip.safetensors")
}

fn fastvit_reference() -> (HashMap<String, Tensor>, Vec<String>, Vec<String>) {
    reference_with_prompts("fastvit.safetensors")
}

fn yml() -> std::path::PathBuf {
    clip_dir().join("tiny-mobileclip.yml")
}

/// The fixture's model-config file.
fn yml_of(name: &str) -> std::path::PathBuf {
    if name.starts_with("tiny-fastvit") {
        clip_dir().join("tiny-fastvit.yml")
    } else {
        yml()
    }
}

/// The model arguments for fixture `name` (its file `ext`), named or found by shapes (the
/// text tower's missing causal mask, not in the weights, from the matching config).
fn args(name: &str, ext: &str, named: bool) -> Vec<String> {
    let mut a = vec![
        "--checkpoint".to_string(),
        s(&clip_dir().join(format!("{name}.{ext}"))),
        "--model-config".into(),
        s(&yml_of(name)),
    ];
    if named {
        a.extend(["--visual-model".into(), name.to_string()]);
    }
    a
}

/// Image and text features within open_clip's, both engines, by name and by shapes.
#[test]
fn mobileclip_features_match_open_clip() {
    let (want, images, prompts) = mobileclip_reference();
    let io = (&images[..], &prompts[..]);
    features_match(&want, io, &MODELS, args, |_, log| {
        assert!(log.contains("family custom-text"), "{log}");
    });
}

/// The fixture tells the causal mask from its absence: the L-14 stand-in computed with CLIP's
/// causal text tower misses open_clip's text features.
#[test]
fn mobileclip2_text_needs_its_missing_causal_mask() {
    let (want, images, prompts) = mobileclip_reference();
    let dir = tempfile::tempdir().unwrap();
    let causal = dir.path().join("causal.yml");
    let text = std::fs::read_to_string(yml()).unwrap();
    assert!(text.contains("    text_no_causal_mask: true\n"));
    std::fs::write(&causal, text.replace("    text_no_causal_mask: true\n", "")).unwrap();
    let model = [
        "--checkpoint".to_string(),
        s(&clip_dir().join("tiny-mobileclip2-l.pt")),
        "--model-config".into(),
        s(&causal),
        "--visual-model".into(),
        "tiny-mobileclip2-l".into(),
    ];
    let (_, ours) = embed_raw(&model, "native", (&images, &prompts));
    let cos = row_cosines(
        &ours["text_features"],
        &want["tiny_mobileclip2_l.text_features_raw"],
        "causal",
    );
    assert!(cos.iter().any(|&c| c < 0.999), "{cos:?}");
}

#[test]
fn mobileclip_bf16_features_stay_close() {
    let (want, images, prompts) = mobileclip_reference();
    bf16_features_stay_close(&want, (&images, &prompts), &MODELS, |name, ext| {
        args(name, ext, true)
    });
}

#[test]
fn mobileclip_zero_shot_predicts_as_open_clip() {
    let (want, _, _) = mobileclip_reference();
    zero_shot_matches(&want, &MODELS, |name, ext| args(name, ext, true));
}

/// `MobileCLIP-B datacompdr` read from the hub cache where open_clip downloads it
/// (`apple/MobileCLIP-B-OpenCLIP`), preprocessed as the tag says (mean 0, std 1, bilinear),
/// which the result names.
#[test]
fn mobileclip_tag_loads_from_the_hub_cache() {
    let (want, images, prompts) = mobileclip_reference();
    let io = (&images[..], &prompts[..]);
    let (_dir, model) = tag_matches(
        &want,
        io,
        "MobileCLIP-B",
        "apple/MobileCLIP-B-OpenCLIP",
        "tiny-mobileclip-b",
    );
    let r = minival_result(&model);
    assert_eq!(r["interpolation"], "bilinear");
    assert_eq!(r["family"], "custom-text");
}

/// `MODEL datacompdr` from a hub cache holding the fixture `stand_in` (safetensors) under
/// `repo`, its config entry renamed: features with the tag's preprocessing (bilinear, mean 0,
/// std 1: `KEY.image_features_tag`) and the text features, both engines. The cache and the
/// model arguments.
fn tag_matches(
    want: &HashMap<String, Tensor>,
    io: (&[String], &[String]),
    model: &str,
    repo: &str,
    stand_in: &str,
) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let snap = hub_snapshot(&dir.path().join("hub"), repo);
    std::fs::copy(
        clip_dir().join(format!("{stand_in}.safetensors")),
        snap.join("open_clip_model.safetensors"),
    )
    .unwrap();
    let config = dir.path().join("models.yml");
    let text = std::fs::read_to_string(yml_of(stand_in)).unwrap();
    std::fs::write(
        &config,
        text.replace(&format!("{stand_in}:"), &format!("{model}:")),
    )
    .unwrap();
    let args = tag_args(model, "datacompdr", &config, &dir.path().join("hub"));
    let key = stand_in.replace('-', "_");
    for (engine, log, ours) in embed_on_both_engines(&args, io) {
        assert!(log.contains("bilinear"), "{log}");
        let what = format!("{model} datacompdr {engine}");
        let img = &want[&format!("{key}.image_features_tag")];
        assert_rows_close(&ours["image_features"], img, &what);
        let txt = &want[&format!("{key}.text_features_raw")];
        assert_rows_close(&ours["text_features"], txt, &what);
    }
    (dir, args)
}

/// `inspect` names the plain timm ViT, its convolutional stem and the text tower without
/// causal mask.
#[test]
fn inspect_describes_the_mobileclip_towers() {
    for (name, ext, want) in [
        ("tiny-mobileclip-b", "safetensors", "a timm ViT (patch 16, width 32, 2 layers, resolution 64, convolutional stem, no position for the class token)"),
        ("tiny-mobileclip2-l", "pt", "text tower:   CLIP's (2 layers, width 16, 2 heads), without causal mask, pooled at the end-of-text position"),
    ] {
        let o = bin()
            .arg("inspect")
            .arg(clip_dir().join(format!("{name}.{ext}")))
            .args(["--model-config", &s(&yml())])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains(want), "{out}");
    }
}

/// FastViT image features (MobileOne's branches folded at load, or saved folded) and the text
/// features within open_clip's, both engines, by name and by shapes.
#[test]
fn mobileclip_s_features_match_open_clip() {
    let (want, images, prompts) = fastvit_reference();
    let io = (&images[..], &prompts[..]);
    features_match(&want, io, &FASTVITS, args, |_, log| {
        assert!(log.contains("family custom-text"), "{log}");
    });
}

#[test]
fn mobileclip_s_bf16_features_stay_close() {
    let (want, images, prompts) = fastvit_reference();
    bf16_features_stay_close(&want, (&images, &prompts), &FASTVITS, |name, ext| {
        args(name, ext, true)
    });
}

#[test]
fn mobileclip_s_zero_shot_predicts_as_open_clip() {
    let (want, _, _) = fastvit_reference();
    zero_shot_matches(&want, &FASTVITS, |name, ext| args(name, ext, true));
}

/// `MobileCLIP-S1 datacompdr` read from the hub cache (`apple/MobileCLIP-S1-OpenCLIP`), its
/// trained MobileOne branches folded at load, preprocessed as the tag says.
#[test]
fn mobileclip_s_tag_loads_from_the_hub_cache() {
    let (want, images, prompts) = fastvit_reference();
    let io = (&images[..], &prompts[..]);
    tag_matches(
        &want,
        io,
        "MobileCLIP-S1",
        "apple/MobileCLIP-S1-OpenCLIP",
        "tiny-fastvit-s",
    );
}

/// `inspect` describes the FastViT trunk: its stages, where attention is and its norm.
#[test]
fn inspect_describes_the_fastvit_tower() {
    for (name, ext, want) in [
        ("tiny-fastvit-s", "safetensors", "a timm FastViT (stages [1, 2, 1, 2] deep, [32, 32, 64, 64] wide, attention in stages [3], BatchNorm before attention, MLP ratio 3)"),
        ("tiny-fastvit-l", "pt", "a timm FastViT (stages [1, 1, 2, 1, 2] deep, [32, 32, 64, 64, 128] wide, attention in stages [3, 4], LayerNorm before attention, MLP ratio 4)"),
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
