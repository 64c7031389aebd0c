//! CLIP-family checkpoints (OpenAI / open_clip layout) through the same pipeline: tiny models
//! written by open_clip (`scripts/clip_reference.py`), as a TorchScript archive and as state
//! dicts, against open_clip's own features and minival predictions.

use crate::util::*;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub(crate) fn clip_dir() -> PathBuf {
    fixtures().join("clip")
}

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(clip_dir().join("manifest.json")).unwrap()).unwrap()
}

fn fixture_manifest() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("manifest.json")).unwrap()).unwrap()
}

pub(crate) fn s(p: &Path) -> String {
    p.display().to_string()
}

const MODELS: [&str; 4] = [
    "tiny-clip-vit-quickgelu",
    "tiny-clip-vit",
    "tiny-clip-rn",
    "tiny-clip-vit-ls",
];

fn model_args(name: &str) -> Vec<String> {
    let m = &manifest()["models"][name];
    vec![
        "--checkpoint".into(),
        s(&clip_dir().join(m["checkpoint"].as_str().unwrap())),
        "--model-config".into(),
        s(&clip_dir().join(m["config"].as_str().unwrap())),
    ]
}

#[test]
fn features_match_open_clip() {
    let expected: HashMap<String, Tensor> =
        candle_core::safetensors::load(clip_dir().join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    let fm = fixture_manifest();
    let images: Vec<PathBuf> = fm["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| fixtures().join(p.as_str().unwrap()))
        .collect();
    let prompts: Vec<String> = fm["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for name in MODELS {
        for engine in ["native", "candle"] {
            let out = dir.path().join("f.safetensors");
            let o = bin()
                .arg("embed")
                .args(model_args(name))
                .args(["--engine", engine, "--raw", "--out", &s(&out), "--images"])
                .args(&images)
                .arg("--text")
                .args(&prompts)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{err}");
            let act = manifest()["models"][name]["activation"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                err.contains(&format!("family clip, activation {act}")),
                "{err}"
            );
            let ours = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
            let key = name.replace('-', "_");
            for (a, b) in [
                ("image_features", "image_features_raw"),
                ("text_features", "text_features_raw"),
            ] {
                assert_rows_close(
                    &ours[a],
                    &expected[&format!("{key}.{b}")],
                    &format!("{name} {engine} {a}"),
                );
            }
        }
    }
}

/// The fixture manifest's minival class names and templates, written under `dir`.
pub(crate) fn minival_lists(dir: &Path) -> (PathBuf, PathBuf) {
    let fm = fixture_manifest();
    let lines = |k: &str| -> String {
        fm[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (names, templates) = (dir.join("n.txt"), dir.join("t.txt"));
    std::fs::write(&names, lines("classnames")).unwrap();
    std::fs::write(&templates, lines("templates")).unwrap();
    (names, templates)
}

#[test]
fn minival_predictions_match_open_clip() {
    let dir = tempfile::tempdir().unwrap();
    let (names, templates) = minival_lists(dir.path());
    for name in MODELS {
        for engine in ["native", "candle"] {
            let (out, csv) = (dir.path().join("r.json"), dir.path().join("p.csv"));
            let o = bin()
                .arg("eval")
                .args(model_args(name))
                .args([
                    "--engine",
                    engine,
                    "--test-data-path",
                    &s(&fixtures().join("minival")),
                ])
                .args([
                    "--classnames",
                    &s(&names),
                    "--templates",
                    &s(&templates),
                    "--no-text-cache",
                    "-q",
                ])
                .args(["--output", &s(&out), "--save-predictions", &s(&csv)])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let preds: Vec<u64> = csv_rows(&csv)
                .iter()
                .map(|r| r[2].parse().unwrap())
                .collect();
            let want: Vec<u64> = manifest()["models"][name]["minival_pred_top1"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(preds, want, "{name} {engine}");
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
            assert_eq!(r["family"], "clip", "{r}");
            assert_eq!(r["activation"], manifest()["models"][name]["activation"]);
        }
    }
}

/// A TorchScript archive whose pickle names a global that is not a `__torch__` module class is
/// refused, naming it; nothing is run.
#[test]
fn torchscript_archives_with_foreign_globals_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = clip_dir().join("tiny-clip-vit-quickgelu.ts.pt");
    let mut members = read_zip(&src);
    let pkl = members
        .iter_mut()
        .find(|(n, _)| n.ends_with("/data.pkl"))
        .unwrap();
    let from = b"c__torch__.open_clip.model\nCLIP\n".as_slice();
    let at = pkl
        .1
        .windows(from.len())
        .position(|w| w == from)
        .expect("class global");
    pkl.1
        .splice(at..at + from.len(), b"cos\nsystem\n".iter().copied());
    let bad = dir.path().join("bad.ts.pt");
    write_zip(&bad, &members);
    let o = bin().args(["inspect", &s(&bad)]).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{e}");
    assert!(
        e.contains("os.system") && e.contains("bad.ts.pt") && !e.contains("panicked"),
        "{e}"
    );
    // The untouched archive reads, as TorchScript with its activation.
    let o = bin()
        .args(["inspect", &s(&src), "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            v["format"].as_str(),
            v["family"].as_str(),
            v["activation"].as_str()
        ),
        (Some("torchscript"), Some("clip"), Some("quickgelu"))
    );
}

/// Without a hint, a CLIP state dict's activation is QuickGELU, said once; `NAME-quickgelu` and
/// `NAME` choose.
#[test]
fn the_activation_of_a_state_dict_is_announced_or_chosen_by_name() {
    let ck = clip_dir().join("tiny-clip-vit.pt");
    let o = bin().args(["inspect", &s(&ck)]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("family:       clip, activation quickgelu (not in the weights"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    // The same shapes under a registry name, to ask for each activation by name.
    let cfg = dir.path().join("models.yml");
    std::fs::write(
        &cfg,
        "tiny-vit:\n  embed_dim: 24\n  image_resolution: 64\n  vision_layers: 3\n  vision_width: 64\n  vision_patch_size: 16\n  vision_heads: 2\n  context_length: 77\n  vocab_size: 49408\n  transformer_width: 16\n  transformer_heads: 2\n  transformer_layers: 3\n",
    )
    .unwrap();
    for (name, act) in [("tiny-vit", "gelu"), ("tiny-vit-quickgelu", "quickgelu")] {
        let o = bin()
            .args([
                "inspect",
                &s(&ck),
                "--model-config",
                &s(&cfg),
                "--visual-model",
                name,
                "--json",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["activation"], act, "{v}");
        assert!(v["activation_notice"].is_null());
    }
    // open_clip's MLP width and layer scale are read off the shapes and keys.
    let ls = clip_dir().join("tiny-clip-vit-ls.pt");
    let o = bin().args(["inspect", &s(&ls)]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("MLP width 160, layer scale)"), "{out}");
    // Of no known architecture, its heads are a guess the load says it makes.
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["embed", "--checkpoint", &s(&ls), "--text", "a", "--out"])
        .arg(dir.path().join("f.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("assuming 64-wide heads (1 in the image tower, 1 in the text tower)"),
        "{err}"
    );
}

/// CLIP_benchmark's `--model ViT-B-32 --pretrained laion2b_s34b_b79k`: the tag is found where
/// open_clip downloaded it (a Hugging Face hub cache laid out as huggingface_hub lays it out),
/// and names the outputs (`{pretrained}`, the JSON's `pretrained`) as CLIP_benchmark does. The
/// file there is the tiny model, named ViT-B-32 by its config, so the predictions are its own.
#[test]
fn open_clip_tags_are_read_from_its_download_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (names, templates) = minival_lists(dir.path());
    let cache = dir.path().join("hub");
    let repo = cache.join("models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K");
    std::fs::create_dir_all(repo.join("snapshots/r1")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "r1\n").unwrap();
    let weights = repo.join("snapshots/r1/open_clip_pytorch_model.bin");
    std::fs::copy(clip_dir().join("tiny-clip-vit.pt"), &weights).unwrap();
    let config = dir.path().join("ViT-B-32.json");
    std::fs::copy(clip_dir().join("tiny-clip-vit.json"), &config).unwrap();
    // `which`: the model arguments (--checkpoint/--visual-model or --pretrained-model).
    let run = |which: &[&str]| {
        bin()
            .arg("eval")
            .args(which)
            .args(["--model-config", &s(&config), "--model-cache-dir"])
            .arg(&cache)
            .args(["--test-data-path", &s(&fixtures().join("minival"))])
            .args(["--classnames", &s(&names), "--templates", &s(&templates)])
            .args(["--no-text-cache", "-q", "--output"])
            .arg(dir.path().join("{pretrained}.json"))
            .arg("--save-predictions")
            .arg(dir.path().join("p.csv"))
            .output()
            .unwrap()
    };
    let o = run(&[
        "--checkpoint",
        "laion2b_s34b_b79k",
        "--visual-model",
        "ViT-B-32",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("laion2b_s34b_b79k.json")).unwrap())
            .unwrap();
    assert_eq!(r["pretrained"], "laion2b_s34b_b79k");
    assert_eq!(r["checkpoint"], s(&weights));
    let preds: Vec<u64> = csv_rows(&dir.path().join("p.csv"))
        .iter()
        .map(|r| r[2].parse().unwrap())
        .collect();
    let want: Vec<u64> = manifest()["models"]["tiny-clip-vit"]["minival_pred_top1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(preds, want);
    // CLIP_benchmark's --pretrained_model: a MODEL,PRETRAINED pair, or a file of them.
    let list = dir.path().join("models.txt");
    std::fs::write(&list, "ViT-B-32,laion2b_s34b_b79k\n").unwrap();
    for entry in ["ViT-B-32,laion2b_s34b_b79k".to_string(), s(&list)] {
        std::fs::remove_file(dir.path().join("laion2b_s34b_b79k.json")).unwrap();
        let o = run(&["--pretrained-model", &entry]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let again: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("laion2b_s34b_b79k.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(again["metrics"], r["metrics"], "{entry}");
    }
    // Not downloaded, unknown, or without the model it belongs to.
    for (which, code, says) in [
        (
            &["--checkpoint", "openai", "--visual-model", "ViT-B-32"][..],
            4,
            "not downloaded",
        ),
        (
            &["--checkpoint", "laion5b", "--visual-model", "ViT-B-32"],
            4,
            "its tags: openai",
        ),
        (
            &["--checkpoint", "laion2b_s34b_b79k"],
            2,
            "add --visual-model",
        ),
    ] {
        let tag = which[1];
        let o = run(which);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{tag}: {err}");
        assert!(err.contains(says), "{tag}: {err}");
    }
}

/// The fixture images and open_clip's raw features of the tiny ViT for them when normalised
/// with mean and std 0.5 (scripts/dev/normalize_reference.py).
fn half_normalised_reference() -> (Vec<String>, Tensor) {
    open_clip_reference("normalize_half.json")
}

/// The fixture images and open_clip's tiny-ViT features of them in `file` (a script of
/// `scripts/dev` wrote it).
fn open_clip_reference(file: &str) -> (Vec<String>, Tensor) {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clip_dir().join(file)).unwrap()).unwrap();
    let images: Vec<String> = reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| s(&fixtures().join(p.as_str().unwrap())))
        .collect();
    let rows: Vec<f32> = reference["features"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    let want = Tensor::from_vec(rows, (images.len(), 24), &Device::Cpu).unwrap();
    (images, want)
}

/// LAION's ViT-L-14 `laion2b_s32b_b82k` was trained with mean and std 0.5 (open_clip's tag
/// table): its images are normalised so, as open_clip's transform for that tag does
/// (scripts/dev/normalize_reference.py: the tiny ViT's features with those values), on both
/// engines. The same file passed by path gets OpenAI's.
#[test]
fn a_tags_normalisation_is_open_clips() {
    let (images, want) = half_normalised_reference();
    let dir = tempfile::tempdir().unwrap();
    let hub = TinyInHub::new(
        dir.path(),
        "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
        "ViT-L-14",
    );
    for engine in ["native", "candle"] {
        let ours = hub.embed("laion2b_s32b_b82k", engine, &images).0;
        assert_rows_close(&ours, &want, &format!("mean/std 0.5, {engine}"));
    }
    // By path, OpenAI's normalisation: other features.
    let by_path = hub.embed(&s(&hub.weights), "native", &images).0;
    assert!(max_abs_diff(&by_path, &want) > 1e-2);
}

/// The tiny ViT in a Hugging Face hub cache under `root` as the repo `ORG/NAME` (snapshot
/// `r`), named `model` by a copy of its config: where open_clip's tag for `model` finds it.
struct TinyInHub {
    root: PathBuf,
    weights: PathBuf,
    config: PathBuf,
    model: String,
}

impl TinyInHub {
    fn new(root: &Path, repo: &str, model: &str) -> Self {
        Self::of("tiny-clip-vit", root, repo, model)
    }

    /// [`Self::new`] for the fixture model `fixture` (`tests/fixtures/clip/FIXTURE.{pt,json}`).
    fn of(fixture: &str, root: &Path, repo: &str, model: &str) -> Self {
        let snapshot = hub_snapshot(&root.join("hub"), repo);
        let weights = snapshot.join("open_clip_pytorch_model.bin");
        std::fs::copy(clip_dir().join(format!("{fixture}.pt")), &weights).unwrap();
        let config = root.join(format!("{model}.json"));
        std::fs::copy(clip_dir().join(format!("{fixture}.json")), &config).unwrap();
        Self {
            root: root.to_path_buf(),
            weights,
            config,
            model: model.to_string(),
        }
    }

    /// The model arguments for `checkpoint` (a tag or a path).
    fn model_args(&self, checkpoint: &str) -> Vec<String> {
        vec![
            "--visual-model".into(),
            self.model.clone(),
            "--checkpoint".into(),
            checkpoint.into(),
            "--model-config".into(),
            s(&self.config),
            "--model-cache-dir".into(),
            s(&self.root.join("hub")),
        ]
    }

    /// `embed --raw` of `images`: the image features, the file's metadata and the log.
    fn embed(
        &self,
        checkpoint: &str,
        engine: &str,
        images: &[String],
    ) -> (Tensor, HashMap<String, String>, String) {
        let out = self.root.join("f.safetensors");
        let o = bin()
            .arg("embed")
            .args(self.model_args(checkpoint))
            .args(["--engine", engine, "--raw", "--out", &s(&out), "--images"])
            .args(images)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{log}");
        let bytes = std::fs::read(&out).unwrap();
        let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = m.metadata().clone().unwrap_or_default();
        let t = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
        (t["image_features"].clone(), meta, log)
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Apple's DFN tags (`--visual-model ViT-H-14 --checkpoint dfn5b`) are evaluated by open_clip
/// with `resize_mode='squash'`: images resized to the model's size on both sides, not centre
/// cropped. Here the tiny ViT stands for ViT-H-14 in a hub cache; its features are open_clip's
/// with that resize (scripts/dev/squash_reference.py), on both engines, and the result says so.
#[test]
fn dfn_tags_are_squashed_as_open_clip_squashes_them() {
    let (images, want) = open_clip_reference("squash.json");
    let dir = tempfile::tempdir().unwrap();
    let hub = TinyInHub::new(dir.path(), "apple/DFN5B-CLIP-ViT-H-14", "ViT-H-14");
    for engine in ["native", "candle"] {
        let (ours, meta, log) = hub.embed("dfn5b", engine, &images);
        assert_rows_close(&ours, &want, &format!("squash, {engine}"));
        assert_eq!(meta.get("resize_mode").map(String::as_str), Some("squash"));
        assert!(log.contains("`squash`"), "{log}");
        // The weights were trained with QuickGELU; ViT-H-14 computes GELU, as in open_clip.
        assert!(log.contains("ViT-H-14-quickgelu"), "{log}");
    }
    // eval's result says how the images were resized.
    let (names, templates) = minival_lists(dir.path());
    let o = bin()
        .arg("eval")
        .args(hub.model_args("dfn5b"))
        .args(["--test-data-path", &s(&fixtures().join("minival"))])
        .args(["--classnames", &s(&names), "--templates", &s(&templates)])
        .args(["--no-text-cache", "-q", "--output"])
        .arg(dir.path().join("r.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(r["resize_mode"], "squash");
    assert_eq!(r["pretrained"], "dfn5b");
    // By path, the centre crop: other features, and no resize_mode in the file.
    let (by_path, meta, _) = hub.embed(&s(&hub.weights), "native", &images);
    assert_eq!(meta.get("resize_mode"), None);
    assert!(max_abs_diff(&by_path, &want) > 1e-2);
    // A local-dir model whose preprocess_cfg says squash (as DFN's hub repos do) is squashed;
    // one that says `longest` (open_clip's third mode) gets its features with that resize;
    // `bilinear` (CLIPA's and PE's) resizes with PIL's BILINEAR, squashed or centre-cropped.
    let model_cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clip_dir().join("tiny-clip-vit.json")).unwrap())
            .unwrap();
    let out = dir.path().join("f.safetensors");
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::copy(
        clip_dir().join("tiny-clip-vit.pt"),
        local.join("open_clip_pytorch_model.bin"),
    )
    .unwrap();
    for (mode, interpolation, file) in [
        ("squash", "bicubic", "squash.json"),
        ("longest", "bicubic", "longest.json"),
        ("squash", "bilinear", "bilinear-squash.json"),
        ("shortest", "bilinear", "bilinear-shortest.json"),
    ] {
        let (_, want) = open_clip_reference(file);
        let wrapped = serde_json::json!({
            "model_cfg": model_cfg,
            "preprocess_cfg": {"resize_mode": mode, "interpolation": interpolation},
        });
        std::fs::write(local.join("open_clip_config.json"), wrapped.to_string()).unwrap();
        let o = bin()
            .arg("embed")
            .args(["--visual-model", &format!("local-dir:{}", local.display())])
            .args(["--raw", "--out", &s(&out), "--images"])
            .args(&images)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains(&format!("`{mode}` with {interpolation}")),
            "{err}"
        );
        let ours =
            candle_core::safetensors::load(&out, &Device::Cpu).unwrap()["image_features"].clone();
        assert_rows_close(&ours, &want, &format!("local-dir {mode} {interpolation}"));
    }
    // An interpolation PIL's resize here does not compute is refused, naming it.
    let wrapped = serde_json::json!({
        "model_cfg": model_cfg,
        "preprocess_cfg": {"interpolation": "nearest"},
    });
    std::fs::write(local.join("open_clip_config.json"), wrapped.to_string()).unwrap();
    let o = bin()
        .arg("embed")
        .args(["--visual-model", &format!("local-dir:{}", local.display())])
        .args(["--out", &s(&out), "--images"])
        .args(&images)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("preprocess_cfg.interpolation"), "{err}");
}

/// open_clip's `hf-hub:ORG/NAME` and `local-dir:DIR` model names: the config
/// (`open_clip_config.json`, its `model_cfg` and `preprocess_cfg`) and the weights found
/// together, in a hub cache's snapshot or in the folder (also `--checkpoint ORG/NAME`). Here the
/// tiny ViT with mean and std 0.5 in its preprocess_cfg, so its features are open_clip's with
/// those values.
#[test]
fn open_clip_hub_and_local_dir_models_bring_their_config() {
    let (images, want) = half_normalised_reference();
    let model_cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clip_dir().join("tiny-clip-vit.json")).unwrap())
            .unwrap();
    let wrapped = serde_json::json!({
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    });
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let snap = hub.join("models--someone--tiny-clip/snapshots/r1");
    let local = dir.path().join("local");
    for d in [&snap, &local] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("open_clip_config.json"), wrapped.to_string()).unwrap();
        std::fs::copy(
            clip_dir().join("tiny-clip-vit.pt"),
            d.join("open_clip_pytorch_model.bin"),
        )
        .unwrap();
    }
    let out = dir.path().join("f.safetensors");
    // The repo's id as --checkpoint reads it as its hf-hub: name does.
    for (flag, name) in [
        ("--visual-model", "hf-hub:someone/tiny-clip".to_string()),
        ("--visual-model", format!("local-dir:{}", local.display())),
        ("--checkpoint", "someone/tiny-clip".to_string()),
    ] {
        let o = bin()
            .arg("embed")
            .args([flag, &name, "--model-cache-dir", &s(&hub)])
            .args(["--raw", "--out", &s(&out), "--images"])
            .args(&images)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ours =
            candle_core::safetensors::load(&out, &Device::Cpu).unwrap()["image_features"].clone();
        assert_rows_close(&ours, &want, &name);
    }
    // It brings its own weights: a --checkpoint with it is a usage error.
    let o = bin()
        .arg("embed")
        .args(["--visual-model", "hf-hub:someone/tiny-clip", "--checkpoint"])
        .arg(clip_dir().join("tiny-clip-vit.pt"))
        .args([
            "--model-cache-dir",
            &s(&hub),
            "--text",
            "a",
            "--out",
            &s(&out),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("brings its own config"), "{err}");
    let o = bin()
        .arg("embed")
        .args([
            "--visual-model",
            "hf-hub:someone/absent",
            "--model-cache-dir",
            &s(&hub),
        ])
        .args(["--text", "a", "--out", &s(&out)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("open_clip_config.json is not in"), "{err}");
}

/// A class-vector cache lock left by a killed process of this host (its holder no longer
/// runs) is taken over at once, not waited on for an hour.
#[test]
fn a_cache_lock_of_a_killed_process_is_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let (names, templates) = minival_lists(dir.path());
    let cache = dir.path().join("cache");
    let eval = || {
        let mut c = bin();
        c.arg("eval")
            .args(model_args("tiny-clip-vit"))
            .args(["--test-data-path", &s(&fixtures().join("minival"))])
            .args(["--classnames", &s(&names), "--templates", &s(&templates)])
            .args(["--text-cache", &s(&cache), "--output"])
            .arg(dir.path().join("r.json"));
        c
    };
    let o = eval().output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let me = pyramidclip::util::lock_owner();
    let host = me.split_once('@').unwrap().1;
    std::fs::write(file.with_extension("lock"), format!("{pid}@{host}")).unwrap();
    let mut child = eval().stderr(std::process::Stdio::piped()).spawn().unwrap();
    let t = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed().as_secs() > 120 {
            child.kill().unwrap();
            panic!("eval waited on the lock of a process that is gone");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("another process is computing"), "{err}");
    assert!(file.is_file() && !file.with_extension("lock").exists());
}

/// CLIP_benchmark's `--language ar|cn|it|jp` (`eval --language`): its ImageNet templates in
/// that language, here with three of its ImageNet class names (`--classnames`), on minival
/// with the tiny ViT: every prediction and score equals CLIP_benchmark's own
/// `zero_shot_classifier` through open_clip (scripts/dev/cb_language_reference.py), both engines.
/// Outside ImageNet a language is refused, naming it.
#[test]
fn clip_benchmark_languages_score_as_it_does() {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clip_dir().join("language.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (lang, want) in reference["languages"].as_object().unwrap() {
        let names = dir.path().join(format!("{lang}.txt"));
        let list: Vec<&str> = want["classnames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        std::fs::write(&names, list.join("\n") + "\n").unwrap();
        let logits: Vec<Vec<f64>> = serde_json::from_value(want["logits"].clone()).unwrap();
        for engine in ["native", "candle"] {
            let csv = dir.path().join("p.csv");
            let o = bin()
                .arg("eval")
                .args(model_args("tiny-clip-vit"))
                .args([
                    "--engine",
                    engine,
                    "--language",
                    lang,
                    "--classnames",
                    &s(&names),
                ])
                .args(["--test-data-path", &s(&fixtures().join("minival"))])
                .args(["--no-text-cache", "-q", "--save-predictions", &s(&csv)])
                .args(["--dump-classnames", "--dump-templates", "--output"])
                .arg(dir.path().join("{language}.json"))
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let r: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.path().join(format!("{lang}.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(r["language"], lang.as_str());
            // CLIP_benchmark's --dump_classnames / --dump_templates: what was encoded.
            assert_eq!(r["classnames"], want["classnames"]);
            assert_eq!(
                r["templates"].as_array().map(Vec::len),
                want["templates"].as_u64().map(|n| n as usize)
            );
            let rows = csv_rows(&csv);
            assert_eq!(rows.len(), logits.len());
            for (row, l) in rows.iter().zip(&logits) {
                let mut order: Vec<usize> = (0..l.len()).collect();
                order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
                for (k, &c) in order.iter().enumerate() {
                    assert_eq!(row[2 + k], c.to_string(), "{lang} {engine}: {row:?}");
                    let score: f64 = row[7 + k].parse().unwrap();
                    assert!(
                        (score - l[c] / 100.0).abs() < 1e-5,
                        "{lang} {engine}: {row:?}"
                    );
                }
            }
        }
    }
    let o = bin()
        .arg("eval")
        .args(model_args("tiny-clip-vit"))
        .args(["--language", "jp", "--test-dataset", "cars"])
        .args(["--test-data-path", &s(&fixtures().join("minival"))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--language jp"),
        "{err}"
    );
}

/// `--language en it` evaluates each language in turn, as CLIP_benchmark's list does: each
/// language's files (named by `{language}`) and result lines are what a run with that language
/// alone gives, the images encoded once (the second language scores the first one's
/// features); an output name without `{language}` is a usage error before anything loads.
#[test]
fn several_languages_run_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (names, _) = minival_lists(dir.path());
    let run = |langs: &[&str], tag: &str| {
        let o = bin()
            .arg("eval")
            .args(model_args("tiny-clip-vit"))
            .arg("--language")
            .args(langs)
            .args(["--classnames", &s(&names)])
            .args(["--test-data-path", &s(&fixtures().join("minival"))])
            .args(["--no-text-cache", "--output"])
            .arg(dir.path().join(format!("{tag}-{{language}}.json")))
            .arg("--save-predictions")
            .arg(dir.path().join(format!("{tag}-{{language}}.csv")))
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{log}");
        // The images are encoded once; the later language scores their features.
        let reused = log.matches("image features reused").count();
        assert_eq!(reused, langs.len().min(2) - 1, "{log}");
        String::from_utf8(o.stdout).unwrap()
    };
    let both = run(&["en", "it", "en"], "both");
    let lines: Vec<&str> = both.lines().collect();
    assert_eq!(lines.len(), 2, "{both}");
    for (lang, line) in ["en", "it"].into_iter().zip(lines) {
        let alone = run(&[lang], "alone");
        assert_eq!(line, format!("{lang}\t{}", alone.trim_end()));
        let read = |tag: &str, ext: &str| {
            std::fs::read_to_string(dir.path().join(format!("{tag}-{lang}.{ext}"))).unwrap()
        };
        assert_eq!(read("both", "csv"), read("alone", "csv"), "{lang}");
        let r: serde_json::Value = serde_json::from_str(&read("both", "json")).unwrap();
        assert_eq!(r["language"], lang);
    }
    // Italian's templates are not English's: the two runs computed different scores.
    assert_ne!(
        std::fs::read_to_string(dir.path().join("both-en.csv")).unwrap(),
        std::fs::read_to_string(dir.path().join("both-it.csv")).unwrap()
    );
    let o = bin()
        .arg("eval")
        .args(model_args("tiny-clip-vit"))
        .args(["--language", "en", "cn", "--output", "r.json"])
        .args(["--test-data-path", &s(&fixtures().join("minival"))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--output r.json") && err.contains("{language}"),
        "{err}"
    );
}

/// CLIP_benchmark's `--save_clf` / `--load_clfs`: its own saved classifier (`torch.save`,
/// tests/fixtures/clip/cb_clf_cn.pt, the Chinese one of `clip_benchmark_languages_score_as_it_does`)
/// scores as its prompts do, without encoding them; ours saved as `.pt` and as safetensors
/// load back to the same predictions, averaged as CLIP_benchmark averages them; a classifier
/// for another class count is refused, naming the file.
#[test]
fn classifiers_are_saved_and_loaded_as_clip_benchmark_does() {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clip_dir().join("language.json")).unwrap()).unwrap();
    let cn = &reference["languages"]["cn"];
    let want: Vec<String> = cn["pred_top1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let names = dir.path().join("n.txt");
    std::fs::write(&names, "a\nb\nc\n").unwrap();
    let csv = dir.path().join("p.csv");
    let run = |extra: &[&str]| {
        bin()
            .arg("eval")
            .args(model_args("tiny-clip-vit"))
            .args(["--classnames", &s(&names), "--no-text-cache", "-q"])
            .args(["--test-data-path", &s(&fixtures().join("minival"))])
            .args(["--save-predictions", &s(&csv)])
            .args(extra)
            .output()
            .unwrap()
    };
    let preds = || -> Vec<String> { csv_rows(&csv).iter().map(|r| r[2].clone()).collect() };
    let cb = s(&clip_dir().join("cb_clf_cn.pt"));
    for engine in ["native", "candle"] {
        let o = run(&["--engine", engine, "--load-clfs", &cb]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert_eq!(preds(), want, "{engine}");
    }
    // Ours, both formats, then both loaded together (the same vectors: the same predictions).
    let (pt, st) = (dir.path().join("c.pt"), dir.path().join("c.safetensors"));
    for f in [&pt, &st] {
        assert!(run(&["--save-clf", &s(f)]).status.success());
    }
    let own = preds();
    let out = dir.path().join("r.json");
    let o = run(&["--load-clfs", &s(&pt), &s(&st), "--output", &s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(preds(), own);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(r["load_clfs"], serde_json::json!([s(&pt), s(&st)]));
    let saved = pyramidclip::checkpoint::Checkpoint::open(&pt).unwrap();
    assert_eq!(saved.shape("tensor"), Some(&[24usize, 3][..]));
    // A two-class classifier for the three classes.
    let two = dir.path().join("two.safetensors");
    let t = Tensor::zeros((24, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&HashMap::from([("classifier", t)]), &two).unwrap();
    let o = run(&["--load-clfs", &cb, &s(&two)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("two.safetensors") && err.contains("[24, 3]"),
        "{err}"
    );
}

/// `embed --raw` of `images` and `prompts` with the model arguments `model` on `engine`,
/// held to open_clip's features in `want` (`KEY.image_features_raw`, `KEY.text_features_raw`);
/// returns the log.
pub(crate) fn embed_matches(
    model: &[String],
    engine: &str,
    io: (&[String], &[String]),
    want: &HashMap<String, Tensor>,
    key: &str,
    what: &str,
) -> String {
    let (err, ours) = embed_raw(model, engine, io);
    for (a, b) in [
        ("image_features", "image_features_raw"),
        ("text_features", "text_features_raw"),
    ] {
        let theirs = &want[&format!("{key}.{b}")];
        assert_rows_close(&ours[a], theirs, &format!("{what} {engine}: {a}"));
    }
    err
}

/// Each fixture model's minival top-1, on both engines, equals the reference's
/// (`{name}.minival_top1`, the name's dashes as underscores); `args` gives a model's arguments
/// from its name and file extension.
pub(crate) fn zero_shot_matches(
    want: &HashMap<String, Tensor>,
    models: &[(&str, &str)],
    args: impl Fn(&str, &str) -> Vec<String>,
) {
    for &(name, ext) in models {
        let top1 = want[&format!("{}.minival_top1", name.replace('-', "_"))]
            .to_vec1::<i64>()
            .unwrap();
        for engine in ["native", "candle"] {
            assert_eq!(
                minival_top1(&args(name, ext), engine),
                top1,
                "{name} {engine}"
            );
        }
    }
}

/// Each of `models`' image and text features within the reference's (`KEY.image_features_raw`,
/// `KEY.text_features_raw`), on both engines, found by shapes and by name (`args(name, ext,
/// named)`); `check` sees each run's log.
pub(crate) fn features_match(
    want: &HashMap<String, Tensor>,
    io: (&[String], &[String]),
    models: &[(&str, &str)],
    args: impl Fn(&str, &str, bool) -> Vec<String>,
    check: impl Fn(&str, &str),
) {
    for &(name, ext) in models {
        for named in [false, true] {
            for engine in ["native", "candle"] {
                let key = name.replace('-', "_");
                let what = format!("{name} named {named}");
                let log = embed_matches(&args(name, ext, named), engine, io, want, &key, &what);
                check(name, &log);
            }
        }
    }
}

/// The model arguments for fixture `name` (its file `ext` under the fixtures' `clip/`) with
/// the model-config file `yml`, named (`--visual-model`) or found by shapes.
pub(crate) fn fixture_args(name: &str, ext: &str, yml: &Path, named: bool) -> Vec<String> {
    let mut a = vec![
        "--checkpoint".to_string(),
        s(&clip_dir().join(format!("{name}.{ext}"))),
        "--model-config".into(),
        s(yml),
    ];
    if named {
        a.extend(["--visual-model".into(), name.to_string()]);
    }
    a
}

/// The rows `tokenize` prints for `prompts` with `flags` (`--tokenizer DIR --clean ...`) at
/// context `ctx`.
pub(crate) fn token_rows(flags: &[&str], ctx: usize, prompts: &[String]) -> Vec<Vec<i64>> {
    let o = bin()
        .arg("tokenize")
        .args(flags)
        .args(["--context-length", &ctx.to_string()])
        .args(prompts)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A model named by its tag in a hub cache: `--visual-model MODEL --checkpoint TAG` with the
/// `--model-config` that names it and the `--model-cache-dir`.
pub(crate) fn tag_args(model: &str, tag: &str, config: &Path, hub: &Path) -> Vec<String> {
    ["--visual-model", model, "--checkpoint", tag]
        .map(String::from)
        .into_iter()
        .chain(["--model-config".into(), s(config)])
        .chain(["--model-cache-dir".into(), s(hub)])
        .collect()
}

/// `embed --raw` of `images` and `prompts` with the model arguments `model` on `engine`,
/// which must succeed: its log and its features.
pub(crate) fn embed_raw(
    model: &[String],
    engine: &str,
    (images, prompts): (&[String], &[String]),
) -> (String, HashMap<String, Tensor>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.safetensors");
    let o = bin()
        .arg("embed")
        .args(model)
        .args(["--engine", engine, "--raw", "--out", &s(&out), "--images"])
        .args(images)
        .arg("--text")
        .args(prompts)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{log}");
    (
        log,
        candle_core::safetensors::load(&out, &Device::Cpu).unwrap(),
    )
}

/// [`embed_raw`] on each engine: the engine, its log and its features.
pub(crate) fn embed_on_both_engines(
    model: &[String],
    io: (&[String], &[String]),
) -> Vec<(&'static str, String, HashMap<String, Tensor>)> {
    ["native", "candle"]
        .into_iter()
        .map(|engine| {
            let (log, f) = embed_raw(model, engine, io);
            (engine, log, f)
        })
        .collect()
}

/// Embedding a prompt with `model` fails with exit 4 (a missing tokenizer) and a message
/// holding each of `needles`.
pub(crate) fn load_fails_naming(model: &[String], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .arg("embed")
        .args(model)
        .args(["--out", &s(&dir.path().join("g.safetensors"))])
        .args(["--text", "a photo"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n}: {err}");
    }
}

/// With bf16 products (the native engine's bf16 kernels where the CPU has them, else its
/// fp32 fallback; candle's bf16) each of `models`' feature rows stays within cosine 0.999 of
/// the reference's fp32 one (`KEY.image_features_raw`, `KEY.text_features_raw`).
pub(crate) fn bf16_features_stay_close(
    want: &HashMap<String, Tensor>,
    io: (&[String], &[String]),
    models: &[(&str, &str)],
    args: impl Fn(&str, &str) -> Vec<String>,
) {
    for &(name, ext) in models {
        let mut model = args(name, ext);
        model.extend(["--precision".into(), "bf16".into()]);
        for engine in ["native", "candle"] {
            let (_, ours) = embed_raw(&model, engine, io);
            let key = name.replace('-', "_");
            for (a, b) in [
                ("image_features", "image_features_raw"),
                ("text_features", "text_features_raw"),
            ] {
                let what = format!("{name} {engine} bf16 {a}");
                let cos = row_cosines(&ours[a], &want[&format!("{key}.{b}")], &what);
                let worst = cos.iter().copied().fold(1.0, f64::min);
                assert!(worst >= 0.999, "{what}: cosine {worst}");
            }
        }
    }
}

/// The result JSON of `eval` on minival (no text cache) with the model arguments `model`.
pub(crate) fn minival_result(model: &[String]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let (names, templates) = minival_lists(dir.path());
    let out = dir.path().join("r.json");
    let o = bin()
        .arg("eval")
        .args(model)
        .args(["--test-data-path", &s(&fixtures().join("minival"))])
        .args(["--classnames", &s(&names), "--templates", &s(&templates)])
        .args(["--no-text-cache", "-q", "--output", &s(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

/// `eval`'s top-1 on minival (the fixture manifest's names and templates) with the model
/// arguments `model` on `engine`.
pub(crate) fn minival_top1(model: &[String], engine: &str) -> Vec<i64> {
    let dir = tempfile::tempdir().unwrap();
    let (names, templates) = minival_lists(dir.path());
    let csv = dir.path().join("p.csv");
    let o = bin()
        .arg("eval")
        .args(model)
        .args(["--engine", engine])
        .args(["--test-data-path", &s(&fixtures().join("minival"))])
        .args(["--classnames", &s(&names), "--templates", &s(&templates)])
        .args(["--no-text-cache", "-q", "--save-predictions", &s(&csv)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    csv_rows(&csv)
        .iter()
        .map(|r| r[2].parse().unwrap())
        .collect()
}

/// The fixture manifest's images (as paths) and prompts.
pub(crate) fn fixture_inputs() -> (Vec<String>, Vec<String>) {
    let fm = fixture_manifest();
    let list = |k: &str| -> Vec<String> {
        fm[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    let images = list("images")
        .iter()
        .map(|p| s(&fixtures().join(p)))
        .collect();
    (images, list("prompts"))
}

/// open_clip's CoCa fixtures (`scripts/dev/coca_reference.py`): the expected tensors, the
/// fixture images and the prompts they were computed for.
fn coca_reference() -> (HashMap<String, Tensor>, Vec<String>, Vec<String>) {
    reference_with_prompts("coca.safetensors")
}

/// A dev script's expected tensors (`tests/fixtures/clip/FILE`), the fixture images, and the
/// prompts its metadata lists.
pub(crate) fn reference_with_prompts(
    file: &str,
) -> (HashMap<String, Tensor>, Vec<String>, Vec<String>) {
    let path = clip_dir().join(file);
    let bytes = std::fs::read(&path).unwrap();
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let prompts: Vec<String> =
        serde_json::from_str(&m.metadata().as_ref().unwrap()["prompts"]).unwrap();
    let (images, _) = fixture_inputs();
    let want = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    (want, images, prompts)
}

/// open_clip's CoCa: its image tower's attentional pooler (separate q/k/v weights in
/// `tiny-coca`, the fused `in_proj_weight` in `tiny-coca-square`) and its text tower's class
/// token under the mask its released weights use (prompts with the pad id 0 inside, whose
/// features a corrected mask moves by up to 2.3, and one filling all 76 ids). Both engines, by
/// name and found by shapes, against open_clip's `encode_image` / `encode_text`.
#[test]
fn coca_features_match_open_clip() {
    let (want, images, prompts) = coca_reference();
    for name in ["tiny-coca", "tiny-coca-square"] {
        let mut model = vec![
            "--checkpoint".to_string(),
            s(&clip_dir().join(format!("{name}.pt"))),
            "--model-config".into(),
            s(&clip_dir().join(format!("{name}.json"))),
        ];
        for named in [false, true] {
            if named {
                model.extend(["--visual-model".into(), name.to_string()]);
            }
            for engine in ["native", "candle"] {
                let key = name.replace('-', "_");
                let what = format!("{name} named {named}");
                let io = (&images[..], &prompts[..]);
                let log = embed_matches(&model, engine, io, &want, &key, &what);
                assert!(log.contains("family coca, activation gelu"), "{log}");
            }
        }
    }
}

/// open_clip's CoCa tags (`--visual-model coca_ViT-B-32 --checkpoint laion2b_s13b_b90k`) are
/// read from the hub cache where open_clip puts them; the tiny CoCa stands for coca_ViT-B-32.
#[test]
fn coca_tags_load_from_the_hub_cache() {
    let (want, images, _) = coca_reference();
    let dir = tempfile::tempdir().unwrap();
    let hub = TinyInHub::of(
        "tiny-coca",
        dir.path(),
        "laion/CoCa-ViT-B-32-laion2B-s13B-b90k",
        "coca_ViT-B-32",
    );
    for engine in ["native", "candle"] {
        let (ours, _, log) = hub.embed("laion2b_s13b_b90k", engine, &images);
        let what = format!("coca_ViT-B-32 laion2b_s13b_b90k, {engine}");
        assert_rows_close(&ours, &want["tiny_coca.image_features_raw"], &what);
        assert!(log.contains("family coca"), "{log}");
    }
}

/// `eval` of the CoCa fixtures on minival: open_clip's zero-shot top-1 (its classifier from the
/// fixture's templates, `scripts/dev/coca_reference.py`), both engines; the result names the
/// family.
#[test]
fn coca_zero_shot_predicts_as_open_clip() {
    let (want, _, _) = coca_reference();
    for name in ["tiny-coca", "tiny-coca-square"] {
        let top1 = want[&format!("{}.minival_top1", name.replace('-', "_"))]
            .to_vec1::<i64>()
            .unwrap();
        let model = [
            "--checkpoint".to_string(),
            s(&clip_dir().join(format!("{name}.pt"))),
            "--model-config".into(),
            s(&clip_dir().join(format!("{name}.json"))),
        ];
        for engine in ["native", "candle"] {
            assert_eq!(minival_top1(&model, engine), top1, "{name} {engine}");
        }
    }
}

/// open_clip CLIP models with a timm ConvNeXt image tower (`scripts/dev/convnext_reference.py`:
/// tiny trunks registered with timm, the MLP projection with LayerNorm eps 1e-6 and the linear
/// one with 1e-5): features against open_clip's `encode_image` / `encode_text` and minival
/// top-1, both engines, by name and found by shapes (with the notice that the input size is
/// not in the weights).
#[test]
fn convnext_towers_match_open_clip() {
    let path = clip_dir().join("convnext.safetensors");
    let want = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let (images, prompts) = fixture_inputs();
    for name in ["tiny-convnext", "tiny-convnext-linear"] {
        let key = name.replace('-', "_");
        let mut model = vec![
            "--checkpoint".to_string(),
            s(&clip_dir().join(format!("{name}.pt"))),
            "--model-config".into(),
            s(&clip_dir().join("tiny-convnext.yml")),
        ];
        for named in [false, true] {
            if named {
                model.extend(["--visual-model".into(), name.to_string()]);
            }
            for engine in ["native", "candle"] {
                let what = format!("{name} named {named}");
                let io = (&images[..], &prompts[..]);
                let log = embed_matches(&model, engine, io, &want, &key, &what);
                assert_eq!(
                    log.contains("input size is not in its weights"),
                    !named,
                    "{log}"
                );
            }
        }
        let top1 = want[&format!("{key}.minival_top1")]
            .to_vec1::<i64>()
            .unwrap();
        for engine in ["native", "candle"] {
            assert_eq!(minival_top1(&model, engine), top1, "{name} {engine}");
        }
    }
}
