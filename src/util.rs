//! Small helpers shared by the modules: typo hints, atomic file writes, the safetensors writer,
//! child processes under a time limit.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + (ca != cb) as usize)
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest known name, when it is close enough to be a typo.
pub fn nearest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .min()
        .filter(|(d, k)| *d <= (k.len() / 2).max(2))
        .map(|(_, k)| k)
}

/// A path as it is written in the CSV and JSON outputs, losslessly: the path's text with `%`
/// written `%25` and every byte that is not UTF-8 written `%XX` (upper-case hex), so
/// percent-decoding the field gives the file name's exact bytes back.
pub fn path_text(p: &Path) -> String {
    fn escaped(out: &mut String, s: &str) {
        for c in s.chars() {
            if c == '%' {
                out.push_str("%25");
            } else {
                out.push(c);
            }
        }
    }
    #[cfg(unix)]
    let mut rest = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str());
    #[cfg(not(unix))]
    let lossy = p.to_string_lossy();
    #[cfg(not(unix))]
    let mut rest = lossy.as_bytes();
    let mut out = String::with_capacity(rest.len());
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                escaped(&mut out, s);
                return out;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                // `good` is the prefix the error reported valid: never the default.
                escaped(&mut out, std::str::from_utf8(good).unwrap_or_default());
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    out.push_str(&format!("%{b:02X}"));
                }
                rest = &bad[n..];
            }
        }
    }
}

/// The file name's bytes back from a [`path_text`] field (None: not such a field).
pub fn path_bytes(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Writes a file atomically: a temporary file beside it, then a rename. A path that names
/// something other than a regular file (`/dev/null`, a FIFO, `/dev/stdout`) is written in
/// place: renaming over it would replace the device with a file. A symlink to a file is
/// followed, so the link stays and its target is replaced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// [`write_atomic`] of what `fill` writes (streamed, for outputs too large to hold).
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let target = match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            // A device, FIFO or socket (a directory fails to open, as it should).
            let mut w =
                std::io::BufWriter::new(std::fs::OpenOptions::new().write(true).open(path)?);
            fill(&mut w)?;
            return w.flush();
        }
        Ok(_) => std::fs::canonicalize(path)?,
        Err(_) => path.to_path_buf(),
    };
    let path = target.as_path();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let res = (|| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Makes `dir` (and its parents) if missing and checks that it takes a new file, by creating
/// and removing a hidden one: what a later [`write_atomic`] into it needs.
pub fn probe_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".pyramidclip-probe{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => std::fs::remove_file(&probe),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs `cmd` to its end with stdin closed and stdout discarded, and returns its exit status
/// and stderr; `None` (the child killed) when it runs past `limit`. For probes in a child
/// process: one that hangs must cost the caller a bounded wait, not the run.
pub fn run_bounded(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::io::Result<Option<(std::process::ExitStatus, String)>> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read stderr as it comes, so a chatty child never blocks on a full pipe.
    let mut pipe = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(p) = pipe.as_mut() {
            let _ = p.read_to_string(&mut text);
        }
        text
    });
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some((status, reader.join().unwrap_or_default())));
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Writes tensors (f32, f16, bf16, i64; others as f32) to a safetensors file atomically: the
/// one writer of embeddings, pixels, converted checkpoints and cached class vectors.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: Option<HashMap<String, String>>,
) -> std::io::Result<()> {
    let bad = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let mut bufs = Vec::new();
    for (name, t) in tensors {
        let (dt, bytes) = tensor_bytes(t).map_err(|e| bad(&e))?;
        bufs.push((name.clone(), dt, t.dims().to_vec(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = bufs
        .iter()
        .map(|(n, dt, shape, b)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, shape.clone(), b)?,
            ))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()
        .map_err(|e| bad(&e))?;
    let bytes = safetensors::serialize(views, meta).map_err(|e| bad(&e))?;
    write_atomic(path, &bytes)
}

/// A tensor's safetensors dtype and little-endian bytes.
fn tensor_bytes(t: &Tensor) -> candle_core::Result<(safetensors::Dtype, Vec<u8>)> {
    let t = t.to_device(&Device::Cpu)?.contiguous()?;
    Ok(match t.dtype() {
        DType::F32 => (
            safetensors::Dtype::F32,
            t.flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            safetensors::Dtype::F16,
            t.flatten_all()?
                .to_vec1::<half::f16>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::BF16 => (
            safetensors::Dtype::BF16,
            t.flatten_all()?
                .to_vec1::<half::bf16>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::I64 => (
            safetensors::Dtype::I64,
            t.flatten_all()?
                .to_vec1::<i64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        _ => (
            safetensors::Dtype::F32,
            t.to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    })
}

/// This process as a lock holder names itself: `PID@HOST`.
pub fn lock_owner() -> String {
    format!("{}@{}", std::process::id(), hostname())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length are valid; the name is NUL-terminated on success.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    }
}

/// Whether a lock written by [`lock_owner`] was left by a process of this host that no longer
/// runs (killed before it could remove it). A lock of another host, or one not yet written,
/// is not known to be stale.
pub fn lock_is_stale(owner: &str) -> bool {
    let Some((pid, host)) = owner.trim().split_once('@') else {
        return false;
    };
    let Ok(pid) = pid.parse::<libc::pid_t>() else {
        return false;
    };
    if pid <= 0 || host != hostname() {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let signalled = unsafe { libc::kill(pid, 0) };
    signalled != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Writes one f32 tensor as `torch.save(tensor)` writes it (a zip archive: `data.pkl`, the
/// storage `data/0`, `version`, `byteorder`), atomically, so that `torch.load` (weights-only
/// included) reads it back: CLIP_benchmark's `--save_clf` files.
pub fn write_torch_tensor(path: &Path, data: &[f32], shape: &[usize]) -> std::io::Result<()> {
    let archive = "archive";
    let storage: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let members: Vec<(String, Vec<u8>)> = vec![
        (
            format!("{archive}/data.pkl"),
            tensor_pickle(data.len(), shape),
        ),
        (format!("{archive}/byteorder"), b"little".to_vec()),
        (format!("{archive}/data/0"), storage),
        (format!("{archive}/version"), b"3\n".to_vec()),
    ];
    write_atomic(path, &stored_zip(&members))
}

/// The pickle (protocol 2) `torch.save` writes for a contiguous f32 tensor on the CPU whose
/// storage is `data/0`: `_rebuild_tensor_v2(persistent storage, 0, size, stride, False,
/// OrderedDict())`.
fn tensor_pickle(numel: usize, shape: &[usize]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    let global = |p: &mut Vec<u8>, module: &str, name: &str| {
        p.push(b'c');
        p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    };
    let text = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: usize| {
        p.push(b'J');
        p.extend_from_slice(&(v as i32).to_le_bytes());
    };
    let ints = |p: &mut Vec<u8>, vs: &[usize]| {
        p.push(b'(');
        vs.iter().for_each(|&v| int(p, v));
        p.push(b't');
    };
    global(&mut p, "torch._utils", "_rebuild_tensor_v2");
    p.push(b'(');
    p.push(b'(');
    text(&mut p, "storage");
    global(&mut p, "torch", "FloatStorage");
    text(&mut p, "0");
    text(&mut p, "cpu");
    int(&mut p, numel);
    p.push(b't');
    p.push(b'Q');
    int(&mut p, 0);
    ints(&mut p, shape);
    let mut stride = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    ints(&mut p, &stride);
    p.push(0x89);
    global(&mut p, "collections", "OrderedDict");
    p.push(b')');
    p.push(b'R');
    p.push(b't');
    p.push(b'R');
    p.push(b'.');
    p
}

/// The byte table of a reflected CRC-32 with polynomial `poly` (reversed form).
pub fn crc_table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 { poly ^ (c >> 1) } else { c >> 1 };
        }
        *e = c;
    }
    t
}

/// `c` (pre- and post-inversion left to the caller) advanced over `data` with `table`.
pub fn crc_update(table: &[u32; 256], c: u32, data: &[u8]) -> u32 {
    data.iter().fold(c, |c, &b| {
        table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

/// CRC-32 (IEEE, zip's).
fn crc32_ieee(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    !crc_update(TABLE.get_or_init(|| crc_table(0xEDB8_8320)), !0, bytes)
}

/// A zip archive of `members`, stored (not compressed), each member's data 64-byte aligned as
/// torch aligns its records (padding in the local header's extra field).
fn stored_zip(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let u16le = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
    let u32le = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
    for (name, data) in members {
        let offset = out.len() as u32;
        let crc = crc32_ieee(data);
        let header_end = out.len() + 30 + name.len();
        // Extra field: id 0x4246 ("FB"), length, zero padding to the alignment.
        let pad = (64 - (header_end + 4) % 64) % 64;
        u32le(&mut out, 0x0403_4b50);
        for x in [20u16, 0, 0, 0, 0x21] {
            u16le(&mut out, x);
        }
        u32le(&mut out, crc);
        u32le(&mut out, data.len() as u32);
        u32le(&mut out, data.len() as u32);
        u16le(&mut out, name.len() as u16);
        u16le(&mut out, (pad + 4) as u16);
        out.extend_from_slice(name.as_bytes());
        u16le(&mut out, 0x4246);
        u16le(&mut out, pad as u16);
        out.resize(out.len() + pad, 0);
        out.extend_from_slice(data);
        u32le(&mut central, 0x0201_4b50);
        for x in [20u16, 20, 0, 0, 0, 0x21] {
            u16le(&mut central, x);
        }
        u32le(&mut central, crc);
        u32le(&mut central, data.len() as u32);
        u32le(&mut central, data.len() as u32);
        u16le(&mut central, name.len() as u16);
        for x in [0u16, 0, 0, 0] {
            u16le(&mut central, x);
        }
        u32le(&mut central, 0);
        u32le(&mut central, offset);
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    u32le(&mut out, 0x0605_4b50);
    for x in [0u16, 0, members.len() as u16, members.len() as u16] {
        u16le(&mut out, x);
    }
    u32le(&mut out, central.len() as u32);
    u32le(&mut out, cd_offset);
    u16le(&mut out, 0);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn zip_crc32_check_value() {
        // CRC-32/ISO-HDLC's check value.
        assert_eq!(super::crc32_ieee(b"123456789"), 0xCBF4_3926);
    }

    #[cfg(unix)]
    #[test]
    fn a_bounded_child_reports_its_status_and_stderr_or_is_killed() {
        use super::run_bounded;
        use std::process::Command;
        use std::time::Duration;
        let (status, err) = run_bounded(
            Command::new("sh").args(["-c", "echo out; echo probe failed >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .unwrap()
        .unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(err.trim(), "probe failed");
        // A child past its limit is killed (exec: the sleep itself, no orphan left).
        let hung = run_bounded(
            Command::new("sh").args(["-c", "exec sleep 30"]),
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(hung.is_none());
        let missing = run_bounded(
            &mut Command::new("/nonexistent/probe"),
            Duration::from_secs(1),
        );
        assert!(missing.is_err());
    }

    #[cfg(unix)]
    #[test]
    fn path_text_round_trips_any_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let decode = |s: &str| super::path_bytes(s).unwrap();
        let names: [&[u8]; 5] = [
            b"plain/cat.jpg",
            b"100%/caf\xc3\xa9.jpg",
            b"latin1/caf\xe9.jpg",
            b"\xff\xfe%41\x80.png",
            b"trunc\xe2\x82",
        ];
        for n in names {
            let p = std::path::Path::new(std::ffi::OsStr::from_bytes(n));
            let t = super::path_text(p);
            assert_eq!(decode(&t), n, "{t}");
        }
        assert_eq!(super::path_text(std::path::Path::new("a/b.jpg")), "a/b.jpg");
        assert_eq!(
            super::path_text(std::path::Path::new(std::ffi::OsStr::from_bytes(
                b"caf\xe9%.jpg"
            ))),
            "caf%E9%25.jpg"
        );
    }

    /// Outputs named by a FIFO or a symlink: the FIFO gets the bytes and stays a FIFO (as
    /// `/dev/null` must stay a device), the symlink stays a link to the new contents.
    #[cfg(unix)]
    #[test]
    fn atomic_writes_keep_special_files_and_links() {
        use std::os::unix::fs::FileTypeExt;
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(&fifo).unwrap())
        };
        super::write_atomic(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());

        let real = d.path().join("real.json");
        std::fs::write(&real, b"old").unwrap();
        let link = d.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        super::write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // A plain path: created, then replaced.
        let plain = d.path().join("plain.json");
        super::write_atomic(&plain, b"1").unwrap();
        super::write_atomic(&plain, b"2").unwrap();
        assert_eq!(std::fs::read(&plain).unwrap(), b"2");
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn nearest_names() {
        assert_eq!(
            super::nearest("vit-b-32", &["ViT-B-32", "RN50"]),
            Some("ViT-B-32")
        );
        assert_eq!(super::nearest("banana", &["ViT-B-32", "RN50"]), None);
    }

    #[test]
    fn a_lock_of_a_process_that_is_gone_is_stale() {
        let me = super::lock_owner();
        assert!(!super::lock_is_stale(&me));
        // A child that has exited and been reaped no longer runs.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let host = me.split_once('@').unwrap().1;
        assert!(super::lock_is_stale(&format!("{pid}@{host}")));
        assert!(!super::lock_is_stale(&format!("{pid}@another-host")));
        assert!(!super::lock_is_stale(""));
    }
}
