//! Mirrors the reference's text tower (`encode_text`): token embedding, causal transformer,
//! `ln_final`, then a max over all positions (padding included) before `text_projection`.

use super::config::Config;
use super::nn::{self, LayerNorm};
use super::transformer::Transformer;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct TextEncoder {
    token_embedding: Tensor,
    positional_embedding: Tensor,
    transformer: Transformer,
    ln_final: LayerNorm,
    text_projection: Tensor,
}

impl TextEncoder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let w = cfg.transformer_width;
        let dt = vb.dtype();
        let f32 = |shape: (usize, usize), name: &str, vb: &VarBuilder| {
            vb.get_with_hints_dtype(shape, name, Default::default(), DType::F32)?
                .to_dtype(dt)
        };
        let token_embedding = f32((cfg.vocab_size, w), "weight", &vb.pp("token_embedding"))?;
        let positional_embedding = f32((cfg.context_length, w), "positional_embedding", &vb)?;
        let text_projection = f32((w, cfg.embed_dim), "text_projection", &vb)?;
        let transformer = Transformer::new(
            w,
            cfg.transformer_layers,
            cfg.transformer_heads,
            None,
            vb.pp("transformer"),
        )?;
        let ln_final = nn::layer_norm(w, vb.pp("ln_final"))?;
        Ok(Self {
            token_embedding,
            positional_embedding,
            transformer,
            ln_final,
            text_projection,
        })
    }

    /// `tokens`: `[N, context_length]` integer ids. Returns `[N, embed_dim]` (not normalised).
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (n, l) = tokens.dims2()?;
        let ids = tokens.to_dtype(DType::U32)?.flatten_all()?;
        let x = self
            .token_embedding
            .index_select(&ids, 0)?
            .reshape((n, l, ()))?;
        let x = x.broadcast_add(&self.positional_embedding)?;
        let x = self.transformer.forward(&x, true)?;
        let x = self.ln_final.forward(&x)?;
        let x = x.max(1)?;
        x.matmul(&self.text_projection)
    }
}
