//! Decoding and preprocessing reproduce the reference's pixels for every fixture image.

use crate::util::*;
use pyramidclip::preprocess;

fn check(res: usize) -> Vec<(String, f64, f64)> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap())
            .unwrap();
    let exp = expected();
    let all = exp[&format!("pixels_{res}_u8")]
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let per = 3 * res * res;
    let mut report = Vec::new();
    for (i, p) in manifest["images"].as_array().unwrap().iter().enumerate() {
        let p = p.as_str().unwrap();
        let ours = preprocess::crop_u8(&fixtures().join(p), res, preprocess::ResizeMode::Shortest)
            .unwrap();
        let theirs = &all[i * per..(i + 1) * per];
        let exact = ours.iter().zip(theirs).filter(|(a, b)| a == b).count() as f64 / per as f64;
        let within1 = ours
            .iter()
            .zip(theirs)
            .filter(|(a, b)| (**a as i32 - **b as i32).abs() <= 1)
            .count() as f64
            / per as f64;
        report.push((p.to_string(), exact, within1));
    }
    report
}

#[test]
fn pixels_match_reference_at_224_and_64() {
    let mut failures = Vec::new();
    for res in [224, 64] {
        for (p, exact, within1) in check(res) {
            eprintln!(
                "{res} {p}: exact {:.4}% within one level {:.4}%",
                exact * 100.0,
                within1 * 100.0
            );
            if within1 < 0.999 {
                failures.push(format!(
                    "{res} {p}: {:.4}% within one level",
                    within1 * 100.0
                ));
            }
            // JPEG (RGB and grayscale) and PNG decode with the reference's own decoders: exact.
            let exact_expected = !p.contains("webp");
            if exact_expected && exact < 1.0 {
                failures.push(format!("{res} {p}: only {:.4}% exact", exact * 100.0));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// open_clip's `resize_mode='squash'` (Apple's DFN tags): both sides resized to n, nothing
/// cropped; and `'longest'`: the longer side to n, the aspect kept, centred on a canvas of the
/// image's zero pixel (black; palette entry 0 for the palette PNGs and the GIF).
/// `preprocess --resize-mode squash|longest` gives open_clip's 8-bit levels for every fixture
/// image at 224 and 64 (scripts/dev/squash_reference.py hashed them); the default is the
/// centre crop's, which differs on every image that is not square.
#[test]
fn squashed_and_longest_pixels_are_open_clips() {
    for mode in ["squash", "longest"] {
        resized_pixels_are_open_clips(mode, "bicubic");
    }
}

/// `--interpolation bilinear` (open_clip's CLIPA and PE tags): PIL's BILINEAR (a triangle
/// filter whose support grows with the reduction) gives open_clip's 8-bit levels for every
/// fixture image, squashed and centre-cropped, at 224 and 64
/// (scripts/dev/squash_reference.py).
#[test]
fn bilinear_pixels_are_open_clips() {
    for mode in ["squash", "shortest"] {
        resized_pixels_are_open_clips(mode, "bilinear");
    }
}

fn resized_pixels_are_open_clips(mode: &str, interpolation: &str) {
    use sha2::Digest;
    let file = match interpolation {
        "bicubic" => fixtures().join(format!("clip/{mode}.json")),
        _ => fixtures().join(format!("clip/{interpolation}-{mode}.json")),
    };
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let images: Vec<std::path::PathBuf> = reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| fixtures().join(p.as_str().unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("px.safetensors");
    let levels_of = |n: usize, mode: &str, interpolation: &str| -> Vec<String> {
        let o = bin()
            .args(["preprocess", "--resolution", &n.to_string()])
            .args(["--interpolation", interpolation])
            .args(["--resize-mode", mode, "--out"])
            .arg(&out)
            .args(&images)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let px = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap()["pixels"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let per = 3 * n * n;
        px.chunks(per)
            .map(|img| {
                // ToTensor's levels back from the normalised floats (errors of ~1e-5 of a level).
                let lv: Vec<u8> = img
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let c = i / (n * n);
                        ((v * preprocess::STD[c] + preprocess::MEAN[c]) * 255.0).round() as u8
                    })
                    .collect();
                format!("{:x}", sha2::Sha256::digest(&lv))
            })
            .collect()
    };
    for n in [224usize, 64] {
        let want: Vec<&str> = reference["levels_sha256"][n.to_string()]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert_eq!(want.len(), images.len());
        let ours = levels_of(n, mode, interpolation);
        for ((p, a), b) in images.iter().zip(&ours).zip(&want) {
            assert_eq!(a, b, "{mode} {n} {}", p.display());
        }
        // The reference's resize (shortest side, bicubic) differs on most images.
        let cropped = levels_of(n, "shortest", "bicubic");
        let same = cropped.iter().zip(&want).filter(|(a, b)| a == b).count();
        assert!(same < images.len() / 2, "{n}: {same} equal");
    }
}

#[test]
fn normalisation_matches_reference_floats() {
    // The reference's f32 pixels are (level / 255 - mean) / std in f32 (torchvision's ToTensor
    // then Normalize); the fixture keeps their 8-bit levels (scripts/dev/compact_expected.py
    // checked the round trip to 1e-6). The crate's normalisation must give those floats
    // exactly, computed here element by element.
    let levels = expected()["pixels_64_u8"]
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let n = 64;
    let plane = n * n;
    let want: Vec<f32> = levels
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / plane) % 3;
            (v as f32 / 255.0 - preprocess::MEAN[c]) / preprocess::STD[c]
        })
        .collect();
    let got = expected_pixels(64)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(got.len(), want.len());
    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} of {} pixels differ", want.len());
}

#[test]
fn hugging_face_images_are_turned_by_their_exif_orientation_as_datasets_does() {
    // tests/fixtures/exif (scripts/dev/make_exif_fixture.py): `datasets`' own Image decoding
    // of JPEG, PNG and WebP images with an EXIF orientation (1-8, or none) or only an XMP one
    // (attribute or element form; a PNG's plain and compressed iTXt), and the orientation
    // PIL's getexif() reports.
    use preprocess::decode::Image;
    use sha2::Digest;
    let dir = fixtures().join("exif");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let files = expected.as_object().unwrap();
    assert_eq!(files.len(), 15);
    for (name, want) in files {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let o = want["orientation"].as_u64().map(|o| o as u16);
        assert_eq!(preprocess::decode::exif_orientation(&bytes), o, "{name}");
        let img = preprocess::decode::decode_exif_transposed(&bytes).unwrap();
        let (mode, plane) = match img {
            Image::Bicubic { mode, plane } => (format!("{mode:?}"), plane),
            other => panic!("{name}: opened as {other:?}"),
        };
        assert_eq!(want["mode"], mode, "{name}");
        let size = [plane.width as u64, plane.height as u64];
        assert_eq!(
            size,
            [
                want["size"][0].as_u64().unwrap(),
                want["size"][1].as_u64().unwrap()
            ],
            "{name}"
        );
        let sha = format!("{:x}", sha2::Sha256::digest(&plane.data));
        assert_eq!(sha, want["pixels_sha256"].as_str().unwrap(), "{name}");
        // Without the Hugging Face rule, PIL's plain open leaves a JPEG as stored.
        if name.ends_with(".jpg") && o.is_some_and(|o| o >= 5) {
            let plain = preprocess::decode::decode(&bytes).unwrap();
            assert_eq!(plain.size(), (size[1] as usize, size[0] as usize), "{name}");
        }
    }
}

/// The TIFFs we read ourselves, against Pillow 13 (`scripts/dev/make_tiff_fixture.py`):
/// palette TIFFs (which the `tiff` crate refuses) opened as PIL opens them ("P", resized with
/// NEAREST; Pillow's writer with four compressions, and 1/2/4-bit, big-endian, multi-strip and
/// predictor files written byte by byte), and JPEG-compressed TIFFs (RGB, YCbCr, gray; one
/// strip and several) decoded by libjpeg-turbo strip by strip as libtiff does for PIL; the
/// Orientation tag (2-8, on RGB, palette and JPEG files) applied as Pillow applies it on load;
/// tiled and planar TIFFs written by tifffile (gray, LA, RGB, RGBX, RGBA with associated
/// alpha, palette, JPEG; padded edge tiles), on which the `tiff` crate panics or misreads, and
/// gray + alpha in strips, which it refuses; BigTIFF files, which the `image` crate's format
/// guess does not know.
#[test]
fn tiffs_we_read_ourselves_decode_as_pillow_does() {
    let dir = fixtures().join("tiff");
    decode_as_pillow_lists(&dir, 39);
    tiff_errors(&dir);
}

/// BMP layouts Pillow's writer does not make (`scripts/dev/make_bmp_fixture.py`): RLE8, RLE4,
/// 16-bit 5-5-5 and 5-6-5 (every stored level: PIL scales them by `v * 255 / max`, the `image`
/// crate by another rule), 32-bit BGRX and with alpha masks (V4, V5 headers), top-down.
#[test]
fn bmps_decode_as_pillow_does() {
    decode_as_pillow_lists(&fixtures().join("bmp"), 9);
}

/// Each file of `dir/expected.json` (`count` of them) decodes to the mode, size and pixels
/// Pillow gave (sha256 of its `tobytes()`; "P" as its RGB).
fn decode_as_pillow_lists(dir: &std::path::Path, count: usize) {
    use preprocess::decode::{Image, Mode};
    use sha2::Digest;
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let files = expected.as_object().unwrap();
    assert_eq!(files.len(), count);
    for (name, want) in files {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let img = preprocess::decode::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (mode, plane) = match img {
            Image::Nearest { plane, .. } => ("P", plane),
            Image::Bicubic {
                mode: Mode::RGB,
                plane,
            } => ("RGB", plane),
            Image::Bicubic {
                mode: Mode::L,
                plane,
            } => ("L", plane),
            Image::Bicubic {
                mode: Mode::LA,
                plane,
            } => ("LA", plane),
            Image::Bicubic {
                mode: Mode::RGBA,
                plane,
            } => ("RGBA", plane),
            other => panic!("{name}: opened as {other:?}"),
        };
        assert_eq!(want["mode"], mode, "{name}");
        assert_eq!(
            [plane.width as u64, plane.height as u64],
            [
                want["size"][0].as_u64().unwrap(),
                want["size"][1].as_u64().unwrap()
            ],
            "{name}"
        );
        let sha = format!("{:x}", sha2::Sha256::digest(&plane.data));
        assert_eq!(sha, want["pixels_sha256"].as_str().unwrap(), "{name}");
    }
}

fn tiff_errors(dir: &std::path::Path) {
    // Cut short, a strip is named; what we do not read is unsupported, not corrupt.
    let raw = std::fs::read(dir.join("p1_raw.tif")).unwrap();
    let mut bytes = raw.clone();
    bytes.truncate(bytes.len() - 40);
    let e = preprocess::decode::decode(&bytes).unwrap_err().to_string();
    assert!(e.contains("corrupt TIFF: strip 0"), "{e}");
    // The little-endian file's inline SHORT tags: (tag, value) set in place.
    let with = |tag: u16, value: u16| {
        let mut b = raw.clone();
        let ifd = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        let n = u16::from_le_bytes(b[ifd..ifd + 2].try_into().unwrap()) as usize;
        let at = (0..n)
            .map(|i| ifd + 2 + 12 * i)
            .find(|&e| u16::from_le_bytes(b[e..e + 2].try_into().unwrap()) == tag)
            .unwrap();
        b[at + 8..at + 10].copy_from_slice(&value.to_le_bytes());
        b
    };
    // A count that claims gigabytes (the fuzzer's find: the values were allocated first).
    let mut huge = raw.clone();
    let ifd = u32::from_le_bytes(huge[4..8].try_into().unwrap()) as usize;
    let n = u16::from_le_bytes(huge[ifd..ifd + 2].try_into().unwrap()) as usize;
    let cm = (0..n)
        .map(|i| ifd + 2 + 12 * i)
        .find(|&e| u16::from_le_bytes(huge[e..e + 2].try_into().unwrap()) == 320)
        .unwrap();
    huge[cm + 4..cm + 8].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let e = preprocess::decode::decode(&huge).unwrap_err().to_string();
    assert!(e.contains("corrupt TIFF: tag ColorMap"), "{e}");
    // Tiled files cut short name the tile; a planar tiled file we do not read is refused by
    // name, never handed to the `tiff` crate (which panics on them).
    for name in [
        "planar_tiled_rgb_lzw.tif",
        "tiled_jpeg_rgb.tif",
        "tiled_palette_lzw.tif",
    ] {
        let mut bytes = std::fs::read(dir.join(name)).unwrap();
        bytes.truncate(bytes.len() - 40);
        let e = preprocess::decode::decode(&bytes).unwrap_err().to_string();
        assert!(
            e.starts_with("corrupt TIFF: tile") && e.contains("beyond the end of the file"),
            "{name}: {e}"
        );
    }
    let planar = std::fs::read(dir.join("planar_tiled_rgba.tif")).unwrap();
    let ifd = u32::from_le_bytes(planar[4..8].try_into().unwrap()) as usize;
    let n = u16::from_le_bytes(planar[ifd..ifd + 2].try_into().unwrap()) as usize;
    let extra = (0..n)
        .map(|i| ifd + 2 + 12 * i)
        .find(|&e| u16::from_le_bytes(planar[e..e + 2].try_into().unwrap()) == 338)
        .unwrap();
    let mut associated = planar.clone();
    associated[extra + 8..extra + 10].copy_from_slice(&1u16.to_le_bytes());
    let e = preprocess::decode::decode(&associated)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "unsupported image: planar tiled TIFF with photometric 2, 4 samples a pixel of 8 bits"
    );
    for (tag, value, says) in [
        (259, 7, "palette TIFF with compression 7"),
        (277, 2, "palette TIFF with 2 samples a pixel"),
        (258, 16, "palette TIFF with 16 bits a sample"),
    ] {
        let e = preprocess::decode::decode(&with(tag, value))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("unsupported image: ") && e.contains(says),
            "{e}"
        );
    }
}

/// webdataset's image decoders (CLIP_benchmark's `pil`, open_clip's `pilrgb`) convert a member
/// to RGB before the transforms: PIL's and torchvision's pixels made that way
/// (scripts/wds_pixels_reference.py), for palette, GIF, CMYK and partly transparent images,
/// which a file opened as it is resizes otherwise.
#[test]
fn webdataset_members_convert_to_rgb_before_the_resize() {
    use pyramidclip::data::wds::{index, Txt, Wants};
    let dir = tempfile::tempdir().unwrap();
    let want = candle_core::safetensors::load(
        fixtures().join("wds/convert_first.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut names: Vec<&String> = want.keys().collect();
    names.sort();
    let file = |name: &str| match name.starts_with("alpha_") {
        true => fixtures().join("wds").join(name),
        false => fixtures().join("images").join(name),
    };
    let mut members = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // A webdataset image member is jpg, jpeg, png or webp by name; both sides sniff the
        // bytes (the GIF goes as png).
        let ext = if name.ends_with(".jpg") { "jpg" } else { "png" };
        members.push((format!("{i:03}.{ext}"), std::fs::read(file(name)).unwrap()));
        members.push((format!("{i:03}.txt"), b"a caption".to_vec()));
    }
    let tar = dir.path().join("0.tar");
    write_tar(&tar, &members);
    let wants = Wants {
        classes: None,
        txt: Txt::Lines,
        multilabel: false,
    };
    let ix = index(std::slice::from_ref(&tar), wants, false).unwrap();
    assert_eq!(ix.samples.len(), names.len());
    let shortest = preprocess::ResizeMode::Shortest;
    for (name, sample) in names.iter().zip(&ix.samples) {
        let ours = sample.crop(64, shortest.into()).unwrap();
        let theirs = want[*name].flatten_all().unwrap().to_vec1::<u8>().unwrap();
        assert!(ours == theirs, "{name}: not webdataset's pixels");
        // The same file opened as it is (the reference's loader) gives other pixels.
        let own = preprocess::crop_u8(&file(name), 64, shortest).unwrap();
        assert!(own != theirs, "{name}");
    }
}

/// torchvision's dataset classes open each file with `.convert("RGB")` before the transforms
/// (Pets here), its Caltech101 with `Image.open` only: a download whose images carry an alpha
/// channel gives webdataset's converted pixels for the one and the file's own for the other.
#[test]
fn torchvision_downloads_convert_to_rgb_as_their_classes_do() {
    use pyramidclip::data::listed::{samples, Kind};
    let want = candle_core::safetensors::load(
        fixtures().join("wds/convert_first.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let rgba = fixtures().join("wds/alpha_rgba.png");
    let converted = want["alpha_rgba.png"]
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let shortest = preprocess::ResizeMode::Shortest;
    let own = preprocess::crop_u8(&rgba, 64, shortest).unwrap();
    assert!(own != converted);
    let dir = tempfile::tempdir().unwrap();
    for (kind, name, converts) in [
        (Kind::Pets, "oxford-iiit-pet", true),
        (Kind::Caltech101, "caltech101", false),
    ] {
        let root = dir.path().join(name);
        copy_tree(&fixtures().join("torchvision").join(name), &root);
        let (listed, _) = samples(kind, &root, "test").unwrap();
        assert!(!listed.is_empty());
        for s in &listed {
            // Each listed image becomes the RGBA PNG (decoders go by the bytes, not the name).
            std::fs::copy(&rgba, &s.path).unwrap();
            let ours = s.crop(64, shortest.into()).unwrap();
            let want = if converts { &converted } else { &own };
            assert!(&ours == want, "{name}: {}", s.path.display());
        }
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
