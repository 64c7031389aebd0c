//! `captioning`: CoCa captions as open_clip's `generate` gives them and CLIP_benchmark decodes
//! them, scored as pycocoevalcap scores them (fixtures from
//! `scripts/dev/coca_caption_reference.py`).

use crate::util::*;
use std::path::Path;

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// `captioning` of the fixture set with `model` (under tests/fixtures/clip), `extra` flags:
/// (exit status, stdout, stderr, result JSON, saved captions).
fn run(
    model: &str,
    extra: &[&str],
    dir: &Path,
) -> (
    std::process::ExitStatus,
    String,
    String,
    Option<serde_json::Value>,
    Vec<serde_json::Value>,
) {
    let clip = fixtures().join("clip");
    let (out, saved) = (dir.join("c.json"), dir.join("c.jsonl"));
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&saved);
    let o = bin()
        .current_dir(fixtures())
        .arg("captioning")
        .arg("--checkpoint")
        .arg(clip.join(model))
        .arg("--model-config")
        .arg(match model {
            "tiny-coca.pt" => clip.join("tiny-coca.json"),
            m if m.ends_with(".pt") => clip.join(m.replace(".pt", ".json")),
            m if m.ends_with(".safetensors") => clip.join(m.replace(".safetensors", ".json")),
            _ => fixtures().join("tiny-models.yml"),
        })
        .args([
            "--captions",
            "captioning/captions_coco.json",
            "--images-root",
            ".",
        ])
        .arg("--output")
        .arg(&out)
        .arg("--save-captions")
        .arg(&saved)
        .args(extra)
        .output()
        .unwrap();
    let json = out.exists().then(|| read_json(&out));
    let lines = std::fs::read_to_string(&saved)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        o.status,
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        json,
        lines,
    )
}

#[test]
fn coca_captions_equal_open_clips_generate_and_score_as_pycocoevalcap() {
    let want = read_json(&fixtures().join("captioning/coca_captions.json"));
    let dir = tempfile::tempdir().unwrap();
    for model in ["tiny-coca-gen", "tiny-coca-eos"] {
        let w = &want[model];
        // The reference's captions, by image (ids cut before the end token).
        let by_image: std::collections::HashMap<&str, (&serde_json::Value, Vec<u64>)> = w["images"]
            .as_array()
            .unwrap()
            .iter()
            .zip(w["5"].as_array().unwrap())
            .map(|(im, r)| {
                let ids: Vec<u64> = r["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .take_while(|&t| t != 49407)
                    .collect();
                (im.as_str().unwrap(), (&r["caption"], ids))
            })
            .collect();
        for engine in ["native", "candle"] {
            for batch in ["5", "64"] {
                let what = format!("{model} {engine} batch {batch}");
                let (status, stdout, err, json, saved) = run(
                    &format!("{model}.pt"),
                    &["--engine", engine, "--batch-size-test", batch],
                    dir.path(),
                );
                assert!(status.success(), "{what}: {err}");
                assert_eq!(saved.len(), 12, "{what}");
                for row in &saved {
                    let image = row["image"].as_str().unwrap().trim_start_matches("./");
                    let (caption, ids) = &by_image[image];
                    assert_eq!(&row["caption"], *caption, "{what}: {image}");
                    let ours: Vec<u64> = row["ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap())
                        .collect();
                    assert_eq!(&ours, ids, "{what}: {image}");
                    assert!(!row["references"].as_array().unwrap().is_empty());
                }
                let json = json.unwrap();
                for (k, theirs) in w["metrics"].as_object().unwrap() {
                    let theirs = theirs.as_f64().unwrap();
                    match json["metrics"][k].as_f64() {
                        Some(ours) => assert!(
                            (ours - theirs).abs() <= 1e-12 * theirs.abs(),
                            "{what}: {k} {ours} vs {theirs}"
                        ),
                        None => assert_eq!(k, "METEOR", "{what}: {k} missing"),
                    }
                }
                assert_eq!(json["not_computed"], serde_json::json!(["METEOR", "SPICE"]));
                assert_eq!(json["task"], "captioning");
                assert_eq!(json["num_images"], 12);
                assert_eq!(json["generation"]["num_beams"], 6);
                assert!(stdout.contains("Captioning\tBleu_1 "), "{stdout}");
            }
        }
    }
    // The end token's bias ends some captions early: the two models' differ.
    let ended = |m: &str| {
        want[m]["5"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["ids"].as_array().unwrap().contains(&49407.into()))
            .count()
    };
    assert_eq!(ended("tiny-coca-gen"), 0);
    assert!(ended("tiny-coca-eos") >= 2);
}

#[test]
fn captioning_needs_a_coca_with_its_decoder_and_valid_options() {
    let dir = tempfile::tempdir().unwrap();
    // A CLIP model: no decoder to caption with.
    let (status, _, err, json, _) = run("../tiny-ViT.pth.tar", &[], dir.path());
    assert_eq!(status.code(), Some(4), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("not a CoCa model"),
        "{err}"
    );
    assert!(json.is_none());
    // A CoCa whose decoder cannot run (open_clip's needs one width throughout).
    let (status, _, err, _, _) = run("tiny-coca.pt", &[], dir.path());
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(
        err.contains("building the captioning decoder failed"),
        "{err}"
    );
    // A CoCa checkpoint saved without its decoder.
    let full = dir.path().join("full.safetensors");
    let o = bin()
        .arg("convert")
        .arg(fixtures().join("clip/tiny-coca-gen.pt"))
        .arg(&full)
        .arg("--model-config")
        .arg(fixtures().join("clip/tiny-coca-gen.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&full).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("text_decoder."))
        .collect();
    assert!(kept.len() < st.len());
    let stripped = dir.path().join("tiny-coca-gen.safetensors");
    safetensors::serialize_to_file(kept, None, &stripped).unwrap();
    std::fs::copy(
        fixtures().join("clip/tiny-coca-gen.json"),
        dir.path().join("tiny-coca-gen.json"),
    )
    .unwrap();
    let (status, _, err, _, _) = run(stripped.to_str().unwrap(), &[], dir.path());
    assert_eq!(status.code(), Some(4), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("no captioning decoder (`text_decoder.*`)"),
        "{err}"
    );
    // transformers' and open_clip's own checks on the beam search.
    for bad in [
        &["--num-beam-groups", "4"][..],
        &["--num-beams", "1"],
        &["--seq-len", "5"],
        // As `retrieval`: a COCO file has no splits.
        &["--split", "val"],
    ] {
        let (status, _, err, _, _) = run("tiny-coca-gen.pt", bad, dir.path());
        assert_eq!(status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.starts_with("error: --"), "{err}");
    }
}

/// `dev random-checkpoint` writes a CoCa's captioning decoder with the rest (what the GPU
/// captioning check runs on), and both engines caption from it alike.
#[test]
fn a_random_coca_checkpoint_captions_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixtures().join("clip/tiny-coca-gen.json");
    let ckpt = dir.path().join("tiny-coca-gen.safetensors");
    let o = bin()
        .args([
            "dev",
            "random-checkpoint",
            "--visual-model",
            "tiny-coca-gen",
        ])
        .arg("--model-config")
        .arg(&config)
        .arg(&ckpt)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::copy(&config, dir.path().join("tiny-coca-gen.json")).unwrap();
    let mut ids = Vec::new();
    for engine in ["native", "candle"] {
        let (status, _, err, json, saved) =
            run(ckpt.to_str().unwrap(), &["--engine", engine], dir.path());
        assert!(status.success(), "{engine}: {err}");
        assert_eq!(json.unwrap()["engine"], engine);
        assert_eq!(saved.len(), 12, "{engine}");
        let these: Vec<serde_json::Value> = saved.iter().map(|r| r["ids"].clone()).collect();
        // Random weights still make captions: some ids after the start token.
        assert!(these.iter().any(|v| !v.as_array().unwrap().is_empty()));
        ids.push(these);
    }
    assert_eq!(ids[0], ids[1]);
}
