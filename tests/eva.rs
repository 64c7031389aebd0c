//! open_clip's EVA models (scripts/dev/eva_reference.py): tiny timm EVA trunks registered with
//! timm's options (`tiny-eva02` as EVA02-B/L: separate q/k/v, rotary embedding scaled to the
//! 16 x 16 reference grid, LayerNorm after attention, SwiGLU MLPs with a LayerNorm;
//! `tiny-eva01` as EVA01-g: fused q/k/v with q and v biases, GELU MLPs; `tiny-eva02e` as
//! EVA02-E: EVA01's block, post-norm; `tiny-pe` as PE-Core T/S/B/L: a LayerNorm before the
//! blocks, one q/k/v product with its own bias, the rotary embedding over an `xy` grid counted
//! from 1, the attention-pool head, eps 1e-5; `tiny-pe-g` as PE-Core-bigG, without class
//! token), CLIP's text tower under `text.`. Both engines, against open_clip's `encode_image` /
//! `encode_text` and its zero-shot top-1.

use crate::clip::{
    bf16_features_stay_close, clip_dir, features_match, minival_result, reference_with_prompts, s,
    zero_shot_matches,
};
use crate::util::*;
use candle_core::{Device, Tensor};
use std::collections::HashMap;

/// The fixture models and their files' extensions.
const MODELS: [(&str, &str); 5] = [
    ("tiny-eva02", "safetensors"),
    ("tiny-eva01", "pt"),
    ("tiny-eva02e", "pt"),
    ("tiny-pe", "safetensors"),
    ("tiny-pe-g", "pt"),
];

/// The expected tensors, the fixture images and the prompts they were computed for.
fn eva_reference() -> (HashMap<String, Tensor>, Vec<String>, Vec<String>) {
    reference_with_prompts("eva.safetensors")
}

/// The model arguments for fixture `name` (its file `ext`), named or found by shapes.
fn args(name: &str, ext: &str, named: bool) -> Vec<String> {
    let mut a = vec![
        "--checkpoint".to_string(),
        s(&clip_dir().join(format!("{name}.{ext}"))),
        "--model-config".into(),
        s(&clip_dir().join("tiny-eva.yml")),
    ];
    if named {
        a.extend(["--visual-model".into(), name.to_string()]);
    }
    a
}

/// Image and text features within open_clip's, both engines, by name and by shapes (the
/// post-norm and rotary options, not in the weights, come from the matching config).
#[test]
fn eva_features_match_open_clip() {
    let (want, images, prompts) = eva_reference();
    let io = (&images[..], &prompts[..]);
    features_match(&want, io, &MODELS, args, |_, log| {
        assert!(log.contains("family custom-text"), "{log}");
    });
}

/// With bf16 products (the native engine's bf16 kernels where the CPU has them, else its
/// fp32 fallback; candle's bf16) each feature row stays within cosine 0.999 of open_clip's
/// fp32 one.
#[test]
fn eva_bf16_features_stay_close() {
    let (want, images, prompts) = eva_reference();
    bf16_features_stay_close(&want, (&images, &prompts), &MODELS, |name, ext| {
        args(name, ext, true)
    });
}

#[test]
fn eva_zero_shot_predicts_as_open_clip() {
    let (want, _, _) = eva_reference();
    zero_shot_matches(&want, &MODELS, |name, ext| args(name, ext, true));
    // The result names the family that computed it.
    let r = minival_result(&args("tiny-eva02", "safetensors", false));
    assert_eq!(r["family"], "custom-text");
}

/// `inspect` describes the EVA trunk: its MLP, rotary embedding, post-norm, class token and
/// pooling.
#[test]
fn inspect_describes_the_eva_tower() {
    for (name, ext, want) in [
        ("tiny-eva02", "safetensors", "an EVA ViT (patch 16, width 32, 2 layers, resolution 64, MLP width 85, SwiGLU, rotary embedding)"),
                ("tiny-eva02e", "pt", "an EVA ViT (patch 14, width 32, 3 layers, resolution 56, MLP width 274, post-norm)"),
        ("tiny-pe-g", "pt", "an EVA ViT (patch 14, width 32, 2 layers, resolution 56, rotary embedding, no class token, attention-pool head)"),
    ] {
        let o = bin()
            .arg("inspect")
            .arg(clip_dir().join(format!("{name}.{ext}")))
            .args(["--model-config", &s(&clip_dir().join("tiny-eva.yml"))])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains(want), "{out}");
    }
}

/// A hub cache where open_clip would have downloaded `model`'s `tag` from `repo`, holding the
/// tiny fixture `stand_in` (standing for the named model through a renamed config entry).
struct TagInHub {
    dir: tempfile::TempDir,
    model: &'static str,
    tag: &'static str,
}

impl TagInHub {
    fn new(model: &'static str, tag: &'static str, repo: &str, stand_in: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let snap = hub_snapshot(&dir.path().join("hub"), repo);
        let ext = MODELS.iter().find(|m| m.0 == stand_in).unwrap().1;
        let weights = match ext {
            "safetensors" => "open_clip_model.safetensors",
            _ => "open_clip_pytorch_model.bin",
        };
        std::fs::copy(
            clip_dir().join(format!("{stand_in}.{ext}")),
            snap.join(weights),
        )
        .unwrap();
        let yml = std::fs::read_to_string(clip_dir().join("tiny-eva.yml"))
            .unwrap()
            .replace(&format!("{stand_in}:"), &format!("{model}:"));
        std::fs::write(dir.path().join("models.yml"), yml).unwrap();
        Self { dir, model, tag }
    }

    /// `--visual-model MODEL --checkpoint TAG` and the cache's flags.
    fn args(&self) -> Vec<String> {
        let at = |f: &str| s(&self.dir.path().join(f));
        ["--visual-model", self.model, "--checkpoint", self.tag]
            .map(String::from)
            .into_iter()
            .chain(["--model-config".into(), at("models.yml")])
            .chain(["--model-cache-dir".into(), at("hub")])
            .collect()
    }
}

/// open_clip's tags read from the hub cache where it downloads them (timm's repos), with
/// CLIP's tokenizer: `EVA02-B-16 merged2b_s8b_b131k` preprocessed as OpenAI's, `PE-Core-B-16
/// meta` as the PE tags say (squashed, bilinear, mean and std 0.5), which the result names.
#[test]
fn eva_and_pe_tags_load_from_the_hub_cache() {
    let (want, images, prompts) = eva_reference();
    for (hub, key, image_key) in [
        (
            TagInHub::new(
                "EVA02-B-16",
                "merged2b_s8b_b131k",
                "timm/eva02_base_patch16_clip_224.merged2b_s8b_b131k",
                "tiny-eva02",
            ),
            "tiny_eva02",
            "image_features_raw",
        ),
        (
            TagInHub::new("PE-Core-B-16", "meta", "timm/PE-Core-B-16", "tiny-pe"),
            "tiny_pe",
            "image_features_tag",
        ),
    ] {
        for engine in ["native", "candle"] {
            let out = hub.dir.path().join("f.safetensors");
            let o = bin()
                .arg("embed")
                .args(hub.args())
                .args(["--engine", engine, "--raw", "--out", &s(&out), "--images"])
                .args(&images)
                .arg("--text")
                .args(&prompts)
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{log}");
            assert_eq!(
                log.contains("`squash` with bilinear"),
                key == "tiny_pe",
                "{log}"
            );
            let ours = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
            let what = format!("{} {} {engine}", hub.model, hub.tag);
            let img = &want[&format!("{key}.{image_key}")];
            assert_rows_close(&ours["image_features"], img, &what);
            let txt = &want[&format!("{key}.text_features_raw")];
            assert_rows_close(&ours["text_features"], txt, &what);
        }
    }
    let pe = TagInHub::new("PE-Core-B-16", "meta", "timm/PE-Core-B-16", "tiny-pe");
    let r = minival_result(&pe.args());
    assert_eq!(r["resize_mode"], "squash");
    assert_eq!(r["interpolation"], "bilinear");
}
