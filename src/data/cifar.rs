//! CIFAR-10 and CIFAR-100 as torchvision downloads them, what CLIP_benchmark and CLIP's
//! linear-probe example read: `cifar-10-batches-py/` (`data_batch_1`..`5`, `test_batch`,
//! `batches.meta`) and `cifar-100-python/` (`train`, `test`, `meta`). Each batch is a pickled
//! dict whose `data` is a uint8 numpy array [N, 3072] (32 x 32 R, G and B planes) and whose
//! `labels` (CIFAR-10) or `fine_labels` (CIFAR-100) are the classes. The pickles are read by the
//! restricted machine (`checkpoint::pickle::parse_numpy`: nothing is called); images are read
//! straight from their bytes in the file, as `Image.fromarray` of torchvision's CIFAR gives them.

use super::{wds::Member, Error, Sample};
use crate::checkpoint::pickle::{self, Value};
use crate::preprocess::{Layout, Raw};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Side and bytes of one CIFAR image.
pub const SIDE: usize = 32;
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cifar10,
    Cifar100,
}

impl Kind {
    /// torchvision's folder for it.
    pub fn folder(self) -> &'static str {
        match self {
            Kind::Cifar10 => "cifar-10-batches-py",
            Kind::Cifar100 => "cifar-100-python",
        }
    }
    /// Our (and CLIP_benchmark's) dataset name.
    pub fn dataset(self) -> &'static str {
        match self {
            Kind::Cifar10 => "cifar10",
            Kind::Cifar100 => "cifar100",
        }
    }
    fn files(self, split: &str) -> Option<Vec<&'static str>> {
        Some(match (self, split) {
            (Kind::Cifar10, "train") => vec![
                "data_batch_1",
                "data_batch_2",
                "data_batch_3",
                "data_batch_4",
                "data_batch_5",
            ],
            (Kind::Cifar10, "test") => vec!["test_batch"],
            (Kind::Cifar100, "train") => vec!["train"],
            (Kind::Cifar100, "test") => vec!["test"],
            _ => return None,
        })
    }
    fn labels_key(self) -> &'static str {
        match self {
            Kind::Cifar10 => "labels",
            Kind::Cifar100 => "fine_labels",
        }
    }
    fn meta(self) -> (&'static str, &'static str) {
        match self {
            Kind::Cifar10 => ("batches.meta", "label_names"),
            Kind::Cifar100 => ("meta", "fine_label_names"),
        }
    }
}

/// torchvision's CIFAR folders at `path`: the folder itself, or those in the root they were
/// downloaded into (both CIFAR-10 and CIFAR-100 when both were).
pub fn find_all(path: &Path) -> Vec<(Kind, PathBuf)> {
    let mut out = Vec::new();
    for kind in [Kind::Cifar10, Kind::Cifar100] {
        let marker = |d: &Path| d.join(kind.meta().0).is_file();
        if path.file_name().is_some_and(|n| n == kind.folder()) && marker(path) {
            out.push((kind, path.to_path_buf()));
        }
        let inner = path.join(kind.folder());
        if marker(&inner) {
            out.push((kind, inner));
        }
    }
    out
}

/// The CIFAR folder at `path` for `dataset` (`cifar10`, `cifar100`) when it is there, else
/// the first one found.
pub fn find(path: &Path, dataset: Option<&str>) -> Option<(Kind, PathBuf)> {
    let all = find_all(path);
    let wanted = all.iter().position(|(k, _)| Some(k.dataset()) == dataset);
    all.into_iter().nth(wanted.unwrap_or(0))
}

/// A split (`train` or `test`) of the CIFAR folder `dir`: its images in file order, labelled.
pub fn samples(kind: Kind, dir: &Path, split: &str) -> Result<Vec<Sample>, Error> {
    let files = kind.files(split).ok_or_else(|| Error::Path {
        path: dir.into(),
        msg: format!("CIFAR has no `{split}` split (train or test)"),
    })?;
    let mut out = Vec::new();
    for name in files {
        let path = dir.join(name);
        let fail = naming(&path);
        let value = unpickle(&path)?;
        let (offset, n) = image_data(&value).map_err(&fail)?;
        let labels = int_list(&value, kind.labels_key()).map_err(&fail)?;
        if labels.len() != n {
            return Err(fail(format!("{n} images but {} labels", labels.len())));
        }
        let file = Arc::new(path.clone());
        for (i, label) in labels.into_iter().enumerate() {
            out.push(Sample {
                path: path.join(i.to_string()),
                label,
                member: Some(Member {
                    tar: file.clone(),
                    offset: (offset + i * IMAGE_BYTES) as u64,
                    len: IMAGE_BYTES as u64,
                    pixels: Some(Raw {
                        width: SIDE as u32,
                        height: SIDE as u32,
                        layout: Layout::Planes,
                    }),
                    rows: None,
                    inflate: None,
                }),
                region: None,
                decoder: super::Decoder::Pil,
            });
        }
    }
    Ok(out)
}

/// The class names the download carries (`label_names`, `fine_label_names`).
pub fn class_names(kind: Kind, dir: &Path) -> Result<Vec<String>, Error> {
    let (file, key) = kind.meta();
    let path = dir.join(file);
    let fail = naming(&path);
    let value = unpickle(&path)?;
    let list = field(&value, key).map_err(&fail)?;
    let Value::List(items) = list else {
        return Err(fail(format!("`{key}` is not a list")));
    };
    items
        .iter()
        .map(|v| match v {
            Value::Str(s) => Ok(s.clone()),
            // Python 2's byte strings, read as torchvision reads them (latin-1).
            Value::Bytes(b) => Ok(b.iter().map(|&c| c as char).collect()),
            _ => Err(fail(format!("`{key}` holds a non-string"))),
        })
        .collect()
}

/// An error about `path`.
fn naming(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |msg| Error::Path {
        path: path.to_path_buf(),
        msg,
    }
}

/// A batch or meta file, read by the pickle machine in numpy mode.
fn unpickle(path: &Path) -> Result<Value, Error> {
    let fail = naming(path);
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    Ok(pickle::parse_numpy(&bytes).map_err(|e| fail(e.0))?.0)
}

/// A dict's value under a string key (Python 2's byte-string keys too).
fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    let Value::Dict(items) = v else {
        return Err("not a CIFAR batch (the pickle is not a dict)".into());
    };
    items
        .iter()
        .find(|(k, _)| match k {
            Value::Str(s) => s == key,
            Value::Bytes(b) => b == key.as_bytes(),
            _ => false,
        })
        .map(|(_, v)| v)
        .ok_or_else(|| format!("not a CIFAR batch (no `{key}`)"))
}

/// Where `data` (uint8 [N, 3072], C order) lies in the file, and N.
fn image_data(v: &Value) -> Result<(usize, usize), String> {
    let Value::Object { class, state } = field(v, "data")? else {
        return Err("`data` is not a numpy array".into());
    };
    if class != "numpy.ndarray" {
        return Err("`data` is not a numpy array".into());
    }
    let Value::Tuple(st) = &**state else {
        return Err("`data`: numpy array without its state".into());
    };
    // (version, shape, dtype, fortran_order, data)
    let (shape, dtype, fortran, data) = match st.as_slice() {
        [_, shape, dtype, fortran, data] => (shape, dtype, fortran, data),
        _ => return Err("`data`: unexpected numpy array state".into()),
    };
    let shape: Vec<usize> = match shape {
        Value::Tuple(d) => d
            .iter()
            .map(|x| match x {
                Value::Int(i) => usize::try_from(*i).map_err(|_| "negative dimension".to_string()),
                _ => Err("non-integer dimension".into()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("`data`: array shape is not a tuple".into()),
    };
    let n = match shape.as_slice() {
        [n, w] if *w == IMAGE_BYTES => *n,
        _ => {
            return Err(format!(
                "`data` has shape {shape:?}, not [N, {IMAGE_BYTES}]"
            ))
        }
    };
    let uint8 = matches!(dtype, Value::Object { class, state } if class == "numpy.dtype"
        && matches!(&**state, Value::Tuple(a) if matches!(a.first(),
            Some(Value::Str(s)) if s == "u1") || matches!(a.first(),
            Some(Value::Bytes(b)) if b == b"u1")));
    if !uint8 {
        return Err("`data` is not a uint8 array".into());
    }
    if !matches!(fortran, Value::Bool(false) | Value::Int(0)) {
        return Err("`data` is in Fortran order".into());
    }
    match data {
        Value::Blob { offset, len } if *len == n * IMAGE_BYTES => Ok((*offset, n)),
        Value::Blob { len, .. } => {
            Err(format!("`data` holds {len} bytes, not {n} x {IMAGE_BYTES}"))
        }
        _ => Err("`data`: array bytes not found".into()),
    }
}

fn int_list(v: &Value, key: &str) -> Result<Vec<usize>, String> {
    let Value::List(items) = field(v, key)? else {
        return Err(format!("`{key}` is not a list"));
    };
    items
        .iter()
        .map(|x| match x {
            Value::Int(i) => usize::try_from(*i).map_err(|_| format!("negative label in `{key}`")),
            _ => Err(format!("`{key}` holds a non-integer")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar")
    }

    #[test]
    fn batches_give_their_rows_in_place() {
        let (kind, dir) = find(&fixture(), None).unwrap();
        assert_eq!(
            (kind, dir.file_name().unwrap()),
            (Kind::Cifar10, "cifar-10-batches-py".as_ref())
        );
        assert_eq!(find(&dir, Some("cifar100")).unwrap().1, dir);
        // A root holding both: the one the dataset names.
        assert_eq!(
            find(&fixture(), Some("cifar100")).unwrap().0,
            Kind::Cifar100
        );
        assert_eq!(find_all(&fixture()).len(), 2);
        let test = samples(kind, &dir, "test").unwrap();
        let labels: Vec<usize> = test.iter().map(|s| s.label).collect();
        assert_eq!(labels, [3, 0, 9, 3, 5, 1]);
        let file = std::fs::read(dir.join("test_batch")).unwrap();
        let m0 = test[0].member.as_ref().unwrap();
        for (i, s) in test.iter().enumerate() {
            let m = s.member.as_ref().unwrap();
            assert_eq!(
                (m.offset, m.len),
                (m0.offset + (i * IMAGE_BYTES) as u64, 3072)
            );
            assert!(s.path.ends_with(format!("test_batch/{i}")));
        }
        // The array's bytes end where BUILD's closing opcodes begin.
        let end = (m0.offset + 6 * 3072) as usize;
        assert_eq!(&file[end..end + 2], b"tb");
        assert_eq!(samples(kind, &dir, "train").unwrap().len(), 10);
        assert!(samples(kind, &dir, "val").is_err());
        assert_eq!(class_names(kind, &dir).unwrap()[9], "truck");
        let (k100, d100) = find(&fixture().join("cifar-100-python"), None).unwrap();
        assert_eq!(k100, Kind::Cifar100);
        let l: Vec<usize> = samples(k100, &d100, "test")
            .unwrap()
            .iter()
            .map(|s| s.label)
            .collect();
        assert_eq!(l, [1, 99, 0, 2]);
        assert_eq!(class_names(k100, &d100).unwrap().len(), 100);
    }

    #[test]
    fn other_pickles_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("cifar-10-batches-py");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("batches.meta"), b"\x80\x02}q\x01.").unwrap();
        // A dict without `data`; a list; os.system called.
        for (bytes, want) in [
            (&b"\x80\x02}q\x01(U\x06labels]q\x02u."[..], "no `data`"),
            (b"\x80\x02]q\x01.", "not a dict"),
            (
                b"\x80\x02}(U\x04datacos\nsystem\nU\x02id\x85Ru.",
                "not a numpy array",
            ),
        ] {
            std::fs::write(d.join("test_batch"), bytes).unwrap();
            let e = samples(Kind::Cifar10, &d, "test").unwrap_err().to_string();
            assert!(e.contains("test_batch") && e.contains(want), "{e}");
        }
    }
}
