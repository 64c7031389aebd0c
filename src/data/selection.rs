//! Image-caption selection sets (CLIP_benchmark's `image_caption_selection` task): instances
//! of a few images and a few captions in which image i belongs with caption i. Read from
//! SugarCREPE's files (`{ID: {"filename", "caption", "negative_caption"}}`: one image, its
//! true caption, then the false one), Winoground's `examples.jsonl` (`image_0`, `image_1`,
//! `caption_0`, `caption_1`; the images `images/NAME.png`), or JSON lines of our own
//! (`{"images": [..], "captions": [..]}`, or `"image": PATH`). Parsing is pure (fuzzed);
//! [`files`] and [`read`] add the file system.

use super::captions::ParseError;
use super::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    SugarCrepe,
    Winoground,
    Jsonl,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::SugarCrepe => "sugar-crepe",
            Format::Winoground => "winoground",
            Format::Jsonl => "jsonl",
        }
    }
}

/// Images and captions an instance may hold: each instance's scores are a small matrix, and a
/// hostile file should not make one huge.
pub const MAX_PER_INSTANCE: usize = 1024;

/// One instance as written: image names (as the file spells them) and captions.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Its id in the file (SugarCREPE's key, Winoground's `id`), else `line N` / `item N`.
    pub id: String,
    pub images: Vec<String>,
    pub captions: Vec<String>,
}

fn perr(at: impl Into<String>, msg: impl Into<String>) -> ParseError {
    ParseError {
        at: at.into(),
        msg: msg.into(),
    }
}

/// The format by content: lines whose first object has `image_0` are Winoground's, one with
/// `images` or `image` ours; a JSON object naming `filename`s or `negative_caption`s is
/// SugarCREPE's; anything else is our JSON lines.
pub fn detect(text: &str) -> Format {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line: Option<serde_json::Value> = serde_json::from_str(first).ok();
    if let Some(v) = &line {
        if v.get("image_0").is_some() {
            return Format::Winoground;
        }
        if v.get("images").is_some() || v.get("image").is_some() || v.is_array() {
            return Format::Jsonl;
        }
    }
    let object = text.trim_start().starts_with('{');
    if object && (text.contains("\"negative_caption\"") || text.contains("\"filename\"")) {
        Format::SugarCrepe
    } else if object && text.contains("\"image_0\"") {
        Format::Winoground
    } else {
        Format::Jsonl
    }
}

/// The instances of a file's text in `format`.
pub fn parse(text: &str, format: Format) -> Result<Vec<Instance>, ParseError> {
    let out = match format {
        Format::SugarCrepe => parse_sugar_crepe(text)?,
        Format::Winoground => lines(text, winoground_instance)?,
        Format::Jsonl if text.trim_start().starts_with('[') => {
            let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                perr(
                    format!("line {}", e.line()),
                    format!("not a JSON list ({e})"),
                )
            })?;
            let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
            items
                .iter()
                .enumerate()
                .map(|(n, item)| jsonl_instance(item, &format!("item {n}")))
                .collect::<Result<_, _>>()?
        }
        Format::Jsonl => lines(text, jsonl_instance)?,
    };
    if out.is_empty() {
        return Err(perr("", "holds no instances"));
    }
    Ok(out)
}

/// One instance per non-empty line.
fn lines(
    text: &str,
    one: fn(&serde_json::Value, &str) -> Result<Instance, ParseError>,
) -> Result<Vec<Instance>, ParseError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}", n + 1);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| perr(&at, format!("not a JSON object ({e})")))?;
        out.push(one(&v, &at)?);
    }
    Ok(out)
}

/// An `id` field as text (a string or a number), else where the instance is.
fn id_of(obj: &serde_json::Map<String, serde_json::Value>, at: &str) -> String {
    match obj.get("id") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => at.to_string(),
    }
}

fn text_field<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, ParseError> {
    obj.get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| perr(at, format!("no \"{key}\" string")))
}

fn image_field<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, ParseError> {
    text_field(obj, key, at)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| perr(at, format!("no \"{key}\" (a non-empty string)")))
}

fn winoground_instance(v: &serde_json::Value, at: &str) -> Result<Instance, ParseError> {
    let obj = v.as_object().ok_or_else(|| {
        perr(
            at,
            "expected an object with image_0, image_1, caption_0, caption_1",
        )
    })?;
    Ok(Instance {
        id: id_of(obj, at),
        images: vec![
            image_field(obj, "image_0", at)?.to_string(),
            image_field(obj, "image_1", at)?.to_string(),
        ],
        captions: vec![
            text_field(obj, "caption_0", at)?.to_string(),
            text_field(obj, "caption_1", at)?.to_string(),
        ],
    })
}

fn strings(v: &serde_json::Value, key: &str, at: &str) -> Result<Vec<String>, ParseError> {
    let arr = v
        .as_array()
        .ok_or_else(|| perr(at, format!("\"{key}\" is not a list of strings")))?;
    if arr.is_empty() || arr.len() > MAX_PER_INSTANCE {
        return Err(perr(
            at,
            format!(
                "\"{key}\" holds {} items (1 to {MAX_PER_INSTANCE})",
                arr.len()
            ),
        ));
    }
    arr.iter()
        .map(|s| {
            s.as_str()
                .map(str::to_string)
                .ok_or_else(|| perr(at, format!("\"{key}\" holds a non-string")))
        })
        .collect()
}

fn jsonl_instance(v: &serde_json::Value, at: &str) -> Result<Instance, ParseError> {
    let obj = v.as_object().ok_or_else(|| {
        perr(
            at,
            "expected an object with \"images\" (or \"image\") and \"captions\"",
        )
    })?;
    let images = match (obj.get("images"), obj.get("image")) {
        (Some(list), _) => strings(list, "images", at)?,
        (None, Some(_)) => vec![image_field(obj, "image", at)?.to_string()],
        (None, None) => return Err(perr(at, "no \"images\" list (or \"image\" path)")),
    };
    if images.iter().any(|s| s.trim().is_empty()) {
        return Err(perr(at, "an image path is empty"));
    }
    let captions = match obj.get("captions") {
        Some(c) => strings(c, "captions", at)?,
        None => return Err(perr(at, "no \"captions\" list")),
    };
    Ok(Instance {
        id: id_of(obj, at),
        images,
        captions,
    })
}

/// SugarCREPE's object of instances, in file order (as Python's `json.load` keeps it; a
/// repeated key keeps its first place and its last value).
fn parse_sugar_crepe(text: &str) -> Result<Vec<Instance>, ParseError> {
    let ordered: Ordered = serde_json::from_str(text).map_err(|e| {
        perr(
            format!("line {}", e.line()),
            format!("not SugarCREPE's JSON object of instances ({e})"),
        )
    })?;
    let mut out: Vec<Instance> = Vec::with_capacity(ordered.0.len());
    let mut place: HashMap<String, usize> = HashMap::new();
    for (key, v) in ordered.0 {
        let at = format!("instance {key:?}");
        let obj = v.as_object().ok_or_else(|| {
            perr(
                &at,
                "expected an object with filename, caption, negative_caption",
            )
        })?;
        let inst = Instance {
            id: key.clone(),
            images: vec![image_field(obj, "filename", &at)?.to_string()],
            captions: vec![
                text_field(obj, "caption", &at)?.to_string(),
                text_field(obj, "negative_caption", &at)?.to_string(),
            ],
        };
        match place.get(&key) {
            Some(&i) => out[i] = inst,
            None => {
                place.insert(key, out.len());
                out.push(inst);
            }
        }
    }
    Ok(out)
}

/// A JSON object's entries in file order (serde_json's map sorts its keys).
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = m.next_entry::<String, serde_json::Value>()? {
                    v.push(e);
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// An instance ready to score: positions in [`SelectionSet::images`] and `captions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    pub images: Vec<usize>,
    pub captions: Vec<usize>,
}

/// A selection set ready to encode: each distinct image and caption once.
#[derive(Debug, Clone)]
pub struct SelectionSet {
    pub source: PathBuf,
    pub format: Format,
    pub root: PathBuf,
    pub images: Vec<super::Sample>,
    pub captions: Vec<String>,
    pub items: Vec<Item>,
    /// Instances left out with `skip_unreadable` (an image missing) and why.
    pub skipped: Vec<(String, String)>,
}

/// Winoground's released `images.zip` (`images/NAME.png`), read in place: its members by name.
struct ImagesZip {
    path: std::sync::Arc<PathBuf>,
    members: HashMap<String, crate::checkpoint::zip::Member>,
}

impl ImagesZip {
    /// `root/images.zip`, when there is one (an unreadable one is an error naming it).
    fn open(root: &Path) -> Result<Option<Self>, Error> {
        let path = root.join("images.zip");
        if !path.is_file() {
            return Ok(None);
        }
        let bad = |msg: String| Error::Path {
            path: path.clone(),
            msg,
        };
        let f = std::fs::File::open(&path).map_err(|e| bad(e.to_string()))?;
        let len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
        let members = crate::checkpoint::zip::members(&f, len)
            .map_err(|e| bad(format!("not a readable zip archive ({e})")))?;
        Ok(Some(ImagesZip {
            path: std::sync::Arc::new(path),
            members: members.into_iter().map(|m| (m.name.clone(), m)).collect(),
        }))
    }

    /// The member `name`, as a sample named `ZIP/NAME` (stored or deflated; another method is
    /// no image).
    fn sample(&self, name: &str) -> Option<super::Sample> {
        let m = self
            .members
            .get(name)
            .filter(|m| matches!(m.method, 0 | 8))?;
        let mut s = super::Sample::file(self.path.join(name), 0);
        s.member = Some(super::wds::Member {
            tar: self.path.clone(),
            offset: m.data_start,
            len: m.compressed_size,
            pixels: None,
            rows: None,
            inflate: (m.method == 8).then_some(m.size),
        });
        Some(s)
    }
}

/// Where an instance's image name points: the name as a path under `root`, and for Winoground
/// (whose names have no extension) `NAME.png` and `images/NAME.png` (the released
/// `images.zip` unpacked beside `examples.jsonl`), or that member of `images.zip` itself.
fn resolve(
    root: &Path,
    name: &str,
    format: Format,
    zip: &Option<ImagesZip>,
) -> Option<super::Sample> {
    let plain = root.join(name);
    if plain.is_file() {
        return Some(super::Sample::file(plain, 0));
    }
    if format == Format::Winoground {
        let png = format!("{name}.png");
        let file = [root.join(&png), root.join("images").join(&png)]
            .into_iter()
            .find(|p| p.is_file());
        return match file {
            Some(p) => Some(super::Sample::file(p, 0)),
            None => zip.as_ref().and_then(|z| {
                z.sample(&format!("images/{png}"))
                    .or_else(|| z.sample(&png))
            }),
        };
    }
    None
}

/// A Winoground shard of Hugging Face `datasets`' cache: `winoground-test.arrow` or
/// `winoground-test-NNNNN-of-NNNNN.arrow`.
fn is_hf_shard(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with("winoground-test") && name.ends_with(".arrow") && p.is_file()
}

/// Winoground's cached shards under `dir` (CLIP_benchmark's `cache_dir`:
/// `dir/facebook___winoground/default/0.0.0/HASH/`, or that folder itself), sorted, with their
/// folder. Several cached versions are an error naming them.
fn hf_cache(dir: &Path) -> Result<Option<(PathBuf, Vec<PathBuf>)>, Error> {
    type Found = std::collections::BTreeMap<PathBuf, Vec<PathBuf>>;
    fn walk(d: &Path, depth: usize, out: &mut Found) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if is_hf_shard(&p) {
                out.entry(d.to_path_buf()).or_default().push(p);
            } else if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, depth - 1, out);
            }
        }
    }
    let mut found = Found::new();
    walk(dir, 0, &mut found);
    let cache = dir.join("facebook___winoground");
    if found.is_empty() && cache.is_dir() {
        walk(&cache, 4, &mut found);
    }
    if found.len() > 1 {
        return Err(Error::Path {
            path: dir.into(),
            msg: format!(
                "holds several cached Winoground versions ({}); name one folder",
                found
                    .keys()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(found.pop_first().map(|(folder, mut shards)| {
        shards.sort();
        (folder, shards)
    }))
}

/// Winoground from Hugging Face `datasets`' cache, as CLIP_benchmark's `WinoGround` reads it
/// (`load_dataset("facebook/winoground")["test"]`): the shards' rows in order, each
/// `image_0`/`image_1` (an Image column: the encoded image's bytes, read in place from the
/// file; a row without bytes opens its `path`; decoded as `datasets` decodes, EXIF
/// orientation applied) with `caption_0`/`caption_1`.
fn read_hf(
    source: &Path,
    shards: &[PathBuf],
    skip_unreadable: bool,
) -> Result<SelectionSet, Error> {
    let mut set = SelectionSet {
        source: source.to_path_buf(),
        format: Format::Winoground,
        root: source.to_path_buf(),
        images: Vec::new(),
        captions: Vec::new(),
        items: Vec::new(),
        skipped: Vec::new(),
    };
    let mut caption_at: HashMap<String, usize> = HashMap::new();
    for shard in shards {
        let fail = |msg: String| Error::Path {
            path: shard.clone(),
            msg,
        };
        // Only the headers and the id, caption and offset buffers are read; the images are
        // read in place later, on the decode threads.
        let src = super::arrow::FileSource::open(shard).map_err(|e| fail(e.to_string()))?;
        let t = super::arrow::read(&src).map_err(|e| fail(format!("(Arrow) {e}")))?;
        let rows = t.rows() as usize;
        let ids = t.ints(&["id"]).ok();
        let col = |name: &str| t.strings(&[name]).map_err(&fail);
        let caps = [col("caption_0")?, col("caption_1")?];
        let mut imgs = Vec::new();
        for k in ["image_0", "image_1"] {
            let bytes = t.byte_ranges(&[k, "bytes"]).map_err(&fail)?;
            let paths = t.strings(&[k, "path"]).unwrap_or_default();
            imgs.push((bytes, paths));
        }
        let arc = std::sync::Arc::new(shard.clone());
        for row in 0..rows {
            let id = match ids.as_ref().and_then(|v| v.get(row).copied().flatten()) {
                Some(id) => id.to_string(),
                None => format!("row {row}"),
            };
            let mut images = Vec::with_capacity(2);
            let mut missing = None;
            for (k, (bytes, paths)) in imgs.iter().enumerate() {
                // Named by row (ids need not be unique): `SHARD.arrow/ROW/image_K`.
                let name = shard.join(format!("{row}/image_{k}"));
                match (
                    bytes.get(row).copied().flatten(),
                    paths.get(row).cloned().flatten(),
                ) {
                    (Some((offset, len)), _) => {
                        let mut s = super::Sample::file(name, 0);
                        s.member = Some(super::wds::Member {
                            tar: arc.clone(),
                            offset,
                            len,
                            pixels: None,
                            rows: None,
                            inflate: None,
                        });
                        s.decoder = super::Decoder::PilExifTransposed;
                        images.push(s);
                    }
                    (None, Some(p)) if Path::new(&p).is_file() => {
                        let mut s = super::Sample::file(PathBuf::from(p), 0);
                        s.decoder = super::Decoder::PilExifTransposed;
                        images.push(s);
                    }
                    (None, p) => {
                        missing = Some(format!(
                            "instance {id}: image_{k} has no bytes{}",
                            p.map(|p| format!(" and its path {p} does not exist"))
                                .unwrap_or_default()
                        ));
                        break;
                    }
                }
            }
            if let Some(why) = missing {
                if skip_unreadable {
                    set.skipped.push((id, why));
                    continue;
                }
                let hint = " (pass --skip-unreadable to leave such instances out)";
                return Err(fail(format!("{why}{hint}")));
            }
            let mut captions = Vec::with_capacity(2);
            for (k, c) in caps.iter().enumerate() {
                let c = c
                    .get(row)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| fail(format!("instance {id}: no caption_{k}")))?;
                let next = set.captions.len();
                let i = *caption_at.entry(c.clone()).or_insert(next);
                if i == next {
                    set.captions.push(c);
                }
                captions.push(i);
            }
            let first = set.images.len();
            set.images.extend(images);
            set.items.push(Item {
                id,
                images: vec![first, first + 1],
                captions,
            });
        }
    }
    if set.items.is_empty() {
        return Err(Error::Path {
            path: source.into(),
            msg: "no instance with all its images is left".into(),
        });
    }
    Ok(set)
}

/// SugarCREPE's seven tasks, in CLIP_benchmark's order: `TASK.json` each.
pub const SUGAR_CREPE_TASKS: &[&str] = &[
    "add_att",
    "add_obj",
    "replace_att",
    "replace_obj",
    "replace_rel",
    "swap_att",
    "swap_obj",
];

/// The files a `--captions` path stands for: a file itself; a Winoground download directory
/// its `examples.jsonl` (or `data/examples.jsonl`, the dataset repository's place); a
/// SugarCREPE directory (CLIP_benchmark's root: `TASK.json` files beside `val2017/`) each
/// task file it holds.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    for f in ["examples.jsonl", "data/examples.jsonl"] {
        if path.join(f).is_file() {
            return Ok(vec![path.join(f)]);
        }
    }
    if let Some((folder, _)) = hf_cache(path)? {
        return Ok(vec![folder]);
    }
    let tasks: Vec<PathBuf> = SUGAR_CREPE_TASKS
        .iter()
        .map(|t| path.join(format!("{t}.json")))
        .filter(|p| p.is_file())
        .collect();
    if tasks.is_empty() {
        return Err(Error::Path {
            path: path.into(),
            msg: format!(
                "a directory without Winoground's examples.jsonl or SugarCREPE's task files ({}.json)",
                SUGAR_CREPE_TASKS.join(".json, ")
            ),
        });
    }
    Ok(tasks)
}

/// Reads the file `path` (in `format`, detected when None). Image names are relative to `root`
/// (default: the file's folder; for SugarCREPE its `val2017/` when there is one, the layout
/// CLIP_benchmark downloads to). A missing image is an error naming the file and the
/// instance, or with `skip_unreadable` its instance is left out and listed.
pub fn read(
    path: &Path,
    format: Option<Format>,
    root: Option<&Path>,
    skip_unreadable: bool,
) -> Result<SelectionSet, Error> {
    // Winoground in Hugging Face `datasets`' cache: a shard, or the folder of the shards.
    if format.is_none_or(|f| f == Format::Winoground) {
        if path.extension().is_some_and(|e| e == "arrow") {
            return read_hf(path, &[path.to_path_buf()], skip_unreadable);
        }
        if path.is_dir() {
            if let Some((folder, shards)) = hf_cache(path)? {
                return read_hf(&folder, &shards, skip_unreadable);
            }
        }
    }
    let file = path.to_path_buf();
    let fail = |msg: String| Error::Path {
        path: file.clone(),
        msg,
    };
    let text = super::read_text(&file, "--captions")?;
    let text = text.as_str();
    let format = format.unwrap_or_else(|| detect(text));
    let instances = parse(text, format).map_err(|e| fail(format!("({}) {e}", format.name())))?;
    // CLIP_benchmark unpacks SugarCREPE's images into val2017/ beside the task files.
    let sub = (format == Format::SugarCrepe).then_some("val2017");
    let root = super::images_root(&file, root, sub)?;
    let mut set = SelectionSet {
        source: file.clone(),
        format,
        root: root.clone(),
        images: Vec::new(),
        captions: Vec::new(),
        items: Vec::new(),
        skipped: Vec::new(),
    };
    let mut image_at: HashMap<PathBuf, usize> = HashMap::new();
    let mut caption_at: HashMap<String, usize> = HashMap::new();
    let mut found: HashMap<&str, Option<super::Sample>> = HashMap::new();
    let zip = match format {
        Format::Winoground => ImagesZip::open(&root)?,
        _ => None,
    };
    'instances: for inst in &instances {
        let mut images = Vec::with_capacity(inst.images.len());
        for name in &inst.images {
            let p = found
                .entry(name.as_str())
                .or_insert_with(|| resolve(&root, name, format, &zip))
                .clone();
            let Some(p) = p else {
                let tried = match format {
                    Format::Winoground => ", nor NAME.png, images/NAME.png or in images.zip",
                    _ => "",
                };
                let why = format!(
                    "instance {}: image {} does not exist{tried}",
                    inst.id,
                    root.join(name).display()
                );
                if skip_unreadable {
                    set.skipped.push((inst.id.clone(), why));
                    continue 'instances;
                }
                let hint = " (pass --skip-unreadable to leave such instances out)";
                return Err(fail(format!("{why}{hint}")));
            };
            let next = set.images.len();
            let i = *image_at.entry(p.path.clone()).or_insert(next);
            if i == next {
                set.images.push(p);
            }
            images.push(i);
        }
        let captions = inst
            .captions
            .iter()
            .map(|c| {
                let next = set.captions.len();
                let i = *caption_at.entry(c.clone()).or_insert(next);
                if i == next {
                    set.captions.push(c.clone());
                }
                i
            })
            .collect();
        set.items.push(Item {
            id: inst.id.clone(),
            images,
            captions,
        });
    }
    if set.items.is_empty() {
        return Err(fail("no instance with all its images is left".into()));
    }
    Ok(set)
}

/// The distinct images and captions of several sets, each once (SugarCREPE's tasks share COCO
/// images), and per set where its own images and captions went.
pub struct Union {
    pub images: Vec<super::Sample>,
    pub captions: Vec<String>,
    /// Per set: its image positions, then its caption positions, in the union.
    pub maps: Vec<(Vec<usize>, Vec<usize>)>,
}

pub fn union(sets: &[&SelectionSet]) -> Union {
    let mut u = Union {
        images: Vec::new(),
        captions: Vec::new(),
        maps: Vec::with_capacity(sets.len()),
    };
    let mut image_at: HashMap<PathBuf, usize> = HashMap::new();
    let mut caption_at: HashMap<String, usize> = HashMap::new();
    for set in sets {
        let imgs = set
            .images
            .iter()
            .map(|s| {
                *image_at.entry(s.path.clone()).or_insert_with(|| {
                    u.images.push(s.clone());
                    u.images.len() - 1
                })
            })
            .collect();
        let caps = set
            .captions
            .iter()
            .map(|c| {
                *caption_at.entry(c.clone()).or_insert_with(|| {
                    u.captions.push(c.clone());
                    u.captions.len() - 1
                })
            })
            .collect();
        u.maps.push((imgs, caps));
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_formats_and_their_detection() {
        let sugar = r#"{"7": {"filename": "a.jpg", "caption": "a red car", "negative_caption": "a blue car"},
            "2": {"filename": "b.jpg", "caption": "x", "negative_caption": "y"},
            "7": {"filename": "c.jpg", "caption": "last", "negative_caption": "wins"}}"#;
        assert_eq!(detect(sugar), Format::SugarCrepe);
        let s = parse(sugar, Format::SugarCrepe).unwrap();
        // File order, a repeated key in its first place with its last value (json.load's dict).
        assert_eq!(
            s.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["7", "2"]
        );
        assert_eq!(s[0].images, ["c.jpg"]);
        assert_eq!(s[0].captions, ["last", "wins"]);

        let wino = "{\"id\": 0, \"image_0\": \"ex_0_img_0\", \"image_1\": \"ex_0_img_1\", \"caption_0\": \"an old person kisses a young person\", \"caption_1\": \"a young person kisses an old person\", \"tag\": \"Noun\"}\n\n{\"id\": \"x\", \"image_0\": \"p\", \"image_1\": \"q\", \"caption_0\": \"\", \"caption_1\": \"b\"}\n";
        assert_eq!(detect(wino), Format::Winoground);
        let w = parse(wino, Format::Winoground).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].id, "0");
        assert_eq!(w[0].images, ["ex_0_img_0", "ex_0_img_1"]);
        assert_eq!(w[1].id, "x");
        assert_eq!(w[1].captions, ["", "b"]);

        let ours = "{\"images\": [\"a.jpg\", \"b.jpg\"], \"captions\": [\"1\", \"2\", \"3\"]}\n{\"image\": \"c.jpg\", \"captions\": [\"4\"], \"id\": 9}\n";
        assert_eq!(detect(ours), Format::Jsonl);
        let o = parse(ours, Format::Jsonl).unwrap();
        assert_eq!(o[0].id, "line 1");
        assert_eq!(o[0].images.len(), 2);
        assert_eq!(o[1].id, "9");
        let list = r#"[{"image": "c.jpg", "captions": ["4", "5"]}]"#;
        assert_eq!(detect(list), Format::Jsonl);
        assert_eq!(parse(list, Format::Jsonl).unwrap()[0].id, "item 0");
    }

    #[test]
    fn malformed_instances_say_where_and_what() {
        let cases: &[(&str, Format, &str)] = &[
            ("{}", Format::SugarCrepe, "holds no instances"),
            ("[1]", Format::SugarCrepe, "not SugarCREPE's JSON object"),
            (
                r#"{"1": {"filename": "a.jpg", "caption": "x"}}"#,
                Format::SugarCrepe,
                "instance \"1\": no \"negative_caption\" string",
            ),
            (
                r#"{"1": {"filename": "", "caption": "x", "negative_caption": "y"}}"#,
                Format::SugarCrepe,
                "no \"filename\" (a non-empty string)",
            ),
            (
                "{\"image_0\": \"a\", \"image_1\": \"b\", \"caption_0\": \"x\"}",
                Format::Winoground,
                "line 1: no \"caption_1\" string",
            ),
            (
                "{\"images\": []}",
                Format::Jsonl,
                "\"images\" holds 0 items",
            ),
            (
                "{\"image\": \"a\", \"captions\": \"x\"}",
                Format::Jsonl,
                "\"captions\" is not a list",
            ),
            (
                "{\"image\": \"a\", \"captions\": [\"x\"]}\nnot json",
                Format::Jsonl,
                "line 2: not a JSON object",
            ),
            (
                "{\"captions\": [\"x\"]}",
                Format::Jsonl,
                "no \"images\" list",
            ),
            ("\n\n", Format::Jsonl, "holds no instances"),
        ];
        for (text, f, want) in cases {
            let e = parse(text, *f).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let many = format!(
            "{{\"image\": \"a\", \"captions\": [{}]}}",
            vec!["\"c\""; MAX_PER_INSTANCE + 1].join(",")
        );
        assert!(parse(&many, Format::Jsonl)
            .unwrap_err()
            .to_string()
            .contains("1 to 1024"));
    }

    #[test]
    fn read_shares_images_and_captions_and_finds_winogrounds_pngs() {
        let dir = std::env::temp_dir().join(format!("pyramidclip-sel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("images")).unwrap();
        for f in ["images/ex_0_img_0.png", "ex_0_img_1.png", "b.jpg"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let ex = dir.join("examples.jsonl");
        std::fs::write(
            &ex,
            "{\"id\": 0, \"image_0\": \"ex_0_img_0\", \"image_1\": \"ex_0_img_1\", \"caption_0\": \"a\", \"caption_1\": \"b\"}\n\
             {\"id\": 1, \"image_0\": \"b.jpg\", \"image_1\": \"ex_0_img_0\", \"caption_0\": \"b\", \"caption_1\": \"c\"}\n",
        )
        .unwrap();
        // The download directory stands for its examples.jsonl.
        assert_eq!(files(&dir).unwrap(), vec![ex.clone()]);
        let set = read(&ex, None, None, false).unwrap();
        assert_eq!(set.format, Format::Winoground);
        assert_eq!(set.images.len(), 3);
        assert_eq!(set.captions, ["a", "b", "c"]);
        assert_eq!(set.items[1].images, [2, 0]);
        assert_eq!(set.items[1].captions, [1, 2]);
        assert!(set.images[0].path.ends_with("images/ex_0_img_0.png"));

        std::fs::write(
            &ex,
            "{\"id\": 5, \"image_0\": \"gone\", \"image_1\": \"b.jpg\", \"caption_0\": \"a\", \"caption_1\": \"b\"}\n\
             {\"id\": 6, \"image_0\": \"b.jpg\", \"image_1\": \"ex_0_img_1\", \"caption_0\": \"a\", \"caption_1\": \"b\"}\n",
        )
        .unwrap();
        let e = read(&ex, None, None, false).unwrap_err().to_string();
        assert!(
            e.contains("examples.jsonl") && e.contains("instance 5: image"),
            "{e}"
        );
        let set = read(&ex, None, None, true).unwrap();
        assert_eq!(set.items.len(), 1);
        assert_eq!(set.skipped[0].0, "5");
        // SugarCREPE's images live in val2017/ beside its JSON when CLIP_benchmark put them there.
        std::fs::create_dir_all(dir.join("val2017")).unwrap();
        std::fs::write(dir.join("val2017/000.jpg"), b"x").unwrap();
        let sc = dir.join("swap_att.json");
        std::fs::write(
            &sc,
            r#"{"0": {"filename": "000.jpg", "caption": "a", "negative_caption": "b"}}"#,
        )
        .unwrap();
        let set = read(&sc, None, None, false).unwrap();
        assert_eq!(set.format, Format::SugarCrepe);
        // A directory of SugarCREPE task files (no examples.jsonl) stands for them, in order.
        std::fs::remove_file(&ex).unwrap();
        std::fs::copy(&sc, dir.join("add_obj.json")).unwrap();
        assert_eq!(files(&dir).unwrap(), [dir.join("add_obj.json"), sc.clone()]);
        let e = files(&dir.join("images")).unwrap_err().to_string();
        assert!(
            e.contains("examples.jsonl") && e.contains("swap_obj.json"),
            "{e}"
        );
        assert!(set.images[0].path.ends_with("val2017/000.jpg"));
        let e = read(&sc, None, Some(&dir.join("nope")), false).unwrap_err();
        assert!(e.to_string().contains("--images-root"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
