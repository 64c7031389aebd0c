//! Food-101 as torchvision downloads it (what CLIP_benchmark's `food101` reads): `food-101/`
//! with `images/<class>/<id>.jpg` and the official split in `meta/train.json` /
//! `meta/test.json` (`{class: ["class/id", ...]}`). torchvision's classes are the JSON's keys
//! sorted, and a split holds only the images its file lists: the `images/` folder as an
//! ImageFolder would be both splits at once (101,000 images instead of the 25,250 of `test`).

use super::{Error, Sample};
use std::path::{Path, PathBuf};

/// The folder name torchvision downloads into.
pub const FOLDER: &str = "food-101";

/// torchvision's Food-101 folder at `path` (the folder itself, or the root it was downloaded
/// into), if there is one.
pub fn find(path: &Path) -> Option<PathBuf> {
    let is = |d: &Path| d.join("meta/test.json").is_file() && d.join("images").is_dir();
    if path.file_name().is_some_and(|n| n == FOLDER) && is(path) {
        return Some(path.to_path_buf());
    }
    let inner = path.join(FOLDER);
    is(&inner).then_some(inner)
}

/// The `split` (`train` or `test`) of the Food-101 folder `dir`: its images in the split
/// file's order (classes sorted), labelled by their class's sorted place; and the classes.
pub fn samples(dir: &Path, split: &str) -> Result<(Vec<Sample>, Vec<String>), Error> {
    if split != "train" && split != "test" {
        return Err(Error::Path {
            path: dir.into(),
            msg: format!("Food-101 has no `{split}` split (train or test)"),
        });
    }
    let path = dir.join("meta").join(format!("{split}.json"));
    let fail = |msg: String| Error::Path {
        path: path.clone(),
        msg,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    // serde_json's map is ordered by key: torchvision's sorted classes.
    let split_map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| fail(format!("not a Food-101 split file: {e}")))?;
    let classes: Vec<String> = split_map.keys().cloned().collect();
    let mut out = Vec::new();
    for (label, (class, list)) in split_map.iter().enumerate() {
        let list = list
            .as_array()
            .ok_or_else(|| fail(format!("`{class}` is not a list of images")))?;
        for item in list {
            let rel = item
                .as_str()
                .filter(|r| !r.is_empty() && !r.split('/').any(|c| c == ".." || c.is_empty()))
                .ok_or_else(|| {
                    fail(format!("`{class}` lists {item}, not a relative image name"))
                })?;
            let mut p = dir.join("images");
            p.extend(format!("{rel}.jpg").split('/'));
            out.push(Sample::file(p, label));
        }
    }
    Ok((out, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_is_what_its_file_lists() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join(FOLDER);
        std::fs::create_dir_all(root.join("meta")).unwrap();
        std::fs::create_dir_all(root.join("images")).unwrap();
        std::fs::write(
            root.join("meta/test.json"),
            r#"{"waffles": ["waffles/7", "waffles/3"], "apple_pie": ["apple_pie/1"]}"#,
        )
        .unwrap();
        assert_eq!(find(d.path()).unwrap(), root);
        assert_eq!(find(&root).unwrap(), root);
        let (s, classes) = samples(&root, "test").unwrap();
        assert_eq!(classes, ["apple_pie", "waffles"]);
        let got: Vec<(String, usize)> = s
            .iter()
            .map(|s| {
                let rel = s.path.strip_prefix(root.join("images")).unwrap();
                (rel.to_string_lossy().into_owned(), s.label)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("apple_pie/1.jpg".to_string(), 0),
                ("waffles/7.jpg".to_string(), 1),
                ("waffles/3.jpg".to_string(), 1)
            ]
        );
        assert!(samples(&root, "val").is_err());
        assert!(samples(&root, "train")
            .unwrap_err()
            .to_string()
            .contains("train.json"));
        std::fs::write(root.join("meta/test.json"), r#"{"a": ["../x"]}"#).unwrap();
        assert!(samples(&root, "test").is_err());
    }
}
