//! Label sets: class names (in torchvision's label order) and prompt templates, built in for
//! ImageNet and the other datasets the reference evaluates, or read from files. Class names
//! from CLIP's prompt lists and the clip_benchmark package, templates from clip_benchmark; see
//! configs/data/LICENSES.md.

use super::Error;
use std::path::Path;

macro_rules! data {
    ($($name:literal),* $(,)?) => {
        /// (name, class names, the dataset's own templates)
        const DATA: &[(&str, &str, &str)] = &[
            $(($name,
               include_str!(concat!("../../configs/data/datasets/", $name, "_classnames.txt")),
               include_str!(concat!("../../configs/data/datasets/", $name, "_templates.txt")))),*
        ];
        pub const NAMES: &[&str] = &[$($name),*];
    };
}

data!(
    "cifar10", "cifar100", "caltech", "car", "flowers", "food", "sun", "dtd", "aircraft", "pet",
    "sat"
);

/// Data files shipped with the binary.
pub mod files {
    pub const IMAGENET_CLASSNAMES: &str =
        include_str!("../../configs/data/imagenet_classnames.txt");
    pub const IMAGENET_TEMPLATES: &str = include_str!("../../configs/data/imagenet_templates.txt");
    pub const IMAGENET_SYNSETS: &str = include_str!("../../configs/data/imagenet_synsets.txt");
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
        "imagenet" => Some(lines(files::IMAGENET_CLASSNAMES)),
        other => classnames(other),
    }
}

pub fn known_datasets() -> Vec<&'static str> {
    let mut v = vec!["imagenet"];
    v.extend(NAMES.iter().copied());
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
    check_templates(&t).map_err(|e| match e {
        Error::Labels(msg) => Error::Path {
            path: path.into(),
            msg,
        },
        other => other,
    })?;
    Ok(t)
}

/// Every template must have a `{}` slot for the class name.
pub fn check_templates(t: &[String]) -> Result<(), Error> {
    for (i, l) in t.iter().enumerate() {
        if !l.contains("{}") {
            return Err(Error::Labels(format!(
                "template on line {} has no `{{}}` for the class name: {l:?} (--templates)",
                i + 1
            )));
        }
    }
    Ok(())
}

pub fn imagenet_templates() -> Vec<String> {
    lines(files::IMAGENET_TEMPLATES)
}

pub fn fill(template: &str, class: &str) -> String {
    template.replacen("{}", class, 1)
}

/// Maps the folders to labels. ImageNet folders named by WordNet id get that id's index among
/// the 1000 classes (so a subset of val is scored against all classes); any other label set is
/// indexed by sorted folder order and must have one name per folder. `names_file`: where the
/// class names came from (`--classnames`), None for a built-in list.
pub fn folder_labels(
    folders: &[String],
    dataset: &str,
    classnames: &[String],
    names_file: Option<&Path>,
) -> Result<Vec<usize>, Error> {
    if dataset == "imagenet" && names_file.is_none() {
        let synsets = lines(files::IMAGENET_SYNSETS);
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
        let source = match names_file {
            Some(p) => format!("--classnames {}", p.display()),
            None => format!("the built-in `{dataset}` list"),
        };
        return Err(Error::Labels(format!(
            "{} class names in {source} but {} class folders: the names must list one class per folder, in sorted folder order",
            classnames.len(),
            folders.len()
        )));
    }
    Ok((0..folders.len()).collect())
}

/// The built-in class names of one of the other datasets.
pub fn classnames(name: &str) -> Option<Vec<String>> {
    DATA.iter().find(|d| d.0 == name).map(|d| lines(d.1))
}

/// The dataset's own templates (`--templates dataset`); the reference uses the 80 ImageNet ones.
pub fn templates(name: &str) -> Option<Vec<String>> {
    if name == "imagenet" {
        return Some(imagenet_templates());
    }
    DATA.iter().find(|d| d.0 == name).map(|d| lines(d.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_data_is_consistent() {
        assert_eq!(lines(files::IMAGENET_CLASSNAMES).len(), 1000);
        assert_eq!(imagenet_templates().len(), 80);
        let s = lines(files::IMAGENET_SYNSETS);
        assert_eq!(s.len(), 1000);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s[0], "n01440764");
        check_templates(&imagenet_templates()).unwrap();
    }

    #[test]
    fn wordnet_folders_map_to_their_index() {
        let folders = vec!["n01443537".to_string(), "n15075141".to_string()];
        let l = folder_labels(&folders, "imagenet", &[], None).unwrap();
        assert_eq!(l, vec![1, 999]);
        assert!(folder_labels(&["cats".into()], "imagenet", &[], None).is_err());
    }

    /// Lengths and anchor classes of the torchvision datasets' label order.
    #[test]
    fn class_lists_follow_torchvision() {
        type Anchors = &'static [(usize, &'static str)];
        let expect: &[(&str, usize, Anchors)] = &[
            (
                "cifar10",
                10,
                &[(0, "airplane"), (1, "automobile"), (9, "truck")],
            ),
            (
                "cifar100",
                100,
                &[(0, "apple"), (1, "aquarium fish"), (99, "worm")],
            ),
            // torchvision's Caltech101 drops BACKGROUND_Google; Faces, Faces_easy come first.
            (
                "caltech",
                101,
                &[
                    (0, "off-center face"),
                    (1, "centered face"),
                    (4, "accordion"),
                    (100, "yin and yang symbol"),
                ],
            ),
            (
                "car",
                196,
                &[
                    (0, "AM General Hummer SUV 2000"),
                    (195, "smart fortwo Convertible 2012"),
                ],
            ),
            (
                "flowers",
                102,
                &[(0, "pink primrose"), (101, "blackberry lily")],
            ),
            ("food", 101, &[(0, "apple pie"), (100, "waffles")]),
            ("sun", 397, &[(0, "abbey"), (396, "youth hostel")]),
            ("dtd", 47, &[(0, "banded"), (46, "zigzagged")]),
            ("aircraft", 100, &[(0, "707-320"), (99, "Yak-42")]),
            ("pet", 37, &[(0, "Abyssinian"), (36, "Yorkshire Terrier")]),
            // torchvision's EuroSAT: AnnualCrop, Forest, HerbaceousVegetation, ..., SeaLake.
            (
                "sat",
                10,
                &[
                    (0, "annual crop land"),
                    (2, "brushland or shrubland"),
                    (9, "lake or sea"),
                ],
            ),
        ];
        for (name, n, anchors) in expect {
            let c = classnames(name).unwrap();
            assert_eq!(c.len(), *n, "{name}");
            for (i, v) in anchors.iter() {
                assert_eq!(c[*i], *v, "{name}[{i}]");
            }
            let mut uniq = c.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq.len(), c.len(), "{name} has duplicates");
            let t = templates(name).unwrap();
            assert!(!t.is_empty());
            check_templates(&t).unwrap();
        }
        assert_eq!(NAMES.len(), 11);
    }
}
