//! Features of explicit lists of images and texts (`embed`, `predict`, `retrieval`,
//! `linear-probe`): decoded in parallel, encoded in batches, returned in input order as f32.
//! [`stream_images`] decodes ahead on a worker pool (long lists), skips unreadable images when
//! asked and stops on SIGINT/SIGTERM.

use crate::loader::LoadedModel;
use candle_core::{DType, Tensor};
use rayon::prelude::*;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] crate::preprocess::Error),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Data(#[from] crate::data::Error),
    #[error("interrupted after {done} of {total} images; nothing was written")]
    Interrupted { done: usize, total: usize },
}

/// How [`stream_images`] runs.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    pub batch_size: usize,
    pub workers: usize,
    pub skip_unreadable: bool,
    /// Features before L2 normalisation.
    pub raw: bool,
}

/// Image features of a long list, decoded ahead of the encoder.
pub struct Encoded {
    /// `[kept.len(), embed_dim]` f32, on the CPU.
    pub features: Tensor,
    /// Positions (in the input list) of the rows of `features`, increasing.
    pub kept: Vec<usize>,
    /// Positions left out (with `skip_unreadable`) and why.
    pub skipped: Vec<(usize, String)>,
}

/// Encodes `paths` in batches while worker threads decode the next ones; `progress(done)` after
/// each batch.
pub fn stream_images(
    m: &LoadedModel,
    paths: &[PathBuf],
    opts: StreamOptions,
    progress: impl FnMut(usize),
) -> Result<Encoded, Error> {
    let samples: Vec<crate::data::Sample> = paths
        .iter()
        .map(|p| crate::data::Sample::file(p.clone(), 0))
        .collect();
    stream_samples(m, samples, opts, progress)
}

/// [`stream_images`] of samples (files or webdataset members).
pub fn stream_samples(
    m: &LoadedModel,
    samples: Vec<crate::data::Sample>,
    opts: StreamOptions,
    progress: impl FnMut(usize),
) -> Result<Encoded, Error> {
    stream_samples_with(m, samples, opts, progress, |px, _| {
        Ok(if opts.raw {
            m.model.encode_image(px)?
        } else {
            m.model.encode_image_normalized(px)?
        })
    })
}

/// [`stream_samples`] with each batch's features computed by `encode(pixels, positions)`
/// (the batch's normalised pixels and its samples' places in `samples`): what a caller that
/// needs more of each batch than its features (CoCa's generative loss) hooks in.
pub fn stream_samples_with(
    m: &LoadedModel,
    samples: Vec<crate::data::Sample>,
    opts: StreamOptions,
    mut progress: impl FnMut(usize),
    mut encode: impl FnMut(&Tensor, &[usize]) -> Result<Tensor, Error>,
) -> Result<Encoded, Error> {
    use std::sync::atomic::Ordering;
    let n = m.config.image_resolution;
    let total = samples.len();
    let stop = crate::report::interrupted();
    let rx = crate::data::stream(
        std::sync::Arc::new(samples),
        (0..total).collect(),
        crate::data::DecodeOptions {
            resolution: n,
            resize: m.resize,
            batch_size: opts.batch_size,
            workers: opts.workers,
            skip_unreadable: opts.skip_unreadable,
        },
        stop.clone(),
    );
    let (mut parts, mut kept, mut skipped, mut done) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for msg in rx {
        let batch = msg?;
        skipped.extend(batch.skipped.iter().cloned());
        let b = batch.indices.len();
        if b > 0 {
            let px = crate::preprocess::normalize_batch(batch.crops, b, n, &m.device, m.normalize)?;
            let f = encode(&px, &batch.indices)?;
            parts.push(
                f.to_dtype(DType::F32)?
                    .to_device(&candle_core::Device::Cpu)?,
            );
            kept.extend(batch.indices);
        }
        done += b + batch.skipped.len();
        progress(done);
        if stop.load(Ordering::SeqCst) {
            return Err(Error::Interrupted { done, total });
        }
    }
    if stop.load(Ordering::SeqCst) {
        return Err(Error::Interrupted { done, total });
    }
    let features = if parts.is_empty() {
        Tensor::zeros(
            (0, m.config.embed_dim),
            DType::F32,
            &candle_core::Device::Cpu,
        )?
    } else {
        Tensor::cat(&parts, 0)?
    };
    Ok(Encoded {
        features,
        kept,
        skipped,
    })
}

/// Image features `[N, embed_dim]`, L2-normalised unless `raw`.
pub fn images(
    m: &LoadedModel,
    paths: &[PathBuf],
    batch: usize,
    raw: bool,
) -> Result<Tensor, Error> {
    let n = m.config.image_resolution;
    let mut parts = Vec::new();
    for chunk in paths.chunks(batch.max(1)) {
        let crops: Vec<Result<Vec<u8>, crate::preprocess::Error>> = chunk
            .par_iter()
            .map(|p| crate::preprocess::crop_u8(p, n, m.resize))
            .collect();
        let mut bytes = Vec::with_capacity(chunk.len() * 3 * n * n);
        for c in crops {
            bytes.extend(c?);
        }
        let px = crate::preprocess::normalize_batch(bytes, chunk.len(), n, &m.device, m.normalize)?;
        let f = if raw {
            m.model.encode_image(&px)?
        } else {
            m.model.encode_image_normalized(&px)?
        };
        parts.push(f.to_dtype(DType::F32)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Text features `[N, embed_dim]`, L2-normalised unless `raw`.
pub fn texts(m: &LoadedModel, texts: &[String], batch: usize, raw: bool) -> Result<Tensor, Error> {
    texts_with_progress(m, texts, batch, raw, |_| {})
}

/// [`texts`], calling `progress(done)` after each batch. Every text is tokenized first, so
/// that [`token_rows`] orders the whole list at once (a batch then holds one template's
/// prompts however long the list); the ids (77 x 8 bytes a text) take a third of the memory
/// of the features that are kept anyway.
pub fn texts_with_progress(
    m: &LoadedModel,
    texts: &[String],
    batch: usize,
    raw: bool,
    progress: impl FnMut(usize),
) -> Result<Tensor, Error> {
    let ctx = m.config.context_length;
    let mut ids = Vec::with_capacity(texts.len() * ctx);
    for t in texts {
        ids.extend(m.tokenizer.tokenize(t, ctx, true)?);
    }
    Ok(token_rows(m, &ids, ctx, batch, raw, progress)?)
}

/// Features `[N, embed_dim]` f32 of `N` prompts of `ctx` token ids each, in their order,
/// encoded `batch` at a time (L2-normalised unless `raw`); `progress(done)` after each batch.
/// A CLIP-family model takes the prompts in order of their end-of-text position (longest
/// first), so a batch holds prompts of about one length and its text tower stops at the
/// longest (`models::text::clip_span`): ImageNet's 80,000 prompts then average ~10 positions
/// of 77 against ~13 in their own order. Under the native engine, prompts of one length (any
/// length for PyramidCLIP, whose tower runs all 77 positions) are further sorted by their
/// tokens, so a batch holds one template's classes and computes the template's words before
/// the class name once (`native::transformer::Transformer::forward_shared`). A prompt's
/// features do not depend on its batch.
pub fn token_rows(
    m: &LoadedModel,
    ids: &[i64],
    ctx: usize,
    batch: usize,
    raw: bool,
    mut progress: impl FnMut(usize),
) -> candle_core::Result<Tensor> {
    let n = ids.len().checked_div(ctx).unwrap_or(0);
    let row = |i: usize| &ids[i * ctx..(i + 1) * ctx];
    let mut order: Vec<usize> = (0..n).collect();
    let clip = m.config.family.clip_layout();
    let eos = m.config.text_eos_id().map(i64::from);
    let span = |i: usize| std::cmp::Reverse(crate::models::text::pool_position(row(i), eos));
    if m.plan.engine == crate::engine::Engine::Native {
        order.sort_by_cached_key(|&i| (clip.then(|| span(i)), row(i)));
    } else if clip {
        // Longest first: the progress bar's rate starts at its slowest (an ETA that errs
        // long), and the largest batch is the first.
        order.sort_by_key(|&i| span(i));
    }
    let mut parts = Vec::new();
    let mut done = 0;
    for chunk in order.chunks(batch.max(1)) {
        let rows: Vec<i64> = chunk.iter().flat_map(|&i| row(i).iter().copied()).collect();
        let tok = Tensor::from_vec(rows, (chunk.len(), ctx), &m.device)?;
        let f = if raw {
            m.model.encode_text(&tok)?
        } else {
            m.model.encode_text_normalized(&tok)?
        };
        parts.push(f.to_dtype(DType::F32)?);
        done += chunk.len();
        progress(done);
    }
    if parts.is_empty() {
        return Tensor::zeros((0, m.config.embed_dim), DType::F32, &m.device);
    }
    let all = Tensor::cat(&parts, 0)?;
    if order.iter().enumerate().all(|(j, &i)| i == j) {
        return Ok(all);
    }
    // Back to the input order: input row i was encoded as row j.
    let mut at = vec![0u32; n];
    for (j, &i) in order.iter().enumerate() {
        at[i] = j as u32;
    }
    all.index_select(&Tensor::from_vec(at, n, all.device())?, 0)
}

/// Image features on disk, one safetensors file per key (checkpoint, architecture, what
/// computes them, the image list with sizes and times, how they were streamed).
pub struct FeatureCache {
    pub dir: PathBuf,
}

impl FeatureCache {
    /// The key of `samples`' features: the model, how they are computed, and each file's (or
    /// shard member's) name, size and modification time.
    pub fn key(
        m: &LoadedModel,
        checkpoint_sha: &str,
        samples: &[crate::data::Sample],
        opts: StreamOptions,
    ) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let cfg = serde_json::to_string(&m.config).unwrap_or_default();
        let compute = format!(
            "{} {} {} raw={} skip={}{}{}",
            m.plan.engine.name(),
            m.plan.precision.name(),
            crate::engine::dtype_name(m.plan.dtype),
            opts.raw,
            opts.skip_unreadable,
            if m.normalize == crate::preprocess::Normalize::default() {
                String::new()
            } else {
                format!(" normalize={:?}", m.normalize)
            },
            // Keyed as before for bicubic, so existing caches stay valid.
            match (m.resize.mode, m.resize.interpolation) {
                (
                    crate::preprocess::ResizeMode::Shortest,
                    crate::preprocess::Interpolation::Bicubic,
                ) => {
                    String::new()
                }
                (mode, crate::preprocess::Interpolation::Bicubic) => {
                    format!(" resize={}", mode.name())
                }
                (mode, i) => format!(" resize={} interpolation={}", mode.name(), i.name()),
            }
        );
        for part in [checkpoint_sha, &m.name, &cfg, &compute] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        h.update((samples.len() as u64).to_le_bytes());
        // Size and modification time (nothing for a path that cannot be read).
        let stamp = |p: &std::path::Path| {
            std::fs::metadata(p).ok().map(|md| {
                let t = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                (md.len(), t)
            })
        };
        let put = |h: &mut Sha256, st: Option<(u64, u128)>| {
            if let Some((len, t)) = st {
                h.update(len.to_le_bytes());
                h.update(t.to_le_bytes());
            }
        };
        // A shard's stamp, read once for its run of members.
        let mut shard: Option<(&std::path::Path, Option<(u64, u128)>)> = None;
        for s in samples {
            h.update(s.name().as_bytes());
            h.update([0u8]);
            // How the file is decoded (webdataset's and torchvision's RGB conversion first, ...).
            if let Some(tag) = s.decoding_tag() {
                h.update(tag.as_bytes());
                h.update([0u8]);
            }
            match &s.member {
                None => put(&mut h, stamp(&s.path)),
                // A member's path is not a file: its place in the shard, and the shard's stamp.
                Some(mb) => {
                    h.update(mb.offset.to_le_bytes());
                    h.update(mb.len.to_le_bytes());
                    let st = match shard {
                        Some((p, st)) if p == mb.tar.as_path() => st,
                        _ => stamp(&mb.tar),
                    };
                    shard = Some((mb.tar.as_path(), st));
                    put(&mut h, st);
                }
            }
        }
        format!("{:x}", h.finalize())
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("features-{key}.safetensors"))
    }

    /// The cached features of `key`, when a complete file is there.
    pub fn load(&self, key: &str) -> Option<Encoded> {
        let p = self.path(key);
        let data = std::fs::read(&p).ok()?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&data).ok()?;
        let skipped: Vec<(usize, String)> = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("skipped"))
            .and_then(|s| serde_json::from_str(s).ok())?;
        let t = candle_core::safetensors::load_buffer(&data, &candle_core::Device::Cpu).ok()?;
        let features = t.get("features")?.to_dtype(DType::F32).ok()?;
        let kept: Vec<i64> = t.get("kept")?.to_vec1().ok()?;
        Some(Encoded {
            features,
            kept: kept.into_iter().map(|k| k as usize).collect(),
            skipped,
        })
    }

    /// Writes `enc` under `key` (atomically), with `meta` describing what computed it.
    pub fn store(
        &self,
        key: &str,
        enc: &Encoded,
        mut meta: std::collections::HashMap<String, String>,
    ) -> std::io::Result<PathBuf> {
        let p = self.path(key);
        std::fs::create_dir_all(&self.dir)?;
        let io = |e: candle_core::Error| std::io::Error::other(e.to_string());
        let kept: Vec<i64> = enc.kept.iter().map(|&k| k as i64).collect();
        let n = kept.len();
        let kept = Tensor::from_vec(kept, n, &candle_core::Device::Cpu).map_err(io)?;
        meta.insert(
            "skipped".into(),
            serde_json::to_string(&enc.skipped).unwrap_or_else(|_| "[]".into()),
        );
        crate::util::write_safetensors(
            &p,
            &[
                ("features".to_string(), enc.features.clone()),
                ("kept".to_string(), kept),
            ],
            Some(meta),
        )?;
        Ok(p)
    }
}
