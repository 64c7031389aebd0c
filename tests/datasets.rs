//! Data where users keep it: webdataset shards (CLIP_benchmark's layout and explicit lists),
//! checkpoints found in pretrained_model/, ImageNet variants, upstream's Chinese prompts, and
//! the `results` table.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("manifest.json")).unwrap()).unwrap()
}

fn tiny_rn() -> Vec<String> {
    vec![
        "--checkpoint".into(),
        s(&fixtures().join("tiny-RN.pth.tar")),
        "--model-config".into(),
        s(&fixtures().join("tiny-models.yml")),
    ]
}

/// minival as CLIP_benchmark's webdataset layout: two shards (3 samples each), class names and
/// templates (written with `{c}`, as CLIP_benchmark's files are).
fn minival_wds(dir: &Path) -> PathBuf {
    let m = manifest();
    let root = dir.join("wds");
    std::fs::create_dir_all(root.join("test")).unwrap();
    let files = m["minival"]["files"].as_array().unwrap();
    let targets = m["minival"]["targets"].as_array().unwrap();
    for shard in 0..2 {
        let mut members = Vec::new();
        for i in shard * 3..shard * 3 + 3 {
            let bytes = std::fs::read(fixtures().join(files[i].as_str().unwrap())).unwrap();
            members.push((format!("s{i:05}.jpg"), bytes));
            members.push((format!("s{i:05}.cls"), targets[i].to_string().into_bytes()));
        }
        write_tar(&root.join(format!("test/{shard}.tar")), &members);
    }
    std::fs::write(root.join("test/nshards.txt"), "2\n").unwrap();
    let names: Vec<&str> = m["classnames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    std::fs::write(root.join("classnames.txt"), names.join("\n") + "\n").unwrap();
    let t: Vec<String> = m["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().replace("{}", "{c}"))
        .collect();
    std::fs::write(
        root.join("zeroshot_classification_templates.txt"),
        t.join("\n") + "\n",
    )
    .unwrap();
    root
}

fn preds(csv: &Path) -> Vec<u64> {
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn webdataset_shards_give_the_reference_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let root = minival_wds(dir.path());
    let want: Vec<u64> = manifest()["models"]["tiny-RN"]["minival_pred_top1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let cache = s(&dir.path().join("cache"));
    // The layout, recognised without a flag; its own names and ({c}) templates.
    let (out, csv) = (dir.path().join("w.json"), dir.path().join("w.csv"));
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args([
            "--test-data-path",
            &s(&root),
            "--templates",
            "dataset",
            "--text-cache",
            &cache,
            "-q",
        ])
        .args(["--output", &s(&out), "--save-predictions", &s(&csv)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(preds(&csv), want);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(r["task"], "zeroshot_classification");
    assert_eq!(r["split"], "test");
    assert_eq!(r["num_images"], 6);
    let top1 = r["top1"].as_f64().unwrap();
    assert!((r["metrics"]["acc1"].as_f64().unwrap() - top1 / 100.0).abs() < 1e-12);
    let first = std::fs::read_to_string(&csv).unwrap();
    assert!(
        first.lines().nth(1).unwrap().contains("0.tar/s00000.jpg"),
        "{first}"
    );
    // Another split of the layout by --split; a split it lacks is named.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::rename(root.join("test"), other.join("validation")).unwrap();
    for f in ["classnames.txt", "zeroshot_classification_templates.txt"] {
        std::fs::copy(root.join(f), other.join(f)).unwrap();
    }
    let split_run = |split: &str| {
        bin()
            .arg("eval")
            .args(tiny_rn())
            .args(["--test-data-path", &s(&other), "--split", split])
            .args(["--templates", "dataset", "--text-cache", &cache, "-q"])
            .args(["--output", &s(&out), "--save-predictions", &s(&csv)])
            .output()
            .unwrap()
    };
    let o = split_run("validation");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(preds(&csv), want);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(r["split"], "validation");
    let o = split_run("train");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("train/nshards.txt"), "{}", stderr(&o));
    std::fs::rename(other.join("validation"), root.join("test")).unwrap();
    // An explicit shard list with brace ranges, names and templates from flags.
    let list = format!("{}/test/{{0..1}}.tar", root.display());
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args(["--test-data-path", &list, "--text-cache", &cache, "-q"])
        .args(["--classnames", &s(&root.join("classnames.txt"))])
        .args([
            "--templates",
            &s(&root.join("zeroshot_classification_templates.txt")),
        ])
        .args(["--save-predictions", &s(&csv)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(preds(&csv), want);
    // Sharded by tar shard, then merged: the same predictions.
    let parts = dir.path().join("parts");
    for i in 0..2 {
        let o = bin()
            .arg("eval")
            .args(tiny_rn())
            .args([
                "--test-data-path",
                &s(&root),
                "--templates",
                "dataset",
                "--text-cache",
                &cache,
                "-q",
            ])
            .args(["--shard", &format!("{i}/2"), "--output-dir", &s(&parts)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mut partials: Vec<PathBuf> = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    partials.sort();
    let merged = dir.path().join("m.csv");
    let o = bin()
        .arg("merge")
        .args(&partials)
        .args([
            "--output",
            &s(&dir.path().join("m.json")),
            "--save-predictions",
            &s(&merged),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(preds(&merged), want);
}

#[test]
fn broken_shards_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = minival_wds(dir.path());
    let shard = root.join("test/1.tar");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args(["--test-data-path", &s(&root), "--no-text-cache", "-q"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("1.tar") && !e.contains("panicked"), "{e}");
    // A label out of range names the shard and the sample.
    let root = minival_wds(&dir.path().join("again"));
    write_tar(
        &root.join("test/1.tar"),
        &[
            (
                "k1.jpg".into(),
                std::fs::read(fixtures().join("images/blobs_rgb.jpg")).unwrap(),
            ),
            ("k1.cls".into(), b"7".to_vec()),
        ],
    );
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args(["--test-data-path", &s(&root), "--no-text-cache", "-q"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(
        e.contains("1.tar") && e.contains("sample k1") && e.contains("out of range"),
        "{e}"
    );
}

#[test]
fn checkpoints_are_found_in_pretrained_model() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest();
    let names: Vec<&str> = m["classnames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let names_file = dir.path().join("names.txt");
    std::fs::write(&names_file, names.join("\n")).unwrap();
    let common = |cmd: &mut std::process::Command| {
        cmd.current_dir(dir.path())
            .env_remove("PYRAMIDCLIP_PRETRAINED")
            .args([
                "--test-data-path",
                &s(&fixtures().join("minival")),
                "--no-text-cache",
                "-q",
            ])
            .args(["--classnames", &s(&names_file)]);
    };
    // No file: the error names the folder searched and where the checkpoints are.
    let mut c = bin();
    c.args(["eval", "--visual-model", "RN50"]);
    common(&mut c);
    let o = c.output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{e}");
    assert!(
        e.contains("pretrained_model") && e.contains("RN50") && e.contains("model zoo"),
        "{e}"
    );
    // Upstream's file name in pretrained_model/ (and --local_rank, as the launcher appends it).
    std::fs::create_dir_all(dir.path().join("pretrained_model")).unwrap();
    std::fs::copy(
        fixtures().join("tiny-RN.pth.tar"),
        dir.path()
            .join("pretrained_model/PyramidCLIP-YFCC15MV2-tiny-RN.pth"),
    )
    .unwrap();
    let mut c = bin();
    c.args([
        "eval",
        "--visual-model",
        "tiny-RN",
        "--local_rank=0",
        "--device",
        "cpu",
    ])
    .args(["--model-config", &s(&fixtures().join("tiny-models.yml"))]);
    common(&mut c);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // $PYRAMIDCLIP_PRETRAINED is searched too.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("tiny-ViT.pth.tar"),
        other.path().join("tiny-ViT.pth.tar"),
    )
    .unwrap();
    let mut c = bin();
    c.args(["eval", "--visual-model", "tiny-ViT"])
        .args(["--model-config", &s(&fixtures().join("tiny-models.yml"))]);
    common(&mut c);
    c.env("PYRAMIDCLIP_PRETRAINED", other.path());
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// An ImageNet-R folder (WordNet ids of its 200 classes) is scored over those 200 classes; zh
/// prompts use upstream's Chinese names.
#[test]
fn imagenet_r_is_scored_over_its_200_classes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("r");
    // goldfish (ImageNet 1, ImageNet-R 0) and acorn (ImageNet 988, ImageNet-R 199).
    for (wnid, img) in [
        ("n01443537", "blobs_rgb.jpg"),
        ("n12267677", "shapes_rgb.jpg"),
    ] {
        std::fs::create_dir_all(root.join(wnid)).unwrap();
        std::fs::copy(
            fixtures().join("images").join(img),
            root.join(wnid).join(img),
        )
        .unwrap();
    }
    let t = dir.path().join("t.txt");
    std::fs::write(&t, "a photo of a {}.\n").unwrap();
    // A GIF in a class folder is not part of the dataset (torchvision lists none): warned
    // about, not scored.
    std::fs::copy(
        fixtures().join("images/shapes_gif.gif"),
        root.join("n01443537/anim.gif"),
    )
    .unwrap();
    for lang in ["en", "zh"] {
        let out = dir.path().join("r.json");
        let o = bin()
            .arg("eval")
            .args(tiny_rn())
            .args([
                "--test-data-path",
                &s(&root),
                "--test-dataset",
                "imagenet-r",
                "--zeroshot-type",
                lang,
            ])
            .args([
                "--templates",
                &s(&t),
                "--no-text-cache",
                "-q",
                "--output",
                &s(&out),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("1 GIF file(s) left out"),
            "{}",
            stderr(&o)
        );
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(r["num_images"], 2);
        let pc = r["per_class"].as_array().unwrap();
        let classes: Vec<(u64, &str)> = pc
            .iter()
            .map(|c| (c["index"].as_u64().unwrap(), c["class"].as_str().unwrap()))
            .collect();
        let want = if lang == "en" {
            [(0, "goldfish"), (199, "acorn")]
        } else {
            [(0, "金鱼"), (199, "橡子")]
        };
        assert_eq!(classes, want, "{lang}");
    }
    // A folder outside the subset is named.
    std::fs::create_dir_all(root.join("n01440764")).unwrap();
    std::fs::copy(
        fixtures().join("images/blobs_gray.jpg"),
        root.join("n01440764/x.jpg"),
    )
    .unwrap();
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args([
            "--test-data-path",
            &s(&root),
            "--test-dataset",
            "imagenet-r",
            "--no-text-cache",
            "-q",
        ])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_ne!(o.status.code(), Some(0));
    assert!(e.contains("n01440764") && e.contains("200"), "{e}");
}

#[test]
fn results_tabulates_result_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    std::fs::write(&a, r#"{"task": "zeroshot_classification", "dataset": "imagenet", "model": "RN50", "metrics": {"acc1": 0.5, "acc5": 0.75}}"#).unwrap();
    let b = dir.path().join("b.json");
    // CLIP_benchmark's own format.
    std::fs::write(&b, r#"{"dataset": "flickr30k", "model": "ViT-B-32", "pretrained": "openai", "task": "zeroshot_retrieval", "metrics": {"image_retrieval_recall@5": 0.8, "text_retrieval_recall@5": 0.9}}"#).unwrap();
    let csv = dir.path().join("t.csv");
    // The table on stdout, and the CSV's lines.
    let tabulate = |files: &[&PathBuf]| {
        let o = bin()
            .arg("results")
            .args(files)
            .arg("--csv")
            .arg(&csv)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let t = std::fs::read_to_string(&csv).unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            t.lines().map(String::from).collect::<Vec<_>>(),
        )
    };
    let (out, lines) = tabulate(&[&a, &b]);
    assert!(
        out.contains("imagenet acc1") && out.contains("50.00") && out.contains("ViT-B-32 (openai)"),
        "{out}"
    );
    assert_eq!(lines[0], "model,imagenet acc1,imagenet acc5,flickr30k image_retrieval_recall@5,flickr30k text_retrieval_recall@5");
    assert_eq!(lines[1], "RN50,50.00,75.00,,");
    assert_eq!(lines[2], "ViT-B-32 (openai),,,80.00,90.00");
    // A few-shot probe gets a column of its own.
    let c = dir.path().join("c.json");
    let d = dir.path().join("d.json");
    std::fs::write(&c, r#"{"task": "linear_probe", "dataset": "cifar10", "model": "RN50", "fewshot_k": 4, "metrics": {"lp_acc1": 0.25}}"#).unwrap();
    std::fs::write(&d, r#"{"task": "linear_probe", "dataset": "cifar10", "model": "RN50", "fewshot_k": null, "metrics": {"lp_acc1": 0.5}}"#).unwrap();
    assert_eq!(
        tabulate(&[&c, &d]).1,
        [
            "model,cifar10 4-shot lp_acc1,cifar10 lp_acc1",
            "RN50,25.00,50.00"
        ]
    );
    // The AdamW probe (ours with `fit`, CLIP_benchmark's with `weight_decay` in its metrics)
    // is a column of its own next to the L-BFGS one.
    let g = dir.path().join("g.json");
    let h = dir.path().join("h.json");
    std::fs::write(&g, r#"{"task": "linear_probe", "dataset": "cifar10", "model": "RN50", "fit": "adamw", "metrics": {"lp_acc1": 0.75}}"#).unwrap();
    std::fs::write(&h, r#"{"task": "linear_probe", "dataset": "cifar10", "model": "ViT-B-32", "metrics": {"lp_acc1": 0.625, "weight_decay": 0.01}}"#).unwrap();
    assert_eq!(
        tabulate(&[&d, &g, &h]).1,
        [
            "model,cifar10 lp_acc1,cifar10 (adamw) lp_acc1",
            "RN50,50.00,75.00",
            "ViT-B-32,,62.50"
        ]
    );
    // Another language of one set is a column of its own; English keeps the plain name.
    let e = dir.path().join("e.json");
    let f = dir.path().join("f.json");
    std::fs::write(&e, r#"{"task": "zeroshot_retrieval", "dataset": "crossmodal3600", "language": "en", "model": "RN50", "metrics": {"image_retrieval_recall@5": 0.5, "text_retrieval_recall@5": 0.25}}"#).unwrap();
    std::fs::write(&f, r#"{"task": "zeroshot_retrieval", "dataset": "crossmodal3600", "language": "de", "model": "RN50", "metrics": {"image_retrieval_recall@5": 0.125, "text_retrieval_recall@5": 0.75}}"#).unwrap();
    assert_eq!(
        tabulate(&[&e, &f]).1,
        [
            "model,crossmodal3600 image_retrieval_recall@5,crossmodal3600 text_retrieval_recall@5,crossmodal3600 (de) image_retrieval_recall@5,crossmodal3600 (de) text_retrieval_recall@5",
            "RN50,50.00,25.00,12.50,75.00"
        ]
    );
    // open_clip's row-paired validation metrics (`retrieval --pairing rows`) are another
    // column of the same set, headed by their own names.
    let r = dir.path().join("r.json");
    std::fs::write(&r, r#"{"task": "zeroshot_retrieval", "dataset": "crossmodal3600", "pairing": "rows", "model": "RN50", "metrics": {"text_to_image_R@5": 0.375, "image_to_text_R@5": 0.625, "clip_val_loss": 1.5}}"#).unwrap();
    assert_eq!(
        tabulate(&[&e, &r]).1,
        [
            "model,crossmodal3600 image_retrieval_recall@5,crossmodal3600 text_retrieval_recall@5,crossmodal3600 (rows) text_to_image_R@5,crossmodal3600 (rows) image_to_text_R@5",
            "RN50,50.00,25.00,37.50,62.50"
        ]
    );
    // Two checkpoints of one architecture are two rows; with two classification sets in
    // every row, their mean top-1 closes each row.
    let mut files = Vec::new();
    for (ck, ds, acc1) in [
        ("runs/e10/RN50.pth.tar", "cars", 0.25),
        ("runs/e10/RN50.pth.tar", "flowers", 0.5),
        ("ep32.pth", "cars", 0.375),
        ("ep32.pth", "flowers", 0.625),
    ] {
        let p = dir.path().join(format!("{}-{ds}.json", files.len()));
        let v = serde_json::json!({"task": "zeroshot_classification", "dataset": ds, "model": "RN50",
            "checkpoint": ck, "metrics": {"acc1": acc1, "acc5": 1.0}});
        std::fs::write(&p, v.to_string()).unwrap();
        files.push(p);
    }
    assert_eq!(
        tabulate(&files.iter().collect::<Vec<_>>()).1,
        [
            "model,cars acc1,cars acc5,flowers acc1,flowers acc5,mean acc1 (2 datasets)",
            "RN50 (RN50.pth.tar),25.00,100.00,50.00,100.00,37.50",
            "RN50 (ep32.pth),37.50,100.00,62.50,100.00,50.00"
        ]
    );
    // A model without one of the sets: no mean (it would average different sets).
    assert_eq!(
        tabulate(&files[..3].iter().collect::<Vec<_>>()).1[0],
        "model,cars acc1,cars acc5,flowers acc1,flowers acc5"
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{").unwrap();
    let o = bin().arg("results").arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("bad.json"));
}

/// tests/fixtures/cifar's ImageFolder copy of one split (PNGs written by PIL from the same
/// arrays) with a folder for every class, as the built-in label sets need.
fn cifar_folder(dir: &Path, which: &str, classes: &[String]) -> PathBuf {
    let root = dir.join(which.replace('/', "_"));
    for c in classes {
        std::fs::create_dir_all(root.join(c)).unwrap();
    }
    let src = fixtures().join("cifar/folders").join(which);
    for class in std::fs::read_dir(&src).unwrap() {
        let class = class.unwrap().path();
        for f in std::fs::read_dir(&class).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(
                &f,
                root.join(class.file_name().unwrap())
                    .join(f.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    root
}

/// Prediction rows keyed by `BATCH-INDEX` (the CIFAR row `.../BATCH/INDEX`, or its PNG copy
/// `BATCH-INDEX.png`), without the path.
fn rows_by_image(csv: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (path, rest) = l.split_once(',').unwrap();
            let p = Path::new(path);
            let key = match p.extension() {
                Some(_) => p.file_stem().unwrap().to_string_lossy().into_owned(),
                None => format!(
                    "{}-{}",
                    p.parent().unwrap().file_name().unwrap().to_string_lossy(),
                    p.file_name().unwrap().to_string_lossy()
                ),
            };
            (key, rest.to_string())
        })
        .collect()
}

/// Runs `cmd` with `--save-predictions` and `--output` in `dir`: its prediction rows (by
/// image) and its result JSON.
fn predictions_and_result(
    mut cmd: std::process::Command,
    dir: &Path,
) -> (
    std::collections::BTreeMap<String, String>,
    serde_json::Value,
) {
    let (csv, json) = (dir.join("p.csv"), dir.join("p.json"));
    let o = cmd
        .arg("--save-predictions")
        .arg(&csv)
        .arg("--output")
        .arg(&json)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let r = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (rows_by_image(&csv), r)
}

#[test]
fn cifar_downloads_score_as_their_png_copies() {
    let dir = tempfile::tempdir().unwrap();
    let c10: Vec<String> = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    .map(String::from)
    .to_vec();
    let c100: Vec<String> = (0..100).map(|i| format!("class{i:02}")).collect();
    let vit = [
        "--checkpoint".to_string(),
        s(&fixtures().join("tiny-ViT.pth.tar")),
        "--model-config".into(),
        s(&fixtures().join("tiny-models.yml")),
    ];
    // CIFAR-10 on the native engine (its folder), CIFAR-100 on candle (the root holding both:
    // the one --test-dataset names).
    let cases = [
        (
            "cifar10",
            tiny_rn(),
            "native",
            fixtures().join("cifar/cifar-10-batches-py"),
            &c10,
        ),
        (
            "cifar100",
            vit.to_vec(),
            "candle",
            fixtures().join("cifar"),
            &c100,
        ),
    ];
    for (name, model, engine, data, classes) in cases {
        let folder = cifar_folder(dir.path(), &format!("{name}/test"), classes);
        let names = dir.path().join(format!("{name}.txt"));
        std::fs::write(&names, classes.join("\n")).unwrap();
        let templates = dir.path().join("templates.txt");
        std::fs::write(&templates, "a photo of a {}.\na blurry photo of a {}.\n").unwrap();
        let mut got = Vec::new();
        for path in [data, folder] {
            let mut cmd = bin();
            cmd.arg("eval").args(&model).args(["--engine", engine]);
            if name == "cifar100" {
                // The fixture's CIFAR-100 classes are placeholders.
                cmd.arg("--classnames").arg(&names);
            }
            cmd.args(["--test-dataset", name, "--no-text-cache", "-q"])
                .arg("--templates")
                .arg(&templates)
                .arg("--test-data-path")
                .arg(path);
            let (rows, r) = predictions_and_result(cmd, dir.path());
            got.push((rows, r["top1"].clone(), r["num_images"].clone()));
        }
        assert_eq!(got[0].0.len(), if name == "cifar10" { 6 } else { 4 });
        assert_eq!(
            got[0], got[1],
            "{name}: the batches against their PNG copies"
        );
    }
    // The probe reads the download's train split (all five batches) and, without --test, its
    // test split: the same predictions as from the PNG folders.
    let train = cifar_folder(dir.path(), "cifar10/train", &c10);
    let test = cifar_folder(dir.path(), "cifar10/test", &c10);
    let mut got = Vec::new();
    for args in [
        vec![s(&fixtures().join("cifar/cifar-10-batches-py"))],
        vec![s(&train), "--test".into(), s(&test)],
    ] {
        let mut cmd = bin();
        cmd.arg("linear-probe")
            .args(tiny_rn())
            .arg("--train")
            .args(&args)
            .args(["--no-feature-cache", "-q", "--c", "0.316"]);
        let (rows, r) = predictions_and_result(cmd, dir.path());
        got.push((rows, r["num_train"].clone(), r["classes"].clone()));
        if args.len() == 1 {
            assert_eq!(r["layout"]["train"], "cifar");
            assert_eq!(r["dataset"], "cifar10");
        }
    }
    assert_eq!(got[0].1, 10);
    assert_eq!(
        got[0], got[1],
        "probe: the batches against their PNG copies"
    );
    // --split train reads the five training batches; another split is a usage error.
    for (split, code) in [("train", 0), ("val", 2)] {
        let out = dir.path().join("s.json");
        let o = bin()
            .arg("eval")
            .args(tiny_rn())
            .args(["--test-dataset", "cifar10", "--split", split, "-q"])
            .args(["--no-text-cache", "--templates"])
            .arg(dir.path().join("templates.txt"))
            .arg("--test-data-path")
            .arg(fixtures().join("cifar"))
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        if code == 0 {
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
            assert_eq!(
                (r["split"].as_str(), r["num_images"].as_u64()),
                (Some("train"), Some(10))
            );
        }
    }
    // Refusals, each named: a probe on a root holding both downloads, a download under another
    // dataset's name, a cut batch.
    let cut = dir.path().join("cut/cifar-10-batches-py");
    std::fs::create_dir_all(&cut).unwrap();
    for f in std::fs::read_dir(fixtures().join("cifar/cifar-10-batches-py")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, cut.join(f.file_name().unwrap())).unwrap();
    }
    let bytes = std::fs::read(cut.join("test_batch")).unwrap();
    std::fs::write(cut.join("test_batch"), &bytes[..bytes.len() / 2]).unwrap();
    let (root, cut) = (s(&fixtures().join("cifar")), s(&cut));
    let refusals = [
        (vec!["linear-probe", "--train", &root], 3, "holds both"),
        (
            vec!["eval", "--test-data-path", &root],
            2,
            "--test-dataset cifar10",
        ),
        (
            vec![
                "eval",
                "--test-dataset",
                "cifar10",
                "--test-data-path",
                &cut,
            ],
            3,
            "test_batch",
        ),
    ];
    for (args, code, want) in refusals {
        let o = bin()
            .arg(args[0])
            .args(tiny_rn())
            .args(&args[1..])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

/// The built-in class names of `dataset` (`configs/data/datasets/DATASET_classnames.txt`).
fn builtin_names(dataset: &str) -> Vec<String> {
    let file = format!("configs/data/datasets/{dataset}_classnames.txt");
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `eval --test-dataset DATASET --templates dataset` on the download root `dir`: its result.
fn eval_download(dir: &Path, dataset: &str) -> serde_json::Value {
    let out = dir.join("eval.json");
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args(["--test-dataset", dataset, "--no-text-cache", "-q"])
        .args(["--templates", "dataset", "--test-data-path"])
        .arg(dir)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{dataset}: {}", stderr(&o));
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

/// `linear-probe --train DOWNLOAD` (no --test), writing into `dir`: its result.
fn probe_download(train: &Path, dir: &Path) -> serde_json::Value {
    let out = dir.join("probe.json");
    let o = bin()
        .arg("linear-probe")
        .args(tiny_rn())
        .arg("--train")
        .arg(train)
        .args(["--no-feature-cache", "-q", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

#[test]
fn food101_downloads_hold_their_split_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("food-101");
    // Food-101's folders are the built-in names with underscores.
    let folders: Vec<String> = builtin_names("food")
        .iter()
        .map(|n| n.replace(' ', "_"))
        .collect();
    // Images of three classes; only some of them in each split file, as in the download.
    let split = |name: &str, picks: &[(usize, &str)]| {
        let mut m = serde_json::Map::new();
        for f in &folders {
            m.insert(f.clone(), serde_json::json!([]));
        }
        for &(class, img) in picks {
            let stem = Path::new(img).file_stem().unwrap().to_string_lossy();
            let d = root.join("images").join(&folders[class]);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(
                fixtures().join("images").join(img),
                d.join(format!("{stem}.jpg")),
            )
            .unwrap();
            m[&folders[class]]
                .as_array_mut()
                .unwrap()
                .push(format!("{}/{stem}", folders[class]).into());
        }
        std::fs::create_dir_all(root.join("meta")).unwrap();
        std::fs::write(
            root.join(format!("meta/{name}.json")),
            serde_json::to_string(&m).unwrap(),
        )
        .unwrap();
    };
    split(
        "test",
        &[
            (0, "blobs_rgb.jpg"),
            (100, "shapes_rgb.jpg"),
            (100, "shapes_444.jpg"),
        ],
    );
    split(
        "train",
        &[
            (0, "blobs_small.jpg"),
            (0, "blobs_tall.jpg"),
            (100, "shapes_small.jpg"),
            (100, "shapes_tall.jpg"),
        ],
    );
    let r = eval_download(dir.path(), "food101");
    // The three test images of the seven under images/, scored over all 101 classes.
    assert_eq!(r["num_images"], 3);
    assert_eq!(r["split"], "test");
    let per_class = r["per_class"].as_array().unwrap();
    let n_of = |i: u64| per_class.iter().find(|c| c["index"] == i).map(|c| &c["n"]);
    assert_eq!(
        (per_class.len(), n_of(0), n_of(100)),
        (2, Some(&1.into()), Some(&2.into()))
    );
    // The probe: train.json for training, test.json for testing, without --test.
    let r = probe_download(&root, dir.path());
    assert_eq!(
        (
            r["num_train"].as_u64(),
            r["num_test"].as_u64(),
            r["dataset"].as_str()
        ),
        (Some(4), Some(3), Some("food101"))
    );
    assert_eq!(r["layout"]["train"], "food101");
}

#[test]
fn dtd_downloads_hold_their_partition_one_lists() {
    // torchvision's root/dtd/dtd/{images,labels}; test1.txt lists one image of each of the 47
    // classes, and a second image of each lies under images/ unlisted.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dtd/dtd");
    let classes = builtin_names("dtd");
    assert_eq!(classes.len(), 47);
    let mut listed = String::new();
    for c in &classes {
        std::fs::create_dir_all(data.join("images").join(c)).unwrap();
        for (img, name) in [("shapes_small.jpg", "a.jpg"), ("blobs_small.jpg", "b.jpg")] {
            std::fs::copy(
                fixtures().join("images").join(img),
                data.join("images").join(c).join(name),
            )
            .unwrap();
        }
        listed += &format!("{c}/a.jpg\n");
    }
    std::fs::create_dir_all(data.join("labels")).unwrap();
    std::fs::write(data.join("labels/test1.txt"), listed).unwrap();
    // 47 of the 94 images, one per class, each its class's index.
    one_image_per_class(&eval_download(dir.path(), "dtd"), &classes);
}

/// An eval result scored one image of each of `classes`, labelled by its place.
fn one_image_per_class(r: &serde_json::Value, classes: &[String]) {
    assert_eq!(r["num_images"], classes.len());
    let per_class = r["per_class"].as_array().unwrap();
    assert!(per_class
        .iter()
        .enumerate()
        .all(|(i, c)| c["index"] == i && c["n"] == 1 && c["class"] == classes[i].as_str()));
}

/// tests/fixtures/torchvision's `expected.json`: what torchvision's own dataset classes list
/// for `key` (`flowers/test`): (path relative to the fixture, label). VOC2007's objects are
/// named by their image and box (`000001.jpg#left,upper,right,lower`), as outputs name them.
fn torchvision_listing(key: &str) -> Vec<(String, u64)> {
    let root = fixtures().join("torchvision");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("expected.json")).unwrap()).unwrap();
    let boxes = v[key]["boxes"].as_array();
    v[key]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("{key}"))
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut name = p[0].as_str().unwrap().to_string();
            if let Some(b) = boxes {
                let b: Vec<String> = b[i]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_string())
                    .collect();
                name = format!("{name}#{}", b.join(","));
            }
            (name, p[1].as_u64().unwrap())
        })
        .collect()
}

/// The (path relative to the torchvision fixture, label) rows of an eval predictions CSV.
fn labelled_rows(csv: &Path) -> Vec<(String, u64)> {
    let root = fixtures().join("torchvision");
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            // The path is quoted when it holds a comma (a VOC box).
            let (path, rest) = match l.strip_prefix('"') {
                Some(q) => q.split_once("\",").unwrap(),
                None => l.split_once(',').unwrap(),
            };
            let p = Path::new(path);
            let rel = p.strip_prefix(&root).unwrap_or(p);
            (
                rel.to_string_lossy().replace('\\', "/"),
                rest.split(',').next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn torchvision_downloads_are_labelled_as_torchvision_labels_them() {
    let root = fixtures().join("torchvision");
    let dir = tempfile::tempdir().unwrap();
    let names = dir.path().join("names.txt");
    // One template: the class vectors are not what is tested here.
    let templates = dir.path().join("templates.txt");
    std::fs::write(&templates, "a photo of a {}.\n").unwrap();
    // (dataset, split, torchvision key, class names of a trimmed fixture, engine)
    let runs: [(&str, &str, &str, Option<usize>, &str); 16] = [
        ("flowers", "test", "flowers/test", None, "native"),
        ("cars", "train", "cars/train", None, "candle"),
        ("fgvc_aircraft", "val", "fgvc_aircraft/val", None, "native"),
        ("pets", "test", "pets/test", None, "native"),
        ("sun397", "test", "sun397/test", Some(5), "native"),
        // Ours is torchvision's (no background); CLIP_benchmark's keeps BACKGROUND_Google.
        ("caltech", "test", "caltech101/test", Some(4), "native"),
        // ObjectNet's class names are its mapping files' (no built-in list).
        ("objectnet", "test", "objectnet/test", None, "native"),
        ("gtsrb", "test", "gtsrb/test", None, "native"),
        ("country211", "valid", "country211/valid", Some(3), "candle"),
        ("renderedsst2", "val", "renderedsst2/val", None, "native"),
        // Images inside IDX and STL-10 arrays; objects cut from VOC's images.
        ("mnist", "test", "mnist/test", None, "native"),
        ("stl10", "train", "stl10/train", None, "candle"),
        ("voc2007", "test", "voc2007/test", None, "native"),
        // PCAM's HDF5 arrays: contiguous (test), chunked and compressed (val).
        ("pcam", "test", "pcam/test", None, "native"),
        ("pcam", "val", "pcam/val", None, "candle"),
        (
            "caltech101",
            "test",
            "clip_benchmark_caltech101/test",
            Some(5),
            "candle",
        ),
    ];
    for (dataset, split, key, trimmed, engine) in runs {
        let csv = dir.path().join(format!("{dataset}.csv"));
        let mut cmd = bin();
        cmd.arg("eval")
            .args(tiny_rn())
            .args([
                "--test-dataset",
                dataset,
                "--split",
                split,
                "--engine",
                engine,
            ])
            .args(["--no-text-cache", "-q", "--test-data-path"])
            .arg(&root)
            .arg("--templates")
            .arg(&templates)
            .arg("--save-predictions")
            .arg(&csv);
        if let Some(n) = trimmed {
            let lines: Vec<String> = (0..n).map(|i| format!("class {i}")).collect();
            std::fs::write(&names, lines.join("\n")).unwrap();
            cmd.arg("--classnames").arg(&names);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{dataset}: {}", stderr(&o));
        assert_eq!(labelled_rows(&csv), torchvision_listing(key), "{dataset}");
    }
    // Several datasets from the one root they were downloaded into, and with CLIP_benchmark's
    // `{dataset}` placeholder (one folder per dataset).
    for (name, folder) in [("flowers", "flowers-102"), ("cars", "stanford_cars")] {
        let d = dir.path().join(format!("dl-{name}"));
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(root.join(folder), d.join(folder)).unwrap();
    }
    // Also CLIP_benchmark's `--dataset FILE`: a text file of names, one per line.
    let list = dir.path().join("datasets.txt");
    std::fs::write(&list, "flowers\n\n cars\n").unwrap();
    for (data, out, names) in [
        (root.clone(), "several", "flowers+cars".to_string()),
        (
            dir.path().join("dl-{dataset}"),
            "placeholder",
            "flowers+cars".to_string(),
        ),
        (root.clone(), "listed", list.display().to_string()),
    ] {
        let o = bin()
            .arg("eval")
            .args(tiny_rn())
            .args(["--test-dataset", &names, "--no-text-cache", "-q"])
            .arg("--test-data-path")
            .arg(&data)
            .arg("--templates")
            .arg(&templates)
            .arg("--output")
            .arg(dir.path().join(format!("{out}.json")))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        for (name, n) in [("flowers", 10), ("cars", 6)] {
            let f = dir.path().join(format!("{out}-{name}.json"));
            let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            assert_eq!(
                (r["dataset"].as_str(), r["num_images"].as_u64()),
                (Some(name), Some(n))
            );
        }
    }
    // A split the download does not have, and the wrong dataset name for it.
    for (args, want) in [
        (["--test-dataset", "pets", "--split", "train"], "trainval"),
        (
            ["--test-dataset", "food101", "--split", "test"],
            "--test-dataset flowers",
        ),
    ] {
        let data = if want == "trainval" {
            root.join("oxford-iiit-pet")
        } else {
            root.join("flowers-102")
        };
        let o = bin()
            .arg("eval")
            .args(tiny_rn())
            .args(args)
            .arg("--test-data-path")
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    // The probe trains on Pets' trainval and tests on its test list, without --test.
    let r = probe_download(&root.join("oxford-iiit-pet"), dir.path());
    assert_eq!(
        (
            r["num_train"].as_u64(),
            r["num_test"].as_u64(),
            r["dataset"].as_str(),
            r["layout"]["train"].as_str()
        ),
        (Some(10), Some(5), Some("pets"), Some("pets"))
    );
    // MNIST's IDX arrays and VOC2007's objects (6 in train, 5 in test), the same way.
    for (folder, want) in [
        ("MNIST", ("mnist", 4, 3)),
        ("VOCdevkit", ("voc2007", 6, 5)),
        ("pcam", ("pcam", 3, 4)),
    ] {
        let r = probe_download(&root.join(folder), dir.path());
        assert_eq!(
            (
                r["dataset"].as_str(),
                r["num_train"].as_u64(),
                r["num_test"].as_u64()
            ),
            (Some(want.0), Some(want.1), Some(want.2))
        );
    }
    // EuroSAT: torchvision's root/eurosat/2750, an ImageFolder of the 10 classes.
    let sat = dir.path().join("sat");
    let sat_classes = builtin_names("sat");
    let folders = [
        "AnnualCrop",
        "Forest",
        "HerbaceousVegetation",
        "Highway",
        "Industrial",
        "Pasture",
        "PermanentCrop",
        "Residential",
        "River",
        "SeaLake",
    ];
    assert_eq!(sat_classes.len(), folders.len());
    for f in folders {
        let d = sat.join("eurosat/2750").join(f);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(
            fixtures().join("images/blobs_small.jpg"),
            d.join(format!("{f}_1.jpg")),
        )
        .unwrap();
    }
    one_image_per_class(&eval_download(&sat, "eurosat"), &sat_classes);
    // FER2013 as CLIP_benchmark reads Kaggle's download: ROOT/test (or --split train) as an
    // ImageFolder of the 7 emotions.
    let fer = dir.path().join("fer");
    let emotions = [
        "angry", "disgust", "fear", "happy", "neutral", "sad", "surprise",
    ];
    for split in ["train", "test"] {
        for e in emotions {
            let d = fer.join(split).join(e);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(fixtures().join("images/blobs_gray.jpg"), d.join("im0.jpg")).unwrap();
        }
    }
    let r = eval_download(&fer, "fer2013");
    one_image_per_class(&r, &builtin_names("fer2013"));
    assert_eq!(r["split"], "test");
    // A damaged MAT-file is named, with exit 3.
    let bad = dir.path().join("bad");
    let flowers = bad.join("flowers-102");
    std::fs::create_dir_all(flowers.join("jpg")).unwrap();
    let setid = std::fs::read(root.join("flowers-102/setid.mat")).unwrap();
    std::fs::write(flowers.join("setid.mat"), &setid[..setid.len() - 20]).unwrap();
    std::fs::copy(
        root.join("flowers-102/imagelabels.mat"),
        flowers.join("imagelabels.mat"),
    )
    .unwrap();
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args(["--test-dataset", "flowers", "--test-data-path"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("setid.mat"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}

/// CLIP_benchmark's `voc2007_multilabel`: VOC's test images whole, each with all its objects'
/// classes, scored by mean average precision; the same on both engines and when sharded.
#[test]
fn voc2007_multilabel_reports_mean_average_precision() {
    let root = fixtures().join("torchvision");
    let dir = tempfile::tempdir().unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("expected.json")).unwrap()).unwrap();
    let targets: Vec<Vec<u64>> =
        serde_json::from_value(v["voc2007_multilabel/test"]["targets"].clone()).unwrap();
    let run = |engine: &str, extra: &[String]| {
        let o = bin()
            .arg("eval")
            .args(tiny_rn())
            .args(["--test-dataset", "voc2007_multilabel", "--engine", engine])
            .args(["--no-text-cache", "-q", "--test-data-path"])
            .arg(&root)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let mut maps = Vec::new();
    for engine in ["native", "candle"] {
        let out = dir.path().join(format!("{engine}.json"));
        let line = run(engine, &["--output".into(), out.display().to_string()]);
        assert!(line.contains("voc2007_multilabel Zeroshot\tmAP "), "{line}");
        let r = read(&out);
        assert_eq!(r["num_images"].as_u64(), Some(targets.len() as u64));
        assert!(r.get("top1").is_none());
        let ap = r["average_precision"].as_array().unwrap();
        assert_eq!(ap.len(), 20);
        // Each class's positives are the images CLIP_benchmark's multi-hot labels mark.
        for (k, a) in ap.iter().enumerate() {
            let n = targets.iter().filter(|t| t.contains(&(k as u64))).count();
            assert_eq!(a["positives"].as_u64(), Some(n as u64), "class {k}");
        }
        let mean = ap
            .iter()
            .map(|a| a["average_precision"].as_f64().unwrap())
            .sum::<f64>()
            / 2000.0;
        let m = r["metrics"]["mean_average_precision"].as_f64().unwrap();
        assert!((m - mean).abs() < 1e-12 && m > 0.0, "{m} vs {mean}");
        maps.push(m);
    }
    assert!((maps[0] - maps[1]).abs() < 1e-9, "{maps:?}");
    // Two shards merged: the unsharded result.
    let parts = dir.path().join("parts");
    for i in 0..2 {
        run(
            "native",
            &[
                "--shard".into(),
                format!("{i}/2"),
                "--output-dir".into(),
                parts.display().to_string(),
            ],
        );
    }
    let merged = dir.path().join("merged.json");
    let o = bin()
        .arg("merge")
        .args((0..2).map(|i| parts.join(format!("voc2007_multilabel.part-{i}-of-2.json"))))
        .arg("--output")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b) = (read(&merged), read(&dir.path().join("native.json")));
    assert_eq!(a["average_precision"], b["average_precision"]);
    assert_eq!(a["metrics"], b["metrics"]);
    // The same images as CLIP_benchmark's webdataset export writes them: `jpg` and a float32
    // multi-hot `npy` per sample, `dataset_type.txt` saying multilabel. Same result.
    let wds = voc_multilabel_wds(dir.path(), 1);
    let out = dir.path().join("wds.json");
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args([
            "--test-dataset",
            "wds/voc2007_multilabel",
            "--no-text-cache",
            "-q",
        ])
        .arg("--test-data-path")
        .arg(&wds)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let w = read(&out);
    assert_eq!(w["average_precision"], b["average_precision"]);
    assert_eq!(w["metrics"], b["metrics"]);
}

/// VOC's test images with their multi-hot labels as CLIP_benchmark's webdataset export writes
/// them (`jpg` and a float32 `npy` per sample, `dataset_type.txt` saying multilabel), each image
/// `copies` times, under `dir/wds_voc2007_multilabel`.
fn voc_multilabel_wds(dir: &Path, copies: usize) -> PathBuf {
    let root = fixtures().join("torchvision");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("expected.json")).unwrap()).unwrap();
    let targets: Vec<Vec<u64>> =
        serde_json::from_value(v["voc2007_multilabel/test"]["targets"].clone()).unwrap();
    let wds = dir.join("wds_voc2007_multilabel");
    std::fs::create_dir_all(wds.join("test")).unwrap();
    std::fs::write(wds.join("test/nshards.txt"), "1\n").unwrap();
    std::fs::write(wds.join("dataset_type.txt"), "multilabel\n").unwrap();
    std::fs::write(
        wds.join("classnames.txt"),
        builtin_names("voc2007").join("\n"),
    )
    .unwrap();
    let listed = torchvision_listing("voc2007_multilabel/test");
    let mut members = Vec::new();
    for copy in 0..copies {
        for (i, ((path, _), t)) in listed.iter().zip(&targets).enumerate() {
            let key = format!("c{copy:03}s{i}");
            members.push((
                format!("{key}.jpg"),
                std::fs::read(root.join(path)).unwrap(),
            ));
            let mut hot = [0f32; 20];
            for &c in t {
                hot[c as usize] = 1.0;
            }
            let data: Vec<u8> = hot.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut head = "{'descr': '<f4', 'fortran_order': False, 'shape': (20,), }".to_string();
            while !(11 + head.len()).is_multiple_of(64) {
                head.push(' ');
            }
            head.push('\n');
            let mut npy = b"\x93NUMPY\x01\x00".to_vec();
            npy.extend((head.len() as u16).to_le_bytes());
            npy.extend(head.as_bytes());
            npy.extend(data);
            members.push((format!("{key}.npy"), npy));
        }
    }
    write_tar(&wds.join("test/0.tar"), &members);
    wds
}

/// A multi-label run interrupted (a real SIGINT mid-stream) and resumed gives the average
/// precisions of an uninterrupted run: the scores per class survive in the progress file.
#[cfg(unix)]
#[test]
fn multilabel_run_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let wds = voc_multilabel_wds(d, 60);
    let cache = d.join("cache");
    let cmd = |out: &Path, resume: bool| {
        let mut c = bin();
        c.arg("eval")
            .args(tiny_rn())
            .args(["--test-dataset", "wds/voc2007_multilabel", "-q"])
            .args(["--batch-size-test", "1", "--text-cache"])
            .arg(&cache)
            .arg("--test-data-path")
            .arg(&wds)
            .arg("--output")
            .arg(out);
        if resume {
            c.arg("--resume");
        }
        c
    };
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let full = d.join("full.json");
    let o = cmd(&full, false).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(cache.join("progress"));
    let out = d.join("resumed.json");
    let (o, done) = interrupt_after(cmd(&out, false), &cache.join("progress"), 0, libc::SIGINT);
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(!out.exists(), "no result after an interrupt");
    let total = read(&full)["num_images"].as_u64().unwrap() as usize;
    assert!(done > 0 && done < total, "{done} of {total}");
    let o = cmd(&out, true).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("starting from the beginning"),
        "{}",
        stderr(&o)
    );
    let (a, b) = (read(&out), read(&full));
    assert_eq!(a["num_images"], b["num_images"]);
    assert_eq!(a["average_precision"], b["average_precision"]);
    assert_eq!(a["metrics"], b["metrics"]);
}

/// CLIP_benchmark's template JSON (`--custom_template_file`): a dataset's templates, or each
/// class's own prompts (CuPL's form), give the class vectors the same templates give.
#[test]
fn template_json_gives_templates_or_class_prompts() {
    let root = fixtures().join("torchvision");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = builtin_names("flowers");
    let run = |templates: &Path, csv: &Path| {
        bin()
            .arg("eval")
            .args(tiny_rn())
            .args(["--test-dataset", "flowers", "--no-text-cache", "-q"])
            .arg("--test-data-path")
            .arg(&root)
            .arg("--templates")
            .arg(templates)
            .arg("--save-predictions")
            .arg(csv)
            .output()
            .unwrap()
    };
    let text = d.join("t.txt");
    std::fs::write(&text, "a photo of a {}.\na {} flower.\n").unwrap();
    let want = d.join("want.csv");
    let o = run(&text, &want);
    assert!(o.status.success(), "{}", stderr(&o));
    let per_class: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .map(|c| {
            let p = vec![format!("a photo of a {c}."), format!("a {c} flower.")];
            (c.clone(), serde_json::json!(p))
        })
        .collect();
    for (i, json) in [
        serde_json::json!({"flowers": ["a photo of a {c}.", "a {c} flower."]}),
        // A dataset without an entry takes imagenet1k's.
        serde_json::json!({"cars": ["x {c}"], "imagenet1k": ["a photo of a {c}.", "a {c} flower."]}),
        serde_json::json!({ "flowers": per_class }),
    ]
    .into_iter()
    .enumerate()
    {
        let f = d.join(format!("t{i}.json"));
        std::fs::write(&f, json.to_string()).unwrap();
        let csv = d.join(format!("got{i}.csv"));
        let o = run(&f, &csv);
        assert!(o.status.success(), "{i}: {}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            std::fs::read_to_string(&want).unwrap(),
            "{i}"
        );
    }
    // A class without prompts; a template without a slot: one-line errors naming the file.
    let mut short = serde_json::Map::new();
    short.insert(names[0].clone(), serde_json::json!(["a flower."]));
    for (json, msg) in [
        (serde_json::json!({ "flowers": short }), names[1].as_str()),
        (serde_json::json!({"flowers": ["a flower."]}), "no `{}`"),
    ] {
        let f = d.join("bad.json");
        std::fs::write(&f, json.to_string()).unwrap();
        let o = run(&f, &d.join("bad.csv"));
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(msg) && e.contains("bad.json"), "{msg}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    }
}

/// `--classnames FILE.json`: CLIP_benchmark's class-name JSON, one entry per dataset, so one
/// file serves several `--test-dataset` names; a dataset without an entry is a one-line error
/// naming the file (CLIP_benchmark has no fallback for class names).
#[test]
fn classname_json_names_each_datasets_classes() {
    let root = fixtures().join("torchvision");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let flowers: Vec<String> = (0..builtin_names("flowers").len())
        .map(|i| format!("flower kind {i}"))
        .collect();
    let pets: Vec<String> = (0..builtin_names("pet").len())
        .map(|i| format!("pet breed {i}"))
        .collect();
    let json = d.join("names.json");
    let entries = serde_json::json!({"flowers": flowers, "pets": pets, "cars": ["x"]});
    std::fs::write(&json, entries.to_string()).unwrap();
    let out = d.join("eval.json");
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args(["--test-dataset", "flowers+pets", "--no-text-cache", "-q"])
        .arg("--test-data-path")
        .arg(&root)
        .arg("--classnames")
        .arg(&json)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for (name, want) in [("flowers", &flowers), ("pets", &pets)] {
        let f = d.join(format!("eval-{name}.json"));
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        // The per-class rows name the classes present by the JSON's names.
        let rows = m["per_class"].as_array().unwrap();
        assert!(!rows.is_empty(), "{name}");
        for r in rows {
            let i = r["index"].as_u64().unwrap() as usize;
            assert_eq!(r["class"].as_str().unwrap(), want[i], "{name}");
        }
    }
    // No entry for the dataset; an entry that is not a list of names.
    for (entries, msg) in [
        (serde_json::json!({"pets": pets}), "no entry for `flowers`"),
        (
            serde_json::json!({"flowers": "daisy"}),
            "not a list of strings",
        ),
    ] {
        let bad = d.join("bad.json");
        std::fs::write(&bad, entries.to_string()).unwrap();
        let o = bin()
            .arg("eval")
            .args(tiny_rn())
            .args(["--test-dataset", "flowers", "--no-text-cache", "-q"])
            .arg("--test-data-path")
            .arg(&root)
            .arg("--classnames")
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(msg) && e.contains("bad.json"), "{msg}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    }
}

/// tests/fixtures/tfds's `zeroshot.json`: CLIP_benchmark's zero-shot scoring of the VTAB
/// images task_adaptation read (scripts/dev/tfds_zeroshot_reference.py), with open_clip's
/// tiny-clip-vit; and `expected.json`'s listing of the same split.
fn vtab_reference(key: &str) -> (serde_json::Value, Vec<(String, u64)>) {
    let root = fixtures().join("tfds");
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(root.join(f)).unwrap()).unwrap()
    };
    let listing = read("expected.json")[key]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("{key}"))
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_u64().unwrap()))
        .collect();
    (read("zeroshot.json")[key].clone(), listing)
}

/// A predictions CSV's rows: the path relative to `root` and the first `n` numbers after it
/// (label, pred1, ...).
fn rows_under(csv: &Path, root: &Path, n: usize) -> Vec<(String, Vec<u64>)> {
    csv_rows(csv)
        .into_iter()
        .map(|f| {
            let rel = Path::new(&f[0]).strip_prefix(root).unwrap();
            let nums = f[1..=n].iter().map(|x| x.parse().unwrap()).collect();
            (rel.to_string_lossy().replace('\\', "/"), nums)
        })
        .collect()
}

#[test]
fn vtab_tasks_score_as_clip_benchmark_scores_them() {
    let root = fixtures().join("tfds");
    let clip = fixtures().join("clip");
    let dir = tempfile::tempdir().unwrap();
    let tasks = [
        "svhn",
        "resisc45",
        "caltech101",
        "dsprites_label_orientation",
        "smallnorb_label_elevation",
        "clevr_closest_object_distance",
        "dmlab",
        "cars",
        "food101",
    ];
    let datasets: Vec<String> = tasks.iter().map(|t| format!("vtab/{t}")).collect();
    for engine in ["native", "candle"] {
        let out = dir.path().join(engine);
        std::fs::create_dir(&out).unwrap();
        let o = bin()
            .arg("eval")
            .arg("--checkpoint")
            .arg(clip.join("tiny-clip-vit.pt"))
            .arg("--model-config")
            .arg(clip.join("tiny-clip-vit.json"))
            .args(["--test-dataset", &datasets.join("+"), "--engine", engine])
            .args(["--templates", "dataset", "--no-text-cache", "-q"])
            .arg("--test-data-path")
            .arg(&root)
            .arg("--output")
            .arg(out.join("{dataset}.json"))
            .arg("--save-predictions")
            .arg(out.join("{dataset}.csv"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{engine}: {}", stderr(&o));
        for t in tasks {
            let (want, listing) = vtab_reference(&format!("vtab/{t}/test"));
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(out.join(format!("vtab_{t}.json"))).unwrap())
                    .unwrap();
            assert_eq!(r["dataset"], format!("vtab/{t}"));
            assert_eq!(r["split"], "test");
            let acc1 = r["metrics"]["acc1"].as_f64().unwrap();
            let acc5 = r["metrics"]["acc5"].as_f64().unwrap();
            assert!(
                (acc1 - want["acc1"].as_f64().unwrap()).abs() < 1e-6,
                "{t} {engine}"
            );
            assert!(
                (acc5 - want["acc5"].as_f64().unwrap()).abs() < 1e-6,
                "{t} {engine}"
            );
            // Each image's class and first prediction, in the order task_adaptation reads.
            let rows = rows_under(&out.join(format!("vtab_{t}.csv")), &root, 2);
            let top1 = want["top5"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t[0].as_u64().unwrap());
            let expect: Vec<(String, Vec<u64>)> = listing
                .into_iter()
                .zip(top1)
                .map(|((p, l), t)| (p, vec![l, t]))
                .collect();
            assert_eq!(rows, expect, "{t} {engine}");
        }
    }
    // CLIP_benchmark's tfds/ names: timm's reading (tfds_expected.json), PIL's JPEG decoding.
    let csv = dir.path().join("caltech.csv");
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args(["--test-dataset", "tfds/caltech101", "--no-text-cache", "-q"])
        .arg("--test-data-path")
        .arg(&root)
        .arg("--save-predictions")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("tfds_expected.json")).unwrap()).unwrap();
    let rows: Vec<serde_json::Value> = rows_under(&csv, &root, 1)
        .into_iter()
        .map(|(p, l)| serde_json::json!([p, l[0]]))
        .collect();
    assert_eq!(
        serde_json::Value::from(rows),
        want["tfds/caltech101/test"]["samples"]
    );
    // Another VTAB split; a split VTAB has not, a task not read here, a folder without the
    // prepared dataset: usage errors (2) or a data error naming the folder (3).
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args([
            "--test-dataset",
            "vtab/smallnorb_label_elevation",
            "--split",
            "val",
        ])
        .args(["--no-text-cache", "-q", "--test-data-path"])
        .arg(&root)
        .arg("--output")
        .arg(dir.path().join("val.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("val.json")).unwrap()).unwrap();
    let (_, listing) = vtab_reference("vtab/smallnorb_label_elevation/val");
    assert_eq!(r["num_images"], listing.len());
    assert_eq!(r["split"], "val");
    for (args, code, says) in [
        (["vtab/svhn", "--split", "validation"], 2, "VTAB's splits"),
        (["vtab/cars", "--split", "val200"], 2, "splits of cars are"),
        (["vtab/imagenet", "--split", "test"], 2, "not a VTAB task"),
    ] {
        let o = bin()
            .arg("eval")
            .args(tiny_rn())
            .args(["--test-dataset"])
            .args(args)
            .arg("--test-data-path")
            .arg(&root)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
    }
    let o = bin()
        .arg("eval")
        .args(tiny_rn())
        .args(["--test-dataset", "vtab/svhn", "--test-data-path"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("svhn_cropped/VERSION"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn linear_probe_reads_vtab_splits() {
    let root = fixtures().join("tfds");
    let dir = tempfile::tempdir().unwrap();
    let (json, csv) = (dir.path().join("p.json"), dir.path().join("p.csv"));
    let o = bin()
        .arg("linear-probe")
        .args(tiny_rn())
        .args(["--dataset", "vtab/svhn", "--c-search", "--val-split", "val"])
        .args(["--no-feature-cache", "-q", "--train"])
        .arg(&root)
        .arg("--output")
        .arg(&json)
        .arg("--save-predictions")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let n = |split: &str| vtab_reference(&format!("vtab/svhn/{split}")).1;
    assert_eq!(r["dataset"], "vtab/svhn");
    assert_eq!(r["num_train"], n("train").len());
    assert_eq!(r["num_val"], n("val").len());
    assert_eq!(r["num_test"], n("test").len());
    assert_eq!(r["splits"]["train"], "train");
    assert_eq!(r["splits"]["val"], "val");
    assert_eq!(r["classes"].as_array().unwrap().len(), 10);
    // The test rows: task_adaptation's records and labels, in its order.
    let rows: Vec<(String, u64)> = rows_under(&csv, &root, 1)
        .into_iter()
        .map(|(p, l)| (p, l[0]))
        .collect();
    assert_eq!(rows, n("test"));
    // --dataset names VTAB tasks only; --val needs --val-split with it.
    for (extra, says) in [
        (&["--dataset", "cifar10"][..], "only TFDS datasets"),
        (
            &["--dataset", "vtab/svhn", "--test-split", "valid"],
            "VTAB's splits",
        ),
        (
            &["--dataset", "vtab/svhn", "--c-search", "--val", "x"],
            "--val-split",
        ),
    ] {
        let o = bin()
            .arg("linear-probe")
            .args(tiny_rn())
            .args(extra)
            .arg("--train")
            .arg(&root)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
    }
}

/// CLIP_benchmark's ImageFolder sets (EuroSAT, ImageNet-R, ...) read images with torchvision's
/// loader, which converts to RGB before the resize, as webdataset's decoder does; the
/// reference's own names (`imagenet`) keep the file's mode. Palette and alpha images tell them
/// apart: scored as the same images in a webdataset shard for the former, not the latter.
#[test]
fn clip_benchmark_folders_convert_to_rgb_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = [
        ("c0", "images/blobs_palette.png"),
        ("c0", "wds/alpha_rgba.png"),
        ("c1", "images/shapes_palette.png"),
        ("c1", "wds/alpha_la.png"),
        ("c1", "images/blobs_rgb.jpg"),
    ];
    let wds = d.join("w");
    std::fs::create_dir_all(wds.join("test")).unwrap();
    let mut members = Vec::new();
    for (i, (class, image)) in images.iter().enumerate() {
        let name = image.rsplit('/').next().unwrap();
        let folder = d.join("f/val").join(class);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(fixtures().join(image), folder.join(name)).unwrap();
        let ext = name.rsplit('.').next().unwrap();
        members.push((
            format!("s{i:03}.{ext}"),
            std::fs::read(fixtures().join(image)).unwrap(),
        ));
        members.push((format!("s{i:03}.cls"), class.as_bytes()[1..].to_vec()));
    }
    write_tar(&wds.join("test/0.tar"), &members);
    std::fs::write(wds.join("test/nshards.txt"), "1\n").unwrap();
    std::fs::write(wds.join("classnames.txt"), "cat\ndog\n").unwrap();
    std::fs::write(d.join("names.txt"), "cat\ndog\n").unwrap();
    std::fs::write(d.join("t.txt"), "a photo of a {}.\n").unwrap();
    // Score columns by image name (the folder lists them sorted, the shard in its order).
    let scores = |data: &Path, dataset: &str| {
        let csv = d.join(format!("{dataset}.csv"));
        let o = bin()
            .arg("eval")
            .args(tiny_rn())
            .arg("--test-data-path")
            .arg(data)
            .args([
                "--test-dataset",
                dataset,
                "--classnames",
                &s(&d.join("names.txt")),
            ])
            .args(["--templates", &s(&d.join("t.txt")), "--no-text-cache", "-q"])
            .args(["--save-predictions", &s(&csv)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{dataset}: {}", stderr(&o));
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut rows: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .map(|l| {
                let (path, rest) = l.split_once(',').unwrap();
                (path.to_string(), rest.to_string())
            })
            .collect();
        assert_eq!(rows.len(), images.len(), "{dataset}");
        rows.sort();
        rows
    };
    let shard: Vec<String> = scores(&wds, "wds/shapes")
        .into_iter()
        .map(|r| r.1)
        .collect();
    let mut shard_by_name: Vec<(String, String)> = images
        .iter()
        .map(|(_, image)| image.rsplit('/').next().unwrap().to_string())
        .zip(shard.iter().cloned())
        .collect();
    shard_by_name.sort();
    for (dataset, converts) in [("eurosat", true), ("imagenet-r", true), ("imagenet", false)] {
        let mut folder: Vec<(String, String)> = scores(&d.join("f"), dataset)
            .into_iter()
            .map(|(p, r)| (p.rsplit('/').next().unwrap().to_string(), r))
            .collect();
        folder.sort();
        // The RGB JPEG scores alike either way; the converted ones only when converted first.
        let same = folder
            .iter()
            .zip(&shard_by_name)
            .filter(|(a, b)| a == b)
            .count();
        let want = if converts { images.len() } else { 1 };
        assert_eq!(same, want, "{dataset}: {folder:?} vs {shard_by_name:?}");
    }
}

/// The feature cache keys how each image is decoded: the same files opened as they are and
/// converted to RGB first (a webdataset's or torchvision's reading) are cached apart, so a
/// cache written before a loader's decoding changed is not read for it.
#[test]
fn feature_cache_keys_tell_decoders_apart() {
    use pyramidclip::data::{Decoder, Sample};
    use pyramidclip::features::{FeatureCache, StreamOptions};
    let m = pyramidclip::loader::load(&load_options(
        "tiny-RN.pth.tar",
        pyramidclip::EngineChoice::Native,
    ))
    .unwrap();
    let files = ["images/blobs_palette.png", "images/blobs_rgb.jpg"];
    let samples = |d: Decoder| -> Vec<Sample> {
        files
            .iter()
            .map(|f| Sample {
                decoder: d,
                ..Sample::file(fixtures().join(f), 0)
            })
            .collect()
    };
    let opts = StreamOptions {
        batch_size: 2,
        workers: 1,
        skip_unreadable: false,
        raw: true,
    };
    let key = |d| FeatureCache::key(&m, "sha", &samples(d), opts);
    assert_eq!(key(Decoder::Pil), key(Decoder::Pil));
    assert_ne!(key(Decoder::Pil), key(Decoder::PilRgb));
}
