//! Any bytes as an Arrow IPC file (a Hugging Face `datasets` cache shard): a table or an error,
//! never a panic; every byte range handed out lies inside the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyramidclip::data::arrow;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = arrow::read(data) else {
        return;
    };
    for path in [&["image_0", "bytes"][..], &["caption_0"], &["id"]] {
        if let Ok(ranges) = t.byte_ranges(path) {
            for (off, len) in ranges.into_iter().flatten() {
                assert!(off + len <= data.len() as u64);
            }
        }
        let _ = t.strings(path);
        let _ = t.ints(path);
    }
    let _ = t.rows();
});
