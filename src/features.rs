//! Features of explicit lists of images and texts (`embed`, `predict`): decoded in parallel,
//! encoded in batches, returned in input order as f32.

use crate::loader::LoadedModel;
use crate::tokenizer::Tokenizer;
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
            .map(|p| crate::preprocess::crop_u8(p, n))
            .collect();
        let mut bytes = Vec::with_capacity(chunk.len() * 3 * n * n);
        for c in crops {
            bytes.extend(c?);
        }
        let px = crate::preprocess::normalize_batch(bytes, chunk.len(), n, &m.device)?;
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
    let ctx = m.config.context_length;
    let mut parts = Vec::new();
    for chunk in texts.chunks(batch.max(1)) {
        let mut ids = Vec::with_capacity(chunk.len() * ctx);
        for t in chunk {
            ids.extend(Tokenizer::global().tokenize(t, ctx, true)?);
        }
        let tok = Tensor::from_vec(ids, (chunk.len(), ctx), &m.device)?;
        let f = if raw {
            m.model.encode_text(&tok)?
        } else {
            m.model.encode_text_normalized(&tok)?
        };
        parts.push(f.to_dtype(DType::F32)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}
