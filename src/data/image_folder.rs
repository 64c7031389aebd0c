//! Lists an image folder as torchvision's `ImageFolder` does: class folders in sorted order,
//! the images under each (recursively) sorted, by extension.

use super::{Error, Sample};
use crate::preprocess;
use std::path::{Path, PathBuf};

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
