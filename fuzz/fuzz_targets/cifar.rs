//! Any bytes as a CIFAR batch (numpy-mode pickle): samples or an error naming the file, never
//! a panic; every row's byte range lies inside the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyramidclip::data::cifar::{samples, Kind};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("pyramidclip-fuzz-cifar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("test_batch");
    std::fs::write(&file, data).unwrap();
    match samples(Kind::Cifar10, &dir, "test") {
        Ok(rows) => {
            for s in rows {
                let m = s.member.unwrap();
                assert!(m.offset + m.len <= data.len() as u64);
                assert_eq!(m.read().unwrap().len(), 3072);
            }
        }
        Err(e) => assert!(e.to_string().contains("test_batch"), "{e}"),
    }
});
