//! Zero-shot classification (reference §8): class vectors from prompt templates, cached on
//! disk, and top-k scoring of image features against them.

use crate::loader::LoadedModel;
use crate::tokenizer::{TextTokenizer, CONTEXT_LENGTH};
use candle_core::{DType, Device, Tensor, D};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("text cache {path}: {msg}")]
    Cache { path: PathBuf, msg: String },
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::Error),
}

/// Prompt tokens for every (class, template) pair, class-major.
pub fn prompt_tokens(
    tok: &TextTokenizer,
    classnames: &[String],
    templates: &[String],
    context: usize,
) -> Result<Vec<i64>, Error> {
    let mut out = Vec::with_capacity(classnames.len() * templates.len() * context);
    for c in classnames {
        for t in templates {
            out.extend(tok.tokenize(&crate::data::fill(t, c), context, true)?);
        }
    }
    Ok(out)
}

/// The prompts' token context of `m`'s text tower.
fn context(m: &LoadedModel) -> usize {
    m.config
        .context_length
        .min(CONTEXT_LENGTH.max(m.config.context_length))
}

/// Class vectors: encode every filled template, L2-normalise each, average per class,
/// L2-normalise again. Returns `[classes, embed_dim]` f32. `progress(done, total)` is called
/// after each text batch.
pub fn class_vectors(
    m: &LoadedModel,
    classnames: &[String],
    templates: &[String],
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Tensor, Error> {
    let ctx = context(m);
    let tokens = prompt_tokens(&m.tokenizer, classnames, templates, ctx)?;
    let n = classnames.len() * templates.len();
    let all = crate::features::token_rows(m, &tokens, ctx, batch, false, |d| progress(d, n))?;
    let all = all.reshape((classnames.len(), templates.len(), ()))?;
    let mean = all.mean(1)?;
    Ok(crate::models::nn::l2_normalize(&mean)?)
}

/// Class vectors from each class's own prompts (any number per class, CuPL's form): each
/// prompt encoded and L2-normalised, averaged per class, normalised again, as
/// [`class_vectors`] does with templates.
pub fn class_vectors_per_class(
    m: &LoadedModel,
    prompts: &[Vec<String>],
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Tensor, Error> {
    let ctx = context(m);
    let tok = &m.tokenizer;
    let mut tokens = Vec::new();
    for p in prompts.iter().flatten() {
        tokens.extend(tok.tokenize(p, ctx, true)?);
    }
    let n: usize = prompts.iter().map(Vec::len).sum();
    let all = crate::features::token_rows(m, &tokens, ctx, batch, false, |d| progress(d, n))?;
    let mut rows = Vec::with_capacity(prompts.len());
    let mut at = 0;
    for p in prompts {
        rows.push(all.narrow(0, at, p.len())?.mean(0)?);
        at += p.len();
    }
    Ok(crate::models::nn::l2_normalize(&Tensor::stack(&rows, 0)?)?)
}

/// The cache key: checkpoint content, architecture, labels, templates, and what computes the
/// vectors (`compute`: engine and precision, e.g. `native fp32`).
pub fn cache_key(
    checkpoint_sha: &str,
    arch: &str,
    config_json: &str,
    classnames: &[String],
    templates: &[String],
    compute: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [checkpoint_sha, arch, config_json, compute] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    for list in [classnames, templates] {
        h.update((list.len() as u64).to_le_bytes());
        for s in list {
            h.update(s.as_bytes());
            h.update([0u8]);
        }
    }
    format!("{:x}", h.finalize())
}

/// What [`TextCache::try_lock`] found.
#[derive(Debug, PartialEq)]
pub enum CacheLock {
    Held,
    Busy,
    Unavailable(String),
}

/// Class vectors on disk, one safetensors file per cache key.
pub struct TextCache {
    pub dir: PathBuf,
}

impl TextCache {
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("classifier-{key}.safetensors"))
    }

    pub fn load(&self, key: &str, device: &Device) -> Option<Tensor> {
        let p = self.path(key);
        let t = candle_core::safetensors::load(&p, device).ok()?;
        t.get("classifier").cloned()
    }

    /// Writes the class vectors with `meta` (what computed them) in the file's metadata.
    pub fn store(
        &self,
        key: &str,
        classifier: &Tensor,
        meta: std::collections::HashMap<String, String>,
    ) -> Result<PathBuf, Error> {
        let p = self.path(key);
        let err = |msg: String| Error::Cache {
            path: p.clone(),
            msg,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| err(e.to_string()))?;
        let t = classifier.to_dtype(DType::F32)?;
        crate::util::write_safetensors(&p, &[("classifier".to_string(), t)], Some(meta))
            .map_err(|e| err(e.to_string()))?;
        Ok(p)
    }

    /// A lock so that concurrent ranks compute the class vectors once (create-exclusive):
    /// [`CacheLock::Held`] by this process, [`CacheLock::Busy`] when another one is computing,
    /// or the reason no lock can be made here (a folder that cannot be created or written),
    /// where waiting would never end.
    pub fn try_lock(&self, key: &str) -> CacheLock {
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            return CacheLock::Unavailable(e.to_string());
        }
        let lock = self.dir.join(format!("classifier-{key}.lock"));
        // A lock left by a killed process: its holder (PID@HOST) no longer runs on this host,
        // or (another host's) it is older than an hour.
        if let Ok(meta) = std::fs::metadata(&lock) {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600);
            let owner = std::fs::read_to_string(&lock).unwrap_or_default();
            if old || crate::util::lock_is_stale(&owner) {
                let _ = std::fs::remove_file(&lock);
            }
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(mut f) => {
                use std::io::Write;
                let _ = f.write_all(crate::util::lock_owner().as_bytes());
                CacheLock::Held
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => CacheLock::Busy,
            Err(e) => CacheLock::Unavailable(e.to_string()),
        }
    }

    pub fn unlock(&self, key: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("classifier-{key}.lock")));
    }
}

/// SHA-256 of a file, streamed.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Per row: the top class indices and their scores.
pub type TopK = (Vec<Vec<u32>>, Vec<Vec<f32>>);

/// Cosine scores `[B, C]` in f32 of `features [B, D]` (L2-normalised) against
/// `classifier_t [D, C]`, on the features' device.
pub fn logits(features: &Tensor, classifier_t: &Tensor) -> candle_core::Result<Tensor> {
    features.to_dtype(DType::F32)?.matmul(classifier_t)
}

/// Top-k of `features [B, D]` (L2-normalised) against `classifier [C, D]`: the logits matmul
/// and the top-k run on the features' device; only `[B, k]` indices and scores come back.
pub fn topk(features: &Tensor, classifier_t: &Tensor, k: usize) -> Result<TopK, Error> {
    let mut logits = logits(features, classifier_t)?;
    let c = logits.dim(D::Minus1)?;
    // The GPU sort works on rows of up to 1024 columns; larger label sets sort on the host.
    if !logits.device().is_cpu() && c > 1024 {
        logits = logits.to_device(&Device::Cpu)?;
    }
    let k = k.min(c);
    let idx = logits
        .arg_sort_last_dim(false)?
        .narrow(D::Minus1, 0, k)?
        .contiguous()?;
    let vals = logits.gather(&idx, D::Minus1)?;
    Ok((idx.to_vec2::<u32>()?, vals.to_vec2::<f32>()?))
}

/// Per-class counts: images, top-1 hits, top-5 hits.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassCount {
    pub n: u64,
    pub top1: u64,
    pub top5: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prediction {
    pub index: usize,
    pub path: String,
    pub label: usize,
    pub top: Vec<u32>,
    pub scores: Vec<f32>,
}

/// One image of a multi-label set: its positive classes and its scores for every class.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scored {
    pub index: usize,
    pub positives: Vec<u32>,
    pub scores: Vec<f32>,
}

/// What an evaluation (or one shard of it) has counted so far.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub per_class: Vec<ClassCount>,
    pub predictions: Vec<Prediction>,
    pub skipped: Vec<(usize, String, String)>,
    /// Images whose close decisions a reduced-precision run made in fp32.
    #[serde(default)]
    pub rechecked: u64,
    /// A multi-label set's images (VOC2007's), scored for the average precision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multilabel: Vec<Scored>,
}

impl Tally {
    pub fn new(classes: usize) -> Self {
        Self {
            per_class: vec![ClassCount::default(); classes],
            predictions: Vec::new(),
            skipped: Vec::new(),
            rechecked: 0,
            multilabel: Vec::new(),
        }
    }

    /// The mean of [`Tally::average_precision`] over the classes (CLIP_benchmark's
    /// `mean_average_precision`, a fraction), and the per-class values.
    pub fn mean_average_precision(&self, classes: usize) -> (f64, Vec<f64>) {
        let ap = self.average_precision(classes);
        (ap.iter().sum::<f64>() / ap.len().max(1) as f64, ap)
    }

    /// Each class's average precision over the multi-label images, as CLIP_benchmark's
    /// `average_precision_per_class` computes it: images ranked by the class's score (ties in
    /// image order), the precision at each positive summed and divided by the positives (by 1
    /// when there are none, giving 0).
    pub fn average_precision(&self, classes: usize) -> Vec<f64> {
        let mut order: Vec<&Scored> = self.multilabel.iter().collect();
        order.sort_by_key(|s| s.index);
        (0..classes)
            .map(|k| {
                let mut ranked: Vec<(f32, bool)> = order
                    .iter()
                    .map(|s| {
                        let score = s.scores.get(k).copied().unwrap_or(f32::NEG_INFINITY);
                        (score, s.positives.contains(&(k as u32)))
                    })
                    .collect();
                ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
                let (mut tp, mut sum) = (0u64, 0f64);
                for (rank, &(_, positive)) in ranked.iter().enumerate() {
                    if positive {
                        tp += 1;
                        sum += tp as f64 / (rank + 1) as f64;
                    }
                }
                sum / tp.max(1) as f64
            })
            .collect()
    }

    pub fn add(&mut self, p: Prediction) {
        self.count(&p);
        self.predictions.push(p);
    }

    /// Counts `p` without keeping it (its row is spooled to disk instead).
    pub fn count(&mut self, p: &Prediction) {
        let c = &mut self.per_class[p.label];
        c.n += 1;
        if p.top.first() == Some(&(p.label as u32)) {
            c.top1 += 1;
        }
        if p.top.iter().take(5).any(|&t| t as usize == p.label) {
            c.top5 += 1;
        }
    }

    pub fn images(&self) -> u64 {
        self.per_class.iter().map(|c| c.n).sum()
    }

    /// (top-1 %, top-5 %, mean per-class recall %) over the evaluated images.
    pub fn accuracy(&self) -> (f64, f64, f64) {
        let n = self.images().max(1) as f64;
        let t1 = self.per_class.iter().map(|c| c.top1).sum::<u64>() as f64 * 100.0 / n;
        let t5 = self.per_class.iter().map(|c| c.top5).sum::<u64>() as f64 * 100.0 / n;
        let present: Vec<&ClassCount> = self.per_class.iter().filter(|c| c.n > 0).collect();
        let mpc = if present.is_empty() {
            0.0
        } else {
            present
                .iter()
                .map(|c| c.top1 as f64 / c.n as f64)
                .sum::<f64>()
                * 100.0
                / present.len() as f64
        };
        (t1, t5, mpc)
    }

    /// Top-1, top-5 and mean per-class recall as fractions (CLIP_benchmark's `metrics`).
    pub fn fractions(&self) -> (f64, f64, f64) {
        let n = self.images().max(1) as f64;
        let t1 = self.per_class.iter().map(|c| c.top1).sum::<u64>() as f64 / n;
        let t5 = self.per_class.iter().map(|c| c.top5).sum::<u64>() as f64 / n;
        let present: Vec<&ClassCount> = self.per_class.iter().filter(|c| c.n > 0).collect();
        let mpc = present
            .iter()
            .map(|c| c.top1 as f64 / c.n as f64)
            .sum::<f64>()
            / present.len().max(1) as f64;
        (t1, t5, mpc)
    }

    /// Combines shards' tallies: counts add, predictions and skips in dataset order.
    pub fn merge(parts: Vec<Tally>) -> Tally {
        let classes = parts.iter().map(|p| p.per_class.len()).max().unwrap_or(0);
        let mut out = Tally::new(classes);
        for p in parts {
            for (o, c) in out.per_class.iter_mut().zip(&p.per_class) {
                o.n += c.n;
                o.top1 += c.top1;
                o.top5 += c.top5;
            }
            out.rechecked += p.rechecked;
            out.predictions.extend(p.predictions);
            out.skipped.extend(p.skipped);
            out.multilabel.extend(p.multilabel);
        }
        out.predictions.sort_by_key(|p| p.index);
        out.multilabel.sort_by_key(|s| s.index);
        out.skipped.sort_by_key(|s| s.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_is_clip_benchmarks() {
        // Scores and multi-hot targets given to CLIP_benchmark's `average_precision_per_class`
        // (torch 2.15), which returned [0.6984127, 0.5, 0.58888894, 0.0]: class 3 has no
        // positives.
        let scores = [
            [0.004f32, 0.106, 0.286, 0.027],
            [0.472, 0.06, 0.772, 0.744],
            [0.594, 0.888, 0.451, 0.799],
            [0.15, 0.401, 0.054, 0.459],
            [0.176, 0.949, 0.847, 0.875],
            [0.648, 0.215, 0.949, 0.012],
            [0.181, 0.188, 0.293, 0.6],
        ];
        let positives: [&[u32]; 7] = [&[0], &[0, 2], &[1], &[], &[2], &[0, 1], &[2]];
        let mut t = Tally::new(4);
        // Out of order, as shards merge them.
        for i in [3, 0, 6, 1, 5, 2, 4] {
            t.multilabel.push(Scored {
                index: i,
                positives: positives[i].to_vec(),
                scores: scores[i].to_vec(),
            });
        }
        let ap = t.average_precision(4);
        for (got, want) in ap.iter().zip([0.6984127, 0.5, 0.58888894, 0.0]) {
            assert!((got - want).abs() < 1e-6, "{ap:?}");
        }
        // The scores travel in progress files and shard partials.
        let back: Tally = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        let merged = Tally::merge(vec![t.clone(), Tally::new(4)]);
        assert_eq!(merged.average_precision(4), ap);
        assert!(merged
            .multilabel
            .windows(2)
            .all(|w| w[0].index < w[1].index));
    }

    #[test]
    fn topk_orders_scores() {
        let f = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        let c = Tensor::new(&[[0.9f32, 0.1], [0.2, 0.8], [0.5, 0.5]], &Device::Cpu).unwrap();
        let (i, s) = topk(&f, &c.t().unwrap(), 5).unwrap();
        assert_eq!(i, vec![vec![0, 2, 1], vec![1, 2, 0]]);
        assert!((s[0][0] - 0.9).abs() < 1e-6);
    }

    #[test]
    fn tally_counts() {
        let mut t = Tally::new(3);
        t.add(Prediction {
            index: 0,
            path: "a".into(),
            label: 1,
            top: vec![1, 0, 2],
            scores: vec![0.; 3],
        });
        t.add(Prediction {
            index: 1,
            path: "b".into(),
            label: 2,
            top: vec![1, 2, 0],
            scores: vec![0.; 3],
        });
        let (t1, t5, _) = t.accuracy();
        assert_eq!((t1, t5), (50.0, 100.0));
    }
}
