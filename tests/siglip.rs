//! open_clip's SigLIP models (scripts/dev/siglip_reference.py): tiny towers registered with
//! timm (`tiny-siglip` as ViT-B-16-SigLIP: GELU, 4x MLPs, context 64; `tiny-siglip-so` as the
//! SO400M / SigLIP 2 towers: GELU's tanh form, mlp_ratio 3.7362, context 16), and a T5-style
//! SentencePiece tokenizer converted by transformers as the hub's are. Both engines, against
//! open_clip's `encode_image` / `encode_text`, its `HFTokenizer` rows and its zero-shot top-1.

use crate::clip::{
    clip_dir, features_match, minival_lists, reference_with_prompts, s, zero_shot_matches,
};
use crate::util::*;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The fixture models and their files' extensions; `tiny-siglip-noproj` has no text projection
/// (as ViT-SO400M-16-SigLIP-i18n-256).
const MODELS: [(&str, &str); 3] = [
    ("tiny-siglip", "safetensors"),
    ("tiny-siglip-so", "pt"),
    ("tiny-siglip-noproj", "safetensors"),
];

/// The expected tensors, the fixture images and the prompts they were computed for.
fn siglip_reference() -> (HashMap<String, Tensor>, Vec<String>, Vec<String>) {
    reference_with_prompts("siglip.safetensors")
}

/// The model arguments for fixture `name` (its file `ext`), named or found by shapes.
fn args(name: &str, ext: &str, named: bool) -> Vec<String> {
    let mut a = vec![
        "--checkpoint".to_string(),
        s(&clip_dir().join(format!("{name}.{ext}"))),
        "--model-config".into(),
        s(&clip_dir().join("tiny-siglip.yml")),
        "--tokenizer".into(),
        s(&clip_dir().join("siglip-tokenizer")),
    ];
    if named {
        a.extend(["--visual-model".into(), name.to_string()]);
    }
    a
}

/// Image and text features (every prompt kind: punctuation, case, HTML entities, mojibake,
/// NFKC, CJK, empty, past the context) within open_clip's, both engines, by name and by shapes.
#[test]
fn siglip_features_match_open_clip() {
    let (want, images, prompts) = siglip_reference();
    let io = (&images[..], &prompts[..]);
    features_match(&want, io, &MODELS, args, |_, log| {
        assert!(log.contains("family siglip"), "{log}");
        assert!(log.contains("siglip-tokenizer"), "{log}");
    });
}

/// `tokenize --tokenizer` gives open_clip's `HFTokenizer` rows (its `canonicalize` cleaning,
/// the end token kept when cut, `</s>` padding) at both contexts, with a config that pads and
/// cuts on the left, and for a SigLIP 2-style tokenizer (SentencePiece BPE with byte fallback,
/// `<pad>` 0, its `tokenizer.json` holding a stale padding and truncation of its own);
/// `--no-truncate` refuses.
#[test]
fn siglip_tokens_are_open_clips() {
    let (want, _, prompts) = siglip_reference();
    let tok = s(&clip_dir().join("siglip-tokenizer"));
    let dir = tempfile::tempdir().unwrap();
    let left = dir.path();
    std::fs::copy(
        clip_dir().join("siglip-tokenizer/tokenizer.json"),
        left.join("tokenizer.json"),
    )
    .unwrap();
    let config = clip_dir().join("siglip-tokenizer/tokenizer_config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    config["padding_side"] = "left".into();
    config["truncation_side"] = "left".into();
    std::fs::write(left.join("tokenizer_config.json"), config.to_string()).unwrap();
    for (key, ctx, tok) in [
        ("tiny_siglip", 64, tok.clone()),
        ("tiny_siglip_so", 16, tok.clone()),
        ("left", 8, s(left)),
        ("gemma", 16, s(&clip_dir().join("siglip2-tokenizer"))),
    ] {
        let o = bin()
            .args(["tokenize", "--tokenizer", &tok, "--context-length"])
            .arg(ctx.to_string())
            .args(&prompts)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ours: Vec<Vec<i64>> = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let theirs = want[&format!("{key}.tokens")].to_vec2::<i64>().unwrap();
        assert_eq!(ours, theirs, "{key} context {ctx}");
    }
    let long = prompts.last().unwrap();
    let o = bin()
        .args(["tokenize", "--tokenizer", &tok, "--context-length", "16"])
        .args(["--no-truncate", long])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn siglip_zero_shot_predicts_as_open_clip() {
    let (want, _, _) = siglip_reference();
    zero_shot_matches(&want, &MODELS, |name, ext| args(name, ext, true));
    // The result says which tokenizer and family computed it; the class vectors cached for
    // it are read back by a second run.
    let dir = tempfile::tempdir().unwrap();
    let (names, templates) = minival_lists(dir.path());
    let out = dir.path().join("r.json");
    for round in 0..2 {
        let o = bin()
            .arg("eval")
            .args(args("tiny-siglip", "safetensors", true))
            .args(["--test-data-path", &s(&fixtures().join("minival"))])
            .args(["--classnames", &s(&names), "--templates", &s(&templates)])
            .args([
                "--text-cache",
                &s(&dir.path().join("cache")),
                "--output",
                &s(&out),
            ])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{log}");
        assert_eq!(log.contains("loaded from cache"), round == 1, "{log}");
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(r["family"], "siglip");
    let tok = r["tokenizer"].as_str().unwrap();
    assert!(tok.ends_with("tokenizer.json"), "{tok}");
}

/// `--visual-model ViT-B-16-SigLIP --checkpoint webli` reads the weights and the tokenizer
/// from the hub cache where open_clip downloads them, and preprocesses as the tag does
/// (squashed, mean and std 0.5). ViT-SO400M-14-SigLIP's tokenizer lives in
/// ViT-B-16-SigLIP's repo (its config's `hf_tokenizer_name`); without it the load fails with
/// exit 4, naming --tokenizer.
#[test]
fn siglip_tags_load_weights_and_tokenizer_from_the_hub_cache() {
    let (want, images, prompts) = siglip_reference();
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let snapshot = |repo: &str| hub_snapshot(&hub, repo);
    let b16 = snapshot("timm/ViT-B-16-SigLIP");
    std::fs::copy(
        clip_dir().join("tiny-siglip.safetensors"),
        b16.join("open_clip_model.safetensors"),
    )
    .unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(clip_dir().join("siglip-tokenizer").join(f), b16.join(f)).unwrap();
    }
    std::fs::copy(
        clip_dir().join("tiny-siglip-so.pt"),
        snapshot("timm/ViT-SO400M-14-SigLIP").join("open_clip_pytorch_model.bin"),
    )
    .unwrap();
    // The tiny towers stand for the named models; their tokenizer is ViT-B-16-SigLIP's.
    let yml = std::fs::read_to_string(clip_dir().join("tiny-siglip.yml"))
        .unwrap()
        .replace("tiny-siglip-so:", "ViT-SO400M-14-SigLIP:")
        .replace("tiny-siglip:", "ViT-B-16-SigLIP:")
        .replace(
            "pyramidclip-test/tiny-siglip-tokenizer",
            "timm/ViT-B-16-SigLIP",
        );
    let config = dir.path().join("models.yml");
    std::fs::write(&config, yml).unwrap();
    let run = |model: &str, engine: &str, out: &Path| {
        bin()
            .args(["embed", "--visual-model", model, "--checkpoint", "webli"])
            .args(["--model-config", &s(&config), "--model-cache-dir", &s(&hub)])
            .args(["--engine", engine, "--raw", "--out", &s(out), "--images"])
            .args(&images)
            .arg("--text")
            .args(&prompts)
            .output()
            .unwrap()
    };
    for (model, key) in [
        ("ViT-B-16-SigLIP", "tiny_siglip"),
        ("ViT-SO400M-14-SigLIP", "tiny_siglip_so"),
    ] {
        for engine in ["native", "candle"] {
            let out = dir.path().join("f.safetensors");
            let o = run(model, engine, &out);
            let log = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{log}");
            assert!(log.contains("`squash`"), "{log}");
            assert!(log.contains(&s(&b16.join("tokenizer.json"))), "{log}");
            let ours = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
            let what = format!("{model} webli {engine}");
            let img = &want[&format!("{key}.image_features_webli")];
            assert_rows_close(&ours["image_features"], img, &what);
            let txt = &want[&format!("{key}.text_features_raw")];
            assert_rows_close(&ours["text_features"], txt, &what);
        }
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::remove_file(b16.join(f)).unwrap();
    }
    let o = run(
        "ViT-SO400M-14-SigLIP",
        "native",
        &dir.path().join("g.safetensors"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("timm/ViT-B-16-SigLIP") && err.contains("--tokenizer"),
        "{err}"
    );
}

/// `--tokenizer` errors name the flag: a folder without `tokenizer.json` (exit 4), and a
/// tokenizer given for a model that takes CLIP's (a usage error, exit 2).
#[test]
fn tokenizer_flag_errors_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = s(&dir.path().join("f.safetensors"));
    let run = |model: &[String], tok: &str| {
        bin()
            .arg("embed")
            .args(model)
            .args(["--tokenizer", tok, "--text", "a cat", "--out", &out])
            .output()
            .unwrap()
    };
    let mut siglip = args("tiny-siglip", "safetensors", true);
    siglip.truncate(4);
    let o = run(&siglip, &s(dir.path()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("--tokenizer") && err.contains("tokenizer.json"),
        "{err}"
    );
    let clip = [
        "--checkpoint".to_string(),
        s(&clip_dir().join("tiny-clip-vit.pt")),
        "--model-config".into(),
        s(&clip_dir().join("tiny-clip-vit.json")),
    ];
    let o = run(&clip, &s(&clip_dir().join("siglip-tokenizer")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("CLIP's tokenizer"), "{err}");
}
