//! A labelled split for the linear probe, from any of the layouts `eval` reads: an ImageFolder,
//! CLIP_benchmark's webdataset layout (`DIR/<split>/nshards.txt`; the split named after the
//! flag: train, test or val) or an explicit shard list. The training split fixes the classes:
//! an ImageFolder's sorted folder names, or a layout's `classnames.txt` (without one, the
//! labels `0..=max`); the other splits are labelled in those classes, folders by name and
//! shards by their `cls` index.

use super::{cifar, image_folder, labels, listed, wds, Error, Sample};
use std::path::{Path, PathBuf};

/// The most classes shards without `classnames.txt` may number (ImageNet-21k has 21,841).
pub const MAX_UNNAMED_CLASSES: usize = 1 << 17;

/// A listed split.
#[derive(Debug, Clone)]
pub struct Split {
    /// The folder, the layout's directory, or the first shard's directory.
    pub root: PathBuf,
    /// `folder`, `wds` (a layout), `shards` (an explicit list), or torchvision's downloads:
    /// `cifar`, or a `listed` download's name (`food101`, `pets`, ...).
    pub kind: &'static str,
    /// Labels are positions in the training split's classes.
    pub samples: Vec<Sample>,
    /// The training split's classes (for the training split itself: the classes it defines).
    pub classes: Vec<String>,
    /// Class folders without images (ImageFolder only).
    pub empty_folders: Vec<PathBuf>,
    /// GIFs in the class folders, left out as torchvision's ImageFolder leaves them out.
    pub gifs_left_out: usize,
    /// Shard samples left out with `skip_unreadable`: `shard/key` and why.
    pub skipped: Vec<(String, String)>,
}

/// Lists the `split` (`train`, `test`, `val`) that `flag` names at `path`; `classes` are the
/// training split's, None when this is the training split.
pub fn open(
    path: &Path,
    split: &str,
    flag: &str,
    classes: Option<&[String]>,
    skip_unreadable: bool,
) -> Result<Split, Error> {
    match cifar::find_all(path).as_slice() {
        [] => {}
        [(kind, dir)] => return open_download(Download::Cifar(*kind), dir, split, flag, classes),
        _ => {
            return Err(Error::Path {
                path: path.into(),
                msg: format!(
                    "holds both CIFAR-10 and CIFAR-100: point {flag} at cifar-10-batches-py or cifar-100-python"
                ),
            })
        }
    }
    if let Some((kind, dir)) = listed::find(path, None) {
        return open_download(Download::Listed(kind), &dir, split, flag, classes);
    }
    match wds::resolve(path, split) {
        Some(shards) => {
            let (shards, layout) = shards.map_err(|e| with_flag(e, flag, ""))?;
            open_shards(path, shards, layout, flag, classes, skip_unreadable)
        }
        None => open_folder(path, flag, classes),
    }
}

/// A VTAB task's `split` (`vtab/svhn`, `train`), or a `tfds/` dataset's, from the TFDS
/// data_dir `path` that `flag` names: its labels are class indices in the one class list.
pub fn open_vtab(path: &Path, dataset: &str, split: &str, flag: &str) -> Result<Split, Error> {
    let l = super::vtab::list_named(path, dataset, split).map_err(|e| with_flag(e, flag, ""))?;
    Ok(Split {
        root: l.dir,
        kind: "vtab",
        samples: l.samples,
        classes: l.classes,
        empty_folders: Vec::new(),
        gifs_left_out: 0,
        skipped: Vec::new(),
    })
}

/// Each of a split's own classes as its place among the training split's `classes` (by name);
/// one missing is an error at `root` naming it as `what` ("class folder") of `flag`.
fn class_map(
    own: &[String],
    classes: &[String],
    root: &Path,
    what: &str,
    flag: &str,
) -> Result<Vec<usize>, Error> {
    own.iter()
        .map(|name| {
            classes
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| Error::Path {
                    path: root.into(),
                    msg: format!(
                        "{what} {name:?} of {flag} is not among the training set's {} classes",
                        classes.len()
                    ),
                })
        })
        .collect()
}

/// `e` with the flag (and a hint) named after its message.
fn with_flag(e: Error, flag: &str, hint: &str) -> Error {
    match e {
        Error::Path { path, msg } => Error::Path {
            path,
            msg: format!("{msg} ({flag}{hint})"),
        },
        e => e,
    }
}

fn open_folder(path: &Path, flag: &str, classes: Option<&[String]>) -> Result<Split, Error> {
    let f = image_folder::list_for(path, flag)?;
    let classes = classes.map_or_else(|| f.folders.clone(), <[String]>::to_vec);
    let map = class_map(&f.folders, &classes, &f.root, "class folder", flag)?;
    Ok(Split {
        empty_folders: f.empty_folders.iter().map(|e| f.root.join(e)).collect(),
        gifs_left_out: f.gifs_left_out,
        samples: f
            .samples
            .into_iter()
            .map(|s| Sample {
                label: map[s.label],
                ..s
            })
            .collect(),
        root: f.root,
        kind: "folder",
        classes,
        skipped: Vec::new(),
    })
}

/// torchvision's downloads: CIFAR's batches, or the images a split file lists (`listed`).
#[derive(Clone, Copy)]
enum Download {
    Cifar(cifar::Kind),
    Listed(listed::Kind),
}

/// A torchvision download's `split`, labelled in the training split's classes (matched by
/// name; its own classes when this is the training split).
fn open_download(
    d: Download,
    dir: &Path,
    split: &str,
    flag: &str,
    classes: Option<&[String]>,
) -> Result<Split, Error> {
    let named = |e| with_flag(e, flag, "");
    let (samples, own, kind) = match d {
        Download::Cifar(k) => (
            cifar::samples(k, dir, split).map_err(named)?,
            cifar::class_names(k, dir)?,
            "cifar",
        ),
        Download::Listed(k) => {
            // Pets' training split is `trainval`.
            let split = if split == "train" {
                k.train_split()
            } else {
                split
            };
            let (s, own) = listed::samples(k, dir, split).map_err(named)?;
            (s, own, k.name())
        }
    };
    let classes = classes.map_or_else(|| own.clone(), <[String]>::to_vec);
    let map = class_map(&own, &classes, dir, "class", flag)?;
    let samples = samples
        .into_iter()
        .map(|s| match map.get(s.label) {
            Some(&label) => Ok(Sample { label, ..s }),
            None => Err(Error::Path {
                msg: format!(
                    "label {} is out of range for {} classes ({flag})",
                    s.label,
                    own.len()
                ),
                path: s.path,
            }),
        })
        .collect::<Result<_, _>>()?;
    Ok(Split {
        root: dir.to_path_buf(),
        kind,
        samples,
        classes,
        empty_folders: Vec::new(),
        gifs_left_out: 0,
        skipped: Vec::new(),
    })
}

fn open_shards(
    path: &Path,
    shards: Vec<PathBuf>,
    layout: bool,
    flag: &str,
    classes: Option<&[String]>,
    skip_unreadable: bool,
) -> Result<Split, Error> {
    let own_names = layout
        .then(|| path.join("classnames.txt"))
        .filter(|p| p.is_file());
    let known = match (classes, &own_names) {
        (Some(c), _) => Some(c.to_vec()),
        (None, Some(p)) => Some(labels::read_classnames(p)?),
        (None, None) => None,
    };
    let wants = wds::Wants {
        // Without class names the largest label fixes the count, up to a bound (a stray huge
        // label must not make a million-class problem).
        classes: Some(known.as_ref().map_or(MAX_UNNAMED_CLASSES, Vec::len)),
        txt: wds::Txt::Unused,
        multilabel: false,
    };
    let hint = if known.is_none() {
        format!("; without classnames.txt labels are 0..{MAX_UNNAMED_CLASSES}")
    } else {
        String::new()
    };
    let ix = wds::index(&shards, wants, skip_unreadable).map_err(|e| with_flag(e, flag, &hint))?;
    let classes = known.unwrap_or_else(|| {
        let n = ix.samples.iter().map(|s| s.label + 1).max().unwrap_or(0);
        (0..n).map(|i| i.to_string()).collect()
    });
    let root = if layout {
        path.to_path_buf()
    } else {
        shards[0]
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    Ok(Split {
        root,
        kind: if layout { "wds" } else { "shards" },
        samples: ix.samples,
        classes,
        empty_folders: Vec::new(),
        gifs_left_out: 0,
        skipped: ix.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::wds::tests::write_tar;

    fn layout(dir: &Path, split: &str, labels: &[u32]) {
        let mut members: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, l) in labels.iter().enumerate() {
            members.push((format!("{i:03}.jpg"), vec![0xff, 0xd8]));
            members.push((format!("{i:03}.cls"), l.to_string().into_bytes()));
        }
        let m: Vec<(&str, &[u8])> = members
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        std::fs::create_dir_all(dir.join(split)).unwrap();
        write_tar(&dir.join(split).join("0.tar"), &m);
        std::fs::write(dir.join(split).join("nshards.txt"), "1\n").unwrap();
    }

    #[test]
    fn a_layout_gives_each_flag_its_split_and_the_training_classes() {
        let d = tempfile::tempdir().unwrap();
        layout(d.path(), "train", &[0, 2, 1, 2]);
        layout(d.path(), "test", &[1, 0]);
        let train = open(d.path(), "train", "--train", None, false).unwrap();
        assert_eq!(train.kind, "wds");
        assert_eq!(train.classes, ["0", "1", "2"]);
        let labels: Vec<usize> = train.samples.iter().map(|s| s.label).collect();
        assert_eq!(labels, [0, 2, 1, 2]);
        // A stray huge label is refused, not a million-class problem.
        let far = d.path().join("far");
        layout(&far, "train", &[0, 5_000_000]);
        let e = open(&far, "train", "--train", None, false).unwrap_err();
        assert!(e.to_string().contains("without classnames.txt"), "{e}");
        let test = open(d.path(), "test", "--test", Some(&train.classes), false).unwrap();
        assert_eq!(test.samples.len(), 2);
        assert!(test.samples[0]
            .path
            .starts_with(d.path().join("test/0.tar")));
        // With class names, the names count and name the classes; a label past them is an
        // error naming the flag.
        std::fs::write(d.path().join("classnames.txt"), "cat\ndog\n").unwrap();
        let e = open(d.path(), "train", "--train", None, false).unwrap_err();
        assert!(e.to_string().contains("out of range") && e.to_string().contains("--train"));
        let kept = open(d.path(), "train", "--train", None, true).unwrap();
        assert_eq!(kept.classes, ["cat", "dog"]);
        assert_eq!((kept.samples.len(), kept.skipped.len()), (2, 2));
        // A layout without the split asked for is named as such, not listed as folders.
        let e = open(d.path(), "val", "--val", Some(&train.classes), false).unwrap_err();
        assert!(e.to_string().contains("without a `val` split"), "{e}");
    }

    #[test]
    fn folders_are_matched_to_the_training_classes_by_name() {
        let d = tempfile::tempdir().unwrap();
        for (split, class) in [("train", "a"), ("train", "b"), ("test", "b")] {
            let c = d.path().join(split).join(class);
            std::fs::create_dir_all(&c).unwrap();
            std::fs::write(c.join("x.jpg"), b"").unwrap();
        }
        let train = open(&d.path().join("train"), "train", "--train", None, false).unwrap();
        assert_eq!((train.kind, train.classes.len()), ("folder", 2));
        let test = open(
            &d.path().join("test"),
            "test",
            "--test",
            Some(&train.classes),
            false,
        )
        .unwrap();
        assert_eq!(test.samples[0].label, 1);
        let other = ["z".to_string()];
        let e = open(
            &d.path().join("test"),
            "test",
            "--test",
            Some(&other),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"b\" of --test"), "{e}");
    }
}
