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
    /// P and 1: resized with NEAREST. Palette already applied (nearest commutes with it).
    Nearest { plane: Plane },
    /// I;16: 16-bit grayscale.
    Gray16 {
        width: usize,
        height: usize,
        data: Vec<i32>,
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
            Image::Bicubic { plane, .. } | Image::Nearest { plane } => (plane.width, plane.height),
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
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(format!(
            "image is {w}x{h} = {} pixels, over the {MAX_PIXELS}-pixel limit (decompression bomb?)",
            w as u64 * h as u64
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
        decode_jpeg(bytes)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        decode_gif(bytes)
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

fn decode_jpeg(bytes: &[u8]) -> Result<Image> {
    let run = || -> Result<Image> {
        let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
        unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
        err.error_exit = Some(jpeg_error_exit);
        err.emit_message = Some(jpeg_emit_message);
        let d = mozjpeg::Decompress::builder()
            .with_err(err)
            .from_mem(bytes)
            .map_err(|e| e.to_string())?;
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
        return Ok(Image::Nearest { plane });
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
    Ok(Image::Nearest {
        plane: Plane {
            width: w,
            height: h,
            channels: 3,
            data,
        },
    })
}

fn decode_other(bytes: &[u8]) -> Result<Image> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not a supported image format".into());
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| format!("corrupt image: {e}"))?;
    check_size(w as usize, h as usize)?;
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut reader = reader;
    reader.no_limits();
    let img = reader.decode().map_err(|e| format!("corrupt image: {e}"))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
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
            });
        }
        D::ImageLumaA16(_) => (Mode::LA, 2, img.to_luma_alpha8().into_raw()),
        D::ImageRgba16(_) | D::ImageRgba32F(_) => (Mode::RGBA, 4, img.to_rgba8().into_raw()),
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
