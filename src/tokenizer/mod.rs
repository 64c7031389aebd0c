//! The CLIP byte-level BPE tokenizer the checkpoints were trained with (reference §6).
//! The vocabulary (`bpe_simple_vocab_16e6.txt.gz`, MIT licence, from open_clip) is embedded.
//! open_clip's SigLIP models bring their own HuggingFace tokenizer (`hf`).

pub mod clean;
pub mod hf;
#[rustfmt::skip]
mod tables;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

pub const SOT: u32 = 49406;
pub const EOT: u32 = 49407;
pub const CONTEXT_LENGTH: usize = 77;

static VOCAB_GZ: &[u8] = include_bytes!("../../configs/data/bpe_simple_vocab_16e6.txt.gz");
const NUM_MERGES: usize = 49152 - 256 - 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("text needs {needed} tokens but the context length is {context} (drop --no-truncate to cut it): {preview}")]
    TooLong {
        needed: usize,
        context: usize,
        preview: String,
    },
    #[error("context length must be at least 2, got {0}")]
    BadContext(usize),
    #[error(transparent)]
    Hf(#[from] hf::Error),
}

/// The tokenizer a model's text tower was trained with: CLIP's (embedded), or a HuggingFace
/// one read from its files (SigLIP's).
#[derive(Debug, Clone, Default)]
pub enum TextTokenizer {
    #[default]
    Clip,
    Hf(std::sync::Arc<hf::HfTokenizer>),
}

impl TextTokenizer {
    /// `text`'s row of `context` ids (see [`Tokenizer::tokenize`], [`hf::HfTokenizer::tokenize`]).
    pub fn tokenize(&self, text: &str, context: usize, truncate: bool) -> Result<Vec<i64>, Error> {
        match self {
            Self::Clip => Tokenizer::global().tokenize(text, context, truncate),
            Self::Hf(t) => t.tokenize(text, context, truncate),
        }
    }

    /// What keys cached class vectors besides the model: nothing for CLIP's (whose caches
    /// predate this), the HuggingFace tokenizer's digest.
    pub fn fingerprint(&self) -> &str {
        match self {
            Self::Clip => "",
            Self::Hf(t) => &t.digest,
        }
    }

    /// For logs and outputs: `clip`, or the `tokenizer.json` read.
    pub fn describe(&self) -> String {
        match self {
            Self::Clip => "clip".to_string(),
            Self::Hf(t) => t.path.display().to_string(),
        }
    }
}

pub struct Tokenizer {
    /// GPT-2's byte -> printable-char table, as symbol ids: byte b is id `byte_ids[b]`
    /// alone and `byte_ids[b] + 256` when it ends a word.
    byte_ids: [u32; 256],
    /// (left, right) -> merge rank; the merged symbol's id is 512 + rank.
    ranks: HashMap<(u32, u32), u32>,
    split: regex::Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xa1..=0xac)
        .chain(0xae..=0xff)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b as u8, char::from_u32(c).unwrap()))
        .collect()
}

/// Each id's bytes: the 256 bytes, the same ending a word (`</w>`), the merges in rank
/// order, then the start and end tokens.
fn decode_table() -> Vec<Vec<u8>> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(VOCAB_GZ)
        .read_to_string(&mut text)
        .expect("embedded vocabulary");
    let table = bytes_to_unicode();
    let byte_of: HashMap<char, u8> = table.iter().map(|&(b, c)| (c, b)).collect();
    let bytes = |s: &str| -> Vec<u8> { s.chars().map(|c| byte_of[&c]).collect() };
    let mut out: Vec<Vec<u8>> = table.iter().map(|&(b, _)| vec![b]).collect();
    out.extend(table.iter().map(|&(b, _)| [&[b][..], b"</w>"].concat()));
    for line in text.lines().skip(1).take(NUM_MERGES) {
        out.push(bytes(&line.replace(' ', "")));
    }
    out.push(b"<start_of_text>".to_vec());
    out.push(b"<end_of_text>".to_vec());
    out
}

impl Tokenizer {
    /// The shared instance, built on first use.
    pub fn global() -> &'static Tokenizer {
        static T: OnceLock<Tokenizer> = OnceLock::new();
        T.get_or_init(Tokenizer::new)
    }

    fn new() -> Self {
        use std::io::Read;
        let mut text = String::new();
        flate2::read::GzDecoder::new(VOCAB_GZ)
            .read_to_string(&mut text)
            .expect("embedded vocabulary");
        let table = bytes_to_unicode();
        let mut byte_ids = [0u32; 256];
        let mut symbol: HashMap<String, u32> = HashMap::new();
        for (i, (b, c)) in table.iter().enumerate() {
            byte_ids[*b as usize] = i as u32;
            symbol.insert(c.to_string(), i as u32);
            symbol.insert(format!("{c}</w>"), i as u32 + 256);
        }
        let mut ranks = HashMap::with_capacity(NUM_MERGES);
        for (rank, line) in text.lines().skip(1).take(NUM_MERGES).enumerate() {
            let (a, b) = line.split_once(' ').expect("merge line");
            let (ia, ib) = (symbol[a], symbol[b]);
            ranks.insert((ia, ib), rank as u32);
            symbol.insert(format!("{a}{b}"), 512 + rank as u32);
        }
        // The reference's pattern, with the letter/number/space classes spelled out from the
        // Unicode tables of the `regex` module it runs on.
        let (l, n, o) = (tables::CLASS_L, tables::CLASS_N, tables::CLASS_OTHER);
        let split = regex::Regex::new(&format!(
            r"(?i:<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d)|[{l}]+|[{n}]|[{o}]+"
        ))
        .unwrap();
        let mut cache = HashMap::new();
        cache.insert("<|startoftext|>".to_string(), vec![SOT]);
        cache.insert("<|endoftext|>".to_string(), vec![EOT]);
        Self {
            byte_ids,
            ranks,
            split,
            cache: Mutex::new(cache),
        }
    }

    fn bpe(&self, piece: &str) -> Vec<u32> {
        let bytes = piece.as_bytes();
        let mut word: Vec<u32> = bytes.iter().map(|&b| self.byte_ids[b as usize]).collect();
        if let Some(last) = word.last_mut() {
            *last += 256;
        }
        while word.len() > 1 {
            // The lowest-ranked adjacent pair, then every non-overlapping occurrence of it merged.
            let best = word
                .windows(2)
                .filter_map(|w| self.ranks.get(&(w[0], w[1])).map(|&r| (r, w[0], w[1])))
                .min();
            let Some((rank, a, b)) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
                    merged.push(512 + rank);
                    i += 2;
                } else {
                    merged.push(word[i]);
                    i += 1;
                }
            }
            word = merged;
        }
        word
    }

    /// The text of `ids` as open_clip's `SimpleTokenizer.decode` gives it: each id's
    /// symbols as bytes (the start and end tokens as `<start_of_text>` and
    /// `<end_of_text>`), read as UTF-8 with U+FFFD for invalid sequences, `</w>` as a space.
    /// Ids outside the vocabulary are an error (as its `KeyError`).
    pub fn decode(&self, ids: &[u32]) -> Result<String, u32> {
        static BYTES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        let table = BYTES.get_or_init(decode_table);
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            bytes.extend(table.get(id as usize).ok_or(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).replace("</w>", " "))
    }

    /// BPE ids of a text, without start/end tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean::clean(text);
        let mut ids = Vec::new();
        for m in self.split.find_iter(&cleaned) {
            let piece = m.as_str();
            if let Some(hit) = self.cache.lock().unwrap().get(piece) {
                ids.extend_from_slice(hit);
                continue;
            }
            let out = self.bpe(piece);
            ids.extend_from_slice(&out);
            let mut cache = self.cache.lock().unwrap();
            if cache.len() < 1 << 20 {
                cache.insert(piece.to_string(), out);
            }
        }
        ids
    }

    /// The reference's `tokenize()` row: SOT + ids + EOT, zero-padded to `context`; longer
    /// input is cut with EOT in the last slot, or refused when `truncate` is false.
    pub fn tokenize(&self, text: &str, context: usize, truncate: bool) -> Result<Vec<i64>, Error> {
        if context < 2 {
            return Err(Error::BadContext(context));
        }
        let mut row = Vec::with_capacity(context);
        row.push(SOT as i64);
        row.extend(self.encode(text).into_iter().map(|x| x as i64));
        row.push(EOT as i64);
        if row.len() > context {
            if !truncate {
                let preview: String = text.chars().take(60).collect();
                return Err(Error::TooLong {
                    needed: row.len(),
                    context,
                    preview,
                });
            }
            row.truncate(context);
            row[context - 1] = EOT as i64;
        }
        row.resize(context, 0);
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_ids_back_as_open_clip_does() {
        // Expected strings from open_clip 3.3's `_tokenizer.decode`.
        let t = Tokenizer::global();
        let ids = [
            49406, 320, 1125, 539, 320, 1929, 267, 15304, 256, 49407, 0, 0,
        ];
        assert_eq!(
            t.decode(&ids).unwrap(),
            "<start_of_text>a photo of a dog , caf\u{e9} ! <end_of_text>!!"
        );
        // Invalid and cut UTF-8 (a lone lead byte, a truncated sequence, 0xFF, a surrogate's
        // encoding) each read as Python's errors="replace" reads them.
        let bytes = [
            127, 32, 158, 224, 288, 187, 172, 253, 246, 478, 169, 254, 478, 216, 476,
        ];
        assert_eq!(
            t.decode(&bytes).unwrap(),
            "\u{fffd}A\u{fffd}A \u{fffd}\u{1f600} \u{fffd}\u{fffd}\u{fffd} \u{1c}  "
        );
        assert_eq!(t.decode(&[49408]), Err(49408));
    }

    #[test]
    fn basic_prompt() {
        let t = Tokenizer::global();
        let row = t.tokenize("a photo of a cat.", 77, true).unwrap();
        assert_eq!(&row[..8], &[49406, 320, 1125, 539, 320, 2368, 269, 49407]);
        assert!(row[8..].iter().all(|&x| x == 0));
    }

    #[test]
    fn truncation_and_refusal() {
        let t = Tokenizer::global();
        let long = "x ".repeat(100);
        let row = t.tokenize(&long, 77, true).unwrap();
        assert_eq!(row.len(), 77);
        assert_eq!(row[76], EOT as i64);
        assert!(t.tokenize(&long, 77, false).is_err());
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let t = Tokenizer::global();
        for s in [
            "",
            "\0",
            "\u{301}",
            "\u{202e}abc",
            "👨\u{200d}👩\u{200d}👧",
            "\u{fffd}",
            "<|endoftext|>",
        ] {
            t.tokenize(s, 77, true).unwrap();
        }
        let big = "ab\u{e9} ".repeat(250_000);
        t.tokenize(&big, 77, true).unwrap();
    }
}
