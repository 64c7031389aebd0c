//! Datasets as torchvision downloads them where a split is a list file over one image tree, what
//! CLIP_benchmark's `food101` and `dtd` read. Pointing an ImageFolder at the image tree would
//! score every split at once (Food-101: 101,000 images instead of the 25,250 of `test`; DTD:
//! 5,640 instead of the 1,880 of `test1`).
//! - Food-101: `food-101/images/<class>/<id>.jpg`, the split in `meta/{train,test}.json`
//!   (`{class: ["class/id", ...]}`).
//! - DTD: `dtd/dtd/images/<class>/<name>.jpg` (torchvision's root adds one `dtd/`), the split in
//!   `labels/{train,val,test}1.txt` (`class/name.jpg` per line; partition 1, as CLIP_benchmark).
//!
//! torchvision's classes are the split's classes sorted; the images keep the file's order.

use super::{Error, Sample};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Food101,
    Dtd,
}

impl Kind {
    /// Our dataset name (CLIP_benchmark's `food101` and `dtd` map to it).
    pub fn dataset(self) -> &'static str {
        match self {
            Kind::Food101 => "food",
            Kind::Dtd => "dtd",
        }
    }
    /// As the JSON and messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Food101 => "food101",
            Kind::Dtd => "dtd",
        }
    }
    fn what(self) -> &'static str {
        match self {
            Kind::Food101 => "Food-101",
            Kind::Dtd => "DTD",
        }
    }
    /// The folders, from a download root, to the one holding the split files and images.
    fn folders(self) -> &'static [&'static str] {
        match self {
            Kind::Food101 => &["food-101"],
            Kind::Dtd => &["dtd", "dtd"],
        }
    }
    fn split_file(self, split: &str) -> Option<String> {
        match (self, split) {
            (Kind::Food101, "train" | "test") => Some(format!("meta/{split}.json")),
            (Kind::Dtd, "train" | "val" | "test") => Some(format!("labels/{split}1.txt")),
            _ => None,
        }
    }
    /// Its splits.
    pub fn splits(self) -> &'static [&'static str] {
        match self {
            Kind::Food101 => &["test", "train"],
            Kind::Dtd => &["test", "train", "val"],
        }
    }
}

/// torchvision's download at `path`: the data folder itself, or a root above it.
pub fn find(path: &Path) -> Option<(Kind, PathBuf)> {
    for kind in [Kind::Food101, Kind::Dtd] {
        let is = |d: &Path| {
            d.join(kind.split_file("test").expect("test split"))
                .is_file()
                && d.join("images").is_dir()
        };
        let mut d = path.to_path_buf();
        // The folder itself, or each step down from the root.
        if is(&d)
            && d.file_name()
                .is_some_and(|n| n == kind.folders()[kind.folders().len() - 1])
        {
            return Some((kind, d));
        }
        for f in kind.folders() {
            d = d.join(f);
            if is(&d) {
                return Some((kind, d));
            }
        }
    }
    None
}

/// The `split` of the download at `dir`: its images in the split file's order, labelled by
/// their class's place among the split's classes sorted; and those classes.
pub fn samples(kind: Kind, dir: &Path, split: &str) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let file = kind.split_file(split).ok_or_else(|| Error::Path {
        path: dir.into(),
        msg: format!(
            "{} has no `{split}` split ({})",
            kind.what(),
            kind.splits().join(", ")
        ),
    })?;
    let path = dir.join(file);
    let fail = |msg: String| Error::Path {
        path: path.clone(),
        msg,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    // Food-101's classes are its file's keys, listed images or not; DTD's those it lists.
    let (entries, declared) = match kind {
        Kind::Food101 => food101_entries(&text).map_err(&fail)?,
        Kind::Dtd => (
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| match l.split_once('/') {
                    Some((c, _)) => Ok((c.to_string(), l.to_string())),
                    None => Err(fail(format!("line {l:?} is not CLASS/IMAGE"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Vec::new(),
        ),
    };
    let mut classes: Vec<String> = entries
        .iter()
        .map(|(c, _)| c.clone())
        .chain(declared)
        .collect();
    classes.sort();
    classes.dedup();
    let mut out = Vec::with_capacity(entries.len());
    for (class, rel) in entries {
        if rel.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(fail(format!("{rel:?} is not a relative image name")));
        }
        let mut p = dir.join("images");
        p.extend(rel.split('/'));
        let label = classes.binary_search(&class).expect("listed class");
        out.push(Sample::file(p, label));
    }
    Ok((out, classes))
}

/// Food-101's `{class: ["class/id", ...]}`: (class, `class/id.jpg`) in the file's order, and
/// every class it names.
type Entries = (Vec<(String, String)>, Vec<String>);

fn food101_entries(text: &str) -> Result<Entries, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("not a Food-101 split file: {e}"))?;
    let mut out = Vec::new();
    let classes = map.keys().cloned().collect();
    for (class, list) in map {
        let list = list
            .as_array()
            .ok_or_else(|| format!("`{class}` is not a list of images"))?;
        for item in list {
            let rel = item
                .as_str()
                .ok_or_else(|| format!("`{class}` lists {item}, not an image name"))?;
            out.push((class.clone(), format!("{rel}.jpg")));
        }
    }
    Ok((out, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &[Sample], dir: &Path) -> Vec<(String, usize)> {
        s.iter()
            .map(|s| {
                let r = s.path.strip_prefix(dir.join("images")).unwrap();
                (r.to_string_lossy().into_owned(), s.label)
            })
            .collect()
    }

    #[test]
    fn a_split_is_what_its_file_lists() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("food-101");
        std::fs::create_dir_all(root.join("meta")).unwrap();
        std::fs::create_dir_all(root.join("images")).unwrap();
        std::fs::write(
            root.join("meta/test.json"),
            r#"{"waffles": ["waffles/7", "waffles/3"], "apple_pie": ["apple_pie/1"], "bibimbap": []}"#,
        )
        .unwrap();
        assert_eq!(find(d.path()).unwrap(), (Kind::Food101, root.clone()));
        assert_eq!(find(&root).unwrap().1, root);
        let (s, classes) = samples(Kind::Food101, &root, "test").unwrap();
        assert_eq!(classes, ["apple_pie", "bibimbap", "waffles"]);
        let want = [
            ("apple_pie/1.jpg", 0),
            ("waffles/7.jpg", 2),
            ("waffles/3.jpg", 2),
        ];
        assert_eq!(rel(&s, &root), want.map(|(p, l)| (p.to_string(), l)));
        assert!(samples(Kind::Food101, &root, "val").is_err());
        let e = samples(Kind::Food101, &root, "train").unwrap_err();
        assert!(e.to_string().contains("train.json"), "{e}");
        std::fs::write(root.join("meta/test.json"), r#"{"a": ["../x"]}"#).unwrap();
        assert!(samples(Kind::Food101, &root, "test").is_err());
        // DTD: torchvision's root holds dtd/dtd/{images,labels}; classes sorted, file order kept.
        let dtd = d.path().join("t/dtd/dtd");
        std::fs::create_dir_all(dtd.join("labels")).unwrap();
        std::fs::create_dir_all(dtd.join("images")).unwrap();
        std::fs::write(
            dtd.join("labels/test1.txt"),
            "zigzagged/z_1.jpg\nbanded/b_2.jpg\n",
        )
        .unwrap();
        assert_eq!(find(&d.path().join("t")).unwrap(), (Kind::Dtd, dtd.clone()));
        assert_eq!(find(&dtd).unwrap().1, dtd);
        let (s, classes) = samples(Kind::Dtd, &dtd, "test").unwrap();
        assert_eq!(classes, ["banded", "zigzagged"]);
        let want = [("zigzagged/z_1.jpg", 1), ("banded/b_2.jpg", 0)];
        assert_eq!(rel(&s, &dtd), want.map(|(p, l)| (p.to_string(), l)));
    }
}
