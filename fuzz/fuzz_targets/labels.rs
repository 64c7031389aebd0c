//! Any bytes as a class-name or template file (`--classnames`, `--templates`), as text and as
//! CLIP_benchmark's JSON (`FILE.json`): names or an error naming the file, never a panic; what
//! is accepted is non-empty, and every accepted template has its `{}` slot.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!(
        "pyramidclip-fuzz-labels-{}.txt",
        std::process::id()
    ));
    std::fs::write(&path, data).unwrap();
    use pyramidclip::data::labels;
    if let Ok(names) = labels::read_classnames(&path) {
        assert!(!names.is_empty());
        let _ = labels::folder_labels(
            &names,
            &labels::FolderScheme::Sorted,
            "custom",
            &names,
            Some(&path),
        )
        .unwrap();
    }
    match labels::read_templates(&path) {
        Ok(t) => {
            assert!(!t.is_empty() && t.iter().all(|l| l.contains("{}")));
            let _ = labels::fill(&t[0], "cat");
        }
        Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
    }
    let json = path.with_extension("json");
    std::fs::write(&json, data).unwrap();
    let named = |e: &dyn std::fmt::Display| e.to_string().contains(&json.display().to_string());
    for dataset in ["flowers", "wds/vtab/pets", "imagenet1k"] {
        match labels::read_classnames_for(&json, dataset) {
            Ok(names) => assert!(!names.is_empty()),
            Err(e) => assert!(named(&e), "{e}"),
        }
        match labels::read_json_prompts(&json, dataset) {
            Ok(labels::JsonPrompts::Templates(t)) => {
                assert!(!t.is_empty() && t.iter().all(|l| l.contains("{}")))
            }
            Ok(labels::JsonPrompts::PerClass(per)) => {
                assert!(per.values().all(|p| !p.is_empty()))
            }
            Err(e) => assert!(named(&e), "{e}"),
        }
    }
});
