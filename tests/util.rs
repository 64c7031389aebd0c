//! Helpers shared by the test modules: fixtures, the binary, feature comparisons, zip files.
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// A snapshot folder of the hub repo `repo` (`ORG/NAME`) in the hub cache `hub`, created:
/// where open_clip downloads it.
pub fn hub_snapshot(hub: &std::path::Path, repo: &str) -> PathBuf {
    let p = hub
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots/r");
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu).unwrap()
}

/// Loading a fixture checkpoint on the CPU in fp32 with the tiny models' config.
pub fn load_options(file: &str, engine: pyramidclip::EngineChoice) -> pyramidclip::LoadOptions {
    pyramidclip::LoadOptions {
        checkpoint: fixtures().join(file),
        visual_model: None,
        model_config: Some(fixtures().join("tiny-models.yml")),
        device: Device::Cpu,
        precision: pyramidclip::device::Precision::Fp32,
        engine,
        native: Default::default(),
        tokenizer: None,
        hub: Default::default(),
    }
}

/// The reference's normalised pixels, rebuilt from the 8-bit levels stored in the fixture
/// through the crate's one normalisation.
pub fn expected_pixels(res: usize) -> Tensor {
    let u8s = &expected()[&format!("pixels_{res}_u8")];
    let n = u8s.dim(0).unwrap();
    let levels: Vec<u8> = u8s.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    pyramidclip::preprocess::normalize_batch(levels, n, res, &Device::Cpu, Default::default())
        .unwrap()
}

pub fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2().unwrap()
}

/// Per-row cosine > 0.99999 and max |diff| < 1e-4 x the row's max magnitude.
pub fn assert_rows_close(ours: &Tensor, theirs: &Tensor, what: &str) {
    let (a, b) = (rows(ours), rows(theirs));
    assert_eq!(a.len(), b.len(), "{what}: row count");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.len(), y.len(), "{what}: row {i} width");
        let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
        let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (nx * ny);
        let maxmag = y.iter().fold(0f32, |m, v| m.max(v.abs()));
        let maxdiff = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(cos > 0.99999, "{what}: row {i} cosine {cos}");
        assert!(
            maxdiff < 1e-4 * maxmag,
            "{what}: row {i} max diff {maxdiff} vs magnitude {maxmag}"
        );
    }
}

/// The cosine of each row of `ours` with the same row of `theirs`.
pub fn row_cosines(ours: &Tensor, theirs: &Tensor, what: &str) -> Vec<f64> {
    let (a, b) = (rows(ours), rows(theirs));
    assert_eq!(a.len(), b.len(), "{what}: row count");
    a.iter()
        .zip(&b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "{what}: row width");
            let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .collect()
}

/// Per-row cosine of at least `min` (reduced-precision checks).
pub fn assert_rows_cosine(ours: &Tensor, theirs: &Tensor, min: f64, what: &str) {
    for (i, cos) in row_cosines(ours, theirs, what).into_iter().enumerate() {
        assert!(cos >= min, "{what}: row {i} cosine {cos} < {min}");
    }
}

pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_pyramidclip"))
}

/// Builds a tar archive (regular members) from (name, bytes) pairs.
pub fn write_tar(path: &std::path::Path, members: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

/// Builds a zip archive (stored members) from (name, bytes) pairs.
pub fn write_zip(path: &std::path::Path, members: &[(String, Vec<u8>)]) {
    write_zip_deflating(path, members, &[]);
}

/// A zip whose members named in `deflated` are deflated (method 8), the others stored.
pub fn write_zip_deflating(
    path: &std::path::Path,
    members: &[(String, Vec<u8>)],
    deflated: &[&str],
) {
    use std::io::Write;
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let method: u8 = if deflated.contains(&name.as_str()) {
            8
        } else {
            0
        };
        let stored = if method == 8 {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        } else {
            data.clone()
        };
        let offset = out.len() as u32;
        let mut h = Vec::new();
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&[20, 0, 0, 0, method, 0, 0, 0, 0, 0]);
        h.extend_from_slice(&crc.sum().to_le_bytes());
        h.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        h.extend_from_slice(&(data.len() as u32).to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&stored);
        let mut c = Vec::new();
        c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        c.extend_from_slice(&[20, 0, 20, 0, 0, 0, method, 0, 0, 0, 0, 0]);
        c.extend_from_slice(&crc.sum().to_le_bytes());
        c.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(&(name.len() as u16).to_le_bytes());
        c.extend_from_slice(&[0; 12]);
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(name.as_bytes());
        central.extend_from_slice(&c);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    std::fs::write(path, out).unwrap();
}

/// Reads every member of a zip through the crate's own central-directory reader.
pub fn read_zip(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    pyramidclip::checkpoint::zip::members(&f, len)
        .unwrap()
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                pyramidclip::checkpoint::zip::read_member(&f, m, len, 1 << 30).unwrap(),
            )
        })
        .collect()
}

/// Images done according to the progress files in `dir` (0 when there is none yet).
pub fn progress_done(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|v| v["done"].as_u64())
        .max()
        .unwrap_or(0) as usize
}

/// Spawns `cmd` (stderr piped), waits until the progress files in `dir` count more than
/// `after` images done, sends it `signal`, and returns its output and the progress it left.
#[cfg(unix)]
pub fn interrupt_after(
    mut cmd: std::process::Command,
    dir: &std::path::Path,
    after: usize,
    signal: i32,
) -> (std::process::Output, usize) {
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let t = std::time::Instant::now();
    while progress_done(dir) <= after {
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        assert!(t.elapsed().as_secs() < 120, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // Safety: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    (child.wait_with_output().unwrap(), progress_done(dir))
}

/// A predictions CSV's rows after its header, split at commas (our CSVs quote nothing).
pub fn csv_rows(csv: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}
