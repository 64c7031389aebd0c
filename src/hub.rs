//! open_clip's pretrained tags (`--checkpoint laion2b_s34b_b79k` with `--visual-model
//! ViT-B-32`, CLIP_benchmark's `--model ViT-B-32 --pretrained laion2b_s34b_b79k`) found where
//! open_clip downloaded them: the Hugging Face hub cache (`models--ORG--NAME/snapshots/REV/`)
//! or open_clip's URL cache (`~/.cache/clip`). Nothing is downloaded. The table of tags is
//! open_clip's (`configs/open_clip_pretrained.tsv`, MIT licence).

use std::path::{Path, PathBuf};

const TABLE: &str = include_str!("../configs/open_clip_pretrained.tsv");

/// Where open_clip's downloads are looked for.
#[derive(Debug, Clone, Default)]
pub struct Caches {
    /// The Hugging Face hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`).
    pub hf: Option<PathBuf>,
    /// open_clip's URL download folder (`~/.cache/clip`).
    pub url: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--checkpoint {tag}: not a file, nor one of open_clip's pretrained tags for {model} ({known})")]
    UnknownTag {
        model: String,
        tag: String,
        known: String,
    },
    #[error("--checkpoint {tag}: open_clip's {model} weights `{tag}` are not downloaded (looked in {looked}); run open_clip once to download them (e.g. open_clip.create_model('{model}', pretrained='{tag}')), or pass the file")]
    NotCached {
        model: String,
        tag: String,
        looked: String,
    },
    #[error("--checkpoint {repo}: not a file, nor a transformers model downloaded to the hub cache ({looked}); run transformers once to download it (CLIPModel.from_pretrained('{repo}')), or pass its folder")]
    RepoNotCached { repo: String, looked: String },
    #[error("--visual-model {model}: {msg}")]
    Schema { model: String, msg: String },
    #[error("--checkpoint {tag}: open_clip resizes images for {model} `{tag}` by {how}; only the bicubic shortest-side, squash and longest resizes are implemented")]
    Preprocess {
        model: String,
        tag: String,
        how: String,
    },
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tag<'a> {
    model: &'a str,
    tag: &'a str,
    hf_hub: &'a str,
    url: &'a str,
    quick_gelu: bool,
    mean: [f32; 3],
    std: [f32; 3],
    interpolation: &'a str,
    resize_mode: &'a str,
}

fn tags() -> impl Iterator<Item = Tag<'static>> {
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let [model, tag, hf_hub, url, q, mean, std, interpolation, resize_mode] = f[..] else {
                return None;
            };
            let three = |s: &str| -> Option<[f32; 3]> {
                let v: Vec<f32> = s
                    .split(',')
                    .map(|x| x.parse().ok())
                    .collect::<Option<_>>()?;
                v.try_into().ok()
            };
            Some(Tag {
                model,
                tag,
                hf_hub,
                url,
                quick_gelu: q == "true",
                mean: three(mean)?,
                std: three(std)?,
                interpolation,
                resize_mode,
            })
        })
}

/// Whether `arg` (a `--checkpoint`) may be a tag rather than a path: a bare word.
pub fn is_tag_like(arg: &Path) -> bool {
    arg.to_str().is_some_and(|s| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// open_clip's schema model names: `hf-hub:ORG/NAME` (a hub repo with `open_clip_config.json`)
/// and `local-dir:DIR` (a folder with it); the part after the schema.
pub fn schema(model: &str) -> Option<(&str, &str)> {
    ["hf-hub:", "local-dir:"]
        .into_iter()
        .find_map(|p| model.strip_prefix(p).map(|rest| (p, rest)))
}

/// A schema model's files: its `open_clip_config.json`, its weights (open_clip's choice) and
/// the normalisation its `preprocess_cfg` gives.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaModel {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub normalize: crate::preprocess::Normalize,
    pub resize: crate::preprocess::Resize,
}

/// The weights open_clip's `_find_checkpoint_in_dir` picks in `dir`: its preferred names in
/// order, else the first `.safetensors`, `.bin` or `.pth` by name (safetensors first).
fn weights_in(dir: &Path) -> Option<PathBuf> {
    const PREFERRED: [&str; 8] = [
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.safetensors",
        "open_clip_pytorch_model.bin",
        "open_clip_pytorch_model.pth",
        "model.safetensors",
        "pytorch_model.bin",
        "pytorch_model.pth",
        "model.pth",
    ];
    if let Some(p) = PREFERRED.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
        return Some(p);
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("safetensors" | "bin" | "pth")
                )
        })
        .collect();
    all.sort_by_key(|p| (p.extension().is_none_or(|e| e != "safetensors"), p.clone()));
    all.into_iter().next()
}

/// Finds a schema model's files: for `hf-hub:ORG/NAME`, in the hub cache's snapshot of the repo
/// (its `open_clip_config.json`; the weights as open_clip downloads them, safetensors first);
/// for `local-dir:DIR`, in DIR (the weights as open_clip picks them there).
pub fn resolve_schema(model: &str, caches: &Caches) -> Result<SchemaModel, Error> {
    let (kind, rest) = schema(model).ok_or_else(|| Error::Schema {
        model: model.into(),
        msg: "not an hf-hub: or local-dir: name".into(),
    })?;
    let missing = |msg: String| Error::Schema {
        model: model.into(),
        msg,
    };
    let (config, weights) = if kind == "hf-hub:" {
        let hf = caches
            .hf
            .as_ref()
            .ok_or_else(|| missing("no Hugging Face cache folder: set HF_HOME or HOME".into()))?;
        let config = in_hub_cache(hf, rest, "open_clip_config.json").ok_or_else(|| {
            missing(format!(
                "its open_clip_config.json is not in {}; run open_clip once to download it",
                repo_dir(hf, rest).display()
            ))
        })?;
        let weights = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            .iter()
            .find_map(|f| in_hub_cache(hf, rest, f))
            .ok_or_else(|| missing("its weights are not downloaded next to its config".into()))?;
        (config, weights)
    } else {
        let dir = PathBuf::from(rest);
        let config = dir.join("open_clip_config.json");
        if !config.is_file() {
            return Err(missing(format!("no {}", config.display())));
        }
        let weights = weights_in(&dir)
            .ok_or_else(|| missing(format!("no weights (.safetensors, .bin, .pth) in {rest}")))?;
        (config, weights)
    };
    let text = std::fs::read_to_string(&config)
        .map_err(|e| missing(format!("{}: {e}", config.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| missing(format!("{}: not JSON ({e})", config.display())))?;
    let pre = &v["preprocess_cfg"];
    let three = |k: &str, default: [f32; 3]| -> Result<[f32; 3], Error> {
        match pre.get(k) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(x) => serde_json::from_value::<[f32; 3]>(x.clone()).map_err(|_| {
                missing(format!(
                    "{}: preprocess_cfg.{k} is not 3 numbers",
                    config.display()
                ))
            }),
        }
    };
    let normalize = crate::preprocess::Normalize {
        mean: three("mean", crate::preprocess::MEAN)?,
        std: three("std", crate::preprocess::STD)?,
    };
    let interpolation = match pre.get("interpolation") {
        None | Some(serde_json::Value::Null) => crate::preprocess::Interpolation::default(),
        Some(x) => x
            .as_str()
            .and_then(crate::preprocess::Interpolation::parse)
            .ok_or_else(|| {
                missing(format!(
                    "{}: preprocess_cfg.interpolation is {x}; only \"bicubic\" and \"bilinear\" are implemented",
                    config.display()
                ))
            })?,
    };
    let mode = match pre.get("resize_mode") {
        None | Some(serde_json::Value::Null) => crate::preprocess::ResizeMode::default(),
        Some(x) => x
            .as_str()
            .and_then(crate::preprocess::ResizeMode::parse)
            .ok_or_else(|| {
                missing(format!(
                    "{}: preprocess_cfg.resize_mode is {x}; only \"shortest\", \"squash\" and \"longest\" are implemented",
                    config.display()
                ))
            })?,
    };
    Ok(SchemaModel {
        config,
        weights,
        normalize,
        resize: crate::preprocess::Resize {
            mode,
            interpolation,
        },
    })
}

/// Whether `tag` is one of open_clip's tags (for any model).
pub fn is_tag(tag: &str) -> bool {
    tags().any(|t| t.tag.eq_ignore_ascii_case(tag))
}

/// The weights `tag` names for `model`, found in the caches.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub path: PathBuf,
    /// open_clip's warning when the tag was trained with another activation than the model
    /// name gives (open_clip, and so this, computes the name's).
    pub notice: Option<String>,
    /// The tag's `Normalize` (OpenAI's mean and std for most; 0.5 for some LAION ones).
    pub normalize: crate::preprocess::Normalize,
    /// The tag's resize (`squash` for Apple's DFN weights).
    pub resize: crate::preprocess::Resize,
}

/// open_clip's file name choices for a hub entry `ORG/NAME/[FILE]`: the safetensors twin first,
/// as its `download_pretrained_from_hf` tries it first.
fn hub_files(hf_hub: &str) -> Option<(String, Vec<String>)> {
    let (repo, file) = hf_hub.rsplit_once('/')?;
    let file = if file.is_empty() {
        "open_clip_pytorch_model.bin"
    } else {
        file
    };
    let mut files = Vec::new();
    if file == "open_clip_pytorch_model.bin" {
        files.push("open_clip_model.safetensors".to_string());
    } else if let Some(stem) = file
        .strip_suffix(".bin")
        .or_else(|| file.strip_suffix(".pth"))
    {
        files.push(format!("{stem}.safetensors"));
    }
    files.push(file.to_string());
    Some((repo.to_string(), files))
}

/// The hub cache's folder of the repo `ORG/NAME`: `models--ORG--NAME`.
fn repo_dir(hf: &Path, repo: &str) -> PathBuf {
    hf.join(format!("models--{}", repo.replace('/', "--")))
}

/// `file` of the hub repo `repo` in the cache `hf`: the snapshot `refs/main` names, else any
/// snapshot holding it (the newest).
fn in_hub_cache(hf: &Path, repo: &str, file: &str) -> Option<PathBuf> {
    let dir = repo_dir(hf, repo);
    if let Ok(rev) = std::fs::read_to_string(dir.join("refs/main")) {
        // A commit hash; anything else (a path) is not followed.
        let rev = rev.trim();
        if !rev.is_empty() && rev.chars().all(|c| c.is_ascii_alphanumeric()) {
            let p = dir.join("snapshots").join(rev).join(file);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir.join("snapshots"))
        .ok()?
        .flatten()
        .map(|e| e.path().join(file))
        .filter(|p| p.is_file())
        .map(|p| {
            let t = p
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// `file` of the hub repo `repo` (`ORG/NAME`) in the hub cache `hf`, if downloaded.
pub fn hub_file(hf: &Path, repo: &str, file: &str) -> Option<PathBuf> {
    if repo.is_empty() || repo.contains("..") {
        return None;
    }
    in_hub_cache(hf, repo, file)
}

/// Whether `arg` (a `--checkpoint` that is not a path) may be a hub repo id, `ORG/NAME`.
pub fn is_repo_like(arg: &Path) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    // A weights file's name is a path that is missing, not a repo.
    let file = |name: &str| {
        [".pt", ".pth", ".tar", ".bin", ".safetensors", ".ckpt"]
            .iter()
            .any(|e| name.ends_with(e))
    };
    arg.to_str()
        .and_then(|s| s.split_once('/'))
        .is_some_and(|(org, name)| ok(org) && ok(name) && !file(name))
}

/// What a hub id (`ORG/NAME`) names in the hub cache.
#[derive(Debug, Clone, PartialEq)]
pub enum Repo {
    /// A transformers model folder (`config.json` with its weights).
    Transformers(PathBuf),
    /// An open_clip repo (`open_clip_config.json` and no transformers folder): read as
    /// `--visual-model hf-hub:ORG/NAME` reads it.
    OpenClip,
}

/// Finds the hub id `repo` where transformers or open_clip downloaded it.
pub fn resolve_repo(repo: &str, caches: &Caches) -> Result<Repo, Error> {
    let hf = caches.hf.as_deref();
    if let Some(dir) = hf.and_then(|hf| model_folder(hf, repo)) {
        return Ok(Repo::Transformers(dir));
    }
    if hf.is_some_and(|hf| hub_file(hf, repo, "open_clip_config.json").is_some()) {
        return Ok(Repo::OpenClip);
    }
    Err(Error::RepoNotCached {
        repo: repo.to_string(),
        looked: hf.map_or("no hub cache set".into(), |h| h.display().to_string()),
    })
}

/// The snapshot folder of the transformers model `repo` (`ORG/NAME`, as transformers'
/// `from_pretrained` downloads it: `config.json` with its weights) in the hub cache `hf`.
pub fn model_folder(hf: &Path, repo: &str) -> Option<PathBuf> {
    let cfg = hub_file(hf, repo, "config.json")?;
    let dir = cfg.parent()?;
    crate::checkpoint::hf::weights_in(dir)
        .is_ok()
        .then(|| dir.to_path_buf())
}

/// Finds `tag`'s weights for `model` (an open_clip model name, `-quickgelu` included).
pub fn resolve(model: &str, tag: &str, caches: &Caches) -> Result<Found, Error> {
    let row = tags()
        .find(|t| t.model == model && t.tag.eq_ignore_ascii_case(tag))
        .ok_or_else(|| {
            let known: Vec<&str> = tags().filter(|t| t.model == model).map(|t| t.tag).collect();
            Error::UnknownTag {
                model: model.into(),
                tag: tag.into(),
                known: if known.is_empty() {
                    "it has none".into()
                } else {
                    format!("its tags: {}", known.join(", "))
                },
            }
        })?;
    let parsed = crate::preprocess::ResizeMode::parse(row.resize_mode)
        .zip(crate::preprocess::Interpolation::parse(row.interpolation));
    let resize = parsed
        .map(|(mode, interpolation)| crate::preprocess::Resize {
            mode,
            interpolation,
        })
        .ok_or_else(|| Error::Preprocess {
            model: model.into(),
            tag: tag.into(),
            how: format!("{} ({})", row.resize_mode, row.interpolation),
        })?;
    let mut looked = Vec::new();
    let mut path = None;
    if let (Some(hf), Some((repo, files))) = (&caches.hf, hub_files(row.hf_hub)) {
        path = files.iter().find_map(|f| in_hub_cache(hf, &repo, f));
        looked.push(repo_dir(hf, &repo).display().to_string());
    }
    if path.is_none() && !row.url.is_empty() {
        if let (Some(dir), Some(name)) = (&caches.url, row.url.rsplit('/').next()) {
            let p = dir.join(name);
            looked.push(p.display().to_string());
            path = p.is_file().then_some(p);
        }
    }
    let path = path.ok_or_else(|| Error::NotCached {
        model: model.into(),
        tag: tag.into(),
        looked: if looked.is_empty() {
            "no cache folder: set HF_HOME or HOME".into()
        } else {
            looked.join(" and ")
        },
    })?;
    let named_quick = model.ends_with("-quickgelu");
    let notice = (row.quick_gelu != named_quick).then(|| {
        let (trained, runs) = if row.quick_gelu {
            ("QuickGELU", "GELU")
        } else {
            ("GELU", "QuickGELU")
        };
        let other = if row.quick_gelu {
            format!("{model}-quickgelu")
        } else {
            model.trim_end_matches("-quickgelu").to_string()
        };
        format!("open_clip's `{tag}` weights were trained with {trained}, but {model} computes {runs} (as open_clip does with these names); --visual-model {other} computes {trained}")
    });
    Ok(Found {
        path,
        notice,
        normalize: crate::preprocess::Normalize {
            mean: row.mean,
            std: row.std,
        },
        resize,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn hub_ids_are_told_from_paths() {
        for id in [
            "openai/clip-vit-base-patch32",
            "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        ] {
            assert!(is_repo_like(Path::new(id)), "{id}");
        }
        for p in [
            "model.pt",
            "./a/b",
            "../x",
            "/abs/path",
            "a/b/c",
            "org/",
            "a/.hidden",
            "models/ViT-B-32.pt",
            "ckpts/model.safetensors",
        ] {
            assert!(!is_repo_like(Path::new(p)), "{p}");
        }
    }

    use super::*;

    #[test]
    fn the_table_reads() {
        let all: Vec<Tag> = tags().collect();
        assert!(all.len() > 50);
        let t = all
            .iter()
            .find(|t| t.model == "ViT-B-32" && t.tag == "laion2b_s34b_b79k")
            .unwrap();
        assert_eq!(t.hf_hub, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/");
        assert!(!t.quick_gelu && t.resize_mode == "shortest");
        assert_eq!(t.mean, crate::preprocess::MEAN);
        assert!(is_tag_like(Path::new("laion2b_s34b_b79k")) && is_tag("openai"));
        assert!(!is_tag_like(Path::new("a/b.pt")) && !is_tag_like(Path::new("x.pt")));
    }

    /// A tag is found in a hub cache laid out as huggingface_hub lays it out (refs/main naming
    /// the snapshot; the safetensors file preferred), else in open_clip's URL folder; a tag not
    /// downloaded or unknown is an error naming where it looked or the known tags.
    #[test]
    fn tags_are_found_in_the_caches() {
        let d = tempfile::tempdir().unwrap();
        let hf = d.path().join("hub");
        let repo = hf.join("models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K");
        let snap = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123").unwrap();
        std::fs::write(snap.join("open_clip_pytorch_model.bin"), b"x").unwrap();
        let caches = Caches {
            hf: Some(hf.clone()),
            url: Some(d.path().join("clip")),
        };
        let f = resolve("ViT-B-32", "laion2b_s34b_b79k", &caches).unwrap();
        assert_eq!(f.path, snap.join("open_clip_pytorch_model.bin"));
        assert_eq!(f.notice, None);
        std::fs::write(snap.join("open_clip_model.safetensors"), b"x").unwrap();
        let f = resolve("ViT-B-32", "laion2b_s34b_b79k", &caches).unwrap();
        assert_eq!(f.path, snap.join("open_clip_model.safetensors"));
        // OpenAI's weights: QuickGELU-trained, so ViT-B-32 (GELU) says so.
        let e = resolve("ViT-B-32", "openai", &caches)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not downloaded") && e.contains("vit_base_patch32_clip_224.openai"),
            "{e}"
        );
        std::fs::create_dir_all(d.path().join("clip")).unwrap();
        std::fs::write(d.path().join("clip/ViT-B-32.pt"), b"x").unwrap();
        let f = resolve("ViT-B-32", "openai", &caches).unwrap();
        assert_eq!(f.path, d.path().join("clip/ViT-B-32.pt"));
        assert!(f.notice.unwrap().contains("ViT-B-32-quickgelu"));
        assert_eq!(
            resolve("ViT-B-32-quickgelu", "openai", &caches)
                .unwrap()
                .notice,
            None
        );
        let e = resolve("ViT-B-32", "laion9b", &caches)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("laion2b_s34b_b79k") && e.contains("openai"),
            "{e}"
        );
        // Apple's DFN weights: squashed, not centre-cropped; OpenAI's mean and std.
        let repo = hf.join("models--apple--DFN5B-CLIP-ViT-H-14-378/snapshots/y");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("open_clip_pytorch_model.bin"), b"x").unwrap();
        let f = resolve("ViT-H-14-378-quickgelu", "dfn5b", &caches).unwrap();
        assert_eq!(f.resize, crate::preprocess::ResizeMode::Squash.into());
        assert_eq!(f.normalize, crate::preprocess::Normalize::default());
        assert_eq!(f.notice, None);
        let f = resolve("ViT-B-32", "laion2b_s34b_b79k", &caches).unwrap();
        assert_eq!(f.resize, crate::preprocess::ResizeMode::Shortest.into());
        // LAION's ViT-L-14 laion2b_s32b_b82k was trained with mean and std 0.5.
        let repo = hf.join("models--laion--CLIP-ViT-L-14-laion2B-s32B-b82K/snapshots/x");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("open_clip_model.safetensors"), b"x").unwrap();
        let f = resolve("ViT-L-14", "laion2b_s32b_b82k", &caches).unwrap();
        assert_eq!(f.normalize.mean, [0.5; 3]);
        assert_eq!(f.normalize.std, [0.5; 3]);
    }

    /// A local-dir's weights as open_clip's `_find_checkpoint_in_dir` picks them.
    #[test]
    fn local_dir_weights_are_picked_as_open_clip_picks_them() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str| std::fs::write(d.path().join(n), b"x").unwrap();
        w("b.bin");
        w("c.pth");
        assert_eq!(weights_in(d.path()).unwrap(), d.path().join("b.bin"));
        w("z.safetensors");
        assert_eq!(
            weights_in(d.path()).unwrap(),
            d.path().join("z.safetensors")
        );
        w("model.safetensors");
        w("open_clip_pytorch_model.bin");
        assert_eq!(
            weights_in(d.path()).unwrap(),
            d.path().join("open_clip_pytorch_model.bin")
        );
    }
}
