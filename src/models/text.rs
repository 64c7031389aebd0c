//! Mirrors the reference's text tower (`encode_text`): token embedding, causal transformer,
//! `ln_final`, then a max over all positions (padding included) before `text_projection`.

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
    /// `x @ text_projection` as a linear layer: our kernel on the CPU, so each prompt's
    /// features are the same in any batch (candle's matmul varies in the last bit with M).
    text_projection: Linear,
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
        let text_projection = Linear::from_parts(
            &f32((w, cfg.embed_dim), "text_projection", &vb)?.t()?,
            None,
            dt,
        )?;
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
        if let Some(y) = self.forward_cpu(tokens)? {
            return Ok(y);
        }
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
        self.text_projection.forward(&x)
    }

    /// The f32 CPU path: embedding lookup, transformer and pooling on plain buffers.
    fn forward_cpu(&self, tokens: &Tensor) -> Result<Option<Tensor>> {
        let emb = &self.token_embedding;
        if !emb.device().is_cpu() || emb.dtype() != DType::F32 {
            return Ok(None);
        }
        let (n, l) = tokens.dims2()?;
        let (vocab, d) = emb.dims2()?;
        if l != self.positional_embedding.dim(0)? {
            candle_core::bail!(
                "{l} tokens per prompt, the model takes {}",
                self.positional_embedding.dim(0)?
            );
        }
        let ids = tokens
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
        }
        let pos = self.positional_embedding.flatten_all()?.to_vec1::<f32>()?;
        let gathered = nn::with_cpu_f32(emb, |table| {
            let mut x = Vec::with_capacity(n * l * d);
            for (i, &t) in ids.iter().enumerate() {
                let p = i % l;
                let row = &table[t as usize * d..(t as usize + 1) * d];
                x.extend(row.iter().zip(&pos[p * d..(p + 1) * d]).map(|(a, b)| a + b));
            }
            x
        });
        let Some(x) = gathered else {
            return Ok(None);
        };
        let x = Tensor::from_vec(x, (n, l, d), tokens.device())?;
        let x = self.transformer.forward(&x, true)?.contiguous()?;
        let Some(Some(h)) = nn::with_cpu_f32(&x, |v| self.ln_final.rows(v, n * l, d)) else {
            return Ok(None);
        };
        // Max over every position, padding included (the reference's pooling).
        let mut pooled = vec![f32::NEG_INFINITY; n * d];
        for (b, out) in pooled.chunks_mut(d).enumerate() {
            for row in h[b * l * d..(b + 1) * l * d].chunks(d) {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = o.max(v);
                }
            }
        }
        let pooled = Tensor::from_vec(pooled, (n, d), tokens.device())?;
        Ok(Some(self.text_projection.forward(&pooled)?))
    }
}
