//! `pyramidclip eval` and `pyramidclip merge`.

use super::shard::{self, Shard};
use super::{exit, fail, interrupted, Log, Progress};
use crate::checkpoint::{self, LoadedModel};
use crate::cli::{EvalArgs, MergeArgs};
use crate::dataset::{self, Sample};
use crate::device::{self, Precision};
use crate::zeroshot::{self, Prediction, Tally, TextCache};
use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything about a run that its result depends on (shared by results and partials).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub dataset: String,
    pub model: String,
    pub checkpoint: String,
    pub checkpoint_sha256: String,
    pub precision: String,
    pub device: String,
    pub batch_size: usize,
    pub classnames: Vec<String>,
    pub num_samples: usize,
}

/// A shard's partial result, merged by `pyramidclip merge` (or rank 0 with `--merge`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partial {
    pub kind: String,
    pub version: String,
    pub shard_index: usize,
    pub num_shards: usize,
    pub info: RunInfo,
    pub tally: Tally,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProgressFile {
    fingerprint: String,
    done: usize,
    tally: Tally,
}

pub fn display_name(dataset: &str) -> String {
    match dataset {
        "imagenet" => "ImageNet".to_string(),
        other => other.to_string(),
    }
}

struct Plan {
    name: String,
    root: PathBuf,
    samples: Vec<Sample>,
    classnames: Vec<String>,
    templates: Vec<String>,
}

fn plan_dataset(args: &EvalArgs, name: &str, several: bool, log: Log) -> anyhow::Result<Plan> {
    let base = if several {
        args.test_data_path.join(name)
    } else {
        args.test_data_path.clone()
    };
    let root = dataset::resolve_root(&base);
    let folder = dataset::list(&root)?;
    for f in &folder.empty_folders {
        log.warn(format!(
            "class folder {} holds no images",
            root.join(f).display()
        ));
    }
    let custom = args.classnames.is_some();
    let classnames = match &args.classnames {
        Some(p) => dataset::read_classnames(p)?,
        None => dataset::builtin_classnames(name).ok_or_else(|| {
            let known = dataset::known_datasets();
            let hint = crate::util::nearest(name, &known).map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default();
            fail(
                exit::USAGE,
                format!("--test-dataset {name}: unknown dataset{hint}; known: {}; or give --classnames FILE", known.join(", ")),
            )
        })?,
    };
    let templates = match args.templates.as_deref() {
        None => dataset::imagenet_templates(),
        Some("dataset") => crate::datasets::templates(name).ok_or_else(|| {
            fail(
                exit::USAGE,
                format!("--templates dataset: no templates of its own for `{name}`"),
            )
        })?,
        Some(p) => dataset::read_templates(Path::new(p))?,
    };
    let labels = dataset::folder_labels(&folder.folders, name, &classnames, custom)?;
    let samples = folder
        .samples
        .into_iter()
        .map(|s| Sample {
            label: labels[s.label],
            path: s.path,
        })
        .collect();
    Ok(Plan {
        name: name.to_string(),
        root,
        samples,
        classnames,
        templates,
    })
}

struct Session {
    loaded: LoadedModel,
    device: Device,
    precision: Precision,
    sha: String,
    log: Log,
}

fn open_session(args: &EvalArgs, shard: &Shard, log: Log) -> anyhow::Result<Session> {
    let reg = super::misc::registry_for(
        args.model.model_config.as_deref(),
        args.model.visual_model.as_deref(),
    )?;
    let device = device::select(&args.model.device, shard.local_rank)?;
    let (dtype, warning) = device::compute_dtype(args.model.precision, &device);
    let precision = if dtype == DType::F32 {
        Precision::Fp32
    } else {
        args.model.precision
    };
    if let Some(w) = warning {
        log.warn(w);
    }
    let t = std::time::Instant::now();
    let loaded = checkpoint::load_model(
        &args.model.checkpoint,
        &reg,
        args.model.visual_model.as_deref(),
        dtype,
        &device,
    )?;
    log.info(format!(
        "loaded {} ({}) from {} in {:.1}s on {}",
        loaded.name,
        loaded.checkpoint.format.name(),
        args.model.checkpoint.display(),
        t.elapsed().as_secs_f64(),
        device::describe(&device)
    ));
    let sha = zeroshot::file_sha256(&args.model.checkpoint)
        .with_context(|| format!("cannot read checkpoint {}", args.model.checkpoint.display()))?;
    Ok(Session {
        loaded,
        device,
        precision,
        sha,
        log,
    })
}

fn classifier(s: &Session, plan: &Plan, args: &EvalArgs) -> anyhow::Result<Tensor> {
    let cfg_json = serde_json::to_string(&s.loaded.config)?;
    let key = zeroshot::cache_key(
        &s.sha,
        &s.loaded.name,
        &cfg_json,
        &plan.classnames,
        &plan.templates,
        s.precision.name(),
    );
    let cache = (!args.no_text_cache).then(|| TextCache {
        dir: args
            .text_cache
            .clone()
            .unwrap_or_else(zeroshot::default_cache_dir),
    });
    if let Some(c) = &cache {
        // Another rank may be computing the same vectors: wait for its file rather than redo it.
        let mut waited = false;
        loop {
            if let Some(t) = c.load(&key, &s.device) {
                s.log.info(format!(
                    "class vectors: loaded from cache {} (text encoding skipped)",
                    c.path(&key).display()
                ));
                return Ok(t);
            }
            if c.try_lock(&key) {
                break;
            }
            if !waited {
                s.log.info(
                    "class vectors: another process is computing them; waiting for its cache file",
                );
                waited = true;
            }
            if interrupted().load(Ordering::SeqCst) {
                return Err(fail(
                    exit::INTERRUPTED,
                    "interrupted while waiting for the class-vector cache",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    let n = plan.classnames.len() * plan.templates.len();
    s.log.info(format!(
        "class vectors: encoding {} prompts ({} classes x {} templates)",
        n,
        plan.classnames.len(),
        plan.templates.len()
    ));
    let t = std::time::Instant::now();
    let mut bar = Progress::new(s.log.quiet, n as u64, "text", "prompts");
    let stop = interrupted();
    let result = zeroshot::class_vectors(
        &s.loaded,
        &plan.classnames,
        &plan.templates,
        args.text_batch_size,
        &s.device,
        |d, _| {
            bar.set(d as u64);
            if stop.load(Ordering::SeqCst) {
                // Abandon quietly: nothing is written for a partial classifier.
            }
        },
    );
    bar.finish();
    let release = |c: &Option<TextCache>| {
        if let Some(c) = c {
            c.unlock(&key);
        }
    };
    let clf = match result {
        Ok(c) => c,
        Err(e) => {
            release(&cache);
            return Err(e.into());
        }
    };
    if stop.load(Ordering::SeqCst) {
        release(&cache);
        return Err(fail(
            exit::INTERRUPTED,
            "interrupted during text encoding; nothing was cached",
        ));
    }
    let secs = t.elapsed().as_secs_f64();
    s.log.info(format!(
        "class vectors: {n} prompts in {secs:.1}s ({:.1} prompts/s)",
        n as f64 / secs.max(1e-9)
    ));
    if let Some(c) = &cache {
        match c.store(&key, &clf) {
            Ok(p) => s
                .log
                .info(format!("class vectors: cached in {}", p.display())),
            Err(e) => s.log.warn(format!("could not cache class vectors: {e}")),
        }
        release(&cache);
    }
    Ok(clf)
}

/// Normalises `[B, 3, n, n]` u8 crops on their device, as ToTensor + Normalize do in f32.
pub fn normalize_batch(
    crops: Vec<u8>,
    b: usize,
    n: usize,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let t = Tensor::from_vec(crops, (b, 3, n, n), device)?.to_dtype(DType::F32)?;
    let mean = Tensor::from_slice(&crate::preprocess::MEAN, (1, 3, 1, 1), device)?;
    let std = Tensor::from_slice(&crate::preprocess::STD, (1, 3, 1, 1), device)?;
    let scale = Tensor::new(255f32, device)?;
    t.broadcast_div(&scale)?
        .broadcast_sub(&mean)?
        .broadcast_div(&std)?
        .to_dtype(dtype)
}

fn fingerprint(s: &Session, plan: &Plan, shard: &Shard, batch: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        s.sha.as_str(),
        s.loaded.name.as_str(),
        s.precision.name(),
        plan.name.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(plan.root.to_string_lossy().as_bytes());
    for smp in &plan.samples {
        h.update(smp.path.to_string_lossy().as_bytes());
        h.update((smp.label as u64).to_le_bytes());
    }
    for l in [&plan.classnames, &plan.templates] {
        for x in l {
            h.update(x.as_bytes());
            h.update([0]);
        }
    }
    h.update((shard.index as u64).to_le_bytes());
    h.update((shard.count as u64).to_le_bytes());
    h.update((batch as u64).to_le_bytes());
    format!("{:x}", h.finalize())
}

struct Outcome {
    tally: Tally,
    elapsed: f64,
}

/// A rough upper bound of the working memory one image needs in the image encoder (the
/// largest activations alive at once, with headroom), to refuse batches that cannot fit.
fn bytes_per_image(cfg: &crate::models::Config) -> u64 {
    let r = cfg.image_resolution as u64;
    match &cfg.vision_layers {
        crate::models::VisionLayers::Vit(_) => {
            let g = r / cfg.vision_patch_size.unwrap_or(1) as u64;
            let l = g * g + 1;
            let w = cfg.vision_width as u64;
            let heads = cfg.vision_heads() as u64;
            4 * (12 * l * 4 * w + 3 * heads * l * l)
        }
        crate::models::VisionLayers::ResNet(_) => {
            // Stem output at half resolution, width/2 channels, a few copies alive.
            let w = cfg.vision_width as u64;
            4 * 6 * (r / 2) * (r / 2) * w
        }
    }
}

fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Refuses a batch size whose activations cannot fit in the available memory, before any work.
fn check_batch_memory(s: &Session, batch: usize) -> anyhow::Result<()> {
    if s.device.is_cpu() {
        let need = bytes_per_image(&s.loaded.config).saturating_mul(batch as u64);
        if let Some(avail) = available_memory() {
            if need > avail {
                return Err(fail(
                    exit::RUNTIME,
                    format!(
                        "a batch of {} images needs about {:.1} GB but {:.1} GB of memory is available; use a smaller --batch-size-test",
                        batch,
                        need as f64 / 1e9,
                        avail as f64 / 1e9
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn run_images(
    s: &Session,
    plan: &Plan,
    clf: &Tensor,
    args: &EvalArgs,
    shard: &Shard,
) -> anyhow::Result<Outcome> {
    let res = s.loaded.config.image_resolution;
    let positions = shard.positions(plan.samples.len());
    let fp = fingerprint(s, plan, shard, args.batch_size_test);
    let progress_dir = args
        .text_cache
        .clone()
        .unwrap_or_else(zeroshot::default_cache_dir)
        .join("progress");
    let progress_path = progress_dir.join(format!("{fp}.json"));
    let mut tally = Tally::new(plan.classnames.len());
    let mut start_at = 0;
    if args.resume {
        match std::fs::read(&progress_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ProgressFile>(&b).ok())
        {
            Some(p) if p.fingerprint == fp => {
                s.log.info(format!(
                    "resuming after {} of {} images",
                    p.done,
                    positions.len()
                ));
                start_at = p.done;
                tally = p.tally;
            }
            _ => s
                .log
                .warn("--resume: no progress file for this run; starting from the beginning"),
        }
    }
    let samples = Arc::new(plan.samples.clone());
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let stop = interrupted();
    let order: Vec<usize> = positions[start_at..].to_vec();
    let rx = dataset::stream(
        samples.clone(),
        order,
        res,
        args.batch_size_test,
        workers,
        args.skip_unreadable,
        stop.clone(),
    );
    let clf_t = clf.t()?.contiguous()?;
    let compute_dtype = match s.precision {
        Precision::Fp32 => DType::F32,
        Precision::Bf16 => DType::BF16,
        _ => DType::F16,
    };
    let mut bar = Progress::new(args.quiet, positions.len() as u64, "images", "img");
    let mut done = start_at;
    bar.set(done as u64);
    let t0 = std::time::Instant::now();
    let save_progress = |done: usize, tally: &Tally| -> anyhow::Result<()> {
        std::fs::create_dir_all(&progress_dir)?;
        let body = serde_json::to_vec(&ProgressFile {
            fingerprint: fp.clone(),
            done,
            tally: tally.clone(),
        })?;
        crate::util::write_atomic(&progress_path, &body)?;
        Ok(())
    };
    let mut batches = 0usize;
    // Test hook: behave as if Ctrl-C arrived after this many batches.
    let interrupt_after: Option<usize> = std::env::var("PYRAMIDCLIP_INTERRUPT_AFTER_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok());
    for msg in rx {
        let batch = msg.map_err(|e| match e {
            dataset::Error::Image(e) => fail(
                exit::INPUT,
                format!("{e} (pass --skip-unreadable to skip unreadable images)"),
            ),
            other => other.into(),
        })?;
        for (i, why) in &batch.skipped {
            tally
                .skipped
                .push((*i, samples[*i].path.display().to_string(), why.clone()));
        }
        let b = batch.indices.len();
        if b > 0 {
            let pixels = normalize_batch(batch.crops, b, res, &s.device, compute_dtype)?;
            let feats = s.loaded.model.encode_image_normalized(&pixels).map_err(|e| {
                if e.to_string().to_lowercase().contains("out of memory") || e.to_string().contains("alloc") {
                    fail(
                        exit::RUNTIME,
                        format!("a batch of {b} images does not fit in memory ({e}); use a smaller --batch-size-test"),
                    )
                } else {
                    e.into()
                }
            })?;
            let (top, scores) = zeroshot::topk(&feats, &clf_t, 5)?;
            for ((&i, t), sc) in batch.indices.iter().zip(top).zip(scores) {
                let smp = &samples[i];
                tally.add(Prediction {
                    index: i,
                    path: smp.path.display().to_string(),
                    label: smp.label,
                    top: t,
                    scores: sc,
                });
            }
        }
        done += b + batch.skipped.len();
        bar.set(done as u64);
        batches += 1;
        if interrupt_after.is_some_and(|n| batches >= n) {
            stop.store(true, Ordering::SeqCst);
        }
        if stop.load(Ordering::SeqCst) {
            bar.finish();
            save_progress(done, &tally)?;
            return Err(fail(
                exit::INTERRUPTED,
                format!(
                    "interrupted after {done} of {} images; no result was written. Rerun the same command with --resume to continue",
                    positions.len()
                ),
            ));
        }
        if batches.is_multiple_of(20) {
            save_progress(done, &tally)?;
        }
    }
    bar.finish();
    if stop.load(Ordering::SeqCst) {
        save_progress(done, &tally)?;
        return Err(fail(
            exit::INTERRUPTED,
            format!(
                "interrupted after {done} of {} images; rerun with --resume",
                positions.len()
            ),
        ));
    }
    let _ = std::fs::remove_file(&progress_path);
    Ok(Outcome {
        tally,
        elapsed: t0.elapsed().as_secs_f64(),
    })
}

/// The result JSON of a (merged or unsharded) run.
pub fn result_json(info: &RunInfo, tally: &Tally, elapsed_s: f64) -> serde_json::Value {
    let (top1, top5, mpc) = tally.accuracy();
    let per_class: Vec<serde_json::Value> = tally
        .per_class
        .iter()
        .enumerate()
        .filter(|(_, c)| c.n > 0)
        .map(|(i, c)| {
            serde_json::json!({
                "class": info.classnames.get(i).cloned().unwrap_or_default(),
                "index": i,
                "n": c.n,
                "top1": c.top1 as f64 * 100.0 / c.n as f64,
                "top5": c.top5 as f64 * 100.0 / c.n as f64,
            })
        })
        .collect();
    let n = tally.images();
    serde_json::json!({
        "dataset": info.dataset,
        "model": info.model,
        "checkpoint": info.checkpoint,
        "checkpoint_sha256": info.checkpoint_sha256,
        "num_images": n,
        "top1": top1,
        "top5": top5,
        "mean_per_class_recall": mpc,
        "per_class": per_class,
        "skipped": tally.skipped.iter().map(|(_, p, e)| serde_json::json!({"path": p, "error": e})).collect::<Vec<_>>(),
        "precision": info.precision,
        "device": info.device,
        "batch_size": info.batch_size,
        "elapsed_s": elapsed_s,
        "images_per_s": if elapsed_s > 0.0 { n as f64 / elapsed_s } else { 0.0 },
        "version": VERSION,
    })
}

pub fn predictions_csv(tally: &Tally) -> String {
    let mut out = String::from(
        "path,label,pred1,pred2,pred3,pred4,pred5,score1,score2,score3,score4,score5\n",
    );
    for p in &tally.predictions {
        let mut row = vec![csv_field(&p.path), p.label.to_string()];
        for k in 0..5 {
            row.push(p.top.get(k).map(|v| v.to_string()).unwrap_or_default());
        }
        for k in 0..5 {
            row.push(
                p.scores
                    .get(k)
                    .map(|v| format!("{v:.6}"))
                    .unwrap_or_default(),
            );
        }
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn suffixed(path: &Path, name: &str, several: bool) -> PathBuf {
    if !several {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-{name}{ext}"))
}

fn write_outputs(
    info: &RunInfo,
    tally: &Tally,
    elapsed: f64,
    output: Option<&Path>,
    preds: Option<&Path>,
    log: Log,
) -> anyhow::Result<()> {
    let (top1, top5, _) = tally.accuracy();
    println!(
        "{} Zeroshot\tPrec@1/5 {:.2}/{:.2}",
        display_name(&info.dataset),
        top1,
        top5
    );
    if !tally.skipped.is_empty() {
        log.warn(format!(
            "{} unreadable image(s) skipped; accuracy is over the {} images evaluated",
            tally.skipped.len(),
            tally.images()
        ));
    }
    if let Some(p) = output {
        let body = serde_json::to_vec_pretty(&result_json(info, tally, elapsed))?;
        crate::util::write_atomic(p, &body)
            .with_context(|| format!("cannot write --output {}", p.display()))?;
        log.info(format!("wrote {}", p.display()));
    }
    if let Some(p) = preds {
        crate::util::write_atomic(p, predictions_csv(tally).as_bytes())
            .with_context(|| format!("cannot write --save-predictions {}", p.display()))?;
        log.info(format!("wrote {}", p.display()));
    }
    Ok(())
}

pub fn partial_path(dir: &Path, dataset: &str, index: usize, count: usize) -> PathBuf {
    dir.join(format!("{dataset}.part-{index}-of-{count}.json"))
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let log = Log { quiet: args.quiet };
    let _ = interrupted();
    if args.batch_size_test == 0 {
        return Err(fail(exit::USAGE, "--batch-size-test must be at least 1"));
    }
    if args.workers == Some(0) {
        return Err(fail(exit::USAGE, "--workers must be at least 1"));
    }
    if args.no_text_cache && args.text_cache.is_some() {
        return Err(fail(
            exit::USAGE,
            "--no-text-cache and --text-cache conflict: give one",
        ));
    }
    let shard = shard::resolve(args.shard.as_deref())?;
    if shard.count > 1 && args.output_dir.is_none() {
        return Err(fail(
            exit::USAGE,
            format!(
                "this is shard {} of {}: give --output-dir for the partial results",
                shard.index, shard.count
            ),
        ));
    }
    if args.merge && args.output_dir.is_none() {
        return Err(fail(
            exit::USAGE,
            "--merge needs --output-dir (where the partials are)",
        ));
    }
    let names: Vec<String> = args
        .test_dataset
        .split('+')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Err(fail(exit::USAGE, "--test-dataset is empty"));
    }
    let several = names.len() > 1;
    if several && args.classnames.is_some() {
        return Err(fail(
            exit::USAGE,
            "--classnames applies to one dataset; it conflicts with several --test-dataset names",
        ));
    }
    super::misc::registry_for(
        args.model.model_config.as_deref(),
        args.model.visual_model.as_deref(),
    )?;
    // List every dataset before the (slow) model load, so bad paths fail at once.
    let plans: Vec<Plan> = names
        .iter()
        .map(|n| plan_dataset(&args, n, several, log))
        .collect::<anyhow::Result<_>>()?;
    let session = open_session(&args, &shard, log)?;
    check_batch_memory(&session, args.batch_size_test)?;
    for plan in &plans {
        let clf = classifier(&session, plan, &args)?;
        if shard.count > 1 {
            log.info(format!(
                "{}: shard {} of {}",
                plan.name, shard.index, shard.count
            ));
        }
        log.info(format!(
            "{}: {} images in {} classes from {}",
            plan.name,
            plan.samples.len(),
            plan.classnames.len(),
            plan.root.display()
        ));
        let out = run_images(&session, plan, &clf, &args, &shard)?;
        let info = RunInfo {
            dataset: plan.name.clone(),
            model: session.loaded.name.clone(),
            checkpoint: args.model.checkpoint.display().to_string(),
            checkpoint_sha256: session.sha.clone(),
            precision: session.precision.name().to_string(),
            device: device::describe(&session.device),
            batch_size: args.batch_size_test,
            classnames: plan.classnames.clone(),
            num_samples: plan.samples.len(),
        };
        log.info(format!(
            "{}: {} images in {:.1}s ({:.1} images/s)",
            plan.name,
            out.tally.images(),
            out.elapsed,
            out.tally.images() as f64 / out.elapsed.max(1e-9)
        ));
        if let Some(dir) = &args.output_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --output-dir {}", dir.display()))?;
            let partial = Partial {
                kind: "pyramidclip-partial".into(),
                version: VERSION.into(),
                shard_index: shard.index,
                num_shards: shard.count,
                info: info.clone(),
                tally: out.tally.clone(),
                elapsed_s: out.elapsed,
            };
            let p = partial_path(dir, &plan.name, shard.index, shard.count);
            crate::util::write_atomic(&p, &serde_json::to_vec(&partial)?)
                .with_context(|| format!("cannot write partial result {}", p.display()))?;
            log.info(format!("wrote partial result {}", p.display()));
        }
        if shard.count == 1 {
            write_outputs(
                &info,
                &out.tally,
                out.elapsed,
                args.output
                    .as_deref()
                    .map(|p| suffixed(p, &plan.name, several))
                    .as_deref(),
                args.save_predictions
                    .as_deref()
                    .map(|p| suffixed(p, &plan.name, several))
                    .as_deref(),
                log,
            )?;
        } else if args.merge && shard.index == 0 {
            let dir = args.output_dir.as_ref().unwrap();
            let paths: Vec<PathBuf> = (0..shard.count)
                .map(|i| partial_path(dir, &plan.name, i, shard.count))
                .collect();
            let deadline =
                std::time::Instant::now() + std::time::Duration::from_secs(args.merge_timeout);
            log.info(format!(
                "waiting for {} partial results in {}",
                shard.count,
                dir.display()
            ));
            while !paths.iter().all(|p| p.exists()) {
                if std::time::Instant::now() > deadline || interrupted().load(Ordering::SeqCst) {
                    let missing: Vec<String> = paths
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| !p.exists())
                        .map(|(i, _)| i.to_string())
                        .collect();
                    return Err(fail(
                        exit::RUNTIME,
                        format!(
                            "--merge: shard(s) {} did not finish in time",
                            missing.join(", ")
                        ),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            let (info, tally, elapsed) = merge_partials(&paths)?;
            write_outputs(
                &info,
                &tally,
                elapsed,
                args.output
                    .as_deref()
                    .map(|p| suffixed(p, &plan.name, several))
                    .as_deref(),
                args.save_predictions
                    .as_deref()
                    .map(|p| suffixed(p, &plan.name, several))
                    .as_deref(),
                log,
            )?;
        } else {
            let (t1, t5, _) = out.tally.accuracy();
            log.info(format!(
                "{} shard {}/{}: Prec@1/5 {t1:.2}/{t5:.2} over its {} images (merge the partials for the full result)",
                display_name(&plan.name),
                shard.index,
                shard.count,
                out.tally.images()
            ));
        }
    }
    Ok(())
}

/// Reads and checks partials; returns the merged run.
pub fn merge_partials(paths: &[PathBuf]) -> anyhow::Result<(RunInfo, Tally, f64)> {
    let mut parts: Vec<(PathBuf, Partial)> = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| {
            fail(
                exit::INPUT,
                format!("cannot read partial {}: {e}", p.display()),
            )
        })?;
        let part: Partial = serde_json::from_slice(&bytes).map_err(|e| {
            fail(
                exit::INPUT,
                format!("{} is not a pyramidclip partial result: {e}", p.display()),
            )
        })?;
        if part.kind != "pyramidclip-partial" {
            return Err(fail(
                exit::INPUT,
                format!("{} is not a pyramidclip partial result", p.display()),
            ));
        }
        parts.push((p.clone(), part));
    }
    let (first_path, first) = parts
        .first()
        .cloned()
        .ok_or_else(|| fail(exit::USAGE, "no partial results given"))?;
    let n = first.num_shards;
    let mut seen = vec![None::<PathBuf>; n];
    for (p, part) in &parts {
        let what = |field: &str, a: &str, b: &str| {
            fail(
                exit::INPUT,
                format!(
                    "{} and {} come from different {field}s ({a} vs {b}): refusing to merge",
                    first_path.display(),
                    p.display()
                ),
            )
        };
        if part.info.checkpoint_sha256 != first.info.checkpoint_sha256 {
            return Err(what(
                "checkpoint",
                &first.info.checkpoint_sha256[..12.min(first.info.checkpoint_sha256.len())],
                &part.info.checkpoint_sha256[..12.min(part.info.checkpoint_sha256.len())],
            ));
        }
        if part.info.dataset != first.info.dataset
            || part.info.num_samples != first.info.num_samples
            || part.info.classnames != first.info.classnames
        {
            return Err(what("dataset", &first.info.dataset, &part.info.dataset));
        }
        if part.info.model != first.info.model || part.info.precision != first.info.precision {
            return Err(what(
                "model or precision",
                &first.info.model,
                &part.info.model,
            ));
        }
        if part.num_shards != n {
            return Err(what(
                "shard count",
                &n.to_string(),
                &part.num_shards.to_string(),
            ));
        }
        if part.shard_index >= n {
            return Err(fail(
                exit::INPUT,
                format!(
                    "{}: shard index {} out of range",
                    p.display(),
                    part.shard_index
                ),
            ));
        }
        if let Some(prev) = &seen[part.shard_index] {
            return Err(fail(
                exit::INPUT,
                format!(
                    "shard {} given twice ({} and {})",
                    part.shard_index,
                    prev.display(),
                    p.display()
                ),
            ));
        }
        seen[part.shard_index] = Some(p.clone());
    }
    let missing: Vec<String> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(fail(
            exit::INPUT,
            format!("missing shard(s) {} of {n}", missing.join(", ")),
        ));
    }
    let elapsed = parts.iter().map(|(_, p)| p.elapsed_s).fold(0.0, f64::max);
    let info = first.info.clone();
    let tally = Tally::merge(parts.into_iter().map(|(_, p)| p.tally).collect());
    Ok((info, tally, elapsed))
}

pub fn merge(args: MergeArgs) -> anyhow::Result<()> {
    let (info, tally, elapsed) = merge_partials(&args.partials)?;
    write_outputs(
        &info,
        &tally,
        elapsed,
        Some(&args.output),
        args.save_predictions.as_deref(),
        Log { quiet: false },
    )
}
