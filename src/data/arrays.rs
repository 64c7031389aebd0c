//! torchvision's downloads whose images are raw 8-bit arrays, what CLIP_benchmark's `mnist` and
//! `stl10` read. Each image is read straight from its bytes in the file, as `Image.fromarray`
//! of torchvision's dataset gives it; nothing is decoded or copied beforehand.
//! - MNIST: `MNIST/raw/{train,t10k}-images-idx3-ubyte` (IDX: a big-endian magic `0x0000080N`,
//!   N sizes, then uint8 `[count, 28, 28]`), labels in `{train,t10k}-labels-idx1-ubyte`
//!   (uint8 `[count]`). torchvision keeps both the `.gz` downloads and these extracted files.
//! - STL-10: `stl10_binary/{train,test}_X.bin` (uint8 `[count, 3, 96, 96]`, each plane
//!   stored column by column), labels counted from 1 in `{train,test}_y.bin`, classes in
//!   `class_names.txt`.
//! - PCAM: `pcam/camelyonpatch_level_2_split_{train,valid,test}_x.h5`, HDF5 files whose dataset
//!   `x` is uint8 `[count, 96, 96, 3]`, labels in `y` (`[count, 1, 1, 1]`) of the `_y.h5`
//!   files, read by our own HDF5 reader (`hdf5`). Contiguous data is read in place as the
//!   others; chunked data row by row through the reader.

use super::hdf5::{Dataset, Dtype};
use super::{wds::Member, Error, Sample};
use crate::preprocess::{Layout, Raw};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most images one HDF5 array may list (PCAM's largest split has 262,144).
const MAX_ARRAY_IMAGES: u64 = 1 << 24;

/// MNIST's image side; STL-10's.
const MNIST_SIDE: u32 = 28;
const STL10_SIDE: u32 = 96;

fn fail(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |msg| Error::Path {
        path: path.into(),
        msg,
    }
}

/// An IDX file's shape and where its uint8 data begins (torchvision's
/// `read_sn3_pascalvincent_tensor`, strict: the data fills the file exactly).
fn idx_header(path: &Path, ndim: usize) -> Result<(Vec<u64>, u64), Error> {
    use std::io::Read;
    let err = fail(path);
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let size = f.metadata().map_err(|e| err(e.to_string()))?.len();
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .map_err(|_| err("too short for an IDX file".into()))?;
    let magic = u32::from_be_bytes(magic);
    let (ty, nd) = (magic >> 8, (magic & 0xff) as usize);
    if !(8..=14).contains(&ty) || !(1..=3).contains(&nd) {
        return Err(err(format!("not an IDX file (magic {magic:#010x})")));
    }
    if ty != 8 || nd != ndim {
        return Err(err(format!(
            "IDX of type {ty:#x} with {nd} dimensions, not uint8 with {ndim}"
        )));
    }
    let mut head = vec![0u8; 4 * ndim];
    f.read_exact(&mut head)
        .map_err(|_| err("too short for its IDX header".into()))?;
    let dims: Vec<u64> = head
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()) as u64)
        .collect();
    let start = 4 + head.len() as u64;
    let want = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    if want != Some(size - start) {
        return Err(err(format!(
            "holds {} data bytes, not the {} its shape {dims:?} needs",
            size - start,
            want.map_or("overflowing".into(), |w| w.to_string())
        )));
    }
    Ok((dims, start))
}

/// A file of single-byte labels, whole.
fn label_bytes(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| fail(path)(e.to_string()))
}

/// One sample per image of the array at `data` (images of `raw`, from `start`; or the rows of
/// a chunked HDF5 dataset).
fn array_samples(
    data: &Path,
    start: u64,
    raw: Raw,
    labels: Vec<usize>,
    rows: Option<Arc<Dataset>>,
) -> Vec<Sample> {
    let file = Arc::new(data.to_path_buf());
    let len = raw.byte_len() as u64;
    labels
        .into_iter()
        .enumerate()
        .map(|(i, label)| Sample {
            path: data.join(i.to_string()),
            label,
            member: Some(Member {
                tar: file.clone(),
                offset: match rows {
                    Some(_) => i as u64,
                    None => start + i as u64 * len,
                },
                len,
                pixels: Some(raw),
                rows: rows.clone(),
                inflate: None,
            }),
            region: None,
            decoder: super::Decoder::Pil,
        })
        .collect()
}

fn split_file(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    let gz = dir.join(format!("{name}.gz"));
    let msg = if gz.is_file() {
        format!(
            "missing; torchvision extracts it from {} (gunzip -k it)",
            gz.display()
        )
    } else {
        "missing".into()
    };
    Err(Error::Path { path, msg })
}

/// MNIST's `train` or `test` split in `dir` (`MNIST/raw`): images in file order, labels 0..=9.
pub fn mnist(dir: &Path, split: &str) -> Result<Vec<Sample>, Error> {
    let stem = if split == "train" { "train" } else { "t10k" };
    let images = split_file(dir, &format!("{stem}-images-idx3-ubyte"))?;
    let label_file = split_file(dir, &format!("{stem}-labels-idx1-ubyte"))?;
    let (dims, start) = idx_header(&images, 3)?;
    if dims[1..] != [MNIST_SIDE as u64; 2] {
        return Err(fail(&images)(format!(
            "images of {} x {}, not MNIST's 28 x 28",
            dims[1], dims[2]
        )));
    }
    let (ldims, lstart) = idx_header(&label_file, 1)?;
    if ldims[0] != dims[0] {
        return Err(fail(&label_file)(format!(
            "{} labels for the {} images of {}",
            ldims[0],
            dims[0],
            images.display()
        )));
    }
    let bytes = label_bytes(&label_file)?;
    let labels: Vec<usize> = bytes[lstart as usize..]
        .iter()
        .map(|&b| b as usize)
        .collect();
    if let Some(b) = labels.iter().find(|&&b| b >= 10) {
        return Err(fail(&label_file)(format!(
            "label {b} is out of range for MNIST's 10 classes"
        )));
    }
    let raw = Raw {
        width: MNIST_SIDE,
        height: MNIST_SIDE,
        layout: Layout::Gray,
    };
    Ok(array_samples(&images, start, raw, labels, None))
}

/// STL-10's `train` or `test` split in `dir` (`stl10_binary`): images in file order, labels
/// 0..=9 (the file's, less one), and the classes of `class_names.txt` (None without it).
pub fn stl10(dir: &Path, split: &str) -> Result<(Vec<Sample>, Option<Vec<String>>), Error> {
    let images = split_file(dir, &format!("{split}_X.bin"))?;
    let label_file = split_file(dir, &format!("{split}_y.bin"))?;
    let raw = Raw {
        width: STL10_SIDE,
        height: STL10_SIDE,
        layout: Layout::PlanesByColumn,
    };
    let size = std::fs::metadata(&images)
        .map_err(|e| fail(&images)(e.to_string()))?
        .len();
    let per = raw.byte_len() as u64;
    if size % per != 0 {
        return Err(fail(&images)(format!(
            "{size} bytes is not a whole number of 3 x 96 x 96 images"
        )));
    }
    let bytes = label_bytes(&label_file)?;
    if bytes.len() as u64 != size / per {
        return Err(fail(&label_file)(format!(
            "{} labels for the {} images of {}",
            bytes.len(),
            size / per,
            images.display()
        )));
    }
    let labels = bytes
        .iter()
        .map(|&b| match b {
            1..=10 => Ok(b as usize - 1),
            _ => Err(fail(&label_file)(format!(
                "label {b} is out of range for STL-10's classes 1..=10"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let names = dir.join("class_names.txt");
    let classes = if names.is_file() {
        let text = std::fs::read_to_string(&names).map_err(|e| fail(&names)(e.to_string()))?;
        // `f.read().splitlines()`; a trailing empty line is not a class.
        let list: Vec<String> = super::lines(&text);
        if list.len() != 10 {
            return Err(fail(&names)(format!(
                "names {} classes, not STL-10's 10",
                list.len()
            )));
        }
        Some(list)
    } else {
        None
    };
    Ok((array_samples(&images, 0, raw, labels, None), classes))
}

/// PCAM's `train`, `val` or `test` split in `dir` (`pcam`): the images of `x` in order, each
/// labelled by the first element of its row of `y` (torchvision's `y[idx, 0, 0, 0]`).
pub fn pcam(dir: &Path, split: &str) -> Result<Vec<Sample>, Error> {
    let stem = if split == "val" { "valid" } else { split };
    let x_file = split_file(dir, &format!("camelyonpatch_level_2_split_{stem}_x.h5"))?;
    let y_file = split_file(dir, &format!("camelyonpatch_level_2_split_{stem}_y.h5"))?;
    let x = Dataset::open(&x_file, "x").map_err(fail(&x_file))?;
    let y = Dataset::open(&y_file, "y").map_err(fail(&y_file))?;
    let byte = matches!(
        x.dtype,
        Dtype::Int {
            size: 1,
            signed: false,
            ..
        }
    );
    // `Image.fromarray` makes RGB of [h, w, 3] and L of [h, w]; nothing else.
    let layout = match &x.shape[1..] {
        [h, w, 3] | [h, w] if byte && *h > 0 && *w > 0 && *h <= 1 << 16 && *w <= 1 << 16 => {
            if x.shape.len() == 4 {
                Layout::Interleaved
            } else {
                Layout::Gray
            }
        }
        _ => {
            return Err(fail(&x_file)(format!(
                "`x` holds {} of shape {:?}, not 8-bit images [count, height, width, 3]",
                x.dtype.name(),
                x.shape
            )))
        }
    };
    let raw = Raw {
        width: x.shape[2] as u32,
        height: x.shape[1] as u32,
        layout,
    };
    let n = x.shape[0];
    // Unwritten chunks cost no bytes, so a file's size does not bound its shape.
    if n > MAX_ARRAY_IMAGES {
        return Err(fail(&x_file)(format!(
            "`x` holds {n} images, more than the {MAX_ARRAY_IMAGES} read from one file"
        )));
    }
    if y.shape[0] != n {
        return Err(fail(&y_file)(format!(
            "{} labels for the {n} images of {}",
            y.shape[0],
            x_file.display()
        )));
    }
    let values = y.integers().map_err(fail(&y_file))?;
    let per = (values.len() as u64).checked_div(n).unwrap_or(1);
    if per == 0 {
        return Err(fail(&y_file)("`y` has rows without a label".into()));
    }
    let labels = values
        .iter()
        .step_by(per as usize)
        .map(|&v| match v {
            0 | 1 => Ok(v as usize),
            _ => Err(fail(&y_file)(format!(
                "label {v} is out of range for PCAM's 2 classes"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match x.contiguous_row(0) {
        Some((start, _)) => array_samples(&x_file, start, raw, labels, None),
        None => array_samples(&x_file, 0, raw, labels, Some(Arc::new(x))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(data);
        v
    }

    #[test]
    fn mnist_reads_idx_in_place_and_refuses_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let px: Vec<u8> = (0..2 * 784).map(|i| (i % 251) as u8).collect();
        std::fs::write(d.join("t10k-images-idx3-ubyte"), idx(&[2, 28, 28], &px)).unwrap();
        std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx(&[2], &[7, 0])).unwrap();
        let s = mnist(d, "test").unwrap();
        assert_eq!(s.iter().map(|s| s.label).collect::<Vec<_>>(), [7, 0]);
        let m = s[1].member.as_ref().unwrap();
        assert_eq!((m.offset, m.len), (16 + 784, 784));
        assert_eq!(m.read().unwrap(), &px[784..]);
        // Label past 9; counts that differ; a short file; another type; the .gz only.
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("t10k-labels-idx1-ubyte", idx(&[2], &[7, 10]), "label 10"),
            (
                "t10k-labels-idx1-ubyte",
                idx(&[1], &[7]),
                "1 labels for the 2",
            ),
            (
                "t10k-images-idx3-ubyte",
                idx(&[2, 28, 28], &px[1..]),
                "data bytes",
            ),
            (
                "t10k-images-idx3-ubyte",
                b"\0\0\x0d\x03".to_vec(),
                "not uint8",
            ),
        ];
        for (file, bytes, want) in cases {
            let keep = std::fs::read(d.join(file)).unwrap();
            std::fs::write(d.join(file), bytes).unwrap();
            let e = mnist(d, "test").unwrap_err().to_string();
            assert!(e.contains(file) && e.contains(want), "{e}");
            std::fs::write(d.join(file), keep).unwrap();
        }
        std::fs::write(d.join("train-images-idx3-ubyte.gz"), b"").unwrap();
        let e = mnist(d, "train").unwrap_err().to_string();
        assert!(e.contains("gunzip"), "{e}");
    }

    #[test]
    fn stl10_planes_are_columns() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let n = 3 * 96 * 96;
        std::fs::write(d.join("test_X.bin"), vec![5u8; 2 * n]).unwrap();
        std::fs::write(d.join("test_y.bin"), [10u8, 1]).unwrap();
        let (s, names) = stl10(d, "test").unwrap();
        assert_eq!(s.iter().map(|s| s.label).collect::<Vec<_>>(), [9, 0]);
        assert!(names.is_none());
        assert_eq!(s[1].member.as_ref().unwrap().offset, n as u64);
        std::fs::write(d.join("test_y.bin"), [0u8, 1]).unwrap();
        let e = stl10(d, "test").unwrap_err().to_string();
        assert!(e.contains("test_y.bin") && e.contains("label 0"), "{e}");
        std::fs::write(d.join("test_X.bin"), vec![5u8; n + 1]).unwrap();
        let e = stl10(d, "test").unwrap_err().to_string();
        assert!(
            e.contains("test_X.bin") && e.contains("whole number"),
            "{e}"
        );
    }

    /// PCAM's files from the torchvision fixture, copied to `d`.
    fn pcam_copy(d: &Path) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchvision/pcam");
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
        }
    }

    #[test]
    fn pcam_reads_contiguous_in_place_and_refuses_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        pcam_copy(d);
        let x = |s: &str| format!("camelyonpatch_level_2_split_{s}_x.h5");
        let y = |s: &str| format!("camelyonpatch_level_2_split_{s}_y.h5");
        // Contiguous (test): byte ranges of the file; chunked (val): rows of the dataset.
        let s = pcam(d, "test").unwrap();
        let m = s[1].member.as_ref().unwrap();
        assert!(m.rows.is_none() && m.len == 96 * 96 * 3);
        assert_eq!(s[2].member.as_ref().unwrap().offset, m.offset + m.len);
        let v = pcam(d, "val").unwrap();
        let m = v[2].member.as_ref().unwrap();
        assert_eq!((m.offset, m.rows.is_some()), (2, true));
        assert_eq!(m.read().unwrap().len(), 96 * 96 * 3);
        // A label past 1, patched into the contiguous labels.
        let labels = Dataset::open(&d.join(y("test")), "y").unwrap();
        let (at, _) = labels.contiguous_row(3).unwrap();
        let mut bytes = std::fs::read(d.join(y("test"))).unwrap();
        let keep = bytes.clone();
        bytes[at as usize] = 2;
        std::fs::write(d.join(y("test")), &bytes).unwrap();
        let e = pcam(d, "test").unwrap_err().to_string();
        assert!(
            e.contains(&y("test")) && e.contains("label 2 is out of range"),
            "{e}"
        );
        std::fs::write(d.join(y("test")), keep).unwrap();
        // Counts that differ; labels where images should be; not uint8 images; a truncated
        // file; not HDF5; only the .gz.
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hdf5");
        let full = std::fs::read(d.join(x("test"))).unwrap();
        let cases: [(String, Vec<u8>, &str); 5] = [
            (
                y("test"),
                std::fs::read(d.join(y("train"))).unwrap(),
                "3 labels for the 4 images",
            ),
            (
                x("test"),
                std::fs::read(d.join(y("test"))).unwrap(),
                "no dataset `x` (the file holds: y)",
            ),
            (
                x("test"),
                std::fs::read(fixtures.join("floats_v0.h5")).unwrap(),
                "`x` holds float32 of shape [2, 3]",
            ),
            (
                x("test"),
                full[..full.len() - 100].to_vec(),
                "runs past the end of the file",
            ),
            (x("test"), b"not hdf5".to_vec(), "not an HDF5 file"),
        ];
        for (file, bytes, want) in cases {
            let keep = std::fs::read(d.join(&file)).unwrap();
            std::fs::write(d.join(&file), bytes).unwrap();
            let e = pcam(d, "test").unwrap_err().to_string();
            assert!(e.contains(&file) && e.contains(want), "{e}");
            std::fs::write(d.join(&file), keep).unwrap();
        }
        std::fs::rename(d.join(x("train")), d.join(format!("{}.gz", x("train")))).unwrap();
        let e = pcam(d, "train").unwrap_err().to_string();
        assert!(e.contains("gunzip"), "{e}");
    }
}
