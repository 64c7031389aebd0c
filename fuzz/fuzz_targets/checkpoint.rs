//! Any bytes given as a checkpoint (zip, legacy stream or safetensors) must give an error or
//! tensors, never a panic, a hang or an unbounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("pyramidclip-fuzz-{}.pth", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(data).unwrap();
    drop(f);
    if let Ok(ck) = pyramidclip::Checkpoint::open(&path) {
        let keys: Vec<String> = ck.keys().take(64).cloned().collect();
        for k in keys {
            if ck.entries[&k].numel() <= 1 << 20 {
                let _ = ck.read_f32(&k);
            }
        }
        let _ =
            pyramidclip::checkpoint::detect_config(&ck, &pyramidclip::Registry::builtin(), None);
    }
});
