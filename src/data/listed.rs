//! Datasets as torchvision downloads them where a split is a list (a text, JSON or MATLAB
//! file) over one image tree, what CLIP_benchmark's `food101`, `dtd`, `pets`,
//! `fgvc_aircraft`, `flowers`, `cars`, `sun397`, `caltech101` and `objectnet` read. Pointing an
//! ImageFolder at the image tree would score every split at once (Food-101: 101,000 images
//! instead of the 25,250 of `test`) or label them otherwise.
//! - Food-101: `food-101/images/<class>/<id>.jpg`, the split in `meta/{train,test}.json`
//!   (`{class: ["class/id", ...]}`); classes: the file's keys, sorted.
//! - DTD: `dtd/dtd/images/<class>/<name>.jpg` (torchvision's root adds one `dtd/`), the split in
//!   `labels/{train,val,test}1.txt` (`class/name.jpg` per line; partition 1, as CLIP_benchmark);
//!   classes: those listed, sorted.
//! - Oxford-IIIT Pet: `oxford-iiit-pet/images/<id>.jpg`, the split in
//!   `annotations/{trainval,test}.txt` (`id class species breed`, class from 1).
//! - FGVC-Aircraft: `fgvc-aircraft-2013b/data/images/<id>.jpg`, the split in
//!   `data/images_variant_{train,val,trainval,test}.txt` (`id variant`); classes: `variants.txt`.
//! - Flowers102: `flowers-102/jpg/image_<id:05>.jpg`, the split's ids in `setid.mat` (`trnid`,
//!   `valid`, `tstid`), labels (from 1) in `imagelabels.mat`.
//! - Stanford Cars: `stanford_cars/cars_{train,test}/<fname>`, records (`fname`, `class` from 1)
//!   in `devkit/cars_train_annos.mat` and `cars_test_annos_withlabels.mat`; classes:
//!   `devkit/cars_meta.mat`'s `class_names`.
//! - SUN397: `SUN397/<letter>/<class...>/sun_*.jpg`, every image (torchvision has no splits);
//!   classes: `ClassName.txt` (`/a/abbey`).
//! - Caltech101: `caltech101/101_ObjectCategories/<class>/image_<i:04>.jpg`, every image (no
//!   splits); classes: the sorted folders but `BACKGROUND_Google`; a class of n entries has the
//!   images 1..=n, as torchvision numbers them. CLIP_benchmark's own copy keeps the background
//!   (`caltech101_with_background`).
//! - ObjectNet as CLIP_benchmark reads it: `objectnet-1.0/images/<folder>/`, the 113 folders
//!   that map to ImageNet (its mapping JSON files), labelled by their sorted names.
//!
//! The images keep the list's order (SUN397's, an unordered glob there, is sorted here).

use super::{mat, Error, Sample};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Food101,
    Dtd,
    Pets,
    Aircraft,
    Flowers,
    Cars,
    Sun397,
    Caltech101,
    ObjectNet,
    Gtsrb,
    Country211,
    RenderedSst2,
    Mnist,
    Stl10,
    Voc2007,
    Pcam,
}

const ALL: [Kind; 16] = [
    Kind::Food101,
    Kind::Dtd,
    Kind::Pets,
    Kind::Aircraft,
    Kind::Flowers,
    Kind::Cars,
    Kind::Sun397,
    Kind::Caltech101,
    Kind::ObjectNet,
    Kind::Gtsrb,
    Kind::Country211,
    Kind::RenderedSst2,
    Kind::Mnist,
    Kind::Stl10,
    Kind::Voc2007,
    Kind::Pcam,
];

impl Kind {
    /// How the dataset's loader opens an image file: torchvision's classes and ImageFolder
    /// (`pil_loader`, `.convert("RGB")`) before the transforms, so the resize sees RGB; its
    /// Caltech101 and CLIP_benchmark's own (`Image.open` only) leave the image as it is. (The
    /// raw arrays, MNIST, STL-10 and PCAM, are RGB or gray either way.)
    pub fn decoder(self) -> super::Decoder {
        match self {
            Kind::Caltech101 => super::Decoder::Pil,
            _ => super::Decoder::PilRgb,
        }
    }

    /// Our dataset name (CLIP_benchmark's names map to it).
    pub fn dataset(self) -> &'static str {
        match self {
            Kind::Food101 => "food",
            Kind::Dtd => "dtd",
            Kind::Pets => "pet",
            Kind::Aircraft => "aircraft",
            Kind::Flowers => "flowers",
            Kind::Cars => "car",
            Kind::Sun397 => "sun",
            Kind::Caltech101 => "caltech",
            Kind::ObjectNet => "objectnet",
            Kind::Gtsrb => "gtsrb",
            Kind::Country211 => "country211",
            Kind::RenderedSst2 => "renderedsst2",
            Kind::Mnist => "mnist",
            Kind::Stl10 => "stl10",
            Kind::Voc2007 => "voc2007",
            Kind::Pcam => "pcam",
        }
    }
    /// As the JSON and messages name it (CLIP_benchmark's name, where it differs from ours).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Food101 => "food101",
            Kind::Pets => "pets",
            Kind::Aircraft => "fgvc_aircraft",
            Kind::Cars => "cars",
            Kind::Sun397 => "sun397",
            Kind::Caltech101 => "caltech101",
            _ => self.dataset(),
        }
    }
    fn what(self) -> &'static str {
        match self {
            Kind::Food101 => "Food-101",
            Kind::Dtd => "DTD",
            Kind::Pets => "Oxford-IIIT Pet",
            Kind::Aircraft => "FGVC-Aircraft",
            Kind::Flowers => "Flowers102",
            Kind::Cars => "Stanford Cars",
            Kind::Sun397 => "SUN397",
            Kind::Caltech101 => "Caltech101",
            Kind::ObjectNet => "ObjectNet",
            Kind::Gtsrb => "GTSRB",
            Kind::Country211 => "Country211",
            Kind::RenderedSst2 => "Rendered SST2",
            Kind::Mnist => "MNIST",
            Kind::Stl10 => "STL-10",
            Kind::Voc2007 => "PASCAL VOC2007",
            Kind::Pcam => "PCAM",
        }
    }
    /// The folders, from a download root, to the one holding the split files and images.
    fn folders(self) -> &'static [&'static str] {
        match self {
            Kind::Food101 => &["food-101"],
            Kind::Dtd => &["dtd", "dtd"],
            Kind::Pets => &["oxford-iiit-pet"],
            Kind::Aircraft => &["fgvc-aircraft-2013b", "data"],
            Kind::Flowers => &["flowers-102"],
            Kind::Cars => &["stanford_cars"],
            Kind::Sun397 => &["SUN397"],
            Kind::Caltech101 => &["caltech101"],
            // CLIP_benchmark's root: objectnet-1.0/ and the mapping files copied beside it.
            Kind::ObjectNet => &[],
            Kind::Gtsrb => &["gtsrb"],
            Kind::Country211 => &["country211"],
            Kind::RenderedSst2 => &["rendered-sst2"],
            Kind::Mnist => &["MNIST", "raw"],
            Kind::Stl10 => &["stl10_binary"],
            Kind::Voc2007 => &["VOCdevkit", "VOC2007"],
            Kind::Pcam => &["pcam"],
        }
    }
    /// What marks the data folder: a file and a folder in it.
    fn marks(self) -> (&'static str, &'static str) {
        match self {
            Kind::Food101 => ("meta/test.json", "images"),
            Kind::Dtd => ("labels/test1.txt", "images"),
            Kind::Pets => ("annotations/test.txt", "images"),
            Kind::Aircraft => ("variants.txt", "images"),
            Kind::Flowers => ("setid.mat", "jpg"),
            Kind::Cars => ("devkit/cars_meta.mat", "devkit"),
            Kind::Sun397 => ("ClassName.txt", "."),
            Kind::Caltech101 => ("101_ObjectCategories", "101_ObjectCategories"),
            Kind::ObjectNet => (OBJECTNET_FOLDERS, "objectnet-1.0/images"),
            Kind::Gtsrb => ("GTSRB", "GTSRB"),
            Kind::Country211 | Kind::RenderedSst2 => ("test", "test"),
            Kind::Mnist => ("t10k-labels-idx1-ubyte", "."),
            Kind::Stl10 => ("test_y.bin", "."),
            Kind::Voc2007 => ("Annotations", "JPEGImages"),
            Kind::Pcam => ("camelyonpatch_level_2_split_test_y.h5", "."),
        }
    }
    /// Its splits, `test` first. SUN397 and Caltech101 have none in torchvision: `test` is the
    /// whole set there, as CLIP_benchmark (which ignores the split) scores it.
    pub fn splits(self) -> &'static [&'static str] {
        match self {
            Kind::Food101
            | Kind::Cars
            | Kind::Gtsrb
            | Kind::Mnist
            | Kind::Stl10
            | Kind::Voc2007 => &["test", "train"],
            Kind::Country211 => &["test", "train", "valid"],
            Kind::RenderedSst2 => &["test", "train", "val"],
            Kind::Dtd | Kind::Flowers | Kind::Pcam => &["test", "train", "val"],
            Kind::Pets => &["test", "trainval"],
            Kind::Aircraft => &["test", "train", "val", "trainval"],
            Kind::Sun397 | Kind::Caltech101 | Kind::ObjectNet => &["test"],
        }
    }
    /// The split a linear probe trains on when asked for `train`.
    pub fn train_split(self) -> &'static str {
        match self {
            Kind::Pets => "trainval",
            _ => "train",
        }
    }
}

/// torchvision's downloads at `path`: the data folder itself, or those below the root they
/// were downloaded into.
pub fn find_all(path: &Path) -> Vec<(Kind, PathBuf)> {
    let mut out = Vec::new();
    for kind in ALL {
        let (file, folder) = kind.marks();
        let is = |d: &Path| d.join(file).exists() && d.join(folder).is_dir();
        if kind == Kind::ObjectNet {
            // The root, or objectnet-1.0 as unzipped (mappings/ inside it).
            let up = path.parent().filter(|_| path.ends_with("objectnet-1.0"));
            out.extend(
                [Some(path), up]
                    .into_iter()
                    .flatten()
                    .find(|d| objectnet_mappings(d).is_some())
                    .map(|d| (kind, d.to_path_buf())),
            );
            continue;
        }
        let folders = kind.folders();
        let last = folders[folders.len() - 1];
        if is(path) && path.file_name().is_some_and(|n| n == last) {
            out.push((kind, path.to_path_buf()));
            continue;
        }
        // Caltech101's class folders themselves: read as torchvision does, not as an
        // ImageFolder (which would count BACKGROUND_Google as a class).
        if kind == Kind::Caltech101 && path.file_name().is_some_and(|n| n == folder) {
            if let Some(up) = path.parent().filter(|p| is(p)) {
                out.push((kind, up.to_path_buf()));
                continue;
            }
        }
        // The root, or a folder part of the way down.
        let below = (0..folders.len())
            .map(|i| {
                folders[i..]
                    .iter()
                    .fold(path.to_path_buf(), |d, f| d.join(f))
            })
            .find(|d| is(d));
        out.extend(below.map(|d| (kind, d)));
    }
    out
}

/// The download at `path` for `dataset` (ours or CLIP_benchmark's name) when it is there,
/// else the first one found.
pub fn find(path: &Path, dataset: Option<&str>) -> Option<(Kind, PathBuf)> {
    let all = find_all(path);
    let wanted = dataset.map(super::labels::canonical);
    let at = all.iter().position(|(k, _)| Some(k.dataset()) == wanted);
    all.into_iter().nth(at.unwrap_or(0))
}

/// torchvision's EuroSAT download under `path` (`eurosat/2750/`, or `2750/`): an ImageFolder
/// of the 10 classes, read as one (torchvision's EuroSAT is that ImageFolder; no splits).
pub fn eurosat(path: &Path) -> Option<PathBuf> {
    [path.join("eurosat/2750"), path.join("2750")]
        .into_iter()
        .find(|d| d.is_dir())
}

/// The `split` of the download at `dir`: its images in the list's order, labelled as
/// torchvision labels them; and the class names of those labels (the download's own, or for
/// Pets and Flowers102, whose files name no classes, the built-in lists in label order).
pub fn samples(kind: Kind, dir: &Path, split: &str) -> Result<(Vec<Sample>, Vec<String>), Error> {
    check_split(kind, dir, split)?;
    let (samples, classes) = match kind {
        Kind::Food101 | Kind::Dtd => food_dtd(kind, dir, split)?,
        Kind::Pets => pets(dir, split)?,
        Kind::Aircraft => aircraft(dir, split)?,
        Kind::Flowers => flowers(dir, split)?,
        Kind::Cars => cars(dir, split)?,
        Kind::Sun397 => sun397(dir)?,
        Kind::Caltech101 => caltech101(dir, false)?,
        Kind::ObjectNet => objectnet(dir)?,
        Kind::Gtsrb => gtsrb(dir, split)?,
        Kind::Country211 => folder_split(dir, split, None)?,
        // torchvision's extension test for it is `endswith("png")`, without the dot.
        Kind::RenderedSst2 => {
            let folder = if split == "val" { "valid" } else { split };
            folder_split(dir, folder, Some("png"))?
        }
        Kind::Mnist => (super::arrays::mnist(dir, split)?, builtin("mnist")),
        Kind::Stl10 => {
            let (s, own) = super::arrays::stl10(dir, split)?;
            (s, own.unwrap_or_else(|| builtin("stl10")))
        }
        Kind::Voc2007 => voc2007(dir, split)?,
        Kind::Pcam => (super::arrays::pcam(dir, split)?, builtin("pcam")),
    };
    let samples = with_decoder(kind, samples);
    if let Some(s) = samples.iter().find(|s| s.label >= classes.len()) {
        return Err(Error::Path {
            path: s.path.clone(),
            msg: format!(
                "label {} is out of range for the {} classes of {}",
                s.label,
                classes.len(),
                kind.what()
            ),
        });
    }
    Ok((samples, classes))
}

/// Image files opened as `kind`'s loader opens them (raw arrays keep theirs).
fn with_decoder(kind: Kind, mut samples: Vec<Sample>) -> Vec<Sample> {
    for s in samples.iter_mut().filter(|s| s.member.is_none()) {
        s.decoder = kind.decoder();
    }
    samples
}

fn check_split(kind: Kind, dir: &Path, split: &str) -> Result<(), Error> {
    if kind.splits().contains(&split) {
        return Ok(());
    }
    Err(Error::Path {
        path: dir.into(),
        msg: format!(
            "{} has no `{split}` split ({})",
            kind.what(),
            kind.splits().join(", ")
        ),
    })
}

fn path_error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |msg| Error::Path {
        path: path.into(),
        msg,
    }
}

fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| path_error(path)(e.to_string()))
}

/// A text file's lines as Python iterates a file opened in text mode (universal newlines).
fn py_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['\r', '\n']) {
            Some(i) => {
                out.push(&rest[..i]);
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                out.push(rest);
                break;
            }
        }
    }
    out
}

/// `rel` (a `/`-separated name from a list file) under `base`; nothing that leaves it.
fn under(base: &Path, rel: &str, file: &Path) -> Result<PathBuf, Error> {
    if rel.split('/').any(|c| c.is_empty() || c == "..") || rel.contains('\\') {
        return Err(path_error(file)(format!(
            "{rel:?} is not a relative image name"
        )));
    }
    let mut p = base.to_path_buf();
    p.extend(rel.split('/'));
    Ok(p)
}

fn builtin(name: &str) -> Vec<String> {
    super::labels::classnames(name).expect("built-in class names")
}

fn food_dtd(kind: Kind, dir: &Path, split: &str) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let path = dir.join(match kind {
        Kind::Food101 => format!("meta/{split}.json"),
        _ => format!("labels/{split}1.txt"),
    });
    let fail = path_error(&path);
    let text = read_text(&path)?;
    // Food-101's classes are its file's keys, listed images or not; DTD's those it lists.
    let (entries, declared) = match kind {
        Kind::Food101 => food101_entries(&text).map_err(&fail)?,
        _ => (
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
    let images = dir.join("images");
    let mut out = Vec::with_capacity(entries.len());
    for (class, rel) in entries {
        let label = classes.binary_search(&class).expect("listed class");
        out.push(Sample::file(under(&images, &rel, &path)?, label));
    }
    Ok((out, classes))
}

/// A text list of `dir`: each line parsed into an image id and label by `parse` (an error
/// names the file and the line); the images are `images/<id>.jpg`.
fn id_lines(
    dir: &Path,
    file: &str,
    parse: impl Fn(&str) -> Result<(String, usize), String>,
) -> Result<Vec<Sample>, Error> {
    let path = dir.join(file);
    let text = read_text(&path)?;
    let images = dir.join("images");
    py_lines(&text)
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let (id, label) =
                parse(line).map_err(|e| path_error(&path)(format!("line {}: {e}", i + 1)))?;
            Ok(Sample::file(
                under(&images, &format!("{id}.jpg"), &path)?,
                label,
            ))
        })
        .collect()
}

/// `annotations/SPLIT.txt`: `id class species breed`, class counted from 1.
fn pets(dir: &Path, split: &str) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let classes = builtin("pet");
    let samples = id_lines(dir, &format!("annotations/{split}.txt"), |line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [id, class, _, _] = f[..] else {
            return Err(format!("{line:?} is not `ID CLASS SPECIES BREED`"));
        };
        match class.parse::<usize>() {
            Ok(c) if (1..=classes.len()).contains(&c) => Ok((id.to_string(), c - 1)),
            _ => Err(format!("class {class:?} is not 1..={}", classes.len())),
        }
    })?;
    Ok((samples, classes))
}

/// `variants.txt` (the classes, one per line) and `images_variant_SPLIT.txt` (`id variant`).
fn aircraft(dir: &Path, split: &str) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let classes: Vec<String> = py_lines(&read_text(&dir.join("variants.txt"))?)
        .into_iter()
        .map(|l| l.trim().to_string())
        .collect();
    let samples = id_lines(dir, &format!("images_variant_{split}.txt"), |line| {
        let Some((id, variant)) = line.trim().split_once(' ') else {
            return Err(format!("{line:?} is not `ID VARIANT`"));
        };
        match classes.iter().position(|c| c == variant) {
            Some(label) => Ok((id.to_string(), label)),
            None => Err(format!("variant {variant:?} is not in variants.txt")),
        }
    })?;
    Ok((samples, classes))
}

/// A MAT-file's variables.
fn read_mat(path: &Path) -> Result<std::collections::BTreeMap<String, mat::Array>, Error> {
    let bytes = std::fs::read(path).map_err(|e| path_error(path)(e.to_string()))?;
    mat::parse(&bytes).map_err(path_error(path))
}

fn variable<'a>(
    vars: &'a std::collections::BTreeMap<String, mat::Array>,
    name: &str,
    path: &Path,
) -> Result<&'a mat::Array, Error> {
    vars.get(name)
        .ok_or_else(|| path_error(path)(format!("has no variable `{name}`")))
}

fn indices(a: &mat::Array, name: &str, path: &Path) -> Result<Vec<u64>, Error> {
    a.as_indices()
        .ok_or_else(|| path_error(path)(format!("`{name}` is not a list of whole numbers")))
}

/// `setid.mat`'s ids of the split; `imagelabels.mat`'s label (from 1) of each id (from 1).
fn flowers(dir: &Path, split: &str) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let key = match split {
        "train" => "trnid",
        "val" => "valid",
        _ => "tstid",
    };
    let set_path = dir.join("setid.mat");
    let ids = indices(
        variable(&read_mat(&set_path)?, key, &set_path)?,
        key,
        &set_path,
    )?;
    let labels_path = dir.join("imagelabels.mat");
    let vars = read_mat(&labels_path)?;
    let labels = indices(
        variable(&vars, "labels", &labels_path)?,
        "labels",
        &labels_path,
    )?;
    let images = dir.join("jpg");
    let classes = builtin("flowers");
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let label = (id as usize)
            .checked_sub(1)
            .and_then(|i| labels.get(i))
            .ok_or_else(|| {
                path_error(&set_path)(format!(
                    "image id {id} has no label in imagelabels.mat ({} labels)",
                    labels.len()
                ))
            })?;
        let label = label
            .checked_sub(1)
            .filter(|&l| (l as usize) < classes.len())
            .ok_or_else(|| {
                path_error(&labels_path)(format!(
                    "image {id} has label {label} (labels are 1..={})",
                    classes.len()
                ))
            })?;
        out.push(Sample::file(
            images.join(format!("image_{id:05}.jpg")),
            label as usize,
        ));
    }
    Ok((out, classes))
}

/// `annotations` records (`fname`, `class` from 1) and `cars_meta.mat`'s `class_names`.
fn cars(dir: &Path, split: &str) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let meta = dir.join("devkit/cars_meta.mat");
    let classes = match variable(&read_mat(&meta)?, "class_names", &meta)? {
        mat::Array::Cell { items, .. } => {
            items.iter().map(|a| a.as_str()).collect::<Option<Vec<_>>>()
        }
        _ => None,
    }
    .ok_or_else(|| path_error(&meta)("`class_names` is not a list of strings".into()))?;
    let (annos, images) = match split {
        "train" => (
            dir.join("devkit/cars_train_annos.mat"),
            dir.join("cars_train"),
        ),
        _ => (
            dir.join("cars_test_annos_withlabels.mat"),
            dir.join("cars_test"),
        ),
    };
    let fail = path_error(&annos);
    let vars = read_mat(&annos)?;
    let records = variable(&vars, "annotations", &annos)?;
    let (Some(names), Some(labels)) = (records.field("fname"), records.field("class")) else {
        return Err(fail(
            "`annotations` is not a struct with `fname` and `class`".into(),
        ));
    };
    let mut out = Vec::with_capacity(names.len());
    for (i, (name, label)) in names.into_iter().zip(labels).enumerate() {
        let name = name
            .as_str()
            .ok_or_else(|| fail(format!("record {}: `fname` is not a string", i + 1)))?;
        let label = match label.as_indices().as_deref() {
            Some(&[c]) if c >= 1 && c as usize <= classes.len() => c as usize - 1,
            _ => {
                return Err(fail(format!(
                    "record {} ({name}): `class` is not one number in 1..={}",
                    i + 1,
                    classes.len()
                )))
            }
        };
        out.push(Sample::file(under(&images, &name, &annos)?, label));
    }
    Ok((out, classes))
}

/// `ClassName.txt`'s classes (`/a/abbey` is `abbey`) and every `sun_*.jpg` below, labelled by
/// the folders between the letter and the file.
fn sun397(dir: &Path) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let names = dir.join("ClassName.txt");
    let classes: Vec<String> = py_lines(&read_text(&names)?)
        .into_iter()
        .map(|l| l.chars().skip(3).collect::<String>().trim().to_string())
        .collect();
    let index: std::collections::HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let rel = f.strip_prefix(dir).expect("below the root");
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        // Python's `parts[1:-1]`: empty for a file directly below the root.
        let class = parts
            .get(1..parts.len() - 1)
            .map(|p| p.join("/"))
            .unwrap_or_default();
        let label = *index.get(class.as_str()).ok_or_else(|| {
            path_error(&f)(format!(
                "its folder {class:?} is not a class in ClassName.txt"
            ))
        })?;
        out.push(Sample::file(f, label));
    }
    Ok((out, classes))
}

/// Every `sun_*.jpg` file below `d` (directory links are not followed, as pathlib's rglob).
fn walk(d: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(d).map_err(|e| path_error(d)(e.to_string()))?;
    for e in entries {
        let e = e.map_err(|e| path_error(d)(e.to_string()))?;
        let p = e.path();
        let ty = e
            .file_type()
            .map_err(|err| path_error(&p)(err.to_string()))?;
        if ty.is_dir() {
            walk(&p, out)?;
        } else {
            let name = e.file_name();
            let name = name.as_encoded_bytes();
            if name.starts_with(b"sun_") && name.ends_with(b".jpg") && p.is_file() {
                out.push(p);
            }
        }
    }
    Ok(())
}

/// An ImageFolder per split (`DIR/SPLIT/<class>/...`), as torchvision's Country211 and
/// RenderedSST2 read it; `only`: the one extension torchvision's listing takes there.
fn folder_split(
    dir: &Path,
    split: &str,
    only: Option<&str>,
) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let f = super::image_folder::list_for(&dir.join(split), "--test-data-path")?;
    let samples = f
        .samples
        .into_iter()
        .filter(|s| only.is_none_or(|e| lower_name(&s.path).ends_with(e)))
        .collect();
    Ok((samples, f.folders))
}

fn lower_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// CLIP_benchmark's `voc2007` (its `PASCALVoc2007Cropped`): the split's image ids from
/// `ImageSets/Main/aeroplane_<split>.txt` (`id flag` per line), and for each id every `object`
/// of `Annotations/<id>.xml` in file order, one sample each: `JPEGImages/<id>.jpg` cut to the
/// object's box (the children of `bndbox` in order: left, top, right, bottom), labelled by its
/// `name` (the object's first child) among VOC's 20 `object_categories`.
fn voc2007(dir: &Path, split: &str) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let classes = builtin("voc2007");
    let mut out = Vec::new();
    for (image, objects) in voc_split(dir, split, &classes)? {
        for (label, region) in objects {
            out.push(Sample {
                region: Some(region),
                ..Sample::file(image.clone(), label)
            });
        }
    }
    Ok((out, classes))
}

/// CLIP_benchmark's `voc2007_multilabel` (its `PASCALVoc2007`): the split's images whole,
/// each with the classes of all its objects (sorted, once each; none for an image without
/// objects). A sample's label is its first class (0 without one); the classes are VOC's 20.
pub fn voc2007_images(dir: &Path, split: &str) -> Result<MultiLabel, Error> {
    check_split(Kind::Voc2007, dir, split)?;
    let classes = builtin("voc2007");
    let mut images = Vec::new();
    let mut positives = Vec::new();
    for (image, objects) in voc_split(dir, split, &classes)? {
        let mut p: Vec<u32> = objects.iter().map(|&(l, _)| l as u32).collect();
        p.sort_unstable();
        p.dedup();
        images.push(Sample {
            decoder: Kind::Voc2007.decoder(),
            ..Sample::file(image, p.first().map_or(0, |&c| c as usize))
        });
        positives.push(p);
    }
    Ok(MultiLabel {
        samples: images,
        positives,
        classes,
    })
}

/// A multi-label split: its images, each one's positive classes, and the classes.
pub struct MultiLabel {
    pub samples: Vec<Sample>,
    pub positives: Vec<Vec<u32>>,
    pub classes: Vec<String>,
}

/// A VOC split: each listed image with its objects (label, box), in the list's order.
type VocImage = (PathBuf, Vec<(usize, crate::preprocess::Region)>);

fn voc_split(dir: &Path, split: &str, classes: &[String]) -> Result<Vec<VocImage>, Error> {
    let list = dir.join(format!("ImageSets/Main/aeroplane_{split}.txt"));
    let text = read_text(&list)?;
    let mut out = Vec::new();
    for (n, line) in py_lines(&text).into_iter().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let id = match fields.as_slice() {
            [] => continue,
            [id, _] => *id,
            _ => {
                return Err(path_error(&list)(format!(
                    "line {}: {line:?} is not `id flag`",
                    n + 1
                )))
            }
        };
        let xml = under(&dir.join("Annotations"), &format!("{id}.xml"), &list)?;
        let image = under(&dir.join("JPEGImages"), &format!("{id}.jpg"), &list)?;
        out.push((image, voc_objects(&xml, classes)?));
    }
    Ok(out)
}

/// The objects of one VOC annotation: label and box, as CLIP_benchmark reads them with
/// ElementTree (children by position, names matched exactly, coordinates by `int()`).
fn voc_objects(
    path: &Path,
    classes: &[String],
) -> Result<Vec<(usize, crate::preprocess::Region)>, Error> {
    let fail = path_error(path);
    let text = read_text(path)?;
    let doc = roxmltree::Document::parse(&text).map_err(|e| fail(e.to_string()))?;
    let mut out = Vec::new();
    for (k, obj) in elements(doc.root_element())
        .into_iter()
        .filter(|c| c.tag_name().name() == "object")
        .enumerate()
    {
        let at = |msg: String| fail(format!("object {}: {msg}", k + 1));
        let parts = elements(obj);
        let name = match parts.first() {
            Some(n) if n.tag_name().name() == "name" => n.text().unwrap_or(""),
            _ => return Err(at("its first element is not <name>".into())),
        };
        let label = classes
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| at(format!("{name:?} is not one of VOC's 20 classes")))?;
        let bndbox = parts
            .iter()
            .find(|c| c.tag_name().name() == "bndbox")
            .ok_or_else(|| at("no <bndbox>".into()))?;
        let coords = elements(*bndbox)
            .iter()
            .take(4)
            .map(|c| {
                let t = c.text().unwrap_or("").trim();
                t.parse::<i64>()
                    .map_err(|_| at(format!("<{}> {t:?} is not an integer", c.tag_name().name())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let [left, upper, right, lower] = coords[..] else {
            return Err(at("<bndbox> has fewer than 4 elements".into()));
        };
        let region = crate::preprocess::Region {
            left,
            upper,
            right,
            lower,
        };
        if let Some(why) = region.invalid() {
            return Err(at(why));
        }
        out.push((label, region));
    }
    Ok(out)
}

/// An XML element's child elements, in order (ElementTree's `elem[i]`).
fn elements<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> Vec<roxmltree::Node<'a, 'i>> {
    n.children().filter(|c| c.is_element()).collect()
}

/// GTSRB as torchvision reads it: `train` is the `.ppm` files of `GTSRB/Training/<class>/`
/// (class folders sorted); `test` the rows of `GT-final_test.csv` (`;`-separated, `Filename`
/// and `ClassId`) under `GTSRB/Final_Test/Images/`. The classes are the built-in 43 names.
fn gtsrb(dir: &Path, split: &str) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let classes = builtin("gtsrb");
    if split == "train" {
        let (samples, folders) = folder_split(&dir.join("GTSRB"), "Training", Some(".ppm"))?;
        if folders.len() > classes.len() {
            return Err(path_error(&dir.join("GTSRB/Training"))(format!(
                "{} class folders, GTSRB has {}",
                folders.len(),
                classes.len()
            )));
        }
        return Ok((samples, classes));
    }
    let path = dir.join("GT-final_test.csv");
    let fail = path_error(&path);
    let text = read_text(&path)?;
    let images = dir.join("GTSRB/Final_Test/Images");
    let mut lines = py_lines(&text).into_iter().enumerate();
    let header: Vec<String> = match lines.next() {
        Some((_, h)) => csv_fields(h),
        None => return Err(fail("empty (no header)".into())),
    };
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| fail(format!("no `{name}` column")))
    };
    let (file_col, class_col) = (col("Filename")?, col("ClassId")?);
    let mut out = Vec::new();
    for (i, line) in lines {
        // csv.DictReader skips rows without fields.
        if line.is_empty() {
            continue;
        }
        let row = csv_fields(line);
        let (Some(file), Some(class)) = (row.get(file_col), row.get(class_col)) else {
            return Err(fail(format!(
                "line {}: fewer fields than the header",
                i + 1
            )));
        };
        let label = class
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&c| c < classes.len())
            .ok_or_else(|| {
                fail(format!(
                    "line {}: ClassId {class:?} is not 0..{}",
                    i + 1,
                    classes.len() - 1
                ))
            })?;
        out.push(Sample::file(under(&images, file, &path)?, label));
    }
    Ok((out, classes))
}

/// One `;`-separated row as Python's csv reads GTSRB's (`skipinitialspace`; a field may be
/// quoted with `"`).
fn csv_fields(line: &str) -> Vec<String> {
    line.split(';')
        .map(|f| {
            let f = f.trim_start_matches(' ');
            match f.strip_prefix('"').and_then(|f| f.strip_suffix('"')) {
                Some(q) => q.replace("\"\"", "\""),
                None => f.to_string(),
            }
        })
        .collect()
}

const OBJECTNET_FOLDERS: &str = "folder_to_objectnet_label.json";
const OBJECTNET_IMAGENET: &str = "objectnet_to_imagenet_1k.json";

/// Where ObjectNet's mapping files are for the download at `dir`: `dir` itself (CLIP_benchmark
/// copies them there) or `objectnet-1.0/mappings/` (the zip's place).
fn objectnet_mappings(dir: &Path) -> Option<PathBuf> {
    if !dir.join("objectnet-1.0/images").is_dir() {
        return None;
    }
    [dir.to_path_buf(), dir.join("objectnet-1.0/mappings")]
        .into_iter()
        .find(|m| m.join(OBJECTNET_FOLDERS).is_file() && m.join(OBJECTNET_IMAGENET).is_file())
}

/// ObjectNet as CLIP_benchmark reads it (its `objectnet.py`, from wise-ft): the folders of the
/// 113 classes that map to ImageNet (`objectnet_to_imagenet_1k.json`'s names, found through
/// `folder_to_objectnet_label.json`), sorted, are the labels; the images are torchvision's
/// ImageFolder listing of `objectnet-1.0/images` kept where their folder is one of those; the
/// class names are the folders' ObjectNet names in lower case.
fn objectnet(dir: &Path) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let maps = objectnet_mappings(dir).ok_or_else(|| {
        path_error(dir)(format!(
            "no {OBJECTNET_FOLDERS} and {OBJECTNET_IMAGENET} beside objectnet-1.0/images"
        ))
    })?;
    let json = |name: &str| -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        let p = maps.join(name);
        serde_json::from_str(&read_text(&p)?)
            .map_err(|e| path_error(&p)(format!("not a JSON object: {e}")))
    };
    let folder_names = json(OBJECTNET_FOLDERS)?;
    // Inverted as CLIP_benchmark inverts it: the last folder of a repeated name wins.
    let mut folder_of = std::collections::HashMap::new();
    for (folder, name) in &folder_names {
        let name = name.as_str().ok_or_else(|| {
            path_error(&maps.join(OBJECTNET_FOLDERS))(format!("`{folder}` is not a string"))
        })?;
        folder_of.insert(name.to_string(), folder.clone());
    }
    let mut folders = Vec::new();
    for name in json(OBJECTNET_IMAGENET)?.keys() {
        let folder = folder_of.get(name).ok_or_else(|| {
            path_error(&maps.join(OBJECTNET_IMAGENET))(format!(
                "`{name}` is not a class of {OBJECTNET_FOLDERS}"
            ))
        })?;
        folders.push(folder.clone());
    }
    folders.sort();
    folders.dedup();
    // classname_map of CLIP_benchmark: folder -> the name it was inverted from.
    let name_of: std::collections::HashMap<&str, &str> = folder_of
        .iter()
        .map(|(n, f)| (f.as_str(), n.as_str()))
        .collect();
    let classes = folders
        .iter()
        .map(|f| name_of[f.as_str()].to_lowercase())
        .collect();
    let listed =
        super::image_folder::list_for(&dir.join("objectnet-1.0/images"), "--test-data-path")?;
    let samples = listed
        .samples
        .into_iter()
        .filter_map(|s| {
            let parent = s.path.parent()?.file_name()?.to_str()?;
            let label = folders.binary_search_by(|f| f.as_str().cmp(parent)).ok()?;
            Some(Sample { label, ..s })
        })
        .collect();
    Ok((samples, classes))
}

/// CLIP_benchmark's Caltech101 (its own copy of torchvision's class): `BACKGROUND_Google` kept
/// as a class, and a folder's images counted by the `*.jpg` names in it.
pub fn caltech101_with_background(dir: &Path) -> Result<(Vec<Sample>, Vec<String>), Error> {
    caltech101(dir, true)
}

/// torchvision's Caltech101: the sorted folders of `101_ObjectCategories` but
/// `BACKGROUND_Google`; in each, as many images `image_0001.jpg`.. as the folder has entries.
/// With `background` (CLIP_benchmark's), every folder, counting its `*.jpg` names.
fn caltech101(dir: &Path, background: bool) -> Result<(Vec<Sample>, Vec<String>), Error> {
    let cats = dir.join("101_ObjectCategories");
    let list = |d: &Path| -> Result<Vec<std::ffi::OsString>, Error> {
        std::fs::read_dir(d)
            .and_then(|r| r.map(|e| e.map(|e| e.file_name())).collect())
            .map_err(|e| path_error(d)(e.to_string()))
    };
    let mut names = list(&cats)?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    if !background {
        names.retain(|n| n != "BACKGROUND_Google");
    }
    let mut out = Vec::new();
    let mut classes = Vec::with_capacity(names.len());
    for (label, name) in names.iter().enumerate() {
        let d = cats.join(name);
        let entries = list(&d)?;
        let n = if background {
            // glob's `*.jpg`: hidden names are not matched.
            entries
                .iter()
                .filter(|e| {
                    let b = e.as_encoded_bytes();
                    b.ends_with(b".jpg") && !b.starts_with(b".")
                })
                .count()
        } else {
            entries.len()
        };
        out.extend((1..=n).map(|i| Sample::file(d.join(format!("image_{i:04}.jpg")), label)));
        classes.push(name.to_string_lossy().into_owned());
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

    /// Every split of tests/fixtures/torchvision as torchvision's own classes list it
    /// (`scripts/dev/make_torchvision_fixture.py` wrote what they gave to expected.json).
    #[test]
    fn splits_are_torchvisions() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchvision");
        let text = std::fs::read_to_string(root.join("expected.json")).unwrap();
        let want: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(want.len(), 33);
        let all = find_all(&root);
        assert_eq!(
            all.len(),
            ALL.len() - 2,
            "all but Food-101 and DTD: {all:?}"
        );
        for (key, v) in want {
            let (name, split) = key.split_once('/').unwrap();
            // CLIP_benchmark's own Caltech101 (background kept) on the same download.
            let cb = name == "clip_benchmark_caltech101";
            // CLIP_benchmark's multi-label VOC2007: whole images with all their classes.
            let ml = name == "voc2007_multilabel";
            let name = match name {
                _ if cb => "caltech101",
                _ if ml => "voc2007",
                n => n,
            };
            let (kind, dir) = all
                .iter()
                .find(|(k, _)| k.name() == name)
                .cloned()
                .unwrap_or_else(|| panic!("{name} not found"));
            // The dataset's own folder is found too.
            if let Some(f) = kind.folders().first() {
                assert_eq!(find(&root.join(f), None).unwrap().0, kind, "{key}");
            } else {
                let unzipped = dir.join("objectnet-1.0");
                assert_eq!(find(&unzipped, None), Some((kind, dir.clone())), "{key}");
            }
            assert_eq!(find(&root, Some(name)).unwrap().0, kind, "{key}");
            if kind == Kind::Caltech101 {
                assert_eq!(
                    find(&dir.join("101_ObjectCategories"), None),
                    Some((kind, dir.clone()))
                );
            }
            let (s, classes) = if cb {
                caltech101_with_background(&dir)
            } else if ml {
                voc2007_images(&dir, split).map(|m| {
                    let want: Vec<Vec<u32>> = serde_json::from_value(v["targets"].clone()).unwrap();
                    assert_eq!(m.positives, want, "{key}");
                    (m.samples, m.classes)
                })
            } else {
                samples(kind, &dir, split)
            }
            .unwrap_or_else(|e| panic!("{key}: {e}"));
            let got: Vec<(String, usize)> = s
                .iter()
                .map(|s| {
                    let r = s.path.strip_prefix(&root).unwrap();
                    (r.to_string_lossy().replace('\\', "/"), s.label)
                })
                .collect();
            let exp: Vec<(String, usize)> = v["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_string(),
                        p[1].as_u64().unwrap() as usize,
                    )
                })
                .collect();
            assert_eq!(got, exp, "{key}");
            // VOC's objects: the boxes CLIP_benchmark cuts.
            if let Some(b) = v.get("boxes").and_then(|b| b.as_array()) {
                let got: Vec<[i64; 4]> = s
                    .iter()
                    .map(|s| {
                        let r = s.region.unwrap();
                        [r.left, r.upper, r.right, r.lower]
                    })
                    .collect();
                let exp: Vec<[i64; 4]> = b
                    .iter()
                    .map(|b| std::array::from_fn(|i| b[i].as_i64().unwrap()))
                    .collect();
                assert_eq!(got, exp, "{key}");
            }
            // Images inside arrays, or cut from files: the crop torchvision's image gives.
            if let Some(c) = v.get("crops").and_then(|c| c.as_array()) {
                use sha2::{Digest, Sha256};
                assert_eq!(c.len(), s.len(), "{key}");
                for (i, (smp, want)) in s.iter().zip(c).enumerate() {
                    let crop = smp.crop(224, Default::default()).unwrap();
                    let got = format!("{:x}", Sha256::digest(&crop));
                    assert_eq!(got, want.as_str().unwrap(), "{key}[{i}]");
                }
            }
            if let Some(c) = v["classes"].as_array().filter(|_| kind != Kind::Pets) {
                let c: Vec<&str> = c.iter().map(|c| c.as_str().unwrap()).collect();
                assert_eq!(classes, c, "{key}");
            }
        }
    }

    #[test]
    fn voc_annotations_are_read_as_elementtree_reads_them() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("VOCdevkit/VOC2007");
        for sub in ["Annotations", "JPEGImages", "ImageSets/Main"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(
            root.join("ImageSets/Main/aeroplane_test.txt"),
            "000009 -1\n\n",
        )
        .unwrap();
        assert_eq!(find(d.path(), None).unwrap(), (Kind::Voc2007, root.clone()));
        let xml = root.join("Annotations/000009.xml");
        let obj = |name: &str, b: &str| {
            format!(
                "<object><name>{name}</name><difficult>1</difficult><bndbox>{b}</bndbox></object>"
            )
        };
        let bx = |v: [&str; 4]| {
            format!(
                "<xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax>",
                v[0], v[1], v[2], v[3]
            )
        };
        // Two objects, difficult or not, in file order; a nested <object> is not one.
        let good = format!(
            "<annotation><size/>{}<part>{}</part>{}</annotation>",
            obj("dog", &bx(["48", " 240", "195", "371"])),
            obj("cat", &bx(["1", "1", "2", "2"])),
            obj("tvmonitor", &bx(["+3", "0", "9", "10"]))
        );
        std::fs::write(&xml, good).unwrap();
        let (s, classes) = samples(Kind::Voc2007, &root, "test").unwrap();
        assert_eq!(classes.len(), 20);
        let got: Vec<(usize, String)> = s.iter().map(|s| (s.label, s.name())).collect();
        let img = root.join("JPEGImages/000009.jpg").display().to_string();
        assert_eq!(
            got,
            [
                (11, format!("{img}#48,240,195,371")),
                (19, format!("{img}#3,0,9,10"))
            ]
        );
        for (text, want) in [
            (
                obj("Dog", &bx(["1", "1", "5", "5"])),
                "\"Dog\" is not one of",
            ),
            (
                obj("dog", &bx(["1", "1", "5.5", "5"])),
                "\"5.5\" is not an integer",
            ),
            (obj("dog", &bx(["5", "1", "5", "5"])), "is empty"),
            (obj("dog", "<xmin>1</xmin>"), "fewer than 4"),
            (
                "<object><pose/><name>dog</name></object>".into(),
                "not <name>",
            ),
            ("<object><name>dog</name></object>".into(), "no <bndbox>"),
            ("<object><name>dog</name>".into(), "000009.xml"),
        ] {
            std::fs::write(&xml, format!("<annotation>{text}</annotation>")).unwrap();
            let e = samples(Kind::Voc2007, &root, "test")
                .unwrap_err()
                .to_string();
            assert!(e.contains("000009.xml") && e.contains(want), "{want}: {e}");
        }
        // An image without objects: no crop, but one image with no class in the multi-label set.
        std::fs::write(&xml, "<annotation><size/></annotation>").unwrap();
        assert!(samples(Kind::Voc2007, &root, "test").unwrap().0.is_empty());
        let m = voc2007_images(&root, "test").unwrap();
        assert_eq!((m.samples.len(), m.positives), (1, vec![vec![]]));
        std::fs::write(root.join("ImageSets/Main/aeroplane_test.txt"), "../x 1\n").unwrap();
        assert!(samples(Kind::Voc2007, &root, "test").is_err());
        assert!(samples(Kind::Voc2007, &root, "val").is_err());
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
        assert_eq!(find(d.path(), None).unwrap(), (Kind::Food101, root.clone()));
        assert_eq!(find(&root, None).unwrap().1, root);
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
        assert_eq!(
            find(&d.path().join("t"), None).unwrap(),
            (Kind::Dtd, dtd.clone())
        );
        assert_eq!(find(&dtd, None).unwrap().1, dtd);
        let (s, classes) = samples(Kind::Dtd, &dtd, "test").unwrap();
        assert_eq!(classes, ["banded", "zigzagged"]);
        let want = [("zigzagged/z_1.jpg", 1), ("banded/b_2.jpg", 0)];
        assert_eq!(rel(&s, &dtd), want.map(|(p, l)| (p.to_string(), l)));
    }
}
