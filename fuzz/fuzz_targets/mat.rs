//! Any bytes as a MATLAB file: variables or a one-line error, never a panic; and as the
//! Flowers102 split file, samples whose labels lie inside the class list, or an error naming it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyramidclip::data::{listed, mat};

fuzz_target!(|data: &[u8]| {
    if let Err(e) = mat::parse(data) {
        assert!(!e.contains('\n'), "{e}");
    }
    let dir = std::env::temp_dir().join(format!("pyramidclip-fuzz-mat-{}", std::process::id()));
    let base = dir.join("flowers-102");
    std::fs::create_dir_all(base.join("jpg")).unwrap();
    std::fs::write(base.join("setid.mat"), data).unwrap();
    std::fs::write(base.join("imagelabels.mat"), data).unwrap();
    match listed::samples(listed::Kind::Flowers, &base, "test") {
        Ok((s, classes)) => assert!(s.iter().all(|s| s.label < classes.len())),
        Err(e) => assert!(e.to_string().contains(".mat"), "{e}"),
    }
});
