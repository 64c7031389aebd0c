//! `embed`, `predict`, `tokenize`, `preprocess`, `inspect` and `convert`.

use super::{exit, fail, Log};
use crate::checkpoint::{self, Checkpoint};
use crate::cli::{
    ConvertArgs, EmbedArgs, InspectArgs, ModelArgs, PredictArgs, PreprocessArgs, TokenizeArgs,
};
use crate::device;
use crate::models::Registry;
use crate::tokenizer::Tokenizer;
use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn registry(file: Option<&Path>) -> anyhow::Result<Registry> {
    Registry::load(file).map_err(|m| fail(exit::USAGE, m))
}

/// The registry, with `--visual-model` (if given) checked against it.
pub fn registry_for(file: Option<&Path>, visual_model: Option<&str>) -> anyhow::Result<Registry> {
    let reg = registry(file)?;
    if let Some(name) = visual_model {
        reg.get(name)
            .map_err(|m| fail(exit::USAGE, format!("--visual-model: {m}")))?;
    }
    Ok(reg)
}

pub fn load(m: &ModelArgs, log: Log) -> anyhow::Result<(checkpoint::LoadedModel, Device)> {
    let reg = registry_for(m.model_config.as_deref(), m.visual_model.as_deref())?;
    let device = device::select(&m.device, None)?;
    let (dtype, warning) = device::compute_dtype(m.precision, &device);
    if let Some(w) = warning {
        log.warn(w);
    }
    let loaded = checkpoint::load_model(
        &m.checkpoint,
        &reg,
        m.visual_model.as_deref(),
        dtype,
        &device,
    )?;
    Ok((loaded, device))
}

/// Decoded, normalised pixels `[N, 3, n, n]` in input order (parallel decode).
pub fn pixels(paths: &[PathBuf], n: usize) -> anyhow::Result<Vec<f32>> {
    let crops: Vec<Result<Vec<u8>, crate::preprocess::Error>> = paths
        .par_iter()
        .map(|p| crate::preprocess::crop_u8(p, n))
        .collect();
    let mut out = Vec::with_capacity(paths.len() * 3 * n * n);
    for c in crops {
        out.extend(crate::preprocess::normalize(&c?, n));
    }
    Ok(out)
}

fn read_lines(path: &Path, flag: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(
            exit::INPUT,
            format!("cannot read {flag} {}: {e}", path.display()),
        )
    })?;
    Ok(crate::dataset::lines(&text))
}

fn features(
    m: &checkpoint::LoadedModel,
    device: &Device,
    images: &[PathBuf],
    texts: &[String],
    raw: bool,
    batch: usize,
) -> anyhow::Result<(Option<Tensor>, Option<Tensor>)> {
    let n = m.config.image_resolution;
    let batch = batch.max(1);
    let dtype = m.model_dtype();
    let mut img = None;
    if !images.is_empty() {
        let mut parts = Vec::new();
        for chunk in images.chunks(batch) {
            let px = Tensor::from_vec(pixels(chunk, n)?, (chunk.len(), 3, n, n), device)?
                .to_dtype(dtype)?;
            let f = if raw {
                m.model.encode_image(&px)?
            } else {
                m.model.encode_image_normalized(&px)?
            };
            parts.push(f.to_dtype(DType::F32)?);
        }
        img = Some(Tensor::cat(&parts, 0)?);
    }
    let mut txt = None;
    if !texts.is_empty() {
        let ctx = m.config.context_length;
        let mut parts = Vec::new();
        for chunk in texts.chunks(batch) {
            let mut ids = Vec::with_capacity(chunk.len() * ctx);
            for t in chunk {
                ids.extend(Tokenizer::global().tokenize(t, ctx, true)?);
            }
            let tok = Tensor::from_vec(ids, (chunk.len(), ctx), device)?;
            let f = if raw {
                m.model.encode_text(&tok)?
            } else {
                m.model.encode_text_normalized(&tok)?
            };
            parts.push(f.to_dtype(DType::F32)?);
        }
        txt = Some(Tensor::cat(&parts, 0)?);
    }
    Ok((img, txt))
}

pub fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    let log = Log { quiet: false };
    let mut images = args.images.clone();
    if let Some(list) = &args.image_list {
        images.extend(
            read_lines(list, "--image-list")?
                .into_iter()
                .map(PathBuf::from),
        );
    }
    let mut texts = args.texts.clone();
    if let Some(f) = &args.texts_file {
        texts.extend(read_lines(f, "--texts-file")?);
    }
    if images.is_empty() && texts.is_empty() {
        return Err(fail(
            exit::USAGE,
            "nothing to embed: give --images/--image-list and/or --text/--texts-file",
        ));
    }
    let (m, device) = load(&args.model, log)?;
    let (img, txt) = features(&m, &device, &images, &texts, args.raw, args.batch_size)?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    if let Some(t) = img {
        tensors.push(("image_features".into(), t));
    }
    if let Some(t) = txt {
        tensors.push(("text_features".into(), t));
    }
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), m.name.clone());
    meta.insert("normalized".to_string(), (!args.raw).to_string());
    meta.insert(
        "images".to_string(),
        serde_json::to_string(
            &images
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
        )?,
    );
    meta.insert("texts".to_string(), serde_json::to_string(&texts)?);
    write_safetensors(&args.out, &tensors, Some(meta))
        .with_context(|| format!("cannot write --out {}", args.out.display()))?;
    log.info(format!(
        "wrote {} ({} images, {} texts)",
        args.out.display(),
        images.len(),
        texts.len()
    ));
    Ok(())
}

/// Writes f32/other tensors to a safetensors file atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: Option<HashMap<String, String>>,
) -> anyhow::Result<()> {
    let mut bufs = Vec::new();
    for (name, t) in tensors {
        let t = t.to_device(&Device::Cpu)?.contiguous()?;
        let (dt, bytes): (safetensors::Dtype, Vec<u8>) = match t.dtype() {
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
            other => {
                let t = t.to_dtype(DType::F32)?;
                let _ = other;
                (
                    safetensors::Dtype::F32,
                    t.flatten_all()?
                        .to_vec1::<f32>()?
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                )
            }
        };
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
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let bytes = safetensors::serialize(views, meta)?;
    crate::util::write_atomic(path, &bytes)?;
    Ok(())
}

pub fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let log = Log { quiet: args.json };
    let (m, device) = load(&args.model, log)?;
    let (img, txt) = features(&m, &device, &args.images, &args.texts, false, 32)?;
    let (img, txt) = (img.unwrap(), txt.unwrap());
    let cos: Vec<Vec<f32>> = img.matmul(&txt.t()?)?.to_vec2()?;
    let scale = m
        .checkpoint
        .shape("logit_scale")
        .and_then(|_| m.checkpoint.read_f32("logit_scale").ok())
        .and_then(|v| v.first().copied())
        .map(|v| v.exp())
        .unwrap_or(100.0);
    let probs: Vec<Vec<f32>> = cos
        .iter()
        .map(|row| {
            let mx = row.iter().fold(f32::MIN, |a, &b| a.max(b * scale));
            let e: Vec<f32> = row.iter().map(|&c| (c * scale - mx).exp()).collect();
            let s: f32 = e.iter().sum();
            e.into_iter().map(|v| v / s).collect()
        })
        .collect();
    if args.json {
        let out: Vec<serde_json::Value> = args
            .images
            .iter()
            .zip(cos.iter().zip(&probs))
            .map(|(p, (c, pr))| {
                serde_json::json!({
                    "image": p.display().to_string(),
                    "texts": args.texts.iter().zip(c.iter().zip(pr)).map(|(t, (c, p))| serde_json::json!({"text": t, "cosine": c, "prob": p})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"logit_scale": scale, "results": out})
            )?
        );
        return Ok(());
    }
    for (p, (c, pr)) in args.images.iter().zip(cos.iter().zip(&probs)) {
        println!("{}", p.display());
        let best = pr
            .iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > pr[b] { i } else { b });
        for (i, t) in args.texts.iter().enumerate() {
            let mark = if i == best { "*" } else { " " };
            println!("  {mark} {:>7.2}%  cos {:+.4}  {t}", pr[i] * 100.0, c[i]);
        }
    }
    Ok(())
}

fn parse_json_line(line: &str, path: &Path, no: usize) -> anyhow::Result<String> {
    // Lone surrogates (written as \ud800 escapes) are not valid JSON for serde; the reference
    // (Python) keeps them and ftfy turns each into U+FFFD, so do that up front.
    let fixed = replace_lone_surrogates(line);
    let v: serde_json::Value = serde_json::from_str(&fixed).map_err(|e| {
        fail(
            exit::INPUT,
            format!("{} line {no}: not JSON: {e}", path.display()),
        )
    })?;
    match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Object(o) => o
            .get("text")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                fail(
                    exit::INPUT,
                    format!(
                        "{} line {no}: object has no \"text\" string",
                        path.display()
                    ),
                )
            }),
        _ => Err(fail(
            exit::INPUT,
            format!(
                "{} line {no}: expected a JSON string or an object with \"text\"",
                path.display()
            ),
        )),
    }
}

/// Replaces `\uD800`-`\uDFFF` escapes that do not form a valid pair with `\uFFFD`.
fn replace_lone_surrogates(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |i: usize| -> Option<u32> {
        if i + 6 <= b.len() && b[i] == b'\\' && (b[i + 1] == b'u') {
            u32::from_str_radix(std::str::from_utf8(&b[i + 2..i + 6]).ok()?, 16).ok()
        } else {
            None
        }
    };
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            // Count preceding backslashes: an escaped backslash is not an escape start.
            if let Some(u) = hex(i) {
                if (0xD800..0xDC00).contains(&u) {
                    if matches!(hex(i + 6), Some(l) if (0xDC00..0xE000).contains(&l)) {
                        i += 12;
                        continue;
                    }
                    out.push_str(&s[last..i]);
                    out.push_str("\\ufffd");
                    i += 6;
                    last = i;
                    continue;
                } else if (0xDC00..0xE000).contains(&u) {
                    out.push_str(&s[last..i]);
                    out.push_str("\\ufffd");
                    i += 6;
                    last = i;
                    continue;
                }
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    out.push_str(&s[last..]);
    out
}

pub fn tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
    let mut inputs = args.texts.clone();
    if let Some(p) = &args.jsonl {
        let text = std::fs::read_to_string(p).map_err(|e| {
            fail(
                exit::INPUT,
                format!("cannot read --jsonl {}: {e}", p.display()),
            )
        })?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            inputs.push(parse_json_line(line, p, i + 1)?);
        }
    }
    if inputs.is_empty() {
        return Err(fail(
            exit::USAGE,
            "nothing to tokenize: give TEXT arguments or --jsonl FILE",
        ));
    }
    let tok = Tokenizer::global();
    let rows: Vec<Result<Vec<i64>, crate::tokenizer::Error>> = inputs
        .par_iter()
        .map(|t| tok.tokenize(t, args.context_length, !args.no_truncate))
        .collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for r in rows {
        let row = r?;
        writeln!(out, "{}", serde_json::to_string(&row)?)?;
    }
    out.flush()?;
    Ok(())
}

pub fn preprocess(args: PreprocessArgs) -> anyhow::Result<()> {
    if args.resolution == 0 {
        return Err(fail(exit::USAGE, "--resolution must be positive"));
    }
    let n = args.resolution;
    let run = || pixels(&args.images, n);
    let px = match args.workers {
        Some(w) => rayon::ThreadPoolBuilder::new()
            .num_threads(w.max(1))
            .build()?
            .install(run)?,
        None => run()?,
    };
    let t = Tensor::from_vec(px, (args.images.len(), 3, n, n), &Device::Cpu)?;
    let mut meta = HashMap::new();
    meta.insert(
        "images".to_string(),
        serde_json::to_string(
            &args
                .images
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
        )?,
    );
    write_safetensors(&args.out, &[("pixels".to_string(), t)], Some(meta))
        .with_context(|| format!("cannot write --out {}", args.out.display()))?;
    Ok(())
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let reg = registry(args.model_config.as_deref())?;
    let ck = Checkpoint::open(&args.checkpoint)?;
    let arch = checkpoint::detect_config(&ck, &reg, None);
    let (name, desc, cfg) = match &arch {
        Ok(a) => (
            a.name.clone(),
            checkpoint::describe_arch(&a.config),
            Some(a.config.clone()),
        ),
        Err(e) => (None, format!("unrecognised: {e}"), None),
    };
    let unused = ck.unused_keys();
    if args.json {
        let v = serde_json::json!({
            "checkpoint": args.checkpoint.display().to_string(),
            "format": ck.format.name(),
            "architecture": name,
            "description": desc,
            "config": cfg,
            "epoch": ck.epoch,
            "parameters": ck.param_count(),
            "tensors": ck.entries.len(),
            "dtypes": ck.stored_dtypes(),
            "unused_keys": unused,
            "file_bytes": ck.file_len(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("checkpoint:   {}", args.checkpoint.display());
        println!("format:       {}", ck.format.name());
        println!(
            "architecture: {}",
            name.as_deref()
                .unwrap_or("unknown (pass --model-config with its config)")
        );
        println!("detected:     {desc}");
        println!(
            "epoch:        {}",
            ck.epoch
                .map(|e| e.to_string())
                .unwrap_or_else(|| "-".into())
        );
        println!(
            "parameters:   {} ({} tensors)",
            ck.param_count(),
            ck.entries.len()
        );
        println!("dtypes:       {}", ck.stored_dtypes().join(", "));
        let shown: Vec<&str> = unused
            .iter()
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .copied()
            .collect();
        let tracked = unused.len() - shown.len();
        let mut parts: Vec<String> = shown.iter().map(|s| s.to_string()).collect();
        if tracked > 0 {
            parts.push(format!("{tracked} x num_batches_tracked"));
        }
        println!(
            "unused keys:  {}",
            if unused.is_empty() {
                "-".to_string()
            } else {
                parts.join(", ")
            }
        );
    }
    Ok(())
}

pub fn convert(args: ConvertArgs) -> anyhow::Result<()> {
    let dtype = match args.dtype.as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => {
            return Err(fail(
                exit::USAGE,
                format!("--dtype {other}: expected f32, f16 or bf16"),
            ))
        }
    };
    let reg = registry(args.model_config.as_deref())?;
    if args.random_weights {
        let name = args
            .visual_model
            .as_deref()
            .ok_or_else(|| fail(exit::USAGE, "--random-weights needs --visual-model"))?;
        let cfg = reg.get(name).map_err(|m| fail(exit::USAGE, m))?.clone();
        let tensors = super::bench::random_state_dict(&cfg, args.seed)?;
        let tensors: Vec<(String, Tensor)> = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(dtype)?)))
            .collect::<candle_core::Result<_>>()?;
        let mut meta = HashMap::new();
        meta.insert("architecture".to_string(), name.to_string());
        meta.insert("config".to_string(), serde_json::to_string(&cfg)?);
        return write_safetensors(&args.out, &tensors, Some(meta));
    }
    let ck = Checkpoint::open(&args.checkpoint)?;
    let arch = checkpoint::detect_config(&ck, &reg, args.visual_model.as_deref())?;
    let name = arch.name.clone().unwrap_or_else(|| "custom".into());
    let mut tensors = Vec::new();
    for k in ck.keys() {
        let t = ck.tensor(k, DType::F32, &Device::Cpu)?;
        let t = if ck.entries[k].dtype.name().starts_with('i')
            || ck.entries[k].dtype.name() == "u8"
            || ck.entries[k].dtype.name() == "bool"
        {
            t.to_dtype(DType::I64)?
        } else {
            t.to_dtype(dtype)?
        };
        tensors.push((k.clone(), t));
    }
    let mut meta = HashMap::new();
    meta.insert("architecture".to_string(), name.clone());
    meta.insert("config".to_string(), serde_json::to_string(&arch.config)?);
    if let Some(e) = ck.epoch {
        meta.insert("epoch".to_string(), e.to_string());
    }
    write_safetensors(&args.out, &tensors, Some(meta))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({name}, {} tensors, {})",
        args.out.display(),
        tensors.len(),
        args.dtype
    );
    Ok(())
}
