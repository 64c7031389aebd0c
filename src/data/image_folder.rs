//! Lists an image folder as torchvision's `ImageFolder` does: class folders in sorted order,
//! the images under each (recursively, symlinks followed) sorted, by extension. A directory
//! symlink that leads back to a directory above it is an error naming the link, not an
//! endless walk.

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
    /// GIF files under the class folders: decodable, but not in torchvision's extensions, so
    /// not part of the reference's dataset nor of ours (warned about).
    pub gifs_left_out: usize,
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

/// Lists `root` (`--test-data-path`) like torchvision's ImageFolder.
pub fn list(root: &Path) -> Result<ImageFolder, Error> {
    list_for(root, "--test-data-path")
}

/// [`list`] for the folder a given flag names (named in the errors).
pub fn list_for(root: &Path, flag: &str) -> Result<ImageFolder, Error> {
    if !root.exists() {
        return Err(Error::Path {
            path: root.into(),
            msg: format!("no such directory ({flag})"),
        });
    }
    if !root.is_dir() {
        return Err(Error::Path {
            path: root.into(),
            msg: format!("is not a directory ({flag})"),
        });
    }
    let mut folders = Vec::new();
    let mut samples = Vec::new();
    let mut empty = Vec::new();
    let mut chain = vec![canonical(root)?];
    let mut gifs = 0;
    for entry in sorted_entries(root)? {
        let p = entry.path();
        if !p.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let label = folders.len();
        let mut files = Vec::new();
        walk(&p, &mut chain, &mut files, &mut gifs)?;
        files.sort_by(|a, b| walk_order(a).cmp(&walk_order(b)));
        if files.is_empty() {
            empty.push(name.clone());
        }
        samples.extend(files.into_iter().map(|path| Sample::file(path, label)));
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
            msg: if gifs > 0 {
                format!("holds no images but {gifs} GIF file(s), which torchvision's ImageFolder (so the reference) does not list")
            } else {
                "holds no images with a known extension".into()
            },
        });
    }
    Ok(ImageFolder {
        root: root.into(),
        folders,
        samples,
        empty_folders: empty,
        gifs_left_out: gifs,
    })
}

/// torchvision's order within a class: `sorted(os.walk(class_dir))` sorts the directories by
/// their whole path string, then each directory's files by name. So a folder's own files come
/// before any subfolder's, and `sub-2/` before `sub/x/` ('-' < '/'), which a component-wise
/// path sort would not give.
fn walk_order(p: &Path) -> (&[u8], &[u8]) {
    let dir = p
        .parent()
        .map_or(&[][..], |d| d.as_os_str().as_encoded_bytes());
    (dir, p.file_name().map_or(&[][..], |f| f.as_encoded_bytes()))
}

fn canonical(dir: &Path) -> Result<PathBuf, Error> {
    std::fs::canonicalize(dir).map_err(|e| Error::Path {
        path: dir.into(),
        msg: e.to_string(),
    })
}

/// The images under `dir`, which is entered from the directories whose canonical paths are
/// `chain` (root first): reaching one of them again is a cycle.
fn walk(
    dir: &Path,
    chain: &mut Vec<PathBuf>,
    out: &mut Vec<PathBuf>,
    gifs: &mut usize,
) -> Result<(), Error> {
    let here = canonical(dir)?;
    if let Some(ancestor) = chain.iter().find(|a| **a == here) {
        return Err(Error::Path {
            path: dir.into(),
            msg: format!(
                "directory symlink leads back to {} (a cycle); remove it or point it outside the dataset",
                ancestor.display()
            ),
        });
    }
    chain.push(here);
    for e in sorted_entries(dir)? {
        let p = e.path();
        if p.is_dir() {
            walk(&p, chain, out, gifs)?;
        } else if preprocess::is_folder_image(&p) {
            out.push(p);
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gif")) {
            *gifs += 1;
        }
    }
    chain.pop();
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn symlink_cycles_are_named_and_other_links_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("data"), dir.path().join("outside"));
        for d in [root.join("a/sub"), root.join("b"), outside.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        for f in [
            root.join("a/sub/1.jpg"),
            root.join("b/2.jpg"),
            outside.join("3.png"),
        ] {
            std::fs::write(f, b"x").unwrap();
        }
        // A link out of the tree is followed, as torchvision does.
        std::os::unix::fs::symlink(&outside, root.join("b/ext")).unwrap();
        let f = list(&root).unwrap();
        assert_eq!(f.folders, ["a", "b"]);
        assert_eq!(f.samples.len(), 3);
        assert!(f.samples[2].path.ends_with("b/ext/3.png"));
        // A link back up the tree is a cycle, named.
        let link = root.join("a/sub/loop");
        std::os::unix::fs::symlink("..", &link).unwrap();
        let e = list(&root).unwrap_err().to_string();
        assert!(
            e.contains(&link.display().to_string()) && e.contains("cycle"),
            "{e}"
        );
        std::fs::remove_file(&link).unwrap();
        // So is a class folder that is the root itself.
        std::os::unix::fs::symlink(&root, root.join("c")).unwrap();
        let e = list(&root).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn files_come_in_torchvisions_walk_order() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c");
        for d in ["sub/x", "sub-2"] {
            std::fs::create_dir_all(c.join(d)).unwrap();
        }
        for f in [
            "z.jpg",
            "a.jpg",
            "sub/x/b.jpg",
            "sub/m.jpg",
            "sub-2/k.jpg",
            "sub/y.jpg",
            "anim.gif",
            "notes.txt",
        ] {
            std::fs::write(c.join(f), b"x").unwrap();
        }
        let f = list(dir.path()).unwrap();
        let got: Vec<_> = f
            .samples
            .iter()
            .map(|s| {
                s.path
                    .strip_prefix(&c)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        // sorted(os.walk("c")): roots "c", "c/sub", "c/sub-2", "c/sub/x"; no GIF in
        // torchvision's IMG_EXTENSIONS (counted for the warning).
        assert_eq!(f.gifs_left_out, 1);
        assert_eq!(
            got,
            [
                "a.jpg",
                "z.jpg",
                "sub/m.jpg",
                "sub/y.jpg",
                "sub-2/k.jpg",
                "sub/x/b.jpg"
            ]
        );
    }
}
