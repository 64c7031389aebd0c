//! Any bytes as a class-name or template file (`--classnames`, `--templates`): names or an
//! error naming the file, never a panic; what is accepted is non-empty, and every accepted
//! template has its `{}` slot.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("pyramidclip-fuzz-labels-{}.txt", std::process::id()));
    std::fs::write(&path, data).unwrap();
    use pyramidclip::data::labels;
    if let Ok(names) = labels::read_classnames(&path) {
        assert!(!names.is_empty());
        let _ = labels::folder_labels(&names, &labels::FolderScheme::Sorted, "custom", &names, Some(&path)).unwrap();
    }
    match labels::read_templates(&path) {
        Ok(t) => {
            assert!(!t.is_empty() && t.iter().all(|l| l.contains("{}")));
            let _ = labels::fill(&t[0], "cat");
        }
        Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
    }
});
