//! Decoding into the modes PIL would open the file in: JPEG through libjpeg-turbo (the decoder
//! PIL uses, so pixels agree exactly), PNG and GIF with their palettes and bit depths kept in
//! view, the rest through the `image` crate.

use super::resample::Plane;

/// PIL's `Image.MAX_IMAGE_PIXELS * 2`: beyond this PIL refuses to open an image.
pub const MAX_PIXELS: u64 = 178_956_970;

/// The image as PIL holds it before `convert('RGB')`.
#[derive(Debug, Clone)]
pub enum Image {
    /// L, LA, RGB, RGBA, CMYK (already inverted as PIL reads Adobe JPEGs): resized with BICUBIC.
    Bicubic { mode: Mode, plane: Plane },
    /// P and 1: resized with NEAREST. Palette already applied (nearest commutes with it);
    /// `fill` is what index 0 shows (palette entry 0, black for "1"): the colour PIL pads
    /// these images with (open_clip's `longest` resize).
    Nearest { plane: Plane, fill: [u8; 3] },
    /// I;16 (16-bit grayscale) or I (32-bit integers, what PIL makes of a deep PGM).
    Gray16 {
        width: usize,
        height: usize,
        data: Vec<i32>,
        /// "I;16": each resampling pass stores 16-bit samples; "I" keeps 32 bits.
        sixteen: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    L,
    LA,
    RGB,
    RGBA,
    CMYK,
}

impl Image {
    pub fn size(&self) -> (usize, usize) {
        match self {
            Image::Bicubic { plane, .. } | Image::Nearest { plane, .. } => {
                (plane.width, plane.height)
            }
            Image::Gray16 { width, height, .. } => (*width, *height),
        }
    }
}

/// Why bytes did not decode into an image (one line, for error messages and skip lists).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

type Result<T> = std::result::Result<T, String>;

fn check_size(w: usize, h: usize) -> Result<()> {
    if w == 0 || h == 0 {
        return Err("image has zero width or height".into());
    }
    // Saturating: a BigTIFF's tile sizes may be 64-bit values.
    let pixels = (w as u64).saturating_mul(h as u64);
    if pixels > MAX_PIXELS {
        return Err(format!(
            "image is {w}x{h} = {pixels} pixels, over the {MAX_PIXELS}-pixel limit (decompression bomb?)"
        ));
    }
    Ok(())
}

/// Decodes JPEG, PNG, GIF, BMP, TIFF, WebP or PNM bytes as PIL opens them.
pub fn decode(bytes: &[u8]) -> std::result::Result<Image, DecodeError> {
    decode_any(bytes).map_err(DecodeError)
}

fn decode_any(bytes: &[u8]) -> Result<Image> {
    if bytes.is_empty() {
        return Err("file is empty".into());
    }
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        decode_jpeg(bytes, Dct::Accurate)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        without_panics(|| decode_png(bytes))
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        without_panics(|| decode_gif(bytes))
    } else if bytes[0] == b'P' && matches!(bytes.get(1), Some(b'1'..=b'6')) {
        decode_pnm(bytes)
    } else {
        decode_other(bytes)
    }
}

extern "C-unwind" fn jpeg_error_exit(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    let code = unsafe { cinfo.err.as_ref().map(|e| e.msg_code).unwrap_or(-1) };
    std::panic::resume_unwind(Box::new(format!(
        "corrupt JPEG data (libjpeg error {code})"
    )));
}

extern "C-unwind" fn jpeg_emit_message(
    cinfo: &mut mozjpeg_sys::jpeg_common_struct,
    level: std::os::raw::c_int,
) {
    // PIL refuses truncated files ("image file is truncated"); libjpeg only warns.
    let code = unsafe { cinfo.err.as_ref().map(|e| e.msg_code).unwrap_or(-1) };
    if level < 0 && code == mozjpeg_sys::JWRN_JPEG_EOF {
        std::panic::resume_unwind(Box::new(
            "JPEG data ends early (truncated file)".to_string(),
        ));
    }
}

/// libjpeg's inverse DCT: PIL's (the accurate integer one) or TensorFlow's default (the fast
/// integer one, which `tf.image.decode_image` always uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dct {
    Accurate,
    Fast,
}

fn decode_jpeg(bytes: &[u8], dct: Dct) -> Result<Image> {
    let run = || -> Result<Image> {
        let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
        unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
        err.error_exit = Some(jpeg_error_exit);
        err.emit_message = Some(jpeg_emit_message);
        let d = mozjpeg::Decompress::builder()
            .with_err(err)
            .from_mem(bytes)
            .map_err(|e| e.to_string())?;
        let mut d = d;
        if dct == Dct::Fast {
            d.dct_method(mozjpeg::DctMethod::IntegerFast);
        }
        let (w, h) = (d.width(), d.height());
        check_size(w, h)?;
        let io = |e: std::io::Error| e.to_string();
        let (mode, c, data) = match d.image().map_err(io)? {
            mozjpeg::Format::RGB(mut s) => {
                let px = s.read_scanlines::<u8>().map_err(io)?;
                s.finish().map_err(io)?;
                (Mode::RGB, 3, px)
            }
            mozjpeg::Format::Gray(mut s) => {
                let px = s.read_scanlines::<u8>().map_err(io)?;
                s.finish().map_err(io)?;
                (Mode::L, 1, px)
            }
            mozjpeg::Format::CMYK(mut s) => {
                let mut px = s.read_scanlines::<u8>().map_err(io)?;
                s.finish().map_err(io)?;
                // PIL reads every CMYK JPEG with Adobe's inverted convention ("CMYK;I").
                px.iter_mut().for_each(|v| *v = 255 - *v);
                (Mode::CMYK, 4, px)
            }
        };
        if data.len() != w * h * c {
            return Err("JPEG decoded to an unexpected size".into());
        }
        Ok(Image::Bicubic {
            mode,
            plane: Plane {
                width: w,
                height: h,
                channels: c,
                data,
            },
        })
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(payload) => Err(payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "corrupt JPEG data".into())),
    }
}

fn decode_png(bytes: &[u8]) -> Result<Image> {
    use png::{BitDepth, ColorType, Transformations};
    // Refuse oversized images from the header alone, before the decoder allocates anything.
    if bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap()) as usize;
        check_size(w, h)?;
    }
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(|e| format!("corrupt PNG: {e}"))?;
    let info = reader.info();
    let (w, h) = (info.width as usize, info.height as usize);
    check_size(w, h)?;
    let (src_color, src_depth, has_trns) = (info.color_type, info.bit_depth, info.trns.is_some());
    // Palette entry 0 (black for a bilevel image): what PIL pads a "P" / "1" image with.
    let fill = match (&info.palette, src_color) {
        (Some(p), ColorType::Indexed) if p.len() >= 3 => [p[0], p[1], p[2]],
        _ => [0, 0, 0],
    };
    let mut buf = vec![0u8; reader.output_buffer_size().ok_or("PNG too large")?];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("corrupt PNG: {e}"))?;
    buf.truncate(frame.buffer_size());
    let (out_color, out_depth) = reader.output_color_type();
    let c = out_color.samples();
    // 16-bit samples are big-endian; PIL keeps the high byte except for I;16 grayscale.
    let wide = out_depth == BitDepth::Sixteen;
    if wide && src_color == ColorType::Grayscale {
        let data = buf
            .chunks_exact(2 * c)
            .map(|p| u16::from_be_bytes([p[0], p[1]]) as i32)
            .collect();
        return Ok(Image::Gray16 {
            width: w,
            height: h,
            data,
            sixteen: true,
        });
    }
    let mut data: Vec<u8> = if wide {
        buf.chunks_exact(2).map(|p| p[0]).collect()
    } else {
        buf
    };
    // tRNS on gray/RGB becomes an alpha channel after EXPAND; PIL keeps L/RGB (or P) there.
    let drop_alpha = has_trns
        && matches!(
            src_color,
            ColorType::Grayscale | ColorType::Rgb | ColorType::Indexed
        );
    let mut ch = c;
    if drop_alpha && (c == 2 || c == 4) {
        data = data
            .chunks_exact(c)
            .flat_map(|p| p[..c - 1].to_vec())
            .collect();
        ch = c - 1;
    }
    if data.len() != w * h * ch {
        return Err("PNG decoded to an unexpected size".into());
    }
    let plane = Plane {
        width: w,
        height: h,
        channels: ch,
        data,
    };
    if src_color == ColorType::Indexed
        || (src_color == ColorType::Grayscale && src_depth == BitDepth::One)
    {
        return Ok(Image::Nearest { plane, fill });
    }
    let mode = match ch {
        1 => Mode::L,
        2 => Mode::LA,
        3 => Mode::RGB,
        _ => Mode::RGBA,
    };
    Ok(Image::Bicubic { mode, plane })
}

fn decode_gif(bytes: &[u8]) -> Result<Image> {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    let mut dec = opts
        .read_info(std::io::Cursor::new(bytes))
        .map_err(|e| format!("corrupt GIF: {e}"))?;
    let (w, h) = (dec.width() as usize, dec.height() as usize);
    check_size(w, h)?;
    let global = dec.global_palette().map(|p| p.to_vec());
    let frame = dec
        .read_next_frame()
        .map_err(|e| format!("corrupt GIF: {e}"))?
        .ok_or("GIF has no frames")?;
    let palette = frame.palette.clone().or(global).unwrap_or_default();
    // Frame 0 starts from the transparent index (or 0) outside the frame's rectangle.
    let mut idx = vec![frame.transparent.unwrap_or(0); w * h];
    let (fl, ft, fw, fh) = (
        frame.left as usize,
        frame.top as usize,
        frame.width as usize,
        frame.height as usize,
    );
    for y in 0..fh {
        for x in 0..fw {
            if ft + y < h && fl + x < w {
                idx[(ft + y) * w + fl + x] = frame.buffer[y * fw + x];
            }
        }
    }
    // PIL opens a GIF whose palette is the identity gray ramp as "L" (resized bicubically).
    let gray_ramp = palette
        .chunks_exact(3)
        .enumerate()
        .all(|(i, p)| p.iter().all(|&v| v as usize == i));
    if palette.is_empty() || gray_ramp {
        return Ok(Image::Bicubic {
            mode: Mode::L,
            plane: Plane {
                width: w,
                height: h,
                channels: 1,
                data: idx,
            },
        });
    }
    let mut data = Vec::with_capacity(w * h * 3);
    for &i in &idx {
        let at = i as usize * 3;
        data.extend_from_slice(palette.get(at..at + 3).unwrap_or(&[0, 0, 0]));
    }
    let fill = match palette.get(..3) {
        Some(p) => [p[0], p[1], p[2]],
        None => [0, 0, 0],
    };
    Ok(Image::Nearest {
        plane: Plane {
            width: w,
            height: h,
            channels: 3,
            data,
        },
        fill,
    })
}

/// A JPEG-compressed TIFF as PIL reads it through libtiff: each chunk (strip or tile) a JPEG
/// stream decoded by libjpeg (as [`decode_jpeg`] decodes files), the part of it inside the
/// image put in its place; planar RGB from one gray stream a sample.
fn decode_jpeg_tiff(j: super::tiff_chunks::JpegChunks) -> Result<Image> {
    let l = &j.layout;
    let what = l.what();
    let mut first: Option<(Mode, usize)> = None;
    let mut data = Vec::new();
    for (k, stream) in j.streams.iter().enumerate() {
        let p = l.place(k);
        let Image::Bicubic { mode, plane } =
            decode_jpeg(stream, Dct::Accurate).map_err(|e| format!("TIFF {what} {k}: {e}"))?
        else {
            return Err(format!("TIFF {what} {k}: not a JPEG PIL reads in a TIFF"));
        };
        if plane.width != l.chunk_width || plane.height < p.rows {
            return Err(format!(
                "corrupt TIFF: {what} {k} is {}x{}, expected {} x {} rows",
                plane.width, plane.height, l.chunk_width, p.rows
            ));
        }
        let (mode, channels) = if j.planes > 1 {
            if mode != Mode::L {
                return Err(format!(
                    "corrupt TIFF: {what} {k} of a planar image is not gray"
                ));
            }
            (Mode::RGB, j.planes)
        } else {
            (mode, plane.channels)
        };
        if *first.get_or_insert((mode, channels)) != (mode, channels) {
            return Err(format!("corrupt TIFF: {what} {k} changes colour mode"));
        }
        if data.is_empty() {
            data = vec![0u8; l.width * l.height * channels];
        }
        let c = plane.channels;
        for r in 0..p.rows {
            let src = &plane.data[r * plane.width * c..][..p.columns * c];
            let dst = &mut data[((p.y + r) * l.width + p.x) * channels..][..p.columns * channels];
            if j.planes > 1 {
                for (d, &s) in dst.chunks_exact_mut(channels).zip(src) {
                    d[p.plane] = s;
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
    let (mode, channels) = first.ok_or("corrupt TIFF: no strips")?;
    if mode == Mode::CMYK {
        return Err("unsupported image: CMYK JPEG in a TIFF".into());
    }
    Ok(Image::Bicubic {
        mode,
        plane: Plane {
            width: l.width,
            height: l.height,
            channels,
            data,
        },
    })
}

fn decode_other(bytes: &[u8]) -> Result<Image> {
    let img = decode_other_as_stored(bytes)?;
    // PIL's TIFF reader applies the Orientation tag when it loads the image (`load_end` calls
    // `exif_transpose`); its other readers leave EXIF orientation alone.
    if is_tiff(bytes) {
        return Ok(orient(img, super::tiff_chunks::orientation(bytes)));
    }
    Ok(img)
}

/// PIL's `Image.transpose` for EXIF orientation `o` (2: mirror, 3: rotate 180, 4: flip, 5:
/// transpose, 6: rotate 90 clockwise, 7: transverse, 8: rotate 90 counter-clockwise; other
/// values: unchanged). Output pixel (x, y) reads the input pixel `at(x, y)`.
fn orient(img: Image, o: u16) -> Image {
    if !(2..=8).contains(&o) {
        return img;
    }
    let (w, h) = img.size();
    let swap = o >= 5;
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    let at = |x: usize, y: usize| -> (usize, usize) {
        match o {
            2 => (w - 1 - x, y),
            3 => (w - 1 - x, h - 1 - y),
            4 => (x, h - 1 - y),
            5 => (y, x),
            6 => (y, h - 1 - x),
            7 => (w - 1 - y, h - 1 - x),
            _ => (w - 1 - y, x),
        }
    };
    fn permute<T: Copy>(
        data: &[T],
        c: usize,
        w: usize,
        ow: usize,
        oh: usize,
        at: impl Fn(usize, usize) -> (usize, usize),
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(data.len());
        for y in 0..oh {
            for x in 0..ow {
                let (sx, sy) = at(x, y);
                let i = (sy * w + sx) * c;
                out.extend_from_slice(&data[i..i + c]);
            }
        }
        out
    }
    let plane = |p: Plane| Plane {
        data: permute(&p.data, p.channels, w, ow, oh, at),
        width: ow,
        height: oh,
        channels: p.channels,
    };
    match img {
        Image::Bicubic { mode, plane: p } => Image::Bicubic {
            mode,
            plane: plane(p),
        },
        Image::Nearest { plane: p, fill } => Image::Nearest {
            plane: plane(p),
            fill,
        },
        Image::Gray16 { data, sixteen, .. } => Image::Gray16 {
            data: permute(&data, 1, w, ow, oh, at),
            width: ow,
            height: oh,
            sixteen,
        },
    }
}

/// The EXIF Orientation an encoded image carries, as PIL's `getexif()` finds it: the TIFF
/// structure of a JPEG's first `Exif` APP1 segment, a PNG's (last) `eXIf` chunk or a WebP's
/// `EXIF` chunk; when that has no Orientation, the `tiff:Orientation` of the image's XMP
/// packet (a JPEG's last XMP APP1 segment, a PNG's last `XML:com.adobe.xmp` text chunk, a
/// WebP's `XMP ` chunk), as Pillow falls back to it. TIFF applies its tag when it loads; other
/// formats carry none. None without one.
pub fn exif_orientation(bytes: &[u8]) -> Option<u16> {
    let (exif, xmp) = metadata(bytes);
    exif.and_then(tiff_orientation)
        .or_else(|| xmp.as_deref().and_then(xmp_orientation))
}

/// Pillow's `tiff:Orientation(="|>)([0-9])`: the first such digit of an XMP packet.
fn xmp_orientation(xmp: &[u8]) -> Option<u16> {
    let key = b"tiff:Orientation";
    (0..xmp.len().saturating_sub(key.len() + 1)).find_map(|i| {
        if !xmp[i..].starts_with(key) {
            return None;
        }
        let rest = &xmp[i + key.len()..];
        let digit = match rest {
            [b'=', b'"', d, ..] | [b'>', d, ..] => *d,
            _ => return None,
        };
        digit.is_ascii_digit().then(|| (digit - b'0') as u16)
    })
}

/// An image's EXIF (a TIFF structure) and XMP packet, where PIL reads them.
fn metadata(bytes: &[u8]) -> (Option<&[u8]>, Option<Vec<u8>>) {
    let be16 = |b: &[u8], at: usize| -> Option<usize> {
        Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
    };
    let be32 = |b: &[u8], at: usize| -> Option<usize> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let le32 = |b: &[u8], at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let (mut exif, mut xmp): (Option<&[u8]>, Option<Vec<u8>>) = (None, None);
    if bytes.starts_with(&[0xff, 0xd8]) {
        let mut i = 2;
        loop {
            while bytes.get(i) == Some(&0xff) && bytes.get(i + 1) == Some(&0xff) {
                i += 1; // fill bytes
            }
            let (Some(&0xff), Some(&marker)) = (bytes.get(i), bytes.get(i + 1)) else {
                break;
            };
            if matches!(marker, 0x01 | 0xd0..=0xd8) {
                i += 2;
                continue;
            }
            if matches!(marker, 0xd9 | 0xda) {
                break; // the image data: PIL reads no metadata after it
            }
            let Some(len) = be16(bytes, i + 2) else { break };
            let Some(seg) = bytes.get(i + 4..(i + 2 + len).max(i + 4)) else {
                break;
            };
            if marker == 0xe1 {
                if seg.starts_with(b"Exif\0\0") {
                    exif = exif.or(Some(&seg[6..]));
                } else if let Some(x) = seg.strip_prefix(b"http://ns.adobe.com/xap/1.0/\0") {
                    xmp = Some(x.to_vec());
                }
            }
            i += 2 + len;
        }
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let mut i = 8;
        while let Some(len) = be32(bytes, i) {
            let (Some(kind), Some(data)) = (
                bytes.get(i + 4..i + 8),
                (i + 8).checked_add(len).and_then(|e| bytes.get(i + 8..e)),
            ) else {
                break;
            };
            match kind {
                b"eXIf" => exif = Some(strip(data)),
                b"tEXt" | b"zTXt" | b"iTXt" => {
                    if let Some(x) = png_xmp(kind, data) {
                        xmp = Some(x);
                    }
                }
                b"IEND" => break,
                _ => {}
            }
            i += 12 + len;
        }
    } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        let mut i = 12;
        while let Some(len) = le32(bytes, i + 4) {
            let (Some(kind), Some(data)) = (
                bytes.get(i..i + 4),
                (i + 8).checked_add(len).and_then(|e| bytes.get(i + 8..e)),
            ) else {
                break;
            };
            match kind {
                b"EXIF" if exif.is_none() => exif = Some(strip(data)),
                b"XMP " if xmp.is_none() => xmp = Some(data.to_vec()),
                _ => {}
            }
            i += 8 + len + (len & 1);
        }
    }
    (exif, xmp)
}

/// EXIF data without the `Exif\0\0` header some writers put before the TIFF structure.
fn strip(d: &[u8]) -> &[u8] {
    d.strip_prefix(b"Exif\0\0").unwrap_or(d)
}

/// A PNG text chunk's value when its keyword is `XML:com.adobe.xmp` (zTXt and compressed
/// iTXt inflated, at most 16 MiB).
fn png_xmp(kind: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let key = b"XML:com.adobe.xmp\0";
    let rest = data.strip_prefix(&key[..])?;
    let inflate = |z: &[u8]| -> Option<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(z)
            .take(16 << 20)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    };
    match kind {
        b"tEXt" => Some(rest.to_vec()),
        b"zTXt" => inflate(rest.get(1..)?),
        _ => {
            // iTXt: compression flag and method, language tag, translated keyword, text.
            let (&flag, rest) = rest.split_first()?;
            let rest = rest.get(1..)?;
            let lang_end = rest.iter().position(|&b| b == 0)?;
            let rest = &rest[lang_end + 1..];
            let tk_end = rest.iter().position(|&b| b == 0)?;
            let text = &rest[tk_end + 1..];
            if flag == 1 {
                inflate(text)
            } else {
                Some(text.to_vec())
            }
        }
    }
}

/// A TIFF or BigTIFF file (the `tiff` crate reads both; PIL too).
fn is_tiff(bytes: &[u8]) -> bool {
    matches!(
        bytes.get(..4),
        Some(b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+")
    )
}

/// The `image` crate's reader of these bytes, by their format (BigTIFF, which its guess does
/// not know, as TIFF), or an error when it reads no such format.
fn image_reader(bytes: &[u8]) -> Result<image::ImageReader<std::io::Cursor<&[u8]>>> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if is_tiff(bytes) {
        reader.set_format(image::ImageFormat::Tiff);
    }
    if reader.format().is_none() {
        return Err("not a supported image format".into());
    }
    Ok(reader)
}

/// Tag 0x0112 (Orientation, a SHORT) of a TIFF structure's first IFD. Read here, not by the
/// `tiff` crate (`tiff_chunks::orientation`): EXIF's IFD0 has no image tags, and the crate
/// refuses an IFD without them.
fn tiff_orientation(t: &[u8]) -> Option<u16> {
    let big = match t.get(..4)? {
        b"II*\0" => false,
        b"MM\0*" => true,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = t.get(at..at + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<usize> {
        let b: [u8; 4] = t.get(at..at + 4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        } as usize)
    };
    let ifd = u32_at(4)?;
    let n = u16_at(ifd)? as usize;
    (0..n).find_map(|k| {
        let e = ifd + 2 + 12 * k;
        // A SHORT, or a LONG as some writers store it; one value.
        if u16_at(e)? != 0x0112 || u32_at(e + 4)? != 1 {
            return None;
        }
        match u16_at(e + 2)? {
            3 => u16_at(e + 8),
            4 => u16::try_from(u32_at(e + 8)?).ok(),
            _ => None,
        }
    })
}

/// Decodes as Hugging Face `datasets` decodes an Image column (`PIL.Image.open`, then
/// `ImageOps.exif_transpose` when the image has an EXIF orientation).
pub fn decode_exif_transposed(bytes: &[u8]) -> std::result::Result<Image, DecodeError> {
    let img = decode(bytes)?;
    Ok(match exif_orientation(bytes) {
        Some(o) => orient(img, o),
        None => img,
    })
}

/// Decodes as TensorFlow's `decode_image` with 8-bit output (what TFDS gives a VTAB task):
/// JPEG through the same libjpeg with its fast integer IDCT and fancy upsampling, 16-bit PNG
/// samples shifted to their high byte; then each level times `gain` (wrapping, as uint8).
pub fn decode_like_tensorflow(bytes: &[u8], gain: u8) -> std::result::Result<Image, DecodeError> {
    let mut img = if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        decode_jpeg(bytes, Dct::Fast).map_err(DecodeError)?
    } else {
        decode(bytes)?
    };
    if let Image::Gray16 {
        width,
        height,
        data,
        ..
    } = &img
    {
        img = Image::Bicubic {
            mode: Mode::L,
            plane: Plane {
                width: *width,
                height: *height,
                channels: 1,
                data: data
                    .iter()
                    .map(|&v| (v.clamp(0, 65535) >> 8) as u8)
                    .collect(),
            },
        };
    }
    if gain != 1 {
        if let Image::Bicubic { plane, .. } | Image::Nearest { plane, .. } = &mut img {
            plane
                .data
                .iter_mut()
                .for_each(|v| *v = v.wrapping_mul(gain));
        }
    }
    Ok(img)
}

fn decode_other_as_stored(bytes: &[u8]) -> Result<Image> {
    if is_tiff(bytes) {
        if let Some(p) = super::tiff_chunks::palette(bytes, check_size)? {
            return Ok(Image::Nearest {
                plane: Plane {
                    width: p.width,
                    height: p.height,
                    channels: 3,
                    data: p.rgb,
                },
                fill: p.index0,
            });
        }
        if let Some(j) = super::tiff_chunks::jpeg(bytes, check_size)? {
            return decode_jpeg_tiff(j);
        }
        if let Some(s) = super::tiff_chunks::samples(bytes, check_size)? {
            let mut data = s.data;
            if s.premultiplied {
                unpack_premultiplied(&mut data);
            }
            let mode = [Mode::L, Mode::LA, Mode::RGB, Mode::RGBA][s.channels - 1];
            return Ok(Image::Bicubic {
                mode,
                plane: Plane {
                    width: s.width,
                    height: s.height,
                    channels: s.channels,
                    data,
                },
            });
        }
    }
    without_panics(|| decode_with_image_crate(bytes))
}

/// Runs a decoder: a panic inside it (a bug on input it did not expect) is an error about
/// the image, not the end of the run, and prints nothing. Under cargo-fuzz the panic goes
/// through, so the fuzzer still reports it.
fn without_panics(run: impl FnOnce() -> Result<Image>) -> Result<Image> {
    if cfg!(fuzzing) {
        return run();
    }
    thread_local! {
        static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !DECODING.with(|d| d.get()) {
                previous(info)
            }
        }));
    });
    DECODING.with(|d| d.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
    DECODING.with(|d| d.set(false));
    result.unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(format!("corrupt image: the decoder failed ({why})"))
    })
}

/// BMP, TIFF, WebP (and what else the `image` crate reads) through the `image` crate, in the
/// modes PIL opens them in.
fn decode_with_image_crate(bytes: &[u8]) -> Result<Image> {
    let reader = image_reader(bytes)?;
    let (w, h) = reader.into_dimensions().map_err(image_error)?;
    let (w, h) = (w as usize, h as usize);
    check_size(w, h)?;
    // Modes PIL opens these files in that the `image` crate folds into RGB or gray.
    let pil_mode = if bytes.starts_with(b"BM") {
        bmp_palette_mode(bytes).or_else(|| bmp_16_bit_mode(bytes))
    } else if is_tiff(bytes) {
        tiff_mode(bytes)
    } else {
        None
    };
    // A CMYK TIFF's samples are read already: no second decode through `image`.
    let pil_mode = match pil_mode {
        Some(PilMode::Cmyk(data)) if data.len() == w * h * 4 => {
            return Ok(Image::Bicubic {
                mode: Mode::CMYK,
                plane: Plane {
                    width: w,
                    height: h,
                    channels: 4,
                    data,
                },
            })
        }
        other => other,
    };
    let mut reader = image_reader(bytes)?;
    reader.no_limits();
    let img = reader.decode().map_err(image_error)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    match pil_mode {
        Some(PilMode::Nearest(fill)) => {
            return Ok(Image::Nearest {
                plane: Plane {
                    width: w,
                    height: h,
                    channels: 3,
                    data: img.to_rgb8().into_raw(),
                },
                fill,
            })
        }
        Some(PilMode::Bits(bits)) => {
            // Back to the stored levels (the crate scales them up by a rule that keeps the
            // top bits), then up as PIL's unpacker does.
            let luts = bits.map(|b| {
                let max = (1u32 << b) - 1;
                (0..=255u32)
                    .map(|v| ((v >> (8 - b)) * 255 / max) as u8)
                    .collect::<Vec<_>>()
            });
            let mut data = img.to_rgb8().into_raw();
            for px in data.chunks_exact_mut(3) {
                for (c, lut) in px.iter_mut().zip(&luts) {
                    *c = lut[*c as usize];
                }
            }
            return Ok(Image::Bicubic {
                mode: Mode::RGB,
                plane: Plane {
                    width: w,
                    height: h,
                    channels: 3,
                    data,
                },
            });
        }
        Some(PilMode::Premultiplied) => {
            let mut data = img.to_rgba8().into_raw();
            unpack_premultiplied(&mut data);
            return Ok(Image::Bicubic {
                mode: Mode::RGBA,
                plane: Plane {
                    width: w,
                    height: h,
                    channels: 4,
                    data,
                },
            });
        }
        // A CMYK TIFF of an unexpected layout: `image`'s RGB conversion, as before.
        Some(PilMode::Cmyk(_)) | None => {}
    }
    use image::DynamicImage as D;
    let (mode, c, data) = match img {
        D::ImageLuma8(b) => (Mode::L, 1, b.into_raw()),
        D::ImageLumaA8(b) => (Mode::LA, 2, b.into_raw()),
        D::ImageRgb8(b) => (Mode::RGB, 3, b.into_raw()),
        D::ImageRgba8(b) => (Mode::RGBA, 4, b.into_raw()),
        D::ImageLuma16(b) => {
            let data = b.into_raw().into_iter().map(|v| v as i32).collect();
            return Ok(Image::Gray16 {
                width: w,
                height: h,
                data,
                sixteen: true,
            });
        }
        D::ImageLumaA16(_) => (Mode::LA, 2, img.to_luma_alpha8().into_raw()),
        // PIL reads 16-bit RGB(A) samples as their high byte ("RGB;16L", "RGBA;16B", ...);
        // `image` would round them to the nearest level.
        D::ImageRgb16(b) => (Mode::RGB, 3, high_bytes(b.into_raw())),
        D::ImageRgba16(b) => (Mode::RGBA, 4, high_bytes(b.into_raw())),
        D::ImageRgba32F(_) => (Mode::RGBA, 4, img.to_rgba8().into_raw()),
        other => (Mode::RGB, 3, other.to_rgb8().into_raw()),
    };
    Ok(Image::Bicubic {
        mode,
        plane: Plane {
            width: w,
            height: h,
            channels: c,
            data,
        },
    })
}

/// A mode PIL opens a BMP or TIFF in that the `image` crate does not keep.
enum PilMode {
    /// "P" or "1": resized with NEAREST (the palette applied first commutes with it), with
    /// what index 0 shows.
    Nearest([u8; 3]),
    /// "CMYK" as stored (TIFF): resized in CMYK, then converted.
    Cmyk(Vec<u8>),
    /// RGB with associated (premultiplied) alpha, which PIL unpacks to RGBA ("RGBa").
    Premultiplied,
    /// RGB of fewer bits a channel ("BGR;15", "BGR;16"), which PIL scales by `v * 255 / max`,
    /// truncated.
    Bits([u32; 3]),
}

/// A file in a format we read, using a feature we do not, is not called corrupt.
fn image_error(e: image::ImageError) -> String {
    match e {
        image::ImageError::Unsupported(u) => format!("unsupported image: {u}"),
        e => format!("corrupt image: {e}"),
    }
}

fn high_bytes(v: Vec<u16>) -> Vec<u8> {
    v.into_iter().map(|x| (x >> 8) as u8).collect()
}

/// PIL's "RGBa" unpacker: each colour times 255 over alpha, truncated and clipped; alpha 0
/// gives a zero pixel.
fn unpack_premultiplied(rgba: &mut [u8]) {
    for px in rgba.chunks_exact_mut(4) {
        let a = px[3] as u32;
        if a == 0 {
            px.fill(0);
        } else if a < 255 {
            for c in &mut px[..3] {
                *c = (*c as u32 * 255 / a).min(255) as u8;
            }
        }
    }
}

/// The channel bits of a 16-bit BMP in the layouts PIL reads (BmpImagePlugin): 5-5-5 without
/// bit fields or with them, and 5-6-5.
fn bmp_16_bit_mode(bytes: &[u8]) -> Option<PilMode> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(bytes.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(bytes.get(o..o + 4)?.try_into().ok()?));
    if !matches!(u32_at(14)?, 40 | 52 | 56 | 64 | 108 | 124) || u16_at(28)? != 16 {
        return None;
    }
    // The masks follow a 40-byte header, or lie at the same place inside a longer one.
    let masks = (u32_at(54)?, u32_at(58)?, u32_at(62)?);
    match (u32_at(30)?, masks) {
        (0, _) | (3, (0x7c00, 0x3e0, 0x1f)) => Some(PilMode::Bits([5, 5, 5])),
        (3, (0xf800, 0x7e0, 0x1f)) => Some(PilMode::Bits([5, 6, 5])),
        _ => None,
    }
}

/// PIL's mode for a BMP with a palette (1, 4 or 8 bits a pixel): "1" for a two-entry
/// black-and-white palette, "L" when entry i is gray level i (colours beyond 2) and "P"
/// otherwise (BmpImagePlugin). `None` for "L" and for BMPs without a palette.
fn bmp_palette_mode(bytes: &[u8]) -> Option<PilMode> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(bytes.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(bytes.get(o..o + 4)?.try_into().ok()?));
    let header = u32_at(14)? as usize;
    let (bits, colors, entry) = match header {
        12 => (u16_at(24)?, 0, 3),
        40 | 52 | 56 | 64 | 108 | 124 => (u16_at(28)?, u32_at(46)? as usize, 4),
        _ => return None,
    };
    if !matches!(bits, 1 | 4 | 8) {
        return None;
    }
    let colors = if colors == 0 { 1 << bits } else { colors };
    let start = 14 + header;
    let palette = bytes.get(start..start.checked_add(colors.checked_mul(entry)?)?)?;
    let levels: Vec<usize> = if colors == 2 {
        vec![0, 255]
    } else {
        (0..colors).collect()
    };
    let gray = levels.iter().enumerate().all(|(i, &v)| {
        let v = (v & 0xff) as u8;
        palette[i * entry..i * entry + 3] == [v, v, v]
    });
    // Entry 0 as PIL holds it: BGR(A) in the file; "1" is padded with black.
    let fill = if colors == 2 && gray {
        [0, 0, 0]
    } else {
        [palette[2], palette[1], palette[0]]
    };
    (colors == 2 || !gray).then_some(PilMode::Nearest(fill))
}

/// PIL's mode for a TIFF where it differs from the `image` crate's: bilevel ("1"), CMYK and
/// associated alpha.
fn tiff_mode(bytes: &[u8]) -> Option<PilMode> {
    // The size was checked against PIL's pixel limit already; the crate's own buffer limit
    // would otherwise send a large CMYK file down the converted-RGB path.
    let mut limits = tiff::decoder::Limits::unlimited();
    // A tag's count is allocated before its values are read: keep the crate's 1 MiB bound.
    limits.ifd_value_size = tiff::decoder::Limits::default().ifd_value_size;
    let mut d = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes))
        .ok()?
        .with_limits(limits);
    match d.colortype().ok()? {
        tiff::ColorType::Gray(1) => Some(PilMode::Nearest([0, 0, 0])),
        tiff::ColorType::RGBA(8) => {
            let extra = d.find_tag_unsigned_vec::<u16>(tiff::tags::Tag::ExtraSamples);
            matches!(extra, Ok(Some(v)) if v == [1]).then_some(PilMode::Premultiplied)
        }
        tiff::ColorType::CMYK(8) => match d.read_image().ok()? {
            tiff::decoder::DecodingResult::U8(v) => Some(PilMode::Cmyk(v)),
            _ => None,
        },
        _ => None,
    }
}

/// Netpbm P1-P6 as PIL's PpmImagePlugin reads them: P1/P4 as "1" (NEAREST), P2/P5 as "L", or
/// "I" when maxval is over 255, P3/P6 as "RGB". A maxval other than 255 (or 65535 for "I")
/// scales each sample to `round(v / maxval * 255)` (65535 for "I"), rounding half to even.
/// Netpbm's (and Python's `bytes.split`) whitespace.
const PNM_SPACE: &[u8] = b" \t\n\x0b\x0c\r";

fn decode_pnm(bytes: &[u8]) -> Result<Image> {
    let kind = bytes[1];
    // PIL reads the magic up to whitespace: "P61" is no PNM.
    if bytes.get(2).is_some_and(|c| !PNM_SPACE.contains(c)) {
        return Err("not a supported image format".into());
    }
    let mut at = 2;
    let mut token = |what: &str| -> Result<usize> {
        let mut t = Vec::new();
        while t.len() <= 10 {
            let Some(&c) = bytes.get(at) else { break };
            at += 1;
            if PNM_SPACE.contains(&c) {
                if t.is_empty() {
                    continue;
                }
                break;
            } else if c == b'#' {
                while at < bytes.len() && !b"\r\n".contains(&bytes[at]) {
                    at += 1;
                }
                at += 1;
                continue;
            }
            t.push(c);
        }
        pnm_number(&t).ok_or_else(|| format!("corrupt PNM header: bad {what}"))
    };
    let (w, h) = (token("width")?, token("height")?);
    check_size(w, h)?;
    let maxval = if matches!(kind, b'1' | b'4') {
        1
    } else {
        token("maxval")?
    };
    let data_at = at;
    if !(1..65536).contains(&maxval) {
        return Err(format!("corrupt PNM header: maxval {maxval} (1-65535)"));
    }
    let plane = |channels: usize, data: Vec<u8>| Plane {
        width: w,
        height: h,
        channels,
        data,
    };
    let body = &bytes[data_at.min(bytes.len())..];
    let short = || Err::<Image, String>("truncated PNM data".into());
    match kind {
        b'4' => {
            let row = w.div_ceil(8);
            if body.len() < row * h {
                return short();
            }
            let mut data = Vec::with_capacity(w * h);
            for r in body[..row * h].chunks_exact(row) {
                data.extend((0..w).map(|x| {
                    if r[x / 8] >> (7 - x % 8) & 1 == 1 {
                        0
                    } else {
                        255
                    }
                }));
            }
            Ok(Image::Nearest {
                plane: plane(1, data),
                fill: [0, 0, 0],
            })
        }
        b'1' => {
            let text = pnm_strip_comments(body);
            let mut data = Vec::with_capacity((w * h).min(text.len()));
            for &c in text.iter().filter(|c| !PNM_SPACE.contains(c)) {
                if data.len() == w * h {
                    break;
                }
                match c {
                    b'0' => data.push(255),
                    b'1' => data.push(0),
                    c => return Err(format!("corrupt PNM data: byte {c:#04x} in a plain bitmap")),
                }
            }
            if data.len() < w * h {
                return short();
            }
            Ok(Image::Nearest {
                plane: plane(1, data),
                fill: [0, 0, 0],
            })
        }
        _ => {
            let channels = if matches!(kind, b'3' | b'6') { 3 } else { 1 };
            let count = w * h * channels;
            let mode = if channels == 3 { Mode::RGB } else { Mode::L };
            // The common file (maxval 255, raw): its bytes are the samples.
            if matches!(kind, b'5' | b'6') && maxval == 255 {
                let data = body.get(..count).ok_or("truncated PNM data")?.to_vec();
                return Ok(Image::Bicubic {
                    mode,
                    plane: plane(channels, data),
                });
            }
            let wide = channels == 1 && maxval > 255;
            let out_max = if wide { 65535.0 } else { 255.0 };
            let scale = |v: usize| -> i32 {
                ((v as f64 / maxval as f64 * out_max).round_ties_even()).min(out_max) as i32
            };
            let values: Vec<i32> = if matches!(kind, b'5' | b'6') {
                let size = if maxval > 255 { 2 } else { 1 };
                if body.len() < count * size {
                    return short();
                }
                let raw = |i: usize| {
                    if size == 1 {
                        body[i] as usize
                    } else {
                        u16::from_be_bytes([body[2 * i], body[2 * i + 1]]) as usize
                    }
                };
                // PIL reads this case raw, the others through its scaling decoder.
                if wide && maxval == 65535 {
                    (0..count).map(|i| raw(i) as i32).collect()
                } else {
                    (0..count).map(|i| scale(raw(i))).collect()
                }
            } else {
                let text = pnm_strip_comments(body);
                let mut v = Vec::with_capacity(count.min(text.len()));
                for t in text
                    .split(|c| PNM_SPACE.contains(c))
                    .filter(|t| !t.is_empty())
                {
                    if v.len() == count {
                        break;
                    }
                    let n = pnm_number(t).ok_or("corrupt PNM data: not a number")?;
                    if n > maxval {
                        return Err(format!("corrupt PNM data: {n} over maxval {maxval}"));
                    }
                    v.push(scale(n));
                }
                if v.len() < count {
                    return short();
                }
                v
            };
            if wide {
                return Ok(Image::Gray16 {
                    width: w,
                    height: h,
                    data: values,
                    sixteen: false,
                });
            }
            let data = values.into_iter().map(|v| v as u8).collect();
            Ok(Image::Bicubic {
                mode,
                plane: plane(channels, data),
            })
        }
    }
}

/// A header or plain-data number: 1-10 ASCII digits (PIL's tokens stop at 10 characters).
fn pnm_number(t: &[u8]) -> Option<usize> {
    let t = t.strip_prefix(b"+").unwrap_or(t);
    if t.is_empty() || t.len() > 10 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

/// Plain PNM data without its `#` comments (each with the end of its line).
fn pnm_strip_comments(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut in_comment = false;
    for &c in body {
        if in_comment {
            // PIL drops the line end with the comment, joining what stood either side.
            in_comment = c != b'\n' && c != b'\r';
        } else if c == b'#' {
            in_comment = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (PIL's mode, samples): "1" and "P" as NEAREST images.
    fn opened(bytes: &[u8]) -> (&'static str, Vec<i64>) {
        match decode_any(bytes).unwrap() {
            Image::Nearest { plane, .. } => ("1/P", plane.data.iter().map(|&v| v as i64).collect()),
            Image::Bicubic { mode, plane } => (
                match mode {
                    Mode::L => "L",
                    Mode::RGB => "RGB",
                    Mode::RGBA => "RGBA",
                    Mode::LA => "LA",
                    Mode::CMYK => "CMYK",
                },
                plane.data.iter().map(|&v| v as i64).collect(),
            ),
            Image::Gray16 { data, sixteen, .. } => (
                if sixteen { "I;16" } else { "I" },
                data.iter().map(|&v| v as i64).collect(),
            ),
        }
    }

    #[test]
    fn pnm_reads_as_pillow_13_does() {
        // Expected values from Pillow 13.0 `Image.open(...)` on the same bytes.
        let cases: &[(&[u8], &str, &[i64])] = &[
            // maxval 10: round half to even (3 -> 76.5 -> 76).
            (
                b"P6 2 1 10\n\x03\x01\x0a\x00\x05\x07",
                "RGB",
                &[76, 26, 255, 0, 128, 178],
            ),
            (b"P5 3 1 6\n\x01\x03\x05", "L", &[42, 128, 212]),
            (
                b"P2 4 1 1000\n0 500 999 1000\n",
                "I",
                &[0, 32768, 65469, 65535],
            ),
            (b"P3 1 1 255\n1 #c\n2 3\n", "RGB", &[1, 2, 3]),
            // A comment goes with its line end: "1 0" + "1 001".
            (b"P1 3 2\n1 0#x\n1 001", "1/P", &[0, 255, 0, 255, 255, 0]),
            (
                b"P4\n#c\n10 1\n\xb0\x40",
                "1/P",
                &[0, 255, 0, 0, 255, 255, 255, 255, 255, 0],
            ),
            (b"P5 2 1 65535\n\x01\x02\xff\xff", "I", &[258, 65535]),
            (b"P5 2 1 4095\n\x00\x01\x0f\xff", "I", &[16, 65535]),
            (b"P6 1 1 255 \x00\x00\x00", "RGB", &[0, 0, 0]),
            (b"P6\t1 1 255\r\x00\x01\x02", "RGB", &[0, 1, 2]),
        ];
        for (bytes, mode, want) in cases {
            let (m, got) = opened(bytes);
            assert_eq!(
                (m, got.as_slice()),
                (*mode, *want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        for bad in [
            &b"P3 1 1 255 1#c\n2 3\n"[..],
            b"P61 1 1 255\n\x00\x00\x00",
            b"P6 1 1 0\n\x00\x00\x00",
            b"P6 1 1 255\n\x00\x00",
            b"P2 1 1 10\n11\n",
            b"P6 1",
        ] {
            assert!(
                decode_any(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bmp_palettes_open_in_pils_modes() {
        // 2x1 8-bit BMP with `colors` palette entries; pixel indices 0 and 1.
        fn bmp(palette: &[[u8; 3]]) -> Vec<u8> {
            let pal: Vec<u8> = palette.iter().flat_map(|&[r, g, b]| [b, g, r, 0]).collect();
            let off = 14 + 40 + pal.len() as u32;
            let mut v = b"BM".to_vec();
            v.extend((off + 4).to_le_bytes());
            v.extend([0; 4]);
            v.extend(off.to_le_bytes());
            for x in [40u32, 2, 1] {
                v.extend(x.to_le_bytes());
            }
            v.extend(1u16.to_le_bytes());
            v.extend(8u16.to_le_bytes());
            for x in [0u32, 4, 2835, 2835, palette.len() as u32, 0] {
                v.extend(x.to_le_bytes());
            }
            v.extend(pal);
            v.extend([0, 1, 0, 0]);
            v
        }
        let gray: Vec<[u8; 3]> = (0..3).map(|i| [i, i, i]).collect();
        assert_eq!(opened(&bmp(&gray)).0, "RGB"); // "L": bicubic, gray in every channel
        assert_eq!(opened(&bmp(&[[0; 3], [255; 3]])).0, "1/P"); // "1"
        assert_eq!(opened(&bmp(&[[9, 0, 0], [0, 9, 0], [0, 0, 9]])).0, "1/P"); // "P"
        let (_, px) = opened(&bmp(&[[9, 0, 0], [0, 9, 0], [0, 0, 9]]));
        assert_eq!(px, [9, 0, 0, 0, 9, 0]);
    }

    #[test]
    fn associated_alpha_unpacks_as_pils_rgba() {
        let mut px = [200, 10, 0, 100, 50, 60, 70, 0, 1, 2, 3, 255];
        unpack_premultiplied(&mut px);
        assert_eq!(px, [255, 25, 0, 100, 0, 0, 0, 0, 1, 2, 3, 255]);
    }

    #[test]
    fn a_panicking_decoder_is_an_error() {
        let e = without_panics(|| panic!("index {} out of range", 7)).unwrap_err();
        assert_eq!(
            e,
            "corrupt image: the decoder failed (index 7 out of range)"
        );
        let e = without_panics(|| std::panic::panic_any(3u8)).unwrap_err();
        assert_eq!(e, "corrupt image: the decoder failed (no message)");
        // Outside the decoder, panics are as before: caught here, but reported by the hook.
        assert!(std::panic::catch_unwind(|| panic!("elsewhere")).is_err());
        assert!(without_panics(|| Err("plain error".into())).unwrap_err() == "plain error");
    }
}
