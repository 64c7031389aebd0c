//! A read-only HDF5 reader for the array datasets h5py gives torchvision's `PCAM`
//! (PatchCamelyon's `camelyonpatch_level_2_split_*_{x,y}.h5`), written from the HDF5 file
//! format specification:
//! - superblocks 0-3, object headers 1 and 2 with their continuation blocks;
//! - groups as symbol tables (B-tree v1 and local heap) or compact link messages;
//! - datasets of integers or floats stored compact, contiguous or in chunks indexed by a
//!   version-1 B-tree (layout 3) or by HDF5 1.10's single-chunk, implicit and fixed-array
//!   indexes (layout 4);
//! - the deflate, shuffle and Fletcher-32 filters.
//!
//! Anything else (shared or committed datatypes, dense link storage, the indexes of datasets
//! with unlimited dimensions, other filters) is an error naming what it is. Every address is
//! checked against the file's length and every size against a cap before anything is read
//! or allocated; nothing in the file is executed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

type R<T> = Result<T, String>;

const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
/// The most one metadata read (a header, a heap, an index node) may take.
const MAX_META: u64 = 64 << 20;
/// The most a decoded chunk or one row may take.
const MAX_CHUNK: u64 = 512 << 20;
/// Decoded chunks kept for the rows that share them (images cut across chunks).
const CACHE_BYTES: usize = 256 << 20;
/// The most entries one group, or chunks one dataset, may list.
const MAX_ENTRIES: usize = 1 << 20;

/// An element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Int {
        size: usize,
        signed: bool,
        big: bool,
    },
    Float {
        size: usize,
        big: bool,
    },
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::Int { size, .. } | Dtype::Float { size, .. } => size,
        }
    }

    /// numpy's name for it (`uint8`, `>f4`): what messages call it.
    pub fn name(self) -> String {
        let (kind, size, big) = match self {
            Dtype::Int { size, signed, big } => (if signed { "int" } else { "uint" }, size, big),
            Dtype::Float { size, big } => ("float", size, big),
        };
        let order = if big && size > 1 { ">" } else { "" };
        format!("{order}{kind}{}", size * 8)
    }

    /// One element as an integer, as Python's `int()` of it (floats truncate).
    fn integer(self, b: &[u8]) -> R<i64> {
        let raw = |n: usize, big: bool| -> u64 {
            let mut v = 0u64;
            for k in 0..n {
                let byte = if big { b[k] } else { b[n - 1 - k] };
                v = (v << 8) | byte as u64;
            }
            v
        };
        match self {
            Dtype::Int { size, signed, big } => {
                let v = raw(size, big);
                if signed && size < 8 && v >> (size * 8 - 1) & 1 == 1 {
                    Ok((v | (!0u64 << (size * 8))) as i64)
                } else if !signed && v > i64::MAX as u64 {
                    Err(format!("value {v} is too large"))
                } else {
                    Ok(v as i64)
                }
            }
            Dtype::Float { size, big } => {
                let v = match size {
                    4 => f32::from_bits(raw(4, big) as u32) as f64,
                    8 => f64::from_bits(raw(8, big)),
                    _ => half::f16::from_bits(raw(2, big) as u16).to_f64(),
                };
                if v.is_finite() && v.abs() < 9.2e18 {
                    Ok(v.trunc() as i64)
                } else {
                    Err(format!("value {v} is not an integer label"))
                }
            }
        }
    }
}

/// A filter of the pipeline, as the dataset's filter message lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    id: u16,
    values: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    addr: u64,
    size: u64,
    /// Filters skipped for this chunk (bit i: the pipeline's i-th).
    mask: u32,
}

#[derive(Debug)]
enum Storage {
    Compact(Vec<u8>),
    /// None: never written (h5py reads the fill value, zeros).
    Contiguous(Option<u64>),
    Chunked {
        dims: Vec<u64>,
        /// By grid position (chunk offset / chunk size); a chunk not here is unwritten.
        chunks: HashMap<Vec<u64>, Chunk>,
    },
}

/// One dataset of an HDF5 file: its shape, type and where its elements lie.
pub struct Dataset {
    path: PathBuf,
    name: String,
    pub shape: Vec<u64>,
    pub dtype: Dtype,
    storage: Storage,
    filters: Vec<Filter>,
    cache: Mutex<Cache>,
}

// Not derived: a chunk index may hold 262,144 entries.
impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} {:?} {}",
            self.path.display(),
            self.name,
            self.shape,
            self.dtype.name()
        )
    }
}

impl PartialEq for Dataset {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.name == other.name
    }
}
impl Eq for Dataset {}

#[derive(Debug, Default)]
struct Cache {
    chunks: HashMap<Vec<u64>, Arc<Vec<u8>>>,
    order: VecDeque<Vec<u64>>,
    bytes: usize,
}

/// The file's bytes, read at addresses checked against its length.
struct Io {
    file: File,
    len: u64,
}

impl Io {
    fn open(path: &Path) -> R<Io> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        Ok(Io { file, len })
    }

    fn read(&self, addr: u64, n: u64, what: &str) -> R<Vec<u8>> {
        if addr.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(format!(
                "{what} at {addr:#x} ({n} bytes) runs past the end of the file ({} bytes; truncated?)",
                self.len
            ));
        }
        let mut buf = vec![0u8; n as usize];
        let mut f = &self.file;
        f.seek(SeekFrom::Start(addr))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| format!("{what} at {addr:#x}: {e}"))?;
        Ok(buf)
    }

    /// At most `n` bytes from `addr`, fewer at the end of the file.
    fn read_upto(&self, addr: u64, n: u64, what: &str) -> R<Vec<u8>> {
        let n = n.min(self.len.saturating_sub(addr));
        self.read(addr, n, what)
    }
}

/// A reading position in a block of metadata.
struct Cur<'a> {
    b: &'a [u8],
    p: usize,
    what: &'a str,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8], what: &'a str) -> Self {
        Cur { b, p: 0, what }
    }
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.p.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("truncated {}", self.what))?;
        let s = &self.b[self.p..end];
        self.p = end;
        Ok(s)
    }
    fn skip(&mut self, n: usize) -> R<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        Ok(self.uint(2)? as u16)
    }
    fn u32(&mut self) -> R<u32> {
        Ok(self.uint(4)? as u32)
    }
    /// An `n`-byte little-endian unsigned integer.
    fn uint(&mut self, n: usize) -> R<u64> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0u64, |v, &b| (v << 8) | b as u64))
    }
    fn left(&self) -> usize {
        self.b.len() - self.p
    }
}

/// The file's addressing: sizes of offsets and lengths, and the base every address is from.
struct Ctx {
    io: Io,
    so: usize,
    sl: usize,
    base: u64,
}

/// What one walk over linked metadata (an object header's blocks, a B-tree's nodes) has read.
/// In a well-formed file these are distinct regions of it, so a walk that comes back to an
/// address or reads more bytes than the file holds follows a corrupt link: it stops there.
struct Budget {
    seen: HashSet<u64>,
    bytes: u64,
    limit: u64,
}

impl Budget {
    fn new(ctx: &Ctx) -> Self {
        Budget {
            seen: HashSet::new(),
            bytes: 0,
            limit: ctx.io.len,
        }
    }

    fn visit(&mut self, addr: u64, bytes: u64, what: &str) -> R<()> {
        self.bytes = self.bytes.saturating_add(bytes);
        if !self.seen.insert(addr) || self.bytes > self.limit {
            return Err(format!(
                "{what} at {addr:#x} loops back or overlaps (corrupt file?)"
            ));
        }
        Ok(())
    }
}

/// A B-tree node's entries: the key before each child, and the child's address.
type NodeEntries = Vec<(Vec<u8>, u64)>;

/// An object header message.
struct Msg {
    kind: u16,
    flags: u8,
    data: Vec<u8>,
}

const MSG_DATASPACE: u16 = 0x01;
const MSG_LINK_INFO: u16 = 0x02;
const MSG_DATATYPE: u16 = 0x03;
const MSG_LINK: u16 = 0x06;
const MSG_LAYOUT: u16 = 0x08;
const MSG_FILTERS: u16 = 0x0b;
const MSG_CONTINUATION: u16 = 0x10;
const MSG_SYMBOL_TABLE: u16 = 0x11;

impl Ctx {
    /// The superblock (at 0, or after a user block at 512, 1024, ...): the addressing and
    /// the root group's object header.
    fn open(path: &Path) -> R<(Ctx, u64)> {
        let io = Io::open(path)?;
        let mut at = 0u64;
        let sb = loop {
            let head = io.read_upto(at, 96, "superblock")?;
            if head.starts_with(SIGNATURE) {
                break head;
            }
            at = if at == 0 { 512 } else { at * 2 };
            if at >= io.len {
                return Err("not an HDF5 file (no superblock signature)".into());
            }
        };
        let mut c = Cur::new(&sb, "superblock");
        c.skip(8)?;
        let version = c.u8()?;
        let (so, sl) = match version {
            0 | 1 => {
                c.skip(4)?;
                let sizes = (c.u8()? as usize, c.u8()? as usize);
                c.skip(1 + 4 + 4)?;
                if version == 1 {
                    c.skip(4)?;
                }
                sizes
            }
            2 | 3 => {
                let sizes = (c.u8()? as usize, c.u8()? as usize);
                c.skip(1)?;
                sizes
            }
            v => return Err(format!("superblock version {v} is not supported")),
        };
        if ![2, 4, 8].contains(&so) || ![2, 4, 8].contains(&sl) {
            return Err(format!(
                "superblock gives {so}-byte offsets and {sl}-byte lengths"
            ));
        }
        let base = c.uint(so)?;
        let ctx = Ctx { io, so, sl, base };
        let root = if version < 2 {
            c.skip(3 * so)?; // free space, end of file, driver information
            c.skip(so)?; // the root entry's link name
            ctx.addr(&mut c)?
        } else {
            c.skip(2 * so)?; // superblock extension, end of file
            ctx.addr(&mut c)?
        };
        let root = root.ok_or("the superblock has no root group")?;
        Ok((ctx, root))
    }

    /// An address field: None when undefined (all bits set).
    fn addr(&self, c: &mut Cur) -> R<Option<u64>> {
        let v = c.uint(self.so)?;
        if v == u64::MAX >> (64 - 8 * self.so) {
            return Ok(None);
        }
        self.base
            .checked_add(v)
            .map(Some)
            .ok_or_else(|| format!("address {v:#x} overflows"))
    }

    fn length(&self, c: &mut Cur) -> R<u64> {
        c.uint(self.sl)
    }

    /// The messages of the object header at `addr`, continuation blocks followed.
    fn header(&self, addr: u64) -> R<Vec<Msg>> {
        let head = self.io.read_upto(addr, 64, "object header")?;
        let mut blocks: VecDeque<(u64, u64, bool)> = VecDeque::new();
        let v2 = head.starts_with(b"OHDR");
        let mut c = Cur::new(&head, "object header");
        let mut track_order = false;
        if v2 {
            c.skip(4)?;
            let version = c.u8()?;
            if version != 2 {
                return Err(format!("object header version {version} is not supported"));
            }
            let flags = c.u8()?;
            track_order = flags & 0x04 != 0;
            if flags & 0x20 != 0 {
                c.skip(16)?;
            }
            if flags & 0x10 != 0 {
                c.skip(4)?;
            }
            let size = c.uint(1 << (flags & 3))?;
            blocks.push_back((addr + c.p as u64, size, false));
        } else {
            let version = c.u8()?;
            if version != 1 {
                return Err(format!(
                    "no object header at {addr:#x} (version byte {version})"
                ));
            }
            c.skip(1 + 2 + 4)?;
            let size = c.u32()? as u64;
            blocks.push_back((addr + 16, size, false));
        }
        let mut budget = Budget::new(self);
        let mut msgs = Vec::new();
        while let Some((at, len, chunk_sig)) = blocks.pop_front() {
            budget.visit(at, len, "object header block")?;
            if len > MAX_META {
                return Err(format!("object header block of {len} bytes"));
            }
            let bytes = self.io.read(at, len, "object header block")?;
            let body = if !v2 {
                &bytes[..]
            } else if chunk_sig {
                if !bytes.starts_with(b"OCHK") || bytes.len() < 8 {
                    return Err(format!("no continuation block at {at:#x}"));
                }
                &bytes[4..bytes.len() - 4]
            } else {
                &bytes[..]
            };
            let mut c = Cur::new(body, "object header message");
            let head_len = if v2 { 4 + 2 * track_order as usize } else { 8 };
            while c.left() >= head_len {
                let (kind, size, flags) = if v2 {
                    let kind = c.u8()? as u16;
                    let size = c.u16()? as usize;
                    let flags = c.u8()?;
                    if track_order {
                        c.skip(2)?;
                    }
                    (kind, size, flags)
                } else {
                    let kind = c.u16()?;
                    let size = c.u16()? as usize;
                    let flags = c.u8()?;
                    c.skip(3)?;
                    (kind, size, flags)
                };
                let data = c.take(size)?.to_vec();
                if kind == MSG_CONTINUATION {
                    let mut d = Cur::new(&data, "continuation message");
                    let to = self.addr(&mut d)?.ok_or("undefined continuation address")?;
                    let n = self.length(&mut d)?;
                    blocks.push_back((to, n, v2));
                } else if kind != 0 {
                    msgs.push(Msg { kind, flags, data });
                }
            }
        }
        Ok(msgs)
    }

    /// The links of the group whose object header is at `addr`: (name, object address;
    /// None for a soft or external link).
    fn links(&self, addr: u64) -> R<Vec<(String, Option<u64>)>> {
        let msgs = self.header(addr)?;
        let mut out = Vec::new();
        for m in &msgs {
            let mut c = Cur::new(&m.data, "link message");
            match m.kind {
                MSG_SYMBOL_TABLE => {
                    let btree = self.addr(&mut c)?;
                    let heap = self.addr(&mut c)?.ok_or("symbol table without a heap")?;
                    let names = self.local_heap(heap)?;
                    if let Some(btree) = btree {
                        let mut budget = Budget::new(self);
                        self.group_btree(btree, &names, &mut out, 0, &mut budget)?;
                    }
                }
                MSG_LINK => out.push(self.link(&mut c)?),
                MSG_LINK_INFO => {
                    c.skip(1)?;
                    let flags = c.u8()?;
                    if flags & 1 != 0 {
                        c.skip(8)?;
                    }
                    if self.addr(&mut c)?.is_some() {
                        return Err("groups with dense link storage are not supported".into());
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn link(&self, c: &mut Cur) -> R<(String, Option<u64>)> {
        let version = c.u8()?;
        if version != 1 {
            return Err(format!("link message version {version}"));
        }
        let flags = c.u8()?;
        let kind = if flags & 0x08 != 0 { c.u8()? } else { 0 };
        if flags & 0x04 != 0 {
            c.skip(8)?;
        }
        if flags & 0x10 != 0 {
            c.skip(1)?;
        }
        let n = c.uint(1 << (flags & 3))? as usize;
        let name = String::from_utf8_lossy(c.take(n)?).into_owned();
        let to = if kind == 0 { self.addr(c)? } else { None };
        Ok((name, to))
    }

    /// A local heap's data segment (a symbol table's names).
    fn local_heap(&self, addr: u64) -> R<Vec<u8>> {
        let head = self
            .io
            .read(addr, 8 + 2 * self.sl as u64 + self.so as u64, "local heap")?;
        let mut c = Cur::new(&head, "local heap");
        if c.take(4)? != b"HEAP" {
            return Err(format!("no local heap at {addr:#x}"));
        }
        c.skip(4)?;
        let size = self.length(&mut c)?;
        self.length(&mut c)?;
        let data = self.addr(&mut c)?.ok_or("local heap without data")?;
        if size > MAX_META {
            return Err(format!("local heap of {size} bytes"));
        }
        self.io.read(data, size, "local heap data")
    }

    fn group_btree(
        &self,
        addr: u64,
        names: &[u8],
        out: &mut Vec<(String, Option<u64>)>,
        depth: usize,
        budget: &mut Budget,
    ) -> R<()> {
        if depth > 64 {
            return Err("group B-tree too deep".into());
        }
        let (level, children) = self.btree_node(addr, 0, self.sl, budget)?;
        for (_, child) in children {
            if level > 0 {
                self.group_btree(child, names, out, depth + 1, budget)?;
                continue;
            }
            let head = self.io.read(child, 8, "symbol table node")?;
            if &head[..4] != b"SNOD" {
                return Err(format!("no symbol table node at {child:#x}"));
            }
            let n = u16::from_le_bytes([head[6], head[7]]) as u64;
            let entry = 2 * self.so as u64 + 24;
            budget.visit(child, 8 + n * entry, "symbol table node")?;
            let body = self.io.read(child + 8, n * entry, "symbol table node")?;
            let mut c = Cur::new(&body, "symbol table entry");
            for _ in 0..n {
                let name_at = c.uint(self.so)? as usize;
                let obj = self.addr(&mut c)?;
                c.skip(24)?;
                let name = names
                    .get(name_at..)
                    .map(|s| &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())])
                    .ok_or("symbol name outside its heap")?;
                out.push((String::from_utf8_lossy(name).into_owned(), obj));
                if out.len() > MAX_ENTRIES {
                    return Err("too many group entries".into());
                }
            }
        }
        Ok(())
    }

    /// A version-1 B-tree node of `node_type` with keys of `key_len` bytes: its level and
    /// (key bytes before the child, child address) per entry.
    fn btree_node(
        &self,
        addr: u64,
        node_type: u8,
        key_len: usize,
        budget: &mut Budget,
    ) -> R<(u8, NodeEntries)> {
        let head_len = 8 + 2 * self.so;
        let head = self.io.read(addr, head_len as u64, "B-tree node")?;
        let mut c = Cur::new(&head, "B-tree node");
        if c.take(4)? != b"TREE" {
            return Err(format!("no B-tree node at {addr:#x}"));
        }
        let ty = c.u8()?;
        if ty != node_type {
            return Err(format!("B-tree node of type {ty}, not {node_type}"));
        }
        let level = c.u8()?;
        let n = c.u16()? as u64;
        let body_len = n * (key_len + self.so) as u64 + key_len as u64;
        budget.visit(addr, head_len as u64 + body_len, "B-tree node")?;
        let body = self
            .io
            .read(addr + head_len as u64, body_len, "B-tree node")?;
        let mut c = Cur::new(&body, "B-tree node");
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let key = c.take(key_len)?.to_vec();
            let child = self.addr(&mut c)?.ok_or("undefined B-tree child")?;
            out.push((key, child));
        }
        Ok((level, out))
    }
}

fn product(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

fn dataspace(data: &[u8], sl: usize) -> R<Vec<u64>> {
    let mut c = Cur::new(data, "dataspace message");
    let version = c.u8()?;
    let rank = c.u8()? as usize;
    c.u8()?;
    match version {
        1 => c.skip(5)?,
        2 => {
            if c.u8()? == 2 {
                return Ok(vec![]);
            }
        }
        v => return Err(format!("dataspace version {v}")),
    }
    (0..rank).map(|_| c.uint(sl)).collect()
}

fn datatype(data: &[u8]) -> R<Dtype> {
    let mut c = Cur::new(data, "datatype message");
    let b0 = c.u8()?;
    let bits = c.take(3)?;
    let size = c.u32()? as usize;
    let big = bits[0] & 1 != 0;
    match (b0 & 0x0f, size) {
        (0, 1 | 2 | 4 | 8) => Ok(Dtype::Int {
            size,
            signed: bits[0] & 0x08 != 0,
            big,
        }),
        (1, 2 | 4 | 8) if bits[0] & 0x40 == 0 => Ok(Dtype::Float { size, big }),
        (class, _) => Err(format!(
            "datatype of class {class} and {size} bytes; only integers and floats are read"
        )),
    }
}

fn filters(data: &[u8]) -> R<Vec<Filter>> {
    let mut c = Cur::new(data, "filter pipeline message");
    let version = c.u8()?;
    let n = c.u8()?;
    if version == 1 {
        c.skip(6)?;
    } else if version != 2 {
        return Err(format!("filter pipeline version {version}"));
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let id = c.u16()?;
        let name_len = if version == 1 || id >= 256 {
            c.u16()? as usize
        } else {
            0
        };
        c.u16()?; // flags
        let nvalues = c.u16()? as usize;
        let name_len = if version == 1 {
            name_len.div_ceil(8) * 8
        } else {
            name_len
        };
        c.skip(name_len)?;
        let values = (0..nvalues).map(|_| c.u32()).collect::<R<Vec<_>>>()?;
        if version == 1 && nvalues % 2 == 1 {
            c.skip(4)?;
        }
        out.push(Filter { id, values });
    }
    Ok(out)
}

/// HDF5's Fletcher-32 of `data` (16-bit big-endian words, the sums folded every 360).
fn fletcher32(data: &[u8]) -> u32 {
    let (mut s1, mut s2) = (0u32, 0u32);
    for block in data.chunks(720) {
        for w in block.chunks(2) {
            s1 += (w[0] as u32) << 8 | w.get(1).map_or(0, |&b| b as u32);
            s2 += s1;
        }
        s1 = (s1 & 0xffff) + (s1 >> 16);
        s2 = (s2 & 0xffff) + (s2 >> 16);
    }
    s1 = (s1 & 0xffff) + (s1 >> 16);
    s2 = (s2 & 0xffff) + (s2 >> 16);
    (s2 << 16) | s1
}

impl Dataset {
    /// The dataset `name` at the root of the HDF5 file `path`.
    pub fn open(path: &Path, name: &str) -> R<Dataset> {
        let (ctx, root) = Ctx::open(path)?;
        let links = ctx.links(root)?;
        let Some((_, to)) = links.iter().find(|(n, _)| n == name) else {
            let have: Vec<&str> = links.iter().map(|(n, _)| n.as_str()).collect();
            return Err(format!(
                "no dataset `{name}` (the file holds: {})",
                if have.is_empty() {
                    "nothing".into()
                } else {
                    have.join(", ")
                }
            ));
        };
        let to = to.ok_or_else(|| format!("`{name}` is a soft or external link"))?;
        let msgs = ctx.header(to)?;
        let find = |kind: u16, what: &str| -> R<&Msg> {
            let m = msgs
                .iter()
                .find(|m| m.kind == kind)
                .ok_or_else(|| format!("`{name}` is not a dataset (no {what})"))?;
            if m.flags & 0x02 != 0 {
                return Err(format!(
                    "`{name}`: shared {what} messages are not supported"
                ));
            }
            Ok(m)
        };
        let shape = dataspace(&find(MSG_DATASPACE, "dataspace")?.data, ctx.sl)?;
        let dtype = datatype(&find(MSG_DATATYPE, "datatype")?.data)?;
        let filters = match msgs.iter().find(|m| m.kind == MSG_FILTERS) {
            Some(m) => filters(&m.data)?,
            None => vec![],
        };
        for f in &filters {
            if ![1, 2, 3].contains(&f.id) {
                return Err(format!(
                    "`{name}` uses HDF5 filter {} (only deflate, shuffle and fletcher32 are read)",
                    f.id
                ));
            }
        }
        let es = dtype.size() as u64;
        let total = product(&shape)
            .and_then(|n| n.checked_mul(es))
            .ok_or("shape overflows")?;
        let storage = layout(&ctx, &find(MSG_LAYOUT, "layout")?.data, &shape, es, total)?;
        let ds = Dataset {
            path: path.to_path_buf(),
            name: name.into(),
            shape,
            dtype,
            storage,
            filters,
            cache: Mutex::default(),
        };
        if ds.shape.is_empty() {
            return Err(format!("`{name}` is a scalar, not an array"));
        }
        if ds.row_len() > MAX_CHUNK {
            return Err(format!("`{name}`: rows of {} bytes", ds.row_len()));
        }
        Ok(ds)
    }

    /// The bytes of one index along the first dimension.
    pub fn row_len(&self) -> u64 {
        product(&self.shape[1..])
            .unwrap_or(u64::MAX)
            .saturating_mul(self.dtype.size() as u64)
    }

    /// Where row `i` lies in the file, when the data is stored contiguously.
    pub fn contiguous_row(&self, i: u64) -> Option<(u64, u64)> {
        match self.storage {
            Storage::Contiguous(Some(addr)) => Some((addr + i * self.row_len(), self.row_len())),
            _ => None,
        }
    }

    /// Row `i`'s elements, in the file's byte order.
    pub fn read_row(&self, i: u64) -> R<Vec<u8>> {
        let n = self.row_len();
        if i >= self.shape[0] {
            return Err(format!("row {i} of {}", self.shape[0]));
        }
        match &self.storage {
            Storage::Compact(data) => Ok(data[(i * n) as usize..((i + 1) * n) as usize].to_vec()),
            Storage::Contiguous(None) => Ok(vec![0; n as usize]),
            Storage::Contiguous(Some(addr)) => {
                Io::open(&self.path)?.read(addr + i * n, n, "dataset row")
            }
            Storage::Chunked { dims, chunks } => self.chunked_row(i, dims, chunks),
        }
    }

    /// Every element as an integer (`int()` of each), in order.
    pub fn integers(&self) -> R<Vec<i64>> {
        let es = self.dtype.size();
        let total = self.shape[0].saturating_mul(self.row_len());
        if total == 0 {
            return Ok(vec![]);
        }
        if total > MAX_CHUNK {
            return Err(format!("`{}` holds {total} bytes", self.name));
        }
        let bytes = match self.storage {
            // One read, not one per row (PCAM's training labels are 262,144 rows).
            Storage::Contiguous(Some(addr)) => {
                Io::open(&self.path)?.read(addr, total, "dataset")?
            }
            _ => {
                let mut b = Vec::with_capacity(total as usize);
                for i in 0..self.shape[0] {
                    b.extend(self.read_row(i)?);
                }
                b
            }
        };
        bytes
            .chunks_exact(es)
            .map(|e| {
                self.dtype
                    .integer(e)
                    .map_err(|m| format!("`{}`: {m}", self.name))
            })
            .collect()
    }

    fn chunked_row(&self, i: u64, dims: &[u64], chunks: &HashMap<Vec<u64>, Chunk>) -> R<Vec<u8>> {
        let es = self.dtype.size() as u64;
        let shape = &self.shape;
        let rank = shape.len();
        let mut out = vec![0u8; self.row_len() as usize];
        let (g0, li) = (i / dims[0], i % dims[0]);
        // Grid positions along dims 1.. (an odometer over them).
        let grid: Vec<u64> = (1..rank).map(|k| shape[k].div_ceil(dims[k])).collect();
        if grid.contains(&0) {
            return Ok(out);
        }
        // The chunks written in this row of the grid: by position, or where fewer are written
        // than there are positions, by a pass over those written.
        let mut row: Vec<(Vec<u64>, Chunk)> = Vec::new();
        if product(&grid).is_none_or(|n| n > chunks.len() as u64) {
            row.extend(
                chunks
                    .iter()
                    .filter(|(k, _)| k[0] == g0)
                    .map(|(k, c)| (k.clone(), *c)),
            );
        } else {
            let mut pos = vec![0u64; rank - 1];
            'grid: loop {
                let mut key = vec![g0];
                key.extend(&pos);
                if let Some(ch) = chunks.get(&key) {
                    row.push((key, *ch));
                }
                let mut k = rank - 1;
                loop {
                    if k == 0 {
                        break 'grid;
                    }
                    pos[k - 1] += 1;
                    if pos[k - 1] < grid[k - 1] {
                        break;
                    }
                    pos[k - 1] = 0;
                    k -= 1;
                }
            }
        }
        // A row never needs more decoded than the cap (chunks that all point at one
        // deflate bomb would otherwise cost minutes).
        let mut decoded = 0u64;
        for (key, ch) in row {
            let data = self.chunk(&key, ch, dims)?;
            decoded += data.len() as u64;
            if decoded > MAX_CHUNK {
                return Err(format!(
                    "row {i} of `{}` needs more than {MAX_CHUNK} bytes of chunks decoded",
                    self.name
                ));
            }
            copy_into(&mut out, &data, shape, dims, &key[1..], li, es);
        }
        Ok(out)
    }

    /// A chunk's elements, decoded (and cached for the rows that share it).
    fn chunk(&self, key: &[u64], ch: Chunk, dims: &[u64]) -> R<Arc<Vec<u8>>> {
        if let Some(d) = self.cache.lock().unwrap().chunks.get(key) {
            return Ok(d.clone());
        }
        let want = product(dims).unwrap_or(u64::MAX) * self.dtype.size() as u64;
        if ch.size > MAX_CHUNK + 8 {
            return Err(format!("a stored chunk of {} bytes", ch.size));
        }
        let mut data = Io::open(&self.path)?.read(ch.addr, ch.size, "chunk")?;
        for (k, f) in self.filters.iter().enumerate().rev() {
            if ch.mask >> k & 1 == 1 {
                continue;
            }
            data = match f.id {
                1 => {
                    let mut out = Vec::new();
                    flate2::read::ZlibDecoder::new(&data[..])
                        .take(want + 8)
                        .read_to_end(&mut out)
                        .map_err(|e| format!("chunk at {:#x}: deflate: {e}", ch.addr))?;
                    out
                }
                2 => {
                    let es = f.values.first().copied().unwrap_or(1).max(1) as usize;
                    let n = data.len() / es;
                    let mut out = data.clone();
                    // Byte j of every element lies in plane j; a tail shorter than one
                    // element stays as it is.
                    for (j, plane) in data[..n * es].chunks_exact(n.max(1)).enumerate() {
                        for (e, &b) in plane.iter().enumerate() {
                            out[e * es + j] = b;
                        }
                    }
                    out
                }
                _ => {
                    let Some(split) = data.len().checked_sub(4) else {
                        return Err(format!("chunk at {:#x}: no Fletcher-32 sum", ch.addr));
                    };
                    let (body, sum) = data.split_at(split);
                    let got = fletcher32(body);
                    let stored = u32::from_le_bytes(sum.try_into().unwrap());
                    // The library accepts either byte order (older versions wrote it swapped).
                    if stored != got && stored != got.swap_bytes() {
                        return Err(format!(
                            "chunk at {:#x}: Fletcher-32 sum {stored:#010x}, computed {got:#010x} (corrupt file?)",
                            ch.addr
                        ));
                    }
                    body.to_vec()
                }
            };
        }
        if data.len() as u64 != want {
            return Err(format!(
                "chunk at {:#x} decodes to {} bytes, not {want}",
                ch.addr,
                data.len()
            ));
        }
        let data = Arc::new(data);
        let mut cache = self.cache.lock().unwrap();
        if !cache.chunks.contains_key(key) {
            cache.bytes += data.len();
            cache.chunks.insert(key.to_vec(), data.clone());
            cache.order.push_back(key.to_vec());
            while cache.bytes > CACHE_BYTES {
                let Some(old) = cache.order.pop_front() else {
                    break;
                };
                if let Some(d) = cache.chunks.remove(&old) {
                    cache.bytes -= d.len();
                }
            }
        }
        Ok(data)
    }
}

/// Copies the part of row `li` of a decoded chunk (at grid position `pos` along dims 1..)
/// that lies inside the dataset into `out`, one row of the dataset.
fn copy_into(
    out: &mut [u8],
    chunk: &[u8],
    shape: &[u64],
    dims: &[u64],
    pos: &[u64],
    li: u64,
    es: u64,
) {
    let rank = shape.len();
    if rank == 1 {
        let at = (li * es) as usize;
        out.copy_from_slice(&chunk[at..at + es as usize]);
        return;
    }
    let start: Vec<u64> = (1..rank).map(|k| pos[k - 1] * dims[k]).collect();
    let extent: Vec<u64> = (1..rank)
        .map(|k| dims[k].min(shape[k] - start[k - 1]))
        .collect();
    let run = (extent[rank - 2] * es) as usize;
    // Odometer over dims 1..rank-1; the last dimension is one contiguous run.
    let mut j = vec![0u64; rank - 2];
    loop {
        let (mut src, mut dst) = (li, 0u64);
        for k in 1..rank - 1 {
            src = src * dims[k] + j[k - 1];
            dst = dst * shape[k] + start[k - 1] + j[k - 1];
        }
        src *= dims[rank - 1];
        dst = dst * shape[rank - 1] + start[rank - 2];
        let (s, d) = ((src * es) as usize, (dst * es) as usize);
        out[d..d + run].copy_from_slice(&chunk[s..s + run]);
        let mut k = rank - 2;
        loop {
            if k == 0 {
                return;
            }
            j[k - 1] += 1;
            if j[k - 1] < extent[k - 1] {
                break;
            }
            j[k - 1] = 0;
            k -= 1;
        }
    }
}

/// The data layout message: where the elements are.
fn layout(ctx: &Ctx, data: &[u8], shape: &[u64], es: u64, total: u64) -> R<Storage> {
    let mut c = Cur::new(data, "layout message");
    let version = c.u8()?;
    // 4 is HDF5 1.10's (chunk indexes); 5, HDF5 2.0's, encodes these classes the same way.
    if !(3..=5).contains(&version) {
        return Err(format!("data layout version {version} is not supported"));
    }
    match c.u8()? {
        0 => {
            let n = c.u16()? as u64;
            if n < total {
                return Err(format!("compact data of {n} bytes, not {total}"));
            }
            Ok(Storage::Compact(c.take(total as usize)?.to_vec()))
        }
        1 => {
            let addr = ctx.addr(&mut c)?;
            let size = ctx.length(&mut c)?;
            if let Some(a) = addr {
                if size < total || a.checked_add(total).is_none_or(|e| e > ctx.io.len) {
                    return Err(format!(
                        "contiguous data of {total} bytes at {a:#x} runs past the end of the file ({} bytes; truncated?)",
                        ctx.io.len
                    ));
                }
            }
            Ok(Storage::Contiguous(addr))
        }
        2 if version == 3 => {
            let d = c.u8()? as usize;
            let btree = ctx.addr(&mut c)?;
            let all: Vec<u64> = (0..d).map(|_| c.u32().map(u64::from)).collect::<R<_>>()?;
            let dims = chunk_dims(&all, shape, es)?;
            let mut chunks = HashMap::new();
            if let Some(b) = btree {
                let mut budget = Budget::new(ctx);
                chunk_btree(ctx, b, &dims, shape, &mut chunks, 0, &mut budget)?;
            }
            Ok(Storage::Chunked { dims, chunks })
        }
        2 => {
            let flags = c.u8()?;
            let d = c.u8()? as usize;
            let width = c.u8()? as usize;
            if !(1..=8).contains(&width) {
                return Err(format!("chunk dimensions of {width} bytes"));
            }
            let all: Vec<u64> = (0..d).map(|_| c.uint(width)).collect::<R<_>>()?;
            let dims = chunk_dims(&all, shape, es)?;
            let chunk_bytes = product(&dims).unwrap_or(u64::MAX) * es;
            let mut chunks = HashMap::new();
            match c.u8()? {
                1 => {
                    let (size, mask) = if flags & 0x02 != 0 {
                        (ctx.length(&mut c)?, c.u32()?)
                    } else {
                        (chunk_bytes, 0)
                    };
                    if let Some(addr) = ctx.addr(&mut c)? {
                        chunks.insert(vec![0; shape.len()], Chunk { addr, size, mask });
                    }
                }
                2 => {
                    if let Some(addr) = ctx.addr(&mut c)? {
                        for (k, key) in grid_keys(shape, &dims)?.into_iter().enumerate() {
                            let at = (k as u64)
                                .checked_mul(chunk_bytes)
                                .and_then(|o| o.checked_add(addr))
                                .ok_or("implicit chunk index overflows")?;
                            chunks.insert(key, Chunk { addr: at, size: chunk_bytes, mask: 0 });
                        }
                    }
                }
                3 => {
                    let page_bits = c.u8()?;
                    if let Some(addr) = ctx.addr(&mut c)? {
                        fixed_array(ctx, addr, page_bits, shape, &dims, chunk_bytes, &mut chunks)?;
                    }
                }
                4 | 5 => {
                    return Err(
                        "chunks indexed by an extensible array or a v2 B-tree (a dataset with unlimited dimensions) are not supported"
                            .into(),
                    )
                }
                t => return Err(format!("chunk index type {t}")),
            }
            Ok(Storage::Chunked { dims, chunks })
        }
        class => Err(format!("data layout class {class} is not supported")),
    }
}

/// The chunk's dimensions from the layout's (which end with the element size).
fn chunk_dims(all: &[u64], shape: &[u64], es: u64) -> R<Vec<u64>> {
    if all.len() != shape.len() + 1 || all[shape.len()] != es || all.contains(&0) {
        return Err(format!(
            "chunk dimensions {all:?} do not fit a dataset of shape {shape:?}"
        ));
    }
    let dims = all[..shape.len()].to_vec();
    if product(&dims)
        .and_then(|n| n.checked_mul(es))
        .is_none_or(|n| n > MAX_CHUNK)
    {
        return Err(format!("chunks of {dims:?} elements are too large"));
    }
    Ok(dims)
}

/// Every grid position in row-major order (the implicit and fixed-array indexes' order).
fn grid_keys(shape: &[u64], dims: &[u64]) -> R<Vec<Vec<u64>>> {
    let grid: Vec<u64> = shape
        .iter()
        .zip(dims)
        .map(|(s, d)| s.div_ceil(*d))
        .collect();
    let n = product(&grid).filter(|&n| n <= MAX_ENTRIES as u64);
    let n = n.ok_or("too many chunks")?;
    Ok((0..n)
        .map(|mut k| {
            let mut key = vec![0; grid.len()];
            for j in (0..grid.len()).rev() {
                key[j] = k % grid[j];
                k /= grid[j];
            }
            key
        })
        .collect())
}

fn chunk_btree(
    ctx: &Ctx,
    addr: u64,
    dims: &[u64],
    shape: &[u64],
    out: &mut HashMap<Vec<u64>, Chunk>,
    depth: usize,
    budget: &mut Budget,
) -> R<()> {
    if depth > 64 {
        return Err("chunk B-tree too deep".into());
    }
    let rank = shape.len();
    let key_len = 8 + 8 * (rank + 1);
    let (level, entries) = ctx.btree_node(addr, 1, key_len, budget)?;
    for (key, child) in entries {
        if level > 0 {
            chunk_btree(ctx, child, dims, shape, out, depth + 1, budget)?;
            continue;
        }
        let mut c = Cur::new(&key, "chunk key");
        let size = c.u32()? as u64;
        let mask = c.u32()?;
        let mut grid = Vec::with_capacity(rank);
        for k in 0..rank {
            let off = c.uint(8)?;
            if off % dims[k] != 0 || off >= shape[k] {
                return Err(format!(
                    "chunk at {child:#x} starts at {off} along dimension {k}"
                ));
            }
            grid.push(off / dims[k]);
        }
        out.insert(
            grid,
            Chunk {
                addr: child,
                size,
                mask,
            },
        );
        if out.len() > MAX_ENTRIES {
            return Err("too many chunks".into());
        }
    }
    Ok(())
}

/// HDF5 1.10's fixed-array chunk index (its header, data block and pages).
fn fixed_array(
    ctx: &Ctx,
    addr: u64,
    page_bits: u8,
    shape: &[u64],
    dims: &[u64],
    chunk_bytes: u64,
    out: &mut HashMap<Vec<u64>, Chunk>,
) -> R<()> {
    let so = ctx.so;
    let head = ctx
        .io
        .read(addr, 8 + (ctx.sl + so) as u64 + 4, "fixed array header")?;
    let mut c = Cur::new(&head, "fixed array header");
    if c.take(4)? != b"FAHD" {
        return Err(format!("no fixed array header at {addr:#x}"));
    }
    c.skip(1)?;
    let client = c.u8()?;
    let entry = c.u8()? as usize;
    let page_bits_h = c.u8()?;
    let n = ctx.length(&mut c)?;
    let block = ctx.addr(&mut c)?;
    let keys = grid_keys(shape, dims)?;
    if n != keys.len() as u64 || page_bits_h != page_bits || page_bits > 32 {
        return Err(format!(
            "fixed array of {n} entries for the {} chunks",
            keys.len()
        ));
    }
    let Some(block) = block else {
        return Ok(());
    };
    // An entry: the chunk's address, and for filtered chunks its size and filter mask.
    let size_len = if client == 1 {
        entry
            .checked_sub(so + 4)
            .filter(|l| (1..=8).contains(l))
            .ok_or("fixed array entries too small")?
    } else if entry == so {
        0
    } else {
        return Err(format!("fixed array entries of {entry} bytes"));
    };
    let per_page = 1u64 << page_bits;
    let paged = n > per_page;
    let npages = n.div_ceil(per_page);
    let bitmap = if paged { npages.div_ceil(8) } else { 0 };
    let prefix = 4 + 2 + so as u64 + bitmap;
    let bytes = |entries: u64| entries * entry as u64;
    let take = |c: &mut Cur, first: u64, count: u64, out: &mut HashMap<Vec<u64>, Chunk>| -> R<()> {
        for key in &keys[first as usize..(first + count) as usize] {
            let a = ctx.addr(c)?;
            let (size, mask) = if client == 1 {
                (c.uint(size_len)?, c.u32()?)
            } else {
                (chunk_bytes, 0)
            };
            if let Some(a) = a {
                out.insert(
                    key.clone(),
                    Chunk {
                        addr: a,
                        size,
                        mask,
                    },
                );
            }
        }
        Ok(())
    };
    if !paged {
        let data = ctx
            .io
            .read(block + prefix, bytes(n), "fixed array data block")?;
        take(&mut Cur::new(&data, "fixed array data block"), 0, n, out)?;
        return Ok(());
    }
    let map = ctx
        .io
        .read(block + 4 + 2 + so as u64, bitmap, "fixed array page bitmap")?;
    let mut at = block + prefix + 4;
    for p in 0..npages {
        let count = per_page.min(n - p * per_page);
        let page = bytes(count) + 4;
        if map[(p / 8) as usize] & (0x80 >> (p % 8)) != 0 {
            let data = ctx.io.read(at, bytes(count), "fixed array page")?;
            take(
                &mut Cur::new(&data, "fixed array page"),
                p * per_page,
                count,
                out,
            )?;
        }
        at += page;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fletcher32_is_hdf5s() {
        // H5_checksum_fletcher32 of "abcdefgh" (words 0x6162 ...): sums by hand.
        let words = [0x6162u32, 0x6364, 0x6566, 0x6768];
        let (mut s1, mut s2) = (0, 0);
        for w in words {
            s1 += w;
            s2 += s1;
        }
        let fold = |s: u32| (s & 0xffff) + (s >> 16);
        assert_eq!(
            fletcher32(b"abcdefgh"),
            (fold(fold(s2)) << 16) | fold(fold(s1))
        );
        // An odd tail is its byte shifted high.
        assert_eq!(fletcher32(b"a"), (0x6100 << 16) | 0x6100);
    }

    #[test]
    fn integers_are_pythons_int() {
        let u16be = Dtype::Int {
            size: 2,
            signed: false,
            big: true,
        };
        assert_eq!(u16be.integer(&[1, 2]).unwrap(), 258);
        let i8 = Dtype::Int {
            size: 1,
            signed: true,
            big: false,
        };
        assert_eq!(i8.integer(&[0xff]).unwrap(), -1);
        let f4 = Dtype::Float {
            size: 4,
            big: false,
        };
        assert_eq!(f4.integer(&1.75f32.to_le_bytes()).unwrap(), 1);
        assert!(f4.integer(&f32::NAN.to_le_bytes()).is_err());
        assert_eq!(u16be.name(), ">uint16");
        assert_eq!(i8.name(), "int8");
    }

    /// numpy's `dtype.str` of a type.
    fn numpy(d: Dtype) -> String {
        let (kind, big) = match d {
            Dtype::Int { signed, big, .. } => (if signed { 'i' } else { 'u' }, big),
            Dtype::Float { big, .. } => ('f', big),
        };
        let order = match (d.size(), big) {
            (1, _) => '|',
            (_, true) => '>',
            _ => '<',
        };
        format!("{order}{kind}{}", d.size())
    }

    /// Every dataset of the fixture files h5py wrote (scripts/dev/make_hdf5_fixture.py), read
    /// row by row: the shape, type and bytes h5py reads back; the refused forms' errors.
    #[test]
    fn reads_what_h5py_reads() {
        use sha2::{Digest, Sha256};
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hdf5");
        let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
        let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut checked = 0;
        for (file, sets) in expected.as_object().unwrap() {
            let path = dir.join(file);
            if let Some(want) = sets.get("error") {
                let e = Dataset::open(&path, "x").unwrap_err();
                assert!(e.contains(want.as_str().unwrap()), "{file}: {e}");
                continue;
            }
            for (name, want) in sets.as_object().unwrap() {
                let ds =
                    Dataset::open(&path, name).unwrap_or_else(|e| panic!("{file}/{name}: {e}"));
                let shape: Vec<u64> = serde_json::from_value(want["shape"].clone()).unwrap();
                assert_eq!(ds.shape, shape, "{file}/{name}");
                assert_eq!(
                    numpy(ds.dtype),
                    want["dtype"].as_str().unwrap(),
                    "{file}/{name}"
                );
                let mut h = Sha256::new();
                for i in 0..ds.shape[0] {
                    h.update(
                        ds.read_row(i)
                            .unwrap_or_else(|e| panic!("{file}/{name}[{i}]: {e}")),
                    );
                }
                assert_eq!(
                    format!("{:x}", h.finalize()),
                    want["sha256"].as_str().unwrap(),
                    "{file}/{name}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 32);
    }
}
