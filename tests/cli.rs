//! The binary, run as a user would, on the fixtures.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    bin().args(args).envs(env.iter().copied()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap())
        .unwrap()
}

fn write_lines(dir: &Path, name: &str, lines: &[serde_json::Value]) -> PathBuf {
    let p = dir.join(name);
    let body: Vec<&str> = lines.iter().map(|v| v.as_str().unwrap()).collect();
    std::fs::write(&p, body.join("\n") + "\n").unwrap();
    p
}

fn assert_no_panic(o: &Output) {
    let e = stderr(o);
    assert!(
        !e.contains("panicked") && !e.contains("RUST_BACKTRACE"),
        "panic in stderr: {e}"
    );
}

fn minival_parity(model: &str, file: &str, engine: &str) {
    minival_parity_in(model, file, engine, "fp32", None);
}

/// The reference's minival predictions and scores from `eval` in `precision` (scores within
/// 1e-4 in fp32, 2e-2 in bf16); `bf16_kernels` sets PYRAMIDCLIP_BF16 (Some(false): the fp32
/// fallback, which must say so).
fn minival_parity_in(
    model: &str,
    file: &str,
    engine: &str,
    precision: &str,
    bf16_kernels: Option<bool>,
) {
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let names = write_lines(dir.path(), "names.txt", m["classnames"].as_array().unwrap());
    let templates = write_lines(
        dir.path(),
        "templates.txt",
        m["templates"].as_array().unwrap(),
    );
    let out = dir.path().join("r.json");
    let preds = dir.path().join("p.csv");
    let o = run_env(
        &[
            "eval",
            "--checkpoint",
            &s(&fixtures().join(file)),
            "--model-config",
            &s(&fixtures().join("tiny-models.yml")),
            "--test-data-path",
            &s(&fixtures().join("minival")),
            "--classnames",
            &s(&names),
            "--templates",
            &s(&templates),
            "--output",
            &s(&out),
            "--save-predictions",
            &s(&preds),
            "--text-cache",
            &s(&dir.path().join("cache")),
            "--device",
            "cpu",
            "--engine",
            engine,
            "--precision",
            precision,
            "--quiet",
        ],
        &[(
            "PYRAMIDCLIP_BF16",
            if bf16_kernels == Some(false) {
                "0"
            } else {
                "1"
            },
        )],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(r["engine"], engine, "{r}");
    let bf16_ran = precision == "bf16"
        && bf16_kernels != Some(false)
        && pyramidclip::native::bf16::supported();
    if bf16_ran {
        assert_eq!(
            (r["precision"].as_str(), r["dtype"].as_str()),
            (Some("bf16"), Some("bf16"))
        );
        assert!(r["bf16_kernel"].is_string(), "{r}");
        assert!(r.get("requested_precision").is_none(), "{r}");
    } else {
        assert_eq!(
            (r["precision"].as_str(), r["dtype"].as_str()),
            (Some("fp32"), Some("f32"))
        );
        assert!(r.get("bf16_kernel").is_none(), "{r}");
        if precision == "bf16" {
            // The fallback is announced in one line, with its reason.
            assert_eq!(r["requested_precision"], "bf16", "{r}");
            let why = if pyramidclip::native::bf16::supported() {
                "switched off (PYRAMIDCLIP_BF16=0)"
            } else {
                "no AVX512-BF16"
            };
            assert!(stderr(&o).contains(why), "{}", stderr(&o));
        }
    }
    let tol = if bf16_ran { 2e-2 } else { 1e-4 };
    let want = &m["models"][model];
    assert!(
        (r["top1"].as_f64().unwrap() - want["minival_top1"].as_f64().unwrap()).abs() < 1e-3,
        "{r}"
    );
    assert!(
        (r["top5"].as_f64().unwrap() - want["minival_top5"].as_f64().unwrap()).abs() < 1e-3,
        "{r}"
    );
    assert_eq!(r["num_images"], 6);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Zeroshot\tPrec@1/5 "), "{stdout}");
    // Every image's predicted class, and its scores against the reference logits.
    let csv = std::fs::read_to_string(&preds).unwrap();
    let rows: Vec<Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let pred: Vec<u64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    let want_pred: Vec<u64> = want["minival_pred_top1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(pred, want_pred);
    let logits = expected()[&format!("{}.minival_logits", model.replace('-', "_"))]
        .to_vec2::<f32>()
        .unwrap();
    for (row, l) in rows.iter().zip(&logits) {
        for k in 0..3 {
            let class: usize = row[2 + k].parse().unwrap();
            let score: f32 = row[7 + k].parse().unwrap();
            assert!(
                (score - l[class]).abs() < tol,
                "{precision}: score {score} vs reference {}",
                l[class]
            );
        }
        // Fewer than five classes: the missing columns stay empty.
        assert_eq!(
            (row[5].as_str(), row[6].as_str(), row[11].as_str()),
            ("", "", "")
        );
    }
}

/// bf16 on the native engine (AVX512-BF16, or AMX where the CPU has it) and its announced fp32
/// fallback: the reference's minival predictions either way, and the JSON names what ran (the
/// kernel; `requested_precision` when it fell back).
#[test]
fn minival_bf16_native_and_fallback() {
    for kernels in [true, false] {
        minival_parity_in(
            "tiny-RN",
            "tiny-RN.pth.tar",
            "native",
            "bf16",
            Some(kernels),
        );
        minival_parity_in(
            "tiny-ViT",
            "tiny-ViT.pth.tar",
            "native",
            "bf16",
            Some(kernels),
        );
    }
}

/// `eval --precision bf16` decides its near-ties in fp32: on 256 synthetic images against 256
/// ImageNet class names, every top-1 prediction and the top-1/top-5 accuracy equal the fp32
/// run's; the JSON says how many images were scored again and with what margin. Measured on
/// Zen 4: 152 (tiny-RN) and 50 (tiny-ViT) of 256 rechecked; with the margin set to 0 (fp32
/// class vectors, bf16 decisions) 12 and 4 top-1 predictions differ from fp32, with
/// `--no-recheck` 0 and 28. Where the CPU has no bf16 products the run is fp32 and says
/// nothing of a recheck.
#[test]
fn bf16_eval_decides_near_ties_in_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = run(&[
        "dev",
        "synth",
        &s(&data),
        "--images",
        "256",
        "--classes",
        "256",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // ImageNet's first 256 class names.
    let names = pyramidclip::data::labels::label_set(
        "imagenet",
        pyramidclip::data::labels::NamesFrom::Builtin,
        pyramidclip::data::labels::Language::En,
    )
    .unwrap()
    .unwrap()
    .classnames[..256]
        .to_vec();
    let names_path = dir.path().join("names.txt");
    std::fs::write(&names_path, names.join("\n") + "\n").unwrap();
    let templates = dir.path().join("templates.txt");
    std::fs::write(&templates, "a photo of a {}.\n").unwrap();
    let bf16 = pyramidclip::native::bf16::supported();
    for model in ["tiny-RN", "tiny-ViT"] {
        let eval = |precision: &str, tag: &str, extra: &[&str]| {
            let out = dir.path().join(format!("{model}-{tag}.json"));
            let preds = dir.path().join(format!("{model}-{tag}.csv"));
            let ckpt = s(&fixtures().join(format!("{model}.pth.tar")));
            let mut args = vec!["eval", "-e", &ckpt, "--model-config"];
            let cfg = s(&fixtures().join("tiny-models.yml"));
            let data = s(&data);
            let (names, templates, out_s, preds_s) =
                (s(&names_path), s(&templates), s(&out), s(&preds));
            args.extend([
                cfg.as_str(),
                "--test-data-path",
                &data,
                "--classnames",
                &names,
                "--templates",
                &templates,
                "--no-text-cache",
                "--batch-size-test",
                "16",
                "--precision",
                precision,
                "--output",
                &out_s,
                "--save-predictions",
                &preds_s,
                "--device",
                "cpu",
                "--quiet",
            ]);
            args.extend(extra);
            // The bf16 kernels wherever the CPU has them, even where fp32 would be faster.
            let o = run_env(&args, &[("PYRAMIDCLIP_BF16", "1")]);
            assert!(o.status.success(), "{}", stderr(&o));
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
            let top1: Vec<String> = std::fs::read_to_string(&preds)
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| l.split(',').nth(2).unwrap().to_string())
                .collect();
            (r, top1)
        };
        let (want, want_top1) = eval("fp32", "fp32", &[]);
        let (got, got_top1) = eval("bf16", "bf16", &[]);
        assert_eq!(got_top1.len(), 256);
        assert_eq!(
            got_top1, want_top1,
            "{model}: top-1 predictions differ from fp32"
        );
        assert_eq!(
            (got["top1"].clone(), got["top5"].clone()),
            (want["top1"].clone(), want["top5"].clone())
        );
        assert!(want.get("fp32_recheck").is_none());
        if !bf16 {
            assert!(got.get("fp32_recheck").is_none());
            continue;
        }
        let rc = &got["fp32_recheck"];
        let n = rc["images"].as_u64().unwrap();
        assert!(rc["margin"].as_f64().unwrap() > 0.0, "{rc}");
        assert_eq!(rc["class_vectors"], "fp32");
        // Some images, not all: the margin separates close calls from clear ones.
        assert!(n > 0 && n < 256, "{model}: {rc}");
        let (raw, _) = eval("bf16", "raw", &["--no-recheck"]);
        assert!(raw.get("fp32_recheck").is_none());
        assert_eq!(raw["precision"], "bf16");
    }
}

#[test]
fn minival_parity_tiny_rn() {
    minival_parity("tiny-RN", "tiny-RN.pth.tar", "native");
}

#[test]
fn minival_parity_tiny_vit() {
    minival_parity("tiny-ViT", "tiny-ViT.pth.tar", "native");
}

#[test]
fn minival_parity_tiny_rn_candle() {
    minival_parity("tiny-RN", "tiny-RN.pth.tar", "candle");
}

#[test]
fn minival_parity_tiny_vit_candle() {
    minival_parity("tiny-ViT", "tiny-ViT.pth.tar", "candle");
}

/// `embed` on both engines and in reduced precision on the CPU: features close to the
/// reference's, the engine, dtype and precision that ran in the metadata; the log line names
/// the engine and dtype.
/// `eval` with several checkpoints (CLIP_benchmark's list of models): each model's result and
/// predictions are the reference's, named by the output template; bad combinations are usage
/// errors before anything loads, and the other commands take one checkpoint.
#[test]
fn eval_evaluates_several_checkpoints_in_one_run() {
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = write_lines(d, "names.txt", m["classnames"].as_array().unwrap());
    let templates = write_lines(d, "templates.txt", m["templates"].as_array().unwrap());
    let (rn, vit) = (
        s(&fixtures().join("tiny-RN.pth.tar")),
        s(&fixtures().join("tiny-ViT.pth.tar")),
    );
    let eval_env = |extra: &[&str], env: &[(&str, &str)]| {
        let mut a = vec![
            "eval".to_string(),
            "--model-config".into(),
            s(&fixtures().join("tiny-models.yml")),
            "--test-data-path".into(),
            s(&fixtures().join("minival")),
            "--classnames".into(),
            s(&names),
            "--templates".into(),
            s(&templates),
            "--no-text-cache".into(),
            "-q".into(),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run_env(&a, env)
    };
    let eval = |extra: &[&str]| eval_env(extra, &[]);
    let out = s(&d.join("{dataset}_{model}_{pretrained}.json"));
    let preds = s(&d.join("{model}.csv"));
    let o = eval(&[
        "--checkpoint",
        &rn,
        &vit,
        "--output",
        &out,
        "--save-predictions",
        &preds,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // One summary line per model, each led by its checkpoint's file name.
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("tiny-RN.pth.tar\tImageNet Zeroshot"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("tiny-ViT.pth.tar\t"), "{stdout}");
    for model in ["tiny-RN", "tiny-ViT"] {
        let r: serde_json::Value = serde_json::from_slice(
            &std::fs::read(d.join(format!("imagenet_{model}_{model}.pth.tar.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(r["model"], model);
        let want = &m["models"][model];
        assert!(
            (r["top1"].as_f64().unwrap() - want["minival_top1"].as_f64().unwrap()).abs() < 1e-3
        );
        let csv = std::fs::read_to_string(d.join(format!("{model}.csv"))).unwrap();
        let pred: Vec<u64> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
            .collect();
        let want_pred: Vec<u64> = want["minival_pred_top1"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(pred, want_pred, "{model}");
    }
    // --skip-existing per model: only the removed file is computed again.
    std::fs::remove_file(d.join("imagenet_tiny-ViT_tiny-ViT.pth.tar.json")).unwrap();
    let o = eval(&[
        "--checkpoint",
        &rn,
        &vit,
        "--output",
        &out,
        "--skip-existing",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.starts_with("tiny-ViT.pth.tar\t") && stdout.lines().count() == 1,
        "{stdout}"
    );
    // --distributed: CLIP_benchmark's shuffle of the two runs (seed 0) keeps their order, so
    // process 0 of 2 runs the first checkpoint, process 1 (here from the launcher's variables)
    // the second; each run sees every image and writes what the undistributed run wrote.
    let dist = d.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    let dist_out = s(&dist.join("{dataset}_{model}.json"));
    let mut args = vec!["--checkpoint", &rn, &vit, "--output", &dist_out];
    args.extend(["--distributed", "--shard", "0/2"]);
    let o = eval(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.starts_with("tiny-RN.pth.tar\t") && stdout.lines().count() == 1,
        "{stdout}"
    );
    let args = [
        "--checkpoint",
        &rn,
        &vit,
        "--output",
        &dist_out,
        "--distributed",
    ];
    let o = eval_env(&args, &[("RANK", "1"), ("WORLD_SIZE", "2")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.starts_with("tiny-ViT.pth.tar\t") && stdout.lines().count() == 1,
        "{stdout}"
    );
    for model in ["tiny-RN", "tiny-ViT"] {
        let read = |p: PathBuf| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
        };
        let whole = read(d.join(format!("imagenet_{model}_{model}.pth.tar.json")));
        let part = read(dist.join(format!("imagenet_{model}.json")));
        assert_eq!(part["top1"], whole["top1"], "{model}");
        assert_eq!(part["num_images"], whole["num_images"], "{model}");
    }
    // Usage errors, before any model loads.
    let (r_json, m_json) = (s(&d.join("r.json")), s(&d.join("{model}.json")));
    for (extra, msg) in [
        (
            vec!["--checkpoint", &rn, &vit, "--output", &r_json],
            "each needs its own file",
        ),
        (
            vec!["--checkpoint", &rn, &rn, "--output", &m_json],
            "would both write",
        ),
        (
            vec![
                "--checkpoint",
                &rn,
                &vit,
                "--visual-model",
                "tiny-RN",
                "tiny-ViT",
                "RN50",
            ],
            "one per checkpoint",
        ),
        (
            vec![
                "--checkpoint",
                &rn,
                &vit,
                "--shard",
                "0/2",
                "--output-dir",
                "x",
            ],
            "evaluate one checkpoint",
        ),
        (
            vec![
                "--checkpoint",
                &rn,
                &vit,
                "--output",
                &m_json,
                "--distributed",
                "--output-dir",
                "x",
            ],
            "--distributed hands out whole runs",
        ),
        (vec!["--checkpoint", &rn, "no-such.pth"], "no-such.pth"),
    ] {
        let o = eval(&extra);
        let e = stderr(&o);
        assert!(matches!(o.status.code(), Some(2 | 4)), "{extra:?}: {e}");
        assert!(e.contains(msg), "{extra:?}: {e}");
        assert!(o.stdout.is_empty(), "{extra:?}");
    }
    let o = run(&[
        "embed",
        "--checkpoint",
        &rn,
        &vit,
        "--text",
        "a dog",
        "--out",
        &s(&d.join("e.safetensors")),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("eval, retrieval, caption-selection and linear-probe take several"));
}

#[test]
fn embed_reports_and_uses_the_engine_it_was_given() {
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<String> = m["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| s(&fixtures().join(v.as_str().unwrap())))
        .take(4)
        .collect();
    for (engine, precision, dtype) in [
        ("native", "fp32", "f32"),
        ("candle", "fp32", "f32"),
        ("candle", "bf16", "bf16"),
    ] {
        let out = dir.path().join(format!("{engine}-{precision}.safetensors"));
        let mut args = vec![
            "embed".to_string(),
            "-e".into(),
            s(&fixtures().join("tiny-ViT.pth.tar")),
            "--model-config".into(),
            s(&fixtures().join("tiny-models.yml")),
            "--device".into(),
            "cpu".into(),
            "--engine".into(),
            engine.into(),
            "--precision".into(),
            precision.into(),
            "--out".into(),
            s(&out),
            "--images".into(),
        ];
        args.extend(images.iter().cloned());
        let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", stderr(&o));
        let log = format!("engine {engine}, {dtype}");
        assert!(stderr(&o).contains(&log), "{}", stderr(&o));
        let f = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&f).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&f).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta["engine"], engine);
        assert_eq!(meta["precision"], precision);
        assert_eq!(meta["dtype"], dtype);
        assert_eq!(st.tensor("image_features").unwrap().shape()[0], 4);
    }
    // `dev compare` on image-only outputs: the engines agree; a cut file is told apart.
    let native = s(&dir.path().join("native-fp32.safetensors"));
    let o = run(&[
        "dev",
        "compare",
        &native,
        &s(&dir.path().join("candle-fp32.safetensors")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("image_features: 4 rows") && !out.contains("text_features"),
        "{out}"
    );
    let two = s(&dir.path().join("two.safetensors"));
    let ckpt = s(&fixtures().join("tiny-ViT.pth.tar"));
    let yml = s(&fixtures().join("tiny-models.yml"));
    let mut args = vec!["embed", "-e", &ckpt, "--model-config", &yml, "--out", &two];
    args.extend(["--images", &images[0], &images[1]]);
    assert!(run(&args).status.success());
    let o = run(&["dev", "compare", &native, &two]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("rows in"), "{}", stderr(&o));
}

#[test]
fn imagenet_smoke_all_classes_and_cache_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let args = |out: &Path, preds: &Path| -> Vec<String> {
        vec![
            "eval".into(),
            "-e".into(),
            s(&fixtures().join("tiny-RN.pth.tar")),
            "--model_config".into(),
            s(&fixtures().join("tiny-models.yml")),
            "--test_data_path".into(),
            s(&fixtures().join("imagenet-subset")),
            "--test_dataset".into(),
            "imagenet".into(),
            "--batch_size_test".into(),
            "2".into(),
            "--text-cache".into(),
            s(&cache),
            "--output".into(),
            s(out),
            "--save-predictions".into(),
            s(preds),
            "--device".into(),
            "cpu".into(),
        ]
    };
    let (out1, preds1) = (dir.path().join("a.json"), dir.path().join("a.csv"));
    let o = bin().args(args(&out1, &preds1)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("encoding 80000 prompts (1000 classes x 80 templates)"),
        "{}",
        stderr(&o)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out1).unwrap()).unwrap();
    for key in [
        "dataset",
        "model",
        "checkpoint",
        "checkpoint_sha256",
        "num_images",
        "top1",
        "top5",
        "mean_per_class_recall",
        "per_class",
        "skipped",
        "precision",
        "device",
        "batch_size",
        "elapsed_s",
        "images_per_s",
        "version",
    ] {
        assert!(r.get(key).is_some(), "missing {key} in {r}");
    }
    assert_eq!(r["num_images"], 5);
    assert_eq!(r["dataset"], "imagenet");
    let classes: Vec<(String, u64)> = r["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["class"].as_str().unwrap().to_string(),
                c["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        classes,
        vec![
            ("tench".into(), 2),
            ("goldfish".into(), 1),
            ("toilet paper".into(), 2)
        ]
    );
    let csv = std::fs::read_to_string(&preds1).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "path,label,pred1,pred2,pred3,pred4,pred5,score1,score2,score3,score4,score5"
    );
    let labels: Vec<String> = lines
        .map(|l| l.split(',').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(labels, vec!["0", "0", "1", "999", "999"]);
    // The second run reuses the class vectors and gives the same predictions.
    let (out2, preds2) = (dir.path().join("b.json"), dir.path().join("b.csv"));
    let o = bin().args(args(&out2, &preds2)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("loaded from cache"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("encoding 80000"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&preds1).unwrap(),
        std::fs::read_to_string(&preds2).unwrap()
    );
    // The cache file says what computed it.
    let file = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(
        (
            meta["engine"].as_str(),
            meta["precision"].as_str(),
            meta["dtype"].as_str()
        ),
        ("native", "fp32", "f32")
    );
    assert_eq!(
        (meta["classes"].as_str(), meta["templates"].as_str()),
        ("1000", "80")
    );
}

#[test]
fn tokenize_jsonl_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    let cases = std::fs::read_to_string(fixtures().join("tokenizer_cases.jsonl")).unwrap();
    let o = run(&[
        "tokenize",
        "--jsonl",
        &s(&fixtures().join("tokenizer_cases.jsonl")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let mut n = 0;
    for (line, case) in out.lines().zip(cases.lines()) {
        let ours: Vec<i64> = serde_json::from_str(line).unwrap();
        assert_eq!(ours.len(), 77);
        let c: serde_json::Value = serde_json::from_str(case).unwrap();
        let ids: Vec<i64> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(&ours[..ids.len()], &ids[..], "{}", c["text"]);
        assert!(ours[ids.len()..].iter().all(|&x| x == 0));
        n += 1;
    }
    assert_eq!(n, cases.lines().count());
    // Plain arguments, a custom context length and --no-truncate.
    let o = run(&["tokenize", "a photo of a cat.", "--context-length", "10"]);
    assert_eq!(
        String::from_utf8(o.stdout).unwrap().trim(),
        "[49406,320,1125,539,320,2368,269,49407,0,0]"
    );
    let long = "word ".repeat(100);
    let o = run(&["tokenize", &long, "--no-truncate"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("context length is 77"),
        "{}",
        stderr(&o)
    );
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"nottext\": 1}\n").unwrap();
    let o = run(&["tokenize", "--jsonl", &s(&bad)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("bad.jsonl line 1"), "{}", stderr(&o));
}

#[test]
fn preprocess_writes_reference_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("px.safetensors");
    let m = manifest();
    let imgs: Vec<String> = m["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| s(&fixtures().join(p.as_str().unwrap())))
        .collect();
    let mut args = vec![
        "preprocess".to_string(),
        "--resolution".into(),
        "64".into(),
        "--out".into(),
        s(&out),
    ];
    args.extend(imgs);
    let o = bin().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let t = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    let ours = t["pixels"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let theirs = expected_pixels(64)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(ours.len(), theirs.len());
    let exact = ours
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| (*a - *b).abs() < 1e-6)
        .count();
    assert_eq!(
        exact,
        ours.len(),
        "{} of {} values differ",
        ours.len() - exact,
        ours.len()
    );
}

#[test]
fn inspect_identifies_fixtures() {
    let cfg = s(&fixtures().join("tiny-models.yml"));
    for (file, arch, format) in [
        ("tiny-RN.pth.tar", "tiny-RN", "zip"),
        ("tiny-ViT.pth.tar", "tiny-ViT", "zip"),
        ("tiny-ViT.legacy.pth.tar", "tiny-ViT", "legacy"),
    ] {
        let o = run(&[
            "inspect",
            &s(&fixtures().join(file)),
            "--model-config",
            &cfg,
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["architecture"], arch);
        assert_eq!(v["format"], format);
        assert_eq!(v["epoch"], 32);
        assert!(v["unused_keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "logit_scale"));
    }
}

#[test]
fn convert_round_trip_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = s(&fixtures().join("tiny-models.yml"));
    let st = dir.path().join("vit.safetensors");
    let o = run(&[
        "convert",
        &s(&fixtures().join("tiny-ViT.pth.tar")),
        &s(&st),
        "--model-config",
        &cfg,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["inspect", &s(&st), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "safetensors");
    assert_eq!(
        v["architecture"], "tiny-ViT",
        "the architecture travels in the metadata"
    );
    // The same file with its header padded (JSON allows trailing spaces) to a length whose
    // first two bytes read as pickle PROTO 5: still safetensors.
    let padded = dir.path().join("padded.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let want = (n / 0x1_0000 + 1) * 0x1_0000 + 0x580;
    let mut out = (want as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&bytes[8..8 + n]);
    out.resize(8 + want, b' ');
    out.extend_from_slice(&bytes[8 + n..]);
    assert_eq!(out[..2], [0x80, 0x05]);
    std::fs::write(&padded, out).unwrap();
    let img = s(&fixtures().join("images/shapes_rgb.jpg"));
    let mut feats = Vec::new();
    for ck in [s(&fixtures().join("tiny-ViT.pth.tar")), s(&st), s(&padded)] {
        let out = dir.path().join(format!("e{}.safetensors", feats.len()));
        let o = run(&[
            "embed",
            "--checkpoint",
            &ck,
            "--model-config",
            &cfg,
            "--images",
            &img,
            "--text",
            "a cat",
            "--out",
            &s(&out),
            "--device",
            "cpu",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        feats.push(std::fs::read(&out).unwrap());
    }
    let load = |b: &[u8]| {
        let t = safetensors::SafeTensors::deserialize(b).unwrap();
        (
            t.tensor("image_features").unwrap().data().to_vec(),
            t.tensor("text_features").unwrap().data().to_vec(),
        )
    };
    assert_eq!(load(&feats[0]), load(&feats[1]));
    assert_eq!(load(&feats[0]), load(&feats[2]));
}

#[test]
fn module_prefixed_checkpoint_loads_identical_weights() {
    // The reference's own `module.`-prefixed pickle, with the storages of tiny-ViT.pth.tar.
    let dir = tempfile::tempdir().unwrap();
    let pkl = std::fs::read(fixtures().join("tiny-ViT.module-prefix.data.pkl")).unwrap();
    let members: Vec<(String, Vec<u8>)> = read_zip(&fixtures().join("tiny-ViT.pth.tar"))
        .into_iter()
        .map(|(n, d)| {
            let rest = n.split_once('/').unwrap().1.to_string();
            let d = if rest == "data.pkl" { pkl.clone() } else { d };
            (format!("tiny-ViT.module-prefix.pth/{rest}"), d)
        })
        .collect();
    assert!(members.len() > 100);
    let path = dir.path().join("tiny-ViT.module-prefix.pth.tar");
    write_zip(&path, &members);
    let a = pyramidclip::Checkpoint::open(&fixtures().join("tiny-ViT.pth.tar")).unwrap();
    let b = pyramidclip::Checkpoint::open(&path).unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for k in a.keys() {
        assert_eq!(a.read_f32(k).unwrap(), b.read_f32(k).unwrap(), "{k}");
    }
    let o = run(&[
        "inspect",
        &s(&path),
        "--model-config",
        &s(&fixtures().join("tiny-models.yml")),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["architecture"], "tiny-ViT");
}

#[test]
fn shape_mismatch_names_key_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let ck = pyramidclip::Checkpoint::open(&fixtures().join("tiny-ViT.pth.tar")).unwrap();
    let mut tensors = Vec::new();
    for k in ck.keys() {
        let mut t = ck
            .tensor(k, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
        if k == "visual.ln_post.bias" {
            t = candle_core::Tensor::zeros(65, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        }
        tensors.push((k.clone(), t));
    }
    let path = dir.path().join("bad.safetensors");
    pyramidclip::util::write_safetensors(&path, &tensors, None).unwrap();
    let o = run(&[
        "embed",
        "--checkpoint",
        &s(&path),
        "--model-config",
        &s(&fixtures().join("tiny-models.yml")),
        "--text",
        "x",
        "--out",
        &s(&dir.path().join("o.safetensors")),
    ]);
    assert_eq!(o.status.code(), Some(4));
    let e = stderr(&o);
    assert!(
        e.contains("visual.ln_post.bias") && e.contains("[65]") && e.contains("[64]"),
        "{e}"
    );
    assert_no_panic(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

#[test]
fn wrong_architecture_flag_is_refused() {
    let o = run(&[
        "embed",
        "-e",
        &s(&fixtures().join("tiny-RN.pth.tar")),
        "--model-config",
        &s(&fixtures().join("tiny-models.yml")),
        "--visual-model",
        "tiny-ViT",
        "--text",
        "x",
        "--out",
        "/tmp/never.safetensors",
    ]);
    assert_eq!(o.status.code(), Some(4));
    let e = stderr(&o);
    assert!(
        e.contains("holds a ModifiedResNet")
            && e.contains("tiny-RN")
            && e.contains("--visual-model tiny-ViT"),
        "{e}"
    );
    assert_no_panic(&o);
}

/// `bench` arguments for a tiny architecture of the fixtures, CPU, batch 2, JSON out.
fn tiny_bench_args(cfg: &str, model: &str, what: &str, seconds: &str) -> Vec<String> {
    [
        "bench",
        "--visual-model",
        model,
        "--model-config",
        cfg,
        "--what",
        what,
        "--batch-size",
        "2",
        "--seconds",
        seconds,
        "--device",
        "cpu",
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

/// `bench` on the tiny architectures: each measurement reports positive rates, GFLOP/s that
/// follow from them, (on the CPU) the FMA peak it is set against, the fastest batch's rate,
/// the CPU model and the products' blocking.
#[test]
fn bench_reports_rates_and_the_fma_peak() {
    let cfg = s(&fixtures().join("tiny-models.yml"));
    let bench = |model: &str, what: &str| -> serde_json::Value {
        let args = tiny_bench_args(&cfg, model, what, "0.2");
        let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{model} {what}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let num = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k}: {v}"));
    let mut per_image = Vec::new();
    for model in ["tiny-RN", "tiny-ViT"] {
        let r = bench(model, "image");
        assert!(
            num(&r, "images_per_s") > 0.0 && num(&r, "fma_peak_gflops") > 0.0,
            "{r}"
        );
        // The fastest batch is at least as fast as the mean; the CPU is named.
        assert!(
            num(&r, "best_batch_gflops") >= num(&r, "gflops") * 0.999,
            "{r}"
        );
        // The shares: the mean over the peak, and each batch against a window after it.
        let share = num(&r, "gflops") / num(&r, "fma_peak_gflops");
        assert!((num(&r, "fma_peak_share") - share).abs() < 1e-9, "{r}");
        assert!(
            num(&r, "peak_windows") >= 2.0 && num(&r, "fma_peak_share_paired") > 0.0,
            "{r}"
        );
        assert!(
            r["cpu_model"]
                .as_str()
                .is_some_and(|c| c.contains("family") || !cfg!(target_arch = "x86_64")),
            "{r}"
        );
        per_image.push(num(&r, "gflops") / num(&r, "images_per_s"));
    }
    // The FLOP count per image follows the architecture: the ResNet and the ViT differ.
    assert!((per_image[0] - per_image[1]).abs() > 1e-9, "{per_image:?}");
    let t = bench("tiny-ViT", "text");
    assert!(
        num(&t, "prompts_per_s") > 0.0 && num(&t, "gflops") > 0.0,
        "{t}"
    );
    let g = bench("tiny-ViT", "gemm");
    let rows = g["gemm"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{g}");
    assert!(rows.iter().all(|r| num(r, "native_gflops") > 0.0), "{g}");
    assert!(num(&g, "fma_peak_gflops") > 0.0, "{g}");
    assert!(rows.iter().all(|r| r["kernel"] == g["isa"]), "{g}");
    // In bf16 the products run on the bf16 kernel, against its peak; on the fallback (no
    // AVX512-BF16, or PYRAMIDCLIP_BF16=0) on the fp32 kernels, which the report says.
    let mut args = tiny_bench_args(&cfg, "tiny-ViT", "gemm", "0.2");
    args.extend(["--precision", "bf16"].map(String::from));
    for kernels in ["1", "0"] {
        let o = run_env(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[("PYRAMIDCLIP_BF16", kernels)],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let g: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let rows = g["gemm"].as_array().unwrap();
        assert!(rows.iter().all(|r| num(r, "native_gflops") > 0.0), "{g}");
        if kernels == "1" && pyramidclip::native::bf16::supported() {
            assert!(g["bf16_kernel"].is_string(), "{g}");
            assert!(rows.iter().all(|r| r["kernel"] == g["bf16_kernel"]), "{g}");
            assert!(num(&g, "bf16_peak_gflops") > 0.0, "{g}");
        } else {
            assert_eq!(g["requested_precision"], "bf16", "{g}");
            assert!(g.get("bf16_kernel").is_none(), "{g}");
            assert!(rows.iter().all(|r| r["kernel"] == g["isa"]), "{g}");
        }
    }
    // Unswitched, bf16 runs the bf16 kernels only where they outrun fp32 here (AMX, or a
    // `vdpbf16ps` rate at least the FMA rate); else fp32, saying why. The rate is measured
    // again in this process; a ratio near 1 could fall either way and is not judged.
    let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let g: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ratio = pyramidclip::native::bf16::rate_over_fp32();
    if g["bf16_kernel"] == "amx" {
        assert!(g.get("requested_precision").is_none(), "{g}");
    } else if ratio.is_some_and(|r| r < 0.8) {
        assert_eq!(g["precision"], "fp32", "{g}");
        assert!(stderr(&o).contains("fp32 is faster here"), "{}", stderr(&o));
    } else if ratio.is_some_and(|r| r > 1.25) {
        assert_eq!(g["bf16_kernel"], "avx512bf16", "{g}");
    } else if ratio.is_none() {
        assert_eq!(g["requested_precision"], "bf16", "{g}");
    }
    // The blocking that ran is reported, a tuning override included.
    assert!(
        num(&t, "gemm_kc") >= 1.0 && num(&t, "gemm_mc") >= 1.0 && num(&t, "gemm_prefetch") >= 0.0,
        "{t}"
    );
    let args = tiny_bench_args(&cfg, "tiny-ViT", "text", "0.1");
    let o = run_env(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[
            ("PYRAMIDCLIP_GEMM_KC", "48"),
            ("PYRAMIDCLIP_GEMM_MC", "30"),
            ("PYRAMIDCLIP_GEMM_PREFETCH", "96"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            num(&r, "gemm_kc"),
            num(&r, "gemm_mc"),
            num(&r, "gemm_prefetch")
        ),
        (48.0, 30.0, if r["isa"] == "avx512" { 96.0 } else { 0.0 }),
        "{r}"
    );
}

/// `bench --what blocking` stores the blocking it chose for this CPU, and later runs use what
/// the file holds (reported as "tuned"), unless `--gemm-tuned 0` or an explicit `--gemm-kc`
/// says otherwise; a broken file costs a warning, not the run; the features do not depend on
/// the blocking.
#[test]
fn bench_blocking_stores_a_choice_that_later_runs_use() {
    let cache = tempfile::tempdir().unwrap();
    let xdg = s(cache.path());
    let cfg = s(&fixtures().join("tiny-models.yml"));
    let bench = |what: &str, env: &[(&str, &str)]| -> (serde_json::Value, String) {
        let args = tiny_bench_args(&cfg, "tiny-ViT", what, "0.05");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env = env.to_vec();
        env.push(("XDG_CACHE_HOME", &xdg));
        let o = run_env(&args, &env);
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        (serde_json::from_slice(&o.stdout).unwrap(), stderr(&o))
    };
    let (r, _) = bench("image", &[]);
    assert_eq!(r["gemm_blocking"], "default", "{r}");
    let default = (
        r["gemm_kc"].as_u64().unwrap(),
        r["gemm_mc"].as_u64().unwrap(),
    );

    let (t, _) = bench("blocking", &[]);
    let chosen = &t["blocking"]["chosen"];
    assert_eq!(
        t["blocking"]["encoders"],
        serde_json::json!(["tiny-ViT image", "tiny-ViT text"]),
        "{t}"
    );
    assert!(
        !t["blocking"]["scores"].as_array().unwrap().is_empty(),
        "{t}"
    );
    let file = cache.path().join("pyramidclip/gemm-blocking.json");
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let entry = &stored["entries"][0];
    assert_eq!(entry["cpu_model"], t["cpu_model"], "{stored}");
    assert_eq!((&entry["kc"], &entry["mc"]), (&chosen["kc"], &chosen["mc"]));
    let (r, _) = bench("image", &[]);
    assert_eq!(r["gemm_blocking"], "tuned", "{r}");
    assert_eq!(
        (&r["gemm_kc"], &r["gemm_mc"]),
        (&chosen["kc"], &chosen["mc"])
    );

    // What the file holds is what runs: a blocking no family has by default.
    let mut edited = stored.clone();
    edited["entries"][0]["kc"] = 5.into();
    edited["entries"][0]["mc"] = 3.into();
    std::fs::write(&file, serde_json::to_vec(&edited).unwrap()).unwrap();
    let (r, _) = bench("text", &[]);
    assert_eq!(
        (r["gemm_kc"].as_u64(), r["gemm_mc"].as_u64()),
        (Some(5), Some(3)),
        "{r}"
    );
    assert_eq!(r["gemm_blocking"], "tuned", "{r}");
    let (r, _) = bench("text", &[("PYRAMIDCLIP_GEMM_TUNED", "0")]);
    assert_eq!(r["gemm_blocking"], "default", "{r}");
    assert_eq!(
        (
            r["gemm_kc"].as_u64().unwrap(),
            r["gemm_mc"].as_u64().unwrap()
        ),
        default
    );
    let (r, _) = bench("text", &[("PYRAMIDCLIP_GEMM_KC", "7")]);
    assert_eq!(r["gemm_blocking"], "override", "{r}");
    assert_eq!(
        (r["gemm_kc"].as_u64(), r["gemm_mc"].as_u64()),
        (Some(7), Some(3)),
        "{r}"
    );

    // Features with the stored blocking equal the default's, bit for bit.
    let dir = tempfile::tempdir().unwrap();
    let embed = |out: &str, env: &[(&str, &str)]| -> (Vec<u8>, Vec<u8>) {
        let p = dir.path().join(out);
        let mut env = env.to_vec();
        env.push(("XDG_CACHE_HOME", &xdg));
        let o = run_env(
            &[
                "embed",
                "--checkpoint",
                &s(&fixtures().join("tiny-ViT.pth.tar")),
                "--model-config",
                &cfg,
                "--device",
                "cpu",
                "--engine",
                "native",
                "--images",
                &s(&fixtures().join("images/shapes_rgb.jpg")),
                "--text",
                "a photo of a cat.",
                "--out",
                &s(&p),
            ],
            &env,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let b = std::fs::read(&p).unwrap();
        let t = safetensors::SafeTensors::deserialize(&b).unwrap();
        let get = |k| t.tensor(k).unwrap().data().to_vec();
        (get("image_features"), get("text_features"))
    };
    let tuned = embed("tuned.safetensors", &[]);
    let plain = embed("plain.safetensors", &[("PYRAMIDCLIP_GEMM_TUNED", "0")]);
    assert!(tuned == plain, "features differ with the tuned blocking");

    // It tunes the native fp32 products only: anything else is a usage error, said at once.
    for extra in [&["--precision", "bf16"][..], &["--engine", "candle"][..]] {
        let mut args = vec!["bench", "--what", "blocking", "--visual-model", "tiny-ViT"];
        args.extend_from_slice(&["--model-config", &cfg, "--device", "cpu"]);
        args.extend_from_slice(extra);
        let o = run_env(&args, &[("XDG_CACHE_HOME", &xdg)]);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("--what blocking"), "{}", stderr(&o));
        assert_no_panic(&o);
    }

    // A broken file: one warning naming it, the default blocking, exit 0.
    std::fs::write(&file, b"{broken").unwrap();
    let (r, e) = bench("text", &[]);
    assert_eq!(r["gemm_blocking"], "default", "{r}");
    assert!(
        e.contains("gemm-blocking.json") && e.contains("warning"),
        "{e}"
    );
}
