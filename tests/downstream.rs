//! The paper's other tasks: `retrieval` against CLIP_benchmark's computation on the reference's
//! features (its multilingual sets' files and scores written by CLIP_benchmark's own code,
//! `scripts/multilingual_retrieval_reference.py`), `caption-selection` against CLIP_benchmark's own `image_caption_selection` on them
//! (`scripts/selection_reference.py`), `linear-probe` against scikit-learn on the reference's raw features (both
//! expectations written at dev time by `scripts/retrieval_reference.py` and
//! `scripts/probe_reference.py`).

use crate::util::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// `CMD --captions FILE --skip-unreadable` with tiny-RN: its result JSON.
fn run_skipping_unreadable(cmd: &str, captions: &Path, dir: &Path) -> serde_json::Value {
    let out = dir.join("m.json");
    let o = bin()
        .arg(cmd)
        .args(tiny("tiny-RN"))
        .arg("--captions")
        .arg(captions)
        .args(["--skip-unreadable", "-q", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    read_json(&out)
}

fn tiny(model: &str) -> Vec<String> {
    vec![
        "--checkpoint".into(),
        s(&fixtures().join(format!("{model}.pth.tar"))),
        "--model-config".into(),
        s(&fixtures().join("tiny-models.yml")),
    ]
}

#[test]
fn retrieval_recalls_equal_clip_benchmark_on_the_reference_features() {
    let expected = read_json(&fixtures().join("retrieval/expected.json"));
    let dir = tempfile::tempdir().unwrap();
    for model in ["tiny-RN", "tiny-ViT"] {
        for engine in ["native", "candle"] {
            for file in [
                "captions.jsonl",
                "captions_flickr.txt",
                "captions_coco.json",
                "captions_karpathy.json",
                "captions_lavis.json",
            ] {
                let out = dir.path().join("r.json");
                let ranks = dir.path().join("r.csv");
                let o = bin()
                    .arg("retrieval")
                    .args(tiny(model))
                    .args(["--engine", engine, "--images-root"])
                    .arg(fixtures())
                    .arg("--captions")
                    .arg(fixtures().join("retrieval").join(file))
                    .args(["--recall-k", "1", "2", "3", "5", "10", "-q", "--output"])
                    .arg(&out)
                    .arg("--save-ranks")
                    .arg(&ranks)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                let r = read_json(&out);
                assert_eq!(r["task"], "zeroshot_retrieval");
                let split = (file == "captions_karpathy.json").then_some("test");
                assert_eq!(r["split"].as_str(), split, "{file}");
                assert_eq!(
                    (r["num_images"].as_u64(), r["num_captions"].as_u64()),
                    (Some(7), Some(9))
                );
                let want = expected[model].as_object().unwrap();
                for (k, v) in want {
                    assert_eq!(
                        r["metrics"][k].as_f64(),
                        v.as_f64(),
                        "{model} {engine} {file}: {k}"
                    );
                }
                let stdout = String::from_utf8_lossy(&o.stdout);
                assert!(
                    stdout.contains(" Retrieval\ttext->image R@1/2/3/5/10 "),
                    "{stdout}"
                );
                // The ranks file agrees with the recall@1 it reports.
                let csv = std::fs::read_to_string(&ranks).unwrap();
                let t2i_first = csv
                    .lines()
                    .filter(|l| l.starts_with("text_to_image,") && l.ends_with(",1"))
                    .count();
                let r1 = want["image_retrieval_recall@1"].as_f64().unwrap();
                assert_eq!(t2i_first, (r1 * 9.0).round() as usize, "{csv}");
            }
        }
    }
}

#[test]
fn retrieval_distributed_takes_this_ranks_runs() {
    // Two checkpoints over two processes: CLIP_benchmark's shuffle (seed 0) keeps [0, 1], so
    // rank 1 runs the second; its result equals the undistributed run's.
    let dir = tempfile::tempdir().unwrap();
    let out = s(&dir.path().join("{model}.json"));
    let run = |env: &[(&str, &str)], distributed: bool| {
        let o = bin()
            .arg("retrieval")
            .arg("--checkpoint")
            .args(["tiny-RN", "tiny-ViT"].map(|m| fixtures().join(format!("{m}.pth.tar"))))
            .arg("--model-config")
            .arg(fixtures().join("tiny-models.yml"))
            .arg("--images-root")
            .arg(fixtures())
            .arg("--captions")
            .arg(fixtures().join("retrieval/captions.jsonl"))
            .args(["-q", "--output", &out])
            .args(distributed.then_some("--distributed"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Open MPI's variables as mpirun sets them: rank 0 runs the first.
    let mpi = [("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2")];
    let stdout = run(&mpi, true);
    assert!(stdout.starts_with("tiny-RN.pth.tar\t"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    std::fs::remove_file(dir.path().join("tiny-RN.json")).unwrap();
    let stdout = run(&[("RANK", "1"), ("WORLD_SIZE", "2")], true);
    assert!(stdout.starts_with("tiny-ViT.pth.tar\t"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let vit = dir.path().join("tiny-ViT.json");
    assert!(!dir.path().join("tiny-RN.json").exists());
    let part = read_json(&vit)["metrics"].clone();
    std::fs::remove_file(&vit).unwrap();
    assert_eq!(run(&[], false).lines().count(), 2);
    assert_eq!(read_json(&vit)["metrics"], part);
}

#[test]
fn caption_selection_equals_clip_benchmark_on_the_reference_features() {
    let expected = read_json(&fixtures().join("selection/expected.json"));
    let dir = tempfile::tempdir().unwrap();
    let sel = fixtures().join("selection");
    // SugarCREPE's JSON and our JSON lines name fixture images under tests/fixtures; the
    // Winoground folder's examples.jsonl names its own images/ (and some by a relative path).
    let sets = [
        (
            "sugar_crepe",
            sel.join("sugar_crepe.json"),
            true,
            "sugar_crepe/sugar_crepe",
            14,
        ),
        ("winoground", sel.join("winoground"), false, "winoground", 8),
        // The same set as Hugging Face `datasets` caches it (CLIP_benchmark's own reader;
        // scripts/winoground_hf_reference.py checks its scores are these).
        (
            "winoground",
            sel.join("winoground-hf"),
            false,
            "winoground",
            8,
        ),
        (
            "instances",
            sel.join("instances.jsonl"),
            true,
            "instances",
            5,
        ),
    ];
    for model in ["tiny-RN", "tiny-ViT"] {
        for engine in ["native", "candle"] {
            for (key, path, rooted, name, n) in &sets {
                let out = dir.path().join("s.json");
                let csv = dir.path().join("s.csv");
                let mut cmd = bin();
                cmd.arg("caption-selection")
                    .args(tiny(model))
                    .args(["--engine", engine, "-q", "--captions"])
                    .arg(path)
                    .arg("--output")
                    .arg(&out)
                    .arg("--save-predictions")
                    .arg(&csv);
                if *rooted {
                    cmd.arg("--images-root").arg(fixtures());
                }
                let o = cmd.output().unwrap();
                let what = format!("{model} {engine} {key}");
                assert!(
                    o.status.success(),
                    "{what}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                let r = read_json(&out);
                assert_eq!(r["task"], "image_caption_selection");
                assert_eq!(r["dataset"], *name);
                assert_eq!(r["num_instances"], *n, "{what}");
                let want = &expected[model][key];
                for k in ["text_acc", "image_acc", "acc"] {
                    let (ours, theirs) = (r["metrics"][k].as_f64(), want["metrics"][k].as_f64());
                    // CLIP_benchmark averages in float32.
                    assert!(
                        (ours.unwrap() - theirs.unwrap()).abs() < 1e-6,
                        "{what} {k}: {ours:?} {theirs:?}"
                    );
                }
                let rows: Vec<Vec<String>> = std::fs::read_to_string(&csv)
                    .unwrap()
                    .lines()
                    .skip(1)
                    .map(|l| l.split(',').map(String::from).collect())
                    .collect();
                let theirs = want["instances"].as_array().unwrap();
                assert_eq!(rows.len(), theirs.len(), "{what}");
                for (row, t) in rows.iter().zip(theirs) {
                    let ours = [row[4] == "1", row[5] == "1"];
                    let t = [t[0].as_bool().unwrap(), t[1].as_bool().unwrap()];
                    assert_eq!(ours, t, "{what}: instance {}", row[1]);
                }
                let stdout = String::from_utf8_lossy(&o.stdout);
                assert!(
                    stdout.starts_with(&format!("{name} Caption selection\ttext ")),
                    "{stdout}"
                );
            }
        }
    }
}

#[test]
fn caption_selection_reads_winogrounds_images_zip_in_place() {
    // The dataset repository's layout, data/examples.jsonl beside data/images.zip (not
    // unpacked): the fixture set with its two own images only in the zip, one deflated and
    // one stored; the same scores as unpacked.
    let expected = read_json(&fixtures().join("selection/expected.json"));
    let wino = fixtures().join("selection/winoground");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let lines = std::fs::read_to_string(wino.join("examples.jsonl")).unwrap();
    let absolute = format!("{}/", s(&wino.join("../..")));
    std::fs::write(
        data.join("examples.jsonl"),
        lines.replace("../../", &absolute),
    )
    .unwrap();
    let members: Vec<(String, Vec<u8>)> = ["ex_0_img_0", "ex_0_img_1"]
        .iter()
        .map(|n| {
            let bytes = std::fs::read(wino.join(format!("images/{n}.png"))).unwrap();
            (format!("images/{n}.png"), bytes)
        })
        .collect();
    write_zip_deflating(
        &data.join("images.zip"),
        &members,
        &["images/ex_0_img_0.png"],
    );
    let out = dir.path().join("s.json");
    let o = bin()
        .arg("caption-selection")
        .args(tiny("tiny-ViT"))
        .args(["-q", "--captions"])
        .arg(dir.path())
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = read_json(&out);
    assert_eq!(r["num_instances"], 8);
    for k in ["text_acc", "image_acc", "acc"] {
        let (ours, theirs) = (
            r["metrics"][k].as_f64().unwrap(),
            expected["tiny-ViT"]["winoground"]["metrics"][k]
                .as_f64()
                .unwrap(),
        );
        assert!((ours - theirs).abs() < 1e-6, "{k}: {ours} {theirs}");
    }
    // A cut-short Arrow cache file is named (exit 3), never a panic.
    let arrow = fixtures().join(
        "selection/winoground-hf/facebook___winoground/default/0.0.0/4e5a9a0b7c1d2e3f/winoground-test.arrow",
    );
    let bytes = std::fs::read(&arrow).unwrap();
    let cut = dir.path().join("winoground-test.arrow");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let o = bin()
        .arg("caption-selection")
        .args(tiny("tiny-ViT"))
        .args(["-q", "--captions"])
        .arg(&cut)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(
        e.contains("winoground-test.arrow") && !e.contains("panicked"),
        "{e}"
    );
    // A member the zip lacks is named with where it was looked for.
    write_zip(&data.join("images.zip"), &members[..1]);
    let o = bin()
        .arg("caption-selection")
        .args(tiny("tiny-ViT"))
        .args(["-q", "--captions"])
        .arg(dir.path())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("ex_0_img_1") && e.contains("images.zip"), "{e}");
}

#[test]
fn caption_selection_scores_a_sugar_crepe_folder_in_one_run() {
    // CLIP_benchmark's sugar_crepe root: TASK.json files (here two copies of the fixture set).
    let expected = read_json(&fixtures().join("selection/expected.json"));
    let dir = tempfile::tempdir().unwrap();
    let sc = fixtures().join("selection/sugar_crepe.json");
    for t in ["swap_obj", "add_att"] {
        std::fs::copy(&sc, dir.path().join(format!("{t}.json"))).unwrap();
    }
    let distinct = read_json(&sc)
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["filename"].as_str().unwrap().to_string())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let out = dir.path().join("out/r.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let o = bin()
        .arg("caption-selection")
        .args(tiny("tiny-RN"))
        .arg("--captions")
        .arg(dir.path())
        .arg("--images-root")
        .arg(fixtures())
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // Both tasks, in CLIP_benchmark's order, their images encoded once.
    assert!(
        err.contains(&format!("{distinct} distinct images")),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("sugar_crepe/add_att Caption selection"));
    assert!(lines[1].starts_with("sugar_crepe/swap_obj Caption selection"));
    for t in ["add_att", "swap_obj"] {
        let r = read_json(&dir.path().join(format!("out/r-sugar_crepe-{t}.json")));
        assert_eq!(r["dataset"], format!("sugar_crepe/{t}"));
        let want = expected["tiny-RN"]["sugar_crepe"]["metrics"]["acc"]
            .as_f64()
            .unwrap();
        assert!((r["metrics"]["acc"].as_f64().unwrap() - want).abs() < 1e-6);
    }
    // --dataset names one set only.
    let o = bin()
        .arg("caption-selection")
        .args(tiny("tiny-RN"))
        .arg("--captions")
        .arg(dir.path())
        .arg("--images-root")
        .arg(fixtures())
        .args(["--dataset", "x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--dataset names one set"));
}

#[test]
fn caption_selection_bad_files_name_the_file_and_instance() {
    let dir = tempfile::tempdir().unwrap();
    let img = s(&fixtures().join("images/blobs_rgb.jpg"));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "gone.json",
            format!(
                r#"{{"4": {{"filename": "{img}", "caption": "a", "negative_caption": "b"}}, "9": {{"filename": "nope.jpg", "caption": "a", "negative_caption": "b"}}}}"#
            ),
            "instance 9: image",
        ),
        (
            "half.json",
            r#"{"4": {"filename": "x.jpg", "caption": "a"}}"#.into(),
            "no \"negative_caption\"",
        ),
        (
            "bad.jsonl",
            format!("{{\"image\": \"{img}\", \"captions\": [\"a\"]}}\n{{oops\n"),
            "line 2",
        ),
        ("empty.jsonl", "\n".into(), "holds no instances"),
    ];
    for (name, body, culprit) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        let o = bin()
            .arg("caption-selection")
            .args(tiny("tiny-RN"))
            .arg("--captions")
            .arg(&p)
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{name}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains(name) && e.contains(culprit), "{name}: {e}");
    }
    // --skip-unreadable: the instance with the missing image and the one whose image does not
    // decode leave, listed; the rest is scored.
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8 not a jpeg").unwrap();
    let p = dir.path().join("mixed.jsonl");
    std::fs::write(
        &p,
        format!(
            "{{\"id\": \"ok\", \"image\": \"{img}\", \"captions\": [\"a\", \"b\"]}}\n{{\"id\": \"gone\", \"image\": \"gone.jpg\", \"captions\": [\"a\"]}}\n{{\"id\": \"bad\", \"images\": [\"{img}\", \"broken.jpg\"], \"captions\": [\"a\"]}}\n"
        ),
    )
    .unwrap();
    let r = run_skipping_unreadable("caption-selection", &p, dir.path());
    assert_eq!(r["num_instances"], 1);
    let skipped: Vec<&str> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["instance"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["gone", "bad"]);
    // `results` tabulates it: SugarCREPE-like sets (one image each) by `acc` alone.
    let out = dir.path().join("m.json");
    let o = bin().arg("results").arg(&out).output().unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        table.contains("mixed acc") && !table.contains("text_acc"),
        "{table}"
    );
}

/// Runs `retrieval` with tiny `model` on `engine` in `cwd` with `extra` flags: status, stderr,
/// result JSON and the captions of the ranks file's text queries with their images' names.
fn retrieval_run(
    model: &str,
    engine: &str,
    cwd: &Path,
    extra: &[String],
) -> (
    Option<i32>,
    String,
    serde_json::Value,
    Vec<(String, String)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (out, ranks) = (dir.path().join("r.json"), dir.path().join("r.csv"));
    let o = bin()
        .current_dir(cwd)
        .arg("retrieval")
        .args(tiny(model))
        .args(["--engine", engine, "--recall-k", "1", "2", "3", "5", "-q"])
        .args(extra)
        .arg("--output")
        .arg(&out)
        .arg("--save-ranks")
        .arg(&ranks)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        return (o.status.code(), err, serde_json::Value::Null, vec![]);
    }
    let pairs = std::fs::read_to_string(&ranks)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("text_to_image,"))
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ',').collect();
            let image = Path::new(f[2]).file_name().unwrap().to_string_lossy();
            let caption = f[3].rsplit_once(',').unwrap().0.trim_matches('"');
            (image.into_owned(), caption.replace("\"\"", "\""))
        })
        .collect();
    (o.status.code(), err, read_json(&out), pairs)
}

#[test]
fn retrieval_reads_clip_benchmark_multilingual_sets_as_it_does() {
    // tests/fixtures/retrieval/cb: Crossmodal-3600's layout, CLIP_benchmark's annotation files
    // made from it and its scores on the reference features
    // (scripts/multilingual_retrieval_reference.py).
    let cb = fixtures().join("retrieval/cb");
    let expected = read_json(&cb.join("expected.json"));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let elsewhere = tempfile::tempdir().unwrap();
    let check =
        |r: &serde_json::Value, pairs: &[(String, String)], lang: &str, model: &str, what: &str| {
            let want = &expected[lang][model];
            for (k, v) in want["metrics"].as_object().unwrap() {
                let (ours, theirs) = (r["metrics"][k].as_f64().unwrap(), v.as_f64().unwrap());
                // CLIP_benchmark averages in float32.
                assert!(
                    (ours - theirs).abs() < 1e-6,
                    "{what}: {k} {ours} vs {theirs}"
                );
            }
            let theirs: Vec<(String, String)> = want["pairs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
                .collect();
            assert_eq!(pairs, theirs, "{what}");
            assert_eq!(r["dataset"], "crossmodal3600", "{what}");
            assert_eq!(r["language"], lang, "{what}");
            assert_eq!(r["num_images"], 7, "{what}");
        };
    for model in ["tiny-RN", "tiny-ViT"] {
        for engine in ["native", "candle"] {
            for lang in ["en", "de"] {
                // The file as CLIP_benchmark wrote it, its paths relative to where it ran.
                let file =
                    format!("tests/fixtures/retrieval/cb/crossmodal3600_captions-{lang}.json");
                let (code, err, r, pairs) =
                    retrieval_run(model, engine, repo, &["--captions".into(), file]);
                assert_eq!(code, Some(0), "{err}");
                assert_eq!(r["format"], "image-paths");
                check(
                    &r,
                    &pairs,
                    lang,
                    model,
                    &format!("{model} {engine} {lang} image-paths"),
                );
            }
        }
        // CLIP_benchmark's dataset root: its file for the language.
        for lang in ["en", "de"] {
            let args = [
                "--captions".into(),
                "tests/fixtures/retrieval/cb".into(),
                "--language".into(),
                lang.into(),
            ];
            let (code, err, r, pairs) = retrieval_run(model, "native", repo, &args);
            assert_eq!(code, Some(0), "{err}");
            assert_eq!(r["format"], "image-paths");
            check(&r, &pairs, lang, model, &format!("{model} root {lang}"));
        }
        // Run from elsewhere: the paths are found under the file's folder; or from
        // --images-root. Crossmodal-3600's own captions.jsonl in a language: CLIP_benchmark
        // leaves the key without an image out, as --skip-unreadable does.
        let file = s(&cb.join("crossmodal3600_captions-en.json"));
        for extra in [
            vec![],
            vec!["--images-root".to_string(), s(&cb.join("xm3600/images"))],
        ] {
            let args = [vec!["--captions".to_string(), file.clone()], extra].concat();
            let (code, err, r, pairs) = retrieval_run(model, "native", elsewhere.path(), &args);
            assert_eq!(code, Some(0), "{err}");
            check(&r, &pairs, "en", model, &format!("{model} moved {args:?}"));
        }
        let raw = s(&cb.join("xm3600/captions.jsonl"));
        for lang in ["en", "de"] {
            let mut args = vec![
                "--captions".to_string(),
                raw.clone(),
                "--skip-unreadable".into(),
            ];
            if lang == "de" {
                args.extend(["--language".to_string(), "de".into()]);
            }
            let (code, err, r, pairs) = retrieval_run(model, "native", elsewhere.path(), &args);
            assert_eq!(code, Some(0), "{err}");
            assert_eq!(r["format"], "xm3600");
            assert_eq!(r["skipped"].as_array().unwrap().len(), 1, "{r}");
            check(&r, &pairs, lang, model, &format!("{model} xm3600 {lang}"));
        }
    }
    // Without --skip-unreadable the missing image is an error naming the file and line; a
    // language the file lacks names it; --language on another format is a usage error.
    let raw = s(&cb.join("xm3600/captions.jsonl"));
    let (code, err, ..) = retrieval_run(
        "tiny-RN",
        "native",
        repo,
        &["--captions".into(), raw.clone()],
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("captions.jsonl")
            && err.contains("line 4")
            && err.contains("0a1b2c3d4e5f6004.jpg"),
        "{err}"
    );
    let args = ["--captions".into(), raw, "--language".into(), "xx".into()];
    let (code, err, ..) = retrieval_run("tiny-RN", "native", repo, &args);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("line 1") && err.contains("\"xx\""), "{err}");
    let other = s(&fixtures().join("retrieval/captions.jsonl"));
    let args = [
        "--captions".into(),
        other,
        "--images-root".into(),
        s(&fixtures()),
        "--language".into(),
        "de".into(),
    ];
    let (code, err, ..) = retrieval_run("tiny-RN", "native", repo, &args);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--language"), "{err}");
}

#[test]
fn retrieval_reads_open_clip_csv_files_as_its_csv_dataset_does() {
    let expected = read_json(&fixtures().join("retrieval/expected.json"));
    let folder = fixtures().join("retrieval");
    let tsv = s(&folder.join("captions_open_clip.tsv"));
    let custom = s(&folder.join("captions_open_clip_custom.csv"));
    let flags = |v: &[&str]| v.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    let root = ["--images-root", &s(&fixtures())];
    let runs = [
        // open_clip's default layout, found by its header; paths as written from the
        // working directory, as open_clip opens them.
        (
            "tiny-RN",
            "native",
            fixtures(),
            flags(&["--captions", &tsv]),
        ),
        (
            "tiny-RN",
            "candle",
            PathBuf::from("."),
            flags(&[&["--captions", &tsv][..], &root].concat()),
        ),
        (
            "tiny-ViT",
            "native",
            PathBuf::from("."),
            flags(
                &[
                    &[
                        "--captions",
                        &custom,
                        "--csv-separator",
                        ",",
                        "--csv-img-key",
                        "path",
                    ][..],
                    &["--csv-caption-key", "caption"],
                    &root,
                ]
                .concat(),
            ),
        ),
    ];
    for (model, engine, cwd, extra) in runs {
        let (code, err, r, pairs) = retrieval_run(model, engine, &cwd, &extra);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(r["format"], "csv");
        assert_eq!(
            (r["num_images"].as_u64(), r["num_captions"].as_u64()),
            (Some(6), Some(8))
        );
        assert!(
            pairs.contains(&("shapes_odd.jpg".into(), "Café “quoted” ﬁ".into())),
            "{pairs:?}"
        );
        for (k, v) in expected["open_clip_csv"][model].as_object().unwrap() {
            if r["metrics"].get(k).is_some() {
                assert_eq!(
                    r["metrics"][k].as_f64(),
                    v.as_f64(),
                    "{model} {engine}: {k}"
                );
            }
        }
        assert!(r["metrics"]["image_retrieval_recall@3"].is_number());
    }
    // Without the column flags the custom file is no CSV of open_clip's layout (the Flickr
    // text, which it is not either); --format csv names the missing column and those there;
    // the flags mean nothing to another format.
    let cases = [
        (flags(&["--captions", &custom]), 3, "line 2: expected IMAGE.jpg,CAPTION"),
        (
            flags(&["--captions", &custom, "--format", "csv"]),
            3,
            "no column \"filepath\" in the header (columns separated by ',': caption, path); --csv-img-key",
        ),
        (
            flags(&[
                "--captions",
                &s(&folder.join("captions.jsonl")),
                "--format",
                "jsonl",
                "--csv-img-key",
                "x",
            ]),
            2,
            "apply to open_clip CSV files, not to",
        ),
        (flags(&["--captions", &tsv, "--csv-separator", "ab"]), 2, "--csv-separator"),
    ];
    for (extra, want, says) in cases {
        let (code, err, ..) = retrieval_run("tiny-RN", "native", Path::new("."), &extra);
        assert_eq!(code, Some(want), "{err}");
        assert!(err.contains(says), "{says}: {err}");
    }
}

#[test]
fn retrieval_pairing_rows_equals_open_clip_validation() {
    // open_clip's own `evaluate` on the reference's features of this CSV's rows (one image on
    // rows 0, 4 and 7, another on 1 and 6), at validation batch sizes 3 and 64.
    let expected = read_json(&fixtures().join("retrieval/expected.json"));
    let file = s(&fixtures().join("retrieval/captions_open_clip_rows.tsv"));
    for model in ["tiny-RN", "tiny-ViT"] {
        for engine in ["native", "candle"] {
            for batch in ["3", "64"] {
                let mut extra = vec![
                    "--captions".to_string(),
                    file.clone(),
                    "--pairing".into(),
                    "rows".into(),
                    "--recall-k".into(),
                    "10".into(),
                ];
                if batch != "64" {
                    // 64 is the default, as open_clip's --batch-size.
                    extra.extend(["--batch-size-test".to_string(), batch.into()]);
                }
                let (code, err, r, pairs) = retrieval_run(model, engine, &fixtures(), &extra);
                assert_eq!(code, Some(0), "{err}");
                let what = format!("{model} {engine} batch {batch}");
                assert_open_clip_metrics(&r, &expected["open_clip_rows"][model][batch], &what);
                assert_eq!(r["pairing"], "rows", "{what}");
                assert_eq!(r["loss_batch_size"].as_u64(), batch.parse().ok(), "{what}");
                // exp(2.6592600) from the checkpoint: 1/0.07.
                let scale = r["logit_scale"].as_f64().unwrap();
                assert!((scale - 14.285714).abs() < 1e-5, "{what}: {scale}");
                assert_eq!(
                    (r["num_images"].as_u64(), r["num_captions"].as_u64()),
                    (Some(5), Some(8))
                );
                // --save-ranks lists the rows in the file's order.
                assert_eq!(pairs.len(), 8, "{what}");
                assert_eq!(
                    pairs[1],
                    ("shapes_wide.jpg".into(), "hello world".into()),
                    "{what}"
                );
                assert_eq!(pairs[4].1, "a bad photo of the flower.", "{what}");
            }
        }
    }
    // The summary line says which protocol; the default is CLIP_benchmark's grouping.
    let line = |extra: &[&str]| {
        let o = bin()
            .current_dir(fixtures())
            .arg("retrieval")
            .args(tiny("tiny-RN"))
            .args(["--captions", &file, "-q"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let rows = line(&["--pairing", "rows"]);
    assert!(
        rows.contains("Retrieval (rows)\t") && rows.contains("clip_val_loss 2.33"),
        "{rows}"
    );
    let images = line(&[]);
    assert!(
        images.contains("Retrieval\t") && !images.contains("loss"),
        "{images}"
    );
}

/// open_clip's webdataset validation (checked by scripts/open_clip_wds_order.py): each
/// sample's whole `txt` is one caption, its jpg the image, and each dataloader worker batches
/// its own shards. The CSV's 8 rows in two shards, so that 2 or 4 workers at batch 3 give them
/// in the CSV's order and batches: the CSV's expected metrics.
#[test]
fn retrieval_pairing_rows_reads_webdataset_as_open_clip() {
    let expected = read_json(&fixtures().join("retrieval/expected.json"));
    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(fixtures().join("retrieval/captions_open_clip_rows.tsv")).unwrap();
    let rows: Vec<(&str, String)> = text
        .lines()
        .skip(1)
        .map(|l| l.split_once('\t').unwrap())
        .map(|(image, c)| (image, c.replace("photo of the", "photo\nof the")))
        .collect();
    assert!(rows[4].1.contains('\n'));
    for (shard, members) in [(0, vec![0, 1, 2, 6, 7]), (1, vec![3, 4, 5])] {
        let mut m = Vec::new();
        for r in members {
            if r == 1 {
                // Another image as png: CLIP_benchmark's reading would take it.
                let png = std::fs::read(fixtures().join("images/blobs_rgba.png")).unwrap();
                m.push((format!("{r:04}.png"), png));
            }
            let img = std::fs::read(fixtures().join(rows[r].0)).unwrap();
            m.push((format!("{r:04}.jpg"), img));
            m.push((format!("{r:04}.txt"), rows[r].1.clone().into_bytes()));
        }
        write_tar(&dir.path().join(format!("{shard}.tar")), &m);
    }
    let shards = s(&dir.path().join("{0..1}.tar"));
    let run = |model: &str, engine: &str, extra: &[&str]| {
        let (out, ranks) = (dir.path().join("r.json"), dir.path().join("r.csv"));
        let o = bin()
            .arg("retrieval")
            .args(tiny(model))
            .args([
                "--engine",
                engine,
                "--captions",
                &shards,
                "--pairing",
                "rows",
            ])
            .args(RECALL_1_TO_10)
            .args(["--batch-size-test", "3", "-q"])
            .args(extra)
            .arg("--output")
            .arg(&out)
            .arg("--save-ranks")
            .arg(&ranks)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (read_json(&out), std::fs::read_to_string(&ranks).unwrap())
    };
    for model in ["tiny-RN", "tiny-ViT"] {
        let want = &expected["open_clip_rows"][model]["3"];
        let loss = want["clip_val_loss"].as_f64().unwrap();
        for engine in ["native", "candle"] {
            for workers in [None, Some("2")] {
                let extra: Vec<&str> = workers
                    .iter()
                    .flat_map(|w| ["--loader-workers", w])
                    .collect();
                let (r, ranks) = run(model, engine, &extra);
                let what = format!("{model} {engine} {workers:?}");
                assert_open_clip_metrics(&r, want, &what);
                assert_eq!(r["format"], "wds", "{what}");
                assert_eq!(r["loader_workers"].as_u64(), Some(workers.map_or(4, |_| 2)));
                assert_eq!(
                    (r["num_images"].as_u64(), r["num_captions"].as_u64()),
                    (Some(8), Some(8)),
                    "{what}"
                );
                // The rows listed in the loader's order: the CSV's, each sample's jpg.
                let images: Vec<&str> = ranks
                    .lines()
                    .filter(|l| l.starts_with("image_to_text,"))
                    .map(|l| l.split(',').nth(2).unwrap())
                    .collect();
                let names: Vec<String> = (0..8).map(|r| format!("/{r:04}.jpg")).collect();
                assert!(
                    images.len() == 8 && images.iter().zip(&names).all(|(i, n)| i.ends_with(n)),
                    "{what}: {images:?}"
                );
            }
        }
        // One worker reads shard 0 then shard 1: other batches, another loss.
        let (r, _) = run(model, "native", &["--loader-workers", "1"]);
        let one = r["metrics"]["clip_val_loss"].as_f64().unwrap();
        assert!((one - loss).abs() > 1e-3 * loss, "{model}: {one} vs {loss}");
    }
    let o = bin()
        .arg("retrieval")
        .args(tiny("tiny-RN"))
        .args(["--captions", &shards, "--loader-workers", "2"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(2) && e.contains("--loader-workers"),
        "{e}"
    );
}

#[test]
fn retrieval_bad_captions_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixtures().join("images/blobs_rgb.jpg");
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad.jsonl", format!("{{\"image\": \"{}\", \"captions\": [\"a\"]}}\n{{oops\n", s(&img)), "line 2"),
        ("missing.jsonl", "{\"image\": \"nope.jpg\", \"caption\": \"a\"}\n".into(), "does not exist"),
        ("nocaps.jsonl", format!("{{\"image\": \"{}\", \"captions\": []}}\n", s(&img)), "no captions"),
        ("empty.jsonl", String::new(), "no captioned images"),
        ("bad.txt", "image,caption\nno image here\n".into(), "line 2"),
        (
            "nocaps.json",
            format!(
                "{{\"images\": [{{\"id\": 1, \"file_name\": \"{}\"}}, {{\"id\": 2, \"file_name\": \"{}\"}}], \"annotations\": [{{\"image_id\": 1, \"caption\": \"x\"}}]}}",
                s(&img),
                s(&img)
            ),
            "image id 2",
        ),
    ];
    for (name, body, culprit) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        let o = bin()
            .arg("retrieval")
            .args(tiny("tiny-RN"))
            .arg("--captions")
            .arg(&p)
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{name}: {e}");
        assert!(!e.contains("panicked"), "{e}");
        let line = e.lines().find(|l| l.starts_with("error: ")).unwrap();
        assert!(
            line.contains(name) && line.contains(culprit),
            "{name}: {line}"
        );
    }
    // Karpathy's files hold several splits: one that is not there is named with those that
    // are; --split means nothing to a file with one set (a usage error).
    for (file, code, says) in [
        (
            "captions_karpathy.json",
            3,
            "split \"val\" (the file's splits: test, train",
        ),
        ("captions.jsonl", 2, "--split applies to"),
    ] {
        let o = bin()
            .arg("retrieval")
            .args(tiny("tiny-RN"))
            .args(["--split", "val", "--images-root"])
            .arg(fixtures())
            .arg("--captions")
            .arg(fixtures().join("retrieval").join(file))
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{e}");
        assert!(e.contains(file) && e.contains(says), "{e}");
    }
    // With --skip-unreadable the missing image is left out and listed.
    let p = dir.path().join("mixed.jsonl");
    std::fs::write(
        &p,
        format!(
            "{{\"image\": \"{}\", \"caption\": \"a\"}}\n{{\"image\": \"gone.jpg\", \"caption\": \"b\"}}\n",
            s(&img)
        ),
    )
    .unwrap();
    let r = run_skipping_unreadable("retrieval", &p, dir.path());
    assert_eq!(r["num_images"], 1);
    assert_eq!(r["skipped"].as_array().unwrap().len(), 1);
}

/// train/ and test/ ImageFolders of the fixture images as the dev script split them.
fn probe_folders(dir: &Path, expected: &serde_json::Value) -> (PathBuf, PathBuf) {
    for im in expected["layout"]["images"].as_array().unwrap() {
        let file = im["file"].as_str().unwrap();
        let d = dir
            .join(im["split"].as_str().unwrap())
            .join(im["class"].as_str().unwrap());
        std::fs::create_dir_all(&d).unwrap();
        let src = fixtures().join(file);
        // torchvision's ImageFolder lists no GIF; the content decides the decoder (PIL's
        // rule), so the GIF fixture travels as `.png`.
        let name = match src.extension() {
            Some(e) if e == "gif" => src.with_extension("png"),
            _ => src.clone(),
        };
        std::fs::copy(&src, d.join(name.file_name().unwrap())).unwrap();
    }
    (dir.join("train"), dir.join("test"))
}

/// The same split as CLIP_benchmark's webdataset layout: train/ in two shards, test/ in one,
/// `classnames.txt`, labels the classes' sorted positions. Members other than jpg/png/webp are
/// stored as `.png` (decoders read the content, not the name, as PIL does).
fn probe_wds(dir: &Path, expected: &serde_json::Value) -> PathBuf {
    let classes: Vec<&str> = expected["layout"]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    type Members = Vec<(String, Vec<u8>)>;
    let mut shards: HashMap<(String, usize), Members> = HashMap::new();
    for (i, im) in expected["layout"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let file = Path::new(im["file"].as_str().unwrap());
        let split = im["split"].as_str().unwrap().to_string();
        let shard = if split == "train" { i % 2 } else { 0 };
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let ext = file.extension().unwrap().to_string_lossy().into_owned();
        let ext = if ["jpg", "png", "webp"].contains(&ext.as_str()) {
            ext
        } else {
            "png".into()
        };
        let label = classes
            .iter()
            .position(|c| *c == im["class"].as_str().unwrap())
            .unwrap();
        let m = shards.entry((split, shard)).or_default();
        m.push((
            format!("{stem}.{ext}"),
            std::fs::read(fixtures().join(file)).unwrap(),
        ));
        m.push((format!("{stem}.cls"), label.to_string().into_bytes()));
    }
    let root = dir.join("wds_probe");
    for ((split, shard), members) in &shards {
        std::fs::create_dir_all(root.join(split)).unwrap();
        write_tar(&root.join(format!("{split}/{shard}.tar")), members);
    }
    std::fs::write(root.join("train/nshards.txt"), "2\n").unwrap();
    std::fs::write(root.join("test/nshards.txt"), "1\n").unwrap();
    std::fs::write(root.join("classnames.txt"), classes.join("\n") + "\n").unwrap();
    root
}

/// Test predictions by file stem (`path,label,pred1`).
fn probe_predictions(csv: &Path) -> HashMap<String, u64> {
    csv_rows(csv)
        .into_iter()
        .map(|f| {
            let stem = Path::new(&f[0])
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (stem, f[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn linear_probe_predictions_equal_scikit_learn_on_the_reference_features() {
    let expected = read_json(&fixtures().join("probe/expected.json"));
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = probe_folders(dir.path(), &expected);
    let wds = probe_wds(dir.path(), &expected);
    let cache = dir.path().join("cache");
    // ImageFolders on both engines; the webdataset layout (its test split found from --train)
    // on the native one.
    let inputs = [
        ("folder", "native", vec![train.clone(), test.clone()]),
        ("folder", "candle", vec![train.clone(), test.clone()]),
        ("wds", "native", vec![wds.clone()]),
    ];
    for case in expected["cases"].as_array().unwrap() {
        let model = case["model"].as_str().unwrap();
        let c = case["C"].as_f64().unwrap();
        for (layout, engine, paths) in &inputs {
            let (out, preds) = (dir.path().join("p.json"), dir.path().join("p.csv"));
            let mut cmd = bin();
            cmd.arg("linear-probe")
                .args(tiny(model))
                .args(["--engine", engine, "--c", &c.to_string(), "-q"])
                .arg("--train")
                .arg(&paths[0])
                .arg("--feature-cache")
                .arg(&cache)
                .arg("--output")
                .arg(&out)
                .arg("--save-predictions")
                .arg(&preds);
            if let Some(t) = paths.get(1) {
                cmd.arg("--test").arg(t);
            }
            if case["normalize"].as_bool().unwrap() {
                cmd.arg("--normalize");
            }
            let o = cmd.output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let ours = probe_predictions(&preds);
            // webdataset's decoders convert to RGB before the resize (the palette and CMYK
            // images' features differ): scikit-learn on features made that way.
            let key = match *layout {
                "wds" => "wds_predictions",
                _ => "predictions",
            };
            let want = case[key].as_object().unwrap();
            assert_eq!(ours.len(), want.len(), "{layout}");
            for (name, p) in want {
                let stem = Path::new(name).file_stem().unwrap().to_string_lossy();
                assert_eq!(
                    ours[stem.as_ref()],
                    p.as_u64().unwrap(),
                    "{model} C={c} {layout} {engine}: {name}"
                );
            }
            let r = read_json(&out);
            assert_eq!(r["task"], "linear_probe");
            assert_eq!(r["layout"]["train"], *layout);
            assert_eq!(r["layout"]["test"], *layout);
            assert_eq!(r["C"].as_f64(), Some(c));
            assert_eq!(r["converged"], true);
            let stop = r["stop"].as_str().unwrap();
            assert!(["gradient", "loss_reduction"].contains(&stop), "{stop}");
            assert_eq!(r["classes"], expected["layout"]["classes"]);
            let acc1 = r["metrics"]["lp_acc1"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc1));
        }
    }
    // The cache was written once per model, input and split, then read.
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 12);
}

/// Shard lists give the layout's predictions; a missing --test and a label past the training
/// classes are named.
#[test]
fn linear_probe_reads_shard_lists_and_names_bad_labels() {
    let expected = read_json(&fixtures().join("probe/expected.json"));
    let dir = tempfile::tempdir().unwrap();
    let wds = probe_wds(dir.path(), &expected);
    let (train, _) = probe_folders(dir.path(), &expected);
    let run = |args: &[PathBuf], preds: &Path| {
        let mut cmd = bin();
        cmd.arg("linear-probe")
            .args(tiny("tiny-ViT"))
            .args(["-q", "--no-feature-cache", "--train"])
            .arg(&args[0]);
        if let Some(t) = args.get(1) {
            cmd.arg("--test").arg(t);
        }
        cmd.arg("--save-predictions").arg(preds).output().unwrap()
    };
    let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    let o = run(std::slice::from_ref(&wds), &a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[wds.join("train/{0..1}.tar"), wds.join("test/0.tar")], &b);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(probe_predictions(&a), probe_predictions(&b));
    assert_eq!(probe_predictions(&a).len(), 11);

    // Few-shot: K past every class's count is the full set; K = 1 trains on one per class.
    let fewshot = |k: &str, out: &Path| {
        let o = bin()
            .arg("linear-probe")
            .args(tiny("tiny-ViT"))
            .args(["-q", "--no-feature-cache", "--fewshot-k", k, "--train"])
            .arg(&wds)
            .arg("--save-predictions")
            .arg(&b)
            .arg("--output")
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_json(out)
    };
    let r = fewshot("100", &dir.path().join("f.json"));
    assert_eq!(probe_predictions(&a), probe_predictions(&b));
    assert_eq!(
        (r["num_train"].as_u64(), r["fewshot_k"].as_u64()),
        (Some(12), Some(100))
    );
    let r = fewshot("1", &dir.path().join("f.json"));
    assert_eq!(
        (r["num_train"].as_u64(), r["seed"].as_u64()),
        (Some(3), Some(0))
    );
    // CLIP_benchmark's -1: every image.
    let r = fewshot("-1", &dir.path().join("f.json"));
    assert_eq!(probe_predictions(&a), probe_predictions(&b));
    assert_eq!(
        (r["num_train"].as_u64(), &r["fewshot_k"]),
        (Some(12), &serde_json::Value::Null)
    );

    let o = run(std::slice::from_ref(&train), &a);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("--test"), "{e}");

    // One training class is not a probe (scikit-learn refuses it too).
    let solo = dir.path().join("solo");
    std::fs::create_dir_all(solo.join("only")).unwrap();
    std::fs::copy(
        fixtures().join("images/shapes_rgb.jpg"),
        solo.join("only/x.jpg"),
    )
    .unwrap();
    let o = run(&[solo.clone(), solo], &a);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("\"only\"") && e.contains("two classes"), "{e}");

    let bad = dir.path().join("bad.tar");
    let img = std::fs::read(fixtures().join("images/shapes_rgb.jpg")).unwrap();
    write_tar(
        &bad,
        &[
            ("k0.jpg".into(), img.clone()),
            ("k0.cls".into(), b"1".to_vec()),
            ("k1.jpg".into(), img),
            ("k1.cls".into(), b"7".to_vec()),
        ],
    );
    let o = run(&[wds.clone(), bad.clone()], &a);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(
        e.contains("bad.tar") && e.contains("k1") && e.contains("--test"),
        "{e}"
    );
}

#[test]
fn linear_probe_c_search_reports_its_choice_and_bad_folders_are_named() {
    let expected = read_json(&fixtures().join("probe/expected.json"));
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = probe_folders(dir.path(), &expected);
    let out = dir.path().join("s.json");
    let o = bin()
        .arg("linear-probe")
        .args(tiny("tiny-RN"))
        .args([
            "--c-search",
            "--val-fraction",
            "0.3",
            "-q",
            "--no-feature-cache",
        ])
        .arg("--train")
        .arg(&train)
        .arg("--test")
        .arg(&test)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = read_json(&out);
    let c = r["C"].as_f64().unwrap();
    let trials = r["c_trials"].as_array().unwrap();
    // The CLIP paper's search: 7 values two decades apart, then 4 halvings (1 or 2 each).
    assert!((11..=15).contains(&trials.len()), "{r}");
    for t in trials {
        let e = t["C"].as_f64().unwrap().log10() * 8.0;
        assert!((e - e.round()).abs() < 1e-9 && e.abs() <= 48.0, "{t}");
    }
    let best = trials
        .iter()
        .map(|t| t["val_acc1"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let chosen = trials.iter().find(|t| t["C"].as_f64() == Some(c)).unwrap();
    assert_eq!(chosen["val_acc1"].as_f64(), Some(best));
    assert_eq!(
        r["num_train"].as_u64().unwrap() + r["num_val"].as_u64().unwrap(),
        12
    );
    // A test class the training set does not have.
    std::fs::create_dir_all(test.join("zebra")).unwrap();
    std::fs::copy(
        fixtures().join("images/blobs_rgb.jpg"),
        test.join("zebra/z.jpg"),
    )
    .unwrap();
    let o = bin()
        .arg("linear-probe")
        .args(tiny("tiny-RN"))
        .arg("--train")
        .arg(&train)
        .arg("--test")
        .arg(&test)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("zebra") && e.contains("--test"), "{e}");
    let o = bin()
        .arg("linear-probe")
        .args(tiny("tiny-RN"))
        .arg("--train")
        .arg(dir.path().join("nope"))
        .arg("--test")
        .arg(&test)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("nope") && e.contains("--train"), "{e}");
}

/// The same captioned set as shards and as JSON lines gives the same metrics (the JSON-lines
/// path is checked against the reference above). `txt` holds one caption per line, so the
/// reference's empty prompt becomes "empty" in both.
#[test]
fn retrieval_reads_webdataset_shards() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixtures().join("retrieval/captions.jsonl")).unwrap();
    let mut members = Vec::new();
    let mut jsonl = String::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let img = std::fs::read(fixtures().join(v["image"].as_str().unwrap())).unwrap();
        let caps: Vec<&str> = v["captions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .map(|c| if c.is_empty() { "empty" } else { c })
            .collect();
        jsonl.push_str(
            &serde_json::json!({"image": s(&fixtures().join(v["image"].as_str().unwrap())), "captions": caps})
                .to_string(),
        );
        jsonl.push('\n');
        members.push((format!("{i:04}.jpg"), img));
        members.push((format!("{i:04}.txt"), caps.join("\n").into_bytes()));
    }
    write_tar(&dir.path().join("0.tar"), &members);
    std::fs::write(dir.path().join("c.jsonl"), jsonl).unwrap();
    let run = |captions: PathBuf, out: &Path| {
        let o = bin()
            .arg("retrieval")
            .args(tiny("tiny-ViT"))
            .arg("--captions")
            .arg(captions)
            .args(["--recall-k", "1", "2", "3", "-q", "--output"])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_json(out)
    };
    let w = run(dir.path().join("0.tar"), &dir.path().join("w.json"));
    let j = run(dir.path().join("c.jsonl"), &dir.path().join("j.json"));
    assert_eq!(w["format"], "wds");
    assert_eq!(
        (w["num_images"].as_u64(), w["num_captions"].as_u64()),
        (Some(7), Some(9))
    );
    assert_eq!(w["metrics"], j["metrics"]);
}

/// CLIP_benchmark's retrieval sets open each image with `.convert("RGB")` before the resize,
/// as webdataset's decoder does (tests/preprocess_parity.rs checks those pixels against PIL's):
/// a file set and the same images in a shard score alike. open_clip's CSV dataset
/// (`--pairing rows`) opens a file as it is, so there the palette, GIF and transparent images
/// score otherwise.
#[test]
fn retrieval_files_convert_to_rgb_first_as_clip_benchmark_does() {
    let dir = tempfile::tempdir().unwrap();
    let images = [
        "images/blobs_palette.png",
        "images/shapes_gif.gif",
        "images/shapes_palette.png",
        "wds/alpha_rgba.png",
        "wds/alpha_la.png",
        "images/blobs_rgb.jpg",
    ];
    let prompts = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    let prompts: Vec<String> = serde_json::from_str::<serde_json::Value>(&prompts).unwrap()
        ["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .filter(|p| !p.is_empty() && p.len() < 40)
        .collect();
    // Three captions an image (CLIP_benchmark's grouping), and one (a row each for rows).
    for (name, per) in [("c", 3), ("one", 1)] {
        let (mut jsonl, mut members) = (String::new(), Vec::new());
        for (i, image) in images.iter().enumerate() {
            let caps: Vec<&str> = (0..per)
                .map(|k| prompts[(i + 2 * k) % prompts.len()].as_str())
                .collect();
            let path = fixtures().join(image);
            jsonl += &serde_json::json!({"image": s(&path), "captions": caps}).to_string();
            jsonl.push('\n');
            let ext = if image.ends_with(".jpg") {
                "jpg"
            } else {
                "png"
            };
            members.push((format!("{i:03}.{ext}"), std::fs::read(&path).unwrap()));
            members.push((format!("{i:03}.txt"), caps.join("\n").into_bytes()));
        }
        std::fs::write(dir.path().join(format!("{name}.jsonl")), jsonl).unwrap();
        write_tar(&dir.path().join(format!("{name}.tar")), &members);
    }
    let run = |model: &str, captions: &str, extra: &[&str]| {
        let out = dir.path().join("r.json");
        let o = bin()
            .arg("retrieval")
            .args(tiny(model))
            .arg("--captions")
            .arg(dir.path().join(captions))
            .args(["--recall-k", "1", "2", "3", "5", "-q", "--output"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_json(&out)["metrics"].clone()
    };
    for model in ["tiny-RN", "tiny-ViT"] {
        assert_eq!(
            run(model, "c.jsonl", &[]),
            run(model, "c.tar", &[]),
            "{model}"
        );
        let rows = ["--pairing", "rows", "--batch-size-test", "4"];
        let (file, shard) = (run(model, "one.jsonl", &rows), run(model, "one.tar", &rows));
        let loss = |m: &serde_json::Value| m["clip_val_loss"].as_f64().unwrap();
        assert!(
            (loss(&file) - loss(&shard)).abs() > 1e-4,
            "{model}: {file} {shard}"
        );
    }
}

/// `dev probe-fit` (scripts/probe_scale.py's entry) fits given features as scikit-learn does:
/// the seeded synthetic problem's predictions.
#[test]
fn probe_fit_on_given_features_predicts_as_scikit_learn() {
    use candle_core::{Device, Tensor};
    let expected = read_json(&fixtures().join("probe/expected.json"));
    let syn = &expected["synthetic"];
    let dim = syn["dim"].as_u64().unwrap() as usize;
    let x: Vec<f32> = serde_json::from_value(syn["x"].clone()).unwrap();
    let y: Vec<i64> = serde_json::from_value(syn["y"].clone()).unwrap();
    let n = y.len();
    let xt = Tensor::from_vec(x, (n, dim), &Device::Cpu).unwrap();
    let yt = Tensor::from_vec(y, n, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.safetensors");
    candle_core::safetensors::save(
        &HashMap::from([
            ("train_x", xt.clone()),
            ("train_y", yt.clone()),
            ("test_x", xt),
            ("test_y", yt),
        ]),
        &f,
    )
    .unwrap();
    for fit in syn["fits"].as_array().unwrap() {
        let c = fit["C"].as_f64().unwrap();
        let o = bin()
            .args(["dev", "probe-fit"])
            .arg(&f)
            .args(["--c", &c.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["converged"], true);
        assert_eq!(r["predictions"], fit["predictions"], "C={c}");
        // The same features: scipy's L-BFGS-B iterates, so scikit-learn's iteration count.
        assert_eq!(r["iterations"], fit["n_iter"], "C={c}");
    }
}

/// `retrieval`, `caption-selection` and `linear-probe` with `--checkpoint A B`: one run per
/// model over the data read once, each model's scores CLIP_benchmark's (scikit-learn's for the
/// probe) on the reference features, each line led by its checkpoint.
#[test]
fn retrieval_selection_and_probe_evaluate_several_checkpoints() {
    let expected = read_json(&fixtures().join("retrieval/expected.json"));
    let dir = tempfile::tempdir().unwrap();
    let ck = |m: &str| s(&fixtures().join(format!("{m}.pth.tar")));
    // A command over both tiny checkpoints.
    let both_models = |cmd: &str| {
        let mut c = bin();
        c.arg(cmd)
            .args([
                "--checkpoint",
                &ck("tiny-RN"),
                &ck("tiny-ViT"),
                "--model-config",
            ])
            .arg(fixtures().join("tiny-models.yml"));
        c
    };
    let run = |out: &str| {
        both_models("retrieval")
            .arg("--images-root")
            .arg(fixtures())
            .arg("--captions")
            .arg(fixtures().join("retrieval/captions.jsonl"))
            .args(RECALL_1_TO_10)
            .args(["-q", "--output", out])
            .output()
            .unwrap()
    };
    let o = run(&s(&dir.path().join("{model}_{task}.json")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (line, model) in lines.iter().zip(["tiny-RN", "tiny-ViT"]) {
        assert!(
            line.starts_with(&format!("{model}.pth.tar\tcaptions Retrieval")),
            "{line}"
        );
        let r = read_json(&dir.path().join(format!("{model}_zeroshot_retrieval.json")));
        assert_eq!(r["model"], model);
        for (k, v) in expected[model].as_object().unwrap() {
            assert_eq!(r["metrics"][k].as_f64(), v.as_f64(), "{model}: {k}");
        }
    }
    // A plain path cannot hold two models' results.
    let o = run(&s(&dir.path().join("r.json")));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("each needs its own file"));
    // caption-selection likewise: SugarCREPE's scores per model, CLIP_benchmark's.
    let selected = read_json(&fixtures().join("selection/expected.json"));
    let o = both_models("caption-selection")
        .arg("--images-root")
        .arg(fixtures())
        .arg("--captions")
        .arg(fixtures().join("selection/sugar_crepe.json"))
        .args(["-q", "--output"])
        .arg(dir.path().join("{pretrained}-{task}.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    for model in ["tiny-RN", "tiny-ViT"] {
        assert!(
            stdout.contains(&format!(
                "{model}.pth.tar\tsugar_crepe/sugar_crepe Caption selection"
            )),
            "{stdout}"
        );
        let r = read_json(
            &dir.path()
                .join(format!("{model}.pth.tar-image_caption_selection.json")),
        );
        let want = selected[model]["sugar_crepe"]["metrics"]["acc"]
            .as_f64()
            .unwrap();
        assert!(
            (r["metrics"]["acc"].as_f64().unwrap() - want).abs() < 1e-6,
            "{model}"
        );
    }
    // linear-probe likewise: each model's test predictions scikit-learn's (C = 0.316, raw).
    let probe = read_json(&fixtures().join("probe/expected.json"));
    let (train, test) = probe_folders(&dir.path().join("probe"), &probe);
    let o = both_models("linear-probe")
        .arg("--train")
        .arg(&train)
        .arg("--test")
        .arg(&test)
        .args([
            "--c",
            "0.316",
            "--no-feature-cache",
            "-q",
            "--save-predictions",
        ])
        .arg(dir.path().join("{model}.csv"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    let mut checked = 0;
    for case in probe["cases"].as_array().unwrap() {
        let model = case["model"].as_str().unwrap();
        if case["C"].as_f64() != Some(0.316) || case["normalize"].as_bool() != Some(false) {
            continue;
        }
        let ours = probe_predictions(&dir.path().join(format!("{model}.csv")));
        for (name, p) in case["predictions"].as_object().unwrap() {
            let stem = Path::new(name).file_stem().unwrap().to_string_lossy();
            assert_eq!(ours[stem.as_ref()], p.as_u64().unwrap(), "{model}: {name}");
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
}

/// CLIP_benchmark's `--output` templates name each result file (eval with two datasets,
/// caption-selection with two sets, retrieval, linear-probe), and `--skip-existing` leaves a
/// run whose file exists: untouched, without loading the model when every file exists.
#[test]
fn outputs_follow_clip_benchmark_templates_and_skip_existing_leaves_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let template = s(&d.join("{dataset}_{pretrained}_{model}_{language}_{task}.json"));
    let eval = |extra: &[&str]| {
        bin()
            .arg("eval")
            .args(tiny("tiny-RN"))
            .args(["--test-dataset", "flowers+pets", "--no-text-cache", "-q"])
            .arg("--test-data-path")
            .arg(fixtures().join("torchvision"))
            .args(extra)
            .output()
            .unwrap()
    };
    let preds = s(&d.join("{dataset}.csv"));
    let o = eval(&["--output", &template, "--save-predictions", &preds]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file =
        |ds: &str, task: &str| d.join(format!("{ds}_tiny-RN.pth.tar_tiny-RN_en_{task}.json"));
    for ds in ["flowers", "pets"] {
        let r = read_json(&file(ds, "zeroshot_classification"));
        assert_eq!(r["dataset"], ds);
        assert_eq!(r["language"], "en");
        assert!(d.join(format!("{ds}.csv")).is_file());
    }
    // --skip-existing: flowers' file (marked) stays; pets' (removed) is written again.
    let flowers = file("flowers", "zeroshot_classification");
    std::fs::write(&flowers, "kept").unwrap();
    std::fs::remove_file(file("pets", "zeroshot_classification")).unwrap();
    let run_eval = |data: &Path| {
        bin()
            .arg("eval")
            .args(tiny("tiny-RN"))
            .args(["--test-dataset", "flowers+pets", "--no-text-cache"])
            .arg("--test-data-path")
            .arg(data)
            .args(["--output", &template, "--skip-existing"])
            .output()
            .unwrap()
    };
    let o = run_eval(&fixtures().join("torchvision"));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("flowers: skipped"), "{e}");
    assert_eq!(std::fs::read_to_string(&flowers).unwrap(), "kept");
    assert_eq!(
        read_json(&file("pets", "zeroshot_classification"))["dataset"],
        "pets"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    // Every file there: nothing is listed or loaded (the data path is not even read).
    let o = run_eval(&d.join("no-such-root"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());

    // Bad templates and colliding names are usage errors naming the flag, before any work.
    for (out, msg) in [
        ("{datset}.json", "unknown placeholder {datset}"),
        ("{dataset.json", "without its '}'"),
        ("{model}.json", "would both write"),
    ] {
        let o = eval(&["--output", &s(&d.join(out))]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{out}: {e}");
        assert!(e.contains("--output") && e.contains(msg), "{out}: {e}");
    }
    let o = eval(&["--skip-existing"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--skip-existing needs --output"));

    // caption-selection: two SugarCREPE tasks, one file each by the template.
    let sc = d.join("sc");
    std::fs::create_dir_all(&sc).unwrap();
    for t in ["swap_obj", "add_att"] {
        std::fs::copy(
            fixtures().join("selection/sugar_crepe.json"),
            sc.join(format!("{t}.json")),
        )
        .unwrap();
    }
    let select = |extra: &[&str]| {
        bin()
            .arg("caption-selection")
            .args(tiny("tiny-RN"))
            .arg("--captions")
            .arg(&sc)
            .arg("--images-root")
            .arg(fixtures())
            .args(["--output", &template])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = select(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for t in ["add_att", "swap_obj"] {
        let r = read_json(&file(
            &format!("sugar_crepe_{t}"),
            "image_caption_selection",
        ));
        assert_eq!(r["dataset"], format!("sugar_crepe/{t}"));
    }
    std::fs::remove_file(file("sugar_crepe_swap_obj", "image_caption_selection")).unwrap();
    let o = select(&["--skip-existing"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("sugar_crepe/swap_obj"), "{stdout}");

    // retrieval and linear-probe: their tasks' names; a second run is skipped.
    let retrieve = || {
        bin()
            .arg("retrieval")
            .args(tiny("tiny-RN"))
            .arg("--captions")
            .arg(fixtures().join("retrieval/captions.jsonl"))
            .arg("--images-root")
            .arg(fixtures())
            .args(["--output", &template, "--skip-existing", "-q"])
            .output()
            .unwrap()
    };
    for run in 0..2 {
        let o = retrieve();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout.is_empty(), run == 1);
    }
    assert!(file("captions", "zeroshot_retrieval").is_file());
    let expected = read_json(&fixtures().join("probe/expected.json"));
    let (train, test) = probe_folders(&d.join("probe"), &expected);
    let o = bin()
        .arg("linear-probe")
        .args(tiny("tiny-RN"))
        .arg("--train")
        .arg(&train)
        .arg("--test")
        .arg(&test)
        .args(["--no-feature-cache", "-q", "--output", &template])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        read_json(&file("test", "linear_probe"))["task"],
        "linear_probe"
    );
}

/// CLIP_benchmark's own linear probe, run unchanged on the CPU with amp off
/// (scripts/dev/cb_linear_probe_reference.py): torch's random draws (randperm, the layer's
/// initial weights, a DataLoader's seeds) are reproduced exactly, and on seeded synthetic
/// features the weight-decay search tries the same decays with the same validation accuracy,
/// picks the same one, and the final layer's weights, test logits and metrics match.
#[test]
fn adamw_probe_equals_clip_benchmarks_on_the_same_features() {
    use pyramidclip::adamw_probe::{self, Linear, Options};
    use pyramidclip::probe::Dataset;
    use pyramidclip::torch_rng::Generator;
    let r = read_json(&fixtures().join("probe/adamw.json"));
    for c in r["rng"].as_array().unwrap() {
        let seed = c["seed"].as_u64().unwrap();
        let mut g = Generator::new(seed);
        let p10: Vec<usize> = serde_json::from_value(c["randperm10"].clone()).unwrap();
        assert_eq!(g.randperm(10), p10, "seed {seed}");
        let head: Vec<usize> = serde_json::from_value(c["randperm1000_head"].clone()).unwrap();
        assert_eq!(g.randperm(1000)[..20], head[..], "seed {seed}");
        assert_eq!(
            g.random_i64().to_string(),
            c["random_i64"].as_str().unwrap()
        );
        let lin = Linear::init(7, 3, &mut Generator::new(seed));
        let w: Vec<f32> = serde_json::from_value(c["linear_weight"].clone()).unwrap();
        let b: Vec<f32> = serde_json::from_value(c["linear_bias"].clone()).unwrap();
        assert_eq!((lin.weight, lin.bias), (w, b), "seed {seed}");
    }
    let dim = r["dim"].as_u64().unwrap() as usize;
    let split = |s: &str| {
        let x: Vec<f32> = serde_json::from_value(r["features"][s]["x"].clone()).unwrap();
        let y: Vec<usize> = serde_json::from_value(r["features"][s]["y"].clone()).unwrap();
        Dataset::new(x, y, dim)
    };
    let (train, val, test) = (split("train"), split("val"), split("test"));
    for c in r["cases"].as_array().unwrap() {
        let k = c["fewshot_k"].as_i64().unwrap();
        let o = Options {
            lr: c["lr"].as_f64().unwrap(),
            epochs: c["epochs"].as_u64().unwrap() as usize,
            batch_size: c["batch_size"].as_u64().unwrap() as usize,
            seed: c["seed"].as_u64().unwrap(),
            fewshot_k: (k > 0).then_some(k as usize),
            weight_decay: 0.0,
        };
        let what = format!("{o:?}");
        let use_val = c["use_val"].as_bool().unwrap();
        let out = adamw_probe::evaluate(&train, use_val.then_some(&val), &o).unwrap();
        let trials: Vec<(f64, f64)> = c["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["weight_decay"].as_f64().unwrap(),
                    t["val_acc1"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(out.trials.len(), trials.len(), "{what}");
        for (ours, (wd, acc)) in out.trials.iter().zip(&trials) {
            // NumPy's SIMD `power` (AVX-512 builds) and the C library's differ by an ulp at 8
            // of the 97 decays; the search is the same.
            assert!((ours.weight_decay / wd - 1.0).abs() < 1e-15, "{what}");
            assert!(
                (ours.val_acc1 - acc).abs() < 1e-6,
                "{what}: {ours:?} vs {acc}"
            );
        }
        let m = &c["metrics"];
        let wd = m["weight_decay"].as_f64().unwrap();
        assert!(
            out.weight_decay == wd || (out.weight_decay / wd - 1.0).abs() < 1e-15,
            "{what}"
        );
        let w: Vec<f32> = serde_json::from_value(c["weight"].clone()).unwrap();
        let wmax = out
            .model
            .weight
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let logits: Vec<Vec<f32>> = serde_json::from_value(c["test_logits"].clone()).unwrap();
        let ours = out.model.logits(&test);
        let lmax = ours
            .iter()
            .zip(logits.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{what}: max |dW| {wmax:.2e}, max |d logit| {lmax:.2e}");
        assert!(wmax < 1e-5 && lmax < 1e-5, "{what}: {wmax} {lmax}");
        let top = out.model.topk(&test, 5);
        let (a1, a5, mpc) = pyramidclip::probe::accuracy(&top, &test.y, out.model.classes);
        assert!((a1 - m["lp_acc1"].as_f64().unwrap()).abs() < 1e-9, "{what}");
        assert!((a5 - m["lp_acc5"].as_f64().unwrap()).abs() < 1e-9, "{what}");
        let want_mpc = m["lp_mean_per_class_recall"].as_f64().unwrap();
        assert!((mpc - want_mpc).abs() < 1e-9, "{what}");
    }
}

/// `linear-probe --fit adamw` on the fixture images: CLIP_benchmark's probe of the reference's
/// features of the same images (scripts/dev/cb_linear_probe_reference.py), every test
/// prediction and metric, on both engines; with --fewshot-k its pick of the training images.
#[test]
fn linear_probe_fit_adamw_predicts_as_clip_benchmark() {
    let expected = read_json(&fixtures().join("probe/expected.json"));
    let reference = read_json(&fixtures().join("probe/adamw.json"));
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = probe_folders(dir.path(), &expected);
    for case in reference["images"].as_array().unwrap() {
        let model = case["model"].as_str().unwrap();
        let k = case["fewshot_k"].as_i64().unwrap();
        for engine in ["native", "candle"] {
            let what = format!("{model} k={k} {engine}");
            let (out, preds) = (dir.path().join("a.json"), dir.path().join("a.csv"));
            let mut cmd = bin();
            cmd.arg("linear-probe")
                .args(tiny(model))
                .args([
                    "--engine",
                    engine,
                    "--fit",
                    "adamw",
                    "-q",
                    "--no-feature-cache",
                ])
                .args(["--fit-batch-size", &case["batch_size"].to_string()])
                .arg("--train")
                .arg(&train)
                .arg("--test")
                .arg(&test)
                .arg("--output")
                .arg(&out)
                .arg("--save-predictions")
                .arg(&preds);
            if k > 0 {
                cmd.args(["--fewshot-k", &k.to_string()]);
            }
            let o = cmd.output().unwrap();
            assert!(
                o.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let ours = probe_predictions(&preds);
            let want = case["predictions"].as_object().unwrap();
            assert_eq!(ours.len(), want.len(), "{what}");
            for (name, p) in want {
                let stem = Path::new(name).file_stem().unwrap().to_string_lossy();
                assert_eq!(ours[stem.as_ref()], p.as_u64().unwrap(), "{what}: {name}");
            }
            let r = read_json(&out);
            assert_eq!(r["fit"], "adamw", "{what}");
            let (m, w) = (&r["metrics"], &case["metrics"]);
            for key in ["lp_acc1", "lp_mean_per_class_recall"] {
                let d = m[key].as_f64().unwrap() - w[key].as_f64().unwrap();
                assert!(d.abs() < 1e-9, "{what}: {key}");
            }
            // Three classes: CLIP_benchmark reports no top-5.
            assert!(m["lp_acc5"].is_null() && w["lp_acc5"].is_null(), "{what}");
            assert_eq!(m["weight_decay"].as_f64(), Some(0.0));
            assert_eq!(m["fewshot_k"], w["fewshot_k"], "{what}");
            assert_eq!(m["normalized"], true);
        }
    }
    // What --fit adamw does not take is named.
    for (args, says) in [
        (&["--fit", "adamw", "--c", "1"][..], "--c is --fit lbfgs's"),
        (
            &["--weight-decay", "0.1"],
            "--weight-decay is --fit adamw's",
        ),
        (&["--fit", "adamw", "--lr", "0"], "--lr must be positive"),
        (
            &[
                "--fit",
                "adamw",
                "--weight-decay",
                "0.1",
                "--val-fraction",
                "0.3",
            ],
            "the search picks the decay",
        ),
        (
            &["--fit", "adamw", "--fewshot-k", "5"],
            "too few training images",
        ),
    ] {
        let o = bin()
            .arg("linear-probe")
            .args(tiny("tiny-ViT"))
            .args(["-q", "--no-feature-cache", "--train"])
            .arg(&train)
            .arg("--test")
            .arg(&test)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// `r`'s metrics are open_clip's `want`: ranks exactly, the loss within float rounding (the
/// features differ from the reference's in the last bits).
fn assert_open_clip_metrics(r: &serde_json::Value, want: &serde_json::Value, what: &str) {
    for (k, v) in want.as_object().unwrap() {
        let (ours, theirs) = (r["metrics"][k].as_f64().unwrap(), v.as_f64().unwrap());
        if k == "clip_val_loss" {
            assert!(
                (ours - theirs).abs() < 1e-5 * theirs,
                "{what}: {k} {ours} vs {theirs}"
            );
        } else {
            assert_eq!(ours, theirs, "{what}: {k}");
        }
    }
}

/// Recall at the K of open_clip's validation and a few more.
const RECALL_1_TO_10: [&str; 6] = ["--recall-k", "1", "2", "3", "5", "10"];

/// A CoCa's row-paired validation also gives open_clip_train's `val_generative_loss`
/// (`scripts/dev/coca_generative_reference.py`: its own `evaluate` on the rows CSV, batches of
/// 3 and 64), which adds the loss of every 100th batch only (here the first) and divides by
/// every row; `generative_loss_all_rows` is the plain mean, each row's loss as its decoder
/// computes it. Both engines, fp32. A CoCa whose decoder open_clip could not run either (its
/// image tokens wider than the decoder) still gets the other metrics, with a warning.
#[test]
fn coca_rows_give_open_clips_generative_loss() {
    let clip = fixtures().join("clip");
    let want = read_json(&clip.join("coca_generative.json"));
    let rows: Vec<f64> = want["row_losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let all_rows = rows.iter().sum::<f64>() / rows.len() as f64;
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, engine: &str, batch: &str| {
        let out = dir.path().join("g.json");
        let o = bin()
            .current_dir(fixtures())
            .arg("retrieval")
            .arg("--checkpoint")
            .arg(clip.join(format!("{name}.pt")))
            .arg("--model-config")
            .arg(clip.join(format!("{name}.json")))
            .args(["--captions", "retrieval/captions_open_clip_rows.tsv"])
            .args([
                "--pairing",
                "rows",
                "--engine",
                engine,
                "--batch-size-test",
                batch,
            ])
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        (read_json(&out)["metrics"].clone(), stdout, err)
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-5 * b.abs();
    for engine in ["native", "candle"] {
        for batch in ["3", "64"] {
            let (m, stdout, _) = run("tiny-coca-gen", engine, batch);
            let what = format!("{engine} batch {batch}");
            for k in ["clip_val_loss", "val_generative_loss"] {
                let (ours, theirs) = (m[k].as_f64().unwrap(), want[batch][k].as_f64().unwrap());
                assert!(close(ours, theirs), "{what}: {k} {ours} vs {theirs}");
            }
            let ours = m["generative_loss_all_rows"].as_f64().unwrap();
            assert!(close(ours, all_rows), "{what}: {ours} vs {all_rows}");
            assert!(stdout.contains("\tval_generative_loss "), "{stdout}");
        }
    }
    // Batches of 3 count the first batch's 3 rows of 8: well below the mean.
    assert!(want["3"]["val_generative_loss"].as_f64().unwrap() < 0.5 * all_rows);
    let (m, _, err) = run("tiny-coca", "native", "64");
    assert!(m.get("val_generative_loss").is_none(), "{m}");
    assert!(m["clip_val_loss"].as_f64().is_some());
    assert!(
        err.contains("tiny-coca.pt") && err.contains("no val_generative_loss"),
        "{err}"
    );
    // One line, no backtrace.
    assert!(
        !err.contains("candle_core") && !err.contains("  0: "),
        "{err}"
    );
    // `inspect` says what reads the decoder.
    let o = bin()
        .arg("inspect")
        .arg(clip.join("tiny-coca-gen.pt"))
        .arg("--model-config")
        .arg(clip.join("tiny-coca-gen.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let said = "text_decoder.* (55 tensors, the captioning decoder: read only by retrieval";
    assert!(stdout.contains(said), "{stdout}");
}
