//! Image folders (torchvision's ImageFolder layout), label sets (class names and templates,
//! built-in or from files) and the streaming loader that decodes batches in parallel.

use crate::preprocess;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {msg}")]
    Path { path: PathBuf, msg: String },
    #[error("{0}")]
    Labels(String),
    #[error(transparent)]
    Image(#[from] preprocess::Error),
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub path: PathBuf,
    pub label: usize,
}

/// A listed ImageFolder: class folders sorted, files sorted within each.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub folders: Vec<String>,
    pub samples: Vec<Sample>,
    /// Folders that hold no image (warned about, still counted as classes).
    pub empty_folders: Vec<String>,
}

/// `DIR/val` when it exists (the upstream layout), else `DIR`.
pub fn resolve_root(dir: &Path) -> PathBuf {
    let val = dir.join("val");
    if val.is_dir() {
        val
    } else {
        dir.to_path_buf()
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, Error> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::Path {
        path: dir.into(),
        msg: e.to_string(),
    })?;
    let mut v: Vec<_> = rd.collect::<Result<_, _>>().map_err(|e| Error::Path {
        path: dir.into(),
        msg: e.to_string(),
    })?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// Lists `root` like torchvision's ImageFolder; `labels` maps folder index -> label.
pub fn list(root: &Path) -> Result<ImageFolder, Error> {
    if !root.exists() {
        return Err(Error::Path {
            path: root.into(),
            msg: "no such directory (--test-data-path)".into(),
        });
    }
    if !root.is_dir() {
        return Err(Error::Path {
            path: root.into(),
            msg: "is not a directory (--test-data-path)".into(),
        });
    }
    let mut folders = Vec::new();
    let mut samples = Vec::new();
    let mut empty = Vec::new();
    for entry in sorted_entries(root)? {
        let p = entry.path();
        if !p.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let label = folders.len();
        let mut files = Vec::new();
        walk(&p, &mut files)?;
        files.sort();
        if files.is_empty() {
            empty.push(name.clone());
        }
        samples.extend(files.into_iter().map(|path| Sample { path, label }));
        folders.push(name);
    }
    if folders.is_empty() {
        return Err(Error::Path {
            path: root.into(),
            msg: "holds no class folders (expected DIR/<class>/<image> or DIR/val/<class>/<image>)"
                .into(),
        });
    }
    if samples.is_empty() {
        return Err(Error::Path {
            path: root.into(),
            msg: "holds no images with a known extension".into(),
        });
    }
    Ok(ImageFolder {
        root: root.into(),
        folders,
        samples,
        empty_folders: empty,
    })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    for e in sorted_entries(dir)? {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if preprocess::is_image_path(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Data files shipped with the binary.
pub mod data {
    pub const IMAGENET_CLASSNAMES: &str = include_str!("../configs/data/imagenet_classnames.txt");
    pub const IMAGENET_TEMPLATES: &str = include_str!("../configs/data/imagenet_templates.txt");
    pub const IMAGENET_SYNSETS: &str = include_str!("../configs/data/imagenet_synsets.txt");
}

pub fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// Datasets with built-in class names, in label order.
pub fn builtin_classnames(dataset: &str) -> Option<Vec<String>> {
    match dataset {
        "imagenet" => Some(lines(data::IMAGENET_CLASSNAMES)),
        other => crate::datasets::classnames(other),
    }
}

pub fn known_datasets() -> Vec<&'static str> {
    let mut v = vec!["imagenet"];
    v.extend(crate::datasets::NAMES.iter().copied());
    v
}

/// Reads a class-name file (one per line).
pub fn read_classnames(path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Path {
        path: path.into(),
        msg: format!("cannot read class names (--classnames): {e}"),
    })?;
    let names = lines(&text);
    if names.is_empty() {
        return Err(Error::Path {
            path: path.into(),
            msg: "class-name file is empty (--classnames)".into(),
        });
    }
    Ok(names)
}

/// Reads a template file (one per line, `{}` marks the class name).
pub fn read_templates(path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Path {
        path: path.into(),
        msg: format!("cannot read templates (--templates): {e}"),
    })?;
    let t = lines(&text);
    if t.is_empty() {
        return Err(Error::Path {
            path: path.into(),
            msg: "template file is empty (--templates)".into(),
        });
    }
    check_templates(&t).map_err(|msg| Error::Path {
        path: path.into(),
        msg,
    })?;
    Ok(t)
}

pub fn check_templates(t: &[String]) -> Result<(), String> {
    for (i, l) in t.iter().enumerate() {
        if !l.contains("{}") {
            return Err(format!(
                "template on line {} has no `{{}}` for the class name: {l:?} (--templates)",
                i + 1
            ));
        }
    }
    Ok(())
}

pub fn imagenet_templates() -> Vec<String> {
    lines(data::IMAGENET_TEMPLATES)
}

pub fn fill(template: &str, class: &str) -> String {
    template.replacen("{}", class, 1)
}

/// Maps the folders to labels. ImageNet folders named by WordNet id get that id's index among
/// the 1000 classes (so a subset of val is scored against all classes); any other label set is
/// indexed by sorted folder order and must have one name per folder.
pub fn folder_labels(
    folders: &[String],
    dataset: &str,
    classnames: &[String],
    custom_names: bool,
) -> Result<Vec<usize>, Error> {
    if dataset == "imagenet" && !custom_names {
        let synsets = lines(data::IMAGENET_SYNSETS);
        return folders
            .iter()
            .map(|f| {
                synsets.binary_search(f).map_err(|_| {
                    Error::Labels(format!(
                        "class folder `{f}` is not an ImageNet WordNet id (n01440764 ...); use --classnames for other label sets"
                    ))
                })
            })
            .collect();
    }
    if classnames.len() != folders.len() {
        return Err(Error::Labels(format!(
            "{} class names but {} class folders: the names must list one class per folder, in sorted folder order",
            classnames.len(),
            folders.len()
        )));
    }
    Ok((0..folders.len()).collect())
}

/// One decoded batch, in dataset order.
pub struct Batch {
    /// Positions in the sample list.
    pub indices: Vec<usize>,
    /// `[len, 3, n, n]` 8-bit crops, concatenated.
    pub crops: Vec<u8>,
    /// Samples that failed to decode (with `skip_unreadable`).
    pub skipped: Vec<(usize, String)>,
}

/// Decodes batches on a worker pool ahead of the consumer; at most `depth` batches wait in the
/// queue, so memory stays bounded however large the dataset.
pub fn stream(
    samples: Arc<Vec<Sample>>,
    order: Vec<usize>,
    resolution: usize,
    batch_size: usize,
    workers: usize,
    skip_unreadable: bool,
    stop: Arc<AtomicBool>,
) -> mpsc::Receiver<Result<Batch, Error>> {
    let (tx, rx) = mpsc::sync_channel(3);
    std::thread::spawn(move || {
        use rayon::prelude::*;
        let pool = match rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .build()
        {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(Error::Labels(format!(
                    "cannot start decode threads: {e}"
                ))));
                return;
            }
        };
        for chunk in order.chunks(batch_size.max(1)) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let decoded: Vec<Result<Vec<u8>, preprocess::Error>> = pool.install(|| {
                chunk
                    .par_iter()
                    .map(|&i| preprocess::crop_u8(&samples[i].path, resolution))
                    .collect()
            });
            let mut batch = Batch {
                indices: Vec::new(),
                crops: Vec::new(),
                skipped: Vec::new(),
            };
            for (&i, r) in chunk.iter().zip(decoded) {
                match r {
                    Ok(c) => {
                        batch.indices.push(i);
                        batch.crops.extend_from_slice(&c);
                    }
                    Err(e) if skip_unreadable => batch.skipped.push((i, e.msg)),
                    Err(e) => {
                        let _ = tx.send(Err(Error::Image(e)));
                        return;
                    }
                }
            }
            if tx.send(Ok(batch)).is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_data_is_consistent() {
        assert_eq!(lines(data::IMAGENET_CLASSNAMES).len(), 1000);
        assert_eq!(imagenet_templates().len(), 80);
        let s = lines(data::IMAGENET_SYNSETS);
        assert_eq!(s.len(), 1000);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s[0], "n01440764");
        check_templates(&imagenet_templates()).unwrap();
    }

    #[test]
    fn wordnet_folders_map_to_their_index() {
        let folders = vec!["n01443537".to_string(), "n15075141".to_string()];
        let l = folder_labels(&folders, "imagenet", &[], false).unwrap();
        assert_eq!(l, vec![1, 999]);
        assert!(folder_labels(&["cats".into()], "imagenet", &[], false).is_err());
    }
}
