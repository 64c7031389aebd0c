//! Captioned image sets for retrieval, in the layouts people have: JSON lines
//! (`{"image": PATH, "captions": [..]}` or `"caption": TEXT`; also one JSON list of such
//! objects, LAVIS/BLIP's annotation files), the Karpathy-split Flickr text file CLIP_benchmark
//! reads (`NAME.jpg,CAPTION` lines under a header), COCO's captions annotation JSON and
//! Karpathy's own split files (`dataset_coco.json`, `dataset_flickr30k.json`: one split of
//! them), CLIP_benchmark's annotation files of its multilingual sets (`image_paths` +
//! `annotations`: Crossmodal-3600, XTD10, XTD200, Flickr30K-200, multilingual MS-COCO) and
//! Crossmodal-3600's own `captions.jsonl` (one language of it, as CLIP_benchmark builds its
//! file) and open_clip's training CSV (`--csv-img-key`/`--csv-caption-key` columns, tab-separated
//! by default). Images keep their first-seen order (COCO and Karpathy: the `images` order),
//! captions their file order. Parsing is pure (fuzzed); [`read`] adds the file system.

use super::Error;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Flickr,
    Coco,
    /// Karpathy's split files: `images` with `filepath`/`filename`, `split` and `sentences`.
    Karpathy,
    /// Webdataset shards: an image and `txt` (one caption per line) per sample.
    Wds,
    /// CLIP_benchmark's multilingual annotation file: `image_paths[i]` with `annotations[i]`
    /// (one caption, or a list), each pair its own image as there.
    ImagePaths,
    /// Crossmodal-3600's `captions.jsonl`: per line `image/key` and, per language, `caption`
    /// (a list); the first caption of one language, image `images/KEY.jpg`.
    Xm3600,
    /// open_clip's `CsvDataset`: a header naming the columns, one (image, caption) row each.
    Csv,
}

/// The columns of an open_clip CSV file and what separates them (open_clip's `--csv-img-key`,
/// `--csv-caption-key`, `--csv-separator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvColumns<'a> {
    /// None: a tab when the header has one (open_clip's default), else a comma.
    pub separator: Option<u8>,
    pub image: &'a str,
    pub caption: &'a str,
}

impl Default for CsvColumns<'_> {
    fn default() -> Self {
        CsvColumns {
            separator: None,
            image: "filepath",
            caption: "title",
        }
    }
}

/// The cells pandas' `read_csv` reads as missing (its default `na_values`); open_clip then
/// tokenizes `str(nan)`, so such a caption is the text `nan`.
const PANDAS_NA: &[&str] = &[
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

/// Which part of a file with several is read: a Karpathy file's or a webdataset layout's split,
/// Crossmodal-3600's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick<'a> {
    pub split: &'a str,
    pub language: &'a str,
    /// In a CLIP_benchmark dataset root holding several sets' files, CLIP_benchmark's name of
    /// the one to read.
    pub dataset: Option<&'a str>,
    /// An open_clip CSV file's columns.
    pub csv: CsvColumns<'a>,
    /// Read as open_clip's validation reads its data, with this many dataloader workers:
    /// image files opened as they are (its CSV dataset; CLIP_benchmark converts them to RGB
    /// before the resize); in webdataset shards each sample's whole `txt` one caption (not one
    /// per line), and shard `s` in worker `s % workers`'s stream (`split_by_worker`).
    pub open_clip_workers: Option<usize>,
}

/// CLIP_benchmark's default `--language`.
pub const DEFAULT_LANGUAGE: &str = "en";

impl Default for Pick<'_> {
    fn default() -> Self {
        Pick {
            split: DEFAULT_SPLIT,
            language: DEFAULT_LANGUAGE,
            dataset: None,
            csv: CsvColumns::default(),
            open_clip_workers: None,
        }
    }
}

/// The split a Karpathy file or a webdataset layout is read at unless one is named (the
/// papers' 1K Flickr30K and 5K MS-COCO test sets).
pub const DEFAULT_SPLIT: &str = "test";

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Flickr => "flickr",
            Format::Coco => "coco",
            Format::Karpathy => "karpathy",
            Format::Wds => "wds",
            Format::ImagePaths => "image-paths",
            Format::Xm3600 => "xm3600",
            Format::Csv => "csv",
        }
    }
}

/// One image and its captions, with where it was first named (a line, or a COCO image id).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub image: String,
    pub captions: Vec<String>,
    /// Each caption's position among the file's (image, caption) pairs, in the order a reader
    /// going row by row meets them (a grouped image's captions may lie far apart).
    pub rows: Vec<usize>,
    pub origin: String,
}

/// A parse failure: where (line N, image id N) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub at: String,
    pub msg: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}: {}", self.at, self.msg)
        }
    }
}

fn perr(at: impl Into<String>, msg: impl Into<String>) -> ParseError {
    ParseError {
        at: at.into(),
        msg: msg.into(),
    }
}

/// The format by extension (`.jsonl`, `.json`, `.tsv`, `.txt`/`.csv`: open_clip's CSV when the
/// header names `filepath` and `title`, else the Flickr text), else by content.
pub fn detect(path: &Path, text: &str) -> Format {
    // Crossmodal-3600's lines name their image by `image/key` (only a short first line is
    // parsed: a whole-file JSON document may be one line of megabytes).
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if first.len() <= 1 << 16 && first.contains("\"image/key\"") {
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(first) {
            if o.contains_key("image/key") {
                return Format::Xm3600;
            }
        }
    }
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("jsonl") | Some("ndjson") => return Format::Jsonl,
        Some("tsv") => return Format::Csv,
        Some("txt") | Some("csv") => {
            let cols = CsvColumns::default();
            let header = header_fields(first, separator(first, cols));
            let named = |k: &str| header.iter().any(|h| h == k);
            return if named(cols.image) && named(cols.caption) {
                Format::Csv
            } else {
                Format::Flickr
            };
        }
        _ => {}
    }
    if text.trim_start().starts_with('{') {
        return match serde_json::from_str::<Top>(text).ok() {
            Some(Top {
                image_paths: Some(_),
                ..
            }) => Format::ImagePaths,
            Some(Top {
                annotations: Some(_),
                ..
            }) => Format::Coco,
            Some(Top {
                images: Some(_), ..
            }) => Format::Karpathy,
            // One object: a JSON-lines file of one line.
            Some(_) => Format::Jsonl,
            None => {
                // Not one JSON document: JSON lines, unless its first line is no JSON either
                // and it names images (a whole-file document with an error: its parser says
                // where).
                let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                let head: String = text.chars().take(1 << 16).collect();
                if head.contains("\"image_paths\"") {
                    Format::ImagePaths
                } else if serde_json::from_str::<serde_json::Value>(first).is_ok()
                    || !head.contains("\"images\"")
                {
                    Format::Jsonl
                } else if head.contains("\"sentences\"") {
                    Format::Karpathy
                } else {
                    Format::Coco
                }
            }
        };
    }
    if text.trim_start().starts_with('[') {
        Format::Jsonl
    } else {
        Format::Flickr
    }
}

/// The top-level keys that tell the whole-file JSON layouts apart (values skipped unread:
/// `annotations` may come after megabytes of `images`, as in COCO's own files); JSON lines and
/// broken JSON do not parse as one.
#[derive(serde::Deserialize)]
struct Top {
    #[serde(default)]
    images: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    annotations: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    image_paths: Option<serde::de::IgnoredAny>,
}

/// Entries of a captions file's text in `format` (a Karpathy file's images of `pick.split`,
/// Crossmodal-3600's captions in `pick.language`).
pub fn parse(text: &str, format: Format, pick: Pick) -> Result<Vec<Entry>, ParseError> {
    let entries = match format {
        Format::Jsonl => parse_jsonl(text)?,
        Format::Flickr | Format::Wds => parse_flickr(text)?,
        Format::Coco => parse_coco(text)?,
        Format::Karpathy => parse_karpathy(text, pick.split)?,
        Format::ImagePaths => parse_image_paths(text)?,
        Format::Xm3600 => parse_xm3600(text, pick.language)?,
        Format::Csv => parse_csv(text, pick.csv)?,
    };
    if entries.is_empty() {
        return Err(perr("", "holds no captioned images"));
    }
    Ok(entries)
}

/// Groups (image, caption, origin) in first-seen image order.
struct Grouper {
    entries: Vec<Entry>,
    index: std::collections::HashMap<String, usize>,
    pairs: usize,
}

impl Grouper {
    fn new() -> Self {
        Self {
            entries: Vec::new(),
            index: Default::default(),
            pairs: 0,
        }
    }
    fn image(&mut self, image: &str, origin: String) -> usize {
        if let Some(&i) = self.index.get(image) {
            return i;
        }
        self.entries.push(Entry {
            image: image.to_string(),
            captions: Vec::new(),
            rows: Vec::new(),
            origin,
        });
        self.index.insert(image.to_string(), self.entries.len() - 1);
        self.entries.len() - 1
    }
    /// Adds the file's next (image, caption) pair to entry `i`.
    fn caption(&mut self, i: usize, caption: String) {
        self.entries[i].captions.push(caption);
        self.entries[i].rows.push(self.pairs);
        self.pairs += 1;
    }
}

fn parse_jsonl(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut g = Grouper::new();
    let mut add = |v: &serde_json::Value, at: String| -> Result<(), ParseError> {
        let (image, caps) = jsonl_entry(v, &at)?;
        let i = g.image(image, at);
        for c in caps {
            g.caption(i, c);
        }
        Ok(())
    };
    if text.trim_start().starts_with('[') {
        // One JSON list of the same objects (LAVIS/BLIP's `coco_karpathy_test.json`).
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            perr(
                format!("line {}", e.line()),
                format!("not a JSON list ({e})"),
            )
        })?;
        for (n, item) in v.as_array().into_iter().flatten().enumerate() {
            add(item, format!("item {n}"))?;
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            let at = format!("line {}", n + 1);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| perr(&at, format!("not a JSON object ({e})")))?;
            add(&v, at)?;
        }
    }
    Ok(g.entries)
}

/// The image and captions of one JSON-lines object: `"captions"` (a list) or `"caption"` (a
/// string, or a list as LAVIS writes it).
fn jsonl_entry<'a>(
    v: &'a serde_json::Value,
    at: &str,
) -> Result<(&'a str, Vec<String>), ParseError> {
    let obj = v
        .as_object()
        .ok_or_else(|| perr(at, "expected an object with \"image\" and \"captions\""))?;
    let image = obj
        .get("image")
        .and_then(|i| i.as_str())
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| perr(at, "no \"image\" path (a non-empty string)"))?;
    let (key, c) = match (obj.get("captions"), obj.get("caption")) {
        (Some(c), _) => ("captions", c),
        (None, Some(c)) => ("caption", c),
        (None, None) => return Err(perr(at, "no \"captions\" (or \"caption\")")),
    };
    let caps = match c {
        serde_json::Value::String(s) if key == "caption" => vec![s.clone()],
        serde_json::Value::Array(arr) => arr
            .iter()
            .map(|c| {
                c.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| perr(at, format!("\"{key}\" holds a non-string")))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(perr(
                at,
                format!("\"{key}\" is not a string or a list of strings"),
            ))
        }
    };
    if caps.is_empty() {
        return Err(perr(at, format!("image {image} has no captions")));
    }
    Ok((image, caps))
}

/// Where `NAME.<ext>,` ends in a Flickr line: the first image extension followed by a comma
/// (captions may hold commas; names hold none before their extension).
fn flickr_split(line: &str) -> Option<(&str, &str)> {
    let lower = line.to_ascii_lowercase();
    let mut best: Option<usize> = None;
    for ext in crate::preprocess::EXTENSIONS {
        let pat = format!(".{ext},");
        if let Some(p) = lower.find(&pat) {
            let end = p + pat.len() - 1;
            if best.is_none_or(|b| end < b) {
                best = Some(end);
            }
        }
    }
    let end = best?;
    Some((&line[..end], &line[end + 1..]))
}

fn parse_flickr(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut g = Grouper::new();
    let mut first = true;
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}", n + 1);
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let header = std::mem::replace(&mut first, false);
        match flickr_split(line) {
            Some((image, caption)) if !image.trim().is_empty() => {
                // The caption as CLIP_benchmark's reader takes it: the rest of the line, CSV
                // quotes included (the tokenizer cleans the whitespace either way).
                let caption = caption.trim().to_string();
                let i = g.image(image.trim(), at);
                g.caption(i, caption);
            }
            _ if header => {} // the `image,caption` header
            _ => {
                return Err(perr(
                    at,
                    "expected IMAGE.jpg,CAPTION (an image name with its extension, a comma, the caption)",
                ))
            }
        }
    }
    Ok(g.entries)
}

/// The separator of an open_clip CSV whose first line is `header`.
fn separator(header: &str, cols: CsvColumns) -> u8 {
    cols.separator
        .unwrap_or(if header.contains('\t') { b'\t' } else { b',' })
}

/// A header line's column names (unquoted as the CSV reader does).
fn header_fields(header: &str, sep: u8) -> Vec<String> {
    let mut r = csv::ReaderBuilder::new()
        .delimiter(sep)
        .has_headers(false)
        .from_reader(header.as_bytes());
    r.records()
        .next()
        .and_then(|r| r.ok())
        .map(|r| r.iter().map(str::to_string).collect())
        .unwrap_or_default()
}

/// open_clip's `CsvDataset`: pandas reads the file (header first, blank lines skipped), the
/// image column as the path and the caption column as the text; each row is one caption of
/// its image.
fn parse_csv(text: &str, cols: CsvColumns) -> Result<Vec<Entry>, ParseError> {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let sep = separator(first, cols);
    let mut r = csv::ReaderBuilder::new()
        .delimiter(sep)
        .has_headers(true)
        .from_reader(text.as_bytes());
    // The reader's own line count misses blank lines, and its byte offset may stand on the
    // line breaks before a record: count the breaks before the record's first character, from
    // where the last count stopped (records come in order; every row is counted once).
    let counted = std::cell::Cell::new((0usize, 1usize));
    let line = |p: Option<&csv::Position>| {
        let bytes = text.as_bytes();
        let at = p.map_or(0, |p| p.byte() as usize).min(bytes.len());
        let start = at
            + bytes[at..]
                .iter()
                .take_while(|&&b| b == b'\n' || b == b'\r')
                .count();
        let (from, n) = match counted.get() {
            (from, n) if from <= start => (from, n),
            _ => (0, 1),
        };
        let n = n + bytes[from..start].iter().filter(|&&b| b == b'\n').count();
        counted.set((start, n));
        format!("line {n}")
    };
    let shown = |s: u8| match s {
        b'\t' => "a tab".to_string(),
        s => format!("{:?}", s as char),
    };
    let header = r
        .headers()
        .map_err(|e| perr(line(None), format!("unreadable header: {e}")))?
        .clone();
    let column = |key: &str, flag: &str| {
        header.iter().position(|h| h == key).ok_or_else(|| {
            let names: Vec<&str> = header.iter().collect();
            perr(
                line(None),
                format!(
                    "no column {key:?} in the header (columns separated by {}: {}); {flag} names another",
                    shown(sep),
                    names.join(", ")
                ),
            )
        })
    };
    let image = column(cols.image, "--csv-img-key")?;
    let caption = column(cols.caption, "--csv-caption-key")?;
    let mut g = Grouper::new();
    for record in r.records() {
        let record = record.map_err(|e| match e.kind() {
            csv::ErrorKind::UnequalLengths {
                pos,
                expected_len,
                len,
            } => perr(
                line(pos.as_ref()),
                format!(
                    "{len} columns where the header has {expected_len} (separated by {})",
                    shown(sep)
                ),
            ),
            _ => perr(line(e.position()), format!("unreadable row: {e}")),
        })?;
        let at = line(record.position());
        let path = &record[image];
        if path.trim().is_empty() {
            return Err(perr(at, format!("no image in column {:?}", cols.image)));
        }
        let cell = &record[caption];
        let cell = if PANDAS_NA.contains(&cell) {
            "nan"
        } else {
            cell
        };
        let i = g.image(path, at);
        g.caption(i, cell.to_string());
    }
    Ok(g.entries)
}

/// A whole-file JSON document (`what` it should be, for errors) and its `images` list, taken
/// out of it.
fn json_with_images(
    text: &str,
    what: &str,
) -> Result<(serde_json::Value, Vec<serde_json::Value>), ParseError> {
    let mut v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| perr(format!("line {}", e.line()), format!("not {what} ({e})")))?;
    match v.get_mut("images").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(images)) => Ok((v, images)),
        _ => Err(perr("", format!("no \"images\" list (not {what})"))),
    }
}

fn parse_coco(text: &str) -> Result<Vec<Entry>, ParseError> {
    let (v, images) = json_with_images(text, "a COCO captions annotation file")?;
    let anns = v
        .get("annotations")
        .and_then(|i| i.as_array())
        .ok_or_else(|| {
            perr(
                "",
                "no \"annotations\" list (a COCO captions annotation file)",
            )
        })?;
    let mut entries = Vec::with_capacity(images.len());
    let mut by_id = std::collections::HashMap::new();
    for (n, im) in images.iter().enumerate() {
        let at = format!("images[{n}]");
        let id = json_id(im.get("id")).ok_or_else(|| perr(&at, "no integer \"id\""))?;
        let file = im
            .get("file_name")
            .and_then(|f| f.as_str())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| perr(&at, "no \"file_name\""))?;
        if by_id.insert(id, entries.len()).is_some() {
            return Err(perr(at, format!("image id {id} appears twice")));
        }
        entries.push(Entry {
            image: file.to_string(),
            captions: Vec::new(),
            rows: Vec::new(),
            origin: format!("image id {id}"),
        });
    }
    for (n, a) in anns.iter().enumerate() {
        let at = format!("annotations[{n}]");
        let id = json_id(a.get("image_id")).ok_or_else(|| perr(&at, "no integer \"image_id\""))?;
        let cap = a
            .get("caption")
            .and_then(|c| c.as_str())
            .ok_or_else(|| perr(&at, "no \"caption\" string"))?;
        let &i = by_id
            .get(&id)
            .ok_or_else(|| perr(&at, format!("image_id {id} is not in \"images\"")))?;
        entries[i].captions.push(cap.to_string());
        entries[i].rows.push(n);
    }
    Ok(entries)
}

/// Karpathy's `dataset_{coco,flickr8k,flickr30k}.json`: the images of `split` (`filepath` /
/// `filename`, as COCO's `val2014/...`; Flickr's have no `filepath`) with their sentences'
/// `raw` text, the captions as written (their `tokens` are lower-cased and stripped).
fn parse_karpathy(text: &str, split: &str) -> Result<Vec<Entry>, ParseError> {
    let (_, images) = json_with_images(text, "a Karpathy split file")?;
    let mut g = Grouper::new();
    let mut splits = std::collections::BTreeSet::new();
    for (n, im) in images.iter().enumerate() {
        let at = format!("images[{n}]");
        let this = im
            .get("split")
            .and_then(|s| s.as_str())
            .ok_or_else(|| perr(&at, "no \"split\" string"))?;
        splits.insert(this.to_string());
        if this != split {
            continue;
        }
        let name = im
            .get("filename")
            .and_then(|f| f.as_str())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| perr(&at, "no \"filename\""))?;
        let image = match im.get("filepath").and_then(|f| f.as_str()) {
            Some(dir) if !dir.is_empty() => format!("{dir}/{name}"),
            _ => name.to_string(),
        };
        let sentences = im
            .get("sentences")
            .and_then(|s| s.as_array())
            .ok_or_else(|| perr(&at, "no \"sentences\" list"))?;
        let caps = sentences
            .iter()
            .map(|c| {
                c.get("raw")
                    .and_then(|r| r.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| perr(&at, "a sentence without a \"raw\" string"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let i = g.image(&image, at);
        for c in caps {
            g.caption(i, c);
        }
    }
    if g.entries.is_empty() && !images.is_empty() {
        let have: Vec<_> = splits.into_iter().collect();
        return Err(perr(
            "",
            format!(
                "no image of split \"{split}\" (the file's splits: {}; --split chooses)",
                have.join(", ")
            ),
        ));
    }
    Ok(g.entries)
}

/// CLIP_benchmark's annotation file of a multilingual retrieval set, as its `create_annotation_file`
/// writes it: `image_paths[i]` (as the run that wrote it saw them) with `annotations[i]`, one
/// caption. Each pair is one image, as CLIP_benchmark's dataset has it (a path named twice is
/// two images). A list of captions is taken too.
fn parse_image_paths(text: &str) -> Result<Vec<Entry>, ParseError> {
    let what = "CLIP_benchmark's image_paths/annotations file";
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| perr(format!("line {}", e.line()), format!("not {what} ({e})")))?;
    let list = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_array())
            .ok_or_else(|| perr("", format!("no \"{k}\" list (not {what})")))
    };
    let (paths, anns) = (list("image_paths")?, list("annotations")?);
    if paths.len() != anns.len() {
        return Err(perr(
            "",
            format!(
                "{} image_paths but {} annotations (they are read in pairs)",
                paths.len(),
                anns.len()
            ),
        ));
    }
    let mut entries = Vec::with_capacity(paths.len());
    let mut pairs = 0;
    for (n, (p, a)) in paths.iter().zip(anns).enumerate() {
        let image = p
            .as_str()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| perr(format!("image_paths[{n}]"), "not a non-empty string"))?;
        let at = format!("annotations[{n}]");
        let captions = match a {
            serde_json::Value::String(c) => vec![c.clone()],
            serde_json::Value::Array(cs) if !cs.is_empty() => cs
                .iter()
                .map(|c| {
                    c.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| perr(&at, "holds a non-string"))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(perr(at, "not a caption (a string, or a list of strings)")),
        };
        let first = pairs;
        pairs += captions.len();
        entries.push(Entry {
            image: image.to_string(),
            rows: (first..pairs).collect(),
            captions,
            origin: format!("image_paths[{n}]"),
        });
    }
    Ok(entries)
}

/// Crossmodal-3600's `captions.jsonl` in one language, as CLIP_benchmark's
/// `create_annotation_file` reads it: per line, image `KEY.jpg` (`image/key`) with the first
/// of the language's captions.
fn parse_xm3600(text: &str, language: &str) -> Result<Vec<Entry>, ParseError> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| perr(&at, format!("not a JSON object ({e})")))?;
        let key = v
            .get("image/key")
            .and_then(|k| k.as_str())
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| perr(&at, "no \"image/key\" string"))?;
        let caption = match v.get(language) {
            None => {
                return Err(perr(
                    &at,
                    format!("image {key} has no captions in language \"{language}\" (--language)"),
                ))
            }
            Some(l) => l
                .get("caption")
                .and_then(|c| c.as_array())
                .and_then(|c| c.first())
                .and_then(|c| c.as_str())
                .ok_or_else(|| {
                    perr(
                        &at,
                        format!("\"{language}\" has no \"caption\" list of strings"),
                    )
                })?,
        };
        entries.push(Entry {
            image: format!("{key}.jpg"),
            captions: vec![caption.to_string()],
            rows: vec![entries.len()],
            origin: at,
        });
    }
    Ok(entries)
}

fn json_id(v: Option<&serde_json::Value>) -> Option<i64> {
    let v = v?;
    v.as_i64()
        .or_else(|| v.as_u64().and_then(|u| i64::try_from(u).ok()))
}

/// COCO's image folders, as its zips unpack.
const COCO_FOLDERS: &[&str] = &["val2014", "val2017", "train2014", "train2017"];

/// A captioned set ready to encode: images (paths resolved) and captions, each caption with the
/// position of its image.
#[derive(Debug, Clone)]
pub struct CaptionSet {
    pub source: PathBuf,
    pub format: Format,
    /// The split read (Karpathy files and webdataset layouts have several).
    pub split: Option<String>,
    pub root: PathBuf,
    /// The images (files, or members of webdataset shards).
    pub images: Vec<super::Sample>,
    pub captions: Vec<String>,
    pub caption_image: Vec<usize>,
    /// Where each caption's (image, caption) pair stands in the file: sorting by it gives the
    /// pairs in the order open_clip's row-by-row readers meet them (`captions` is grouped by
    /// image). Pairs left out leave gaps. Counted within the pair's `caption_stream`.
    pub caption_row: Vec<usize>,
    /// The open_clip dataloader worker whose share holds each pair: 0 but for webdataset
    /// shards read with several workers (`Pick::open_clip_workers`).
    pub caption_stream: Vec<usize>,
    /// Images left out with `skip_unreadable` (missing, or without captions) and why.
    pub skipped: Vec<(PathBuf, String)>,
    /// The captions' language, where the file says (Crossmodal-3600's read language, the
    /// `-LANG` of a CLIP_benchmark `image_paths` file's name, the language a dataset root's
    /// file was picked by).
    pub language: Option<String>,
    /// CLIP_benchmark's name of the set, when a dataset root's file was picked by it.
    pub dataset: Option<String>,
}

impl CaptionSet {
    /// The dataset's name when none is given: CLIP_benchmark's for its multilingual sets
    /// (`crossmodal3600`, `xtd10`, `flickr30k-200`, ...), else the file's name.
    pub fn default_name(&self) -> String {
        if let Some(d) = &self.dataset {
            return d.clone();
        }
        let stem = self
            .source
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "retrieval".into());
        match self.format {
            Format::Xm3600 => "crossmodal3600".into(),
            Format::ImagePaths => match stem.rsplit_once('-') {
                Some(("crossmodal3600_captions", _)) => "crossmodal3600".into(),
                Some(("flickr30k_200", _)) => "flickr30k-200".into(),
                Some((name, _)) if !name.is_empty() => name.into(),
                _ => stem,
            },
            _ => stem,
        }
    }
}

/// The language in a CLIP_benchmark annotation file's name (`xtd10-en.json`: `en`).
fn language_of(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let (_, lang) = stem.rsplit_once('-')?;
    (!lang.is_empty() && lang.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| lang.to_string())
}

/// Reads `path` (in `format`, detected when None). Image paths are relative to `root`
/// (default: the file's folder; see [`relocate`] for CLIP_benchmark's `image_paths` files). A
/// missing image or an image without captions is an error naming the file and where it is
/// named, or with `skip_unreadable` left out and listed.
pub fn read(
    path: &Path,
    format: Option<Format>,
    pick: Pick,
    root: Option<&Path>,
    skip_unreadable: bool,
) -> Result<CaptionSet, Error> {
    let split = pick.split;
    if format.is_none_or(|f| f == Format::Wds) {
        match super::wds::resolve(path, split).transpose()? {
            Some((shards, layout)) => {
                let mut set = read_wds(path, &shards, pick.open_clip_workers, skip_unreadable)?;
                set.split = layout.then(|| split.to_string());
                return Ok(set);
            }
            None if format == Some(Format::Wds) => {
                return Err(Error::Path {
                    path: path.into(),
                    msg: "--format wds: neither a webdataset layout (DIR/test/nshards.txt) nor shards (.tar, {a..b})".into(),
                })
            }
            None => {}
        }
    }
    // A directory: CLIP_benchmark's dataset root, holding its annotation file.
    let chosen = path.is_dir().then(|| in_root(path, pick)).transpose()?;
    let path = chosen.as_ref().map_or(path, |c| c.file.as_path());
    let fail = |msg: String| Error::Path {
        path: path.into(),
        msg,
    };
    let text = super::read_text(path, "--captions")?;
    let text = text.as_str();
    let format = format.unwrap_or_else(|| detect(path, text));
    let entries =
        parse(text, format, pick).map_err(|e| fail(format!("({}) {e}", format.name())))?;
    // A COCO annotation file beside the unpacked `val2014/` (CLIP_benchmark's mscoco_captions
    // root) names its images without the folder: look there when the first is not beside it.
    let sub = (format == Format::Coco && root.is_none())
        .then(|| {
            let folder = path.parent().unwrap_or(Path::new(""));
            let first = &entries.first()?.image;
            if folder.join(first).is_file() {
                return None;
            }
            COCO_FOLDERS
                .iter()
                .copied()
                .find(|d| folder.join(d).join(first).is_file())
        })
        .flatten()
        // Crossmodal-3600's images unpack into `images/` beside `captions.jsonl`.
        .or((format == Format::Xm3600).then_some("images"));
    let given = root;
    let root = super::images_root(path, root, sub)?;
    let place = match (format, entries.first()) {
        // open_clip opens a CSV's paths as written (from where it runs).
        (Format::ImagePaths | Format::Csv, Some(first)) => {
            relocate(&root, given.is_some(), &first.image)
        }
        _ => Place::Under(0),
    };
    // CLIP_benchmark's retrieval sets open each image with `.convert("RGB")` before the
    // transforms; open_clip's CSV dataset opens it as it is (resized in its own mode).
    let decoder = match pick.open_clip_workers {
        Some(_) => super::Decoder::Pil,
        None => super::Decoder::PilRgb,
    };
    let mut set = CaptionSet {
        source: path.into(),
        format,
        split: (format == Format::Karpathy || chosen.as_ref().is_some_and(|c| c.by_split))
            .then(|| split.to_string()),
        root: root.clone(),
        images: Vec::new(),
        captions: Vec::new(),
        caption_image: Vec::new(),
        caption_row: Vec::new(),
        caption_stream: Vec::new(),
        skipped: Vec::new(),
        language: match format {
            Format::Xm3600 => Some(pick.language.to_string()),
            Format::ImagePaths => language_of(path),
            _ => chosen.as_ref().map(|_| pick.language.to_string()),
        },
        dataset: chosen.as_ref().map(|c| c.dataset.to_string()),
    };
    for e in entries {
        let img = place.resolve(&root, &e.image);
        let problem = if e.captions.is_empty() {
            Some("has no captions")
        } else if !img.is_file() {
            Some("does not exist")
        } else {
            None
        };
        if let Some(p) = problem {
            let why = format!("{}: image {} {p}", e.origin, img.display());
            if skip_unreadable {
                set.skipped.push((img, why));
                continue;
            }
            let hint = " (pass --skip-unreadable to leave such images out)";
            return Err(fail(format!("{why}{hint}")));
        }
        let i = set.images.len();
        set.images.push(super::Sample {
            decoder,
            ..super::Sample::file(img, 0)
        });
        for (c, row) in e.captions.into_iter().zip(e.rows) {
            set.captions.push(c);
            set.caption_image.push(i);
            set.caption_row.push(row);
            set.caption_stream.push(0);
        }
    }
    if set.images.is_empty() {
        return Err(fail("no image with captions is left".into()));
    }
    Ok(set)
}

/// The annotation file picked in a CLIP_benchmark dataset root.
struct Chosen {
    file: PathBuf,
    dataset: &'static str,
    /// Picked by `--split` (the Karpathy-split text and JSON files).
    by_split: bool,
}

/// CLIP_benchmark's retrieval sets and the annotation file each reads from its `--dataset_root`
/// (for `split` and `language`, as its builder names them), in its order.
fn root_files(split: &str, language: &str) -> Vec<(&'static str, String, bool)> {
    let mut v = Vec::new();
    for set in ["flickr30k", "flickr8k"] {
        match language {
            "en" => v.push((set, format!("{set}_{split}_karpathy.txt"), true)),
            "zh" => v.push((set, format!("{set}_{split}_zh.txt"), true)),
            _ => {}
        }
    }
    if language == "en" {
        v.push((
            "mscoco_captions",
            format!("coco_{split}_karpathy.json"),
            true,
        ));
    }
    v.push((
        "multilingual_mscoco_captions",
        format!("multilingual_mscoco_captions-{language}.json"),
        false,
    ));
    v.push((
        "crossmodal3600",
        format!("crossmodal3600_captions-{language}.json"),
        false,
    ));
    // Before CLIP_benchmark writes its file: Crossmodal-3600 as downloaded.
    v.push(("crossmodal3600", "xm3600/captions.jsonl".into(), false));
    for set in ["xtd10", "xtd200"] {
        v.push((set, format!("{set}-{language}.json"), false));
    }
    v.push((
        "flickr30k-200",
        format!("flickr30k_200-{language}.json"),
        false,
    ));
    v
}

/// The annotation file of a CLIP_benchmark dataset root: the one set's file there, or
/// `pick.dataset`'s.
fn in_root(dir: &Path, pick: Pick) -> Result<Chosen, Error> {
    let fail = |msg: String| Error::Path {
        path: dir.into(),
        msg,
    };
    let all = root_files(pick.split, pick.language);
    // A name that is none of CLIP_benchmark's sets only names the output.
    let by = pick
        .dataset
        .filter(|d| all.iter().any(|(set, ..)| set == d));
    let wanted: Vec<_> = all
        .iter()
        .filter(|(set, ..)| by.is_none_or(|d| d == *set))
        .collect();
    let mut found: Vec<_> = wanted
        .iter()
        .filter(|(_, f, _)| dir.join(f).is_file())
        .collect();
    // Crossmodal-3600's own file only stands in when CLIP_benchmark's is not there.
    if found
        .iter()
        .any(|(_, f, _)| f.starts_with("crossmodal3600_captions-"))
    {
        found.retain(|(_, f, _)| f != "xm3600/captions.jsonl");
    }
    match found.as_slice() {
        [(set, f, by_split)] => Ok(Chosen {
            file: dir.join(f),
            dataset: set,
            by_split: *by_split,
        }),
        [] => {
            let names: Vec<&str> = wanted.iter().map(|(_, f, _)| f.as_str()).collect();
            Err(fail(format!(
                "a directory without a webdataset layout or CLIP_benchmark's annotation file (looked for {})",
                names.join(", ")
            )))
        }
        several => {
            let names: Vec<String> = several
                .iter()
                .map(|(set, f, _)| format!("{f} ({set})"))
                .collect();
            Err(fail(format!(
                "holds several sets' annotation files: {}; --dataset NAME picks one, or name the file",
                names.join(", ")
            )))
        }
    }
}

/// Where a file's image paths lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// As written: absolute, or relative to the working directory (CLIP_benchmark opens them so).
    AsWritten,
    /// Under the images root (joined as written for 0: an absolute path stays itself), less
    /// the path's first N named components.
    Under(usize),
}

impl Place {
    fn resolve(self, root: &Path, image: &str) -> PathBuf {
        match self {
            Place::AsWritten => PathBuf::from(image),
            Place::Under(0) => root.join(image),
            Place::Under(n) => root.join(named(image).skip(n).collect::<PathBuf>()),
        }
    }
}

/// A path's named components (no root, no `.`; `..` kept).
fn named(image: &str) -> impl Iterator<Item = std::path::Component<'_>> {
    Path::new(image).components().filter(|c| {
        !matches!(
            c,
            std::path::Component::RootDir
                | std::path::Component::Prefix(_)
                | std::path::Component::CurDir
        )
    })
}

/// Where a CLIP_benchmark `image_paths` file's images are, judged by its first: CLIP_benchmark
/// writes the paths as its run saw them (`ROOT/xm3600/images/KEY.jpg`, ROOT as given to it), so
/// they hold where that run was started from. When the first is not there, or `--images-root`
/// was given, its trailing part under `root` (the file's folder, which is CLIP_benchmark's ROOT,
/// or `--images-root`) is looked for, longest first: a dataset root that moved, or was named
/// from another directory, still finds `xm3600/images/KEY.jpg` beside the file.
fn relocate(root: &Path, given: bool, first: &str) -> Place {
    if !given && Path::new(first).is_file() {
        return Place::AsWritten;
    }
    let n = named(first).count();
    (0..n)
        .map(Place::Under)
        .find(|p| p.resolve(root, first).is_file())
        .unwrap_or(if given {
            Place::Under(0)
        } else {
            Place::AsWritten
        })
}

/// A captioned set from webdataset shards (`txt` members: one caption per line, or each whole
/// with `open_clip_workers`, see [`Pick`]).
fn read_wds(
    source: &Path,
    shards: &[PathBuf],
    open_clip_workers: Option<usize>,
    skip_unreadable: bool,
) -> Result<CaptionSet, Error> {
    use super::wds::Txt;
    let wants = super::wds::Wants {
        classes: None,
        txt: match open_clip_workers {
            Some(_) => Txt::Whole,
            None => Txt::Lines,
        },
        multilabel: false,
    };
    let workers = open_clip_workers.unwrap_or(1).max(1);
    let ix = super::wds::index(shards, wants, skip_unreadable)?;
    let mut set = CaptionSet {
        source: source.into(),
        format: Format::Wds,
        split: None,
        root: source.into(),
        images: Vec::with_capacity(ix.samples.len()),
        captions: Vec::new(),
        caption_image: Vec::new(),
        caption_row: Vec::new(),
        caption_stream: Vec::new(),
        skipped: ix
            .skipped
            .into_iter()
            .map(|(k, why)| (PathBuf::from(k), why))
            .collect(),
        language: None,
        dataset: None,
    };
    let mut rows = vec![0usize; workers];
    for (i, (smp, caps)) in ix.samples.into_iter().zip(ix.captions).enumerate() {
        set.images.push(smp);
        let stream = ix.shard_of[i] % workers;
        for c in caps {
            set.caption_row.push(rows[stream]);
            set.caption_stream.push(stream);
            rows[stream] += 1;
            set.captions.push(c);
            set.caption_image.push(i);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(split: &str) -> Pick<'_> {
        Pick {
            split,
            ..Pick::default()
        }
    }

    fn caps(e: &[Entry]) -> Vec<(String, Vec<String>)> {
        e.iter()
            .map(|e| (e.image.clone(), e.captions.clone()))
            .collect()
    }

    #[test]
    fn the_formats_group_the_same_set() {
        let jsonl = r#"{"image": "a.jpg", "captions": ["a dog, running", "a pet"]}
{"image": "b.jpg", "caption": "a cat"}
{"image": "a.jpg", "caption": "third"}
"#;
        // CLIP_benchmark's Flickr reader splits at `.jpg,` and keeps the rest as it is.
        let flickr = "image,caption\na.jpg,a dog, running\na.jpg,a pet\nb.jpg,a cat\na.jpg,third\n";
        let coco = r#"{"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}],
            "annotations": [{"image_id": 7, "caption": "a dog, running"}, {"image_id": 3, "caption": "a cat"},
                            {"image_id": 7, "caption": "a pet"}, {"image_id": 7, "caption": "third"}]}"#;
        // LAVIS/BLIP's annotation files: one JSON list, "caption" a list.
        let list = r#"[{"image": "a.jpg", "caption": ["a dog, running", "a pet"]},
            {"image": "b.jpg", "caption": "a cat"}, {"image": "a.jpg", "captions": ["third"]}]"#;
        // Karpathy's split file: the test split only, `filepath/filename`, raw sentences.
        let karpathy = r#"{"images": [
            {"filepath": "val", "filename": "z.jpg", "split": "train", "sentences": [{"raw": "no"}]},
            {"filepath": "", "filename": "a.jpg", "split": "test", "sentences": [
                {"tokens": ["a", "dog", "running"], "raw": "a dog, running"}, {"raw": "a pet"},
                {"raw": "third"}]},
            {"filename": "b.jpg", "split": "test", "sentences": [{"raw": "a cat"}]}],
            "dataset": "flickr30k"}"#;
        let want: Vec<(String, Vec<String>)> = vec![
            (
                "a.jpg".into(),
                vec!["a dog, running".into(), "a pet".into(), "third".into()],
            ),
            ("b.jpg".into(), vec!["a cat".into()]),
        ];
        // Where each pair stands in the file (open_clip's row order, `--pairing rows`).
        for (text, format, rows) in [
            (jsonl, Format::Jsonl, [vec![0, 1, 3], vec![2]]),
            (flickr, Format::Flickr, [vec![0, 1, 3], vec![2]]),
            (coco, Format::Coco, [vec![0, 2, 3], vec![1]]),
            (list, Format::Jsonl, [vec![0, 1, 3], vec![2]]),
            (karpathy, Format::Karpathy, [vec![0, 1, 2], vec![3]]),
        ] {
            let entries = parse(text, format, Pick::default()).unwrap();
            assert_eq!(caps(&entries), want, "{format:?}");
            let got: Vec<Vec<usize>> = entries.iter().map(|e| e.rows.clone()).collect();
            assert_eq!(got, rows, "{format:?}");
            assert_eq!(detect(Path::new("x"), text), format);
            assert_eq!(detect(Path::new("x.json"), text), format);
        }
        // COCO's own files put `annotations` after megabytes of `images`, one line or
        // pretty-printed; a one-line JSON-lines file is one object too.
        let images: Vec<String> = (0..3000)
            .map(|i| format!(r#"{{"license": 3, "file_name": "COCO_{i:012}.jpg", "id": {i}}}"#))
            .collect();
        let real = format!(
            r#"{{"info": {{"year": 2014}}, "images": [{}], "licenses": [], "annotations": [{{"image_id": 0, "id": 1, "caption": "x"}}]}}"#,
            images.join(", ")
        );
        assert!(real.len() > 1 << 17);
        assert_eq!(detect(Path::new("c.json"), &real), Format::Coco);
        assert_eq!(
            detect(Path::new("c"), &real.replace(", ", ",\n  ")),
            Format::Coco
        );
        let one = r#"{"image": "a.jpg", "captions": ["x"]}"#;
        assert_eq!(detect(Path::new("c.json"), one), Format::Jsonl);
        // Broken whole-file documents go to the parser they look like, which says where.
        let broken = real.replacen("\"id\": 7}", "\"id\": 7", 1);
        assert_eq!(detect(Path::new("c.json"), &broken), Format::Coco);
        let broken_k = karpathy.replacen("}]}", "}]", 1);
        assert_eq!(detect(Path::new("k.json"), &broken_k), Format::Karpathy);
        let train = parse(karpathy, Format::Karpathy, split("train")).unwrap();
        assert_eq!(
            caps(&train),
            [("val/z.jpg".to_string(), vec!["no".to_string()])]
        );
        let e = parse(karpathy, Format::Karpathy, split("restval")).unwrap_err();
        assert!(
            e.msg.contains("split \"restval\"") && e.msg.contains("test, train"),
            "{e}"
        );
        // Captions with ".jpg," inside still split at the first one.
        let e = parse("x.jpg,see y.jpg, then\n", Format::Flickr, Pick::default()).unwrap();
        assert_eq!(e[0].captions, ["see y.jpg, then"]);
    }

    #[test]
    fn bad_lines_are_named() {
        let bad = |text: &str, format| parse(text, format, Pick::default()).unwrap_err();
        let e = bad(
            "{\"image\": \"a.jpg\", \"captions\": [\"x\"]}\n{oops\n",
            Format::Jsonl,
        );
        assert_eq!(e.at, "line 2");
        let e = bad("{\"image\": \"a.jpg\", \"captions\": []}\n", Format::Jsonl);
        assert!(e.msg.contains("no captions"), "{e}");
        let e = bad("[{\"image\": \"a.jpg\", \"caption\": 3}]", Format::Jsonl);
        assert_eq!(e.at, "item 0");
        let e = bad("image,caption\na.jpg,x\nno comma here\n", Format::Flickr);
        assert_eq!(e.at, "line 3");
        let e = bad(
            r#"{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}"#,
            Format::Coco,
        );
        assert_eq!(e.at, "annotations[0]");
        let e = bad(
            r#"{"images": [{"filename": "a.jpg", "split": "test", "sentences": [{"tokens": []}]}]}"#,
            Format::Karpathy,
        );
        assert_eq!(e.at, "images[0]");
        assert!(e.msg.contains("\"raw\""), "{e}");
        bad("", Format::Jsonl);
        bad("image,caption\n", Format::Flickr);
    }

    #[test]
    fn a_coco_file_beside_val2014_reads_its_images_there() {
        let dir = std::env::temp_dir().join(format!("pyramidclip-coco-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("val2014")).unwrap();
        std::fs::write(dir.join("val2014/COCO_val2014_1.jpg"), b"x").unwrap();
        let ann = dir.join("coco_test_karpathy.json");
        std::fs::write(
            &ann,
            r#"{"images": [{"id": 1, "file_name": "COCO_val2014_1.jpg"}],
                "annotations": [{"image_id": 1, "caption": "a cat"}]}"#,
        )
        .unwrap();
        let set = read(&ann, None, Pick::default(), None, false).unwrap();
        assert_eq!(set.root, dir.join("val2014"));
        // Beside the file, the image is read there; --images-root always wins.
        std::fs::write(dir.join("COCO_val2014_1.jpg"), b"x").unwrap();
        assert_eq!(
            read(&ann, None, Pick::default(), None, false).unwrap().root,
            dir
        );
        let given = dir.join("val2014");
        let set = read(&ann, None, Pick::default(), Some(&given), false).unwrap();
        assert_eq!(set.root, given);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn clip_benchmark_multilingual_files_are_read_pair_by_pair() {
        let paths = r#"{"image_paths": ["r/x/images/a.jpg", "r/x/images/b.jpg", "r/x/images/a.jpg"],
            "annotations": ["one", "", ["two", "three"]], "indicies": [0, 1, 2]}"#;
        assert_eq!(
            detect(Path::new("xtd10-en.json"), paths),
            Format::ImagePaths
        );
        // A path named twice is two images, as in CLIP_benchmark's dataset.
        assert_eq!(
            caps(&parse(paths, Format::ImagePaths, Pick::default()).unwrap()),
            [
                ("r/x/images/a.jpg".to_string(), vec!["one".to_string()]),
                ("r/x/images/b.jpg".into(), vec!["".into()]),
                (
                    "r/x/images/a.jpg".into(),
                    vec!["two".into(), "three".into()]
                ),
            ]
        );
        let e = parse(
            r#"{"image_paths": ["a.jpg"], "annotations": []}"#,
            Format::ImagePaths,
            Pick::default(),
        )
        .unwrap_err();
        assert!(e.msg.contains("1 image_paths but 0 annotations"), "{e}");
        let e = parse(
            r#"{"image_paths": ["a.jpg"], "annotations": [3]}"#,
            Format::ImagePaths,
            Pick::default(),
        )
        .unwrap_err();
        assert_eq!(e.at, "annotations[0]");

        let xm = concat!(
            r#"{"image/key": "k1", "image/locale": "en", "en": {"caption": ["first", "second"]}, "de": {"caption": ["erste"]}}"#,
            "\n",
            r#"{"image/key": "k2", "en": {"caption": ["third"]}}"#,
            "\n"
        );
        for name in ["captions.jsonl", "captions.json", "x"] {
            assert_eq!(detect(Path::new(name), xm), Format::Xm3600);
        }
        assert_eq!(
            caps(&parse(xm, Format::Xm3600, Pick::default()).unwrap()),
            [
                ("k1.jpg".to_string(), vec!["first".to_string()]),
                ("k2.jpg".into(), vec!["third".into()])
            ]
        );
        let de = Pick {
            language: "de",
            ..Pick::default()
        };
        let e = parse(xm, Format::Xm3600, de).unwrap_err();
        assert_eq!(e.at, "line 2");
        assert!(e.msg.contains("\"de\""), "{e}");

        let set = |format, file: &str| CaptionSet {
            source: PathBuf::from(file),
            format,
            split: None,
            root: PathBuf::new(),
            images: vec![],
            captions: vec![],
            caption_image: vec![],
            caption_row: vec![],
            caption_stream: vec![],
            skipped: vec![],
            language: None,
            dataset: None,
        };
        for (file, name, lang) in [
            (
                "r/crossmodal3600_captions-en.json",
                "crossmodal3600",
                Some("en"),
            ),
            ("r/xtd10-de.json", "xtd10", Some("de")),
            ("xtd200-eng_Latn.json", "xtd200", Some("eng_Latn")),
            (
                "flickr30k_200-fra_Latn.json",
                "flickr30k-200",
                Some("fra_Latn"),
            ),
            (
                "multilingual_mscoco_captions-en.json",
                "multilingual_mscoco_captions",
                Some("en"),
            ),
            ("mine.json", "mine", None),
        ] {
            assert_eq!(set(Format::ImagePaths, file).default_name(), name);
            assert_eq!(language_of(Path::new(file)).as_deref(), lang, "{file}");
        }
        assert_eq!(
            set(Format::Xm3600, "captions.jsonl").default_name(),
            "crossmodal3600"
        );
        assert_eq!(
            set(Format::Jsonl, "d/flickr-en.jsonl").default_name(),
            "flickr-en"
        );
    }

    #[test]
    fn a_clip_benchmark_dataset_root_names_its_file() {
        let dir = std::env::temp_dir().join(format!("pyramidclip-cbroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("xm3600")).unwrap();
        let pick = |dataset, split, language| {
            in_root(
                &dir,
                Pick {
                    split,
                    language,
                    dataset,
                    ..Pick::default()
                },
            )
            .map(|c| {
                (
                    c.file.strip_prefix(&dir).unwrap().display().to_string(),
                    c.dataset,
                    c.by_split,
                )
            })
            .map_err(|e| e.to_string())
        };
        let e = pick(None, "test", "en").unwrap_err();
        assert!(
            e.contains("flickr30k_test_karpathy.txt") && e.contains("xtd10-en.json"),
            "{e}"
        );
        std::fs::write(dir.join("xm3600/captions.jsonl"), "").unwrap();
        assert_eq!(
            pick(None, "test", "en").unwrap(),
            ("xm3600/captions.jsonl".into(), "crossmodal3600", false)
        );
        // CLIP_benchmark's own file, once written, is read instead.
        std::fs::write(dir.join("crossmodal3600_captions-en.json"), "").unwrap();
        assert_eq!(
            pick(None, "test", "en").unwrap().0,
            "crossmodal3600_captions-en.json"
        );
        // The raw file serves any language the written one is not there for.
        assert_eq!(pick(None, "test", "de").unwrap().0, "xm3600/captions.jsonl");
        std::fs::write(dir.join("flickr30k_test_karpathy.txt"), "").unwrap();
        std::fs::write(dir.join("flickr30k_val_karpathy.txt"), "").unwrap();
        let e = pick(None, "test", "en").unwrap_err();
        assert!(e.contains("several") && e.contains("(flickr30k)"), "{e}");
        assert_eq!(
            pick(Some("flickr30k"), "val", "en").unwrap(),
            ("flickr30k_val_karpathy.txt".into(), "flickr30k", true)
        );
        // Another name only names the output: it does not narrow the choice.
        assert!(pick(Some("mine"), "test", "en")
            .unwrap_err()
            .contains("several"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn image_paths_are_found_where_clip_benchmark_left_them_or_under_the_root() {
        let dir = std::env::temp_dir().join(format!("pyramidclip-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("xm3600/images")).unwrap();
        std::fs::write(dir.join("xm3600/images/k.jpg"), b"x").unwrap();
        let first = "/elsewhere/root/xm3600/images/k.jpg";
        // Moved: the trailing part under the file's folder, or under --images-root.
        let p = relocate(&dir, false, first);
        assert_eq!(p.resolve(&dir, first), dir.join("xm3600/images/k.jpg"));
        let imgs = dir.join("xm3600/images");
        assert_eq!(
            relocate(&imgs, true, first).resolve(&imgs, first),
            imgs.join("k.jpg")
        );
        // Where it is as written, it is read there (unless --images-root says otherwise).
        let here = dir.join("xm3600/images/k.jpg");
        let here = here.to_str().unwrap();
        assert_eq!(relocate(&dir, false, here), Place::AsWritten);
        assert_eq!(
            relocate(&dir, true, here).resolve(&dir, here),
            dir.join("xm3600/images/k.jpg")
        );
        // Nowhere: as written, so that the error names the path the file gives.
        assert_eq!(relocate(&dir, false, "/no/such.jpg"), Place::AsWritten);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn open_clip_csv_rows_are_read_as_pandas_reads_them() {
        let csv = |sep, image, caption| Pick {
            csv: CsvColumns {
                separator: sep,
                image,
                caption,
            },
            ..Pick::default()
        };
        // Tab-separated by default; quotes hold tabs, doubled quotes and a line break; blank
        // lines are skipped; pandas' missing-value cells are the caption "nan".
        let text = "n\tfilepath\ttitle\n0\ta.jpg\t\"one\ttwo \"\"q\"\"\"\n\n1\tb.jpg\t\"two\nlines\"\n2\ta.jpg\tNA\n3\tc.jpg\t\n";
        let e = parse(text, Format::Csv, Pick::default()).unwrap();
        assert_eq!(
            caps(&e),
            vec![
                ("a.jpg".into(), vec!["one\ttwo \"q\"".into(), "nan".into()]),
                ("b.jpg".into(), vec!["two\nlines".into()]),
                ("c.jpg".into(), vec!["nan".into()]),
            ]
        );
        assert_eq!(e[1].origin, "line 4");
        // The pairs' rows, blank lines not counted.
        let rows: Vec<&[usize]> = e.iter().map(|e| e.rows.as_slice()).collect();
        assert_eq!(rows, [&[0, 2][..], &[1], &[3]]);
        // A comma-separated file (no tab in its header), other column names.
        let text = "caption,path\n\"x, y\",d.png\n";
        let e = parse(text, Format::Csv, csv(None, "path", "caption")).unwrap();
        assert_eq!(caps(&e), vec![("d.png".into(), vec!["x, y".into()])]);
        let e = parse(
            "path;caption\nd.png;z\n",
            Format::Csv,
            csv(Some(b';'), "path", "caption"),
        );
        assert_eq!(caps(&e.unwrap()), vec![("d.png".into(), vec!["z".into()])]);
        // Errors say where.
        let e = parse("filepath,text\na.jpg,x\n", Format::Csv, Pick::default()).unwrap_err();
        assert_eq!(e.at, "line 1");
        assert!(
            e.msg.contains("no column \"title\"") && e.msg.contains("filepath, text"),
            "{e}"
        );
        let e = parse(
            "filepath\ttitle\na.jpg\tx\nb.jpg\n",
            Format::Csv,
            Pick::default(),
        );
        let e = e.unwrap_err();
        assert_eq!(
            (e.at.as_str(), e.msg.as_str()),
            (
                "line 3",
                "1 columns where the header has 2 (separated by a tab)"
            )
        );
        let text = "\r\nfilepath\ttitle\r\na.jpg\tx\r\n\r\n\r\nb.jpg\r\n";
        let e = parse(text, Format::Csv, Pick::default()).unwrap_err();
        assert_eq!(e.at, "line 6");
        let e = parse("\nfilepath\tx\n", Format::Csv, Pick::default()).unwrap_err();
        assert_eq!(e.at, "line 2");
        let e = parse("filepath\ttitle\n\tx\n", Format::Csv, Pick::default()).unwrap_err();
        assert_eq!(e.at, "line 2");
        assert!(parse("filepath\ttitle\n", Format::Csv, Pick::default()).is_err());
        // Found by the header's default column names, or a .tsv name.
        let p = |n: &str| PathBuf::from(n);
        assert_eq!(
            detect(&p("v.csv"), "filepath\ttitle\na.jpg\tx\n"),
            Format::Csv
        );
        assert_eq!(
            detect(&p("v.txt"), "title,filepath\nx,a.jpg\n"),
            Format::Csv
        );
        assert_eq!(detect(&p("v.tsv"), "a\tb\n"), Format::Csv);
        assert_eq!(
            detect(&p("v.csv"), "image,caption\na.jpg,x\n"),
            Format::Flickr
        );
    }

    #[test]
    fn flickr_captions_keep_their_quotes_as_clip_benchmark_reads_them() {
        let e = parse_flickr("image,caption\nx.jpg,\"a, b\"\nx.jpg, c \"d\" \n").unwrap();
        assert_eq!(e[0].captions, ["\"a, b\"", "c \"d\""]);
    }
}
