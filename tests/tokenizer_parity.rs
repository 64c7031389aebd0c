//! Every case of the reference tokenizer's output is reproduced id for id.

use crate::util::*;
use pyramidclip::tokenizer::Tokenizer;

fn cases() -> Vec<(String, Vec<i64>)> {
    let text = std::fs::read_to_string(fixtures().join("tokenizer_cases.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["text"].as_str().unwrap().to_string(),
                v["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn tokenizer_cases_match_exactly() {
    let tok = Tokenizer::global();
    let cases = cases();
    assert!(cases.len() > 700);
    let mut bad = Vec::new();
    for (text, ids) in &cases {
        let row = tok.tokenize(text, 77, true).unwrap();
        // Padding follows the end token; "!" is id 0 inside the text.
        let end = row.iter().rposition(|&x| x == 49407).unwrap() + 1;
        let ours = row[..end].to_vec();
        if &ours != ids {
            bad.push(format!("{text:?}\n  ours {ours:?}\n  ref  {ids:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

#[test]
fn manifest_prompts_match_expected_tokens() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap())
            .unwrap();
    let exp = expected();
    let tokens: Vec<Vec<i64>> = exp["tokens"].to_vec2().unwrap();
    for (p, row) in manifest["prompts"].as_array().unwrap().iter().zip(tokens) {
        assert_eq!(
            Tokenizer::global()
                .tokenize(p.as_str().unwrap(), 77, true)
                .unwrap(),
            row,
            "{p}"
        );
    }
}
