//! Tokenizing any text: a row of the context length, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let row = pyramidclip::tokenizer::Tokenizer::global()
        .tokenize(&text, 77, true)
        .unwrap();
    assert_eq!(row.len(), 77);
    assert_eq!(row[0], 49406);
});
