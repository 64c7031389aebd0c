//! `pyramidclip preprocess`: the reference's preprocessed pixels of images, to safetensors.

use crate::cli::PreprocessArgs;
use anyhow::Context;
use candle_core::Device;
use rayon::prelude::*;
use std::collections::HashMap;

pub fn run(args: PreprocessArgs) -> anyhow::Result<()> {
    super::prepare_output(&args.out, "--out")?;
    let n = args.resolution;
    let resize = crate::preprocess::Resize {
        mode: args.resize_mode,
        interpolation: args.interpolation,
    };
    let crop_all = || -> anyhow::Result<Vec<u8>> {
        let crops: Vec<Result<Vec<u8>, crate::preprocess::Error>> = args
            .images
            .par_iter()
            .map(|p| crate::preprocess::crop_u8(p, n, resize))
            .collect();
        let mut out = Vec::with_capacity(args.images.len() * 3 * n * n);
        for c in crops {
            out.extend(c?);
        }
        Ok(out)
    };
    let crops = match args.workers {
        Some(w) => rayon::ThreadPoolBuilder::new()
            .num_threads(w)
            .build()?
            .install(crop_all)?,
        None => crop_all()?,
    };
    let t = crate::preprocess::normalize_batch(
        crops,
        args.images.len(),
        n,
        &Device::Cpu,
        Default::default(),
    )?;
    let mut meta = HashMap::new();
    meta.insert("resize_mode".to_string(), resize.mode.name().to_string());
    let interpolation = resize.interpolation.name().to_string();
    meta.insert("interpolation".to_string(), interpolation);
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
    crate::util::write_safetensors(&args.out, &[("pixels".to_string(), t)], Some(meta))
        .with_context(|| format!("cannot write --out {}", args.out.display()))?;
    Ok(())
}
