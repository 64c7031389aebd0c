//! TIFF strips we read ourselves where the `tiff` crate does not read them as PIL does (the
//! tags are read by the `tiff` crate):
//! - palette ("P") TIFFs, which it refuses: the first image's strips of 1, 2, 4 or 8-bit
//!   indices (uncompressed, PackBits, LZW or Deflate, the 8-bit horizontal predictor after LZW
//!   or Deflate as libtiff applies it) through the ColorMap, each 16-bit entry taken as
//!   `v // 256` (TiffImagePlugin's palette);
//! - JPEG-compressed strips (compression 7), which it decodes with another JPEG decoder than
//!   PIL's libtiff + libjpeg: each strip is handed back as a whole JPEG stream (the shared
//!   JPEGTables spliced in) for the libjpeg-turbo decoder PIL's pixels come from.
//!
//! Also the Orientation tag, which PIL applies to a TIFF as it loads it.
//!
//! Bounded by the file's length and the image's size; what PIL would refuse or we do not read
//! is an error naming it.

use std::io::Read;
use tiff::tags::Tag;

type Result<T> = std::result::Result<T, String>;

fn unsupported(what: impl std::fmt::Display) -> String {
    format!("unsupported image: palette TIFF with {what}")
}

fn corrupt(what: impl std::fmt::Display) -> String {
    format!("corrupt TIFF: {what}")
}

/// The first image's tags, as unsigned values.
struct Tags<'a>(tiff::decoder::Decoder<std::io::Cursor<&'a [u8]>>);

impl<'a> Tags<'a> {
    fn new(bytes: &'a [u8]) -> Option<Self> {
        // The crate's default limits: a tag's value at most 1 MiB (a count field may claim
        // more than the file holds, and the vector is allocated before it is read).
        let d = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes)).ok()?;
        Some(Tags(d))
    }

    fn all(&mut self, t: Tag) -> Result<Option<Vec<u64>>> {
        self.0
            .find_tag_unsigned_vec::<u64>(t)
            .map_err(|e| corrupt(format!("tag {t:?}: {e}")))
    }

    /// A one-value tag, or `default` when absent.
    fn one(&mut self, t: Tag, default: u64) -> Result<u64> {
        match self.all(t)?.as_deref() {
            None => Ok(default),
            Some([x]) => Ok(*x),
            Some(v) => Err(corrupt(format!("{t:?} holds {} values", v.len()))),
        }
    }

    /// Width, height and rows a strip (at least 1, at most the height).
    fn geometry(&mut self) -> Result<(usize, usize, usize)> {
        let w = self.one(Tag::ImageWidth, 0)? as usize;
        let h = self.one(Tag::ImageLength, 0)? as usize;
        let rows = self.one(Tag::RowsPerStrip, u32::MAX as u64)? as usize;
        Ok((w, h, rows.clamp(1, h.max(1))))
    }

    /// The byte ranges of the first `strips` strips, each checked to lie inside `len` bytes.
    fn strips(&mut self, strips: usize, len: usize) -> Result<Vec<std::ops::Range<usize>>> {
        let offsets = self
            .all(Tag::StripOffsets)?
            .ok_or_else(|| corrupt("no StripOffsets"))?;
        let counts = self
            .all(Tag::StripByteCounts)?
            .ok_or_else(|| corrupt("no StripByteCounts"))?;
        if offsets.len() < strips || counts.len() < strips {
            return Err(corrupt(format!(
                "{} strip offsets and {} byte counts for {strips} strips",
                offsets.len(),
                counts.len()
            )));
        }
        (0..strips)
            .map(|s| {
                offsets[s]
                    .checked_add(counts[s])
                    .filter(|&end| end <= len as u64)
                    .map(|end| offsets[s] as usize..end as usize)
                    .ok_or_else(|| corrupt(format!("strip {s} lies beyond the end of the file")))
            })
            .collect()
    }
}

/// The first image's Orientation tag (1 when absent or unreadable: PIL then leaves the image
/// as stored).
pub fn orientation(bytes: &[u8]) -> u16 {
    Tags::new(bytes)
        .and_then(|mut t| t.one(Tag::Orientation, 1).ok())
        .and_then(|o| u16::try_from(o).ok())
        .unwrap_or(1)
}

/// A palette TIFF's pixels with the palette applied.
pub struct PaletteImage {
    pub width: usize,
    pub height: usize,
    /// `[h][w][3]`.
    pub rgb: Vec<u8>,
    /// Palette entry 0: what PIL pads a "P" image with.
    pub index0: [u8; 3],
}

/// A palette TIFF's pixels, or None when the TIFF is not one; `check_size` refuses sizes PIL
/// would not open.
pub fn palette(
    bytes: &[u8],
    check_size: fn(usize, usize) -> Result<()>,
) -> Result<Option<PaletteImage>> {
    let Some(mut t) = Tags::new(bytes) else {
        return Ok(None);
    };
    if t.all(Tag::PhotometricInterpretation)?.as_deref() != Some(&[3]) {
        return Ok(None);
    }
    let (w, h, rows_per_strip) = t.geometry()?;
    check_size(w, h)?;
    let samples = t.one(Tag::SamplesPerPixel, 1)?;
    if samples != 1 {
        return Err(unsupported(format!("{samples} samples a pixel")));
    }
    let bits = t.one(Tag::BitsPerSample, 1)?;
    if !matches!(bits, 1 | 2 | 4 | 8) {
        return Err(unsupported(format!("{bits} bits a sample")));
    }
    let fill = t.one(Tag::FillOrder, 1)?;
    if fill != 1 {
        return Err(unsupported(format!("fill order {fill}")));
    }
    if t.all(Tag::TileWidth)?.is_some() {
        return Err(unsupported("tiles"));
    }
    let compression = t.one(Tag::Compression, 1)?;
    if !matches!(compression, 1 | 5 | 8 | 32946 | 32773) {
        return Err(unsupported(format!("compression {compression}")));
    }
    let predictor = t.one(Tag::Predictor, 1)?;
    // libtiff's LZW and Deflate codecs undo the predictor; PIL's raw and PackBits readers
    // ignore the tag.
    let differenced = matches!(compression, 5 | 8 | 32946) && predictor == 2;
    if matches!(compression, 5 | 8 | 32946) && !matches!(predictor, 1 | 2)
        || differenced && bits != 8
    {
        return Err(unsupported(format!("predictor {predictor}")));
    }
    let colormap = t
        .all(Tag::ColorMap)?
        .ok_or_else(|| corrupt("palette image without a ColorMap"))?;
    let n = 1usize << bits;
    if colormap.len() != 3 * n {
        return Err(corrupt(format!(
            "ColorMap holds {} values, {} expected for {bits}-bit indices",
            colormap.len(),
            3 * n
        )));
    }
    // The ColorMap lists all reds, then all greens, then all blues.
    let palette: Vec<[u8; 3]> = (0..n)
        .map(|i| {
            let c = |k: usize| (colormap[k * n + i].min(65535) / 256) as u8;
            [c(0), c(1), c(2)]
        })
        .collect();
    let strips = h.div_ceil(rows_per_strip);
    let ranges = t.strips(strips, bytes.len())?;
    let row_bytes = (w * bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(w * h * 3);
    let mut indices = Vec::new();
    for s in 0..strips {
        let rows = rows_per_strip.min(h - s * rows_per_strip);
        let want = rows * row_bytes;
        let raw = &bytes[ranges[s].clone()];
        indices.clear();
        match compression {
            1 => indices.extend_from_slice(&raw[..raw.len().min(want)]),
            32773 => packbits(raw, want, &mut indices),
            5 => lzw(raw, want, &mut indices).map_err(|e| corrupt(format!("strip {s}: {e}")))?,
            _ => {
                flate2::read::ZlibDecoder::new(raw)
                    .take(want as u64)
                    .read_to_end(&mut indices)
                    .map_err(|e| corrupt(format!("strip {s}: {e}")))?;
            }
        }
        if indices.len() < want {
            return Err(corrupt(format!(
                "strip {s} holds {} of its {want} bytes",
                indices.len()
            )));
        }
        for row in indices[..want].chunks_exact_mut(row_bytes) {
            if differenced {
                for x in 1..row.len() {
                    row[x] = row[x].wrapping_add(row[x - 1]);
                }
            }
            let per_byte = 8 / bits as usize;
            let mask = (n - 1) as u8;
            for x in 0..w {
                let byte = row[x / per_byte];
                let shift = 8 - bits as usize * (x % per_byte + 1);
                let i = (byte >> shift) & mask;
                out.extend_from_slice(&palette[i as usize]);
            }
        }
    }
    Ok(Some(PaletteImage {
        width: w,
        height: h,
        rgb: out,
        index0: palette[0],
    }))
}

/// A JPEG-compressed TIFF's strips (compression 7, contiguous samples, no tiles), each a whole
/// JPEG stream; strip `s` gives rows `s * rows_per_strip ..` of the image.
pub struct JpegStrips {
    pub width: usize,
    pub height: usize,
    pub rows_per_strip: usize,
    pub streams: Vec<Vec<u8>>,
}

/// The strips of a JPEG-compressed TIFF in gray, RGB or YCbCr, or None for any other TIFF
/// (which the `tiff` crate reads, as before).
pub fn jpeg(
    bytes: &[u8],
    check_size: fn(usize, usize) -> Result<()>,
) -> Result<Option<JpegStrips>> {
    let Some(mut t) = Tags::new(bytes) else {
        return Ok(None);
    };
    if t.one(Tag::Compression, 1)? != 7
        || t.all(Tag::TileWidth)?.is_some()
        || t.one(Tag::PlanarConfiguration, 1)? != 1
        || !matches!(t.one(Tag::PhotometricInterpretation, 0)?, 1 | 2 | 6)
    {
        return Ok(None);
    }
    let (width, height, rows_per_strip) = t.geometry()?;
    check_size(width, height)?;
    let ranges = t.strips(height.div_ceil(rows_per_strip), bytes.len())?;
    // The quantisation and Huffman tables the strips share: SOI, tables, EOI.
    let tables = match t.0.find_tag(Tag::JPEGTables) {
        Ok(Some(v)) => v
            .into_u8_vec()
            .map_err(|e| corrupt(format!("tag JPEGTables: {e}")))?,
        Ok(None) => Vec::new(),
        Err(e) => return Err(corrupt(format!("tag JPEGTables: {e}"))),
    };
    let shared =
        (tables.len() >= 4 && tables.starts_with(&[0xff, 0xd8]) && tables.ends_with(&[0xff, 0xd9]))
            .then(|| &tables[..tables.len() - 2]);
    let streams = ranges
        .into_iter()
        .map(|r| {
            let strip = &bytes[r];
            match (shared, strip.strip_prefix(&[0xff, 0xd8])) {
                (Some(head), Some(body)) => [head, body].concat(),
                _ => strip.to_vec(),
            }
        })
        .collect();
    Ok(Some(JpegStrips {
        width,
        height,
        rows_per_strip,
        streams,
    }))
}

/// PackBits runs up to `want` bytes.
fn packbits(mut raw: &[u8], want: usize, out: &mut Vec<u8>) {
    while out.len() < want {
        let Some((&n, rest)) = raw.split_first() else {
            return;
        };
        raw = rest;
        let n = n as i8;
        if n >= 0 {
            let take = (n as usize + 1).min(raw.len());
            out.extend_from_slice(&raw[..take]);
            raw = &raw[take..];
        } else if n != -128 {
            let Some((&b, rest)) = raw.split_first() else {
                return;
            };
            raw = rest;
            out.extend(std::iter::repeat_n(b, (1 - n as isize) as usize));
        }
    }
    out.truncate(want);
}

/// TIFF's LZW (MSB-first codes, the early code-size switch) up to `want` bytes.
fn lzw(raw: &[u8], want: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    let mut dec = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
    out.resize(want, 0);
    let (mut read, mut written) = (0, 0);
    while written < want {
        let r = dec.decode_bytes(&raw[read..], &mut out[written..]);
        read += r.consumed_in;
        written += r.consumed_out;
        match r.status {
            Ok(weezl::LzwStatus::Ok) if r.consumed_in + r.consumed_out > 0 => {}
            Ok(_) => break,
            Err(e) => return Err(format!("LZW: {e}")),
        }
    }
    out.truncate(written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_runs() {
        let mut out = Vec::new();
        // 3 literals, a run of 4, a no-op, 1 literal.
        packbits(&[2, 1, 2, 3, 0xfd, 9, 0x80, 0, 7], 100, &mut out);
        assert_eq!(out, [1, 2, 3, 9, 9, 9, 9, 7]);
        out.clear();
        packbits(&[0xfd, 9, 0, 7], 2, &mut out);
        assert_eq!(out, [9, 9]);
    }
}
