//! CLIP checkpoints in transformers' `CLIPModel` layout (scripts/dev/hf_clip_reference.py):
//! `tiny-hf-clip/` (GELU, 16-wide image heads, `model.safetensors`, a preprocessor config with
//! its own mean and std) and `tiny-hf-clip-openai/` (no `hidden_act`: transformers' QuickGELU
//! default; 8-wide heads; the legacy `eos_token_id` 2; `pytorch_model.bin`). Both engines,
//! as a folder and as its weights file, against transformers' `get_image_features` /
//! `get_text_features` and their zero-shot top-1.

use crate::clip::{
    bf16_features_stay_close, clip_dir, features_match, reference_with_prompts, s,
    zero_shot_matches,
};
use crate::util::*;
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// (folder, weights file in it)
const MODELS: [(&str, &str); 2] = [
    ("tiny-hf-clip", "model.safetensors"),
    ("tiny-hf-clip-openai", "pytorch_model.bin"),
];

fn reference() -> (HashMap<String, Tensor>, Vec<String>, Vec<String>) {
    reference_with_prompts("hf-clip.safetensors")
}

/// `--checkpoint` as the folder, or (`file`) as the weights file inside it.
fn args(name: &str, weights: &str, file: bool) -> Vec<String> {
    let dir = clip_dir().join(name);
    let p = if file { dir.join(weights) } else { dir };
    vec!["--checkpoint".into(), s(&p)]
}

fn embed_text(checkpoint: &Path) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    bin()
        .arg("embed")
        .args(["--checkpoint", &s(checkpoint), "--text", "a photo"])
        .args(["--out", &s(&dir.path().join("f.safetensors"))])
        .output()
        .unwrap()
}

/// A copy of fixture folder `name` in `into`, with `edit` applied to its `config.json` text.
fn edited_copy(name: &str, into: &Path, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let from = clip_dir().join(name);
    let to = into.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    let cfg = to.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, edit(&text)).unwrap();
    to
}

/// Image and text features within transformers', both engines, from the folder and from its
/// weights file: the keys renamed, q/k/v stacked and the projections transposed, the
/// activation and heads from `config.json` (its defaults where it is silent), the mean and std
/// from `preprocessor_config.json`.
#[test]
fn transformers_clip_features_match_transformers() {
    let (want, images, prompts) = reference();
    let io = (&images[..], &prompts[..]);
    features_match(&want, io, &MODELS, args, |name, log| {
        let act = if name == "tiny-hf-clip" {
            "family clip, activation gelu"
        } else {
            "family clip, activation quickgelu"
        };
        assert!(log.contains(act), "{log}");
        assert!(log.contains("transformers CLIPModel layout"), "{log}");
        assert!(!log.contains("heads cannot be read"), "{log}");
    });
}

#[test]
fn transformers_clip_zero_shot_predicts_as_transformers() {
    let (want, _, _) = reference();
    zero_shot_matches(&want, &MODELS, |name, w| args(name, w, false));
}

#[test]
fn transformers_clip_bf16_features_stay_close() {
    let (want, images, prompts) = reference();
    bf16_features_stay_close(&want, (&images, &prompts), &MODELS, |name, w| {
        args(name, w, false)
    });
}

/// `inspect` names the layout and takes the heads and activation from `config.json`;
/// `convert` writes the weights in OpenAI's layout, which then loads to the same features.
#[test]
fn transformers_clip_inspects_and_converts() {
    let dir = clip_dir().join("tiny-hf-clip");
    let o = bin()
        .args(["inspect", "--json", &s(&dir)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["layout"], "transformers CLIPModel", "{v}");
    assert_eq!(v["activation"], "gelu", "{v}");
    assert_eq!(v["config"]["vision_heads"], 2, "{v}");
    assert_eq!(v["config"]["transformer_heads"], 2, "{v}");
    assert!(v["activation_notice"].is_null(), "{v}");

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("openai-layout.safetensors");
    let openai = clip_dir().join("tiny-hf-clip-openai");
    let o = bin()
        .args(["convert", &s(&openai), &s(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(st["visual.proj"].dims(), &[32, 24]);
    assert_eq!(
        st["visual.transformer.resblocks.0.attn.in_proj_weight"].dims(),
        &[96, 32]
    );
    assert!(!st.keys().any(|k| k.contains("vision_model")));
    // The converted file keeps the heads and activation, so its features are the folder's.
    let (want, images, prompts) = reference();
    let (_, ours) = crate::clip::embed_raw(
        &["--checkpoint".into(), s(&out)],
        "native",
        (&images, &prompts),
    );
    for (a, b) in [
        ("image_features", "tiny_hf_clip_openai.image_features_raw"),
        ("text_features", "tiny_hf_clip_openai.text_features_raw"),
    ] {
        assert_rows_close(&ours[a], &want[b], &format!("converted {a}"));
    }
}

/// Bad transformers folders fail with one line naming the folder and the cause, exit 4.
#[test]
fn transformers_clip_bad_folders_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (
            edited_copy("tiny-hf-clip", &tmp.path().join("act"), |t| {
                t.replace("\"gelu\"", "\"silu\"")
            }),
            "hidden_act `silu` is not implemented",
        ),
        (
            edited_copy("tiny-hf-clip", &tmp.path().join("eps"), |t| {
                t.replace("1e-05", "1e-06")
            }),
            "layer_norm_eps 1e-6 is not implemented",
        ),
        (
            edited_copy("tiny-hf-clip", &tmp.path().join("json"), |t| {
                t.replacen('{', "[", 1)
            }),
            "not valid JSON",
        ),
        (
            edited_copy("tiny-hf-clip", &tmp.path().join("mixed"), |t| {
                t.replacen("\"gelu\"", "\"quick_gelu\"", 1)
            }),
            "differs from the text tower's",
        ),
    ];
    // A shard index without its map, and a folder without weights.
    let sharded = tmp.path().join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    std::fs::write(sharded.join("model.safetensors.index.json"), "{}").unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cases = cases;
    cases.push((sharded, "has no `weight_map` object"));
    cases.push((empty, "without `model.safetensors`"));
    for (path, needle) in cases {
        let o = embed_text(&path);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{}: {err}", path.display());
        // One error line, the last (an info line on the normalisation may come first).
        let last = err.trim().lines().last().unwrap_or_default();
        assert_eq!(err.matches("error").count(), 1, "{err}");
        assert!(
            last.starts_with("error:")
                && last.contains(needle)
                && last.contains(&*path.to_string_lossy()),
            "{needle}: {err}"
        );
    }
}

/// `--checkpoint ORG/NAME` finds the folder where transformers downloaded it in the hub cache
/// (its features are the folder's, its mean and std too); one not downloaded is refused
/// naming the cache.
#[test]
fn transformers_clip_by_hub_id() {
    let hub = tempfile::tempdir().unwrap();
    let snap = hub_snapshot(hub.path(), "someorg/tiny-hf-clip");
    for e in std::fs::read_dir(clip_dir().join("tiny-hf-clip")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), snap.join(e.file_name())).unwrap();
    }
    let (want, images, prompts) = reference();
    let model = [
        "--checkpoint",
        "someorg/tiny-hf-clip",
        "--model-cache-dir",
        &s(hub.path()),
    ]
    .map(String::from);
    crate::clip::embed_matches(
        &model,
        "native",
        (&images, &prompts),
        &want,
        "tiny_hf_clip",
        "by hub id",
    );
    let o = bin()
        .args(["embed", "--text", "a photo", "--out"])
        .arg(hub.path().join("f.safetensors"))
        .args(["--checkpoint", "someorg/not-here", "--model-cache-dir"])
        .arg(hub.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("someorg/not-here") && err.contains("hub cache"),
        "{err}"
    );
}

/// Named by a config whose activation is not the one `config.json` states, the name wins and
/// the load says so; named with the stated one, nothing is said.
#[test]
fn transformers_clip_named_with_another_activation_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("models.yml");
    std::fs::write(
        &cfg,
        "tiny-hf:\n  embed_dim: 24\n  image_resolution: 64\n  vision_layers: 2\n  vision_width: 32\n  vision_patch_size: 16\n  vision_heads: 4\n  context_length: 77\n  vocab_size: 49408\n  transformer_width: 16\n  transformer_heads: 2\n  transformer_layers: 2\n",
    )
    .unwrap();
    let folder = clip_dir().join("tiny-hf-clip-openai");
    for (name, act, noticed) in [
        ("tiny-hf", "gelu", true),
        ("tiny-hf-quickgelu", "quickgelu", false),
    ] {
        let o = bin()
            .args(["inspect", &s(&folder), "--json", "--visual-model", name])
            .arg("--model-config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["activation"], act, "{v}");
        let notice = v["activation_notice"].as_str().unwrap_or_default();
        assert_eq!(
            notice.contains("states the activation quickgelu"),
            noticed,
            "{v}"
        );
    }
}

/// A folder of shards (`model.safetensors.index.json` naming each key's file) reads as the
/// one file; an index naming a key no shard holds is refused.
#[test]
fn transformers_clip_shards_read_as_one_file() {
    let tmp = tempfile::tempdir().unwrap();
    let from = clip_dir().join("tiny-hf-clip");
    let dir = tmp.path().join("sharded");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(from.join(f), dir.join(f)).unwrap();
    }
    let all =
        candle_core::safetensors::load(from.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let mut map = serde_json::Map::new();
    for (shard, text) in [
        ("model-00001-of-00002.safetensors", true),
        ("model-00002-of-00002.safetensors", false),
    ] {
        let part: HashMap<String, Tensor> = all
            .iter()
            .filter(|(k, _)| k.starts_with("text_model.") == text)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for k in part.keys() {
            map.insert(k.clone(), shard.into());
        }
        candle_core::safetensors::save(&part, dir.join(shard)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    let index_path = dir.join("model.safetensors.index.json");
    std::fs::write(&index_path, index.to_string()).unwrap();
    let (want, images, prompts) = reference();
    for engine in ["native", "candle"] {
        crate::clip::embed_matches(
            &["--checkpoint".into(), s(&dir)],
            engine,
            (&images, &prompts),
            &want,
            "tiny_hf_clip",
            "sharded",
        );
    }
    let mut index = index;
    index["weight_map"]["extra.weight"] = "model-00002-of-00002.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let o = embed_text(&dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("extra.weight") && err.contains("no shard holds"),
        "{err}"
    );
}

/// `bench --checkpoint FOLDER` without `--visual-model` runs what the folder holds.
#[test]
fn transformers_clip_benchmarks_as_detected() {
    for what in ["image", "text"] {
        let o = bin()
            .args(["bench", "--checkpoint"])
            .arg(clip_dir().join("tiny-hf-clip"))
            .args([
                "--what",
                what,
                "--seconds",
                "0.05",
                "--batch-size",
                "2",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["model"], "custom", "{v}");
    }
}

/// Another checkpoint in a transformers folder (open_clip's weights in the same hub snapshot)
/// keeps its own normalisation: the folder's preprocessor config is not applied to it.
#[test]
fn other_weights_in_a_transformers_folder_keep_their_normalisation() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = edited_copy("tiny-hf-clip", tmp.path(), str::to_string);
    let other = folder.join("open_clip_pytorch_model.bin");
    std::fs::copy(clip_dir().join("tiny-clip-vit.pt"), &other).unwrap();
    let said = |p: &Path| {
        let o = embed_text(p);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        err.contains("preprocessor_config.json")
    };
    assert!(said(&folder));
    assert!(!said(&other));
}
