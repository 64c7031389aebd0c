//! Decoding and preprocessing any bytes: an error or an n x n crop, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(crop) = pyramidclip::preprocess::crop_u8_from_bytes(data, 32) {
        assert_eq!(crop.len(), 3 * 32 * 32);
    }
});
