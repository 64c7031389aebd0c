//! TIFFs we read ourselves where the `tiff` crate does not read them as PIL does (the tags are
//! read by the `tiff` crate), in strips or tiles, one plane or one plane a sample:
//! - palette ("P") TIFFs, which it refuses: 1, 2, 4 or 8-bit indices (uncompressed, PackBits,
//!   LZW or Deflate, the 8-bit horizontal predictor after LZW or Deflate as libtiff applies
//!   it) through the ColorMap, each 16-bit entry taken as `v // 256` (TiffImagePlugin's
//!   palette);
//! - JPEG-compressed TIFFs (compression 7), which it decodes with another JPEG decoder than
//!   PIL's libtiff + libjpeg: each chunk is handed back as a whole JPEG stream (the shared
//!   JPEGTables spliced in) for the libjpeg-turbo decoder PIL's pixels come from;
//! - tiled or planar TIFFs of 8-bit gray, gray + alpha, RGB and RGBA samples, and gray +
//!   alpha in strips: it panics on planar tiles, refuses gray + alpha and misreads tiled RGB
//!   with an unspecified extra sample.
//!
//! Also the Orientation tag, which PIL applies to a TIFF as it loads it.
//!
//! Bounded by the file's length and the image's size; what PIL would refuse or we do not read
//! is an error naming it.

use std::io::Read;
use std::ops::Range;
use tiff::tags::Tag;

type Result<T> = std::result::Result<T, String>;

fn unsupported(what: impl std::fmt::Display) -> String {
    format!("unsupported image: {what}")
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

    /// The bits of every sample when they are all the same (BitsPerSample holds one value or
    /// one a sample), else None.
    fn bits(&mut self) -> Result<Option<u64>> {
        Ok(match self.all(Tag::BitsPerSample)?.as_deref() {
            None => Some(1),
            Some([b, rest @ ..]) if rest.iter().all(|r| r == b) => Some(*b),
            Some(_) => None,
        })
    }

    fn tiled(&mut self) -> Result<bool> {
        Ok(self.all(Tag::TileWidth)?.is_some())
    }

    /// How the first image is cut into chunks, `planes` sets of them, each chunk's bytes
    /// checked to lie inside `len` bytes.
    fn layout(
        &mut self,
        planes: usize,
        len: usize,
        check_size: fn(usize, usize) -> Result<()>,
    ) -> Result<Layout> {
        let w = self.one(Tag::ImageWidth, 0)? as usize;
        let h = self.one(Tag::ImageLength, 0)? as usize;
        check_size(w, h)?;
        let tiled = self.tiled()?;
        let (chunk_width, chunk_height) = if tiled {
            let tw = self.one(Tag::TileWidth, 0)? as usize;
            let th = self.one(Tag::TileLength, 0)? as usize;
            if tw == 0 || th == 0 {
                return Err(corrupt(format!("tiles of {tw}x{th} pixels")));
            }
            // Tiles are stored whole, edge ones too: their area is what gets decoded.
            check_size(w.div_ceil(tw) * tw, h.div_ceil(th) * th)?;
            (tw, th)
        } else {
            let rows = self.one(Tag::RowsPerStrip, u32::MAX as u64)? as usize;
            (w, rows.clamp(1, h))
        };
        let (across, down) = (w.div_ceil(chunk_width), h.div_ceil(chunk_height));
        let (offsets, counts, what) = if tiled {
            (Tag::TileOffsets, Tag::TileByteCounts, "tile")
        } else {
            (Tag::StripOffsets, Tag::StripByteCounts, "strip")
        };
        let n = planes * across * down;
        let offsets = self
            .all(offsets)?
            .ok_or_else(|| corrupt(format!("no {offsets:?}")))?;
        let counts = self
            .all(counts)?
            .ok_or_else(|| corrupt(format!("no {counts:?}")))?;
        if offsets.len() < n || counts.len() < n {
            return Err(corrupt(format!(
                "{} {what} offsets and {} byte counts for {n} {what}s",
                offsets.len(),
                counts.len()
            )));
        }
        let ranges = (0..n)
            .map(|k| {
                offsets[k]
                    .checked_add(counts[k])
                    .filter(|&end| end <= len as u64)
                    .map(|end| offsets[k] as usize..end as usize)
                    .ok_or_else(|| corrupt(format!("{what} {k} lies beyond the end of the file")))
            })
            .collect::<Result<_>>()?;
        Ok(Layout {
            width: w,
            height: h,
            chunk_width,
            chunk_height,
            tiled,
            across,
            down,
            ranges,
        })
    }
}

/// How a TIFF's first image is cut into chunks: strips (the image's width by RowsPerStrip
/// rows, the last one holding the rows left) or tiles (all stored whole, those at the right
/// and bottom edges padded), in row-major order, one set per plane.
pub struct Layout {
    pub width: usize,
    pub height: usize,
    pub chunk_width: usize,
    pub chunk_height: usize,
    pub tiled: bool,
    across: usize,
    down: usize,
    ranges: Vec<Range<usize>>,
}

/// Where chunk `k` goes: its plane, its top-left corner, and the columns and rows of it that
/// lie inside the image; `stored_rows` it holds in the file.
pub struct Place {
    pub plane: usize,
    pub x: usize,
    pub y: usize,
    pub columns: usize,
    pub rows: usize,
    pub stored_rows: usize,
}

impl Layout {
    pub fn chunks(&self) -> usize {
        self.ranges.len()
    }

    pub fn what(&self) -> &'static str {
        if self.tiled {
            "tile"
        } else {
            "strip"
        }
    }

    pub fn place(&self, k: usize) -> Place {
        let per_plane = self.across * self.down;
        let i = k % per_plane;
        let (x, y) = (
            (i % self.across) * self.chunk_width,
            (i / self.across) * self.chunk_height,
        );
        let rows = self.chunk_height.min(self.height - y);
        Place {
            plane: k / per_plane,
            x,
            y,
            columns: self.chunk_width.min(self.width - x),
            rows,
            stored_rows: if self.tiled { self.chunk_height } else { rows },
        }
    }

    /// Chunk `k`'s bytes decompressed: `row_bytes` times its stored rows (compression 1,
    /// PackBits, LZW or Deflate), with the 8-bit horizontal predictor undone over `step`
    /// bytes when `differenced`.
    fn inflate(
        &self,
        bytes: &[u8],
        k: usize,
        c: &Coding,
        row_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let raw = &bytes[self.ranges[k].clone()];
        let want = self.place(k).stored_rows * row_bytes;
        let what = self.what();
        out.clear();
        match c.compression {
            1 => out.extend_from_slice(&raw[..raw.len().min(want)]),
            32773 => packbits(raw, want, out),
            5 => lzw(raw, want, out).map_err(|e| corrupt(format!("{what} {k}: {e}")))?,
            _ => {
                flate2::read::ZlibDecoder::new(raw)
                    .take(want as u64)
                    .read_to_end(out)
                    .map_err(|e| corrupt(format!("{what} {k}: {e}")))?;
            }
        }
        if out.len() < want {
            return Err(corrupt(format!(
                "{what} {k} holds {} of its {want} bytes",
                out.len()
            )));
        }
        if let Some(step) = c.differenced {
            for row in out.chunks_exact_mut(row_bytes) {
                for x in step..row.len() {
                    row[x] = row[x].wrapping_add(row[x - step]);
                }
            }
        }
        Ok(())
    }
}

/// A chunk coding we read: the compression, and the byte step of the horizontal predictor
/// when libtiff undoes one.
struct Coding {
    compression: u64,
    differenced: Option<usize>,
}

impl Coding {
    /// Compression 1, 5 (LZW), 8 / 32946 (Deflate) or 32773 (PackBits); the predictor over
    /// `step` bytes (one sample), only for 8-bit samples. `what` names the image in errors.
    fn read(t: &mut Tags, bits: u64, step: usize, what: &str) -> Result<Coding> {
        let compression = t.one(Tag::Compression, 1)?;
        if !matches!(compression, 1 | 5 | 8 | 32946 | 32773) {
            return Err(unsupported(format!(
                "{what} with compression {compression}"
            )));
        }
        let predictor = t.one(Tag::Predictor, 1)?;
        // libtiff's LZW and Deflate codecs undo the predictor; PIL's raw and PackBits readers
        // ignore the tag.
        let lzw_or_deflate = matches!(compression, 5 | 8 | 32946);
        if lzw_or_deflate && !matches!(predictor, 1 | 2)
            || lzw_or_deflate && predictor == 2 && bits != 8
        {
            return Err(unsupported(format!("{what} with predictor {predictor}")));
        }
        Ok(Coding {
            compression,
            differenced: (lzw_or_deflate && predictor == 2).then_some(step),
        })
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
    let samples = t.one(Tag::SamplesPerPixel, 1)?;
    if samples != 1 {
        return Err(unsupported(format!(
            "palette TIFF with {samples} samples a pixel"
        )));
    }
    let bits = t.one(Tag::BitsPerSample, 1)?;
    if !matches!(bits, 1 | 2 | 4 | 8) {
        return Err(unsupported(format!(
            "palette TIFF with {bits} bits a sample"
        )));
    }
    let fill = t.one(Tag::FillOrder, 1)?;
    if fill != 1 {
        return Err(unsupported(format!("palette TIFF with fill order {fill}")));
    }
    let coding = Coding::read(&mut t, bits, 1, "palette TIFF")?;
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
    let l = t.layout(1, bytes.len(), check_size)?;
    let (w, h) = (l.width, l.height);
    let row_bytes = (l.chunk_width * bits as usize).div_ceil(8);
    let (per_byte, mask) = (8 / bits as usize, (n - 1) as u8);
    let mut indices = vec![0u8; w * h];
    let mut chunk = Vec::new();
    for k in 0..l.chunks() {
        l.inflate(bytes, k, &coding, row_bytes, &mut chunk)?;
        let p = l.place(k);
        for (r, row) in chunk.chunks_exact(row_bytes).take(p.rows).enumerate() {
            let dst = &mut indices[(p.y + r) * w + p.x..][..p.columns];
            for (x, i) in dst.iter_mut().enumerate() {
                let shift = 8 - bits as usize * (x % per_byte + 1);
                *i = (row[x / per_byte] >> shift) & mask;
            }
        }
    }
    let rgb = indices.iter().flat_map(|&i| palette[i as usize]).collect();
    Ok(Some(PaletteImage {
        width: w,
        height: h,
        rgb,
        index0: palette[0],
    }))
}

/// A JPEG-compressed TIFF's chunks, each a whole JPEG stream, placed by `layout`: one set for
/// gray, RGB or YCbCr pixels, or one gray set a sample (`planes` 3: planar RGB).
pub struct JpegChunks {
    pub layout: Layout,
    pub planes: usize,
    pub streams: Vec<Vec<u8>>,
}

/// The chunks of a JPEG-compressed TIFF in gray, RGB or YCbCr (planar: RGB), or None for any
/// other TIFF (which the `tiff` crate reads, as before).
pub fn jpeg(
    bytes: &[u8],
    check_size: fn(usize, usize) -> Result<()>,
) -> Result<Option<JpegChunks>> {
    let Some(mut t) = Tags::new(bytes) else {
        return Ok(None);
    };
    if t.one(Tag::Compression, 1)? != 7 {
        return Ok(None);
    }
    let photometric = t.one(Tag::PhotometricInterpretation, 0)?;
    let samples = t.one(Tag::SamplesPerPixel, 1)?;
    let planes = match (t.one(Tag::PlanarConfiguration, 1)?, photometric, samples) {
        (1, 1 | 2 | 6, _) => 1,
        (2, 1, 1) => 1,
        (2, 2, 3) => 3,
        (2, ..) if t.tiled()? => {
            return Err(unsupported(format!(
                "planar JPEG TIFF with photometric {photometric} and {samples} samples a pixel"
            )))
        }
        _ => return Ok(None),
    };
    let layout = t.layout(planes, bytes.len(), check_size)?;
    // The quantisation and Huffman tables the chunks share: SOI, tables, EOI.
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
    let streams = layout
        .ranges
        .iter()
        .map(|r| {
            let chunk = &bytes[r.clone()];
            match (shared, chunk.strip_prefix(&[0xff, 0xd8])) {
                (Some(head), Some(body)) => [head, body].concat(),
                _ => chunk.to_vec(),
            }
        })
        .collect();
    Ok(Some(JpegChunks {
        layout,
        planes,
        streams,
    }))
}

/// 8-bit samples of a tiled or planar TIFF, `channels` a pixel: L, LA, RGB or RGBA.
pub struct Samples {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    /// `[h][w][channels]`.
    pub data: Vec<u8>,
    /// RGBA with associated alpha, which PIL unpacks ("RGBa").
    pub premultiplied: bool,
}

/// The pixels of a tiled or planar TIFF of 8-bit gray, gray + alpha, RGB or RGBA samples, or of
/// gray + alpha in strips (uncompressed, PackBits, LZW or Deflate), as PIL opens it; None for
/// any other TIFF, save a planar tiled one, which is an error (the `tiff` crate panics on
/// those).
pub fn samples(
    bytes: &[u8],
    check_size: fn(usize, usize) -> Result<()>,
) -> Result<Option<Samples>> {
    let Some(mut t) = Tags::new(bytes) else {
        return Ok(None);
    };
    let tiled = t.tiled()?;
    let spp = t.one(Tag::SamplesPerPixel, 1)? as usize;
    let planar = spp > 1 && t.one(Tag::PlanarConfiguration, 1)? == 2;
    let photometric = t.one(Tag::PhotometricInterpretation, u64::MAX)?;
    // Gray + alpha, which the crate does not read, in strips too.
    let gray_alpha = photometric == 1 && spp == 2;
    if !(tiled || planar || gray_alpha) || photometric == 3 || t.one(Tag::Compression, 1)? == 7 {
        // Other strips of one plane, palette and JPEG TIFFs: read elsewhere.
        return Ok(None);
    }
    let extra = t.all(Tag::ExtraSamples)?.unwrap_or_default();
    let bits = t.bits()?;
    let fill = t.one(Tag::FillOrder, 1)?;
    // PIL's modes for these (TiffImagePlugin's OPEN_INFO): an unspecified extra sample is
    // dropped ("RGBX", "LX"), an associated alpha unpacked ("RGBa"); planar files only as RGB
    // and RGBA with unassociated alpha.
    let kept = match (photometric, spp, extra.as_slice(), planar) {
        (1, 1, [], _) => Some((1, false)),
        (1, 2, [2], false) => Some((2, false)),
        (1, 2, [0], false) => Some((1, false)),
        (2, 3, [], _) => Some((3, false)),
        (2, 4, [2], _) => Some((4, false)),
        (2, 4, [1], false) => Some((4, true)),
        (2, 4, [0], false) => Some((3, false)),
        _ => None,
    };
    let coding = (kept.is_some() && bits == Some(8) && fill == 1).then(|| {
        let step = if planar { 1 } else { spp };
        Coding::read(&mut t, 8, step, "tiled or planar TIFF")
    });
    let (channels, premultiplied, coding) = match (kept, coding) {
        (Some((c, p)), Some(Ok(coding))) => (c, p, coding),
        // What we do not read goes to the `tiff` crate, save planar tiles.
        (_, Some(Err(e))) if planar && tiled => return Err(e),
        _ if planar && tiled => {
            return Err(unsupported(format!(
                "planar tiled TIFF with photometric {photometric}, {spp} samples a pixel{}",
                match bits {
                    Some(b) => format!(" of {b} bits"),
                    None => " of different sizes".into(),
                }
            )))
        }
        _ => return Ok(None),
    };
    let planes = if planar { spp } else { 1 };
    let l = t.layout(planes, bytes.len(), check_size)?;
    let (w, h) = (l.width, l.height);
    let stored = if planar { 1 } else { spp };
    let row_bytes = l.chunk_width * stored;
    let mut data = vec![0u8; w * h * channels];
    let mut chunk = Vec::new();
    for k in 0..l.chunks() {
        // Planar files keep every sample (RGB, RGBA), so each plane is a channel.
        let p = l.place(k);
        l.inflate(bytes, k, &coding, row_bytes, &mut chunk)?;
        for (r, row) in chunk.chunks_exact(row_bytes).take(p.rows).enumerate() {
            let dst = &mut data[((p.y + r) * w + p.x) * channels..][..p.columns * channels];
            if planar {
                for (d, &s) in dst.chunks_exact_mut(channels).zip(row) {
                    d[p.plane] = s;
                }
            } else {
                for (d, s) in dst.chunks_exact_mut(channels).zip(row.chunks_exact(stored)) {
                    d.copy_from_slice(&s[..channels]);
                }
            }
        }
    }
    Ok(Some(Samples {
        width: w,
        height: h,
        channels,
        data,
        premultiplied,
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

    fn layout(chunk: (usize, usize), tiled: bool, planes: usize) -> Layout {
        let (w, h) = (37usize, 23usize);
        let (across, down) = (w.div_ceil(chunk.0), h.div_ceil(chunk.1));
        Layout {
            width: w,
            height: h,
            chunk_width: chunk.0,
            chunk_height: chunk.1,
            tiled,
            across,
            down,
            ranges: vec![0..0; planes * across * down],
        }
    }

    #[test]
    fn chunks_are_placed_row_major_plane_by_plane() {
        let at = |p: Place| (p.plane, p.x, p.y, p.columns, p.rows, p.stored_rows);
        // Strips of 10 rows: the last holds the 3 rows left, and only those are stored.
        let strips = layout((37, 10), false, 1);
        assert_eq!(strips.chunks(), 3);
        assert_eq!(at(strips.place(0)), (0, 0, 0, 37, 10, 10));
        assert_eq!(at(strips.place(2)), (0, 0, 20, 37, 3, 3));
        // 16 x 16 tiles: 3 across, 2 down; edge tiles are stored whole and cut to the image.
        let tiles = layout((16, 16), true, 1);
        assert_eq!(tiles.chunks(), 6);
        assert_eq!(at(tiles.place(1)), (0, 16, 0, 16, 16, 16));
        assert_eq!(at(tiles.place(2)), (0, 32, 0, 5, 16, 16));
        assert_eq!(at(tiles.place(5)), (0, 32, 16, 5, 7, 16));
        // Planar: each plane's tiles after the previous plane's.
        let planar = layout((16, 16), true, 3);
        assert_eq!(planar.chunks(), 18);
        assert_eq!(at(planar.place(6)), (1, 0, 0, 16, 16, 16));
        assert_eq!(at(planar.place(17)), (2, 32, 16, 5, 7, 16));
    }

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
