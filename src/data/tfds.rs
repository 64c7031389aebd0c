//! A dataset prepared by TensorFlow Datasets, as `tfds.builder(...).download_and_prepare()`
//! leaves it under its data_dir: `NAME[/CONFIG]/VERSION/` holding `dataset_info.json` (the
//! splits and their shard lengths), `features.json`, `FEATURE.labels.txt` class-name files and
//! the TFRecord shards `NAME-SPLIT.tfrecord-XXXXX-of-YYYYY`. Splits are read as TFDS reads a
//! split string (`train[:60%]+validation`): absolute and percent slices, percent boundaries
//! rounded to the closest example, a slice beyond the split an error.

use super::tfrecord::{self, Example};
use super::Error;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One split's files in order, with how many examples each holds.
#[derive(Debug, Clone)]
pub struct SplitFiles {
    pub name: String,
    pub files: Vec<(PathBuf, u64)>,
}

impl SplitFiles {
    pub fn len(&self) -> u64 {
        self.files.iter().map(|f| f.1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A prepared dataset's version folder, read.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub dir: PathBuf,
    /// The builder's name and config as dataset_info.json records them (`eurosat`, `rgb`).
    pub name: String,
    pub config: Option<String>,
    pub version: String,
    pub splits: Vec<SplitFiles>,
    features: serde_json::Value,
}

fn fail(path: &Path, msg: impl Into<String>) -> Error {
    Error::Path {
        path: path.into(),
        msg: msg.into(),
    }
}

/// A version folder name, `3.1.0`.
fn version_of(name: &str) -> Option<[u64; 3]> {
    let mut it = name.split('.').map(|p| p.parse::<u64>().ok());
    let v = [it.next()??, it.next()??, it.next()??];
    it.next().is_none().then_some(v)
}

/// Whether `v` satisfies a TFDS version request: `3.*.*`, `3.1.*` or `2.0.1`.
fn satisfies(v: [u64; 3], want: &str) -> bool {
    want.split('.')
        .zip(v)
        .all(|(w, x)| w == "*" || w.parse::<u64>() == Ok(x))
}

/// Finds the version folder of `builder` (`eurosat/rgb`: name and config) under `root`, a
/// TFDS data_dir, or `root` being the dataset's own folder or its version folder. The newest
/// version satisfying `want` is read; when only other versions are there the newest of those
/// is, with a notice (the returned string), as a newer TFDS may have replaced the one asked
/// for (oxford_iiit_pet 4.0.0 for task_adaptation's 3.*.*).
pub fn find(root: &Path, builder: &str, want: &str) -> Result<(PathBuf, Option<String>), Error> {
    if root.join("dataset_info.json").is_file() {
        return Ok((root.to_path_buf(), None));
    }
    let candidates = [root.join(builder), root.to_path_buf()];
    for base in &candidates {
        let Ok(rd) = std::fs::read_dir(base) else {
            continue;
        };
        let mut versions: Vec<([u64; 3], PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let v = version_of(e.file_name().to_str()?)?;
                e.path()
                    .join("dataset_info.json")
                    .is_file()
                    .then(|| (v, e.path()))
            })
            .collect();
        if versions.is_empty() {
            continue;
        }
        versions.sort();
        if let Some((_, p)) = versions.iter().rev().find(|(v, _)| satisfies(*v, want)) {
            return Ok((p.clone(), None));
        }
        let (v, p) = versions.last().unwrap();
        let notice = format!(
            "{}: no version {want} of {builder} (what VTAB's code asks for); reading {}.{}.{}",
            base.display(),
            v[0],
            v[1],
            v[2]
        );
        return Ok((p.clone(), Some(notice)));
    }
    Err(fail(
        root,
        format!(
            "no TensorFlow Datasets folder {builder}/VERSION/ (with dataset_info.json) here: point --test-data-path at the TFDS data_dir (where `tfds.builder(\"{builder}\").download_and_prepare()` wrote it, ~/tensorflow_datasets by default)"
        ),
    ))
}

/// A number TFDS's JSON writes as a string (int64) or a number.
fn json_u64(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// Reads the version folder `dir` of the dataset `name` (the builder name, without config).
pub fn open(dir: &Path, name: &str) -> Result<Prepared, Error> {
    let info_path = dir.join("dataset_info.json");
    let read_json = |p: &Path| -> Result<serde_json::Value, Error> {
        let text = super::read_text(p, "--test-data-path")?;
        serde_json::from_str(&text).map_err(|e| fail(p, format!("not valid JSON: {e}")))
    };
    let info = read_json(&info_path)?;
    let format = info["fileFormat"].as_str().unwrap_or("tfrecord");
    if format != "tfrecord" {
        return Err(fail(
            &info_path,
            format!("the dataset is stored as `{format}`; only TFRecord files are read"),
        ));
    }
    let name = info["name"].as_str().unwrap_or(name).to_string();
    let splits = info["splits"]
        .as_array()
        .ok_or_else(|| fail(&info_path, "no `splits` list"))?
        .iter()
        .map(|s| {
            let sname = s["name"]
                .as_str()
                .ok_or_else(|| fail(&info_path, "a split without a name"))?;
            // TFDS 4 records each shard's length; older versions only how many shards there
            // are (then each shard's records are counted from their headers).
            // Bounded so that no count of an untrusted file overflows (a record takes at
            // least 16 bytes, so no real shard comes near).
            let length = |v: &serde_json::Value| json_u64(v).filter(|&x| x <= 1 << 40);
            let lengths: Option<Vec<u64>> = match s["shardLengths"].as_array() {
                Some(l) if l.len() <= 1 << 20 => {
                    Some(l.iter().map(length).collect::<Option<_>>().ok_or_else(|| {
                        fail(&info_path, format!("split `{sname}`: a bad shard length"))
                    })?)
                }
                Some(_) => {
                    return Err(fail(
                        &info_path,
                        format!("split `{sname}`: more than 2^20 shards"),
                    ))
                }
                None => None,
            };
            let n = match (&lengths, json_u64(&s["numShards"])) {
                (Some(l), _) => l.len(),
                (None, Some(n)) if n <= 1 << 20 => n as usize,
                _ => {
                    return Err(fail(
                        &info_path,
                        format!("split `{sname}` has neither `shardLengths` nor `numShards`"),
                    ))
                }
            };
            let template = s["filepathTemplate"]
                .as_str()
                .unwrap_or("{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}");
            let files = (0..n)
                .map(|i| {
                    let file = template
                        .replace("{DATASET}", &name)
                        .replace("{SPLIT}", sname)
                        .replace("{FILEFORMAT}", format)
                        .replace("{SHARD_X_OF_Y}", &format!("{i:05}-of-{n:05}"))
                        .replace("{SHARD_INDEX}", &format!("{i:05}"))
                        .replace("{NUM_SHARDS}", &format!("{n:05}"));
                    if file.contains(['/', '\\']) || file.starts_with('.') {
                        return Err(fail(
                            &info_path,
                            format!("split `{sname}`: file `{file}` is not a plain file name"),
                        ));
                    }
                    let path = dir.join(file);
                    let len = match &lengths {
                        Some(l) => l[i],
                        None => count_records(&path)?,
                    };
                    Ok((path, len))
                })
                .collect::<Result<_, _>>()?;
            Ok(SplitFiles {
                name: sname.to_string(),
                files,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let features_path = dir.join("features.json");
    let features = if features_path.is_file() {
        read_json(&features_path)?
    } else {
        serde_json::Value::Null
    };
    let version = dir
        .file_name()
        .and_then(|v| v.to_str())
        .unwrap_or("")
        .to_string();
    let config = info["configName"].as_str().map(str::to_string);
    Ok(Prepared {
        dir: dir.to_path_buf(),
        name,
        config,
        version,
        splits,
        features,
    })
}

/// How many records a TFRecord file holds, from their headers (each length's checksum
/// verified; the data skipped).
fn count_records(path: &Path) -> Result<u64, Error> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| fail(path, e.to_string()))?;
    let size = f.metadata().map_err(|e| fail(path, e.to_string()))?.len();
    let (mut pos, mut n) = (0u64, 0u64);
    while pos < size {
        let mut head = [0u8; 12];
        f.read_exact(&mut head).map_err(|_| {
            fail(
                path,
                format!("record at byte {pos}: the file ends inside its header"),
            )
        })?;
        let len = u64::from_le_bytes(head[..8].try_into().unwrap());
        if u32::from_le_bytes(head[8..].try_into().unwrap()) != tfrecord::masked_crc(&head[..8]) {
            return Err(fail(
                path,
                format!("record at byte {pos}: the length's checksum does not match"),
            ));
        }
        pos = pos
            .checked_add(12 + 4)
            .and_then(|p| p.checked_add(len))
            .filter(|&p| p <= size)
            .ok_or_else(|| {
                fail(
                    path,
                    format!("record at byte {pos}: the file ends inside it"),
                )
            })?;
        f.seek(SeekFrom::Start(pos))
            .map_err(|e| fail(path, e.to_string()))?;
        n += 1;
    }
    Ok(n)
}

/// One part of a split string: a split and the examples `from..to` of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub split: String,
    pub range: Range<u64>,
}

impl Prepared {
    pub fn split(&self, name: &str) -> Option<&SplitFiles> {
        self.splits.iter().find(|s| s.name == name)
    }

    fn split_names(&self) -> String {
        self.splits
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Resolves a TFDS split string (`train[:800]+train[60%:]`) against the split sizes.
    pub fn slices(&self, spec: &str) -> Result<Vec<Slice>, Error> {
        let info = self.dir.join("dataset_info.json");
        spec.split('+')
            .map(|part| {
                let part = part.trim();
                let (name, bounds) = match part.split_once('[') {
                    None => (part, None),
                    Some((n, rest)) => {
                        let b = rest.strip_suffix(']').ok_or_else(|| {
                            fail(&info, format!("split `{spec}`: `{part}` lacks its `]`"))
                        })?;
                        (n, Some(b))
                    }
                };
                let split = self.split(name).ok_or_else(|| {
                    fail(
                        &info,
                        format!("no split `{name}` (the dataset has {})", self.split_names()),
                    )
                })?;
                let n = split.len() as i64;
                let range = match bounds {
                    None => 0..n as u64,
                    Some(b) => {
                        let (a, z) = b.split_once(':').ok_or_else(|| {
                            fail(&info, format!("split `{spec}`: `[{b}]` is not a slice `[from:to]`"))
                        })?;
                        let bound = |s: &str, default: i64| -> Result<i64, Error> {
                            let s = s.trim();
                            if s.is_empty() {
                                return Ok(default);
                            }
                            let bad = || fail(&info, format!("split `{spec}`: `{s}` is not a whole number or percent"));
                            let v = match s.strip_suffix('%') {
                                Some(p) => {
                                    let p: i64 = p.trim().parse().map_err(|_| bad())?;
                                    if p.abs() > 100 {
                                        return Err(bad());
                                    }
                                    // TFDS: int(round(p * n / 100)), ties to even.
                                    (p as f64 * n as f64 / 100.0).round_ties_even() as i64
                                }
                                None => s.parse().map_err(|_| bad())?,
                            };
                            if v.abs() > n {
                                return Err(fail(
                                    &info,
                                    format!("split `{spec}`: the slice [{a}:{z}] is beyond the {n} examples of `{name}`"),
                                ));
                            }
                            Ok(if v < 0 { n + v } else { v })
                        };
                        let from = bound(a, 0)?;
                        let to = bound(z, n)?;
                        from as u64..(to.max(from)) as u64
                    }
                };
                Ok(Slice {
                    split: name.to_string(),
                    range,
                })
            })
            .collect()
    }

    /// The class names of a class-label feature (`label`, `label_azimuth`): its
    /// `FEATURE.labels.txt`, else `0`..`n-1` from its number of classes in features.json (a
    /// class label given only a count, as TFDS names them).
    pub fn class_names(&self, feature: &str) -> Result<Vec<String>, Error> {
        let file = self.dir.join(format!("{feature}.labels.txt"));
        if file.is_file() {
            let text = super::read_text(&file, "--test-data-path")?;
            return Ok(text
                .lines()
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect());
        }
        let f = &self.features["featuresDict"]["features"][feature]["classLabel"]["numClasses"];
        match json_u64(f) {
            Some(n) if n <= 1 << 20 => Ok((0..n).map(|i| i.to_string()).collect()),
            _ => Err(fail(
                &self.dir,
                format!(
                    "no {feature}.labels.txt and no class count for `{feature}` in features.json"
                ),
            )),
        }
    }

    /// The files `slices` read, each with the records of it they take, in the order TFDS
    /// lists them (a split's files in order, the parts of a `+` join one after another).
    fn file_slices(&self, slices: &[Slice]) -> Vec<FileSlice> {
        let mut out = Vec::new();
        for s in slices {
            let split = self.split(&s.split).expect("resolved by slices()");
            let mut start = 0u64;
            for (file, len) in &split.files {
                let here = start..start + len;
                start += len;
                let from = s.range.start.max(here.start);
                let to = s.range.end.min(here.end);
                if from < to {
                    out.push(FileSlice {
                        file: Arc::new(file.clone()),
                        len: *len,
                        records: from - here.start..to - here.start,
                    });
                }
            }
        }
        out
    }

    /// Reads the examples of `slices` in the order TFDS hands them over when files are not
    /// shuffled (task_adaptation's evaluation reads, timm's): the files interleaved, 16 open
    /// at a time and 16 examples from each in turn (`ReadConfig`'s defaults). `each` gets
    /// (file, index in file, offset of the record's data in the file, example, record).
    pub fn read(
        &self,
        slices: &[Slice],
        mut each: impl FnMut(&Arc<PathBuf>, u64, u64, &Example, &[u8]) -> Result<(), String>,
    ) -> Result<(), Error> {
        let files = self.file_slices(slices).into_iter().map(records_of);
        for r in Interleave::new(files, CYCLE, BLOCK) {
            let (file, i, offset, data) = r?;
            let ex = tfrecord::parse_example(&data)
                .map_err(|e| fail(&file, format!("record {i}: {e}")))?;
            each(&file, i, offset, &ex, &data)
                .map_err(|e| fail(&file, format!("record {i}: {e}")))?;
        }
        Ok(())
    }
}

/// TFDS's `ReadConfig` defaults: `interleave_cycle_length` (when files are not shuffled and
/// the builder does not ask for order) and `interleave_block_length`.
const CYCLE: usize = 16;
const BLOCK: usize = 16;

/// The records `records` of one file, which holds `len` (as dataset_info.json says).
#[derive(Debug, Clone)]
struct FileSlice {
    file: Arc<PathBuf>,
    len: u64,
    records: Range<u64>,
}

type Record = (Arc<PathBuf>, u64, u64, Vec<u8>);

/// The records of one file slice, read when first asked for: (file, index, offset, data). A
/// file that cannot be opened, is corrupt, or ends before the slice does yields one error.
fn records_of(s: FileSlice) -> Box<dyn Iterator<Item = Result<Record, Error>>> {
    let mut records = None;
    let mut i = 0u64;
    let mut done = false;
    Box::new(std::iter::from_fn(move || {
        while !done && i < s.records.end {
            let recs = match &mut records {
                Some(r) => r,
                None => match std::fs::File::open(&*s.file) {
                    Ok(f) => records.insert(tfrecord::Records::new(std::io::BufReader::new(f))),
                    Err(e) => {
                        done = true;
                        return Some(Err(fail(&s.file, e.to_string())));
                    }
                },
            };
            let at = i;
            match recs.next() {
                Some(Ok((offset, data))) => {
                    i += 1;
                    if at >= s.records.start {
                        return Some(Ok((s.file.clone(), at, offset, data)));
                    }
                }
                Some(Err(e)) => {
                    done = true;
                    return Some(Err(fail(&s.file, e)));
                }
                None => {
                    done = true;
                    return Some(Err(fail(
                        &s.file,
                        format!("holds {at} records, but dataset_info.json says {}", s.len),
                    )));
                }
            }
        }
        None
    }))
}

/// tf.data's `interleave(cycle_length, block_length)` run in order (its `deterministic`
/// reading): `cycle` inputs open at once, up to `block` items taken from each in turn. An
/// input that runs out frees its slot and the turn passes on; the slot takes the next input
/// when the turn comes back to it.
struct Interleave<S: Iterator> {
    inputs: S,
    slots: Vec<Option<S::Item>>,
    block: usize,
    at: usize,
    taken: usize,
    open: usize,
    inputs_done: bool,
}

impl<S: Iterator> Interleave<S>
where
    S::Item: Iterator,
{
    fn new(inputs: S, cycle: usize, block: usize) -> Self {
        Self {
            inputs,
            slots: (0..cycle.max(1)).map(|_| None).collect(),
            block: block.max(1),
            at: 0,
            taken: 0,
            open: 0,
            inputs_done: false,
        }
    }

    fn pass_turn(&mut self) {
        self.taken = 0;
        self.at = (self.at + 1) % self.slots.len();
    }
}

impl<S: Iterator> Iterator for Interleave<S>
where
    S::Item: Iterator,
{
    type Item = <S::Item as Iterator>::Item;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.inputs_done || self.open > 0 {
            match &mut self.slots[self.at] {
                Some(input) => match input.next() {
                    Some(x) => {
                        self.taken += 1;
                        if self.taken == self.block {
                            self.pass_turn();
                        }
                        return Some(x);
                    }
                    None => {
                        self.slots[self.at] = None;
                        self.open -= 1;
                        self.pass_turn();
                    }
                },
                slot @ None if !self.inputs_done => match self.inputs.next() {
                    Some(input) => {
                        *slot = Some(input);
                        self.open += 1;
                    }
                    None => self.inputs_done = true,
                },
                None => self.pass_turn(),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(lengths: &[(&str, &[u64])]) -> Prepared {
        Prepared {
            dir: PathBuf::from("d"),
            name: "d".into(),
            config: None,
            version: "1.0.0".into(),
            splits: lengths
                .iter()
                .map(|(n, l)| SplitFiles {
                    name: n.to_string(),
                    files: l.iter().map(|&x| (PathBuf::from("f"), x)).collect(),
                })
                .collect(),
            features: serde_json::Value::Null,
        }
    }

    #[test]
    fn split_strings_resolve_as_tfds_resolves_them() {
        let p = prepared(&[("train", &[5, 5]), ("test", &[9])]);
        let r = |s: &str| {
            p.slices(s)
                .unwrap()
                .into_iter()
                .map(|s| (s.split, s.range))
                .collect::<Vec<_>>()
        };
        assert_eq!(r("test"), [("test".to_string(), 0..9)]);
        assert_eq!(r("train[:8]"), [("train".to_string(), 0..8)]);
        // 50% of 9 is 4.5: ties go to even (4), as Python's round().
        assert_eq!(r("test[50%:]"), [("test".to_string(), 4..9)]);
        assert_eq!(
            r("train[:800]".replace("800", "3").as_str()),
            [("train".to_string(), 0..3)]
        );
        assert_eq!(r("train[-2:]"), [("train".to_string(), 8..10)]);
        assert_eq!(r("train[-20%:]"), [("train".to_string(), 8..10)]);
        assert_eq!(
            r("train+test[:1]"),
            [("train".to_string(), 0..10), ("test".to_string(), 0..1)]
        );
        assert_eq!(r("train[7:3]"), [("train".to_string(), 7..7)]);
        for bad in [
            "train[:11]",
            "valid",
            "train[a:]",
            "train[1:2",
            "train[1]",
            "train[:101%]",
        ] {
            assert!(p.slices(bad).is_err(), "{bad}");
        }
    }

    /// A dataset_info.json of TFDS before 4.0 gives only `numShards`: each shard's records
    /// are counted, and the split reads as with `shardLengths`.
    #[test]
    fn shards_without_lengths_are_counted() {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tfds/svhn_cropped/3.1.0");
        let d = tempfile::tempdir().unwrap();
        for i in 0..3 {
            let f = format!("svhn_cropped-test.tfrecord-{i:05}-of-00003");
            std::fs::copy(src.join(&f), d.path().join(&f)).unwrap();
        }
        std::fs::write(
            d.path().join("dataset_info.json"),
            r#"{"name": "svhn_cropped", "splits": [{"name": "test", "numShards": "3"}]}"#,
        )
        .unwrap();
        let old = open(d.path(), "svhn_cropped").unwrap();
        let new = open(&src, "svhn_cropped").unwrap();
        let lengths = |p: &Prepared| {
            p.split("test")
                .unwrap()
                .files
                .iter()
                .map(|f| f.1)
                .collect::<Vec<_>>()
        };
        assert_eq!(lengths(&old), lengths(&new));
        assert_eq!(
            old.slices("test[1:6]").unwrap(),
            new.slices("test[1:6]").unwrap()
        );
        // A shard cut short is named.
        let f = d.path().join("svhn_cropped-test.tfrecord-00001-of-00003");
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() - 3]).unwrap();
        let e = open(d.path(), "svhn_cropped").unwrap_err().to_string();
        assert!(
            e.contains("00001-of-00003") && e.contains("ends inside"),
            "{e}"
        );
    }

    /// A shard holding fewer records than dataset_info.json says is named when read, and a
    /// missing one too.
    #[test]
    fn short_or_missing_shards_are_named_when_read() {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tfds/svhn_cropped/3.1.0");
        let d = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
        }
        let info = d.path().join("dataset_info.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap();
        let test = &mut v["splits"][1];
        assert_eq!(test["name"], "test");
        assert_eq!(test["shardLengths"][1], "3");
        test["shardLengths"][1] = "5".into();
        std::fs::write(&info, v.to_string()).unwrap();
        let p = open(d.path(), "svhn_cropped").unwrap();
        let read = |spec: &str| {
            let mut n = 0;
            p.read(&p.slices(spec).unwrap(), |_, _, _, _, _| {
                n += 1;
                Ok(())
            })
            .map(|()| n)
        };
        // The first shard alone reads; the second ends at 3 of the 5 said.
        assert_eq!(read("test[:2]").unwrap(), 2);
        let e = read("test").unwrap_err().to_string();
        assert!(
            e.contains("00001-of-00003") && e.contains("holds 3 records") && e.contains("says 5"),
            "{e}"
        );
        std::fs::remove_file(d.path().join("svhn_cropped-test.tfrecord-00002-of-00003")).unwrap();
        let e = read("test[-1:]").unwrap_err().to_string();
        assert!(e.contains("00002-of-00003"), "{e}");
    }

    /// Shard lengths no file could hold are refused, not summed past u64.
    #[test]
    fn absurd_shard_lengths_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("dataset_info.json"),
            r#"{"name": "x", "splits": [{"name": "test", "shardLengths": ["18446744073709551615", "5"]}]}"#,
        )
        .unwrap();
        let e = open(d.path(), "x").unwrap_err().to_string();
        assert!(e.contains("bad shard length"), "{e}");
    }

    #[test]
    fn versions_are_matched_as_tfds_matches_them() {
        assert!(satisfies([3, 1, 0], "3.*.*"));
        assert!(!satisfies([4, 0, 0], "3.*.*"));
        assert!(satisfies([2, 0, 1], "2.0.1") && !satisfies([2, 0, 0], "2.0.1"));
        assert_eq!(version_of("3.0.2"), Some([3, 0, 2]));
        assert_eq!(version_of("incomplete.X_3.0.2"), None);
        assert_eq!(version_of("3.0"), None);
    }

    /// The order of a split's records equals the order tensorflow_datasets 4.9.10 gave for a
    /// dataset of 21 shards (more than the 16 open files, more than 16 records in some) and
    /// slices that start and end inside files or join two splits
    /// (scripts/dev/tfds_interleave_reference.py).
    #[test]
    fn records_come_in_the_order_tfds_interleaves_them() {
        let text = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tfds/interleave.json"),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let lengths = |split: &str| -> Vec<u64> {
            v["shard_lengths"][split]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect()
        };
        let (train, test) = (lengths("train"), lengths("test"));
        assert!(train.len() > CYCLE && train.iter().any(|&n| n > BLOCK as u64));
        let mut p = prepared(&[("train", &train), ("test", &test)]);
        for s in &mut p.splits {
            for (k, f) in s.files.iter_mut().enumerate() {
                f.0 = PathBuf::from(format!("{}/{k}", s.name));
            }
        }
        let cases = v["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 7);
        for c in cases {
            let spec = c["split"].as_str().unwrap();
            let want: Vec<String> = c["order"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| format!("{}/{}:{}", o[0].as_str().unwrap(), o[1], o[2]))
                .collect();
            let files = p.file_slices(&p.slices(spec).unwrap());
            let got: Vec<String> = Interleave::new(
                files.iter().map(|f| {
                    f.records
                        .clone()
                        .map(move |i| format!("{}:{i}", f.file.display()))
                }),
                CYCLE,
                BLOCK,
            )
            .collect();
            assert_eq!(got, want, "{spec}");
        }
        // Read one file after another instead, the order differs.
        let files = p.file_slices(&p.slices("train").unwrap());
        let flat: Vec<String> = files
            .iter()
            .flat_map(|f| {
                f.records
                    .clone()
                    .map(move |i| format!("{}:{i}", f.file.display()))
            })
            .collect();
        let first: Vec<String> = cases[0]["order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| format!("{}/{}:{}", o[0].as_str().unwrap(), o[1], o[2]))
            .collect();
        assert_ne!(flat, first);
    }
}
