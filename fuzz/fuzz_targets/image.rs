//! Decoding and preprocessing any bytes: an error or an n x n crop, never a panic; the EXIF
//! orientation (what a Hugging Face image column applies) found or not, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(crop) = pyramidclip::preprocess::crop_u8_from_bytes(data, 32) {
        assert_eq!(crop.len(), 3 * 32 * 32);
    }
    if pyramidclip::preprocess::decode::exif_orientation(data).is_some() {
        if let Ok(img) = pyramidclip::preprocess::decode::decode_exif_transposed(data) {
            assert_eq!(pyramidclip::preprocess::crop_u8_from_image(img, 32).len(), 3 * 32 * 32);
        }
    }
});
