//! Apache Arrow's IPC format, read-only: the stream Hugging Face `datasets` writes into its
//! cache (`NAME-SPLIT.arrow`) and the file format (`ARROW1`). Written from the format's
//! specification (the encapsulated messages, the FlatBuffers `Schema` and `RecordBatch`
//! tables, the columnar buffers); it reads the schema and where each column's buffers lie in
//! the file, so a `datasets` Image column's encoded images are byte ranges of the file, read
//! in place. Only the message headers and the buffers a caller asks for are read (a cache shard
//! of hundreds of MB is mostly image bytes, never loaded here). Dictionary-encoded and
//! compressed bodies are refused. Bounded and fuzzed: every offset is checked against the file.

use std::borrow::Cow;

/// Where an Arrow file's bytes come from: memory, or a file read at offsets as needed.
pub trait Source {
    fn size(&self) -> u64;
    /// The `len` bytes at `off`; the caller has checked that they lie within [`Source::size`].
    fn read_at(&self, off: u64, len: u64) -> R<Cow<'_, [u8]>>;
}

impl Source for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&self, off: u64, len: u64) -> R<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(&self[off as usize..(off + len) as usize]))
    }
}

/// A file and its size, taken once when it is opened.
pub struct FileSource {
    file: std::fs::File,
    size: u64,
}

impl FileSource {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        Ok(FileSource { file, size })
    }
}

impl Source for FileSource {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, off: u64, len: u64) -> R<Cow<'_, [u8]>> {
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| "a buffer too large")?];
        std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut buf, off)
            .map_err(|e| format!("reading {len} bytes at {off}: {e}"))?;
        Ok(Cow::Owned(buf))
    }
}

/// A message header (schema or batch metadata) larger than this is damage, not a header.
const MAX_HEADER: u64 = 64 << 20;

/// A column's type, as far as the buffers it owns go.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Int {
        bits: u16,
        signed: bool,
    },
    Float,
    Bool,
    /// Binary or UTF-8, with 32- or 64-bit offsets.
    Bytes {
        utf8: bool,
        large: bool,
    },
    Struct,
    List {
        large: bool,
    },
    FixedSizeList,
    /// Fixed-width values of any other type (dates, times, decimals, fixed-size binary).
    Fixed,
}

impl Kind {
    /// How many buffers a column of this kind has in a record batch.
    fn buffers(&self) -> usize {
        match self {
            Kind::Null => 0,
            Kind::Struct | Kind::FixedSizeList => 1,
            Kind::Int { .. } | Kind::Float | Kind::Bool | Kind::Fixed | Kind::List { .. } => 2,
            Kind::Bytes { .. } => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub kind: Kind,
    /// Dictionary-encoded: its values are indices into a dictionary batch (not read here).
    pub dictionary: bool,
    pub children: Vec<Field>,
}

/// One record batch: per field (depth first) its row count and null count, per buffer its
/// absolute byte range in the file.
#[derive(Debug, Clone)]
struct Batch {
    rows: u64,
    nodes: Vec<(u64, u64)>,
    buffers: Vec<(u64, u64)>,
}

/// The schema and batches of an Arrow file; values are read from `src` on demand.
pub struct Table<'a, S: Source + ?Sized> {
    src: &'a S,
    pub fields: Vec<Field>,
    batches: Vec<Batch>,
}

type R<T> = Result<T, String>;

/// FlatBuffers tables, read with every offset checked.
#[derive(Clone, Copy)]
struct Fb<'a> {
    buf: &'a [u8],
    /// The table's position.
    pos: usize,
    vtable: usize,
    vlen: usize,
}

fn get<const N: usize>(buf: &[u8], at: usize) -> R<[u8; N]> {
    at.checked_add(N)
        .and_then(|end| buf.get(at..end))
        .map(|b| b.try_into().unwrap())
        .ok_or_else(|| {
            format!(
                "a FlatBuffers offset {at} past the end ({} bytes)",
                buf.len()
            )
        })
}
fn u16_at(buf: &[u8], at: usize) -> R<u16> {
    get::<2>(buf, at).map(u16::from_le_bytes)
}
fn u32_at(buf: &[u8], at: usize) -> R<u32> {
    get::<4>(buf, at).map(u32::from_le_bytes)
}
fn i64_at(buf: &[u8], at: usize) -> R<i64> {
    get::<8>(buf, at).map(i64::from_le_bytes)
}

impl<'a> Fb<'a> {
    fn root(buf: &'a [u8]) -> R<Self> {
        Self::at(buf, u32_at(buf, 0)? as usize)
    }
    fn at(buf: &'a [u8], pos: usize) -> R<Self> {
        let soff = i32::from_le_bytes(get::<4>(buf, pos)?) as i64;
        let vtable = usize::try_from(pos as i64 - soff).map_err(|_| "a bad vtable offset")?;
        let vlen = u16_at(buf, vtable)? as usize;
        if vlen < 4 || vtable + vlen > buf.len() {
            return Err("a bad vtable".into());
        }
        Ok(Fb {
            buf,
            pos,
            vtable,
            vlen,
        })
    }
    /// Where field `i` is stored, when present.
    fn field(&self, i: usize) -> R<Option<usize>> {
        let at = 4 + 2 * i;
        if at + 2 > self.vlen {
            return Ok(None);
        }
        match u16_at(self.buf, self.vtable + at)? {
            0 => Ok(None),
            off => Ok(Some(self.pos + off as usize)),
        }
    }
    fn u8(&self, i: usize, default: u8) -> R<u8> {
        match self.field(i)? {
            Some(p) => Ok(get::<1>(self.buf, p)?[0]),
            None => Ok(default),
        }
    }
    fn i16(&self, i: usize, default: i16) -> R<i16> {
        match self.field(i)? {
            Some(p) => Ok(u16_at(self.buf, p)? as i16),
            None => Ok(default),
        }
    }
    fn i32(&self, i: usize, default: i32) -> R<i32> {
        match self.field(i)? {
            Some(p) => Ok(u32_at(self.buf, p)? as i32),
            None => Ok(default),
        }
    }
    fn i64(&self, i: usize, default: i64) -> R<i64> {
        match self.field(i)? {
            Some(p) => i64_at(self.buf, p),
            None => Ok(default),
        }
    }
    /// What an offset field points to.
    fn target(&self, i: usize) -> R<Option<usize>> {
        match self.field(i)? {
            Some(p) => {
                let t = p
                    .checked_add(u32_at(self.buf, p)? as usize)
                    .ok_or("a bad offset")?;
                Ok(Some(t))
            }
            None => Ok(None),
        }
    }
    fn table(&self, i: usize) -> R<Option<Fb<'a>>> {
        self.target(i)?.map(|t| Fb::at(self.buf, t)).transpose()
    }
    /// A vector's first element and length.
    fn vector(&self, i: usize) -> R<Option<(usize, usize)>> {
        match self.target(i)? {
            Some(t) => Ok(Some((t + 4, u32_at(self.buf, t)? as usize))),
            None => Ok(None),
        }
    }
    fn string(&self, i: usize) -> R<String> {
        match self.vector(i)? {
            Some((start, n)) => {
                let b = start
                    .checked_add(n)
                    .and_then(|end| self.buf.get(start..end))
                    .ok_or("a string past the end")?;
                Ok(String::from_utf8_lossy(b).into_owned())
            }
            None => Ok(String::new()),
        }
    }
    /// Element `k` of a vector of tables.
    fn element(&self, start: usize, k: usize) -> R<Fb<'a>> {
        let at = start + 4 * k;
        Fb::at(self.buf, at + u32_at(self.buf, at)? as usize)
    }
}

/// At most this many fields in all, and this deep: a schema, not a bomb.
const MAX_FIELDS: usize = 1 << 12;
const MAX_DEPTH: usize = 32;

fn field(fb: Fb, depth: usize, count: &mut usize) -> R<Field> {
    *count += 1;
    if depth > MAX_DEPTH || *count > MAX_FIELDS {
        return Err("a schema nested too deep or with too many fields".into());
    }
    let name = fb.string(0)?;
    let type_type = fb.u8(2, 0)?;
    let ty = fb.table(3)?;
    let kind = match type_type {
        1 => Kind::Null,
        2 => {
            let t = ty.ok_or("an Int without its type")?;
            let bits = t.i32(0, 0)?;
            if ![8, 16, 32, 64].contains(&bits) {
                return Err(format!("an Int of {bits} bits"));
            }
            Kind::Int {
                bits: bits as u16,
                signed: t.u8(1, 0)? != 0,
            }
        }
        3 => Kind::Float,
        4 => Kind::Bytes {
            utf8: false,
            large: false,
        },
        5 => Kind::Bytes {
            utf8: true,
            large: false,
        },
        6 => Kind::Bool,
        7..=11 | 15 | 18 => Kind::Fixed,
        12 | 17 => Kind::List { large: false },
        13 => Kind::Struct,
        16 => Kind::FixedSizeList,
        19 => Kind::Bytes {
            utf8: false,
            large: true,
        },
        20 => Kind::Bytes {
            utf8: true,
            large: true,
        },
        21 => Kind::List { large: true },
        other => {
            return Err(format!(
                "column {name:?} has Arrow type {other}, not read here"
            ))
        }
    };
    let mut children = Vec::new();
    if let Some((start, n)) = fb.vector(5)? {
        if n > MAX_FIELDS {
            return Err("too many fields".into());
        }
        for k in 0..n {
            children.push(field(fb.element(start, k)?, depth + 1, count)?);
        }
    }
    Ok(Field {
        name,
        kind,
        dictionary: fb.field(4)?.is_some(),
        children,
    })
}

fn count_fields(fields: &[Field]) -> (usize, usize) {
    fields.iter().fold((0, 0), |(n, b), f| {
        let (cn, cb) = count_fields(&f.children);
        (n + 1 + cn, b + f.kind.buffers() + cb)
    })
}

/// Reads the schema and record batches of an Arrow IPC stream or file: the message headers
/// only (each body is skipped; its buffers are read when a column is asked for).
pub fn read<S: Source + ?Sized>(src: &S) -> R<Table<'_, S>> {
    let size = src.size();
    let word = |pos: u64| -> R<Option<u32>> {
        if pos + 4 > size {
            return Ok(None);
        }
        Ok(Some(u32_at(&src.read_at(pos, 4)?, 0)?))
    };
    let mut pos = 0u64;
    if size >= 6 && &*src.read_at(0, 6)? == b"ARROW1" {
        pos = 8; // the magic, padded to 8
    }
    let mut fields: Option<Vec<Field>> = None;
    let mut batches = Vec::new();
    // A stream may end without its end marker.
    while let Some(mut len) = word(pos)? {
        pos += 4;
        if len == u32::MAX {
            len = word(pos)?.ok_or("a message cut short (truncated?)")?;
            pos += 4;
        }
        if len == 0 {
            break;
        }
        let meta_end = pos
            .checked_add(len as u64)
            .filter(|&e| e <= size)
            .ok_or("a message past the end of the file (truncated?)")?;
        if len as u64 > MAX_HEADER {
            return Err(format!("a message header of {len} bytes"));
        }
        let meta = src.read_at(pos, len as u64)?;
        let msg = Fb::root(&meta)?;
        let header_type = msg.u8(1, 0)?;
        let header = msg.table(2)?;
        let body_len = u64::try_from(msg.i64(3, 0)?).map_err(|_| "a negative body length")?;
        let body = meta_end;
        let body_end = body
            .checked_add(body_len)
            .filter(|&e| e <= size)
            .ok_or("a message body past the end of the file (truncated?)")?;
        pos = body_end;
        match header_type {
            1 => {
                // The batches read so far were checked against the first.
                if fields.is_some() {
                    return Err("a second schema".into());
                }
                let schema = header.ok_or("a Schema message without its schema")?;
                if schema.i16(0, 0)? != 0 {
                    return Err("a big-endian Arrow file".into());
                }
                let mut list = Vec::new();
                let mut count = 0;
                if let Some((start, n)) = schema.vector(1)? {
                    for k in 0..n.min(MAX_FIELDS + 1) {
                        list.push(field(schema.element(start, k)?, 0, &mut count)?);
                    }
                }
                fields = Some(list);
            }
            2 => return Err("dictionary-encoded columns are not read here".into()),
            3 => {
                let f = fields.as_ref().ok_or("a record batch before the schema")?;
                let b = header.ok_or("a RecordBatch message without its batch")?;
                if b.field(3)?.is_some() {
                    return Err(
                        "a compressed record batch (LZ4/ZSTD bodies are not read here)".into(),
                    );
                }
                let rows = u64::try_from(b.i64(0, 0)?).map_err(|_| "a negative row count")?;
                let structs = |i: usize| -> R<Vec<(u64, u64)>> {
                    let Some((start, n)) = b.vector(i)? else {
                        return Ok(vec![]);
                    };
                    if n > 4 * MAX_FIELDS {
                        return Err("too many buffers".into());
                    }
                    (0..n)
                        .map(|k| {
                            let at = start + 16 * k;
                            let (x, y) = (i64_at(b.buf, at)?, i64_at(b.buf, at + 8)?);
                            Ok((
                                u64::try_from(x).map_err(|_| "a negative offset")?,
                                u64::try_from(y).map_err(|_| "a negative length")?,
                            ))
                        })
                        .collect()
                };
                let nodes = structs(1)?;
                let mut buffers = structs(2)?;
                let (n_fields, n_buffers) = count_fields(f);
                if nodes.len() != n_fields || buffers.len() != n_buffers {
                    return Err(format!(
                        "a record batch with {} nodes and {} buffers for a schema of {n_fields} and {n_buffers}",
                        nodes.len(),
                        buffers.len()
                    ));
                }
                for (off, len) in buffers.iter_mut() {
                    let end = off.checked_add(*len).filter(|&e| e <= body_len);
                    if end.is_none() {
                        return Err("a buffer past its record batch's body".into());
                    }
                    *off += body;
                }
                batches.push(Batch {
                    rows,
                    nodes,
                    buffers,
                });
            }
            _ => {} // tensors and the like: skipped
        }
    }
    Ok(Table {
        src,
        fields: fields.ok_or("no schema (not an Arrow file?)")?,
        batches,
    })
}

/// A column found by its path of names (`["image_0", "bytes"]`): its field, its depth-first
/// index, its first buffer's index, and the indices of the structs above it.
struct Found<'f> {
    field: &'f Field,
    node: usize,
    buffer: usize,
    parents: Vec<(usize, usize)>,
}

fn find<'f>(fields: &'f [Field], path: &[&str]) -> Option<Found<'f>> {
    fn walk<'f>(
        fields: &'f [Field],
        path: &[&str],
        node: &mut usize,
        buffer: &mut usize,
        parents: &mut Vec<(usize, usize)>,
    ) -> Option<&'f Field> {
        for f in fields {
            let (here, here_buf) = (*node, *buffer);
            *node += 1;
            *buffer += f.kind.buffers();
            if f.name == path[0] {
                if path.len() == 1 {
                    *node = here;
                    *buffer = here_buf;
                    return Some(f);
                }
                if f.kind != Kind::Struct {
                    return None;
                }
                parents.push((here, here_buf));
                return walk(&f.children, &path[1..], node, buffer, parents);
            }
            let (cn, cb) = count_fields(&f.children);
            *node += cn;
            *buffer += cb;
        }
        None
    }
    let (mut node, mut buffer, mut parents) = (0, 0, Vec::new());
    let field = walk(fields, path, &mut node, &mut buffer, &mut parents)?;
    Some(Found {
        field,
        node,
        buffer,
        parents,
    })
}

/// A validity bitmap (None: the column has no nulls in this batch, every row is valid).
struct Validity<'a>(Option<Cow<'a, [u8]>>);

impl Validity<'_> {
    fn valid(&self, i: u64) -> bool {
        self.0.as_ref().is_none_or(|bits| {
            bits.get((i / 8) as usize)
                .is_some_and(|byte| byte >> (i % 8) & 1 == 1)
        })
    }
}

impl<'a, S: Source + ?Sized> Table<'a, S> {
    pub fn rows(&self) -> u64 {
        self.batches.iter().map(|b| b.rows).sum()
    }

    /// A buffer's bytes (its range was checked against its batch's body, inside the file).
    fn slice(&self, (off, len): (u64, u64)) -> R<Cow<'a, [u8]>> {
        self.src.read_at(off, len)
    }

    /// The validity bitmap of a column (its node and first buffer) in batch `b`.
    fn validity(&self, b: &Batch, node: usize, buffer: usize) -> R<Validity<'a>> {
        let (_, nulls) = b.nodes[node];
        Ok(Validity(if nulls == 0 {
            None
        } else {
            Some(self.slice(b.buffers[buffer])?)
        }))
    }

    fn column(&self, path: &[&str]) -> R<Found<'_>> {
        let found =
            find(&self.fields, path).ok_or_else(|| format!("no column {}", path.join(".")))?;
        if found.field.dictionary {
            return Err(format!("column {} is dictionary-encoded", path.join(".")));
        }
        Ok(found)
    }

    /// A binary or UTF-8 column's values as absolute byte ranges of the file (None: null).
    pub fn byte_ranges(&self, path: &[&str]) -> R<Vec<Option<(u64, u64)>>> {
        let c = self.column(path)?;
        let Kind::Bytes { large, .. } = c.field.kind else {
            return Err(format!("column {} is not binary or text", path.join(".")));
        };
        let mut out = Vec::new();
        for b in &self.batches {
            let (len, _) = b.nodes[c.node];
            if len != b.rows && c.parents.is_empty() {
                return Err(format!(
                    "column {} has {len} rows in a batch of {}",
                    path.join("."),
                    b.rows
                ));
            }
            let offsets = self.slice(b.buffers[c.buffer + 1])?;
            let (data_off, data_len) = b.buffers[c.buffer + 2];
            let width = if large { 8 } else { 4 };
            if (offsets.len() as u64) < (len + 1).saturating_mul(width) {
                return Err(format!(
                    "column {}: its offsets are cut short",
                    path.join(".")
                ));
            }
            let at = |i: u64| -> u64 {
                let p = (i * width) as usize;
                if large {
                    u64::from_le_bytes(offsets[p..p + 8].try_into().unwrap())
                } else {
                    u32::from_le_bytes(offsets[p..p + 4].try_into().unwrap()) as i32 as i64 as u64
                }
            };
            // The column's own bitmap and those of the structs above it.
            let mut bitmaps = vec![self.validity(b, c.node, c.buffer)?];
            for &(n, v) in &c.parents {
                bitmaps.push(self.validity(b, n, v)?);
            }
            for i in 0..len {
                if !bitmaps.iter().all(|m| m.valid(i)) {
                    out.push(None);
                    continue;
                }
                let (s, e) = (at(i), at(i + 1));
                if s > e || e > data_len {
                    return Err(format!(
                        "column {}: row offsets out of range",
                        path.join(".")
                    ));
                }
                out.push(Some((data_off + s, e - s)));
            }
        }
        Ok(out)
    }

    /// A UTF-8 column's values (None: null).
    pub fn strings(&self, path: &[&str]) -> R<Vec<Option<String>>> {
        self.byte_ranges(path)?
            .into_iter()
            .map(|r| {
                r.map(|r| Ok(String::from_utf8_lossy(&self.slice(r)?).into_owned()))
                    .transpose()
            })
            .collect()
    }

    /// An integer column's values (None: null).
    pub fn ints(&self, path: &[&str]) -> R<Vec<Option<i64>>> {
        let c = self.column(path)?;
        let Kind::Int { bits, signed } = c.field.kind else {
            return Err(format!("column {} is not an integer", path.join(".")));
        };
        let w = (bits / 8) as usize;
        let mut out = Vec::new();
        for b in &self.batches {
            let (len, _) = b.nodes[c.node];
            let data = self.slice(b.buffers[c.buffer + 1])?;
            if len
                .checked_mul(w as u64)
                .is_none_or(|n| n > data.len() as u64)
            {
                return Err(format!(
                    "column {}: its values are cut short",
                    path.join(".")
                ));
            }
            let validity = self.validity(b, c.node, c.buffer)?;
            for i in 0..len {
                if !validity.valid(i) {
                    out.push(None);
                    continue;
                }
                let v = &data[i as usize * w..(i as usize + 1) * w];
                let mut le = [0u8; 8];
                le[..w].copy_from_slice(v);
                let x = u64::from_le_bytes(le);
                // Sign-extend from `bits`.
                let x = if signed && bits < 64 {
                    ((x << (64 - bits)) as i64) >> (64 - bits)
                } else {
                    x as i64
                };
                out.push(Some(x));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (Vec<u8>, std::path::PathBuf) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/selection");
        let p = dir.join("winoground-hf/facebook___winoground/default/0.0.0/4e5a9a0b7c1d2e3f/winoground-test.arrow");
        (std::fs::read(&p).unwrap(), dir.join("winoground"))
    }

    #[test]
    fn a_datasets_cache_file_reads_as_written() {
        // Written by `datasets`' ArrowWriter, three rows a batch (scripts/winoground_hf_reference.py).
        let (bytes, wino) = fixture();
        let t = read(&bytes[..]).unwrap();
        let names: Vec<&str> = t.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "image_0",
                "image_1",
                "caption_0",
                "caption_1",
                "tag",
                "secondary_tag",
                "num_main_preds",
                "collapsed_tag"
            ]
        );
        assert_eq!(
            t.fields[0].kind,
            Kind::Int {
                bits: 32,
                signed: true
            }
        );
        assert_eq!(t.fields[1].kind, Kind::Struct);
        assert_eq!(t.batches.len(), 3);
        assert_eq!(t.rows(), 8);
        let ids: Vec<i64> = t
            .ints(&["id"])
            .unwrap()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(ids, (0..8).collect::<Vec<_>>());
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(wino.join("examples.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let caps = t.strings(&["caption_1"]).unwrap();
        for (c, l) in caps.iter().zip(&lines) {
            assert_eq!(c.as_deref(), l["caption_1"].as_str());
        }
        // Each image's bytes are the file's bytes, in place.
        let ranges = t.byte_ranges(&["image_0", "bytes"]).unwrap();
        let (off, len) = ranges[0].unwrap();
        let png = std::fs::read(wino.join("images/ex_0_img_0.png")).unwrap();
        assert_eq!(&bytes[off as usize..(off + len) as usize], &png[..]);
        let paths = t.strings(&["image_1", "path"]).unwrap();
        assert_eq!(paths[0].as_deref(), Some("ex_0_img_1.png"));
        assert!(t.byte_ranges(&["image_0", "nope"]).is_err());
        assert!(t.ints(&["caption_0"]).is_err());
    }

    #[test]
    fn a_file_read_at_offsets_gives_what_memory_gives() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for f in [
            "selection/winoground-hf/facebook___winoground/default/0.0.0/4e5a9a0b7c1d2e3f/winoground-test.arrow",
            "arrow/small.arrow",
            "arrow/file_format.arrow",
        ] {
            let bytes = std::fs::read(dir.join(f)).unwrap();
            let src = FileSource::open(&dir.join(f)).unwrap();
            let (mem, file) = (read(&bytes[..]).unwrap(), read(&src).unwrap());
            assert_eq!(mem.fields, file.fields, "{f}");
            assert_eq!(mem.rows(), file.rows(), "{f}");
            for path in [&["image_0", "bytes"][..], &["caption_0"], &["id"], &["n"]] {
                assert_eq!(mem.byte_ranges(path), file.byte_ranges(path), "{f}");
                assert_eq!(mem.strings(path), file.strings(path), "{f}");
                assert_eq!(mem.ints(path), file.ints(path), "{f}");
            }
        }
    }

    #[test]
    fn nulls_negative_numbers_and_the_file_format() {
        // tests/fixtures/arrow: `datasets`' ArrowWriter (two rows a batch, a null caption) and
        // pyarrow's file format (ARROW1, int16 with a null).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arrow");
        let small = std::fs::read(dir.join("small.arrow")).unwrap();
        let t = read(&small[..]).unwrap();
        assert_eq!((t.rows(), t.batches.len()), (5, 3));
        assert_eq!(
            t.ints(&["n"]).unwrap(),
            (0..5).map(|i| Some(-i)).collect::<Vec<_>>()
        );
        let caps = t.strings(&["caption_0"]).unwrap();
        assert_eq!(caps[3], None);
        assert_eq!(caps[4].as_deref(), Some("cap 4"));
        for (i, r) in t
            .byte_ranges(&["image_0", "bytes"])
            .unwrap()
            .iter()
            .enumerate()
        {
            let (off, len) = r.unwrap();
            let want: Vec<u8> = (i as u8 * 3..i as u8 * 3 + 7).collect();
            assert_eq!(&small[off as usize..(off + len) as usize], &want[..]);
        }
        let file = std::fs::read(dir.join("file_format.arrow")).unwrap();
        let t = read(&file[..]).unwrap();
        assert_eq!(
            t.fields[0].kind,
            Kind::Int {
                bits: 16,
                signed: true
            }
        );
        assert_eq!(t.ints(&["id"]).unwrap(), [Some(1), None, Some(3)]);
        assert_eq!(
            t.strings(&["caption_0"]).unwrap(),
            [Some("a".to_string()), Some("bb".into()), None]
        );
    }

    #[test]
    fn cut_or_damaged_files_are_errors_not_panics() {
        let (bytes, _) = fixture();
        for n in (0..bytes.len()).step_by(97) {
            if let Ok(t) = read(&bytes[..n]) {
                let _ = t.byte_ranges(&["image_0", "bytes"]);
                let _ = t.ints(&["id"]);
            }
        }
        let mut b = bytes.clone();
        for i in (0..2048.min(b.len())).step_by(7) {
            b[i] ^= 0x5a;
            if let Ok(t) = read(&b[..]) {
                let _ = t.strings(&["caption_0"]);
            }
            b[i] ^= 0x5a;
        }
        // Found by the fuzzer: a row count whose values' size overflows; a second schema
        // after a batch.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arrow");
        for f in ["fuzz-int-length.arrow", "fuzz-second-schema.arrow"] {
            let t = std::fs::read(dir.join(f)).unwrap();
            if let Ok(t) = read(&t[..]) {
                for path in [&["image_0", "bytes"][..], &["caption_0"], &["id"]] {
                    let _ = t.ints(path);
                    let _ = t.byte_ranges(path);
                }
            }
        }
        assert!(read(&b""[..]).is_err());
        assert!(read(&b"ARROW1\0\0"[..]).is_err());
    }
}
