//! Bad input: a one-line error naming the culprit, a documented exit code, never a panic.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code, culprit named, no panic, and the error itself on one line.
fn check(o: &Output, code: i32, culprit: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{e}");
    assert!(
        !e.contains("panicked") && !e.contains("RUST_BACKTRACE"),
        "panic: {e}"
    );
    let line = e
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {e}"));
    assert!(
        line.contains(culprit),
        "error does not name {culprit}: {line}"
    );
}

fn cfg() -> String {
    s(&fixtures().join("tiny-models.yml"))
}

/// A minival-like folder whose first class holds `bad` (name, bytes) next to good images.
fn dataset_with(dir: &Path, bad: &[(&str, Vec<u8>)]) -> PathBuf {
    let root = dir.join("data");
    for (i, class) in ["a", "b"].iter().enumerate() {
        let d = root.join(class);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(
            fixtures().join("images/shapes_small.jpg"),
            d.join(format!("good{i}.jpg")),
        )
        .unwrap();
    }
    for (name, bytes) in bad {
        std::fs::write(root.join("a").join(name), bytes).unwrap();
    }
    let names = dir.join("names.txt");
    std::fs::write(&names, "cat\ndog\n").unwrap();
    root
}

/// `pyramidclip CMD` on the tiny RN checkpoint and its config.
fn tiny_rn(cmd: &str) -> std::process::Command {
    let mut c = bin();
    c.args([
        cmd,
        "-e",
        &s(&fixtures().join("tiny-RN.pth.tar")),
        "--model-config",
        &cfg(),
    ]);
    c
}

fn eval_on(dir: &Path, root: &Path, extra: &[&str]) -> Output {
    tiny_rn("eval")
        .args([
            "--test-data-path",
            &s(root),
            "--classnames",
            &s(&dir.join("names.txt")),
            "--text-cache",
            &s(&dir.join("cache")),
            "--device",
            "cpu",
            "--quiet",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut crc = flate2::Crc::new();
    crc.update(&ihdr);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out
}

#[test]
fn unreadable_images_stop_the_run_or_are_skipped() {
    let jpeg = std::fs::read(fixtures().join("images/shapes_rgb.jpg")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.jpg", vec![]),
        ("truncated.jpg", jpeg[..jpeg.len() / 2].to_vec()),
        (
            "corrupt.png",
            b"\x89PNG\r\n\x1a\nthis is not a png".to_vec(),
        ),
        ("text.jpg", b"hello, I am not an image".to_vec()),
        ("bomb.png", png_header(20_000, 20_000)),
    ];
    for (name, bytes) in &cases {
        let dir = tempfile::tempdir().unwrap();
        let root = dataset_with(dir.path(), &[(name, bytes.clone())]);
        let o = eval_on(dir.path(), &root, &[]);
        check(&o, 3, name);
        assert!(stderr(&o).contains("--skip-unreadable"), "{}", stderr(&o));
        if *name == "bomb.png" {
            assert!(stderr(&o).contains("decompression bomb"), "{}", stderr(&o));
        }
    }
    // With --skip-unreadable every bad file is listed and the rest is evaluated.
    let dir = tempfile::tempdir().unwrap();
    let root = dataset_with(dir.path(), &cases);
    let out = dir.path().join("r.json");
    let o = eval_on(
        dir.path(),
        &root,
        &["--skip-unreadable", "--output", &s(&out)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("5 unreadable image(s) skipped; accuracy is over the 2 images evaluated"),
        "{}",
        stderr(&o)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(r["num_images"], 2);
    let skipped: Vec<String> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(skipped.len(), 5);
    for (name, _) in &cases {
        assert!(
            skipped.iter().any(|p| p.ends_with(name)),
            "{name} not in {skipped:?}"
        );
    }
}

#[test]
fn preprocess_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("zero.png");
    std::fs::write(&p, b"").unwrap();
    let o = bin()
        .args([
            "preprocess",
            "--out",
            &s(&dir.path().join("o.safetensors")),
            &s(&p),
        ])
        .output()
        .unwrap();
    check(&o, 3, "zero.png");
    let o = bin()
        .args([
            "preprocess",
            "--out",
            &s(&dir.path().join("o.safetensors")),
            "/no/such/image.jpg",
        ])
        .output()
        .unwrap();
    check(&o, 3, "/no/such/image.jpg");
    let gif = dir.path().join("huge.gif");
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0]);
    std::fs::write(&gif, g).unwrap();
    let o = bin()
        .args([
            "preprocess",
            "--out",
            &s(&dir.path().join("o.safetensors")),
            &s(&gif),
        ])
        .output()
        .unwrap();
    check(&o, 3, "huge.gif");
}

#[test]
fn dataset_and_label_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Missing folder.
    let o = eval_on(d, &d.join("nope"), &[]);
    check(&o, 3, "nope");
    // Class folders but no images at all.
    std::fs::create_dir_all(d.join("empty/a")).unwrap();
    std::fs::write(d.join("names.txt"), "cat\n").unwrap();
    let o = eval_on(d, &d.join("empty"), &[]);
    check(&o, 3, "empty");
    // A class folder without images is a warning, not an error.
    let root = dataset_with(d, &[]);
    std::fs::create_dir_all(root.join("c")).unwrap();
    std::fs::write(d.join("names.txt"), "cat\ndog\nbird\n").unwrap();
    let o = eval_on(d, &root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: class folder") && stderr(&o).contains("holds no images"),
        "{}",
        stderr(&o)
    );
    // A directory symlink back up the tree: exit 3 naming the link, not an endless walk.
    #[cfg(unix)]
    {
        let link = root.join("a").join("loop");
        std::os::unix::fs::symlink("..", &link).unwrap();
        let o = eval_on(d, &root, &[]);
        check(&o, 3, &s(&link));
        assert!(stderr(&o).contains("cycle"), "{}", stderr(&o));
        std::fs::remove_file(&link).unwrap();
    }
    // Wrong number of class names: the error names the file.
    std::fs::write(d.join("names.txt"), "cat\n").unwrap();
    let o = eval_on(d, &root, &[]);
    check(
        &o,
        3,
        &format!("1 class names in --classnames {}", s(&d.join("names.txt"))),
    );
    assert!(stderr(&o).contains("but 3 class folders"), "{}", stderr(&o));
    // Empty class-name file, template without {}.
    std::fs::write(d.join("names.txt"), "\n\n").unwrap();
    let o = eval_on(d, &root, &[]);
    check(&o, 3, "names.txt");
    std::fs::write(d.join("names.txt"), "cat\ndog\nbird\n").unwrap();
    let t = d.join("t.txt");
    std::fs::write(&t, "a photo of a {}.\na photo\n").unwrap();
    let o = eval_on(d, &root, &["--templates", &s(&t)]);
    check(&o, 3, "t.txt");
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
    // ImageNet labels need WordNet-id folders.
    let o = tiny_rn("eval")
        .args([
            "--test-data-path",
            &s(&root),
            "--text-cache",
            &s(&d.join("cache")),
        ])
        .output()
        .unwrap();
    check(&o, 3, "`a`");
}

#[test]
fn unknown_names_and_conflicting_flags() {
    let dir = tempfile::tempdir().unwrap();
    let root = dataset_with(dir.path(), &[]);
    let o = eval_on(dir.path(), &root, &["--visual-model", "RN5O"]);
    check(&o, 2, "RN5O");
    assert!(stderr(&o).contains("did you mean `RN50`"), "{}", stderr(&o));
    let o = bin()
        .args([
            "eval",
            "-e",
            &s(&fixtures().join("tiny-RN.pth.tar")),
            "--test-data-path",
            &s(&root),
            "--test-dataset",
            "cifar1O",
        ])
        .output()
        .unwrap();
    check(&o, 2, "cifar1O");
    assert!(
        stderr(&o).contains("did you mean `cifar10`"),
        "{}",
        stderr(&o)
    );
    let o = eval_on(dir.path(), &root, &["--no-text-cache"]);
    check(&o, 2, "--no-text-cache");
    let o = eval_on(dir.path(), &root, &["--batch-size-test", "0"]);
    check(&o, 2, "--batch-size-test");
    let o = eval_on(dir.path(), &root, &["--batch-size-test", "100000000"]);
    check(&o, 1, "--batch-size-test");
    assert!(stderr(&o).contains("memory is available"), "{}", stderr(&o));
    // The native engine is CPU fp32 only: the flag is named before any GPU is opened.
    let o = eval_on(
        dir.path(),
        &root,
        &["--engine", "native", "--precision", "fp16"],
    );
    check(&o, 2, "--engine native");
    assert!(stderr(&o).contains("--precision fp16"), "{}", stderr(&o));
    let o = eval_on(
        dir.path(),
        &root,
        &["--engine", "native", "--device", "cuda"],
    );
    check(&o, 2, "--engine native");
    assert!(stderr(&o).contains("--device cuda"), "{}", stderr(&o));
    let o = eval_on(dir.path(), &root, &["--device", "tpu"]);
    check(&o, 2, "'tpu' for '--device");
    let o = bin().args(["eval", "--bogus-flag"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// Output folders are made or refused before the evaluation, not after it; a class-vector
/// cache that cannot be written costs the cache, not the run (it used to wait forever for a
/// lock no process held).
#[test]
fn outputs_are_prepared_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dataset_with(dir.path(), &[]);
    let file = dir.path().join("names.txt");
    // Under a regular file: refused first, so no evaluation ran (no summary line).
    let o = eval_on(dir.path(), &root, &["--output", &s(&file.join("r.json"))]);
    check(&o, 2, "--output");
    assert!(stderr(&o).contains("is not a folder"), "{}", stderr(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("Prec@1"));
    let o = eval_on(
        dir.path(),
        &root,
        &["--save-predictions", &s(&dir.path().join("data"))],
    );
    check(&o, 2, "--save-predictions");
    // A templated output's folders are made.
    let out = dir.path().join("results/{dataset}/r.json");
    let o = eval_on(dir.path(), &root, &["--output", &s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(dir.path().join("results/imagenet/r.json").is_file());
    // A cache root that cannot be written (a read-only home): no class-vector cache (it used
    // to wait forever for a lock), no resume, and the predictions kept in memory instead of
    // the spool, equal to a normal run's.
    let csv = dir.path().join("p.csv");
    let o = eval_on(dir.path(), &root, &["--save-predictions", &s(&csv)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let csv_ro = dir.path().join("p-ro.csv");
    let o = tiny_rn("eval")
        .env("XDG_CACHE_HOME", file.join("cache"))
        .args([
            "--test-data-path",
            &s(&root),
            "--classnames",
            &s(&file),
            "--save-predictions",
            &s(&csv_ro),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for warned in ["computing without it", "this run cannot be resumed"] {
        assert!(stderr(&o).contains(warned), "{}", stderr(&o));
    }
    assert_eq!(
        std::fs::read(&csv).unwrap(),
        std::fs::read(&csv_ro).unwrap()
    );
    let o = tiny_rn("embed")
        .args(["--text", "a cat", "--out", &s(&file.join("f.safetensors"))])
        .output()
        .unwrap();
    check(&o, 2, "--out");
}

/// Every count flag refuses 0 (and `bench --seconds` a time that is not positive) as a usage
/// error naming the flag, before any file is read: the paths below do not exist.
#[test]
fn zero_counts_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "eval",
                "--test-data-path",
                "nowhere",
                "--text-batch-size",
                "0",
            ],
            "--text-batch-size",
        ),
        (
            &["eval", "--test-data-path", "nowhere", "--workers", "0"],
            "--workers",
        ),
        (
            &["retrieval", "--captions", "nowhere", "--recall-k", "1", "0"],
            "--recall-k",
        ),
        (
            &[
                "retrieval",
                "--captions",
                "nowhere",
                "--batch-size-test",
                "0",
            ],
            "--batch-size-test",
        ),
        (
            &[
                "caption-selection",
                "--captions",
                "nowhere",
                "--text-batch-size",
                "0",
            ],
            "--text-batch-size",
        ),
        (
            &[
                "linear-probe",
                "--train",
                "a",
                "--test",
                "b",
                "--max-iter",
                "0",
            ],
            "--max-iter",
        ),
        (
            &[
                "linear-probe",
                "--train",
                "a",
                "--test",
                "b",
                "--epochs",
                "0",
            ],
            "--epochs",
        ),
        (
            &[
                "linear-probe",
                "--train",
                "a",
                "--test",
                "b",
                "--fit-batch-size",
                "0",
            ],
            "--fit-batch-size",
        ),
        (
            &[
                "embed",
                "--text",
                "a",
                "--out",
                "nowhere.safetensors",
                "--batch-size",
                "0",
            ],
            "--batch-size",
        ),
        (
            &[
                "preprocess",
                "--out",
                "nowhere",
                "--resolution",
                "0",
                "a.jpg",
            ],
            "--resolution",
        ),
        (
            &["preprocess", "--out", "nowhere", "--workers", "0", "a.jpg"],
            "--workers",
        ),
        (
            &["tokenize", "--context-length", "1", "a"],
            "--context-length",
        ),
        (&["bench", "--batch-size", "0"], "--batch-size"),
        (&["bench", "--threads", "0"], "--threads"),
        (&["bench", "--seconds", "nan"], "--seconds"),
        (&["bench", "--seconds=-1"], "--seconds"),
    ];
    for (args, flag) in cases {
        let o = bin().args(*args).output().unwrap();
        check(&o, 2, flag);
    }
}

/// A copy of a torch zip with members changed (`Some`) or dropped (`None`).
fn write_zip_like(src: &Path, dst: &Path, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) {
    let members: Vec<(String, Vec<u8>)> = read_zip(src)
        .into_iter()
        .filter_map(|(n, d)| edit(&n, d).map(|d| (n, d)))
        .collect();
    write_zip(dst, &members);
}

#[test]
fn hostile_or_broken_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let zip = std::fs::read(fixtures().join("tiny-ViT.pth.tar")).unwrap();
    let legacy = std::fs::read(fixtures().join("tiny-ViT.legacy.pth.tar")).unwrap();
    let mut files: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.pth.tar",
            zip[..zip.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "random.pth",
            b"\x01\x02\x03\x04 definitely not a checkpoint".to_vec(),
            "unknown format",
        ),
        (
            "legacy-truncated.pth",
            legacy[..legacy.len() - 1000].to_vec(),
            "runs past the end",
        ),
    ];
    let mut bad_magic = legacy.clone();
    bad_magic[5] ^= 0xff;
    files.push(("bad-magic.pth", bad_magic, "magic"));
    for (name, bytes, why) in &files {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        let o = bin().args(["inspect", &s(&p)]).output().unwrap();
        check(&o, 4, name);
        assert!(stderr(&o).contains(why), "{name}: {}", stderr(&o));
    }
    // A pickle that asks for a callable outside the torch whitelist.
    let evil = d.join("evil.pth.tar");
    write_zip_like(&fixtures().join("tiny-ViT.pth.tar"), &evil, |name, data| {
        Some(if name.ends_with("data.pkl") {
            b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.".to_vec()
        } else {
            data
        })
    });
    let o = bin().args(["inspect", &s(&evil)]).output().unwrap();
    check(&o, 4, "evil.pth.tar");
    assert!(stderr(&o).contains("posix.system"), "{}", stderr(&o));
    // A broken pickle and a missing storage.
    let broken = d.join("broken.pth.tar");
    write_zip_like(
        &fixtures().join("tiny-ViT.pth.tar"),
        &broken,
        |name, data| {
            Some(if name.ends_with("data.pkl") {
                data[..data.len() / 3].to_vec()
            } else {
                data
            })
        },
    );
    let o = bin().args(["inspect", &s(&broken)]).output().unwrap();
    check(&o, 4, "broken.pth.tar");
    let missing = d.join("missing.pth.tar");
    write_zip_like(
        &fixtures().join("tiny-ViT.pth.tar"),
        &missing,
        |name, data| (!name.ends_with("/data/3")).then_some(data),
    );
    let o = bin().args(["inspect", &s(&missing)]).output().unwrap();
    check(&o, 4, "missing.pth.tar");
    assert!(
        stderr(&o).contains("missing from the archive"),
        "{}",
        stderr(&o)
    );
    let o = bin()
        .args(["inspect", "/no/such/checkpoint.pth"])
        .output()
        .unwrap();
    check(&o, 4, "/no/such/checkpoint.pth");
}

/// A real SIGINT, then a real SIGTERM, each while the images stream: the run saves its
/// progress, writes no result, exits 130 and leaves no temporary file; `--resume` twice gives
/// the same predictions CSV, byte for byte, as an uninterrupted run.
#[cfg(unix)]
#[test]
fn interrupted_run_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = m["classnames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    std::fs::write(d.join("names.txt"), names.join("\n")).unwrap();
    // The minival images, linked 150 times each: long enough to be interrupted mid-stream.
    let data = d.join("data");
    let mut total = 0;
    for class in std::fs::read_dir(fixtures().join("minival")).unwrap() {
        let class = class.unwrap().path();
        let to = data.join(class.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for img in std::fs::read_dir(&class).unwrap() {
            let img = img.unwrap().path();
            let stem = img.file_stem().unwrap().to_string_lossy().into_owned();
            for k in 0..150 {
                std::fs::hard_link(&img, to.join(format!("{stem}_{k:03}.jpg"))).unwrap();
                total += 1;
            }
        }
    }
    let cache = d.join("cache");
    let cmd = |csv: &Path, resume: bool| {
        let mut c = bin();
        c.args([
            "eval",
            "-e",
            &s(&fixtures().join("tiny-ViT.pth.tar")),
            "--model-config",
            &cfg(),
            "--test-data-path",
            &s(&data),
            "--classnames",
            &s(&d.join("names.txt")),
            "--text-cache",
            &s(&cache),
            "--batch-size-test",
            "1",
            "--quiet",
            "--save-predictions",
            &s(csv),
        ]);
        if resume {
            c.arg("--resume");
        }
        c
    };
    // Starts a run, waits until its progress passes `after`, sends `signal`.
    let interrupt = |csv: &Path, resume: bool, after: usize, signal: i32| {
        let (o, done) = interrupt_after(cmd(csv, resume), &cache.join("progress"), after, signal);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(130), "{e}");
        assert!(
            e.contains("interrupted after") && e.contains(&format!("of {total} images")),
            "{e}"
        );
        assert!(e.contains("--resume"), "{e}");
        assert!(!e.contains("panicked"), "{e}");
        assert!(!csv.exists(), "no result after an interrupt");
        done
    };
    let full = d.join("full.csv");
    let o = cmd(&full, false).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(cache.join("progress"));
    let out = d.join("resumed.csv");
    let first = interrupt(&out, false, 0, libc::SIGINT);
    let second = interrupt(&out, true, first, libc::SIGTERM);
    assert!(
        first < second && second < total,
        "{first} then {second} of {total}"
    );
    let o = cmd(&out, true).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).is_empty() || !stderr(&o).contains("starting from the beginning"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&full).unwrap()
    );
    let mut leftovers = Vec::new();
    for dir in [d.to_path_buf(), cache.clone(), cache.join("progress")] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            leftovers.extend(
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(".tmp") || n.ends_with(".lock")),
            );
        }
    }
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A file name that is not UTF-8 goes into the predictions CSV (and a skipped one into the
/// JSON) percent-escaped, so the row maps back to the file's exact bytes.
#[cfg(unix)]
#[test]
fn non_utf8_names_are_written_losslessly() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = dataset_with(d, &[]);
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9 100%.jpg");
    std::fs::copy(
        fixtures().join("images/shapes_small.jpg"),
        root.join("a").join(name),
    )
    .unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"broken\xff.jpg");
    std::fs::write(root.join("b").join(bad), b"not a jpeg").unwrap();
    let (csv, json) = (d.join("p.csv"), d.join("r.json"));
    let o = eval_on(
        d,
        &root,
        &[
            "--skip-unreadable",
            "--save-predictions",
            &s(&csv),
            "--output",
            &s(&json),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let decode = |t: &str| pyramidclip::util::path_bytes(t).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let field = text
        .lines()
        .map(|l| l.split(',').next().unwrap())
        .find(|p| p.contains("caf"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(field.ends_with("caf%E9 100%25.jpg"), "{field}");
    assert_eq!(
        decode(field),
        root.join("a").join(name).as_os_str().as_bytes()
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let skipped = r["skipped"][0]["path"].as_str().unwrap();
    assert_eq!(
        decode(skipped),
        root.join("b").join(bad).as_os_str().as_bytes()
    );
}

/// A HuggingFace `tokenizer.json` that is broken inside its decoder section (the `tokenizers`
/// crate panicked on it; found by fuzzing), one that is not JSON, and a broken
/// `tokenizer_config.json` beside a good one: exit 3 naming the file.
#[test]
fn broken_hf_tokenizer_files() {
    let dir = tempfile::tempdir().unwrap();
    let good =
        std::fs::read_to_string(fixtures().join("clip/siglip-tokenizer/tokenizer.json")).unwrap();
    let decoder = good.find(r#""decoder""#).unwrap();
    let at = decoder + good[decoder..].find(r#""type": "Metaspace""#).unwrap();
    let mut broken = good.clone();
    broken.replace_range(at..at + 19, r#""type": "Metaspace" "x": 1"#);
    let tokenize = || {
        bin()
            .args([
                "tokenize",
                "--tokenizer",
                &s(dir.path()),
                "a photo of a cat",
            ])
            .output()
            .unwrap()
    };
    let file = dir.path().join("tokenizer.json");
    for bytes in [broken.as_str(), "garbage"] {
        std::fs::write(&file, bytes).unwrap();
        check(&tokenize(), 3, &s(&file));
    }
    std::fs::write(&file, &good).unwrap();
    let config = dir.path().join("tokenizer_config.json");
    std::fs::write(&config, "{bad").unwrap();
    check(&tokenize(), 3, &s(&config));
    std::fs::remove_file(&config).unwrap();
    assert!(tokenize().status.success());
}
