//! Any bytes as a `retrieval --captions` file, in each of the formats and detected:
//! entries or an error saying where, never a panic; what is accepted has at least one image,
//! and every image named has a non-empty name. Every caption (and the whole text) through
//! `captioning`'s PTB tokenizer: tokens, never an empty one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyramidclip::data::captions::{detect, parse, Format, Pick};

fn tokenized(text: &str) {
    let tokens = pyramidclip::caption_metrics::tokenize(text);
    let empty = tokens.starts_with(' ') || tokens.ends_with(' ') || tokens.contains("  ");
    assert!(!empty, "an empty token: {text:?} -> {tokens:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    tokenized(text);
    let detected = detect(std::path::Path::new("captions"), text);
    let formats = [
        Format::Jsonl,
        Format::Flickr,
        Format::Coco,
        Format::Karpathy,
        Format::ImagePaths,
        Format::Xm3600,
        Format::Csv,
        detected,
    ];
    for f in formats {
        if let Ok(entries) = parse(text, f, Pick::default()) {
            assert!(!entries.is_empty());
            assert!(entries.iter().all(|e| !e.image.trim().is_empty()), "{f:?}");
            for caption in entries.iter().flat_map(|e| &e.captions) {
                tokenized(caption);
            }
        }
    }
    // The reader on a file: the same, with the file named in any error.
    let dir =
        std::env::temp_dir().join(format!("pyramidclip-fuzz-captions-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("captions.txt");
    std::fs::write(&path, data).unwrap();
    if let Err(e) =
        pyramidclip::data::captions::read(&path, None, Pick::default(), Some(&dir), true)
    {
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
});
