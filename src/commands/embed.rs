//! `pyramidclip embed`: image and/or text features to a safetensors file.

use super::{exit, fail, load_model, read_lines};
use crate::cli::EmbedArgs;
use crate::features;
use crate::report::Log;
use anyhow::Context;
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::PathBuf;

pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
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
    super::prepare_output(&args.out, "--out")?;
    let m = load_model(&args.model, None, log)?;
    let img = (!images.is_empty())
        .then(|| features::images(&m, &images, args.batch_size, args.raw))
        .transpose()?;
    let txt = (!texts.is_empty())
        .then(|| features::texts(&m, &texts, args.batch_size, args.raw))
        .transpose()?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    if let Some(t) = img {
        tensors.push(("image_features".into(), t));
    }
    if let Some(t) = txt {
        tensors.push(("text_features".into(), t));
    }
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), m.name.clone());
    meta.insert("engine".to_string(), m.plan.engine.name().to_string());
    meta.insert("precision".to_string(), m.plan.precision.name().to_string());
    if m.plan.requested != m.plan.precision {
        meta.insert(
            "requested_precision".to_string(),
            m.plan.requested.name().to_string(),
        );
    }
    if let Some(k) = m.plan.bf16_kernel {
        meta.insert("bf16_kernel".to_string(), k.to_string());
    }
    meta.insert(
        "dtype".to_string(),
        crate::engine::dtype_name(m.plan.dtype).to_string(),
    );
    meta.insert("device".to_string(), crate::device::describe(&m.device));
    meta.insert("normalized".to_string(), (!args.raw).to_string());
    if m.normalize != Default::default() {
        meta.insert(
            "normalize".to_string(),
            serde_json::json!({"mean": m.normalize.mean, "std": m.normalize.std}).to_string(),
        );
    }
    if m.resize.mode != Default::default() {
        meta.insert("resize_mode".to_string(), m.resize.mode.name().to_string());
    }
    if m.resize.interpolation != Default::default() {
        let i = m.resize.interpolation.name();
        meta.insert("interpolation".to_string(), i.to_string());
    }
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
    crate::util::write_safetensors(&args.out, &tensors, Some(meta))
        .with_context(|| format!("cannot write --out {}", args.out.display()))?;
    log.info(format!(
        "wrote {} ({} images, {} texts)",
        args.out.display(),
        images.len(),
        texts.len()
    ));
    Ok(())
}
