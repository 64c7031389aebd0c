//! Image preprocessing identical to the reference (reference §7): PIL decode, torchvision
//! `Resize(n, BICUBIC)` in the image's own mode, `CenterCrop(n)`, `convert('RGB')`, `ToTensor`,
//! `Normalize`. The 8-bit crop is produced first (`crop_u8`) so the normalisation
//! (`normalize_batch`) runs on whichever device evaluates the batch.

pub mod decode;
pub mod resample;

use decode::{Image, Mode};
use resample::Plane;
use std::path::{Path, PathBuf};

// Written as the reference writes them.
#[allow(clippy::excessive_precision)]
pub const MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
pub const STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Extensions torchvision's ImageFolder lists (`IMG_EXTENSIONS`). A folder's other files,
/// GIFs among them, are not part of the reference's dataset, so they are not part of ours.
pub const FOLDER_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "ppm", "pgm", "bmp", "tif", "tiff", "webp",
];

/// Extensions of the images we decode: the folder ones plus GIF (for images named directly).
pub const EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "ppm", "pgm", "bmp", "tif", "tiff", "webp", "gif",
];

#[derive(Debug, thiserror::Error)]
#[error("cannot read image {path}: {msg}")]
pub struct Error {
    pub path: PathBuf,
    pub msg: String,
}

/// Whether torchvision's ImageFolder lists this file: its name, lower-cased, ends with `.EXT`
/// (so a file named just `.jpg` counts too, as it does for `str.endswith`).
pub fn is_folder_image(p: &Path) -> bool {
    let Some(name) = p.file_name() else {
        return false;
    };
    let name = name.as_encoded_bytes().to_ascii_lowercase();
    FOLDER_EXTENSIONS.iter().any(|e| {
        name.len() > e.len()
            && name.ends_with(e.as_bytes())
            && name[name.len() - e.len() - 1] == b'.'
    })
}

/// torchvision's `Resize(n)` output size for a `w` x `h` image.
pub fn resized_size(w: usize, h: usize, n: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (n as u64 * long as u64) as f64 / short as f64;
    let new_long = new_long as usize;
    if w <= h {
        (n, new_long)
    } else {
        (new_long, n)
    }
}

/// torchvision's centre-crop offset: `int(round((size - n) / 2))`, rounding half to even.
pub fn crop_offset(size: usize, n: usize) -> isize {
    let d = size as f64 - n as f64;
    (d / 2.0).round_ties_even() as isize
}

fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

fn premultiply(p: &mut Plane) {
    let c = p.channels;
    for px in p.data.chunks_exact_mut(c) {
        let a = px[c - 1] as u32;
        for v in &mut px[..c - 1] {
            *v = muldiv255(*v as u32, a) as u8;
        }
    }
}

fn unpremultiply(p: &mut Plane) {
    let c = p.channels;
    for px in p.data.chunks_exact_mut(c) {
        let a = px[c - 1] as u32;
        if a != 0 && a != 255 {
            for v in &mut px[..c - 1] {
                *v = ((255 * *v as u32) / a).min(255) as u8;
            }
        }
    }
}

/// An n x n RGB crop in CHW order, 8-bit, exactly as PIL would hold it before `ToTensor`.
pub fn crop_u8_from_image(img: Image, n: usize) -> Vec<u8> {
    let (w, h) = img.size();
    let (rw, rh) = resized_size(w, h, n);
    // A crop bigger than the resized image cannot happen after Resize(n); clamp defensively.
    let (cw, chh) = (n.min(rw), n.min(rh));
    let left = crop_offset(rw, n).max(0) as usize;
    let top = crop_offset(rh, n).max(0) as usize;
    let win = resample::Window {
        out_w: rw,
        out_h: rh,
        left,
        top,
        crop_w: cw,
        crop_h: chh,
    };
    let mut rgb = vec![0u8; 3 * n * n];
    match img {
        Image::Nearest { plane } => {
            let out = resample::nearest_window(&plane, win);
            if out.channels == 1 {
                scatter(&mut rgb, n, &out.data, cw, 1, |px| [px[0]; 3]);
            } else {
                scatter(&mut rgb, n, &out.data, cw, out.channels, |px| {
                    [px[0], px[1], px[2]]
                });
            }
        }
        Image::Gray16 {
            width,
            height,
            data,
            sixteen,
        } => {
            let out = resample::bicubic_window_i32(&data, width, height, win, sixteen);
            let bytes: Vec<u8> = out.into_iter().map(|v| v.clamp(0, 255) as u8).collect();
            scatter(&mut rgb, n, &bytes, cw, 1, |px| [px[0]; 3]);
        }
        Image::Bicubic { mode, mut plane } => {
            // PIL premultiplies alpha only around a real resize: `resize` to the image's own
            // size returns a copy, and the round trip through premultiplied values is lossy.
            let alpha = matches!(mode, Mode::LA | Mode::RGBA) && (rw, rh) != (w, h);
            if alpha {
                premultiply(&mut plane);
            }
            let mut out = resample::bicubic_window(&plane, win);
            if alpha {
                unpremultiply(&mut out);
            }
            let c = out.channels;
            match mode {
                Mode::L | Mode::LA => scatter(&mut rgb, n, &out.data, cw, c, |px| [px[0]; 3]),
                Mode::RGB | Mode::RGBA => {
                    scatter(&mut rgb, n, &out.data, cw, c, |px| [px[0], px[1], px[2]])
                }
                Mode::CMYK => scatter(&mut rgb, n, &out.data, cw, c, |px| {
                    let nk = 255 - px[3] as u32;
                    let f = |c: u8| (nk - muldiv255(c as u32, nk).min(nk)) as u8;
                    [f(px[0]), f(px[1]), f(px[2])]
                }),
            }
        }
    }
    rgb
}

/// Writes the interleaved `cw`-wide window `src` (`c` bytes per pixel) into the three `n x n`
/// planes of `rgb`, each pixel converted by `f`.
fn scatter(
    rgb: &mut [u8],
    n: usize,
    src: &[u8],
    cw: usize,
    c: usize,
    f: impl Fn(&[u8]) -> [u8; 3],
) {
    let (r, rest) = rgb.split_at_mut(n * n);
    let (g, b) = rest.split_at_mut(n * n);
    for (y, row) in src.chunks_exact(cw * c).enumerate() {
        let o = y * n;
        for (x, px) in row.chunks_exact(c).enumerate() {
            let [vr, vg, vb] = f(px);
            r[o + x] = vr;
            g[o + x] = vg;
            b[o + x] = vb;
        }
    }
}

/// Decodes and crops one image's bytes: `[3, n, n]` 8-bit levels.
pub fn crop_u8_from_bytes(bytes: &[u8], n: usize) -> Result<Vec<u8>, decode::DecodeError> {
    let img = decode::decode(bytes)?;
    Ok(crop_u8_from_image(img, n))
}

/// An RGB image held as three 8-bit planes (a CIFAR row: R, then G, then B), cropped as
/// `Image.fromarray` of its `HWC` transpose would be.
pub fn crop_u8_from_planes(planes: &[u8], w: usize, h: usize, n: usize) -> Vec<u8> {
    let px = w * h;
    let data = (0..px)
        .flat_map(|i| [planes[i], planes[px + i], planes[2 * px + i]])
        .collect();
    let plane = resample::Plane {
        width: w,
        height: h,
        channels: 3,
        data,
    };
    crop_u8_from_image(
        Image::Bicubic {
            mode: decode::Mode::RGB,
            plane,
        },
        n,
    )
}

/// Reads, decodes and crops one file.
pub fn crop_u8(path: &Path, n: usize) -> Result<Vec<u8>, Error> {
    let err = |msg: String| Error {
        path: path.to_path_buf(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    crop_u8_from_bytes(&bytes, n).map_err(|e| err(e.0))
}

/// `ToTensor` then `Normalize` of `b` crops `[3, n, n]` (8-bit, concatenated) on their
/// device, in f32 as torchvision computes them (`(v / 255 - mean) / std`): `[b, 3, n, n]` f32,
/// what both engines take in any precision. The one normalisation every command and test uses.
pub fn normalize_batch(
    crops: Vec<u8>,
    b: usize,
    n: usize,
    device: &candle_core::Device,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::{DType, Tensor};
    let t = Tensor::from_vec(crops, (b, 3, n, n), device)?.to_dtype(DType::F32)?;
    let mean = Tensor::from_slice(&MEAN, (1, 3, 1, 1), device)?;
    let std = Tensor::from_slice(&STD, (1, 3, 1, 1), device)?;
    let scale = Tensor::new(255f32, device)?;
    t.broadcast_div(&scale)?
        .broadcast_sub(&mean)?
        .broadcast_div(&std)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_rule() {
        assert_eq!(resized_size(500, 375, 224), (298, 224));
        assert_eq!(resized_size(375, 500, 224), (224, 298));
        assert_eq!(resized_size(224, 224, 224), (224, 224));
    }

    #[test]
    fn folder_images_are_torchvisions_extensions() {
        // has_file_allowed_extension: filename.lower().endswith(IMG_EXTENSIONS).
        for yes in ["a.jpg", "B.JPEG", ".jpg", "x.tar.Png", "c.TIFF", "d.webp"] {
            assert!(is_folder_image(Path::new(yes)), "{yes}");
        }
        for no in ["a.gif", "jpg", "a.jpg.txt", "a_jpg", "dir/", "a.jp"] {
            assert!(!is_folder_image(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn an_image_already_at_size_keeps_its_colours_under_alpha() {
        // 4 x 6 RGBA at n = 4: PIL's resize is a copy, so the crop is the colours as stored
        // (a premultiply round trip would turn (200, 7, 99) at alpha 3 into other levels).
        let px: Vec<u8> = (0..24u8)
            .flat_map(|i| [200u8.wrapping_sub(i), 7 + i, 99, 3 + 10 * (i % 5)])
            .collect();
        let img = Image::Bicubic {
            mode: decode::Mode::RGBA,
            plane: resample::Plane {
                width: 4,
                height: 6,
                channels: 4,
                data: px.clone(),
            },
        };
        let crop = crop_u8_from_image(img, 4);
        // Rows 1..5 (centre crop of 6 to 4), channel planes.
        for y in 0..4 {
            for x in 0..4 {
                let src = &px[((y + 1) * 4 + x) * 4..][..3];
                let got = [crop[y * 4 + x], crop[16 + y * 4 + x], crop[32 + y * 4 + x]];
                assert_eq!(got, src, "({x}, {y})");
            }
        }
    }

    #[test]
    fn crop_offsets_round_half_even() {
        assert_eq!(crop_offset(225, 224), 0);
        assert_eq!(crop_offset(227, 224), 2);
        assert_eq!(crop_offset(229, 224), 2);
        assert_eq!(crop_offset(298, 224), 37);
    }

    #[test]
    fn cmyk_formula() {
        let f = |c: u32, k: u32| {
            let nk = 255 - k;
            nk - muldiv255(c, nk)
        };
        assert_eq!(f(0, 0), 255);
        assert_eq!(f(255, 0), 0);
        assert_eq!(f(0, 255), 0);
    }
}
