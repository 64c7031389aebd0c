//! Webdataset tar shards, CLIP_benchmark's layout: `DIR/test/nshards.txt`, `DIR/test/0.tar` ..
//! `(n-1).tar`, `DIR/classnames.txt`, `DIR/zeroshot_classification_templates.txt`; or an
//! explicit list (`DIR/{00000..00146}.tar`). Each sample is the files sharing a key (the member
//! name up to the first dot of its base name): an image (`webp`, `png`, `jpg`, `jpeg`) and
//! `cls` (the label, decimal text), and for captioned sets `txt`. The shards are indexed once
//! (headers only; the small `cls`/`txt` members read), then images are read straight from
//! their byte range in the tar file on the decode threads: nothing is extracted.

use super::{Error, Sample};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where an image lies inside a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub tar: Arc<PathBuf>,
    pub offset: u64,
    pub len: u64,
    /// A raw 8-bit image (an image of a CIFAR, STL-10, MNIST or PCAM array), not an encoded one.
    pub pixels: Option<crate::preprocess::Raw>,
    /// An HDF5 dataset stored in chunks, whose row `offset` this is (not a byte range).
    pub rows: Option<Arc<crate::data::hdf5::Dataset>>,
    /// A deflated zip member: the byte range inflates to this many bytes.
    pub inflate: Option<u64>,
}

impl Member {
    /// The member's bytes.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        use std::io::{Seek, SeekFrom};
        if let Some(rows) = &self.rows {
            return rows.read_row(self.offset).map_err(std::io::Error::other);
        }
        let mut f = std::fs::File::open(&*self.tar)?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0u8; self.len as usize];
        f.read_exact(&mut buf)?;
        match self.inflate {
            None => Ok(buf),
            Some(size) => {
                // A claimed size is not trusted for the allocation: deflate inflates at most
                // ~1032x, and no image here is a GiB.
                if size > 1 << 30 {
                    return Err(std::io::Error::other(format!(
                        "a zip member of {size} bytes (more than 1 GiB)"
                    )));
                }
                let mut out = Vec::with_capacity(size.min(self.len.saturating_mul(1032)) as usize);
                flate2::read::DeflateDecoder::new(&buf[..])
                    .take(size)
                    .read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }
}

/// The image extensions a sample may use, in the order one is picked: CLIP_benchmark's
/// `to_tuple(["webp", "png", "jpg", "jpeg"], ...)`, which takes the first present.
const IMAGE_EXTS: &[&str] = &["webp", "png", "jpg", "jpeg"];

/// The same for open_clip's webdataset validation: `rename(image="jpg;png;jpeg;webp")`.
const OPEN_CLIP_IMAGE_EXTS: &[&str] = &["jpg", "png", "jpeg", "webp"];

/// CLIP_benchmark's layout under `dir` with a `split` split (`dir/split/nshards.txt`)?
pub fn has_split(dir: &Path, split: &str) -> bool {
    dir.join(split).join("nshards.txt").is_file()
}

/// CLIP_benchmark's layout under `dir` (a `test` or `train` split)?
fn is_layout(dir: &Path) -> bool {
    has_split(dir, "test") || has_split(dir, "train")
}

/// The shards `path` names for `split`: a layout's split (when `path` is a layout, or has that
/// split) or an explicit list; None when it is neither. The flag: a layout.
pub fn resolve(path: &Path, split: &str) -> Option<Result<(Vec<PathBuf>, bool), Error>> {
    if is_layout(path) || has_split(path, split) {
        return Some(layout_shards(path, split).map(|s| (s, true)));
    }
    shard_list(path).map(|r| r.map(|s| (s, false)))
}

/// The shards of CLIP_benchmark's layout, `split` (`test` or `train`).
pub fn layout_shards(dir: &Path, split: &str) -> Result<Vec<PathBuf>, Error> {
    let n_path = dir.join(split).join("nshards.txt");
    let text = std::fs::read_to_string(&n_path).map_err(|e| Error::Path {
        path: n_path.clone(),
        msg: if e.kind() == std::io::ErrorKind::NotFound {
            format!("a webdataset layout without a `{split}` split")
        } else {
            e.to_string()
        },
    })?;
    let n: usize = text.trim().parse().map_err(|_| Error::Path {
        path: n_path.clone(),
        msg: format!("expected the number of shards, got {:?}", text.trim()),
    })?;
    if n == 0 {
        return Err(Error::Path {
            path: n_path,
            msg: "says 0 shards".into(),
        });
    }
    Ok((0..n)
        .map(|i| dir.join(split).join(format!("{i}.tar")))
        .collect())
}

/// Expands brace ranges (`{000..146}`, zero-padded to the first bound's width; several groups
/// allowed) and lists (`{a,b}`). Text without braces is returned as is.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| format!("unclosed `{{` in {pattern:?}"))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let items: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let bad = || format!("bad range {{{body}}} in {pattern:?}: expected {{FIRST..LAST}}");
        let (x, y): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if y < x || y - x > 10_000_000 {
            return Err(bad());
        }
        let width = if a.starts_with('0') { a.len() } else { 0 };
        (x..=y).map(|i| format!("{i:0width$}")).collect()
    } else {
        body.split(',').map(String::from).collect()
    };
    let rest = expand_braces(tail)?;
    let mut out = Vec::with_capacity(items.len() * rest.len());
    for i in &items {
        for r in &rest {
            out.push(format!("{head}{i}{r}"));
        }
    }
    Ok(out)
}

/// `path` as an explicit shard list: a `.tar` file, or a pattern with braces. None: not one.
pub fn shard_list(path: &Path) -> Option<Result<Vec<PathBuf>, Error>> {
    let text = path.to_str()?;
    if text.contains('{') {
        return Some(
            expand_braces(text)
                .map(|v| v.into_iter().map(PathBuf::from).collect())
                .map_err(|msg| Error::Path {
                    path: path.into(),
                    msg,
                }),
        );
    }
    (text.ends_with(".tar") && path.is_file()).then(|| Ok(vec![path.to_path_buf()]))
}

/// One indexed sample's parts.
#[derive(Debug, Default)]
struct Parts {
    key: String,
    image: Option<(u8, u64, u64, String)>,
    cls: Option<String>,
    txt: Option<String>,
    npy: Option<Vec<u8>>,
}

/// An indexed set of shards.
#[derive(Debug, Clone, Default)]
pub struct Index {
    pub samples: Vec<Sample>,
    /// The shard (position in the list) of each sample.
    pub shard_of: Vec<usize>,
    /// Captions of each sample (from its `txt`, as [`Txt`] asks), when asked for.
    pub captions: Vec<Vec<String>>,
    /// Samples left out (`skip_unreadable`): `shard/key` and why.
    pub skipped: Vec<(String, String)>,
    /// A multi-label set's positive classes of each sample (from its `npy`), when asked for.
    pub positives: Vec<Vec<u32>>,
}

/// What an indexed sample needs.
#[derive(Debug, Clone, Copy)]
pub struct Wants {
    /// A `cls` label below this many classes.
    pub classes: Option<usize>,
    /// Whether and how a `txt` member gives captions.
    pub txt: Txt,
    /// Multi-hot labels in an `npy` member (CLIP_benchmark's `dataset_type.txt` `multilabel`)
    /// instead of a `cls`, over `classes` classes.
    pub multilabel: bool,
}

/// How a sample's `txt` member is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Txt {
    /// Not read (labelled sets).
    Unused,
    /// Each line a caption, as CLIP_benchmark's retrieval reads it (`str.splitlines()`); a
    /// sample needs at least one line.
    Lines,
    /// The whole member one caption, as open_clip's webdataset validation reads it; a sample
    /// needs the member, even empty. Its image is picked in open_clip's order of extensions.
    Whole,
}

/// Indexes `shards` in order (samples in shard order, then member order).
pub fn index(shards: &[PathBuf], wants: Wants, skip_unreadable: bool) -> Result<Index, Error> {
    let mut out = Index::default();
    for (si, shard) in shards.iter().enumerate() {
        index_shard(si, shard, wants, skip_unreadable, &mut out)?;
    }
    if out.samples.is_empty() {
        return Err(Error::Path {
            path: shards[0].clone(),
            msg: format!("{} shard(s) hold no samples", shards.len()),
        });
    }
    Ok(out)
}

fn index_shard(
    si: usize,
    shard: &Path,
    wants: Wants,
    skip: bool,
    out: &mut Index,
) -> Result<(), Error> {
    let err = |msg: String| Error::Path {
        path: shard.into(),
        msg,
    };
    let file = std::fs::File::open(shard).map_err(|e| err(e.to_string()))?;
    let file_len = file.metadata().map_err(|e| err(e.to_string()))?.len();
    let tar_path = Arc::new(shard.to_path_buf());
    let mut ar = tar::Archive::new(file);
    let entries = ar
        .entries_with_seek()
        .map_err(|e| err(format!("not a tar archive ({e})")))?;
    let mut cur = Parts::default();
    let image_exts = match wants.txt {
        Txt::Whole => OPEN_CLIP_IMAGE_EXTS,
        _ => IMAGE_EXTS,
    };
    let finish = |p: Parts, out: &mut Index| -> Result<(), Error> {
        if p.key.is_empty() {
            return Ok(());
        }
        match check(&p, wants) {
            Ok((label, positives)) => {
                let (_, offset, len, ext) = p.image.expect("checked");
                out.samples.push(Sample {
                    path: shard.join(format!("{}.{ext}", p.key)),
                    label,
                    member: Some(Member {
                        tar: tar_path.clone(),
                        offset,
                        len,
                        pixels: None,
                        rows: None,
                        inflate: None,
                    }),
                    region: None,
                    decoder: super::Decoder::PilRgb,
                });
                out.shard_of.push(si);
                out.positives.extend(positives);
                let txt = p.txt.unwrap_or_default();
                match wants.txt {
                    Txt::Unused => {}
                    Txt::Lines => out.captions.push(splitlines(&txt)),
                    Txt::Whole => out.captions.push(vec![txt]),
                }
                Ok(())
            }
            Err(why) if skip => {
                out.skipped
                    .push((format!("{}/{}", shard.display(), p.key), why));
                Ok(())
            }
            Err(why) => Err(err(format!(
                "sample {}: {why} (pass --skip-unreadable to leave such samples out)",
                p.key
            ))),
        }
    };
    // Regular members by name, for hard links (a tar of hard-linked files stores the data
    // once and links the later names to it).
    let mut stored: std::collections::HashMap<String, (u64, u64)> = Default::default();
    for entry in entries {
        let mut e = entry.map_err(|e| {
            err(format!(
                "unreadable tar member ({e}); truncated or corrupt?"
            ))
        })?;
        let kind = e.header().entry_type();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let (offset, len) = if kind.is_file() {
            (e.raw_file_position(), e.size())
        } else if kind.is_hard_link() {
            let target = e
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            match stored.get(&target) {
                Some(&place) => place,
                None => {
                    return Err(err(format!(
                        "member {name} links to {target:?}, which is not an earlier member"
                    )))
                }
            }
        } else {
            continue;
        };
        if kind.is_file() {
            stored.insert(name.clone(), (offset, len));
        }
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(err(format!(
                "member {name} runs past the end of the file: truncated"
            )));
        }
        // webdataset's key: the name up to the first dot of its base name.
        let base_start = name.rfind('/').map_or(0, |i| i + 1);
        let Some(dot) = name[base_start..].find('.').map(|d| base_start + d) else {
            continue;
        };
        let (key, ext) = (&name[..dot], name[dot + 1..].to_ascii_lowercase());
        if key != cur.key {
            finish(std::mem::take(&mut cur), out)?;
            cur.key = key.to_string();
        }
        if let Some(rank) = image_exts.iter().position(|x| *x == ext) {
            if cur.image.as_ref().is_none_or(|(r, ..)| (rank as u8) < *r) {
                cur.image = Some((rank as u8, offset, len, ext.clone()));
            }
        } else if ext == "cls"
            || (ext == "txt" && wants.txt != Txt::Unused)
            || (ext == "npy" && wants.multilabel)
        {
            if len > 1 << 20 {
                return Err(err(format!(
                    "member {name} is {len} bytes, too large for a label or caption"
                )));
            }
            let mut b = Vec::new();
            if kind.is_file() {
                e.read_to_end(&mut b)
                    .map_err(|e| err(format!("member {name}: {e}")))?;
            } else {
                let m = Member {
                    tar: tar_path.clone(),
                    offset,
                    len,
                    pixels: None,
                    rows: None,
                    inflate: None,
                };
                b = m.read().map_err(|e| err(format!("member {name}: {e}")))?;
            }
            match ext.as_str() {
                "cls" => cur.cls = Some(String::from_utf8_lossy(&b).into_owned()),
                "npy" => cur.npy = Some(b),
                _ => cur.txt = Some(String::from_utf8_lossy(&b).into_owned()),
            }
        }
    }
    finish(cur, out)
}

/// Python's `str.splitlines()`, which CLIP_benchmark applies to a `txt` member: every line
/// is a caption, empty ones included, and a final line end adds none.
fn splitlines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some((i, c)) = rest.char_indices().find(|&(_, c)| {
            matches!(
                c,
                '\n' | '\r'
                    | '\x0b'
                    | '\x0c'
                    | '\x1c'
                    | '\x1d'
                    | '\x1e'
                    | '\u{85}'
                    | '\u{2028}'
                    | '\u{2029}'
            )
        }) else {
            out.push(rest.to_string());
            break;
        };
        out.push(rest[..i].to_string());
        let end = if rest[i..].starts_with("\r\n") {
            i + 2
        } else {
            i + c.len_utf8()
        };
        rest = &rest[end..];
    }
    out
}

/// The sample's label, or why it cannot be used.
/// A sample's label, and for a multi-label set its positive classes (its label the first).
fn check(p: &Parts, wants: Wants) -> Result<(usize, Option<Vec<u32>>), String> {
    if p.image.is_none() {
        return Err("no image (webp, png, jpg or jpeg)".into());
    }
    let no_caption = match wants.txt {
        Txt::Unused => false,
        Txt::Lines => p.txt.as_deref().is_none_or(|t| splitlines(t).is_empty()),
        Txt::Whole => p.txt.is_none(),
    };
    if no_caption {
        return Err("no caption (txt)".into());
    }
    let Some(classes) = wants.classes else {
        return Ok((0, None));
    };
    if wants.multilabel {
        let npy = p.npy.as_deref().ok_or("no multi-hot label (npy)")?;
        let positives = npy_positives(npy, classes).map_err(|e| format!("label (npy): {e}"))?;
        let label = positives.first().map_or(0, |&c| c as usize);
        return Ok((label, Some(positives)));
    }
    let cls = p.cls.as_deref().ok_or("no label (cls)")?;
    let label: usize = cls
        .trim()
        .parse()
        .map_err(|_| format!("label (cls) {:?} is not a number", cls.trim()))?;
    if label >= classes {
        return Err(format!(
            "label {label} is out of range for {classes} classes"
        ));
    }
    Ok((label, None))
}

/// The classes a multi-hot `.npy` array marks (its non-zero entries, as CLIP_benchmark's
/// `truth.bool()` reads them): a numpy array of `classes` numbers (any shape), C or Fortran
/// order alike for a vector, booleans, integers or floats of either byte order.
fn npy_positives(b: &[u8], classes: usize) -> Result<Vec<u32>, String> {
    let rest = b.strip_prefix(b"\x93NUMPY").ok_or("not a .npy array")?;
    let (head, data) = match rest {
        [1, _, a, b, tail @ ..] => tail.split_at_checked(u16::from_le_bytes([*a, *b]) as usize),
        [2 | 3, _, a, b, c, d, tail @ ..] => {
            tail.split_at_checked(u32::from_le_bytes([*a, *b, *c, *d]) as usize)
        }
        _ => None,
    }
    .ok_or(".npy header cut short")?;
    let head = std::str::from_utf8(head).map_err(|_| ".npy header is not text")?;
    let field = |k: &str| {
        let at = head.find(&format!("'{k}':")).map(|i| i + k.len() + 3);
        at.map(|i| head[i..].trim_start())
    };
    let descr = field("descr")
        .and_then(|v| v.strip_prefix('\''))
        .and_then(|v| v.split('\'').next())
        .ok_or(".npy header without descr")?;
    let shape = field("shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or(".npy header without shape")?;
    let mut n = 1usize;
    for d in shape.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let d: usize = d
            .parse()
            .map_err(|_| format!("shape ({shape}) is not numbers"))?;
        n = n.checked_mul(d).ok_or("shape too large")?;
    }
    if n != classes {
        return Err(format!("{n} values for {classes} classes"));
    }
    let (order, kind) = descr.split_at_checked(1).ok_or("empty descr")?;
    let big = match order {
        "<" | "|" | "=" => false,
        ">" => true,
        _ => return Err(format!("dtype {descr:?} is not understood")),
    };
    let (k, size) = kind.split_at_checked(1).ok_or("dtype without size")?;
    let size: usize = size
        .parse()
        .map_err(|_| format!("dtype {descr:?} is not understood"))?;
    if !matches!(
        (k, size),
        ("b", 1) | ("u" | "i", 1 | 2 | 4 | 8) | ("f", 2 | 4 | 8)
    ) {
        return Err(format!("dtype {descr:?} is not a number type"));
    }
    if data.len() != n * size {
        return Err(format!("holds {} data bytes, not {}", data.len(), n * size));
    }
    let mut out = Vec::new();
    for (i, v) in data.chunks_exact(size).enumerate() {
        let mut le = v.to_vec();
        if big {
            le.reverse();
        }
        // Zero is all-zero bytes for every type here, and -0.0 for floats.
        let sign_cleared = match k {
            "f" => {
                let last = le.len() - 1;
                le[last] &= 0x7f;
                &le[..]
            }
            _ => &le[..],
        };
        if sign_cleared.iter().any(|&x| x != 0) {
            out.push(i as u32);
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An array as `numpy.save` writes it (version 1.0, header padded to 64 bytes).
    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut head =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while !(11 + head.len()).is_multiple_of(64) {
            head.push(' ');
        }
        head.push('\n');
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend((head.len() as u16).to_le_bytes());
        v.extend(head.as_bytes());
        v.extend(data);
        v
    }

    #[test]
    fn multi_hot_npy_marks_its_classes() {
        let f4: Vec<u8> = [0f32, 1.0, 0.0, 1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(npy_positives(&npy("<f4", "(4,)", &f4), 4), Ok(vec![1, 3]));
        // -0.0 is zero; big-endian doubles; a 2-D array counts its elements.
        let f8: Vec<u8> = [0f64, -0.0, 2.5, 0.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        assert_eq!(npy_positives(&npy(">f8", "(2, 2)", &f8), 4), Ok(vec![2]));
        assert_eq!(
            npy_positives(&npy("|b1", "(4,)", &[1, 0, 0, 1]), 4),
            Ok(vec![0, 3])
        );
        let i8s: Vec<u8> = [0i64, 0, 7, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(npy_positives(&npy("<i8", "(4,)", &i8s), 4), Ok(vec![2]));
        for (bytes, want) in [
            (npy("<f4", "(4,)", &f4), "4 values for 5 classes"),
            (npy("<f4", "(5,)", &f4), "data bytes"),
            (npy("<U3", "(5,)", &f4), "not a number type"),
            (b"\x93NUMPY\x01\x00\xff\x00{".to_vec(), "cut short"),
            (b"PK\x03\x04".to_vec(), "not a .npy"),
        ] {
            let e = npy_positives(&bytes, 5).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        // Indexed from shards: positives per sample, the label its first class.
        let d = tempfile::tempdir().unwrap();
        let tar = d.path().join("0.tar");
        let none = npy("<f4", "(4,)", &[0u8; 16]);
        let a = npy("<f4", "(4,)", &f4);
        write_tar(
            &tar,
            &[
                ("x/a.jpg", b"j"),
                ("x/a.npy", &a),
                ("x/b.jpg", b"j"),
                ("x/b.npy", &none),
            ],
        );
        let w = Wants {
            classes: Some(4),
            txt: Txt::Unused,
            multilabel: true,
        };
        let ix = index(std::slice::from_ref(&tar), w, false).unwrap();
        assert_eq!(ix.positives, vec![vec![1, 3], vec![]]);
        assert_eq!(
            ix.samples.iter().map(|s| s.label).collect::<Vec<_>>(),
            [1, 0]
        );
        write_tar(&tar, &[("x/a.jpg", b"j"), ("x/a.cls", b"1")]);
        let e = index(std::slice::from_ref(&tar), w, false).unwrap_err();
        assert!(e.to_string().contains("no multi-hot label (npy)"), "{e}");
    }

    pub fn write_tar(path: &Path, members: &[(&str, &[u8])]) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
    }

    /// A tar of (name, content) members; content `->NAME` makes a hard link to NAME.
    fn write_linked_tar(path: &Path, members: &[(&str, &str)]) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, content) in members {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match content.strip_prefix("->") {
                Some(target) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, name, target).unwrap();
                }
                None => {
                    h.set_size(content.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, name, content.as_bytes()).unwrap();
                }
            }
        }
        b.finish().unwrap();
    }

    /// A tar of hard-linked files stores the data once; the later names link to it. A link to
    /// no earlier member is an error naming both, even when skipping (the shard is broken).
    #[test]
    fn hard_linked_members_read_their_target() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("0.tar");
        let w = Wants {
            classes: Some(2),
            txt: Txt::Unused,
            multilabel: false,
        };
        let good = [
            ("a.jpg", "JPEGDATA"),
            ("a.cls", "0"),
            ("b.jpg", "->a.jpg"),
            ("b.cls", "1"),
        ];
        write_linked_tar(&t, &good);
        let ix = index(std::slice::from_ref(&t), w, false).unwrap();
        assert_eq!(ix.samples.len(), 2);
        assert_eq!(ix.samples[1].label, 1);
        assert_eq!(
            ix.samples[1].member.as_ref().unwrap().read().unwrap(),
            b"JPEGDATA"
        );
        let mut bad = good.to_vec();
        bad.push(("c.jpg", "->nowhere.jpg"));
        write_linked_tar(&t, &bad);
        let e = index(std::slice::from_ref(&t), w, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.jpg") && e.contains("nowhere.jpg"), "{e}");
        assert!(index(std::slice::from_ref(&t), w, true).is_err());
    }

    #[test]
    fn txt_members_give_a_caption_per_line_or_one_whole() {
        let d = tempfile::tempdir().unwrap();
        let tar = d.path().join("0.tar");
        write_tar(
            &tar,
            &[
                ("a.jpg", b"j"),
                ("a.txt", b"one\ntwo\n"),
                ("b.jpg", b"j"),
                ("b.txt", b""),
                ("c.jpg", b"j"),
            ],
        );
        let read = |txt| {
            let w = Wants {
                classes: None,
                txt,
                multilabel: false,
            };
            let ix = index(std::slice::from_ref(&tar), w, true).unwrap();
            let keys: Vec<String> = ix.skipped.iter().map(|(k, _)| k.clone()).collect();
            (ix.captions, keys)
        };
        // CLIP_benchmark: a caption per line; an empty `txt` has none.
        let (caps, skipped) = read(Txt::Lines);
        assert_eq!(caps, [vec!["one", "two"]]);
        assert!(
            skipped[0].ends_with("/b") && skipped[1].ends_with("/c"),
            "{skipped:?}"
        );
        // open_clip: the member as it is, empty or not; only a missing one is left out.
        let (caps, skipped) = read(Txt::Whole);
        assert_eq!(caps, [vec!["one\ntwo\n"], vec![""]]);
        assert!(
            skipped.len() == 1 && skipped[0].ends_with("/c"),
            "{skipped:?}"
        );
        // A sample with several images: CLIP_benchmark takes the png, open_clip the jpg.
        write_tar(&tar, &[("a.png", b"p"), ("a.jpg", b"j"), ("a.txt", b"x")]);
        for (txt, ext) in [(Txt::Lines, "png"), (Txt::Whole, "jpg")] {
            let w = Wants {
                classes: None,
                txt,
                multilabel: false,
            };
            let ix = index(std::slice::from_ref(&tar), w, false).unwrap();
            assert_eq!(ix.samples[0].path.extension().unwrap(), ext, "{txt:?}");
        }
    }

    #[test]
    fn captions_split_as_python_splitlines() {
        // Python: "a\r\nb\n\nc\u2028d\x85e\n".splitlines() == ["a", "b", "", "c", "d", "e"]
        assert_eq!(
            splitlines("a\r\nb\n\nc\u{2028}d\u{85}e\n"),
            ["a", "b", "", "c", "d", "e"]
        );
        assert_eq!(splitlines("x\r"), ["x"]);
        assert_eq!(splitlines("\n"), [""]);
        assert!(splitlines("").is_empty());
        assert_eq!(splitlines(" \x0bq"), [" ", "q"]);
    }

    #[test]
    fn braces_expand() {
        assert_eq!(
            expand_braces("d/{00..02}.tar").unwrap(),
            ["d/00.tar", "d/01.tar", "d/02.tar"]
        );
        assert_eq!(
            expand_braces("{a,b}-{1..2}").unwrap(),
            ["a-1", "a-2", "b-1", "b-2"]
        );
        assert_eq!(expand_braces("plain").unwrap(), ["plain"]);
        assert!(expand_braces("{3..1}").is_err());
        assert!(expand_braces("{1..").is_err());
    }

    #[test]
    fn samples_are_grouped_by_key_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("0.tar");
        write_tar(
            &t,
            &[
                ("a.jpg", b"JPEG"),
                ("a.cls", b"1\n"),
                ("dir/b.png", b"PNG"),
                ("dir/b.webp", b"WEBP"),
                ("dir/b.cls", b"0"),
                ("c.jpg", b"JPEG"),
                ("c.png", b"PNG"),
                ("c.cls", b"0"),
            ],
        );
        let w = Wants {
            classes: Some(2),
            txt: Txt::Unused,
            multilabel: false,
        };
        let ix = index(std::slice::from_ref(&t), w, false).unwrap();
        assert_eq!(ix.samples.len(), 3);
        assert_eq!(ix.samples[0].label, 1);
        assert_eq!(
            ix.samples[0].member.as_ref().unwrap().read().unwrap(),
            b"JPEG"
        );
        // webp is preferred over png.
        assert_eq!(
            ix.samples[1].member.as_ref().unwrap().read().unwrap(),
            b"WEBP"
        );
        assert!(ix.samples[1].path.ends_with("0.tar/dir/b.webp"));
        // png over jpg, as CLIP_benchmark's to_tuple(["webp", "png", "jpg", "jpeg"]) picks.
        assert_eq!(
            ix.samples[2].member.as_ref().unwrap().read().unwrap(),
            b"PNG"
        );
        // Out of range, missing image, missing label: named, or skipped.
        let w1 = Wants {
            classes: Some(1),
            txt: Txt::Unused,
            multilabel: false,
        };
        let e = index(std::slice::from_ref(&t), w1, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0.tar") && e.contains("sample a") && e.contains("out of range"),
            "{e}"
        );
        let ix = index(std::slice::from_ref(&t), w1, true).unwrap();
        assert_eq!((ix.samples.len(), ix.skipped.len()), (2, 1));
        let t2 = d.path().join("1.tar");
        write_tar(&t2, &[("x.cls", b"0"), ("y.jpg", b"J")]);
        let e = index(&[t2], w, false).unwrap_err().to_string();
        assert!(e.contains("sample x: no image"), "{e}");
        // A truncated shard names itself.
        let bytes = std::fs::read(&t).unwrap();
        let cut = d.path().join("cut.tar");
        std::fs::write(&cut, &bytes[..512 + 2]).unwrap();
        let e = index(std::slice::from_ref(&cut), w, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut.tar"), "{e}");
    }
}
