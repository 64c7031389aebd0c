//! Captioned image sets for retrieval, in the layouts people have: JSON lines
//! (`{"image": PATH, "captions": [..]}` or `"caption": TEXT`; also one JSON list of such
//! objects, LAVIS/BLIP's annotation files), the Karpathy-split Flickr text file CLIP_benchmark
//! reads (`NAME.jpg,CAPTION` lines under a header), COCO's captions annotation JSON and
//! Karpathy's own split files (`dataset_coco.json`, `dataset_flickr30k.json`: one split of
//! them). Images keep their first-seen order (COCO and Karpathy: the `images` order), captions
//! their file order. Parsing is pure (fuzzed); [`read`] adds the file system.

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
        }
    }
}

/// One image and its captions, with where it was first named (a line, or a COCO image id).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub image: String,
    pub captions: Vec<String>,
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

/// The format by extension (`.jsonl`, `.json`, `.txt`/`.csv`), else by content.
pub fn detect(path: &Path, text: &str) -> Format {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("jsonl") | Some("ndjson") => return Format::Jsonl,
        Some("txt") | Some("csv") => return Format::Flickr,
        _ => {}
    }
    if text.trim_start().starts_with('{') {
        return match serde_json::from_str::<Top>(text).ok() {
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
                if serde_json::from_str::<serde_json::Value>(first).is_ok()
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
}

/// Entries of a captions file's text in `format` (a Karpathy file's images of `split`).
pub fn parse(text: &str, format: Format, split: &str) -> Result<Vec<Entry>, ParseError> {
    let entries = match format {
        Format::Jsonl => parse_jsonl(text)?,
        Format::Flickr | Format::Wds => parse_flickr(text)?,
        Format::Coco => parse_coco(text)?,
        Format::Karpathy => parse_karpathy(text, split)?,
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
}

impl Grouper {
    fn new() -> Self {
        Self {
            entries: Vec::new(),
            index: Default::default(),
        }
    }
    fn image(&mut self, image: &str, origin: String) -> usize {
        if let Some(&i) = self.index.get(image) {
            return i;
        }
        self.entries.push(Entry {
            image: image.to_string(),
            captions: Vec::new(),
            origin,
        });
        self.index.insert(image.to_string(), self.entries.len() - 1);
        self.entries.len() - 1
    }
}

fn parse_jsonl(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut g = Grouper::new();
    let mut add = |v: &serde_json::Value, at: String| -> Result<(), ParseError> {
        let (image, caps) = jsonl_entry(v, &at)?;
        let i = g.image(image, at);
        g.entries[i].captions.extend(caps);
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
                g.entries[i].captions.push(caption);
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
        g.entries[i].captions.extend(caps);
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
    /// Images left out with `skip_unreadable` (missing, or without captions) and why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Reads `path` (in `format`, detected when None). Image paths are relative to `root`
/// (default: the file's folder). A missing image or an image without captions is an error
/// naming the file and where it is named, or with `skip_unreadable` left out and listed.
pub fn read(
    path: &Path,
    format: Option<Format>,
    split: &str,
    root: Option<&Path>,
    skip_unreadable: bool,
) -> Result<CaptionSet, Error> {
    let fail = |msg: String| Error::Path {
        path: path.into(),
        msg,
    };
    if format.is_none_or(|f| f == Format::Wds) {
        match super::wds::resolve(path, split).transpose()? {
            Some((shards, layout)) => {
                let mut set = read_wds(path, &shards, skip_unreadable)?;
                set.split = layout.then(|| split.to_string());
                return Ok(set);
            }
            None if format == Some(Format::Wds) => {
                return Err(fail(
                    "--format wds: neither a webdataset layout (DIR/test/nshards.txt) nor shards (.tar, {a..b})".into(),
                ))
            }
            None => {}
        }
    }
    let text = super::read_text(path, "--captions")?;
    let text = text.as_str();
    let format = format.unwrap_or_else(|| detect(path, text));
    let entries =
        parse(text, format, split).map_err(|e| fail(format!("({}) {e}", format.name())))?;
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
        .flatten();
    let root = super::images_root(path, root, sub)?;
    let mut set = CaptionSet {
        source: path.into(),
        format,
        split: (format == Format::Karpathy).then(|| split.to_string()),
        root: root.clone(),
        images: Vec::new(),
        captions: Vec::new(),
        caption_image: Vec::new(),
        skipped: Vec::new(),
    };
    for e in entries {
        let img = root.join(&e.image);
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
        set.images.push(super::Sample::file(img, 0));
        for c in e.captions {
            set.captions.push(c);
            set.caption_image.push(i);
        }
    }
    if set.images.is_empty() {
        return Err(fail("no image with captions is left".into()));
    }
    Ok(set)
}

/// A captioned set from webdataset shards (`txt` members, one caption per line).
fn read_wds(source: &Path, shards: &[PathBuf], skip_unreadable: bool) -> Result<CaptionSet, Error> {
    let wants = super::wds::Wants {
        classes: None,
        captions: true,
        multilabel: false,
    };
    let ix = super::wds::index(shards, wants, skip_unreadable)?;
    let mut set = CaptionSet {
        source: source.into(),
        format: Format::Wds,
        split: None,
        root: source.into(),
        images: Vec::with_capacity(ix.samples.len()),
        captions: Vec::new(),
        caption_image: Vec::new(),
        skipped: ix
            .skipped
            .into_iter()
            .map(|(k, why)| (PathBuf::from(k), why))
            .collect(),
    };
    for (i, (smp, caps)) in ix.samples.into_iter().zip(ix.captions).enumerate() {
        set.images.push(smp);
        for c in caps {
            set.captions.push(c);
            set.caption_image.push(i);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for (text, format) in [
            (jsonl, Format::Jsonl),
            (flickr, Format::Flickr),
            (coco, Format::Coco),
            (list, Format::Jsonl),
            (karpathy, Format::Karpathy),
        ] {
            assert_eq!(
                caps(&parse(text, format, DEFAULT_SPLIT).unwrap()),
                want,
                "{format:?}"
            );
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
        let train = parse(karpathy, Format::Karpathy, "train").unwrap();
        assert_eq!(
            caps(&train),
            [("val/z.jpg".to_string(), vec!["no".to_string()])]
        );
        let e = parse(karpathy, Format::Karpathy, "restval").unwrap_err();
        assert!(
            e.msg.contains("split \"restval\"") && e.msg.contains("test, train"),
            "{e}"
        );
        // Captions with ".jpg," inside still split at the first one.
        let e = parse("x.jpg,see y.jpg, then\n", Format::Flickr, DEFAULT_SPLIT).unwrap();
        assert_eq!(e[0].captions, ["see y.jpg, then"]);
    }

    #[test]
    fn bad_lines_are_named() {
        let bad = |text: &str, format| parse(text, format, DEFAULT_SPLIT).unwrap_err();
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
        let set = read(&ann, None, DEFAULT_SPLIT, None, false).unwrap();
        assert_eq!(set.root, dir.join("val2014"));
        // Beside the file, the image is read there; --images-root always wins.
        std::fs::write(dir.join("COCO_val2014_1.jpg"), b"x").unwrap();
        assert_eq!(
            read(&ann, None, DEFAULT_SPLIT, None, false).unwrap().root,
            dir
        );
        let given = dir.join("val2014");
        let set = read(&ann, None, DEFAULT_SPLIT, Some(&given), false).unwrap();
        assert_eq!(set.root, given);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flickr_captions_keep_their_quotes_as_clip_benchmark_reads_them() {
        let e = parse_flickr("image,caption\nx.jpg,\"a, b\"\nx.jpg, c \"d\" \n").unwrap();
        assert_eq!(e[0].captions, ["\"a, b\"", "c \"d\""]);
    }
}
