//! Image preprocessing identical to the reference (reference §7): PIL decode, torchvision
//! `Resize(n, BICUBIC)` in the image's own mode, `CenterCrop(n)`, `convert('RGB')`, `ToTensor`,
//! `Normalize`. The 8-bit crop is produced first (`crop_u8`) so the normalisation
//! (`normalize_batch`) runs on whichever device evaluates the batch.

pub mod decode;
pub mod resample;
pub mod tiff_chunks;

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

/// How an image becomes the model's n x n input: open_clip's inference `resize_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ResizeMode {
    /// `Resize(n)` of the shorter side, then `CenterCrop(n)`: OpenAI's, the reference's.
    #[default]
    Shortest,
    /// `Resize((n, n))`: both sides to n, the aspect not kept and nothing cut away (open_clip's
    /// `squash`, which Apple's DFN weights were evaluated with).
    Squash,
    /// The longer side to n, the aspect kept (`ResizeKeepRatio(n, longest=1)`), then centred on
    /// an n x n canvas of the image's own zero (`CenterCropOrPad(n, fill=0)` before the RGB
    /// conversion: black, white for CMYK, palette entry 0 for "P"): open_clip's `longest`.
    Longest,
}

impl ResizeMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Shortest => "shortest",
            Self::Squash => "squash",
            Self::Longest => "longest",
        }
    }

    /// open_clip's name for it.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "shortest" => Some(Self::Shortest),
            "squash" => Some(Self::Squash),
            "longest" => Some(Self::Longest),
            _ => None,
        }
    }
}

pub use resample::Interpolation;

/// How an image is resized: the mode and the interpolation (open_clip's `resize_mode` and
/// `interpolation`; OpenAI's shortest-side bicubic by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resize {
    pub mode: ResizeMode,
    pub interpolation: Interpolation,
}

impl From<ResizeMode> for Resize {
    fn from(mode: ResizeMode) -> Self {
        Self {
            mode,
            interpolation: Interpolation::Bicubic,
        }
    }
}

/// open_clip's `ResizeKeepRatio(n, longest=1)` size of a `w` x `h` image: each side divided by
/// the larger of the two sides' ratios to n, rounded half to even (Python's `round`).
pub fn longest_size(w: usize, h: usize, n: usize) -> (usize, usize) {
    let ratio = (h as f64 / n as f64).max(w as f64 / n as f64);
    let side = |x: usize| ((x as f64 / ratio).round_ties_even() as usize).clamp(1, n);
    (side(w), side(h))
}

/// `img` after PIL's `convert('RGB')`, for loaders that convert before the transforms run
/// (webdataset's image decoders): palette and bilevel images then resize bicubically, and
/// RGBA, LA and CMYK ones without their fourth channel.
pub fn converted_to_rgb(img: Image) -> Image {
    Image::Bicubic {
        mode: Mode::RGB,
        plane: to_rgb(img),
    }
}

/// An n x n RGB crop in CHW order, 8-bit, exactly as PIL would hold it before `ToTensor`.
pub fn crop_u8_from_image(img: Image, n: usize, resize: impl Into<Resize>) -> Vec<u8> {
    let resize: Resize = resize.into();
    let (w, h) = img.size();
    let (rw, rh) = match resize.mode {
        ResizeMode::Shortest => resized_size(w, h, n),
        ResizeMode::Squash => (n, n),
        ResizeMode::Longest => longest_size(w, h, n),
    };
    // A crop bigger than the resized image cannot happen after Resize(n); clamp defensively.
    let (cw, chh) = (n.min(rw), n.min(rh));
    let left = crop_offset(rw, n).max(0) as usize;
    let top = crop_offset(rh, n).max(0) as usize;
    // `longest` pads instead: the image goes `(n - side) / 2` (floor) in from the left and top
    // of a canvas of the image's zero pixel, as `CenterCropOrPad` pads.
    let at = (n.saturating_sub(cw) / 2, n.saturating_sub(chh) / 2);
    let win = resample::Window {
        out_w: rw,
        out_h: rh,
        left,
        top,
        crop_w: cw,
        crop_h: chh,
        filter: resize.interpolation,
    };
    let mut rgb = vec![0u8; 3 * n * n];
    if at != (0, 0) || (cw, chh) != (n, n) {
        let zero = match &img {
            Image::Nearest { fill, .. } => *fill,
            Image::Bicubic { mode, plane } => rgb_pixel(*mode, &vec![0; plane.channels]),
            Image::Gray16 { .. } => [0; 3],
        };
        for (c, v) in zero.into_iter().enumerate() {
            rgb[c * n * n..(c + 1) * n * n].fill(v);
        }
    }
    match img {
        Image::Nearest { plane, .. } => {
            let out = resample::nearest_window(&plane, win);
            if out.channels == 1 {
                scatter(&mut rgb, n, at, &out.data, cw, 1, |px| [px[0]; 3]);
            } else {
                scatter(&mut rgb, n, at, &out.data, cw, out.channels, |px| {
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
            scatter(&mut rgb, n, at, &bytes, cw, 1, |px| [px[0]; 3]);
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
            scatter(&mut rgb, n, at, &out.data, cw, out.channels, |px| {
                rgb_pixel(mode, px)
            });
        }
    }
    rgb
}

/// One pixel of `mode` as PIL's `convert('RGB')` gives it.
fn rgb_pixel(mode: Mode, px: &[u8]) -> [u8; 3] {
    match mode {
        Mode::L | Mode::LA => [px[0]; 3],
        Mode::RGB | Mode::RGBA => [px[0], px[1], px[2]],
        Mode::CMYK => {
            let nk = 255 - px[3] as u32;
            let f = |c: u8| (nk - muldiv255(c as u32, nk).min(nk)) as u8;
            [f(px[0]), f(px[1]), f(px[2])]
        }
    }
}

/// The image as `convert('RGB')` leaves it: interleaved 8-bit R, G, B (alpha dropped, 16- and
/// 32-bit gray clipped to 0..=255, as Pillow converts them).
fn to_rgb(img: Image) -> Plane {
    let (width, height) = img.size();
    let data = match img {
        Image::Bicubic { mode, plane } => plane
            .data
            .chunks_exact(plane.channels)
            .flat_map(|px| rgb_pixel(mode, px))
            .collect(),
        Image::Nearest { plane, .. } => plane
            .data
            .chunks_exact(plane.channels)
            .flat_map(|px| match plane.channels {
                1 | 2 => [px[0]; 3],
                _ => [px[0], px[1], px[2]],
            })
            .collect(),
        Image::Gray16 { data, .. } => data
            .iter()
            .flat_map(|&v| [v.clamp(0, 255) as u8; 3])
            .collect(),
    };
    Plane {
        width,
        height,
        channels: 3,
        data,
    }
}

/// A box cut out of an image before it is preprocessed: PIL's
/// `convert('RGB').crop((left, upper, right, lower))`, what CLIP_benchmark's VOC2007 does with
/// each object's bounding box. Parts outside the image are black, as PIL fills them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub left: i64,
    pub upper: i64,
    pub right: i64,
    pub lower: i64,
}

impl Region {
    /// Why PIL (or the resize after it) would refuse this box; None when it is usable.
    pub fn invalid(&self) -> Option<String> {
        let (w, h) = (self.right - self.left, self.lower - self.upper);
        if w <= 0 || h <= 0 {
            return Some(format!(
                "box ({}, {}, {}, {}) is empty",
                self.left, self.upper, self.right, self.lower
            ));
        }
        if (w as u64).saturating_mul(h as u64) > decode::MAX_PIXELS {
            return Some(format!("box of {w} x {h} pixels is too large"));
        }
        None
    }
}

/// `img` converted to RGB and cut to `r`, then cropped as every image is.
pub fn crop_u8_from_region(
    img: Image,
    r: Region,
    n: usize,
    resize: impl Into<Resize>,
) -> Result<Vec<u8>, String> {
    if let Some(why) = r.invalid() {
        return Err(why);
    }
    let src = to_rgb(img);
    let (w, h) = ((r.right - r.left) as usize, (r.lower - r.upper) as usize);
    let mut data = vec![0u8; 3 * w * h];
    // The rows and columns of the box that lie inside the image.
    let x0 = r.left.clamp(0, src.width as i64);
    let x1 = r.right.clamp(0, src.width as i64);
    if x1 > x0 {
        for y in r.upper.max(0)..r.lower.min(src.height as i64) {
            let from = (y as usize * src.width + x0 as usize) * 3;
            let to = ((y - r.upper) as usize * w + (x0 - r.left) as usize) * 3;
            let len = (x1 - x0) as usize * 3;
            data[to..to + len].copy_from_slice(&src.data[from..from + len]);
        }
    }
    let plane = Plane {
        width: w,
        height: h,
        channels: 3,
        data,
    };
    Ok(crop_u8_from_image(
        Image::Bicubic {
            mode: Mode::RGB,
            plane,
        },
        n,
        resize,
    ))
}

/// Writes the interleaved `cw`-wide window `src` (`c` bytes per pixel) into the three `n x n`
/// planes of `rgb`, its top left at `(x0, y0)`, each pixel converted by `f`.
fn scatter(
    rgb: &mut [u8],
    n: usize,
    (x0, y0): (usize, usize),
    src: &[u8],
    cw: usize,
    c: usize,
    f: impl Fn(&[u8]) -> [u8; 3],
) {
    let (r, rest) = rgb.split_at_mut(n * n);
    let (g, b) = rest.split_at_mut(n * n);
    for (y, row) in src.chunks_exact(cw * c).enumerate() {
        let o = (y0 + y) * n + x0;
        for (x, px) in row.chunks_exact(c).enumerate() {
            let [vr, vg, vb] = f(px);
            r[o + x] = vr;
            g[o + x] = vg;
            b[o + x] = vb;
        }
    }
}

/// Decodes and crops one image's bytes: `[3, n, n]` 8-bit levels.
pub fn crop_u8_from_bytes(
    bytes: &[u8],
    n: usize,
    resize: impl Into<Resize>,
) -> Result<Vec<u8>, decode::DecodeError> {
    let img = decode::decode(bytes)?;
    Ok(crop_u8_from_image(img, n, resize))
}

/// How the pixels of an image stored as a raw array lie (a row of a CIFAR batch, an STL-10 or
/// MNIST image), not an encoded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// R, G and B planes, each row by row (CIFAR).
    Planes,
    /// R, G and B planes, each column by column (STL-10's binaries, which torchvision
    /// transposes).
    PlanesByColumn,
    /// One 8-bit gray plane, row by row (MNIST): an `L` image.
    Gray,
    /// R, G and B of each pixel together, row by row (`HWC`, PCAM's HDF5 arrays).
    Interleaved,
}

/// A raw 8-bit image: its size and layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
}

impl Raw {
    /// The bytes one image takes.
    pub fn byte_len(&self) -> usize {
        let px = self.width as usize * self.height as usize;
        match self.layout {
            Layout::Gray => px,
            Layout::Planes | Layout::PlanesByColumn | Layout::Interleaved => 3 * px,
        }
    }
}

/// A raw image cropped as `Image.fromarray` of it (`HWC`, or `HW` for gray) would be.
pub fn crop_u8_from_raw(bytes: &[u8], raw: Raw, n: usize, resize: impl Into<Resize>) -> Vec<u8> {
    let (w, h) = (raw.width as usize, raw.height as usize);
    let px = w * h;
    let (mode, channels, data) = match raw.layout {
        Layout::Gray => (Mode::L, 1, bytes[..px].to_vec()),
        Layout::Interleaved => (Mode::RGB, 3, bytes[..3 * px].to_vec()),
        Layout::Planes => (
            Mode::RGB,
            3,
            (0..px)
                .flat_map(|i| [bytes[i], bytes[px + i], bytes[2 * px + i]])
                .collect(),
        ),
        Layout::PlanesByColumn => (
            Mode::RGB,
            3,
            (0..px)
                .flat_map(|i| {
                    let at = (i % w) * h + i / w;
                    [bytes[at], bytes[px + at], bytes[2 * px + at]]
                })
                .collect(),
        ),
    };
    let plane = resample::Plane {
        width: w,
        height: h,
        channels,
        data,
    };
    crop_u8_from_image(Image::Bicubic { mode, plane }, n, resize)
}

/// Reads, decodes and crops one file.
pub fn crop_u8(path: &Path, n: usize, resize: impl Into<Resize>) -> Result<Vec<u8>, Error> {
    let err = |msg: String| Error {
        path: path.to_path_buf(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    crop_u8_from_bytes(&bytes, n, resize).map_err(|e| err(e.0))
}

/// torchvision's `Normalize` of a model's preprocessing: OpenAI's mean and std, unless the
/// weights were trained with others (open_clip's tag table says which).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Normalize {
    fn default() -> Self {
        Self {
            mean: MEAN,
            std: STD,
        }
    }
}

/// `ToTensor` then `Normalize` of `b` crops `[3, n, n]` (8-bit, concatenated) on their
/// device, in f32 as torchvision computes them (`(v / 255 - mean) / std`): `[b, 3, n, n]` f32,
/// what both engines take in any precision. The one normalisation every command and test uses.
pub fn normalize_batch(
    crops: Vec<u8>,
    b: usize,
    n: usize,
    device: &candle_core::Device,
    norm: Normalize,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::{DType, Tensor};
    let t = Tensor::from_vec(crops, (b, 3, n, n), device)?.to_dtype(DType::F32)?;
    let mean = Tensor::from_slice(&norm.mean, (1, 3, 1, 1), device)?;
    let std = Tensor::from_slice(&norm.std, (1, 3, 1, 1), device)?;
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
    fn squash_and_centre_crop_agree_only_on_square_images() {
        let img = |w: usize, h: usize| Image::Bicubic {
            mode: decode::Mode::RGB,
            plane: resample::Plane {
                width: w,
                height: h,
                channels: 3,
                data: (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect(),
            },
        };
        let (sq, sh) = (ResizeMode::Squash, ResizeMode::Shortest);
        assert_eq!(
            crop_u8_from_image(img(37, 37), 16, sq),
            crop_u8_from_image(img(37, 37), 16, sh)
        );
        assert_ne!(
            crop_u8_from_image(img(37, 20), 16, sq),
            crop_u8_from_image(img(37, 20), 16, sh)
        );
        // Squashed, nothing is cut: a 2 x 1 image of two colours keeps both, one per half.
        let two = Image::Bicubic {
            mode: decode::Mode::RGB,
            plane: resample::Plane {
                width: 2,
                height: 1,
                channels: 3,
                data: vec![255, 0, 0, 0, 0, 255],
            },
        };
        let out = crop_u8_from_image(two, 4, sq);
        let (red, blue) = (&out[..16], &out[32..]);
        assert!(
            red[0] > 200 && red[3] < 50 && blue[0] < 50 && blue[3] > 200,
            "{out:?}"
        );
        assert_eq!(ResizeMode::parse("squash"), Some(sq));
        assert_eq!(ResizeMode::parse("longest"), Some(ResizeMode::Longest));
        assert_eq!(ResizeMode::parse("shortest_edge"), None);
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
        let crop = crop_u8_from_image(img, 4, ResizeMode::Shortest);
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
