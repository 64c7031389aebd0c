//! Text cleaning as the reference does it: ftfy 6's `fix_text` with default options, then
//! `html.unescape` twice, whitespace collapsed, stripped. Written from ftfy's documented
//! behaviour; its character classes and code pages are data in `tables.rs`.

use super::tables;
use std::collections::HashMap;
use std::sync::OnceLock;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

struct Data {
    badness: regex::Regex,
    utf8_detector: fancy_regex::Regex,
    altered_utf8: regex::bytes::Regex,
    lossy_utf8: regex::bytes::Regex,
    ftfy_entity: regex::Regex,
    charref: regex::Regex,
    ansi: regex::Regex,
    whitespace: regex::Regex,
    /// Per encoding: its name, char -> byte, byte -> char.
    encodings: Vec<(&'static str, HashMap<char, u8>, Vec<char>)>,
    ftfy_entities: HashMap<&'static str, &'static str>,
    html5: HashMap<&'static str, &'static str>,
    invalid_charrefs: HashMap<u32, &'static str>,
    width: HashMap<char, &'static str>,
    ligatures: HashMap<char, &'static str>,
    lower: HashMap<char, &'static str>,
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let encodings = tables::ENCODINGS
            .iter()
            .map(|(name, table)| {
                let chars: Vec<char> = table.chars().collect();
                let mut enc = HashMap::new();
                for (b, &c) in chars.iter().enumerate() {
                    if b >= 0x80 || b == 0x1a {
                        enc.entry(c).or_insert(b as u8);
                    }
                }
                (*name, enc, chars)
            })
            .collect();
        let map_u32 = |t: &'static [(u32, &'static str)]| {
            t.iter().map(|&(k, v)| (char::from_u32(k).unwrap(), v)).collect::<HashMap<_, _>>()
        };
        Data {
            badness: regex::Regex::new(tables::BADNESS_RE).expect("badness pattern"),
            utf8_detector: fancy_regex::Regex::new(tables::UTF8_DETECTOR_RE).expect("utf8 detector pattern"),
            altered_utf8: regex::bytes::Regex::new(
                r"(?-u)[\xc2\xc3\xc5\xce\xd0\xd9][ ]|[\xe2\xe3][ ][\x80-\x84\x86-\x9f\xa1-\xbf]|[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf][ ]|[\xf0][ ][\x80-\xbf][\x80-\xbf]|[\xf0][\x80-\xbf][ ][\x80-\xbf]|[\xf0][\x80-\xbf][\x80-\xbf][ ]",
            )
            .unwrap(),
            lossy_utf8: regex::bytes::Regex::new(
                r"(?-u)[\xc2-\xdf][\x1a]|[\xc2-\xc3][?]|\xed[\xa0-\xaf][\x1a?]\xed[\xb0-\xbf][\x1a?\x80-\xbf]|\xed[\xa0-\xaf][\x1a?\x80-\xbf]\xed[\xb0-\xbf][\x1a?]|[\xe0-\xef][\x1a?][\x1a\x80-\xbf]|[\xe0-\xef][\x1a\x80-\xbf][\x1a?]|[\xf0-\xf4][\x1a?][\x1a\x80-\xbf][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a?][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x80-\xbf][\x1a?]|\x1a",
            )
            .unwrap(),
            ftfy_entity: regex::Regex::new(r"&#?[0-9A-Za-z]{1,24};").unwrap(),
            charref: regex::Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)").unwrap(),
            ansi: regex::Regex::new(r"\x1b\[((?:\d|;)*)([a-zA-Z])").unwrap(),
            whitespace: regex::Regex::new(r"\s+").unwrap(),
            encodings,
            ftfy_entities: tables::FTFY_ENTITIES.iter().copied().collect(),
            html5: tables::HTML5_ENTITIES.iter().copied().collect(),
            invalid_charrefs: tables::INVALID_CHARREFS.iter().copied().collect(),
            width: map_u32(&tables::WIDTH_MAP),
            ligatures: map_u32(&tables::LIGATURES),
            lower: map_u32(&tables::LOWER),
        }
    })
}

/// `html.unescape` from Python's standard library.
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let d = data();
    d.charref
        .replace_all(s, |c: &regex::Captures| {
            let body = &c[1];
            if let Some(num) = body.strip_prefix('#') {
                let (digits, radix) = match num.strip_prefix(['x', 'X']) {
                    Some(h) => (h, 16),
                    None => (num, 10),
                };
                let digits = digits.trim_end_matches(';');
                let mut n: u64 = 0;
                for ch in digits.chars() {
                    n = n
                        .saturating_mul(radix)
                        .saturating_add(ch.to_digit(radix as u32).unwrap_or(0) as u64);
                }
                if let Some(r) = u32::try_from(n)
                    .ok()
                    .and_then(|n| d.invalid_charrefs.get(&n))
                {
                    return r.to_string();
                }
                if (0xD800..=0xDFFF).contains(&n) || n > 0x10FFFF {
                    return "\u{FFFD}".to_string();
                }
                if tables::INVALID_CODEPOINTS
                    .binary_search(&(n as u32))
                    .is_ok()
                {
                    return String::new();
                }
                return char::from_u32(n as u32)
                    .map(String::from)
                    .unwrap_or_else(|| "\u{FFFD}".into());
            }
            if let Some(v) = d.html5.get(body) {
                return v.to_string();
            }
            // The longest known entity name that prefixes the text (HTML5's rule).
            let idx: Vec<usize> = body.char_indices().map(|(i, _)| i).collect();
            for x in (2..idx.len()).rev() {
                if let Some(v) = d.html5.get(&body[..idx[x]]) {
                    return format!("{v}{}", &body[idx[x]..]);
                }
            }
            format!("&{body}")
        })
        .into_owned()
}

/// ftfy's own entity decoding: only complete `&...;` entities, uppercase variants included.
fn ftfy_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let d = data();
    d.ftfy_entity
        .replace_all(s, |c: &regex::Captures| {
            let t = &c[0];
            if let Some(v) = d.ftfy_entities.get(t) {
                v.to_string()
            } else if t.starts_with("&#") {
                let u = html_unescape(t);
                if u.contains(';') {
                    t.to_string()
                } else {
                    u
                }
            } else {
                t.to_string()
            }
        })
        .into_owned()
}

pub fn is_bad(text: &str) -> bool {
    data().badness.is_match(text)
}

fn possible_encoding(text: &str, enc: &HashMap<char, u8>) -> bool {
    text.chars()
        .all(|c| ((c as u32) < 0x80 && c != '\u{1a}') || enc.contains_key(&c))
}

fn encode(text: &str, enc: &HashMap<char, u8>) -> Vec<u8> {
    text.chars()
        .map(|c| {
            if (c as u32) < 0x80 && c != '\u{1a}' {
                c as u8
            } else {
                enc[&c]
            }
        })
        .collect()
}

fn restore_byte_a0(b: &[u8]) -> Vec<u8> {
    // "à" followed by a space lost its 0xA0 when it starts a word (but not in Portuguese "às" etc).
    let mut out = Vec::with_capacity(b.len() + 4);
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0xc3 && b.get(i + 1) == Some(&b' ') {
            let rest = &b[i + 2..];
            let keep = [&b" "[..], b"quele", b"quela", b"quilo", b"s "]
                .iter()
                .any(|p| rest.starts_with(p));
            if !keep {
                out.extend_from_slice(b"\xc3\xa0 ");
                i += 2;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    data()
        .altered_utf8
        .replace_all(&out, |c: &regex::bytes::Captures| {
            c[0].iter()
                .map(|&x| if x == b' ' { 0xa0 } else { x })
                .collect::<Vec<u8>>()
        })
        .into_owned()
}

/// UTF-8 plus CESU-8 surrogate pairs and Java's two-byte NUL.
fn decode_utf8_variants(b: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(b.len());
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0xc0 && b.get(i + 1) == Some(&0x80) {
            out.push_str(std::str::from_utf8(&b[start..i]).ok()?);
            out.push('\0');
            i += 2;
            start = i;
        } else if b[i] == 0xed
            && i + 6 <= b.len()
            && (0xa0..=0xaf).contains(&b[i + 1])
            && (0x80..=0xbf).contains(&b[i + 2])
            && b[i + 3] == 0xed
            && (0xb0..=0xbf).contains(&b[i + 4])
            && (0x80..=0xbf).contains(&b[i + 5])
        {
            out.push_str(std::str::from_utf8(&b[start..i]).ok()?);
            let hi = 0xd000 | ((b[i + 1] as u32 & 0x3f) << 6) | (b[i + 2] as u32 & 0x3f);
            let lo = 0xd000 | ((b[i + 4] as u32 & 0x3f) << 6) | (b[i + 5] as u32 & 0x3f);
            out.push(char::from_u32(
                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00),
            )?);
            i += 6;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(std::str::from_utf8(&b[start..]).ok()?);
    Some(out)
}

fn fix_c1_controls(text: &str) -> String {
    let d = data();
    let w1252 = &d
        .encodings
        .iter()
        .find(|e| e.0 == "sloppy-windows-1252")
        .unwrap()
        .2;
    text.chars()
        .map(|c| {
            if ('\u{80}'..='\u{9f}').contains(&c) {
                w1252[c as usize]
            } else {
                c
            }
        })
        .collect()
}

fn decode_inconsistent_utf8(text: &str) -> String {
    let d = data();
    let total = text.chars().count();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in d.utf8_detector.find_iter(text).flatten() {
        out.push_str(&text[last..m.start()]);
        let sub = m.as_str();
        if sub.chars().count() < total && is_bad(sub) {
            out.push_str(&fix_encoding(sub));
        } else {
            out.push_str(sub);
        }
        last = m.end();
    }
    out.push_str(&text[last..]);
    out
}

fn fix_encoding_step(text: &str) -> String {
    if text.is_empty() || text.is_ascii() || !is_bad(text) {
        return text.to_string();
    }
    let d = data();
    let mut latin1_possible = false;
    for (name, enc, _) in &d.encodings {
        if !possible_encoding(text, enc) {
            continue;
        }
        if *name == "latin-1" {
            latin1_possible = true;
        }
        let mut bytes = encode(text, enc);
        if *name != "macroman" && d.altered_utf8.is_match(&bytes) {
            bytes = restore_byte_a0(&bytes);
        }
        if name.starts_with("sloppy") {
            bytes = d
                .lossy_utf8
                .replace_all(&bytes, &b"\xef\xbf\xbd"[..])
                .into_owned();
        }
        let decoded = if bytes.contains(&0xed) || bytes.contains(&0xc0) {
            decode_utf8_variants(&bytes)
        } else {
            String::from_utf8(bytes).ok()
        };
        if let Some(fixed) = decoded {
            return fixed;
        }
    }
    if d.utf8_detector.is_match(text).unwrap_or(false) {
        let fixed = decode_inconsistent_utf8(text);
        if fixed != text {
            return fixed;
        }
    }
    if latin1_possible {
        // latin-1 bytes read as (strict) windows-1252: fails on its five undefined bytes.
        let w1252 = &d
            .encodings
            .iter()
            .find(|e| e.0 == "sloppy-windows-1252")
            .unwrap()
            .2;
        let undefined = ['\u{81}', '\u{8d}', '\u{8f}', '\u{90}', '\u{9d}'];
        if !text.chars().any(|c| undefined.contains(&c)) {
            let fixed: String = text
                .chars()
                .map(|c| {
                    if (c as u32) < 0x100 {
                        w1252[c as usize]
                    } else {
                        c
                    }
                })
                .collect();
            if fixed != text {
                return fixed;
            }
        }
    }
    if text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        return fix_c1_controls(text);
    }
    text.to_string()
}

pub fn fix_encoding(text: &str) -> String {
    let mut text = text.to_string();
    loop {
        let next = fix_encoding_step(&text);
        if next == text {
            return text;
        }
        text = next;
    }
}

fn is_control(c: char) -> bool {
    tables::CONTROL_CHARS.binary_search(&(c as u32)).is_ok()
}

fn fix_segment(segment: &str, unescape: bool) -> String {
    let d = data();
    let mut text = segment.to_string();
    loop {
        let orig = text.clone();
        if unescape {
            text = ftfy_unescape(&text);
        }
        text = fix_encoding(&text);
        if text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
            text = fix_c1_controls(&text);
        }
        if !text.is_ascii() {
            // Ligatures, then character width, then quotes, in one pass (each step applied to
            // what the previous one produced, as ftfy's sequence of fixers does).
            let mut out = String::with_capacity(text.len());
            for c in text.chars() {
                match d.ligatures.get(&c) {
                    Some(s) => s.chars().for_each(|c| push_width_quote(d, c, &mut out)),
                    None => push_width_quote(d, c, &mut out),
                }
            }
            text = out;
        }
        text = text
            .replace("\r\n", "\n")
            .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
        if text.contains('\x1b') {
            text = d.ansi.replace_all(&text, "").into_owned();
        }
        if text.chars().any(is_control) {
            text = text.chars().filter(|&c| !is_control(c)).collect();
        }
        if is_nfc_quick(text.chars()) != IsNormalized::Yes {
            text = text.nfc().collect();
        }
        if text == orig {
            return text;
        }
    }
}

fn uncurl(c: char) -> char {
    match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
        '\u{201c}'..='\u{201f}' => '"',
        other => other,
    }
}

fn push_width_quote(d: &Data, c: char, out: &mut String) {
    match d.width.get(&c) {
        Some(s) => out.extend(s.chars().map(uncurl)),
        None => out.push(uncurl(c)),
    }
}

/// ftfy's `fix_text` with its default configuration.
pub fn fix_text(text: &str) -> String {
    // Plain printable ASCII without entities is left unchanged by every fixer.
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\t')
        && !text.contains('&')
    {
        return text.to_string();
    }
    const MAX_SEGMENT: usize = 1_000_000;
    let mut unescape = true;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        if let Some((cut, _)) = rest[..end].char_indices().nth(MAX_SEGMENT) {
            end = cut;
        }
        let segment = &rest[..end];
        if segment.contains('<') {
            // ftfy leaves entities alone in text that looks like HTML, from there on.
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
        rest = &rest[end..];
    }
    out
}

/// The reference's `basic_clean` + `whitespace_clean`, then lowercase.
pub fn clean(text: &str) -> String {
    let t = fix_text(text);
    let t = html_unescape(&html_unescape(&t));
    let t = data().whitespace.replace_all(t.trim(), " ");
    lowercase(t.trim())
}

/// open_clip's `basic_clean`: ftfy, HTML unescaped twice, stripped.
fn basic(text: &str) -> String {
    let t = fix_text(text);
    html_unescape(&html_unescape(&t)).trim().to_string()
}

/// Runs of whitespace as one space, stripped (`" ".join(text.split())`).
fn collapse(text: &str) -> String {
    data().whitespace.replace_all(text.trim(), " ").into_owned()
}

/// open_clip's cleaning of a text before a HuggingFace tokenizer (`tokenizer_kwargs.clean`).
pub fn hf_clean(text: &str, how: crate::models::config::TextClean) -> String {
    use crate::models::config::TextClean;
    match how {
        TextClean::Whitespace => collapse(&basic(text)),
        TextClean::Lower => lowercase(&collapse(&basic(text))),
        // big_vision's `canonicalize_text`: `_` to a space, Python's `string.punctuation`
        // (ASCII's) removed, lowercased, whitespace collapsed.
        TextClean::Canonicalize => {
            let t: String = basic(text)
                .replace('_', " ")
                .chars()
                .filter(|c| !c.is_ascii_punctuation())
                .collect();
            collapse(&lowercase(&t))
        }
    }
}

/// Python's `str.lower()`: its own case table (so the result does not depend on the Rust
/// toolchain's Unicode version), with the final-sigma rule for U+03A3.
pub fn lowercase(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let d = data();
    let chars: Vec<char> = s.chars().collect();
    let cased = |c: char| c.is_lowercase() || c.is_uppercase() || d.lower.contains_key(&c);
    let ignorable = |c: char| {
        matches!(c, '\'' | '.' | ':' | '^' | '`' | '\u{b7}' | '\u{2019}')
            || unicode_normalization::char::is_combining_mark(c)
    };
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == '\u{3a3}' {
            let before = chars[..i]
                .iter()
                .rev()
                .find(|&&p| !ignorable(p))
                .is_some_and(|&p| cased(p));
            let after = chars[i + 1..]
                .iter()
                .find(|&&p| !ignorable(p))
                .is_some_and(|&p| cased(p));
            out.push(if before && !after {
                '\u{3c2}'
            } else {
                '\u{3c3}'
            });
        } else if let Some(l) = d.lower.get(&c) {
            out.push_str(l);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftfy_examples() {
        assert_eq!(fix_text("sÃ³"), "só");
        assert_eq!(fix_text("ﬂuﬃeﬆ"), "fluffiest");
        assert_eq!(fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(
            fix_text("\u{201c}here\u{2019}s a test\u{201d}"),
            "\"here's a test\""
        );
        assert_eq!(fix_text("&lt;b&gt;"), "<b>");
        assert_eq!(fix_text("<b>&amp;</b>"), "<b>&amp;</b>");
    }

    #[test]
    fn hf_cleaning_as_open_clip() {
        use crate::models::config::TextClean;
        let t = "  A_Photo of the  CAT!! &amp;amp; \u{201c}caf\u{e9}\u{201d} ";
        assert_eq!(
            hf_clean(t, TextClean::Canonicalize),
            "a photo of the cat caf\u{e9}"
        );
        assert_eq!(
            hf_clean(t, TextClean::Whitespace),
            "A_Photo of the CAT!! & \"caf\u{e9}\""
        );
        assert_eq!(
            hf_clean(t, TextClean::Lower),
            "a_photo of the cat!! & \"caf\u{e9}\""
        );
    }

    #[test]
    fn html_unescape_like_python() {
        assert_eq!(html_unescape("&amp;amp;"), "&amp;");
        assert_eq!(html_unescape("&#128;"), "\u{20ac}");
        assert_eq!(html_unescape("&ampx"), "&x");
        assert_eq!(html_unescape("&#xD800;"), "\u{fffd}");
        assert_eq!(html_unescape("&nosuch;"), "&nosuch;");
    }
}
