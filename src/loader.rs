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
}

/// The registry with `--model-config`'s entries, `visual_model` (if any) checked against it.
pub fn registry(
    model_config: Option<&Path>,
    visual_model: Option<&str>,
) -> Result<Registry, Error> {
    let reg = Registry::load(model_config)?;
    if let Some(name) = visual_model {
        reg.get(name)?;
    }
    Ok(reg)
}

/// Opens, detects and strictly loads a checkpoint into a model for the engine that fits.
pub fn load(opts: &LoadOptions) -> Result<LoadedModel, Error> {
    let reg = registry(opts.model_config.as_deref(), opts.visual_model.as_deref())?;
    let plan = engine::plan(opts.engine, &opts.device, opts.precision)?;
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
    let loader = StrictLoader::new(ckpt.clone());
    let vb =
        candle_nn::VarBuilder::from_backend(Box::new(loader.clone()), plan.dtype, device.clone());
    let model = match Model::new(&arch.config, vb, plan.engine, native) {
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
    Ok(LoadedModel {
        model,
        name,
        config: arch.config,
        checkpoint: ckpt,
        device: device.clone(),
        plan,
    })
}
