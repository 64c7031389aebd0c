//! Loading a model for evaluation: the registry of architectures (built-in presets plus
//! `--model-config`), the checkpoint with its detected architecture, strict loading, and the
//! engine chosen for the device and precision.

use crate::checkpoint::{self, Checkpoint, StrictLoader};
use crate::device::Precision;
use crate::engine::{self, EngineChoice, Model, Plan};
use crate::models::{config, Config, Registry};
use crate::native::NativeOptions;
use candle_core::Device;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::Error),
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error("{0}")]
    Tokenizer(String),
    /// `--tokenizer` given for a model that takes CLIP's.
    #[error("{0}")]
    TokenizerFlag(String),
    #[error(transparent)]
    HfTokenizer(#[from] crate::tokenizer::hf::Error),
}

/// What to load and how to run it.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub checkpoint: PathBuf,
    /// The architecture's name; detected from the checkpoint when None.
    pub visual_model: Option<String>,
    /// Extra architectures in the upstream `model_config.yml` format.
    pub model_config: Option<PathBuf>,
    pub device: Device,
    pub precision: Precision,
    pub engine: EngineChoice,
    pub native: NativeOptions,
    /// A HuggingFace tokenizer's `tokenizer.json` (or its folder) for a model that has one
    /// (SigLIP, HF text towers); else it is looked for beside the checkpoint, then in `hub`.
    pub tokenizer: Option<PathBuf>,
    /// Where open_clip's downloads are (a SigLIP or HF text tower's tokenizer repo).
    pub hub: crate::hub::Caches,
}

/// A model built from a checkpoint, with what was learned while loading it.
pub struct LoadedModel {
    pub model: Model,
    pub name: String,
    pub config: Config,
    pub checkpoint: Arc<Checkpoint>,
    pub device: Device,
    /// The engine and dtype the model computes in (what ran, not what was asked).
    pub plan: Plan,
    /// How a choice the weights cannot show was made (printed once at load).
    pub notice: Option<String>,
    /// The images' normalisation: OpenAI's, or what open_clip's tag gives.
    pub normalize: crate::preprocess::Normalize,
    /// How images are brought to the model's size: OpenAI's, or what open_clip's tag gives.
    pub resize: crate::preprocess::Resize,
    /// What the user named the weights by: the checkpoint's path, or the open_clip tag it was
    /// found by (CLIP_benchmark's `{pretrained}` in output names).
    pub pretrained: PathBuf,
    /// The text tower's tokenizer: CLIP's, or the model's HuggingFace one (SigLIP, HF text towers).
    pub tokenizer: crate::tokenizer::TextTokenizer,
}

impl LoadedModel {
    /// A scalar the checkpoint holds (`logit_scale`, `logit_bias`), if it holds it.
    fn scalar(&self, key: &str) -> Option<f32> {
        self.checkpoint.shape(key)?;
        self.checkpoint.read_f32(key).ok()?.first().copied()
    }

    /// The learned temperature as the model's forward returns it, `exp(logit_scale)`; `None`
    /// where the checkpoint has none.
    pub fn logit_scale(&self) -> Option<f32> {
        self.scalar("logit_scale").map(|v| (v as f64).exp() as f32)
    }

    /// SigLIP's learned bias of its sigmoid scores.
    pub fn logit_bias(&self) -> Option<f32> {
        (self.config.family == crate::models::Family::Siglip)
            .then(|| self.scalar("logit_bias"))
            .flatten()
    }
}

/// The registry with `--model-config`'s entries, `visual_model` (if any) checked against it.
pub fn registry(
    model_config: Option<&Path>,
    visual_model: Option<&str>,
) -> Result<Registry, Error> {
    // An open_clip `hf-hub:`/`local-dir:` name is its config file's one entry.
    let schema = visual_model.filter(|v| crate::hub::schema(v).is_some());
    let reg = Registry::load_named(model_config, schema)?;
    if let Some(name) = visual_model {
        reg.resolve(name, config::Family::PyramidClip)?;
    }
    Ok(reg)
}

/// The architecture's name a load of `checkpoint` would report, from the checkpoint's index
/// and shapes alone (no weights read): what names outputs before the model is built.
pub fn architecture_name(
    checkpoint: &Path,
    model_config: Option<&Path>,
    visual_model: Option<&str>,
) -> Result<String, Error> {
    let reg = registry(model_config, visual_model)?;
    let ckpt = Checkpoint::open(checkpoint)?;
    let arch = checkpoint::detect_config(&ckpt, &reg, visual_model)?;
    Ok(arch.name.unwrap_or_else(|| "custom".to_string()))
}

/// Opens, detects and strictly loads a checkpoint into a model for the engine that fits, with
/// its text tower's tokenizer.
pub fn load(opts: &LoadOptions) -> Result<LoadedModel, Error> {
    let mut m = load_weights(opts)?;
    m.tokenizer = text_tokenizer(&m.config, &opts.checkpoint, opts)?;
    Ok(m)
}

/// [`load`] without looking for a HuggingFace tokenizer (the model carries CLIP's): for
/// callers that feed token ids themselves (`bench`).
pub fn load_weights(opts: &LoadOptions) -> Result<LoadedModel, Error> {
    let reg = registry(opts.model_config.as_deref(), opts.visual_model.as_deref())?;
    let plan = engine::plan(
        opts.engine,
        &opts.device,
        opts.precision,
        opts.native.bf16_available(),
    )?;
    let ckpt = Arc::new(Checkpoint::open(&opts.checkpoint)?);
    Ok(load_from(
        ckpt,
        &reg,
        opts.visual_model.as_deref(),
        plan,
        &opts.device,
        opts.native,
    )?)
}

/// The tokenizer `cfg`'s text tower takes: CLIP's, or for SigLIP and HF text towers their HuggingFace one,
/// from `--tokenizer`, else beside the checkpoint (a hub snapshot or open_clip's `local-dir:`),
/// else the config's hub repo in the caches (where open_clip downloads it).
pub fn text_tokenizer(
    cfg: &Config,
    checkpoint: &Path,
    opts: &LoadOptions,
) -> Result<crate::tokenizer::TextTokenizer, Error> {
    use crate::tokenizer::{hf::HfTokenizer, TextTokenizer};
    let Some(spec) = cfg.hf_tokenizer() else {
        if let Some(t) = &opts.tokenizer {
            return Err(Error::TokenizerFlag(format!(
                "--tokenizer {}: this model takes CLIP's tokenizer (only SigLIP, CLIPA, MetaCLIP 2 worldwide and HF text tower models bring their own)",
                t.display()
            )));
        }
        return Ok(TextTokenizer::Clip);
    };
    let beside = checkpoint
        .parent()
        .map(|d| d.join("tokenizer.json"))
        .filter(|p| p.is_file());
    let in_hub = || {
        opts.hub
            .hf
            .as_deref()
            .and_then(|hf| crate::hub::hub_file(hf, spec.repo, "tokenizer.json"))
    };
    let path = opts.tokenizer.clone().or(beside).or_else(in_hub).ok_or_else(|| {
        let repo = if spec.repo.is_empty() {
            "its tokenizer".to_string()
        } else {
            format!("its tokenizer `{}`", spec.repo)
        };
        let looked = opts.hub.hf.as_ref().map_or(String::new(), |hf| {
            format!(" or in the hub cache {}", hf.display())
        });
        Error::Tokenizer(format!(
            "a {} model needs {repo} (tokenizer.json): not found beside {}{looked}; pass --tokenizer FILE|DIR",
            match cfg.family {
                crate::models::Family::Siglip => "SigLIP",
                crate::models::Family::Clipa => "CLIPA",
                _ if cfg.text_eos.is_some() => "MetaCLIP 2",
                _ => "HF text tower",
            },
            checkpoint.display()
        ))
    })?;
    let tok = HfTokenizer::open(&path, spec.clean, spec.strip_sep).map_err(|e| {
        match &opts.tokenizer {
            // Named by the flag that gave it.
            Some(_) => Error::Tokenizer(format!("--tokenizer: {e}")),
            None => Error::HfTokenizer(e),
        }
    })?;
    Ok(TextTokenizer::Hf(Arc::new(tok)))
}

/// [`load`] from an open checkpoint with a settled plan.
pub fn load_from(
    ckpt: Arc<Checkpoint>,
    registry: &Registry,
    visual_model: Option<&str>,
    plan: Plan,
    device: &Device,
    native: NativeOptions,
) -> Result<LoadedModel, checkpoint::Error> {
    let arch = checkpoint::detect_config(&ckpt, registry, visual_model)?;
    let name = arch.name.clone().unwrap_or_else(|| "custom".to_string());
    arch.config
        .validate(&name)
        .map_err(|e| checkpoint::Error::Architecture(e.to_string()))?;
    build(ckpt, name, arch.config, arch.notice, plan, device, native)
}

/// The same checkpoint and architecture as `m`, built again to compute in fp32 on the same
/// engine and device: what a reduced-precision run's near-ties are decided with.
pub fn fp32_twin(m: &LoadedModel, native: NativeOptions) -> Result<LoadedModel, checkpoint::Error> {
    let plan = Plan {
        dtype: candle_core::DType::F32,
        precision: Precision::Fp32,
        requested: Precision::Fp32,
        bf16_kernel: None,
        ..m.plan
    };
    let twin = build(
        m.checkpoint.clone(),
        m.name.clone(),
        m.config.clone(),
        None,
        plan,
        &m.device,
        native,
    )?;
    Ok(LoadedModel {
        normalize: m.normalize,
        resize: m.resize,
        pretrained: m.pretrained.clone(),
        tokenizer: m.tokenizer.clone(),
        ..twin
    })
}

/// CoCa's captioning decoder for `m` (its engine, dtype and device), from `m`'s checkpoint;
/// `None` when the model is not a CoCa or the checkpoint holds no decoder (it is not needed
/// to embed, so a checkpoint may leave it out).
pub fn caption_decoder(m: &LoadedModel) -> Result<Option<engine::Decoder>, checkpoint::Error> {
    if m.config.family != crate::models::Family::Coca
        || m.checkpoint.shape("text_decoder.ln_final.weight").is_none()
    {
        return Ok(None);
    }
    let (loader, vb) = strict_builder(&m.checkpoint, &m.plan, &m.device);
    // The native model's own options (its kernels, bf16 or not); unused by candle.
    let native = match &m.model {
        Model::Native(n) => n.options(),
        Model::Candle(_) => NativeOptions::default(),
    };
    let mut config = m.config.clone();
    if config.coca_decoder.is_none() {
        // A config without the decoder's sizes (a user's `model_config.yml`): the checkpoint's
        // and open_clip's 64-wide heads.
        config.coca_decoder = checkpoint::coca_decoder_shapes(&m.checkpoint);
    }
    engine::Decoder::new(&config, vb.pp("text_decoder"), m.plan.engine, native)
        .map(Some)
        .map_err(|e| {
            loader
                .take_error()
                .unwrap_or_else(|| checkpoint::Error::Content {
                    path: m.checkpoint.path.clone(),
                    // candle appends a backtrace to some errors: its first line.
                    msg: format!(
                        "building the captioning decoder failed: {}",
                        e.to_string().lines().next().unwrap_or_default()
                    ),
                })
        })
}

/// A strict loader over `ckpt` and the VarBuilder `plan`'s engine reads it through: f32 for
/// the native engine (it rounds what it packs in bf16 itself), the compute dtype for candle.
fn strict_builder(
    ckpt: &Arc<Checkpoint>,
    plan: &Plan,
    device: &Device,
) -> (StrictLoader, candle_nn::VarBuilder<'static>) {
    let loader = StrictLoader::new(ckpt.clone());
    let dtype = match plan.engine {
        engine::Engine::Native => candle_core::DType::F32,
        engine::Engine::Candle => plan.dtype,
    };
    let vb = candle_nn::VarBuilder::from_backend(Box::new(loader.clone()), dtype, device.clone());
    (loader, vb)
}

fn build(
    ckpt: Arc<Checkpoint>,
    name: String,
    config: Config,
    notice: Option<String>,
    plan: Plan,
    device: &Device,
    native: NativeOptions,
) -> Result<LoadedModel, checkpoint::Error> {
    let (loader, vb) = strict_builder(&ckpt, &plan, device);
    let native = native
        .with_bf16(plan.engine == engine::Engine::Native && plan.dtype == candle_core::DType::BF16);
    let plan = Plan {
        bf16_kernel: native.bf16_kernel(),
        ..plan
    };
    let model = match Model::new(&config, vb, plan.engine, native) {
        Ok(m) => m,
        Err(e) => {
            return Err(loader
                .take_error()
                .unwrap_or_else(|| checkpoint::Error::Content {
                    path: ckpt.path.clone(),
                    msg: format!("building the model failed: {e}"),
                }))
        }
    };
    loader.check_unexpected()?;
    if plan.engine == engine::Engine::Candle && !device.is_cpu() {
        // Checks the GPU's fused kernels now (once per device), so that any warning comes with
        // the load rather than with the first batch.
        crate::models::fused::path(device);
    }
    Ok(LoadedModel {
        model,
        name,
        config,
        pretrained: ckpt.path.clone(),
        normalize: Default::default(),
        resize: Default::default(),
        tokenizer: Default::default(),
        checkpoint: ckpt,
        device: device.clone(),
        plan,
        notice,
    })
}

/// Where the released checkpoints are listed (also in `pretrained_model/README.md`).
pub const MODEL_ZOO: &str = "https://github.com/Yuting-Gao/PyramidCLIP#pyramidclip-model-zoo";

/// A checkpoint looked up by model name, as upstream's instructions lay them out.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("no checkpoint for {model} in {searched} (looked for {model}.pth.tar, .pth, .pt, .safetensors or *-{model}.pth[.tar]); download it from the model zoo ({MODEL_ZOO}, also listed in pretrained_model/README.md) into pretrained_model/, or pass --checkpoint")]
    None { model: String, searched: String },
    #[error("several checkpoints for {model} in {dir}: {list}; pass --checkpoint to choose one")]
    Several {
        model: String,
        dir: String,
        list: String,
    },
}

/// Finds `model`'s checkpoint in `dirs`, in order: in each, the exact names `<M>.pth.tar`,
/// `<M>.pth`, `<M>.pt`, `<M>.safetensors` (the first present wins), then the single file
/// whose name ends in `-<M>.pth` or `-<M>.pth.tar` (several are an error listing them).
pub fn find_checkpoint(model: &str, dirs: &[PathBuf]) -> Result<PathBuf, FindError> {
    for dir in dirs {
        for ext in ["pth.tar", "pth", "pt", "safetensors"] {
            let p = dir.join(format!("{model}.{ext}"));
            if p.is_file() {
                return Ok(p);
            }
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let (a, b) = (format!("-{model}.pth"), format!("-{model}.pth.tar"));
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(&a) || n.ends_with(&b))
            })
            .collect();
        found.sort();
        match found.len() {
            0 => {}
            1 => return Ok(found.remove(0)),
            _ => {
                return Err(FindError::Several {
                    model: model.into(),
                    dir: dir.display().to_string(),
                    list: found
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
    }
    Err(FindError::None {
        model: model.into(),
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" and "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_found_by_model_name() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let dirs = vec![a.clone(), b.clone()];
        let e = find_checkpoint("RN50", &dirs).unwrap_err().to_string();
        assert!(
            e.contains("pretrained_model") && e.contains(&a.display().to_string()),
            "{e}"
        );
        std::fs::write(b.join("PyramidCLIP-YFCC15MV2-RN50.pth"), b"x").unwrap();
        std::fs::write(b.join("PyramidCLIP-YFCC15MV2-RN50x4.pth"), b"x").unwrap();
        assert_eq!(
            find_checkpoint("RN50", &dirs).unwrap(),
            b.join("PyramidCLIP-YFCC15MV2-RN50.pth")
        );
        std::fs::write(b.join("other-RN50.pth.tar"), b"x").unwrap();
        let e = find_checkpoint("RN50", &dirs).unwrap_err().to_string();
        assert!(
            e.contains("several") && e.contains("other-RN50.pth.tar"),
            "{e}"
        );
        // An exact name in the first folder wins.
        std::fs::write(a.join("RN50.pt"), b"x").unwrap();
        assert_eq!(find_checkpoint("RN50", &dirs).unwrap(), a.join("RN50.pt"));
        std::fs::write(a.join("RN50.pth.tar"), b"x").unwrap();
        assert_eq!(
            find_checkpoint("RN50", &dirs).unwrap(),
            a.join("RN50.pth.tar")
        );
    }
}
