//! Any bytes as the stored blocking file (`bench --what blocking`): an entry with a usable
//! blocking, nothing, or an error naming the file, never a panic; storing over any file leaves
//! one that reads back what was stored.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyramidclip::native::gemm::Isa;
use pyramidclip::tune::{lookup, store, Entry};

fuzz_target!(|data: &[u8]| {
    let dir =
        std::env::temp_dir().join(format!("pyramidclip-fuzz-blocking-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("gemm-blocking.json");
    std::fs::write(&path, data).unwrap();
    for threads in [1, 2, 64] {
        match lookup(&path, "cpu", Isa::Avx512, threads) {
            Ok(Some(e)) => {
                let b = e.blocking();
                assert!(b.kc >= 1 && b.mc >= 1, "{e:?}");
            }
            Ok(None) => {}
            Err(e) => assert!(e.to_string().contains("gemm-blocking.json"), "{e}"),
        }
    }
    let mine = Entry {
        cpu_model: "fuzz cpu".into(),
        isa: Isa::Avx512.name().into(),
        threads: 3,
        kc: 256,
        mc: 224,
        speedup: 1.1,
        default_kc: 1024,
        default_mc: 336,
        version: "fuzz".into(),
    };
    store(&path, &mine).unwrap();
    assert_eq!(
        lookup(&path, "fuzz cpu", Isa::Avx512, 3).unwrap(),
        Some(mine)
    );
});
