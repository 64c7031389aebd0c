//! TFRecord files and the `tf.train.Example` records in them, as TensorFlow Datasets writes a
//! prepared dataset: each record is its length (u64, little-endian), the masked CRC-32C of
//! those 8 bytes, the data, and the data's masked CRC-32C; both checksums are verified, as
//! TensorFlow's reader does. An `Example` is read by our own small protobuf reader (wire
//! format only: no descriptors, nothing executed); byte values are kept as ranges of the record
//! so an image can later be read straight from its place in the file.

use std::io::Read;
use std::ops::Range;

/// CRC-32C (Castagnoli), the checksum TFRecord uses: the CPU's `crc32` instruction where it
/// has SSE4.2 (a dataset's shards are checked whole while listing, ~20x the table's speed),
/// else table-driven.
pub fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2, checked just above.
        return !unsafe { crc32c_sse42(!0, data) };
    }
    !crc32c_table(!0, data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_sse42(c: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let words = data.chunks_exact(8);
    let tail = words.remainder();
    let mut c = c as u64;
    for w in words {
        c = _mm_crc32_u64(c, u64::from_le_bytes(w.try_into().unwrap()));
    }
    tail.iter().fold(c as u32, |c, &b| _mm_crc32_u8(c, b))
}

fn crc32c_table(c: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    crate::util::crc_update(
        TABLE.get_or_init(|| crate::util::crc_table(0x82f6_3b78)),
        c,
        data,
    )
}

/// TFRecord's masking of a CRC (so that a CRC of data holding CRCs stays well spread).
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// No record here is larger than this (an image of a prepared dataset is a few MB).
pub const MAX_RECORD: u64 = 1 << 30;

/// Reads the records of a TFRecord stream one by one: `(offset of the data in the stream,
/// data)`. An error says what is wrong and at which byte.
pub struct Records<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Records<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, pos: 0 }
    }
}

impl<R: Read> Iterator for Records<R> {
    type Item = Result<(u64, Vec<u8>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut head = [0u8; 12];
        let mut got = 0;
        while got < head.len() {
            match self.inner.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e.to_string())),
            }
        }
        if got == 0 {
            return None;
        }
        let at = self.pos;
        let fail = |msg: &str| Some(Err(format!("record at byte {at}: {msg}")));
        if got < head.len() {
            return fail("the file ends inside a record header (truncated)");
        }
        let len = u64::from_le_bytes(head[..8].try_into().unwrap());
        if u32::from_le_bytes(head[8..12].try_into().unwrap()) != masked_crc(&head[..8]) {
            return fail("the length's checksum does not match (not a TFRecord file, or corrupt)");
        }
        if len > MAX_RECORD {
            return fail(&format!("a record of {len} bytes (more than 1 GiB)"));
        }
        let mut data = Vec::new();
        if let Err(e) = (&mut self.inner).take(len + 4).read_to_end(&mut data) {
            return Some(Err(format!("record at byte {at}: {e}")));
        }
        if (data.len() as u64) < len + 4 {
            return fail("the file ends inside a record (truncated)");
        }
        let crc = u32::from_le_bytes(data[len as usize..].try_into().unwrap());
        data.truncate(len as usize);
        if crc != masked_crc(&data) {
            return fail("the data's checksum does not match (corrupt)");
        }
        self.pos += 12 + len + 4;
        Some(Ok((at + 12, data)))
    }
}

/// One feature of an `Example`: its values (bytes as ranges of the record).
#[derive(Debug, Clone, PartialEq)]
pub enum Feature {
    Bytes(Vec<Range<usize>>),
    Float(Vec<f32>),
    Int64(Vec<i64>),
}

/// A `tf.train.Example`: its features by name, in the order they came.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Example {
    pub features: Vec<(String, Feature)>,
}

impl Example {
    pub fn get(&self, key: &str) -> Option<&Feature> {
        // A map's later entry for a key wins, as protobuf's parsers do.
        self.features
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, f)| f)
    }

    pub fn int64(&self, key: &str) -> Result<&[i64], String> {
        match self.get(key) {
            Some(Feature::Int64(v)) => Ok(v),
            Some(_) => Err(format!("feature `{key}` is not a list of integers")),
            None => Err(format!("no feature `{key}`")),
        }
    }

    pub fn float(&self, key: &str) -> Result<&[f32], String> {
        match self.get(key) {
            Some(Feature::Float(v)) => Ok(v),
            Some(_) => Err(format!("feature `{key}` is not a list of floats")),
            None => Err(format!("no feature `{key}`")),
        }
    }

    /// The one byte string of `key` (an encoded image), as a range of the record.
    pub fn one_bytes(&self, key: &str) -> Result<Range<usize>, String> {
        match self.get(key) {
            Some(Feature::Bytes(v)) if v.len() == 1 => Ok(v[0].clone()),
            Some(Feature::Bytes(v)) => Err(format!(
                "feature `{key}` holds {} byte strings, not one",
                v.len()
            )),
            Some(_) => Err(format!("feature `{key}` is not a byte string")),
            None => Err(format!("no feature `{key}`")),
        }
    }
}

/// Protobuf wire format over a slice, keeping absolute positions.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            if self.pos >= self.end {
                return Err("a number runs past its message".into());
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err("a number longer than 64 bits".into());
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a number longer than 64 bits".into())
    }

    /// A length-delimited field's range.
    fn delimited(&mut self) -> Result<Range<usize>, String> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| "a field longer than the record")?;
        if len > self.end - self.pos {
            return Err("a field runs past its message".into());
        }
        let r = self.pos..self.pos + len;
        self.pos += len;
        Ok(r)
    }

    fn sub(&self, r: Range<usize>) -> Wire<'a> {
        Wire {
            buf: self.buf,
            pos: r.start,
            end: r.end,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.end
    }

    /// The next field's number and wire type.
    fn tag(&mut self) -> Result<(u64, u8), String> {
        let t = self.varint()?;
        Ok((t >> 3, (t & 7) as u8))
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        let n = match wire {
            0 => return self.varint().map(drop),
            1 => 8,
            2 => return self.delimited().map(drop),
            5 => 4,
            _ => {
                return Err(format!(
                    "wire type {wire} (groups and unknown types are not read)"
                ))
            }
        };
        if n > self.end - self.pos {
            return Err("a field runs past its message".into());
        }
        self.pos += n;
        Ok(())
    }

    fn fixed32(&mut self) -> Result<u32, String> {
        if 4 > self.end - self.pos {
            return Err("a float runs past its message".into());
        }
        let v = u32::from_le_bytes(self.buf[self.pos..self.pos + 4].try_into().unwrap());
        self.pos += 4;
        Ok(v)
    }
}

/// Parses a serialized `tf.train.Example`.
pub fn parse_example(buf: &[u8]) -> Result<Example, String> {
    let mut top = Wire {
        buf,
        pos: 0,
        end: buf.len(),
    };
    let mut out = Example::default();
    while !top.done() {
        match top.tag()? {
            (1, 2) => {
                // Features: repeated map entry (field 1).
                let r = top.delimited()?;
                let mut features = top.sub(r);
                while !features.done() {
                    match features.tag()? {
                        (1, 2) => {
                            let r = features.delimited()?;
                            out.features.push(map_entry(features.sub(r))?);
                        }
                        (_, w) => features.skip(w)?,
                    }
                }
            }
            (_, w) => top.skip(w)?,
        }
    }
    Ok(out)
}

fn map_entry(mut w: Wire) -> Result<(String, Feature), String> {
    let mut key = String::new();
    // A map entry without a value is the value's default: an empty feature (no kind set).
    let mut value = Feature::Bytes(Vec::new());
    while !w.done() {
        match w.tag()? {
            (1, 2) => {
                let r = w.delimited()?;
                key = std::str::from_utf8(&w.buf[r])
                    .map_err(|_| "a feature name that is not UTF-8")?
                    .to_string();
            }
            (2, 2) => {
                let r = w.delimited()?;
                value = feature(w.sub(r))?;
            }
            (_, t) => w.skip(t)?,
        }
    }
    Ok((key, value))
}

fn feature(mut w: Wire) -> Result<Feature, String> {
    let mut out = Feature::Bytes(Vec::new());
    while !w.done() {
        let (field, wire) = w.tag()?;
        if wire != 2 || !(1..=3).contains(&field) {
            w.skip(wire)?;
            continue;
        }
        let r = w.delimited()?;
        let mut list = w.sub(r);
        // The oneof's last kind wins; values of one kind repeated across fields merge.
        out = match (field, out) {
            (1, Feature::Bytes(v)) => Feature::Bytes(v),
            (2, Feature::Float(v)) => Feature::Float(v),
            (3, Feature::Int64(v)) => Feature::Int64(v),
            (1, _) => Feature::Bytes(Vec::new()),
            (2, _) => Feature::Float(Vec::new()),
            _ => Feature::Int64(Vec::new()),
        };
        while !list.done() {
            let (f, t) = list.tag()?;
            match (&mut out, f, t) {
                (Feature::Bytes(v), 1, 2) => v.push(list.delimited()?),
                (Feature::Float(v), 1, 5) => v.push(f32::from_bits(list.fixed32()?)),
                (Feature::Float(v), 1, 2) => {
                    let r = list.delimited()?;
                    if r.len() % 4 != 0 {
                        return Err(
                            "a packed float list whose length is not a multiple of 4".into()
                        );
                    }
                    v.extend(
                        list.buf[r]
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes(c.try_into().unwrap())),
                    );
                }
                (Feature::Int64(v), 1, 0) => v.push(list.varint()? as i64),
                (Feature::Int64(v), 1, 2) => {
                    let r = list.delimited()?;
                    let mut packed = list.sub(r);
                    while !packed.done() {
                        v.push(packed.varint()? as i64);
                    }
                }
                (_, _, t) => list.skip(t)?,
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writers for tests: a varint, a field, an Example, a TFRecord stream.
    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn field(num: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    pub fn example(features: &[(&str, Feature, &[&[u8]])]) -> Vec<u8> {
        let mut feats = Vec::new();
        for (key, kind, bytes) in features {
            let mut list = Vec::new();
            let num = match kind {
                Feature::Bytes(_) => {
                    for b in bytes.iter() {
                        field(1, b, &mut list);
                    }
                    1
                }
                Feature::Float(v) => {
                    let packed: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    field(1, &packed, &mut list);
                    2
                }
                Feature::Int64(v) => {
                    let mut packed = Vec::new();
                    v.iter().for_each(|&i| varint(i as u64, &mut packed));
                    field(1, &packed, &mut list);
                    3
                }
            };
            let mut feat = Vec::new();
            field(num, &list, &mut feat);
            let mut entry = Vec::new();
            field(1, key.as_bytes(), &mut entry);
            field(2, &feat, &mut entry);
            field(1, &entry, &mut feats);
        }
        let mut out = Vec::new();
        field(1, &feats, &mut out);
        out
    }

    pub fn frame(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            let len = (r.len() as u64).to_le_bytes();
            out.extend_from_slice(&len);
            out.extend_from_slice(&masked_crc(&len).to_le_bytes());
            out.extend_from_slice(r);
            out.extend_from_slice(&masked_crc(r).to_le_bytes());
        }
        out
    }

    #[test]
    fn crc32c_matches_its_check_value() {
        // The standard check value of CRC-32C for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(!crc32c_table(!0, b"123456789"), 0xe306_9283);
    }

    /// The instruction and the table agree on every length and alignment.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn crc32c_instruction_equals_the_table() {
        if !is_x86_feature_detected!("sse4.2") {
            return;
        }
        let data: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..9 {
            for end in (start..data.len()).step_by(7) {
                let d = &data[start..end];
                // SAFETY: SSE4.2 checked above.
                assert_eq!(unsafe { crc32c_sse42(!0, d) }, crc32c_table(!0, d));
            }
        }
    }

    #[test]
    fn records_and_examples_round_trip() {
        let a = example(&[
            ("image", Feature::Bytes(vec![]), &[b"\x89PNGdata"]),
            ("label", Feature::Int64(vec![7, -1]), &[]),
            (
                "objects/pixel_coords",
                Feature::Float(vec![1.5, -2.0, 9.25]),
                &[],
            ),
        ]);
        let b = example(&[("label", Feature::Int64(vec![300]), &[])]);
        let stream = frame(&[a.clone(), b.clone()]);
        let recs: Vec<_> = Records::new(&stream[..]).collect::<Result<_, _>>().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0], (12, a.clone()));
        assert_eq!(recs[1].0, 12 + a.len() as u64 + 4 + 12);
        let ex = parse_example(&recs[0].1).unwrap();
        let img = ex.one_bytes("image").unwrap();
        assert_eq!(&recs[0].1[img], b"\x89PNGdata");
        assert_eq!(ex.int64("label").unwrap(), &[7, -1]);
        assert_eq!(
            ex.float("objects/pixel_coords").unwrap(),
            &[1.5, -2.0, 9.25]
        );
        assert_eq!(
            parse_example(&recs[1].1).unwrap().int64("label").unwrap(),
            &[300]
        );
        assert!(ex.int64("image").is_err() && ex.one_bytes("nothing").is_err());
    }

    #[test]
    fn unpacked_lists_are_read_too() {
        // Int64List with unpacked varints, FloatList with unpacked fixed32.
        let mut list = Vec::new();
        for v in [3u64, 5] {
            varint(1 << 3, &mut list);
            varint(v, &mut list);
        }
        let mut feat = Vec::new();
        field(3, &list, &mut feat);
        let mut floats = Vec::new();
        varint(1 << 3 | 5, &mut floats);
        floats.extend_from_slice(&0.5f32.to_le_bytes());
        let mut ffeat = Vec::new();
        field(2, &floats, &mut ffeat);
        let mut feats = Vec::new();
        for (k, f) in [("l", &feat), ("f", &ffeat)] {
            let mut entry = Vec::new();
            field(1, k.as_bytes(), &mut entry);
            field(2, f, &mut entry);
            field(1, &entry, &mut feats);
        }
        let mut ex = Vec::new();
        field(1, &feats, &mut ex);
        let ex = parse_example(&ex).unwrap();
        assert_eq!(ex.int64("l").unwrap(), &[3, 5]);
        assert_eq!(ex.float("f").unwrap(), &[0.5]);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let a = example(&[("label", Feature::Int64(vec![1]), &[])]);
        let stream = frame(std::slice::from_ref(&a));
        // Truncated anywhere, a flipped byte anywhere: an error or (for the checksums'
        // sake) never a wrong record.
        for cut in 1..stream.len() {
            let r: Vec<_> = Records::new(&stream[..cut]).collect();
            assert!(r.iter().any(|r| r.is_err()), "cut at {cut}");
        }
        for i in 0..stream.len() {
            let mut bad = stream.clone();
            bad[i] ^= 0x10;
            let r: Vec<_> = Records::new(&bad[..]).collect();
            assert!(r.iter().any(|r| r.is_err()), "flip at {i}");
        }
        for cut in 0..a.len() {
            let _ = parse_example(&a[..cut]);
        }
        assert!(parse_example(&[0x0a, 0xff]).is_err());
    }
}
