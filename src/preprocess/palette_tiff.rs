//! Palette ("P") TIFFs, which the `tiff` crate refuses, read as PIL reads them: the first
//! image's strips of 1, 2, 4 or 8-bit indices (uncompressed, PackBits, LZW or Deflate, the
//! 8-bit horizontal predictor after LZW or Deflate as libtiff applies it) through the
//! ColorMap, each 16-bit entry taken as `v // 256` (TiffImagePlugin's palette). The tags are
//! read by the `tiff` crate; the strips here. Bounded by the file's length and the image's
//! size; what PIL would refuse or we do not read is an error naming it.

use std::io::Read;
use tiff::tags::Tag;

type Result<T> = std::result::Result<T, String>;

fn unsupported(what: impl std::fmt::Display) -> String {
    format!("unsupported image: palette TIFF with {what}")
}

fn corrupt(what: impl std::fmt::Display) -> String {
    format!("corrupt TIFF: {what}")
}

/// The RGB pixels (`[h][w][3]`) of a palette TIFF, or None when the TIFF is not one;
/// `check_size` refuses sizes PIL would not open.
pub fn decode(
    bytes: &[u8],
    check_size: fn(usize, usize) -> Result<()>,
) -> Result<Option<(usize, usize, Vec<u8>)>> {
    let Ok(d) = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes)) else {
        return Ok(None);
    };
    let mut d = d.with_limits(tiff::decoder::Limits::unlimited());
    let mut tag = |t: Tag| -> Result<Option<Vec<u64>>> {
        d.find_tag_unsigned_vec::<u64>(t)
            .map_err(|e| corrupt(format!("tag {t:?}: {e}")))
    };
    if tag(Tag::PhotometricInterpretation)?.as_deref() != Some(&[3]) {
        return Ok(None);
    }
    let one = |v: Option<Vec<u64>>, default: u64, name: &str| -> Result<u64> {
        match v.as_deref() {
            None => Ok(default),
            Some([x]) => Ok(*x),
            Some(v) => Err(corrupt(format!("{name} holds {} values", v.len()))),
        }
    };
    let w = one(tag(Tag::ImageWidth)?, 0, "ImageWidth")? as usize;
    let h = one(tag(Tag::ImageLength)?, 0, "ImageLength")? as usize;
    check_size(w, h)?;
    let samples = one(tag(Tag::SamplesPerPixel)?, 1, "SamplesPerPixel")?;
    if samples != 1 {
        return Err(unsupported(format!("{samples} samples a pixel")));
    }
    let bits = one(tag(Tag::BitsPerSample)?, 1, "BitsPerSample")?;
    if !matches!(bits, 1 | 2 | 4 | 8) {
        return Err(unsupported(format!("{bits} bits a sample")));
    }
    let fill = one(tag(Tag::FillOrder)?, 1, "FillOrder")?;
    if fill != 1 {
        return Err(unsupported(format!("fill order {fill}")));
    }
    if tag(Tag::TileWidth)?.is_some() {
        return Err(unsupported("tiles"));
    }
    let compression = one(tag(Tag::Compression)?, 1, "Compression")?;
    if !matches!(compression, 1 | 5 | 8 | 32946 | 32773) {
        return Err(unsupported(format!("compression {compression}")));
    }
    let predictor = one(tag(Tag::Predictor)?, 1, "Predictor")?;
    // libtiff's LZW and Deflate codecs undo the predictor; PIL's raw and PackBits readers
    // ignore the tag.
    let differenced = matches!(compression, 5 | 8 | 32946) && predictor == 2;
    if matches!(compression, 5 | 8 | 32946) && !matches!(predictor, 1 | 2)
        || differenced && bits != 8
    {
        return Err(unsupported(format!("predictor {predictor}")));
    }
    let colormap =
        tag(Tag::ColorMap)?.ok_or_else(|| corrupt("palette image without a ColorMap"))?;
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
    let rows_per_strip = one(tag(Tag::RowsPerStrip)?, u32::MAX as u64, "RowsPerStrip")?;
    let rows_per_strip = (rows_per_strip as usize).clamp(1, h);
    let offsets = tag(Tag::StripOffsets)?.ok_or_else(|| corrupt("no StripOffsets"))?;
    let counts = tag(Tag::StripByteCounts)?.ok_or_else(|| corrupt("no StripByteCounts"))?;
    let strips = h.div_ceil(rows_per_strip);
    if offsets.len() < strips || counts.len() < strips {
        return Err(corrupt(format!(
            "{} strip offsets and {} byte counts for {strips} strips",
            offsets.len(),
            counts.len()
        )));
    }
    let row_bytes = (w * bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(w * h * 3);
    let mut indices = Vec::new();
    for s in 0..strips {
        let rows = rows_per_strip.min(h - s * rows_per_strip);
        let want = rows * row_bytes;
        let (off, len) = (offsets[s], counts[s]);
        let raw = off
            .checked_add(len)
            .filter(|&end| end <= bytes.len() as u64)
            .map(|end| &bytes[off as usize..end as usize])
            .ok_or_else(|| corrupt(format!("strip {s} lies beyond the end of the file")))?;
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
    Ok(Some((w, h, out)))
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
            out.extend(std::iter::repeat_n(b, 1 - n as isize as usize));
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
