//! `pyramidclip convert`: rewrites a checkpoint as safetensors, architecture in the metadata.

use super::{exit, fail};
use crate::checkpoint::{self, Checkpoint};
use crate::cli::ConvertArgs;
use anyhow::Context;
use candle_core::{DType, Device};
use std::collections::HashMap;

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let dtype = args.dtype.dtype();
    let reg = crate::loader::registry(args.model_config.as_deref(), None)
        .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    super::prepare_output(&args.out, "OUT")?;
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
    crate::util::write_safetensors(&args.out, &tensors, Some(meta))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({name}, {} tensors, {})",
        args.out.display(),
        tensors.len(),
        args.dtype.name()
    );
    Ok(())
}
