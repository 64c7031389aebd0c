//! Just enough of the ZIP format to find the members of a torch archive. torch stores every
//! member uncompressed, so a member is a byte range of the file and tensors can be read in place.

use std::fs::File;
use std::os::unix::fs::FileExt;

pub struct Member {
    pub name: String,
    pub method: u16,
    pub compressed_size: u64,
    pub size: u64,
    /// Offset of the member's data (after its local header).
    pub data_start: u64,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn read_at_raw(file: &File, offset: u64, len: usize, file_len: u64) -> Result<Vec<u8>, String> {
    let end = offset.checked_add(len as u64).ok_or("offset overflow")?;
    if end > file_len {
        return Err(format!(
            "needs bytes {offset}..{end} but the file has {file_len} (truncated?)"
        ));
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Lists the members of a ZIP archive from its central directory.
fn members_raw(file: &File, file_len: u64) -> Result<Vec<Member>, String> {
    let tail_len = file_len.min(65_557) as usize;
    let tail = read_at_raw(file, file_len - tail_len as u64, tail_len, file_len)?;
    let eocd = (0..tail_len.saturating_sub(21))
        .rev()
        .find(|&i| le32(&tail, i) == 0x0605_4b50)
        .ok_or("no end-of-central-directory record (truncated zip?)")?;
    let eocd_abs = file_len - tail_len as u64 + eocd as u64;
    let mut count = le16(&tail, eocd + 10) as u64;
    let mut cd_size = le32(&tail, eocd + 12) as u64;
    let mut cd_offset = le32(&tail, eocd + 16) as u64;
    if count == 0xffff || cd_offset == 0xffff_ffff || cd_size == 0xffff_ffff {
        // ZIP64: the locator sits right before the classic record.
        let loc_at = eocd_abs.checked_sub(20).ok_or("bad zip64 locator")?;
        let loc = read_at_raw(file, loc_at, 20, file_len)?;
        if le32(&loc, 0) != 0x0706_4b50 {
            return Err("zip64 locator missing".into());
        }
        let rec_at = le64(&loc, 8);
        let rec = read_at_raw(file, rec_at, 56, file_len)?;
        if le32(&rec, 0) != 0x0606_4b50 {
            return Err("zip64 end record missing".into());
        }
        count = le64(&rec, 32);
        cd_size = le64(&rec, 40);
        cd_offset = le64(&rec, 48);
    }
    if cd_size > file_len || count > cd_size / 46 + 1 {
        return Err("central directory larger than the file".into());
    }
    let cd = read_at_raw(file, cd_offset, cd_size as usize, file_len)?;
    let mut out = Vec::with_capacity(count as usize);
    let mut p = 0usize;
    for _ in 0..count {
        if p + 46 > cd.len() || le32(&cd, p) != 0x0201_4b50 {
            return Err("corrupt central directory".into());
        }
        let method = le16(&cd, p + 10);
        let mut csize = le32(&cd, p + 20) as u64;
        let mut size = le32(&cd, p + 24) as u64;
        let nlen = le16(&cd, p + 28) as usize;
        let elen = le16(&cd, p + 30) as usize;
        let clen = le16(&cd, p + 32) as usize;
        let mut local = le32(&cd, p + 42) as u64;
        let name_end = p + 46 + nlen;
        if name_end + elen + clen > cd.len() {
            return Err("corrupt central directory entry".into());
        }
        let name = String::from_utf8_lossy(&cd[p + 46..name_end]).into_owned();
        // ZIP64 extra field: the 0xffffffff fields follow in order.
        let mut e = name_end;
        while e + 4 <= name_end + elen {
            let id = le16(&cd, e);
            let len = le16(&cd, e + 2) as usize;
            let body = e + 4;
            if body + len > name_end + elen {
                break;
            }
            if id == 1 {
                let mut q = body;
                if size == 0xffff_ffff && q + 8 <= body + len {
                    size = le64(&cd, q);
                    q += 8;
                }
                if csize == 0xffff_ffff && q + 8 <= body + len {
                    csize = le64(&cd, q);
                    q += 8;
                }
                if local == 0xffff_ffff && q + 8 <= body + len {
                    local = le64(&cd, q);
                }
            }
            e = body + len;
        }
        let lh = read_at_raw(file, local, 30, file_len)?;
        if le32(&lh, 0) != 0x0403_4b50 {
            return Err(format!("bad local header for `{name}`"));
        }
        let data_start = local + 30 + le16(&lh, 26) as u64 + le16(&lh, 28) as u64;
        if data_start
            .checked_add(csize)
            .is_none_or(|end| end > file_len)
        {
            return Err(format!(
                "member `{name}` runs past the end of the file (truncated?)"
            ));
        }
        out.push(Member {
            name,
            method,
            compressed_size: csize,
            size,
            data_start,
        });
        p = name_end + elen + clen;
    }
    Ok(out)
}

/// Reads a whole (small) member, inflating it if it was compressed.
fn read_member_raw(file: &File, m: &Member, file_len: u64, limit: u64) -> Result<Vec<u8>, String> {
    if m.size > limit || m.compressed_size > limit {
        return Err(format!(
            "member `{}` is too large ({} bytes)",
            m.name, m.size
        ));
    }
    let raw = read_at_raw(file, m.data_start, m.compressed_size as usize, file_len)?;
    match m.method {
        0 => Ok(raw),
        8 => {
            use std::io::Read;
            let mut out = Vec::with_capacity(m.size as usize);
            flate2::read::DeflateDecoder::new(&raw[..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| format!("cannot inflate `{}`: {e}", m.name))?;
            Ok(out)
        }
        other => Err(format!(
            "member `{}` uses unsupported compression {other}",
            m.name
        )),
    }
}

/// Why an archive (or a byte range of a file) could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ZipError(pub String);

impl From<ZipError> for String {
    fn from(e: ZipError) -> String {
        e.0
    }
}

/// `len` bytes at `offset`, refusing ranges past the end of the file.
pub fn read_at(file: &File, offset: u64, len: usize, file_len: u64) -> Result<Vec<u8>, ZipError> {
    read_at_raw(file, offset, len, file_len).map_err(ZipError)
}

/// The archive's members, from its central directory.
pub fn members(file: &File, file_len: u64) -> Result<Vec<Member>, ZipError> {
    members_raw(file, file_len).map_err(ZipError)
}

/// One member's bytes (stored or deflated), at most `limit` of them.
pub fn read_member(
    file: &File,
    m: &Member,
    file_len: u64,
    limit: u64,
) -> Result<Vec<u8>, ZipError> {
    read_member_raw(file, m, file_len, limit).map_err(ZipError)
}
