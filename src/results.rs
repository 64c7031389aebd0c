//! What a run produces: the result JSON, the predictions CSV, shard partials and their
//! merge. Written atomically, so an interrupted write never leaves half a file.

use crate::zeroshot::Tally;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A partial result that cannot be read or merged (names the file).
    #[error("{0}")]
    Partial(String),
    #[error("cannot write {flag} {path}: {source}")]
    Write {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a shard's partial result says it is.
pub const PARTIAL_KIND: &str = "pyramidclip-partial";

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// CLIP_benchmark's name for what `eval` computes (its result files' `task`).
pub const CLASSIFICATION: &str = "zeroshot_classification";

/// Everything about a run that its result depends on (shared by results and partials).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub dataset: String,
    pub model: String,
    pub checkpoint: String,
    /// The open_clip tag the checkpoint was found by (`laion2b_s34b_b79k`), as
    /// CLIP_benchmark's results name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
    /// The images' normalisation when not OpenAI's (`[mean, std]`, an open_clip tag's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<[[f32; 3]; 2]>,
    /// open_clip's `resize_mode` when not the shortest-side resize and centre crop (`squash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_mode: Option<String>,
    /// open_clip's `interpolation` when not bicubic (`bilinear`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpolation: Option<String>,
    /// A HuggingFace tokenizer's `tokenizer.json` (SigLIP's); CLIP's is not named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// The classifier files averaged in place of encoding the prompts (`--load-clfs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_clfs: Option<Vec<String>>,
    /// `--dump-classnames`: the class names go into the result JSON (CLIP_benchmark's).
    #[serde(default)]
    pub dump_classnames: bool,
    /// `--dump-templates`: the templates (or each class's prompts, by class name) for the
    /// result JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<serde_json::Value>,
    pub checkpoint_sha256: String,
    /// The precision computed (not only the one asked for).
    pub precision: String,
    pub device: String,
    /// The engine that computed the features (`native` or `candle`) and its dtype.
    pub engine: String,
    pub dtype: String,
    pub batch_size: usize,
    pub classnames: Vec<String>,
    pub num_samples: usize,
    /// The model family (`pyramidclip` or `clip`) and its MLP activation.
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub activation: String,
    /// What `--precision` asked for, when it differs from `precision` (bf16 without the CPU
    /// instructions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_precision: Option<String>,
    /// The native engine's bf16 kernel (`amx` or `avx512bf16`) when it computed in bf16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bf16_kernel: Option<String>,
    /// On the candle engine: whether its fused ops ran as kernels (`fused`) or, on a GPU whose
    /// kernels did not match their CPU references, as candle ops (`composed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fused_ops: Option<String>,
    /// A reduced-precision run's margin (cosine units) within which decisions were made again
    /// in fp32 (shard 0's when merged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck_margin: Option<f32>,
    /// The webdataset layout's split that was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// The prompts' language (`en`, or `zh` with `--zeroshot-type zh`), as CLIP_benchmark's
    /// result files name it.
    #[serde(default = "english")]
    pub language: String,
}

fn english() -> String {
    "en".into()
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

pub fn display_name(dataset: &str) -> String {
    match dataset {
        "imagenet" => "ImageNet".to_string(),
        other => other.to_string(),
    }
}

/// The result JSON of a (merged or unsharded) run.
pub fn result_json(info: &RunInfo, tally: &Tally, elapsed_s: f64) -> serde_json::Value {
    let (top1, top5, mpc) = tally.accuracy();
    let (f1, f5, fm) = tally.fractions();
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
    let mut v = serde_json::json!({
        "task": CLASSIFICATION,
        "dataset": info.dataset,
        "split": info.split,
        "language": info.language,
        "model": info.model,
        "family": info.family,
        "activation": info.activation,
        "checkpoint": info.checkpoint,
        "checkpoint_sha256": info.checkpoint_sha256,
        "num_images": n,
        "top1": top1,
        "top5": top5,
        "mean_per_class_recall": mpc,
        // CLIP_benchmark's names and scale (fractions).
        "metrics": {"acc1": f1, "acc5": f5, "mean_per_class_recall": fm},
        "per_class": per_class,
        "skipped": tally.skipped.iter().map(|(_, p, e)| serde_json::json!({"path": p, "error": e})).collect::<Vec<_>>(),
        "precision": info.precision,
        "requested_precision": info.requested_precision,
        "bf16_kernel": info.bf16_kernel,
        "fp32_recheck": info.recheck_margin.map(|m| serde_json::json!({
            "margin": m,
            "images": tally.rechecked,
            "class_vectors": "fp32",
        })),
        "device": info.device,
        "engine": info.engine,
        "dtype": info.dtype,
        "batch_size": info.batch_size,
        "elapsed_s": elapsed_s,
        "images_per_s": if elapsed_s > 0.0 { n as f64 / elapsed_s } else { 0.0 },
        "version": VERSION,
    });
    if let (Some(o), Some(p)) = (v.as_object_mut(), &info.pretrained) {
        o.insert("pretrained".into(), p.clone().into());
    }
    if let (Some(o), Some([mean, std])) = (v.as_object_mut(), &info.normalize) {
        o.insert(
            "normalize".into(),
            serde_json::json!({"mean": mean, "std": std}),
        );
    }
    if let (Some(o), Some(r)) = (v.as_object_mut(), &info.resize_mode) {
        o.insert("resize_mode".into(), r.clone().into());
    }
    if let (Some(o), Some(r)) = (v.as_object_mut(), &info.interpolation) {
        o.insert("interpolation".into(), r.clone().into());
    }
    if let (Some(o), Some(t)) = (v.as_object_mut(), &info.tokenizer) {
        o.insert("tokenizer".into(), t.clone().into());
    }
    if let (Some(o), Some(l)) = (v.as_object_mut(), &info.load_clfs) {
        o.insert("load_clfs".into(), l.clone().into());
    }
    if let Some(o) = v.as_object_mut().filter(|_| info.dump_classnames) {
        o.insert("classnames".into(), info.classnames.clone().into());
    }
    if let (Some(o), Some(t)) = (v.as_object_mut(), &info.templates) {
        o.insert("templates".into(), t.clone());
    }
    if let Some(o) = v.as_object_mut() {
        // A multi-label set (VOC2007's images): CLIP_benchmark's mean average precision, in
        // place of the accuracies of one label per image.
        if !tally.multilabel.is_empty() {
            let (map, ap) = tally.mean_average_precision(info.classnames.len());
            for k in ["top1", "top5", "mean_per_class_recall", "per_class"] {
                o.remove(k);
            }
            o.insert("task".into(), CLASSIFICATION.into());
            o.insert("mean_average_precision".into(), (map * 100.0).into());
            o.insert(
                "metrics".into(),
                serde_json::json!({ "mean_average_precision": map }),
            );
            let per: Vec<serde_json::Value> = ap
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    serde_json::json!({
                        "class": info.classnames.get(i).cloned().unwrap_or_default(),
                        "index": i,
                        "positives": tally.multilabel.iter().filter(|s| s.positives.contains(&(i as u32))).count(),
                        "average_precision": a * 100.0,
                    })
                })
                .collect();
            o.insert("average_precision".into(), per.into());
        }
        if info.requested_precision.is_none() {
            o.remove("requested_precision");
        }
        if info.bf16_kernel.is_none() {
            o.remove("bf16_kernel");
        }
        if info.recheck_margin.is_none() {
            o.remove("fp32_recheck");
        }
        if info.split.is_none() {
            o.remove("split");
        }
    }
    v
}

/// The predictions CSV's header line.
pub const PREDICTIONS_HEADER: &str =
    "path,label,pred1,pred2,pred3,pred4,pred5,score1,score2,score3,score4,score5\n";

/// One prediction's CSV row, with its line break.
pub fn prediction_row(p: &crate::zeroshot::Prediction) -> String {
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
    let mut line = row.join(",");
    line.push('\n');
    line
}

pub fn predictions_csv(tally: &Tally) -> String {
    let mut out = String::from(PREDICTIONS_HEADER);
    for p in &tally.predictions {
        out.push_str(&prediction_row(p));
    }
    out
}

/// Writes the predictions CSV from rows spooled to `spool` (the header first), atomically and
/// streamed.
pub fn write_spooled_predictions(path: &Path, spool: &Path) -> Result<(), Error> {
    use std::io::Write;
    crate::util::write_atomic_with(path, |out| {
        out.write_all(PREDICTIONS_HEADER.as_bytes())?;
        std::io::copy(&mut std::fs::File::open(spool)?, out)?;
        Ok(())
    })
    .map_err(|e| write_err("--save-predictions", path, e))
}

/// A CSV field, quoted when it holds a comma, quote or line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes the result JSON and/or the predictions CSV of a finished (or merged) run.
pub fn write_outputs(
    info: &RunInfo,
    tally: &Tally,
    elapsed: f64,
    output: Option<&Path>,
    predictions: Option<&Path>,
) -> Result<(), Error> {
    if let Some(p) = output {
        let body = serde_json::to_vec_pretty(&result_json(info, tally, elapsed))
            .map_err(|e| write_err("--output", p, std::io::Error::other(e)))?;
        crate::util::write_atomic(p, &body).map_err(|e| write_err("--output", p, e))?;
    }
    if let Some(p) = predictions {
        crate::util::write_atomic(p, predictions_csv(tally).as_bytes())
            .map_err(|e| write_err("--save-predictions", p, e))?;
    }
    Ok(())
}

/// [`write_outputs`] of a run whose prediction rows were spooled to `spool`.
pub fn write_outputs_spooled(
    info: &RunInfo,
    tally: &Tally,
    elapsed: f64,
    output: Option<&Path>,
    predictions: Option<&Path>,
    spool: &Path,
) -> Result<(), Error> {
    write_outputs(info, tally, elapsed, output, None)?;
    if let Some(p) = predictions {
        write_spooled_predictions(p, spool)?;
    }
    Ok(())
}

fn write_err(flag: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Write {
        flag,
        path: path.to_path_buf(),
        source,
    }
}

/// The one-line summary, as the reference prints it.
pub fn summary_line(info: &RunInfo, tally: &Tally) -> String {
    if !tally.multilabel.is_empty() {
        let (map, _) = tally.mean_average_precision(info.classnames.len());
        return format!(
            "{} Zeroshot\tmAP {:.2}",
            display_name(&info.dataset),
            100.0 * map
        );
    }
    let (top1, top5, _) = tally.accuracy();
    format!(
        "{} Zeroshot\tPrec@1/5 {:.2}/{:.2}",
        display_name(&info.dataset),
        top1,
        top5
    )
}

pub fn partial_path(dir: &Path, dataset: &str, index: usize, count: usize) -> PathBuf {
    let dataset = file_name_part(dataset);
    dir.join(format!("{dataset}.part-{index}-of-{count}.json"))
}

/// A dataset's name as part of one file name: `wds/cars` gives `wds-cars`, not a folder.
pub fn file_name_part(dataset: &str) -> String {
    dataset.replace(['/', '\\'], "-")
}

/// `path` with `-<dataset>` before its extension: one output per dataset of a run that
/// evaluates several (`r.json` and `wds/cars` give `r-wds-cars.json`).
pub fn suffixed_path(path: &Path, dataset: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-{}{ext}", file_name_part(dataset)))
}

/// What CLIP_benchmark's `--output` placeholders stand for in one result's file name.
pub struct OutputVars<'a> {
    /// The dataset as named on the command line (`wds/cars`, `sugar_crepe/add_att`).
    pub dataset: &'a str,
    /// The architecture that ran (`RN50`, `ViT-B-32`).
    pub model: &'a str,
    pub checkpoint: &'a Path,
    /// CLIP_benchmark's task name (`zeroshot_classification`, `zeroshot_retrieval`, ...).
    pub task: &'a str,
    pub language: &'a str,
}

/// The placeholders an output path may hold, as CLIP_benchmark's `--output` template has them.
pub const OUTPUT_PLACEHOLDERS: [&str; 6] = [
    "dataset",
    "model",
    "pretrained",
    "pretrained_full_path",
    "task",
    "language",
];

/// Whether an output path is a template: it holds a brace (CLIP_benchmark formats every
/// `--output` with Python's `str.format`, so a brace there is always a placeholder or `{{`).
pub fn is_template(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.contains(['{', '}']))
}

/// `path` with its placeholders filled as CLIP_benchmark fills its `--output`: `{dataset}` is
/// the name without `wds/`, `/` written `_`; `{pretrained}` the checkpoint's file name,
/// `{pretrained_full_path}` its path with `/` written `_`; `{{` and `}}` are braces. A path
/// without braces is returned as it is. An unknown placeholder or a lone brace is an error.
pub fn fill_template(path: &Path, v: &OutputVars) -> Result<PathBuf, String> {
    if !is_template(path) {
        return Ok(path.to_path_buf());
    }
    let text = path.to_str().unwrap_or_default();
    let dataset = v.dataset.strip_prefix("wds/").unwrap_or(v.dataset);
    let value = |key: &str| -> Option<String> {
        Some(match key {
            "dataset" => dataset.replace(['/', '\\'], "_"),
            "model" => v.model.to_string(),
            "pretrained" => v
                .checkpoint
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            "pretrained_full_path" => v.checkpoint.to_string_lossy().replace('/', "_"),
            "task" => v.task.to_string(),
            "language" => v.language.to_string(),
            _ => return None,
        })
    };
    let bad = |what: String| {
        format!(
            "{text}: {what} (the placeholders are {})",
            OUTPUT_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
        )
    };
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if tail.starts_with('}') {
            return Err(bad("a lone '}' (write '}}' for a brace)".into()));
        } else {
            let Some(end) = tail.find('}') else {
                return Err(bad("a '{' without its '}'".into()));
            };
            let key = &tail[1..end];
            out.push_str(&value(key).ok_or_else(|| bad(format!("unknown placeholder {{{key}}}")))?);
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(PathBuf::from(out))
}

/// Reads and checks partials; returns the merged run.
pub fn merge_partials(paths: &[PathBuf]) -> Result<(RunInfo, Tally, f64), Error> {
    let mut parts: Vec<(PathBuf, Partial)> = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p)
            .map_err(|e| Error::Partial(format!("cannot read partial {}: {e}", p.display())))?;
        let part: Partial = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Partial(format!(
                "{} is not a pyramidclip partial result: {e}",
                p.display()
            ))
        })?;
        if part.kind != PARTIAL_KIND {
            return Err(Error::Partial(format!(
                "{} is not a pyramidclip partial result",
                p.display()
            )));
        }
        parts.push((p.clone(), part));
    }
    let (first_path, first) = parts
        .first()
        .cloned()
        .ok_or_else(|| Error::Partial("no partial results given".into()))?;
    let n = first.num_shards;
    let mut seen = vec![None::<PathBuf>; n];
    for (p, part) in &parts {
        let what = |field: &str, a: &str, b: &str| {
            Error::Partial(format!(
                "{} and {} come from different {field}s ({a} vs {b}): refusing to merge",
                first_path.display(),
                p.display()
            ))
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
        if part.info.model != first.info.model
            || part.info.precision != first.info.precision
            || part.info.engine != first.info.engine
        {
            return Err(what(
                "model, precision or engine",
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
            return Err(Error::Partial(format!(
                "{}: shard index {} out of range",
                p.display(),
                part.shard_index
            )));
        }
        if let Some(prev) = &seen[part.shard_index] {
            return Err(Error::Partial(format!(
                "shard {} given twice ({} and {})",
                part.shard_index,
                prev.display(),
                p.display()
            )));
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
        return Err(Error::Partial(format!(
            "missing shard(s) {} of {n}",
            missing.join(", ")
        )));
    }
    let elapsed = parts.iter().map(|(_, p)| p.elapsed_s).fold(0.0, f64::max);
    let info = first.info.clone();
    let tally = Tally::merge(parts.into_iter().map(|(_, p)| p.tally).collect());
    Ok((info, tally, elapsed))
}

/// One result file, as `results` tabulates it: ours (eval, retrieval, caption-selection,
/// linear-probe) or
/// CLIP_benchmark's (`model`, `pretrained`, `dataset`, `task`, `metrics`).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub model: String,
    /// Our files' checkpoint (its file name): what tells apart runs of one architecture.
    pub checkpoint: Option<String>,
    pub dataset: String,
    pub task: String,
    pub metrics: std::collections::BTreeMap<String, f64>,
}

impl Summary {
    /// The metrics a table shows for this task (fractions).
    pub fn headline(&self) -> Vec<&'static str> {
        match self.task.as_str() {
            // open_clip's validation metrics (`retrieval --pairing rows`).
            "zeroshot_retrieval" if self.metrics.contains_key("text_to_image_R@5") => {
                vec!["text_to_image_R@5", "image_to_text_R@5"]
            }
            "zeroshot_retrieval" => vec!["image_retrieval_recall@5", "text_retrieval_recall@5"],
            "linear_probe" => vec!["lp_acc1"],
            "captioning" => vec!["Bleu_4", "CIDEr"],
            // One image per instance (SugarCREPE): the image choice is always right, and
            // `acc` is `text_acc`.
            "image_caption_selection"
                if self.metrics.get("image_acc") == Some(&1.0)
                    && self.metrics.get("acc") == self.metrics.get("text_acc") =>
            {
                vec!["acc"]
            }
            "image_caption_selection" => vec!["text_acc", "image_acc", "acc"],
            _ if self.metrics.contains_key("mean_average_precision") => {
                vec!["mean_average_precision"]
            }
            _ => vec!["acc1", "acc5"],
        }
    }
}

/// Reads a result file (names it in any error).
pub fn read_summary(path: &Path) -> Result<Summary, Error> {
    let bad = |m: String| Error::Partial(format!("{}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    let mut dataset = text("dataset").ok_or_else(|| bad("no \"dataset\"".into()))?;
    // Another language of the same set is its own column (CLIP_benchmark writes `language`
    // in every result; ours, where the captions file says).
    if let Some(lang) = text("language").filter(|l| !l.is_empty() && l != "en") {
        dataset = format!("{dataset} ({lang})");
    }
    // A few-shot probe is its own column, next to the full one.
    if let Some(k) = v.get("fewshot_k").and_then(|k| k.as_u64()) {
        dataset = format!("{dataset} {k}-shot");
    }
    // So is CLIP_benchmark's AdamW probe (ours with `--fit adamw`; its own files say
    // `weight_decay` in `metrics`) next to the L-BFGS one: other numbers for one set.
    let adamw = match text("fit") {
        Some(f) => f == "adamw",
        None => v["metrics"].get("weight_decay").is_some(),
    };
    if adamw && text("task").as_deref() == Some("linear_probe") {
        dataset = format!("{dataset} (adamw)");
    }
    // Retrieval with each row its own pair (open_clip's validation) is another protocol,
    // and captioning another task on the same captioned sets.
    if text("pairing").as_deref() == Some("rows") {
        dataset = format!("{dataset} (rows)");
    }
    if text("task").as_deref() == Some("captioning") {
        dataset = format!("{dataset} (captioning)");
    }
    let mut model = text("model").ok_or_else(|| bad("no \"model\"".into()))?;
    if let Some(p) = text("pretrained").filter(|p| !p.is_empty()) {
        model = format!("{model} ({p})");
    }
    let checkpoint = text("checkpoint").map(|c| match c.rsplit_once('/') {
        Some((_, name)) => name.to_string(),
        None => c,
    });
    let task = text("task").unwrap_or_else(|| CLASSIFICATION.into());
    let mut metrics = std::collections::BTreeMap::new();
    match v.get("metrics").and_then(|m| m.as_object()) {
        Some(m) => {
            for (k, x) in m {
                if let Some(f) = x.as_f64() {
                    metrics.insert(k.clone(), f);
                }
            }
        }
        // An eval JSON from before `metrics` existed: percentages.
        None => {
            for (ours, theirs) in [
                ("top1", "acc1"),
                ("top5", "acc5"),
                ("mean_per_class_recall", "mean_per_class_recall"),
            ] {
                if let Some(f) = v.get(ours).and_then(|x| x.as_f64()) {
                    metrics.insert(theirs.to_string(), f / 100.0);
                }
            }
        }
    }
    if metrics.is_empty() {
        return Err(bad("no metrics (not a result file?)".into()));
    }
    Ok(Summary {
        model,
        checkpoint,
        dataset,
        task,
        metrics,
    })
}

/// A model x (dataset, metric) table of percentages: the header, then one row per model (in
/// first-seen order); columns in first-seen order; a missing cell is empty. Runs of one
/// architecture from different checkpoints are rows of their own, `MODEL (FILE)`. With two or
/// more classification datasets that every model has, a last column holds each model's mean
/// top-1 over them (as papers' tables average their downstream sets).
pub fn table(rows: &[Summary]) -> Vec<Vec<String>> {
    let label = |r: &Summary| -> String {
        let shared = rows
            .iter()
            .any(|o| o.model == r.model && o.checkpoint != r.checkpoint);
        match (&r.checkpoint, shared) {
            (Some(c), true) => format!("{} ({c})", r.model),
            _ => r.model.clone(),
        }
    };
    let mut models: Vec<String> = Vec::new();
    let mut cols: Vec<(String, String)> = Vec::new();
    for r in rows {
        let l = label(r);
        if !models.contains(&l) {
            models.push(l);
        }
        for m in r.headline() {
            if r.metrics.contains_key(m) {
                let c = (r.dataset.clone(), m.to_string());
                if !cols.contains(&c) {
                    cols.push(c);
                }
            }
        }
    }
    // The last file for a (model, dataset) wins.
    let value = |model: &str, d: &str, m: &str| {
        rows.iter()
            .rev()
            .find(|r| label(r) == model && r.dataset == d && r.metrics.contains_key(m))
            .map(|r| 100.0 * r.metrics[m])
    };
    let top1: Vec<&String> = cols
        .iter()
        .filter(|(_, m)| m == "acc1")
        .map(|(d, _)| d)
        .collect();
    let mean = top1.len() >= 2
        && models
            .iter()
            .all(|model| top1.iter().all(|d| value(model, d, "acc1").is_some()));
    let mut header: Vec<String> = std::iter::once("model".to_string())
        .chain(cols.iter().map(|(d, m)| format!("{d} {m}")))
        .collect();
    if mean {
        header.push(format!("mean acc1 ({} datasets)", top1.len()));
    }
    let mut out = vec![header];
    for model in &models {
        let mut line = vec![model.clone()];
        for (d, m) in &cols {
            line.push(value(model, d, m).map_or(String::new(), |v| format!("{v:.2}")));
        }
        if mean {
            let sum: f64 = top1.iter().filter_map(|d| value(model, d, "acc1")).sum();
            line.push(format!("{:.2}", sum / top1.len() as f64));
        }
        out.push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(dataset: &'a str, checkpoint: &'a Path) -> OutputVars<'a> {
        OutputVars {
            dataset,
            model: "ViT-B-32",
            checkpoint,
            task: "zeroshot_classification",
            language: "en",
        }
    }

    #[test]
    fn output_templates_fill_as_clip_benchmark_formats_them() {
        let ck = Path::new("models/pc/ViT-B-32.pth.tar");
        let fill = |t: &str, d: &str| fill_template(Path::new(t), &vars(d, ck));
        // CLIP_benchmark's default template.
        assert_eq!(
            fill(
                "{dataset}_{pretrained}_{model}_{language}_{task}.json",
                "wds/vtab/cifar10"
            )
            .unwrap(),
            PathBuf::from("vtab_cifar10_ViT-B-32.pth.tar_ViT-B-32_en_zeroshot_classification.json")
        );
        assert_eq!(
            fill(
                "out/{pretrained_full_path}-{dataset}.json",
                "sugar_crepe/add_att"
            )
            .unwrap(),
            PathBuf::from("out/models_pc_ViT-B-32.pth.tar-sugar_crepe_add_att.json")
        );
        assert_eq!(
            fill("{{x}}-{dataset}.json", "cars").unwrap(),
            PathBuf::from("{x}-cars.json")
        );
        // No braces: the path as given.
        assert_eq!(fill("r.json", "cars").unwrap(), PathBuf::from("r.json"));
        for bad in ["{datset}.json", "{dataset.json", "a}.json", "{}.json"] {
            let e = fill(bad, "cars").unwrap_err();
            assert!(e.starts_with(bad) && e.contains("{dataset}"), "{bad}: {e}");
        }
    }
}
