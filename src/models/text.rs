//! Mirrors the reference's text tower (`encode_text`) in candle tensor ops: token embedding,
//! causal transformer, `ln_final`, then a max over all positions (padding included) before
//! `text_projection`; for CLIP checkpoints the end-of-text position (the largest token id)
//! instead of the max.

use super::config::Config;
use super::nn::{self, LayerNorm, Linear};
use super::transformer::Transformer;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

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
        let ids = tokens.to_dtype(DType::U32)?.flatten_all()?;
        let vocab = self.token_embedding.dim(0)?;
        let top = ids.max(0)?.to_dtype(DType::U32)?.to_scalar::<u32>()?;
        if top as usize >= vocab {
            candle_core::bail!("token id {top} is outside the vocabulary of {vocab}");
        }
        let x = self
            .token_embedding
            .index_select(&ids, 0)?
            .reshape((n, l, ()))?;
        let x = x.broadcast_add(&self.positional_embedding)?;
        let x = self.transformer.forward(&x, true)?;
        let x = self.ln_final.forward(&x)?;
        let x = match self.family {
            // Max over every position, padding included (the reference's pooling).
            super::Family::PyramidClip => x.max(1)?,
            // CLIP: the first position holding the largest id (end-of-text), as `argmax`.
            super::Family::Clip => {
                let ids = tokens.to_dtype(DType::U32)?.to_vec2::<u32>()?;
                let rows: Vec<Tensor> = ids
                    .iter()
                    .enumerate()
                    .map(|(b, row)| {
                        let mut best = 0;
                        for (i, &t) in row.iter().enumerate() {
                            if t > row[best] {
                                best = i;
                            }
                        }
                        x.get(b)?.get(best)
                    })
                    .collect::<Result<_>>()?;
                Tensor::stack(&rows, 0)?
            }
        };
        self.text_projection.forward(&x)
    }
}
