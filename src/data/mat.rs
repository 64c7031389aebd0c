//! A reader for MATLAB's level-5 MAT-files (what `scipy.io.loadmat` reads), enough for the
//! annotation files of torchvision's Flowers102 (`imagelabels.mat`, `setid.mat`) and
//! StanfordCars (`cars_meta.mat`, `cars_*_annos*.mat`): numeric arrays, character arrays, cell
//! arrays and structs, plain or zlib-compressed, either byte order. Files are untrusted: every
//! length is checked against the bytes present, nesting is bounded, decompression is capped,
//! and nothing but data is produced (objects, sparse and function handles are refused).

use std::collections::BTreeMap;
use std::io::Read;

/// One MATLAB array. Element order is MATLAB's (column-major), which for the vectors these
/// files hold is the order `loadmat(..., squeeze_me=True)` gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// Any numeric or logical class, as f64 (these files hold integers well inside 2^53).
    Num {
        dims: Vec<usize>,
        data: Vec<f64>,
    },
    /// A character array: its rows (an M x N array is M strings of N characters).
    Char {
        dims: Vec<usize>,
        rows: Vec<String>,
    },
    Cell {
        dims: Vec<usize>,
        items: Vec<Array>,
    },
    /// `items[e][f]` is field `fields[f]` of element `e`.
    Struct {
        dims: Vec<usize>,
        fields: Vec<String>,
        items: Vec<Vec<Array>>,
    },
}

impl Array {
    /// The string of a 1 x N (or N x 1, or empty) character array.
    pub fn as_str(&self) -> Option<String> {
        match self {
            Array::Char { dims, rows } if dims.iter().filter(|&&d| d != 1).count() <= 1 => {
                Some(rows.concat())
            }
            _ => None,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::Num { data, .. } => data.len(),
            Array::Char { dims, .. } | Array::Cell { dims, .. } | Array::Struct { dims, .. } => {
                dims.iter().product()
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values of a numeric array that are all whole numbers >= 0.
    pub fn as_indices(&self) -> Option<Vec<u64>> {
        match self {
            Array::Num { data, .. } => data
                .iter()
                .map(|&v| (v >= 0.0 && v.fract() == 0.0 && v < 9.0e15).then_some(v as u64))
                .collect(),
            _ => None,
        }
    }

    /// A struct's field, element by element.
    pub fn field(&self, name: &str) -> Option<Vec<&Array>> {
        match self {
            Array::Struct { fields, items, .. } => {
                let f = fields.iter().position(|n| n == name)?;
                Some(items.iter().map(|e| &e[f]).collect())
            }
            _ => None,
        }
    }
}

/// Decompressed bytes allowed per compressed variable: far above any annotation file
/// (Stanford Cars' largest holds 8,144 records in under 1 MB), far below memory.
const MAX_INFLATED: u64 = 256 << 20;
/// Cells in cells in structs...: deeper than this is not an annotation file.
const MAX_DEPTH: usize = 16;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_CHAR: u8 = 4;

/// The file's variables by name. Errors are one line, without the path (the caller adds it).
pub fn parse(bytes: &[u8]) -> Result<BTreeMap<String, Array>, String> {
    if bytes.starts_with(b"\x89HDF") || bytes.get(512..516) == Some(b"\x89HDF") {
        return Err(
            "a MATLAB v7.3 (HDF5) file; save it with -v7 (scipy cannot read it either)".into(),
        );
    }
    if bytes.len() < 128 {
        return Err("not a MAT-file (shorter than its 128-byte header)".into());
    }
    if bytes[..4].contains(&0) {
        // A level-4 MAT-file starts with a binary header; level 5 with text.
        return Err("not a level-5 MAT-file (MATLAB v4 files are not read)".into());
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        _ => return Err("not a level-5 MAT-file (no endian mark at byte 126)".into()),
    };
    let mut vars = BTreeMap::new();
    let mut r = Reader {
        b: bytes,
        pos: 128,
        big,
    };
    while r.pos < bytes.len() {
        if bytes.len() - r.pos < 8 {
            // Trailing padding shorter than a tag.
            break;
        }
        let (ty, data) = r.element()?;
        let found = match ty {
            MI_MATRIX => matrix(data, big, 0)?,
            MI_COMPRESSED => {
                let raw = inflate(data)?;
                let (ty, data) = Reader {
                    b: &raw,
                    pos: 0,
                    big,
                }
                .element()?;
                if ty != MI_MATRIX {
                    return Err(format!(
                        "a compressed element holds type {ty}, not a matrix"
                    ));
                }
                matrix(data, big, 0)?
            }
            _ => return Err(format!("unexpected top-level element of type {ty}")),
        };
        if let Some((name, a)) = found {
            vars.insert(name, a);
        }
    }
    Ok(vars)
}

fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("a compressed variable does not inflate: {e}"))?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(format!(
            "a compressed variable inflates past {} MiB",
            MAX_INFLATED >> 20
        ));
    }
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Reader<'a> {
    fn u32_at(&self, at: usize) -> Result<u32, String> {
        let s: [u8; 4] = self
            .b
            .get(at..at + 4)
            .ok_or("truncated (a tag runs past the end)")?
            .try_into()
            .expect("4 bytes");
        Ok(if self.big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    }

    /// The next data element: its type and its bytes. Small elements pack type, size and up to
    /// four bytes of data into the 8-byte tag.
    fn element(&mut self) -> Result<(u32, &'a [u8]), String> {
        let first = self.u32_at(self.pos)?;
        if first >> 16 != 0 {
            let (ty, n) = (first & 0xffff, (first >> 16) as usize);
            if n > 4 {
                return Err(format!("a small data element claims {n} bytes (at most 4)"));
            }
            let data = self
                .b
                .get(self.pos + 4..self.pos + 4 + n)
                .ok_or("truncated (a small element runs past the end)")?;
            self.pos += 8;
            return Ok((ty, data));
        }
        let n = self.u32_at(self.pos + 4)? as usize;
        let start = self.pos + 8;
        let data = start
            .checked_add(n)
            .and_then(|end| self.b.get(start..end))
            .ok_or_else(|| format!("truncated (an element of {n} bytes runs past the end)"))?;
        // Elements are padded to 8 bytes; a compressed one is not.
        self.pos = if first == MI_COMPRESSED {
            start + n
        } else {
            (start + n).div_ceil(8) * 8
        };
        Ok((first, data))
    }

    fn expect(&mut self, want: &[u32], what: &str) -> Result<&'a [u8], String> {
        let (ty, data) = self.element()?;
        if !want.contains(&ty) {
            return Err(format!("{what}: element type {ty}"));
        }
        Ok(data)
    }

    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
}

/// Numbers of a numeric data element of storage type `ty`.
fn numbers(ty: u32, data: &[u8], big: bool) -> Result<Vec<f64>, String> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {{
            if data.len() % $n != 0 {
                return Err(format!(
                    "{} bytes of type {ty} (not a multiple of {})",
                    data.len(),
                    $n
                ));
            }
            data.chunks_exact($n)
                .map(|c| {
                    let a = c.try_into().expect("chunk");
                    (if big {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }) as f64
                })
                .collect()
        }};
    }
    Ok(match ty {
        MI_INT8 => data.iter().map(|&v| v as i8 as f64).collect(),
        MI_UINT8 | MI_UTF8 => data.iter().map(|&v| v as f64).collect(),
        MI_INT16 => conv!(i16, 2),
        MI_UINT16 | MI_UTF16 => conv!(u16, 2),
        MI_INT32 => conv!(i32, 4),
        MI_UINT32 | MI_UTF32 => conv!(u32, 4),
        MI_SINGLE => conv!(f32, 4),
        MI_DOUBLE => conv!(f64, 8),
        MI_INT64 => conv!(i64, 8),
        MI_UINT64 => conv!(u64, 8),
        _ => return Err(format!("numeric data of unknown type {ty}")),
    })
}

/// The product of `dims`, if it fits.
fn count(dims: &[usize]) -> Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))
}

/// A miMATRIX element's body: its name and array (None for the empty placeholder MATLAB writes
/// for an empty cell or field at the top level).
fn matrix(data: &[u8], big: bool, depth: usize) -> Result<Option<(String, Array)>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
    }
    if data.is_empty() {
        return Ok(None);
    }
    let mut r = Reader {
        b: data,
        pos: 0,
        big,
    };
    let flags = r.expect(&[MI_UINT32], "array flags")?;
    if flags.len() < 4 {
        return Err("array flags shorter than 4 bytes".into());
    }
    let f = Reader {
        b: flags,
        pos: 0,
        big,
    }
    .u32_at(0)?;
    let class = (f & 0xff) as u8;
    let complex = f & 0x800 != 0;
    let dims_raw = r.expect(&[MI_INT32], "dimensions")?;
    let dims = numbers(MI_INT32, dims_raw, big)?
        .into_iter()
        .map(|d| {
            if d < 0.0 {
                Err(format!("negative dimension {d}"))
            } else {
                Ok(d as usize)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if dims.len() < 2 {
        return Err(format!(
            "{} dimensions (MATLAB arrays have at least 2)",
            dims.len()
        ));
    }
    let n = count(&dims)?;
    let name_raw = r.expect(&[MI_INT8, MI_UINT8, MI_UTF8], "array name")?;
    let name = String::from_utf8_lossy(name_raw).into_owned();
    let array = match class {
        MX_CELL => {
            // Each cell is a tagged element of at least 8 bytes.
            if n > data.len() / 8 {
                return Err(format!("{n} cells in {} bytes", data.len()));
            }
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let body = r.expect(&[MI_MATRIX], "a cell")?;
                items.push(item(body, big, depth)?);
            }
            Array::Cell { dims, items }
        }
        MX_STRUCT => {
            let len_raw = r.expect(&[MI_INT32], "field-name length")?;
            let len = numbers(MI_INT32, len_raw, big)?
                .first()
                .copied()
                .ok_or("no field-name length")?;
            if !(1.0..=65536.0).contains(&len) {
                return Err(format!("field-name length {len}"));
            }
            let len = len as usize;
            let names = r.expect(&[MI_INT8, MI_UINT8, MI_UTF8], "field names")?;
            let fields: Vec<String> = names
                .chunks(len)
                .filter(|c| c.len() == len)
                .map(|c| {
                    let end = c.iter().position(|&b| b == 0).unwrap_or(len);
                    String::from_utf8_lossy(&c[..end]).into_owned()
                })
                .collect();
            // Each field of each element is a tagged element of at least 8 bytes; elements
            // without fields take none, so their count is bounded by the bytes too.
            if n > data.len()
                || n.checked_mul(fields.len())
                    .is_none_or(|s| s > data.len() / 8)
            {
                return Err(format!(
                    "{n} x {} fields in {} bytes",
                    fields.len(),
                    data.len()
                ));
            }
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let mut e = Vec::with_capacity(fields.len());
                for _ in 0..fields.len() {
                    let body = r.expect(&[MI_MATRIX], "a struct field")?;
                    e.push(item(body, big, depth)?);
                }
                items.push(e);
            }
            Array::Struct {
                dims,
                fields,
                items,
            }
        }
        MX_CHAR => {
            let rows = if n == 0 {
                if !r.done() {
                    r.element()?;
                }
                Vec::new()
            } else {
                let (ty, raw) = r.element()?;
                let units: Vec<u32> = match ty {
                    MI_UTF8 => String::from_utf8_lossy(raw)
                        .chars()
                        .map(u32::from)
                        .collect(),
                    MI_UINT8 | MI_INT8 => raw.iter().map(|&b| b as u32).collect(),
                    MI_UINT16 | MI_UTF16 | MI_UINT32 | MI_UTF32 => numbers(ty, raw, big)?
                        .into_iter()
                        .map(|v| v as u32)
                        .collect(),
                    _ => return Err(format!("character data of type {ty}")),
                };
                if units.len() != n {
                    return Err(format!(
                        "{} characters for dimensions {dims:?}",
                        units.len()
                    ));
                }
                let m = dims[0];
                let per_row = n / m.max(1);
                (0..m)
                    .map(|i| {
                        (0..per_row)
                            .map(|j| char::from_u32(units[i + j * m]).unwrap_or('\u{fffd}'))
                            .collect()
                    })
                    .collect()
            };
            Array::Char { dims, rows }
        }
        6..=15 => {
            let data = if n == 0 && r.done() {
                Vec::new()
            } else {
                let (ty, raw) = r.element()?;
                numbers(ty, raw, big)?
            };
            if data.len() != n {
                return Err(format!("{} values for dimensions {dims:?}", data.len()));
            }
            if complex {
                return Err(format!("`{name}` is complex"));
            }
            Array::Num { dims, data }
        }
        3 => return Err(format!("`{name}` is a MATLAB object (not read)")),
        5 => return Err(format!("`{name}` is a sparse array (not read)")),
        c => return Err(format!("`{name}` has array class {c} (not read)")),
    };
    Ok(Some((name, array)))
}

/// A cell or field: an empty element is an empty double array, as MATLAB means it.
fn item(body: &[u8], big: bool, depth: usize) -> Result<Array, String> {
    Ok(match matrix(body, big, depth + 1)? {
        Some((_, a)) => a,
        None => Array::Num {
            dims: vec![0, 0],
            data: Vec::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of a file of one variable, written by hand in scipy's layout (little-endian).
    fn tag(ty: u32, data: &[u8]) -> Vec<u8> {
        let mut v = ty.to_le_bytes().to_vec();
        v.extend((data.len() as u32).to_le_bytes());
        v.extend(data);
        while !v.len().is_multiple_of(8) {
            v.push(0);
        }
        v
    }

    fn header() -> Vec<u8> {
        let mut h = b"MATLAB 5.0 MAT-file, written by hand".to_vec();
        h.resize(116, b' ');
        h.extend([0u8; 8]);
        h.extend([0, 1]);
        h.extend(b"IM");
        h
    }

    fn matrix_el(class: u32, dims: &[i32], name: &str, body: &[u8]) -> Vec<u8> {
        let mut m = tag(
            MI_UINT32,
            &[class.to_le_bytes(), 0u32.to_le_bytes()].concat(),
        );
        m.extend(tag(
            MI_INT32,
            &dims
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect::<Vec<_>>(),
        ));
        m.extend(tag(MI_INT8, name.as_bytes()));
        m.extend(body);
        tag(MI_MATRIX, &m)
    }

    #[test]
    fn numbers_strings_cells_structs() {
        let mut f = header();
        // labels = uint8 [1 x 3] stored as miUINT8.
        f.extend(matrix_el(
            6,
            &[1, 3],
            "labels",
            &tag(MI_UINT8, &[77, 1, 102]),
        ));
        // names = {'ab', 'c'}: a 1 x 2 cell of char rows in UTF-16.
        let s = |t: &str| {
            let u: Vec<u8> = t.encode_utf16().flat_map(|c| c.to_le_bytes()).collect();
            matrix_el(4, &[1, t.len() as i32], "", &tag(MI_UINT16, &u))
        };
        f.extend(matrix_el(1, &[1, 2], "names", &[s("ab"), s("c")].concat()));
        // annos: a 1 x 2 struct with fields fname and class.
        let mut body = tag(MI_INT32, &8i32.to_le_bytes());
        body.extend(tag(MI_INT8, b"fname\0\0\0class\0\0\0"));
        for (n, c) in [("x.jpg", 3.0f64), ("y.jpg", 1.0)] {
            body.extend(s(n));
            body.extend(matrix_el(6, &[1, 1], "", &tag(MI_DOUBLE, &c.to_le_bytes())));
        }
        f.extend(matrix_el(2, &[1, 2], "annos", &body));
        let v = parse(&f).unwrap();
        assert_eq!(v["labels"].as_indices().unwrap(), [77, 1, 102]);
        match &v["names"] {
            Array::Cell { items, .. } => {
                let n: Vec<_> = items.iter().map(|a| a.as_str().unwrap()).collect();
                assert_eq!(n, ["ab", "c"]);
            }
            a => panic!("{a:?}"),
        }
        let annos = &v["annos"];
        let names: Vec<_> = annos
            .field("fname")
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(names, ["x.jpg", "y.jpg"]);
        let classes: Vec<_> = annos
            .field("class")
            .unwrap()
            .iter()
            .map(|a| a.as_indices().unwrap()[0])
            .collect();
        assert_eq!(classes, [3, 1]);
        // The same variable compressed.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(
            &mut z,
            &matrix_el(6, &[1, 2], "x", &tag(MI_INT16, &[5, 0, 250, 255])),
        )
        .unwrap();
        let z = z.finish().unwrap();
        let mut c = header();
        c.extend(15u32.to_le_bytes());
        c.extend((z.len() as u32).to_le_bytes());
        c.extend(&z);
        assert_eq!(
            parse(&c).unwrap()["x"],
            Array::Num {
                dims: vec![1, 2],
                data: vec![5.0, -6.0]
            }
        );
        // Every truncation is an error, never a panic.
        for cut in 0..f.len() {
            let _ = parse(&f[..cut]);
        }
        assert!(parse(&f[..f.len() - 9]).is_err());
        assert!(parse(b"\x89HDF\r\n").unwrap_err().contains("v7.3"));
        // A struct of 2^27 elements without fields (found by fuzzing: it allocated gigabytes).
        let mut body = tag(MI_INT32, &8i32.to_le_bytes());
        body.extend(tag(MI_INT8, b""));
        let mut f = header();
        f.extend(matrix_el(2, &[1, 1 << 27], "s", &body));
        assert!(parse(&f).unwrap_err().contains("fields in"));
    }
}
