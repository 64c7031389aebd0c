//! Decoding and preprocessing any bytes: an error or an n x n crop, never a panic; the EXIF
//! orientation (what a Hugging Face image column applies) found or not, never a panic. The
//! resize modes: the centre crop, open_clip's `longest` (padded, with PIL's BILINEAR), and its
//! squash on the EXIF-turned image.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(crop) = pyramidclip::preprocess::crop_u8_from_bytes(
        data,
        32,
        pyramidclip::preprocess::ResizeMode::Shortest,
    ) {
        assert_eq!(crop.len(), 3 * 32 * 32);
        let padded = pyramidclip::preprocess::crop_u8_from_bytes(
            data,
            32,
            pyramidclip::preprocess::Resize {
                mode: pyramidclip::preprocess::ResizeMode::Longest,
                interpolation: pyramidclip::preprocess::Interpolation::Bilinear,
            },
        )
        .unwrap();
        assert_eq!(padded.len(), 3 * 32 * 32);
    }
    if pyramidclip::preprocess::decode::exif_orientation(data).is_some() {
        if let Ok(img) = pyramidclip::preprocess::decode::decode_exif_transposed(data) {
            let squashed = pyramidclip::preprocess::crop_u8_from_image(
                img,
                32,
                pyramidclip::preprocess::ResizeMode::Squash,
            );
            assert_eq!(squashed.len(), 3 * 32 * 32);
        }
    }
});
