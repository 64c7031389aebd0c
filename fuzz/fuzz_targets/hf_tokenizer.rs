//! A HuggingFace tokenizer: any bytes as its `tokenizer.json` give an error or a tokenizer (with
//! or without `strip_sep_token`), and any text through the fixture's SigLIP tokenizer, or its
//! BERT WordPiece one with the separator stripped, a row of the context length; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyramidclip::models::config::TextClean;
use pyramidclip::tokenizer::hf::HfTokenizer;
use std::path::Path;
use std::sync::OnceLock;

fn fixture(bert: bool) -> &'static HfTokenizer {
    static SIGLIP: OnceLock<HfTokenizer> = OnceLock::new();
    static BERT: OnceLock<HfTokenizer> = OnceLock::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/clip");
    if bert {
        BERT.get_or_init(|| {
            HfTokenizer::open(&dir.join("bert-tokenizer"), TextClean::Whitespace, true).unwrap()
        })
    } else {
        SIGLIP.get_or_init(|| {
            HfTokenizer::open(&dir.join("siglip-tokenizer"), TextClean::Canonicalize, false)
                .unwrap()
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let strip_sep = mode & 2 != 0;
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        for ctx in [1, 16, 64] {
            let row = fixture(strip_sep).tokenize(&text, ctx, true).unwrap();
            assert_eq!(row.len(), ctx);
        }
    } else {
        let dir = std::env::temp_dir().join(format!("pyramidclip-fuzz-hf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tokenizer.json"), rest).unwrap();
        if let Ok(t) = HfTokenizer::open(&dir, TextClean::Whitespace, strip_sep) {
            let _ = t.tokenize("a photo of a cat", 16, true);
        }
    }
});
