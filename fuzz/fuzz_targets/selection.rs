//! Any bytes as a `caption-selection --captions` file, in each format and detected: instances
//! or an error saying where, never a panic; what is accepted has at least one instance, each
//! with 1 to MAX_PER_INSTANCE non-empty image names and captions.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyramidclip::data::selection::{detect, parse, read, Format, MAX_PER_INSTANCE};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for f in [
        Format::SugarCrepe,
        Format::Winoground,
        Format::Jsonl,
        detect(text),
    ] {
        if let Ok(instances) = parse(text, f) {
            assert!(!instances.is_empty());
            for i in &instances {
                assert!((1..=MAX_PER_INSTANCE).contains(&i.images.len()), "{f:?}");
                assert!((1..=MAX_PER_INSTANCE).contains(&i.captions.len()), "{f:?}");
                assert!(i.images.iter().all(|n| !n.trim().is_empty()), "{f:?}");
            }
        }
    }
    // The reader on a file: the same, with the file named in any error.
    let dir =
        std::env::temp_dir().join(format!("pyramidclip-fuzz-selection-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("instances.json");
    std::fs::write(&path, data).unwrap();
    match read(&path, None, Some(&dir), true) {
        Ok(set) => {
            for item in &set.items {
                assert!(item.images.iter().all(|&i| i < set.images.len()));
                assert!(item.captions.iter().all(|&c| c < set.captions.len()));
            }
        }
        Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
    }
});
