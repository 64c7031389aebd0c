//! The subcommands, one module each: they map arguments into the library's options, call it,
//! and print. No subcommand imports another; what they share is here (exit codes, the model
//! load from `--checkpoint`/`--device`/`--engine`, the environment read at the edge) or in
//! the library.

pub mod bench;
pub mod captioning;
pub mod convert;
pub mod dev;
pub mod embed;
pub mod eval;
pub mod inspect;
pub mod linear_probe;
pub mod merge;
pub mod predict;
pub mod preprocess;
pub mod results;
pub mod retrieval;
pub mod selection;
pub mod shard;
pub mod tokenize;

use crate::cli::{GemmKernel, ModelArgs, NativeArgs, RunArgs};
use crate::loader::{self, LoadOptions, LoadedModel};
use crate::native::gemm::{Blocking, GemmConfig, Isa};
use crate::native::simd;
use crate::native::NativeOptions;
use crate::report::Log;
use std::path::PathBuf;

/// Exit codes (documented in the README).
pub mod exit {
    pub const RUNTIME: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INPUT: u8 = 3;
    pub const CHECKPOINT: u8 = 4;
    pub const INTERRUPTED: u8 = crate::report::INTERRUPTED_EXIT;
}

/// An error that carries its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct Failure {
    pub code: u8,
    pub msg: String,
}

pub fn fail(code: u8, msg: impl Into<String>) -> anyhow::Error {
    Failure {
        code,
        msg: msg.into(),
    }
    .into()
}

/// The exit code for an error chain, by the kind of the first error that has one.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    use crate::eval::Error as E;
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        if let Some(e) = cause.downcast_ref::<E>() {
            match e {
                E::Usage(_) => return exit::USAGE,
                E::Data(_) | E::Image(_) | E::Classifier(_) => return exit::INPUT,
                E::Interrupted(_) => return exit::INTERRUPTED,
                E::OutOfMemory(_) | E::Runtime(_) => return exit::RUNTIME,
                _ => continue,
            }
        }
        if let Some(e) = cause.downcast_ref::<loader::Error>() {
            match e {
                loader::Error::Config(_)
                | loader::Error::Engine(_)
                | loader::Error::TokenizerFlag(_) => return exit::USAGE,
                loader::Error::Checkpoint(_)
                | loader::Error::Tokenizer(_)
                | loader::Error::HfTokenizer(_) => return exit::CHECKPOINT,
            }
        }
        if let Some(e) = cause.downcast_ref::<crate::features::Error>() {
            use crate::features::Error as F;
            match e {
                F::Image(_) | F::Data(_) | F::Tokenizer(_) => return exit::INPUT,
                F::Interrupted { .. } => return exit::INTERRUPTED,
                F::Candle(_) => return exit::RUNTIME,
            }
        }
        if let Some(crate::probe::Error::Usage(_)) = cause.downcast_ref::<crate::probe::Error>() {
            return exit::USAGE;
        }
        if cause.is::<crate::checkpoint::Error>() {
            return exit::CHECKPOINT;
        }
        if cause.is::<crate::models::config::Error>()
            || cause.is::<crate::engine::Error>()
            || cause.is::<crate::device::Error>()
        {
            return exit::USAGE;
        }
        if cause.is::<crate::data::Error>()
            || cause.is::<crate::preprocess::Error>()
            || cause.is::<crate::tokenizer::Error>()
            || cause.is::<crate::results::Error>()
        {
            return exit::INPUT;
        }
    }
    exit::RUNTIME
}

/// The native engine's tuning switches from their hidden flags (or environment variables);
/// AMX is probed only when `precision` may use it. Unless `PYRAMIDCLIP_BF16` says otherwise,
/// bf16 and amp use the bf16 kernels only where they outrun the fp32 ones: on AMX tiles, or
/// where one core's `vdpbf16ps` rate is at least its FMA rate (AMD Zen 4, not Intel without
/// AMX; [`bf16_fallback_reason`] says which).
pub fn native_options(a: &NativeArgs, precision: crate::device::Precision) -> NativeOptions {
    native_options_and_blocking(a, precision).0
}

/// [`native_options`] with where its fp32 blocking came from (read once, for the log line).
pub fn native_options_and_blocking(
    a: &NativeArgs,
    precision: crate::device::Precision,
) -> (NativeOptions, BlockingSource) {
    let d = NativeOptions::default();
    let isa = a.gemm.map(|k| match k {
        GemmKernel::Avx512 => Isa::Avx512,
        GemmKernel::Avx2 => Isa::Avx2,
        GemmKernel::Generic => Isa::Generic,
    });
    let isa = isa.map_or(d.gemm.isa, Isa::or_detected);
    let (blocking, source) = blocking(a, isa);
    let bf16_like = matches!(
        precision,
        crate::device::Precision::Bf16 | crate::device::Precision::Amp
    );
    let amx = a.amx.unwrap_or(true) && bf16_like && amx_usable();
    let options = NativeOptions {
        gemm: GemmConfig {
            isa,
            direct_a: a.gemm_direct,
            blocking,
            // Set from the plan when the model is built (`--precision bf16`).
            bf16: false,
            amx: false,
            // Only the AVX-512 kernel prefetches.
            prefetch: match a.gemm_prefetch {
                Some(p) if isa == Isa::Avx512 => p as usize,
                Some(_) => 0,
                None => isa.b_prefetch(),
            },
        },
        split_batch: a.split_batch.unwrap_or(d.split_batch),
        slice_bytes: a.slice_mb.map(|mb| (mb as usize) << 20),
        winograd: a.winograd.unwrap_or(d.winograd),
        bf16_kernels: a
            .bf16_kernels
            .unwrap_or_else(|| d.bf16_kernels && (!bf16_like || amx || !bf16_slower_than_fp32())),
        amx,
    };
    (options, source)
}

/// Whether this CPU's bf16 dot products run below its fp32 FMA rate (measured once).
fn bf16_slower_than_fp32() -> bool {
    crate::native::bf16::rate_over_fp32().is_some_and(|r| r < 1.0)
}

/// Why `--precision bf16` / `amp` computes in fp32 on the native engine, for the one-line
/// notice.
pub fn bf16_fallback_reason(a: &NativeArgs) -> String {
    use crate::native::bf16;
    if !bf16::supported() {
        "this CPU has no AVX512-BF16 (nor AMX)".to_string()
    } else if a.bf16_kernels == Some(false) {
        "its bf16 kernels are switched off (PYRAMIDCLIP_BF16=0)".to_string()
    } else {
        format!(
            "this CPU has no usable AMX and runs bf16 dot products (vdpbf16ps) at {:.2}x its fp32 FMA rate, so fp32 is faster here (PYRAMIDCLIP_BF16=1 forces the bf16 kernels)",
            bf16::rate_over_fp32().unwrap_or(0.0)
        )
    }
}

/// Where `bench --what blocking` stores the blocking it measured best on each CPU.
pub fn blocking_file() -> PathBuf {
    default_cache_dir().join("gemm-blocking.json")
}

/// Where the fp32 products' cache blocking came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockingSource {
    /// The kernel family's default.
    Default,
    /// Measured on this CPU model by `bench --what blocking` ([`blocking_file`]).
    Tuned,
    /// `--gemm-kc` / `--gemm-mc` (or their environment variables).
    Override,
}

impl BlockingSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Tuned => "tuned",
            Self::Override => "override",
        }
    }
}

/// The log line for a blocking that is not the family's default as measured (one thread per
/// L2 cache).
pub fn blocking_note(b: Blocking, source: BlockingSource) -> Option<String> {
    let why = match source {
        BlockingSource::Default => {
            let k = simd::threads_per_l2(rayon::current_num_threads());
            if k <= 1 {
                return None;
            }
            format!("the default with its rows shared among the {k} threads on each L2 cache")
        }
        BlockingSource::Tuned => format!(
            "as `bench --what blocking` measured on this CPU ({})",
            blocking_file().display()
        ),
        BlockingSource::Override => "a tuning override".to_string(),
    };
    Some(format!(
        "fp32 products blocked kc {}, mc {}, {why}",
        b.kc, b.mc
    ))
}

/// The fp32 products' blocking: `--gemm-kc` / `--gemm-mc` over what `bench --what blocking`
/// stored for this CPU (unless `--gemm-tuned 0`) over the family's default. A speed setting
/// only, so an unreadable file costs one warning and the default, never the run.
fn blocking(a: &NativeArgs, isa: Isa) -> (Blocking, BlockingSource) {
    let threads = rayon::current_num_threads();
    let mut base = (Blocking::default_for(isa, threads), BlockingSource::Default);
    if a.gemm_tuned.unwrap_or(true) {
        match crate::tune::lookup(&blocking_file(), &simd::cpu_model(), isa, threads) {
            Ok(Some(e)) => base = (e.blocking(), BlockingSource::Tuned),
            Ok(None) => {}
            Err(e) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!("warning: {e}; the fp32 products use the default blocking (rerun `pyramidclip bench --what blocking`, or delete the file)");
                });
            }
        }
    }
    if a.gemm_kc.is_some() || a.gemm_mc.is_some() {
        base.1 = BlockingSource::Override;
    }
    let b = base
        .0
        .with(a.gemm_kc.map(|v| v as usize), a.gemm_mc.map(|v| v as usize));
    (b, base.1)
}

/// How long the AMX probe's child may run before it counts as failed.
const AMX_PROBE_LIMIT_S: u64 = 60;

/// Whether bf16 products may run on AMX here: the CPU advertises it and a child process
/// (`pyramidclip dev amx-probe`) computed products on it that match the AVX512-BF16 kernel,
/// so a CPU, kernel or hypervisor that advertises AMX but faults on it costs a warning, not
/// the run. Probed once per process.
fn amx_usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        if !crate::native::amx::advertised() || !crate::native::bf16::supported() {
            return false;
        }
        // The probe takes milliseconds; the limit only bounds a child that hangs.
        let probe = std::env::current_exe().and_then(|exe| {
            crate::util::run_bounded(
                std::process::Command::new(exe).args(["dev", "amx-probe"]),
                std::time::Duration::from_secs(AMX_PROBE_LIMIT_S),
            )
        });
        match probe {
            Ok(Some((status, _))) if status.success() => true,
            Ok(Some((status, stderr))) => {
                let why = stderr.lines().last().unwrap_or("").trim().to_string();
                eprintln!(
                    "warning: the CPU advertises AMX but its probe failed ({}{}); bf16 products run through AVX512-BF16",
                    status,
                    if why.is_empty() { String::new() } else { format!(": {why}") }
                );
                false
            }
            Ok(None) => {
                eprintln!(
                    "warning: the CPU advertises AMX but its probe did not finish in {AMX_PROBE_LIMIT_S} s; bf16 products run through AVX512-BF16"
                );
                false
            }
            Err(e) => {
                eprintln!("warning: could not probe AMX ({e}); bf16 products run through AVX512-BF16");
                false
            }
        }
    })
}

/// Opens the device `--device` names under `--engine` (the launcher's rank picks the GPU).
pub fn device(run: &RunArgs, local_rank: Option<usize>) -> anyhow::Result<candle_core::Device> {
    let spec = crate::engine::device_for(run.engine, run.device)?;
    Ok(crate::device::select(spec, local_rank)?)
}

/// Where a checkpoint is looked up without `--checkpoint`: `./pretrained_model`, then
/// `$PYRAMIDCLIP_PRETRAINED`.
pub fn pretrained_dirs() -> Vec<PathBuf> {
    let mut d = vec![PathBuf::from("pretrained_model")];
    if let Some(x) = std::env::var_os("PYRAMIDCLIP_PRETRAINED").filter(|x| !x.is_empty()) {
        d.push(PathBuf::from(x));
    }
    d
}

/// `--checkpoint`, or the file of `--visual-model` (default RN50, as upstream's) found in
/// [`pretrained_dirs`]; with the architecture to load it as.
pub fn checkpoint_path(m: &ModelArgs, log: Log) -> anyhow::Result<(PathBuf, Option<String>)> {
    checkpoint_of(m, log).map(|r| (r.path, r.visual_model))
}

/// Where a model's weights, architecture and normalisation come from.
pub struct Resolved {
    pub path: PathBuf,
    pub visual_model: Option<String>,
    /// The config file naming the architecture (`--model-config`, or an open_clip
    /// `hf-hub:`/`local-dir:` model's `open_clip_config.json`).
    pub model_config: Option<PathBuf>,
    /// What the weights were trained with (an open_clip tag's or config's; OpenAI's otherwise).
    pub normalize: crate::preprocess::Normalize,
    /// How images are resized to the model's input (an open_clip tag's or config's).
    pub resize: crate::preprocess::Resize,
    /// What names the weights in outputs (`{pretrained}`): the open_clip tag they were found
    /// by, as CLIP_benchmark names them, else their path.
    pub pretrained: PathBuf,
}

/// [`checkpoint_path`] with the config and normalisation that come with it.
pub fn checkpoint_of(m: &ModelArgs, log: Log) -> anyhow::Result<Resolved> {
    if !m.pretrained_model.is_empty() {
        return match &models_of(m)?[..] {
            [one] => checkpoint_of(one, log),
            _ => Err(fail(
                exit::USAGE,
                "--pretrained-model names one model here (eval, retrieval, caption-selection and linear-probe take several)",
            )),
        };
    }
    if m.checkpoint.len() > 1 || m.visual_model.len() > 1 {
        return Err(fail(
            exit::USAGE,
            "--checkpoint and --visual-model name one model here (eval, retrieval, caption-selection and linear-probe take several)",
        ));
    }
    let visual_model = m.visual_model.first().cloned();
    let plain = |path: PathBuf, visual_model: Option<String>| Resolved {
        pretrained: path.clone(),
        path,
        visual_model,
        model_config: m.model_config.clone(),
        normalize: Default::default(),
        resize: Default::default(),
    };
    // open_clip's `hf-hub:ORG/NAME` / `local-dir:DIR`: config and weights found together.
    if let Some(name) = visual_model
        .as_deref()
        .filter(|v| crate::hub::schema(v).is_some())
    {
        if !m.checkpoint.is_empty() || m.model_config.is_some() {
            return Err(fail(
                exit::USAGE,
                format!("--visual-model {name} brings its own config and weights: drop --checkpoint and --model-config"),
            ));
        }
        let found = crate::hub::resolve_schema(name, &hub_caches(m))
            .map_err(|e| fail(exit::CHECKPOINT, e.to_string()))?;
        log.info(format!(
            "{name}: {} with {}",
            found.weights.display(),
            found.config.display()
        ));
        return Ok(Resolved {
            pretrained: found.weights.clone(),
            path: found.weights,
            visual_model,
            model_config: Some(found.config),
            normalize: found.normalize,
            resize: found.resize,
        });
    }
    if let Some(p) = m.checkpoint.first() {
        // CLIP_benchmark's --pretrained: a file, or open_clip's tag for the model.
        if let (false, true, Some(model)) = (p.exists(), crate::hub::is_tag_like(p), &visual_model)
        {
            let tag = p.to_string_lossy();
            let found = crate::hub::resolve(model, &tag, &hub_caches(m))
                .map_err(|e| fail(exit::CHECKPOINT, e.to_string()))?;
            log.info(format!(
                "checkpoint for {model} `{tag}`: {}",
                found.path.display()
            ));
            if let Some(n) = &found.notice {
                log.warn(n);
            }
            return Ok(Resolved {
                normalize: found.normalize,
                resize: found.resize,
                pretrained: p.clone(),
                ..plain(found.path, visual_model)
            });
        }
        if !p.exists() && crate::hub::is_tag_like(p) && crate::hub::is_tag(&p.to_string_lossy()) {
            return Err(fail(
                exit::USAGE,
                format!("--checkpoint {}: not a file; as open_clip's pretrained tag it needs the model it is for: add --visual-model (e.g. ViT-B-32)", p.display()),
            ));
        }
        // A transformers model by its hub id (`openai/clip-vit-base-patch32`), where
        // `from_pretrained` downloaded it; outputs name it by that id.
        let named = p;
        let p = &match (p.exists(), crate::hub::is_repo_like(p)) {
            (false, true) => {
                let repo = p.to_string_lossy();
                let found = crate::hub::resolve_repo(&repo, &hub_caches(m))
                    .map_err(|e| fail(exit::CHECKPOINT, e.to_string()))?;
                match found {
                    crate::hub::Repo::Transformers(dir) => {
                        log.info(format!("{repo}: {}", dir.display()));
                        dir
                    }
                    crate::hub::Repo::OpenClip => {
                        if visual_model.is_some() || m.model_config.is_some() {
                            return Err(fail(
                                exit::USAGE,
                                format!("--checkpoint {repo}: an open_clip repo brings its own config: drop --visual-model and --model-config"),
                            ));
                        }
                        let as_schema = ModelArgs {
                            checkpoint: Vec::new(),
                            visual_model: vec![format!("hf-hub:{repo}")],
                            ..m.clone()
                        };
                        return checkpoint_of(&as_schema, log);
                    }
                }
            }
            _ => p.clone(),
        };
        // A transformers CLIP folder's `preprocessor_config.json` gives its mean and std.
        let stats = crate::checkpoint::hf::normalization(p).map_err(|e| {
            fail(
                exit::CHECKPOINT,
                format!("--checkpoint {}: {e}", p.display()),
            )
        })?;
        let normalize = match stats {
            Some(n) => {
                log.info("mean and std from the transformers folder's preprocessor_config.json");
                n
            }
            None => Default::default(),
        };
        return Ok(Resolved {
            normalize,
            pretrained: named.clone(),
            ..plain(p.clone(), visual_model)
        });
    }
    let model = visual_model.unwrap_or_else(|| "RN50".to_string());
    let p = loader::find_checkpoint(&model, &pretrained_dirs())
        .map_err(|e| fail(exit::CHECKPOINT, e.to_string()))?;
    log.info(format!("checkpoint for {model}: {}", p.display()));
    Ok(plain(p, Some(model)))
}

/// CLIP_benchmark's model collections (its `model_collection`), as (model, pretrained).
const MODEL_COLLECTIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "openai",
        &[
            ("ViT-B-32", "openai"),
            ("ViT-B-16", "openai"),
            ("ViT-L-14", "openai"),
            ("ViT-L-14-336", "openai"),
        ],
    ),
    (
        "openclip_base",
        &[
            ("ViT-B-32-quickgelu", "laion400m_e32"),
            ("ViT-B-32", "laion2b_e16"),
            ("ViT-B-32", "laion2b_s34b_b79k"),
            ("ViT-B-16", "laion400m_e32"),
            ("ViT-B-16-plus-240", "laion400m_e32"),
            ("ViT-L-14", "laion400m_e32"),
            ("ViT-L-14", "laion2b_s32b_b82k"),
            ("ViT-H-14", "laion2b_s32b_b79k"),
            ("ViT-g-14", "laion2b_s12b_b42k"),
        ],
    ),
];

/// `--pretrained-model`'s entries as CLIP_benchmark reads them: a file of `MODEL,PRETRAINED`
/// lines, a collection, or one `MODEL,PRETRAINED`.
pub fn pretrained_models(entries: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let pair = |s: &str, what: &str| -> anyhow::Result<(String, String)> {
        match s.split_once(',') {
            Some((m, p)) if !m.trim().is_empty() && !p.trim().is_empty() => {
                Ok((m.trim().to_string(), p.trim().to_string()))
            }
            _ => Err(fail(
                exit::USAGE,
                format!("--pretrained-model {what}: expected MODEL,PRETRAINED (e.g. ViT-B-32,laion2b_s34b_b79k), a file of such lines, or openai / openclip_base"),
            )),
        }
    };
    let mut out = Vec::new();
    for e in entries {
        let path = std::path::Path::new(e);
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .map_err(|err| fail(exit::INPUT, format!("--pretrained-model {e}: {err}")))?;
            for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                out.push(pair(l, &format!("{e}: `{l}`"))?);
            }
        } else if let Some((_, list)) = MODEL_COLLECTIONS.iter().find(|c| c.0 == e) {
            out.extend(list.iter().map(|(m, p)| (m.to_string(), p.to_string())));
        } else {
            out.push(pair(e, e)?);
        }
    }
    Ok(out)
}

/// Where open_clip's downloads are looked for: `--model-cache-dir` (open_clip's `cache_dir`,
/// both kinds of download), else the Hugging Face hub cache and `~/.cache/clip`.
pub fn hub_caches(m: &ModelArgs) -> crate::hub::Caches {
    hub_caches_in(m.model_cache_dir.as_ref())
}

/// [`hub_caches`] for a `--model-cache-dir` (if any).
pub fn hub_caches_in(dir: Option<&PathBuf>) -> crate::hub::Caches {
    if let Some(d) = dir {
        return crate::hub::Caches {
            hf: Some(d.clone()),
            url: Some(d.clone()),
        };
    }
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|x| !x.is_empty())
            .map(PathBuf::from)
    };
    let home = var("HOME");
    let hf = var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|x| x.join("huggingface/hub")))
        .or_else(|| home.as_ref().map(|h| h.join(".cache/huggingface/hub")));
    crate::hub::Caches {
        hf,
        url: home.map(|h| h.join(".cache/clip")),
    }
}

/// The models of a run, one [`ModelArgs`] each: every `--checkpoint` with its `--visual-model`
/// (one name serves them all, or one per checkpoint), or each `--visual-model` to be looked up.
pub fn models_of(m: &ModelArgs) -> anyhow::Result<Vec<ModelArgs>> {
    let one = |c: Option<&PathBuf>, v: Option<&String>| ModelArgs {
        checkpoint: c.cloned().into_iter().collect(),
        visual_model: v.cloned().into_iter().collect(),
        pretrained_model: Vec::new(),
        ..m.clone()
    };
    if !m.pretrained_model.is_empty() {
        if !m.checkpoint.is_empty() || !m.visual_model.is_empty() {
            return Err(fail(
                exit::USAGE,
                "--pretrained-model names the models itself: drop --checkpoint and --visual-model",
            ));
        }
        return Ok(pretrained_models(&m.pretrained_model)?
            .iter()
            .map(|(model, pretrained)| one(Some(&PathBuf::from(pretrained)), Some(model)))
            .collect());
    }
    let (c, v) = (m.checkpoint.len(), m.visual_model.len());
    Ok(match (c, v) {
        (0, 0) => vec![m.clone()],
        (0, _) => m.visual_model.iter().map(|v| one(None, Some(v))).collect(),
        (_, 0 | 1) => m
            .checkpoint
            .iter()
            .map(|c| one(Some(c), m.visual_model.first()))
            .collect(),
        _ if c == v => m
            .checkpoint
            .iter()
            .zip(&m.visual_model)
            .map(|(c, v)| one(Some(c), Some(v)))
            .collect(),
        _ => {
            return Err(fail(
                exit::USAGE,
                format!("--checkpoint gives {c} files and --visual-model {v} names: give one name for them all, or one per checkpoint"),
            ))
        }
    })
}

/// Loads `--checkpoint` (or the one found by model name) for `--device`/`--precision`/
/// `--engine` and logs where it went. `--local_rank` overrides the launcher's `local_rank`.
pub fn load_model(
    m: &ModelArgs,
    local_rank: Option<usize>,
    log: Log,
) -> anyhow::Result<LoadedModel> {
    let Resolved {
        path: checkpoint,
        visual_model,
        model_config,
        normalize,
        resize,
        pretrained,
    } = checkpoint_of(m, log)?;
    let (native, source) = native_options_and_blocking(&m.run.native, m.run.precision);
    let opts = LoadOptions {
        checkpoint: checkpoint.clone(),
        visual_model,
        model_config,
        device: device(&m.run, m.local_rank.or(local_rank))?,
        precision: m.run.precision,
        engine: m.run.engine,
        native,
        tokenizer: m.tokenizer.clone(),
        hub: hub_caches(m),
    };
    let t = std::time::Instant::now();
    let mut loaded = loader::load(&opts)?;
    loaded.pretrained = pretrained;
    loaded.normalize = normalize;
    loaded.resize = resize;
    if resize != Default::default() {
        let n = loaded.config.image_resolution;
        let how = match resize.mode {
            crate::preprocess::ResizeMode::Longest => {
                format!("the longer side to {n}, centred on a {n} x {n} canvas")
            }
            crate::preprocess::ResizeMode::Squash => format!("both sides to {n}, nothing cropped"),
            crate::preprocess::ResizeMode::Shortest => {
                format!("the shorter side to {n}, centre-cropped")
            }
        };
        log.info(format!(
            "images resized by open_clip's `{}` with {} interpolation (what the weights were evaluated with): {how}",
            resize.mode.name(),
            resize.interpolation.name(),
        ));
    }
    if normalize != Default::default() {
        log.info(format!(
            "images normalised with mean {:?} and std {:?} (what the weights were trained with)",
            normalize.mean, normalize.std
        ));
    }
    log.info(format!(
        "loaded {} ({}) from {} in {:.1}s on {}, engine {}, {}{}",
        loaded.name,
        loaded.checkpoint.format_label(),
        checkpoint.display(),
        t.elapsed().as_secs_f64(),
        crate::device::describe(&loaded.device),
        loaded.plan.engine.name(),
        crate::engine::dtype_name(loaded.plan.dtype),
        loaded
            .plan
            .bf16_kernel
            .map_or(String::new(), |k| format!(" ({k})")),
    ));
    if loaded.plan.engine == crate::engine::Engine::Native {
        if let Some(note) = blocking_note(native.gemm.blocking, source) {
            log.info(note);
        }
    }
    if loaded.config.family.clip_layout() {
        log.info(format!(
            "family {}, activation {}",
            loaded.config.family.name(),
            loaded.config.activation.name()
        ));
    }
    if let crate::tokenizer::TextTokenizer::Hf(t) = &loaded.tokenizer {
        log.info(format!("tokenizer {}", t.path.display()));
    }
    if let Some(n) = &loaded.notice {
        log.warn(n);
    }
    if loaded.plan.requested != loaded.plan.precision {
        log.warn(format!(
            "--precision {}: {}; the native engine computes in {} (pass --engine candle for emulated {} products)",
            loaded.plan.requested.name(),
            bf16_fallback_reason(&m.run.native),
            loaded.plan.precision.name(),
            loaded.plan.requested.name()
        ));
    }
    Ok(loaded)
}

/// The architecture `--visual-model` names (`--model-config`'s entries included).
pub fn architecture(
    model_config: Option<&std::path::Path>,
    visual_model: &str,
) -> anyhow::Result<crate::models::Config> {
    let reg = loader::registry(model_config, None).map_err(|e| fail(exit::USAGE, e.to_string()))?;
    let cfg = reg
        .get(visual_model)
        .map_err(|e| fail(exit::USAGE, format!("--visual-model: {e}")))?
        .clone();
    Ok(cfg)
}

/// `$XDG_CACHE_HOME/pyramidclip` or `~/.cache/pyramidclip`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("pyramidclip");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(h).join(".cache/pyramidclip");
    }
    std::env::temp_dir().join("pyramidclip-cache")
}

/// Lines of a text file given by `flag` (blank lines dropped).
/// The notice for GIFs an ImageFolder left out (the reference leaves them out too).
pub fn gifs_warning(root: &std::path::Path, n: usize) -> String {
    format!(
        "{}: {n} GIF file(s) left out: torchvision's ImageFolder, which the reference reads, lists no .gif",
        root.display()
    )
}

pub fn read_lines(path: &std::path::Path, flag: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(
            exit::INPUT,
            format!("cannot read {flag} {}: {e}", path.display()),
        )
    })?;
    Ok(crate::data::lines(&text))
}

/// `--workers` (at least 1 by its parser), or every core.
pub fn workers(w: Option<usize>) -> usize {
    w.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// Image features of `samples` and text features of `texts` (f32, on the CPU), each behind a
/// progress bar: what `retrieval` and `caption-selection` score.
pub fn encode_images_and_texts(
    m: &LoadedModel,
    samples: Vec<crate::data::Sample>,
    texts: &[String],
    opts: crate::features::StreamOptions,
    text_batch: usize,
    log: Log,
) -> anyhow::Result<(crate::features::Encoded, candle_core::Tensor)> {
    use crate::report::Progress;
    let mut bar = Progress::new(log.quiet, samples.len() as u64, "images", "img");
    let enc = crate::features::stream_samples(m, samples, opts, |d| bar.set(d as u64))?;
    bar.finish();
    let mut bar = Progress::new(log.quiet, texts.len() as u64, "captions", "txt");
    let txt =
        crate::features::texts_with_progress(m, texts, text_batch, false, |d| bar.set(d as u64))?
            .to_device(&candle_core::Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?;
    bar.finish();
    Ok((enc, txt))
}

/// [`encode_images_and_texts`] of a caption set's images and captions for a CoCa with its
/// captioning decoder, each caption a row of its image: also each row's generative loss (NaN
/// where its image was left out), from the same pass over the images.
pub fn encode_with_generative_loss(
    m: &LoadedModel,
    decoder: &crate::engine::Decoder,
    set: &crate::data::captions::CaptionSet,
    opts: crate::features::StreamOptions,
    text_batch: usize,
    log: Log,
) -> anyhow::Result<(crate::features::Encoded, candle_core::Tensor, Vec<f32>)> {
    let (samples, texts) = (set.images.clone(), &set.captions);
    use crate::report::Progress;
    let ctx = m.config.context_length;
    let mut ids = Vec::with_capacity(texts.len() * ctx);
    for t in texts {
        ids.extend(m.tokenizer.tokenize(t, ctx, true)?);
    }
    let rows = crate::generative::CaptionRows {
        image: &set.caption_image,
        ids: &ids,
    };
    let mut bar = Progress::new(log.quiet, samples.len() as u64, "images", "img");
    let (enc, loss) = crate::generative::stream_with_loss(m, decoder, samples, opts, &rows, |d| {
        bar.set(d as u64)
    })?;
    bar.finish();
    let mut bar = Progress::new(log.quiet, texts.len() as u64, "captions", "txt");
    let txt = crate::features::token_rows(m, &ids, ctx, text_batch, false, |d| bar.set(d as u64))?
        .to_device(&candle_core::Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?;
    bar.finish();
    Ok((enc, txt, loss))
}

/// The caption layout `--format` names (None: found by content).
pub fn caption_format(f: crate::cli::CaptionFormat) -> Option<crate::data::captions::Format> {
    use crate::cli::CaptionFormat as C;
    use crate::data::captions::Format;
    match f {
        C::Auto => None,
        C::Jsonl => Some(Format::Jsonl),
        C::Flickr => Some(Format::Flickr),
        C::Coco => Some(Format::Coco),
        C::Karpathy => Some(Format::Karpathy),
        C::Wds => Some(Format::Wds),
        C::ImagePaths => Some(Format::ImagePaths),
        C::Xm3600 => Some(Format::Xm3600),
        C::Csv => Some(Format::Csv),
    }
}

/// Reads the captioned set `a` names (`format`: its `--format` as the command resolved it),
/// before any model loads: `--split` must name a split, and `--split` and `--language` must
/// apply to what was read (usage errors).
pub fn read_caption_set(
    a: &crate::cli::CaptionSetArgs,
    format: Option<crate::data::captions::Format>,
    pick: crate::data::captions::Pick,
    skip_unreadable: bool,
) -> anyhow::Result<crate::data::captions::CaptionSet> {
    use crate::data::captions::{self, Format};
    let split = a.split.as_deref().unwrap_or(captions::DEFAULT_SPLIT);
    if split.is_empty() || split.contains(['/', '\\']) || split == ".." {
        return Err(fail(
            exit::USAGE,
            format!("--split {split:?}: expected a split name such as test or val"),
        ));
    }
    let pick = captions::Pick {
        split,
        language: a.language.as_deref().unwrap_or(captions::DEFAULT_LANGUAGE),
        dataset: a.dataset.as_deref(),
        ..pick
    };
    let set = captions::read(
        &a.captions,
        format,
        pick,
        a.images_root.as_deref(),
        skip_unreadable,
    )?;
    let what = || format!("{} ({})", a.captions.display(), set.format.name());
    if a.language.is_some() && set.format != Format::Xm3600 && !a.captions.is_dir() {
        return Err(fail(
            exit::USAGE,
            format!(
                "--language applies to Crossmodal-3600's captions.jsonl and CLIP_benchmark dataset roots, not to {}",
                what()
            ),
        ));
    }
    if set.split.is_none() && a.split.is_some() {
        return Err(fail(
            exit::USAGE,
            format!(
                "--split applies to Karpathy split JSON and webdataset layouts, not to {}",
                what()
            ),
        ));
    }
    Ok(set)
}

/// The name a captioned set's results go under (`--dataset`, else the set's own) and its
/// language (the one read, else CLIP_benchmark's default): the output placeholders' values.
pub fn caption_set_name<'a>(
    a: &crate::cli::CaptionSetArgs,
    set: &'a crate::data::captions::CaptionSet,
) -> (String, &'a str) {
    let dataset = a.dataset.clone().unwrap_or_else(|| set.default_name());
    let language = set
        .language
        .as_deref()
        .unwrap_or(crate::data::captions::DEFAULT_LANGUAGE);
    (dataset, language)
}

/// The images of a captioned set left out (unreadable, or without captions) as result JSON
/// lists them, with a warning for those the stream could not decode.
pub fn caption_set_skipped(
    set: &crate::data::captions::CaptionSet,
    enc: &crate::features::Encoded,
    log: Log,
) -> Vec<serde_json::Value> {
    use crate::util::path_text;
    let mut skipped: Vec<serde_json::Value> = set
        .skipped
        .iter()
        .map(|(p, why)| serde_json::json!({"path": path_text(p), "error": why}))
        .collect();
    for (i, why) in &enc.skipped {
        skipped.push(serde_json::json!({"path": path_text(&set.images[*i].path), "error": why}));
    }
    if !enc.skipped.is_empty() {
        log.warn(format!(
            "{} unreadable image(s) left out with their captions",
            enc.skipped.len()
        ));
    }
    skipped
}

/// The head of a captioned set's result JSON: task, dataset, the model, the captions read
/// (file, layout, split and language where they apply).
pub fn caption_set_fields(
    (task, dataset): (&str, &str),
    m: &LoadedModel,
    sha: &str,
    captions: &std::path::Path,
    set: &crate::data::captions::CaptionSet,
) -> serde_json::Map<String, serde_json::Value> {
    let mut o = serde_json::Map::new();
    o.insert("task".into(), task.into());
    o.insert("dataset".into(), dataset.into());
    o.extend(model_fields(m, sha));
    o.insert("captions".into(), crate::util::path_text(captions).into());
    o.insert("format".into(), set.format.name().into());
    if let Some(split) = &set.split {
        o.insert("split".into(), split.as_str().into());
    }
    if let Some(language) = &set.language {
        o.insert("language".into(), language.as_str().into());
    }
    o
}

/// What computed a result, for its JSON: the model, its checkpoint, and what ran.
pub fn model_fields(m: &LoadedModel, sha: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut o = serde_json::Map::new();
    o.insert("model".into(), m.name.clone().into());
    o.insert(
        "checkpoint".into(),
        crate::util::path_text(&m.checkpoint.path).into(),
    );
    if m.pretrained != m.checkpoint.path {
        o.insert(
            "pretrained".into(),
            crate::util::path_text(&m.pretrained).into(),
        );
    }
    if m.normalize != Default::default() {
        o.insert(
            "normalize".into(),
            serde_json::json!({"mean": m.normalize.mean, "std": m.normalize.std}),
        );
    }
    if m.resize.mode != Default::default() {
        o.insert("resize_mode".into(), m.resize.mode.name().into());
    }
    if m.resize.interpolation != Default::default() {
        o.insert("interpolation".into(), m.resize.interpolation.name().into());
    }
    o.insert("checkpoint_sha256".into(), sha.into());
    o.insert("family".into(), m.config.family.name().into());
    o.insert("activation".into(), m.config.activation.name().into());
    if let crate::tokenizer::TextTokenizer::Hf(_) = &m.tokenizer {
        o.insert("tokenizer".into(), m.tokenizer.describe().into());
    }
    o.insert("precision".into(), m.plan.precision.name().into());
    if m.plan.requested != m.plan.precision {
        o.insert("requested_precision".into(), m.plan.requested.name().into());
    }
    if let Some(k) = m.plan.bf16_kernel {
        o.insert("bf16_kernel".into(), k.into());
    }
    o.insert("device".into(), crate::device::describe(&m.device).into());
    o.insert("engine".into(), m.plan.engine.name().into());
    o.insert(
        "dtype".into(),
        crate::engine::dtype_name(m.plan.dtype).into(),
    );
    o
}

/// Names output files from CLIP_benchmark's templates (`{dataset}_{model}.json`) before the
/// model is loaded: `{model}` is read from the checkpoint's index (not its weights), and only
/// when a template is given.
pub struct OutputNamer {
    model: String,
    checkpoint: std::path::PathBuf,
}

impl OutputNamer {
    pub fn new(m: &ModelArgs, paths: &[Option<&std::path::Path>]) -> anyhow::Result<Self> {
        if !paths
            .iter()
            .flatten()
            .any(|p| crate::results::is_template(p))
        {
            return Ok(OutputNamer {
                model: String::new(),
                checkpoint: Default::default(),
            });
        }
        Self::read(m)
    }

    /// The model's name read from its checkpoint (which is found and checked on the way).
    pub fn read(m: &ModelArgs) -> anyhow::Result<Self> {
        let r = checkpoint_of(m, Log { quiet: true })?;
        let model = loader::architecture_name(
            &r.path,
            r.model_config.as_deref(),
            r.visual_model.as_deref(),
        )?;
        let checkpoint = r.pretrained;
        Ok(OutputNamer { model, checkpoint })
    }

    /// The file `path` names for one dataset (a plain path as it is).
    pub fn fill(
        &self,
        path: &std::path::Path,
        flag: &str,
        dataset: &str,
        task: &str,
        language: &str,
    ) -> anyhow::Result<std::path::PathBuf> {
        let vars = crate::results::OutputVars {
            dataset,
            model: &self.model,
            checkpoint: &self.checkpoint,
            task,
            language,
        };
        crate::results::fill_template(path, &vars)
            .map_err(|e| fail(exit::USAGE, format!("{flag} {e}")))
    }

    pub fn checkpoint(&self) -> &std::path::Path {
        &self.checkpoint
    }
}

/// What starts a result line when a run has several models: the checkpoint's file name and a
/// tab (nothing with one model, so the upstream line stays as it is).
pub fn line_prefix(m: &LoadedModel, several: bool) -> String {
    if !several {
        return String::new();
    }
    let name = m.pretrained.file_name().unwrap_or_default();
    format!("{}\t", name.to_string_lossy())
}

/// One model of a run and the files it writes.
pub struct ModelRun {
    pub model: ModelArgs,
    /// Per dataset (in the order given): its files, one per output flag; None for a dataset
    /// `--skip-existing` leaves out.
    pub outputs: Vec<Option<Vec<Option<std::path::PathBuf>>>>,
}

impl ModelRun {
    /// The files of a one-dataset run.
    pub fn files(&self) -> &[Option<std::path::PathBuf>] {
        self.outputs[0].as_deref().unwrap_or_default()
    }
}

/// The models of a run ([`models_of`]) with each output flag named for each dataset: a
/// CLIP_benchmark template filled, else the path itself, suffixed `-<dataset>` when there are
/// several datasets. Several models need templates; a file named twice is a usage error, before
/// anything loads. `--skip-existing` leaves out each (model, dataset) whose file for the first
/// flag (`--output`) exists, and a model with nothing left; `--distributed` (`share`) the
/// (model, dataset) runs another process takes. Returns the runs and whether there are several
/// models.
pub fn plan_models(
    m: &ModelArgs,
    flags: &[(&str, Option<&std::path::Path>)],
    datasets: &[&str],
    (task, language): (&str, &str),
    skip_existing: bool,
    share: Option<shard::RunShare>,
    log: Log,
) -> anyhow::Result<(Vec<ModelRun>, bool)> {
    let models = models_of(m)?;
    let several = models.len() > 1;
    let mine = share.map(|s| {
        let mine = s.assigned(models.len(), datasets.len());
        let n = mine.iter().flatten().filter(|&&b| b).count();
        let per_language = models.len() * datasets.len();
        let language = if s.languages > 1 {
            format!(
                " in language {} of {} ({} runs in all)",
                s.language + 1,
                s.languages,
                per_language * s.languages
            )
        } else {
            String::new()
        };
        log.info(format!(
            "--distributed: process {} of {} takes {n} of the {per_language} runs{language}",
            s.rank, s.world
        ));
        mine
    });
    let paths: Vec<_> = flags.iter().map(|(_, p)| *p).collect();
    let mut runs: Vec<ModelRun> = Vec::new();
    let mut seen: Vec<(std::path::PathBuf, String)> = Vec::new();
    for (mi, model) in models.into_iter().enumerate() {
        let namer = if several {
            OutputNamer::read(&model)?
        } else {
            OutputNamer::new(&model, &paths)?
        };
        let mut outputs = Vec::with_capacity(datasets.len());
        for (di, &dataset) in datasets.iter().enumerate() {
            let who = if several {
                format!("{} on {dataset}", namer.checkpoint().display())
            } else {
                dataset.to_string()
            };
            let mut files = Vec::with_capacity(flags.len());
            for &(flag, path) in flags {
                let Some(path) = path else {
                    files.push(None);
                    continue;
                };
                let p = if crate::results::is_template(path) {
                    namer.fill(path, flag, dataset, task, language)?
                } else if several {
                    return Err(fail(
                        exit::USAGE,
                        format!("{flag} {}: with several checkpoints each needs its own file: use CLIP_benchmark's placeholders, e.g. {{dataset}}_{{pretrained}}.json", path.display()),
                    ));
                } else if datasets.len() > 1 {
                    crate::results::suffixed_path(path, dataset)
                } else {
                    path.to_path_buf()
                };
                if let Some((_, other)) = seen.iter().find(|(q, _)| *q == p) {
                    return Err(fail(
                        exit::USAGE,
                        format!(
                            "{flag}: {other} and {who} would both write {}; add {{dataset}} or {{pretrained}}",
                            p.display()
                        ),
                    ));
                }
                seen.push((p.clone(), who.clone()));
                files.push(Some(p));
            }
            let theirs = mine.as_ref().is_some_and(|m| !m[mi][di]);
            let skip = theirs || exists_already(skip_existing, files[0].as_deref(), &who, log);
            if !skip {
                for (&(flag, _), p) in flags.iter().zip(&files) {
                    if let Some(p) = p {
                        prepare_output(p, flag)?;
                    }
                }
            }
            outputs.push((!skip).then_some(files));
        }
        if outputs.iter().any(Option::is_some) {
            runs.push(ModelRun { model, outputs });
        }
    }
    Ok((runs, several))
}

/// `--skip-existing`: whether `output` exists (logged), so the run is left out.
pub fn exists_already(
    skip_existing: bool,
    output: Option<&std::path::Path>,
    what: &str,
    log: Log,
) -> bool {
    let Some(p) = output.filter(|p| skip_existing && p.exists()) else {
        return false;
    };
    log.info(format!(
        "{what}: skipped, {} exists (--skip-existing)",
        p.display()
    ));
    true
}

/// `--skip-existing` needs the file it looks for.
pub fn skip_existing_needs_output(
    skip: bool,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if skip && output.is_none() {
        return Err(fail(
            exit::USAGE,
            "--skip-existing needs --output (the file whose presence skips the run)",
        ));
    }
    Ok(())
}

/// Before a run: the folder of the file a flag names is created if missing (templated
/// outputs such as `results/{model}/{dataset}.json` name many), and must take a new file
/// where [`crate::util::write_atomic`] will write one, so an unwritable path fails now and
/// not after the evaluation it was meant to keep. A device or FIFO is written in place and
/// passes; the folder is probed by creating and removing a hidden file in it.
pub fn prepare_output(path: &std::path::Path, flag: &str) -> anyhow::Result<()> {
    let bad = |why: String| {
        fail(
            exit::USAGE,
            format!("cannot write {flag} {}: {why}", path.display()),
        )
    };
    let target = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(bad("it is a folder".into())),
        Ok(m) if !m.is_file() => return Ok(()),
        // A symlinked file is replaced where it points.
        Ok(_) => std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?,
        Err(_) => path.to_path_buf(),
    };
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if dir.exists() && !dir.is_dir() {
        return Err(bad(format!("{} is not a folder", dir.display())));
    }
    crate::util::probe_dir(dir).map_err(|e| bad(format!("folder {}: {e}", dir.display())))
}

/// Writes `bytes` to the file a flag names, atomically.
pub fn write_output(path: &std::path::Path, flag: &str, bytes: &[u8]) -> anyhow::Result<()> {
    crate::util::write_atomic(path, bytes).map_err(|e| {
        fail(
            exit::RUNTIME,
            format!("cannot write {flag} {}: {e}", path.display()),
        )
    })
}

/// SHA-256 of the checkpoint `--checkpoint` names.
pub fn checkpoint_sha(path: &std::path::Path) -> anyhow::Result<String> {
    crate::zeroshot::file_sha256(path).map_err(|e| {
        fail(
            exit::CHECKPOINT,
            format!("cannot read checkpoint {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretrained_models_are_read_as_clip_benchmark_reads_them() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("models.txt");
        std::fs::write(&f, "ViT-B-32,openai\n\nRN50, yfcc15m\n").unwrap();
        let got = pretrained_models(&[
            f.display().to_string(),
            "openai".into(),
            "ViT-B-16,/w/b16.pt".into(),
        ])
        .unwrap();
        assert_eq!(got.len(), 2 + 4 + 1);
        assert_eq!(got[1], ("RN50".to_string(), "yfcc15m".to_string()));
        assert_eq!(got[5], ("ViT-L-14-336".to_string(), "openai".to_string()));
        assert_eq!(got[6].1, "/w/b16.pt");
        for bad in ["ViT-B-32", "ViT-B-32,", ",openai"] {
            let e = pretrained_models(&[bad.to_string()]).unwrap_err();
            assert_eq!(exit_code(&e), exit::USAGE, "{bad}");
        }
    }
}
