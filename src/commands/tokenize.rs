//! `pyramidclip tokenize`: token ids of texts, one JSON array per line.

use super::{exit, fail};
use crate::cli::TokenizeArgs;
use crate::tokenizer::{hf::HfTokenizer, TextTokenizer};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;

fn parse_json_line(line: &str, path: &Path, no: usize) -> anyhow::Result<String> {
    // Lone surrogates (written as \ud800 escapes) are not valid JSON for serde; the reference
    // (Python) keeps them and ftfy turns each into U+FFFD, so do that up front.
    let fixed = replace_lone_surrogates(line);
    let v: serde_json::Value = serde_json::from_str(&fixed).map_err(|e| {
        fail(
            exit::INPUT,
            format!("{} line {no}: not JSON: {e}", path.display()),
        )
    })?;
    match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Object(o) => o
            .get("text")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                fail(
                    exit::INPUT,
                    format!(
                        "{} line {no}: object has no \"text\" string",
                        path.display()
                    ),
                )
            }),
        _ => Err(fail(
            exit::INPUT,
            format!(
                "{} line {no}: expected a JSON string or an object with \"text\"",
                path.display()
            ),
        )),
    }
}

/// Replaces `\uD800`-`\uDFFF` escapes that do not form a valid pair with `\uFFFD`.
fn replace_lone_surrogates(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |i: usize| -> Option<u32> {
        if i + 6 <= b.len() && b[i] == b'\\' && (b[i + 1] == b'u') {
            u32::from_str_radix(std::str::from_utf8(&b[i + 2..i + 6]).ok()?, 16).ok()
        } else {
            None
        }
    };
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            // Count preceding backslashes: an escaped backslash is not an escape start.
            if let Some(u) = hex(i) {
                if (0xD800..0xDC00).contains(&u) {
                    if matches!(hex(i + 6), Some(l) if (0xDC00..0xE000).contains(&l)) {
                        i += 12;
                        continue;
                    }
                    out.push_str(&s[last..i]);
                    out.push_str("\\ufffd");
                    i += 6;
                    last = i;
                    continue;
                } else if (0xDC00..0xE000).contains(&u) {
                    out.push_str(&s[last..i]);
                    out.push_str("\\ufffd");
                    i += 6;
                    last = i;
                    continue;
                }
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    out.push_str(&s[last..]);
    out
}

pub fn run(args: TokenizeArgs) -> anyhow::Result<()> {
    let mut inputs = args.texts.clone();
    if let Some(p) = &args.jsonl {
        let text = std::fs::read_to_string(p).map_err(|e| {
            fail(
                exit::INPUT,
                format!("cannot read --jsonl {}: {e}", p.display()),
            )
        })?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            inputs.push(parse_json_line(line, p, i + 1)?);
        }
    }
    if inputs.is_empty() {
        return Err(fail(
            exit::USAGE,
            "nothing to tokenize: give TEXT arguments or --jsonl FILE",
        ));
    }
    let tok = match &args.tokenizer {
        Some(p) => TextTokenizer::Hf(std::sync::Arc::new(
            HfTokenizer::open(p, args.clean, args.strip_sep_token)
                .map_err(|e| fail(exit::INPUT, format!("--tokenizer: {e}")))?,
        )),
        None => TextTokenizer::Clip,
    };
    let rows: Vec<Result<Vec<i64>, crate::tokenizer::Error>> = inputs
        .par_iter()
        .map(|t| tok.tokenize(t, args.context_length, !args.no_truncate))
        .collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for r in rows {
        let row = r?;
        writeln!(out, "{}", serde_json::to_string(&row)?)?;
    }
    out.flush()?;
    Ok(())
}
