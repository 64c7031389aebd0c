//! Captioned image sets for retrieval, in the three layouts people have: JSON lines
//! (`{"image": PATH, "captions": [..]}` or `"caption": TEXT`), the Karpathy-split Flickr text
//! file CLIP_benchmark reads (`NAME.jpg,CAPTION` lines under a header) and COCO's captions
//! annotation JSON. Images keep their first-seen order (COCO: the `images` order), captions
//! their file order. Parsing is pure (fuzzed); [`read`] adds the file system.

use super::Error;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Flickr,
    Coco,
    /// Webdataset shards: an image and `txt` (one caption per line) per sample.
    Wds,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Flickr => "flickr",
            Format::Coco => "coco",
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
        Some("json") if text.trim_start().starts_with('{') && looks_like_coco(text) => {
            return Format::Coco
        }
        Some("txt") | Some("csv") => return Format::Flickr,
        _ => {}
    }
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if looks_like_coco(text) {
        Format::Coco
    } else if first.trim_start().starts_with('{') {
        Format::Jsonl
    } else {
        Format::Flickr
    }
}

fn looks_like_coco(text: &str) -> bool {
    // A whole-file object with both arrays; one JSON object per line is not that.
    let head: String = text.chars().take(1 << 16).collect();
    head.contains("\"annotations\"") && head.contains("\"images\"") && {
        let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
        lines <= 1 || serde_json::from_str::<serde_json::Value>(text).is_ok()
    }
}

/// Entries of a captions file's text in `format`.
pub fn parse(text: &str, format: Format) -> Result<Vec<Entry>, ParseError> {
    let entries = match format {
        Format::Jsonl => parse_jsonl(text)?,
        Format::Flickr | Format::Wds => parse_flickr(text)?,
        Format::Coco => parse_coco(text)?,
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
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}", n + 1);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| perr(&at, format!("not a JSON object ({e})")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| perr(&at, "expected an object with \"image\" and \"captions\""))?;
        let image = obj
            .get("image")
            .and_then(|i| i.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| perr(&at, "no \"image\" path (a non-empty string)"))?;
        let mut caps = Vec::new();
        match (obj.get("captions"), obj.get("caption")) {
            (Some(c), _) => {
                let arr = c
                    .as_array()
                    .ok_or_else(|| perr(&at, "\"captions\" is not a list of strings"))?;
                for c in arr {
                    caps.push(
                        c.as_str()
                            .ok_or_else(|| perr(&at, "\"captions\" holds a non-string"))?
                            .to_string(),
                    );
                }
            }
            (None, Some(c)) => caps.push(
                c.as_str()
                    .ok_or_else(|| perr(&at, "\"caption\" is not a string"))?
                    .to_string(),
            ),
            (None, None) => return Err(perr(&at, "no \"captions\" (or \"caption\")")),
        }
        if caps.is_empty() {
            return Err(perr(&at, format!("image {image} has no captions")));
        }
        let i = g.image(image, at);
        g.entries[i].captions.extend(caps);
    }
    Ok(g.entries)
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
                let caption = caption.trim();
                // Quoted CSV captions ("a, b") lose their quotes.
                let caption = caption
                    .strip_prefix('"')
                    .and_then(|c| c.strip_suffix('"'))
                    .map(|c| c.replace("\"\"", "\""))
                    .unwrap_or_else(|| caption.to_string());
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

fn parse_coco(text: &str) -> Result<Vec<Entry>, ParseError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        perr(
            format!("line {}", e.line()),
            format!("not COCO captions JSON ({e})"),
        )
    })?;
    let images = v
        .get("images")
        .and_then(|i| i.as_array())
        .ok_or_else(|| perr("", "no \"images\" list (a COCO captions annotation file)"))?;
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
            .filter(|s| !s.is_empty())
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

fn json_id(v: Option<&serde_json::Value>) -> Option<i64> {
    let v = v?;
    v.as_i64()
        .or_else(|| v.as_u64().and_then(|u| i64::try_from(u).ok()))
}

/// A captioned set ready to encode: images (paths resolved) and captions, each caption with the
/// position of its image.
#[derive(Debug, Clone)]
pub struct CaptionSet {
    pub source: PathBuf,
    pub format: Format,
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
    root: Option<&Path>,
    skip_unreadable: bool,
) -> Result<CaptionSet, Error> {
    let fail = |msg: String| Error::Path {
        path: path.into(),
        msg,
    };
    if format.is_none_or(|f| f == Format::Wds) {
        let shards = if super::wds::is_layout(path) {
            Some(super::wds::layout_shards(path, "test")?)
        } else {
            super::wds::shard_list(path).transpose()?
        };
        match shards {
            Some(shards) => return read_wds(path, &shards, skip_unreadable),
            None if format == Some(Format::Wds) => {
                return Err(fail(
                    "--format wds: neither a webdataset layout (DIR/test/nshards.txt) nor shards (.tar, {a..b})".into(),
                ))
            }
            None => {}
        }
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read --captions: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        fail(format!("line {line}: not UTF-8 text"))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let format = format.unwrap_or_else(|| detect(path, text));
    let entries = parse(text, format).map_err(|e| fail(format!("({}) {e}", format.name())))?;
    let root = match root {
        Some(r) => r.to_path_buf(),
        None => path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    if !root.is_dir() {
        return Err(Error::Path {
            path: root,
            msg: "is not a directory (--images-root)".into(),
        });
    }
    let mut set = CaptionSet {
        source: path.into(),
        format,
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
    };
    let ix = super::wds::index(shards, wants, skip_unreadable)?;
    let mut set = CaptionSet {
        source: source.into(),
        format: Format::Wds,
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

    #[test]
    fn the_three_formats_group_the_same_set() {
        let jsonl = r#"{"image": "a.jpg", "captions": ["a dog, running", "a pet"]}
{"image": "b.jpg", "caption": "a cat"}
{"image": "a.jpg", "caption": "third"}
"#;
        let flickr =
            "image,caption\na.jpg,\"a dog, running\"\na.jpg,a pet\nb.jpg,a cat\na.jpg,third\n";
        let coco = r#"{"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}],
            "annotations": [{"image_id": 7, "caption": "a dog, running"}, {"image_id": 3, "caption": "a cat"},
                            {"image_id": 7, "caption": "a pet"}, {"image_id": 7, "caption": "third"}]}"#;
        let caps = |e: &[Entry]| {
            e.iter()
                .map(|e| (e.image.clone(), e.captions.clone()))
                .collect::<Vec<_>>()
        };
        let want = vec![
            (
                "a.jpg".to_string(),
                vec!["a dog, running", "a pet", "third"],
            ),
            ("b.jpg".to_string(), vec!["a cat"]),
        ];
        let want: Vec<(String, Vec<String>)> = want
            .into_iter()
            .map(|(i, c)| (i, c.into_iter().map(String::from).collect()))
            .collect();
        assert_eq!(caps(&parse(jsonl, Format::Jsonl).unwrap()), want);
        assert_eq!(caps(&parse(flickr, Format::Flickr).unwrap()), want);
        assert_eq!(caps(&parse(coco, Format::Coco).unwrap()), want);
        assert_eq!(detect(Path::new("x"), jsonl), Format::Jsonl);
        assert_eq!(detect(Path::new("x"), flickr), Format::Flickr);
        assert_eq!(detect(Path::new("x"), coco), Format::Coco);
        // Captions with ".jpg," inside still split at the first one.
        let e = parse("x.jpg,see y.jpg, then\n", Format::Flickr).unwrap();
        assert_eq!(e[0].captions, ["see y.jpg, then"]);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse(
            "{\"image\": \"a.jpg\", \"captions\": [\"x\"]}\n{oops\n",
            Format::Jsonl,
        )
        .unwrap_err();
        assert_eq!(e.at, "line 2");
        let e = parse("{\"image\": \"a.jpg\", \"captions\": []}\n", Format::Jsonl).unwrap_err();
        assert!(e.msg.contains("no captions"), "{e}");
        let e = parse("image,caption\na.jpg,x\nno comma here\n", Format::Flickr).unwrap_err();
        assert_eq!(e.at, "line 3");
        let e = parse(
            r#"{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}"#,
            Format::Coco,
        )
        .unwrap_err();
        assert_eq!(e.at, "annotations[0]");
        assert!(parse("", Format::Jsonl).is_err());
        assert!(parse("image,caption\n", Format::Flickr).is_err());
    }
}
