//! Mirrors the reference's text tower (`encode_text`) in candle tensor ops: token embedding,
//! causal transformer, `ln_final`, then a max over all positions (padding included) before
//! `text_projection`; for CLIP checkpoints the end-of-text position (the largest token id)
//! instead of the max.

use super::config::Config;
use super::nn::{self, LayerNorm, Linear};
use super::transformer::Transformer;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Where a CLIP text tower pools a prompt: the first position holding the largest id (the
/// end-of-text token), as the reference's `argmax`.
pub fn eot_position<T: PartialOrd + Copy>(ids: &[T]) -> usize {
    let mut best = 0;
    for (i, &t) in ids.iter().enumerate() {
        if t > ids[best] {
            best = i;
        }
    }
    best
}

/// Positions a CLIP text tower computes for prompts of `l` ids each: up to the latest
/// end-of-text position among them. Under the causal mask no position sees a later one, so
/// the pooled rows do not depend on what follows; ImageNet's prompts end after ~10 of 77.
/// (PyramidCLIP's max over every position needs them all.)
pub fn clip_span<T: PartialOrd + Copy>(ids: &[T], l: usize) -> usize {
    if l == 0 {
        return 0;
    }
    ids.chunks(l)
        .map(|row| eot_position(row) + 1)
        .max()
        .unwrap_or(l)
}

#[derive(Debug, Clone)]
pub struct TextEncoder {
    token_embedding: Tensor,
    positional_embedding: Tensor,
    transformer: Transformer,
    ln_final: LayerNorm,
    /// `x @ text_projection` as a bias-free linear layer.
    text_projection: Linear,
    family: super::Family,
}

impl TextEncoder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let w = cfg.transformer_width;
        let dt = vb.dtype();
        let token_embedding = nn::load(&vb.pp("token_embedding"), &[cfg.vocab_size, w], "weight")?;
        let positional_embedding = nn::load(&vb, &[cfg.context_length, w], "positional_embedding")?;
        let proj = nn::load(&vb, &[w, cfg.embed_dim], "text_projection")?;
        Ok(Self {
            token_embedding,
            positional_embedding,
            transformer: Transformer::new(
                w,
                cfg.transformer_layers,
                cfg.transformer_heads,
                None,
                super::transformer::Style::of(cfg),
                vb.pp("transformer"),
            )?,
            ln_final: nn::layer_norm(w, vb.pp("ln_final"))?,
            text_projection: Linear::from_parts(&proj.t()?, None, dt)?,
            family: cfg.family,
        })
    }
}

impl Module for TextEncoder {
    /// `tokens`: `[N, context_length]` integer ids. Returns `[N, embed_dim]` (not normalised).
    fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (n, l) = tokens.dims2()?;
        let ctx = self.positional_embedding.dim(0)?;
        if l != ctx {
            candle_core::bail!("{l} tokens per prompt, the model takes {ctx}");
        }
        let tokens = tokens.to_dtype(DType::U32)?;
        // CLIP pools one position per prompt: the positions after the batch's latest one are
        // left out (see `clip_span`); PyramidCLIP's max needs every position.
        let (tokens, eot) = match self.family {
            super::Family::PyramidClip => (tokens, None),
            super::Family::Clip => {
                let rows = tokens.to_vec2::<u32>()?;
                let eot: Vec<usize> = rows.iter().map(|r| eot_position(r)).collect();
                let span = eot.iter().map(|&p| p + 1).max().unwrap_or(l);
                (tokens.narrow(1, 0, span)?, Some(eot))
            }
        };
        let span = tokens.dim(1)?;
        let ids = tokens.flatten_all()?;
        let vocab = self.token_embedding.dim(0)?;
        let top = ids.max(0)?.to_dtype(DType::U32)?.to_scalar::<u32>()?;
        if top as usize >= vocab {
            candle_core::bail!("token id {top} is outside the vocabulary of {vocab}");
        }
        let x = self
            .token_embedding
            .index_select(&ids, 0)?
            .reshape((n, span, ()))?;
        let x = x.broadcast_add(&self.positional_embedding.narrow(0, 0, span)?)?;
        let x = self.transformer.forward(&x, true)?;
        let x = self.ln_final.forward(&x)?;
        let x = match eot {
            // Max over every position, padding included (the reference's pooling).
            None => x.max(1)?,
            Some(eot) => {
                let rows: Vec<Tensor> = eot
                    .iter()
                    .enumerate()
                    .map(|(b, &p)| x.get(b)?.get(p))
                    .collect::<Result<_>>()?;
                Tensor::stack(&rows, 0)?
            }
        };
        self.text_projection.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_span_ends_at_the_latest_end_of_text() {
        // The first largest id, as `argmax`.
        assert_eq!(eot_position(&[49406u32, 320, 49407, 0, 49407]), 2);
        assert_eq!(eot_position(&[0i64; 4]), 0);
        let ids = [[5u32, 9, 0, 0], [5, 7, 8, 9], [9, 0, 0, 0]].concat();
        assert_eq!(clip_span(&ids, 4), 4);
        assert_eq!(clip_span(&ids[..4], 4), 2);
        assert_eq!(clip_span(&ids[8..], 4), 1);
        assert_eq!(clip_span::<u32>(&[], 4), 4);
    }
}
