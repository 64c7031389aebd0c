//! Sharded runs merge to exactly the unsharded result; launcher environments are honoured;
//! mismatched partials are refused.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn s(p: &Path) -> String {
    p.display().to_string()
}

struct Setup {
    dir: tempfile::TempDir,
    names: PathBuf,
    templates: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap())
            .unwrap();
    let names = dir.path().join("names.txt");
    let templates = dir.path().join("templates.txt");
    let join = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    std::fs::write(&names, join(&m["classnames"])).unwrap();
    std::fs::write(&templates, join(&m["templates"])).unwrap();
    Setup {
        dir,
        names,
        templates,
    }
}

fn eval(st: &Setup, ckpt: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = bin();
    c.args([
        "eval",
        "--checkpoint",
        &s(&fixtures().join(ckpt)),
        "--model-config",
        &s(&fixtures().join("tiny-models.yml")),
        "--test-data-path",
        &s(&fixtures().join("minival")),
        "--classnames",
        &s(&st.names),
        "--templates",
        &s(&st.templates),
        "--text-cache",
        &s(&st.dir.path().join("cache")),
        "--device",
        "cpu",
        "--quiet",
        "--batch-size-test",
        "1",
    ]);
    c.args(extra);
    for k in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_LOCALID",
        "HOST_NUM",
        "HOST_GPU_NUM",
        "INDEX",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The result without the fields that measure time.
fn stable(path: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for k in ["elapsed_s", "images_per_s"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[test]
fn sharded_runs_merge_to_the_unsharded_result() {
    let st = setup();
    let d = st.dir.path();
    let (full_json, full_csv) = (d.join("full.json"), d.join("full.csv"));
    ok(&eval(
        &st,
        "tiny-RN.pth.tar",
        &[
            "--output",
            &s(&full_json),
            "--save-predictions",
            &s(&full_csv),
        ],
        &[],
    ));
    for n in [1usize, 2, 3, 4] {
        let parts = d.join(format!("parts{n}"));
        for i in 0..n {
            ok(&eval(
                &st,
                "tiny-RN.pth.tar",
                &["--shard", &format!("{i}/{n}"), "--output-dir", &s(&parts)],
                &[],
            ));
        }
        let (j, c) = (d.join(format!("m{n}.json")), d.join(format!("m{n}.csv")));
        let mut args = vec!["merge".to_string()];
        args.extend((0..n).map(|i| s(&parts.join(format!("imagenet.part-{i}-of-{n}.json")))));
        args.extend(["--output".into(), s(&j), "--save-predictions".into(), s(&c)]);
        let o = bin().args(&args).output().unwrap();
        ok(&o);
        assert_eq!(stable(&j), stable(&full_json), "N = {n}");
        assert_eq!(
            std::fs::read_to_string(&c).unwrap(),
            std::fs::read_to_string(&full_csv).unwrap(),
            "N = {n}"
        );
    }
    // A CLIP_benchmark template is filled from what the partials computed.
    let mut args = vec!["merge".to_string()];
    args.extend((0..2).map(|i| s(&d.join(format!("parts2/imagenet.part-{i}-of-2.json")))));
    args.extend([
        "--output".into(),
        s(&d.join("{dataset}_{model}_{task}.json")),
    ]);
    ok(&bin().args(&args).output().unwrap());
    assert_eq!(
        stable(&d.join("imagenet_tiny-RN_zeroshot_classification.json")),
        stable(&full_json)
    );
}

/// A bf16 run's recheck survives sharding: the merged result counts every shard's rechecked
/// images, and its top-1 predictions are the unsharded fp32 run's.
#[test]
fn sharded_bf16_runs_merge_their_rechecks() {
    if !pyramidclip::native::bf16::supported() {
        return;
    }
    let st = setup();
    let d = st.dir.path();
    let (fp32_json, fp32_csv) = (d.join("fp32.json"), d.join("fp32.csv"));
    ok(&eval(
        &st,
        "tiny-ViT.pth.tar",
        &[
            "--output",
            &s(&fp32_json),
            "--save-predictions",
            &s(&fp32_csv),
        ],
        &[],
    ));
    let parts = d.join("parts");
    for i in 0..2 {
        ok(&eval(
            &st,
            "tiny-ViT.pth.tar",
            &[
                "--precision",
                "bf16",
                "--shard",
                &format!("{i}/2"),
                "--output-dir",
                &s(&parts),
            ],
            // The bf16 kernels wherever the CPU has them, even where fp32 would be faster.
            &[("PYRAMIDCLIP_BF16", "1")],
        ));
    }
    let paths: Vec<PathBuf> = (0..2)
        .map(|i| parts.join(format!("imagenet.part-{i}-of-2.json")))
        .collect();
    let rechecked: u64 = paths
        .iter()
        .map(|p| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            assert!(v["info"]["recheck_margin"].as_f64().unwrap() > 0.0, "{v}");
            v["tally"]["rechecked"].as_u64().unwrap()
        })
        .sum();
    let (j, c) = (d.join("m.json"), d.join("m.csv"));
    let mut args: Vec<String> = vec!["merge".into()];
    args.extend(paths.iter().map(|p| s(p)));
    args.extend(["--output".into(), s(&j), "--save-predictions".into(), s(&c)]);
    ok(&bin().args(&args).output().unwrap());
    let merged = stable(&j);
    assert_eq!(merged["fp32_recheck"]["images"].as_u64(), Some(rechecked));
    assert_eq!(merged["precision"], "bf16");
    let top1 = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| l.split(',').take(3).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(top1(&c), top1(&fp32_csv));
    let want = stable(&fp32_json);
    assert_eq!(
        (&merged["top1"], &merged["top5"]),
        (&want["top1"], &want["top5"])
    );
}

#[test]
fn launcher_environments_pick_the_shard() {
    let st = setup();
    let d = st.dir.path();
    for (env, idx, n) in [
        (
            vec![("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")],
            1,
            2,
        ),
        (
            vec![
                ("SLURM_PROCID", "2"),
                ("SLURM_NTASKS", "3"),
                ("SLURM_LOCALID", "0"),
            ],
            2,
            3,
        ),
        (
            vec![
                ("HOST_NUM", "2"),
                ("HOST_GPU_NUM", "2"),
                ("INDEX", "1"),
                ("LOCAL_RANK", "1"),
            ],
            3,
            4,
        ),
    ] {
        let out = d.join(format!("env{n}"));
        ok(&eval(
            &st,
            "tiny-RN.pth.tar",
            &["--output-dir", &s(&out)],
            &env,
        ));
        assert!(
            out.join(format!("imagenet.part-{idx}-of-{n}.json"))
                .exists(),
            "{env:?}"
        );
    }
    // Rank 0 with --merge waits for the others and writes the full result.
    let out = d.join("merged");
    ok(&eval(
        &st,
        "tiny-RN.pth.tar",
        &["--output-dir", &s(&out)],
        &[("RANK", "1"), ("WORLD_SIZE", "2")],
    ));
    let res = d.join("merged.json");
    ok(&eval(
        &st,
        "tiny-RN.pth.tar",
        &["--output-dir", &s(&out), "--merge", "--output", &s(&res)],
        &[("RANK", "0"), ("WORLD_SIZE", "2")],
    ));
    let full = d.join("full.json");
    ok(&eval(&st, "tiny-RN.pth.tar", &["--output", &s(&full)], &[]));
    assert_eq!(stable(&res), stable(&full));
}

#[test]
fn mismatched_partials_are_refused() {
    let st = setup();
    let d = st.dir.path();
    let (a, b) = (d.join("a"), d.join("b"));
    ok(&eval(
        &st,
        "tiny-RN.pth.tar",
        &["--shard", "0/2", "--output-dir", &s(&a)],
        &[],
    ));
    ok(&eval(
        &st,
        "tiny-ViT.pth.tar",
        &["--shard", "1/2", "--output-dir", &s(&b)],
        &[],
    ));
    ok(&eval(
        &st,
        "tiny-RN.pth.tar",
        &["--shard", "1/3", "--output-dir", &s(&b)],
        &[],
    ));
    let merge = |parts: &[PathBuf]| {
        let mut args = vec!["merge".to_string()];
        args.extend(parts.iter().map(|p| s(p)));
        args.extend(["--output".into(), s(&d.join("x.json"))]);
        bin().args(&args).output().unwrap()
    };
    let o = merge(&[
        a.join("imagenet.part-0-of-2.json"),
        b.join("imagenet.part-1-of-2.json"),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("different checkpoints"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = merge(&[
        a.join("imagenet.part-0-of-2.json"),
        b.join("imagenet.part-1-of-3.json"),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("shard count"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = merge(&[a.join("imagenet.part-0-of-2.json")]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing shard(s) 1 of 2"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!d.join("x.json").exists());
}

#[test]
fn bad_shard_flag_is_a_usage_error() {
    let st = setup();
    let o = eval(
        &st,
        "tiny-RN.pth.tar",
        &["--shard", "3/3", "--output-dir", "/tmp/x"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("'3/3' for '--shard"), "{e}");
}
