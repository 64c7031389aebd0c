//! A HuggingFace tokenizer (`tokenizer.json`, with `tokenizer_config.json` beside it) as
//! open_clip's `HFTokenizer` calls it for SigLIP: the text cleaned (`clean`), encoded with its
//! special tokens, cut to the context (keeping the ones the post-processor adds), then padded
//! with the pad token to the context. The `tokenizers` crate runs the `tokenizer.json`
//! (normalizer, pre-tokenizer, model, post-processor), the same code that HuggingFace's Python
//! package wraps.

use crate::models::config::TextClean;
use std::path::{Path, PathBuf};
use tokenizers::{PostProcessor, TruncationDirection};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tokenizer {path}: {msg}")]
    Load { path: PathBuf, msg: String },
    #[error("tokenizer {path}: cannot encode {preview:?}: {msg}")]
    Encode {
        path: PathBuf,
        preview: String,
        msg: String,
    },
}

/// Which side a config pads or cuts (`padding_side`, `truncation_side`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    pad: u32,
    padding: Side,
    truncation: Side,
    clean: TextClean,
    /// The separator's id, written as 0 in every row (open_clip's `strip_sep_token`: CLIPA).
    strip_sep: Option<u32>,
    /// The `tokenizer.json` read.
    pub path: PathBuf,
    /// SHA-256 of what was read (`tokenizer.json`, the config, the pad token and cleaning):
    /// what class vectors cached for this tokenizer are keyed by.
    pub digest: String,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("path", &self.path)
            .field("pad", &self.pad)
            .finish()
    }
}

/// A special token's text in a tokenizer config: a string, or an `AddedToken`'s `content`.
fn token_text(v: &serde_json::Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(|c| c.as_str()))
}

impl HfTokenizer {
    /// `path`: a `tokenizer.json`, or a folder holding one; its `tokenizer_config.json` (or
    /// `special_tokens_map.json`) beside it names the pad token (and with `strip_sep`, the
    /// separator token whose id becomes 0).
    pub fn open(path: &Path, clean: TextClean, strip_sep: bool) -> Result<Self, Error> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let fail = |msg: String| Error::Load {
            path: file.clone(),
            msg,
        };
        if !file.is_file() {
            return Err(fail("no such file".into()));
        }
        let bytes = std::fs::read(&file).map_err(|e| fail(e.to_string()))?;
        // Parsed as JSON first: `tokenizers` panics (an `expect`) on a decoder section that is
        // not valid JSON when it reads the text itself, never on a parsed value.
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
        let mut inner: tokenizers::Tokenizer =
            serde_json::from_value(json).map_err(|e| fail(e.to_string()))?;
        // transformers sets the padding and truncation per call (open_clip's: `max_length`),
        // whatever a saved `tokenizer.json` kept from its last call; so are they here.
        let saved_pad = inner.get_padding().map(|p| p.pad_id);
        inner
            .with_truncation(None)
            .map_err(|e| fail(e.to_string()))?;
        inner.with_padding(None);
        let dir = file.parent().unwrap_or(Path::new("."));
        let read_json = |name: &str| -> Result<Option<serde_json::Value>, Error> {
            let p = dir.join(name);
            if !p.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&p).map_err(|e| Error::Load {
                path: p.clone(),
                msg: e.to_string(),
            })?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Load {
                    path: p.clone(),
                    msg: e.to_string(),
                })
        };
        let config = read_json("tokenizer_config.json")?.unwrap_or_default();
        let special = read_json("special_tokens_map.json")?.unwrap_or_default();
        // transformers takes the pad token from the config, else the special tokens' map;
        // `tokenizer.json`'s own padding section is the last resort.
        // A hub config may name no special tokens (`bert-base-uncased`'s holds only
        // `do_lower_case` and `model_max_length`): transformers' tokenizer class then uses its
        // defaults, BERT's `[PAD]` and `[SEP]` (the one WordPiece tokenizer open_clip's configs
        // name), the others' (RoBERTa, XLM-R, T5, NLLB, Gemma) `<pad>`.
        let bert = match config.get("tokenizer_class").and_then(|v| v.as_str()) {
            Some(class) => class.starts_with("Bert"),
            None => matches!(inner.get_model(), tokenizers::ModelWrapper::WordPiece(_)),
        };
        let named = |key: &str| {
            config
                .get(key)
                .and_then(token_text)
                .or_else(|| special.get(key).and_then(token_text))
                .or(match key {
                    "pad_token" if bert => Some("[PAD]"),
                    "sep_token" if bert => Some("[SEP]"),
                    "pad_token" if inner.token_to_id("<pad>").is_some() => Some("<pad>"),
                    _ => None,
                })
        };
        let pad_text = named("pad_token");
        let pad = match pad_text {
            Some(t) => inner
                .token_to_id(t)
                .ok_or_else(|| fail(format!("the pad token {t:?} is not in the vocabulary")))?,
            None => saved_pad.ok_or_else(|| {
                fail("names no pad token (tokenizer_config.json `pad_token`)".into())
            })?,
        };
        let side = |key: &str| -> Result<Side, Error> {
            match config.get(key).and_then(|v| v.as_str()) {
                None | Some("right") => Ok(Side::Right),
                Some("left") => Ok(Side::Left),
                Some(other) => Err(fail(format!("`{key}` is {other:?}"))),
            }
        };
        let (padding, truncation) = (side("padding_side")?, side("truncation_side")?);
        let strip_sep = match (strip_sep, named("sep_token")) {
            (false, _) => None,
            (true, Some(t)) => Some(inner.token_to_id(t).ok_or_else(|| {
                fail(format!("the separator token {t:?} is not in the vocabulary"))
            })?),
            (true, None) => {
                return Err(fail(
                    "names no separator token (tokenizer_config.json `sep_token`), which strip_sep_token needs"
                        .into(),
                ))
            }
        };
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(&bytes);
        h.update(format!("{pad} {padding:?} {truncation:?} {clean:?}").as_bytes());
        // Said only when set, so the digests of the other tokenizers stay as they were.
        if let Some(sep) = strip_sep {
            h.update(format!(" strip_sep {sep}").as_bytes());
        }
        let digest = format!("{:x}", h.finalize());
        Ok(Self {
            padding,
            truncation,
            digest,
            inner,
            pad,
            clean,
            strip_sep,
            path: file,
        })
    }

    /// The row open_clip's `HFTokenizer` gives `text` (transformers' `max_length` padding with
    /// truncation): ids with the special tokens, cut to `context` (the special tokens kept),
    /// padded with the pad id; longer text is refused when `truncate` is false.
    pub fn tokenize(
        &self,
        text: &str,
        context: usize,
        truncate: bool,
    ) -> Result<Vec<i64>, super::Error> {
        let cleaned = super::clean::hf_clean(text, self.clean);
        let preview = || text.chars().take(60).collect::<String>();
        let enc_err = |msg: String| Error::Encode {
            path: self.path.clone(),
            preview: preview(),
            msg,
        };
        let mut enc = self
            .inner
            .encode(cleaned.as_str(), false)
            .map_err(|e| enc_err(e.to_string()))?;
        let added = self
            .inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        let room = context.saturating_sub(added);
        if enc.len() > room {
            if !truncate {
                return Err(super::Error::TooLong {
                    needed: enc.len() + added,
                    context,
                    preview: preview(),
                });
            }
            let dir = match self.truncation {
                Side::Right => TruncationDirection::Right,
                Side::Left => TruncationDirection::Left,
            };
            enc.truncate(room, 0, dir);
        }
        let enc = self
            .inner
            .post_process(enc, None, true)
            .map_err(|e| enc_err(e.to_string()))?;
        let ids = enc.get_ids();
        let mut row: Vec<i64> = ids.iter().take(context).map(|&t| t as i64).collect();
        let fill = context - row.len();
        match self.padding {
            Side::Right => row.extend(std::iter::repeat_n(self.pad as i64, fill)),
            Side::Left => {
                row.splice(0..0, std::iter::repeat_n(self.pad as i64, fill));
            }
        }
        if let Some(sep) = self.strip_sep {
            for t in row.iter_mut().filter(|t| **t == sep as i64) {
                *t = 0;
            }
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture tokenizer `name`'s `tokenizer.json` beside a config naming no special
    /// tokens, as hub repos such as `bert-base-uncased` and `xlm-roberta-base` hold it.
    fn bare(name: &str, strip_sep: bool) -> HfTokenizer {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip");
        std::fs::copy(
            fixture.join(name).join("tokenizer.json"),
            dir.path().join("tokenizer.json"),
        )
        .unwrap();
        let config = r#"{"model_max_length": 512}"#;
        std::fs::write(dir.path().join("tokenizer_config.json"), config).unwrap();
        HfTokenizer::open(dir.path(), TextClean::Whitespace, strip_sep).unwrap()
    }

    /// Without named special tokens, transformers' class defaults: BERT's `[PAD]` (0 here) and
    /// `[SEP]` (3, written as 0 with `strip_sep`), the byte-level BPE's `<pad>` (1).
    #[test]
    fn unnamed_special_tokens_take_transformers_defaults() {
        let row = bare("bert-tokenizer", true)
            .tokenize("a photo", 8, true)
            .unwrap();
        assert_eq!(row[0], 2, "{row:?}");
        assert!(!row.contains(&3) && row[4..] == [0; 4], "{row:?}");
        let row = bare("bert-tokenizer", false)
            .tokenize("a photo", 8, true)
            .unwrap();
        assert!(row.contains(&3), "{row:?}");
        let row = bare("hf-tokenizer", false)
            .tokenize("a photo", 8, true)
            .unwrap();
        assert_eq!(row[row.len() - 1], 1, "{row:?}");
    }

    /// A `tokenizer.json` broken inside its decoder (a missing comma; a string that is not
    /// UTF-8) is an error naming the file: the `tokenizers` crate panics on a decoder it
    /// cannot read, so the reader must never hand it such bytes (found by fuzzing).
    #[test]
    fn a_broken_decoder_section_is_an_error_not_a_panic() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip");
        let good =
            std::fs::read_to_string(fixture.join("siglip-tokenizer/tokenizer.json")).unwrap();
        let decoder = good.find(r#""decoder""#).unwrap();
        let at = decoder + good[decoder..].find(r#""type": "Metaspace""#).unwrap();
        let mut comma = good.clone();
        comma.replace_range(at..at + 19, r#""type": "Metaspace" "x": 1"#);
        let mut utf8 = good.clone().into_bytes();
        utf8.splice(at + 9..at + 18, b"Meta\xffspace".iter().copied());
        for (what, bytes) in [("missing comma", comma.into_bytes()), ("not UTF-8", utf8)] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("tokenizer.json");
            std::fs::write(&file, bytes).unwrap();
            let err = HfTokenizer::open(dir.path(), TextClean::Whitespace, false)
                .err()
                .unwrap_or_else(|| panic!("{what}: opened"));
            assert!(err.to_string().contains("tokenizer.json"), "{what}: {err}");
        }
    }
}
