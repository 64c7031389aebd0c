//! Mirrors the reference's text tower (`encode_text`) on plain buffers: token embedding plus
//! positional embedding, the causal transformer, `ln_final`, a max over all positions (padding
//! included), then `text_projection`.

use super::gemm::{Act, GemmConfig};
use super::layers::{to_vec, LayerNorm, Linear};
use super::transformer::Transformer;
use crate::models::nn as fold;
use crate::models::Config;
use candle_core::Result;
use candle_nn::VarBuilder;

#[derive(Debug)]
pub struct TextEncoder {
    /// `token_embedding.weight`, `[vocab, width]`.
    token_embedding: Vec<f32>,
    positional_embedding: Vec<f32>,
    transformer: Transformer,
    ln_final: LayerNorm,
    text_projection: Linear,
    width: usize,
    context: usize,
    family: crate::models::Family,
}

impl TextEncoder {
    pub fn new(cfg: &Config, vb: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let w = cfg.transformer_width;
        let proj = fold::load(&vb, &[w, cfg.embed_dim], "text_projection")?;
        Ok(Self {
            token_embedding: to_vec(&fold::load(
                &vb.pp("token_embedding"),
                &[cfg.vocab_size, w],
                "weight",
            )?)?,
            positional_embedding: to_vec(&fold::load(
                &vb,
                &[cfg.context_length, w],
                "positional_embedding",
            )?)?,
            transformer: Transformer::new(
                w,
                cfg.transformer_layers,
                cfg.transformer_heads,
                None,
                crate::models::transformer::Style::of(cfg),
                vb.pp("transformer"),
                gemm,
            )?,
            ln_final: LayerNorm::new(w, vb.pp("ln_final"))?,
            text_projection: Linear::from_parts(&proj.t()?, None, gemm)?,
            width: w,
            context: cfg.context_length,
            family: cfg.family,
        })
    }

    /// `ids`: `n` prompts of `context_length` token ids -> `[n, embed_dim]` (not normalised).
    pub fn forward(&self, ids: &[u32], n: usize) -> Result<Vec<f32>> {
        let (l, d) = (self.context, self.width);
        if ids.len() != n * l {
            candle_core::bail!(
                "{} tokens per prompt, the model takes {l}",
                ids.len() / n.max(1)
            );
        }
        let vocab = self.token_embedding.len() / d;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
        }
        let (table, pos) = (&self.token_embedding, &self.positional_embedding);
        let mut x = Vec::with_capacity(n * l * d);
        for (i, &t) in ids.iter().enumerate() {
            let p = i % l;
            let row = &table[t as usize * d..(t as usize + 1) * d];
            x.extend(row.iter().zip(&pos[p * d..(p + 1) * d]).map(|(a, b)| a + b));
        }
        let x = self.transformer.forward(x, n, l, true)?;
        let pooled = match self.family {
            crate::models::Family::PyramidClip => {
                let h = self.ln_final.rows(&x, n * l, d);
                drop(x);
                // Max over every position, padding included (the reference's pooling).
                let mut pooled = vec![f32::NEG_INFINITY; n * d];
                for (b, out) in pooled.chunks_mut(d).enumerate() {
                    for row in h[b * l * d..(b + 1) * l * d].chunks(d) {
                        for (o, &v) in out.iter_mut().zip(row) {
                            *o = o.max(v);
                        }
                    }
                }
                pooled
            }
            crate::models::Family::Clip => {
                // CLIP: the first position holding the largest id (end-of-text), as `argmax`;
                // ln_final of those rows only.
                let mut rows = Vec::with_capacity(n * d);
                for b in 0..n {
                    let ids = &ids[b * l..(b + 1) * l];
                    let mut best = 0;
                    for (i, &t) in ids.iter().enumerate() {
                        if t > ids[best] {
                            best = i;
                        }
                    }
                    rows.extend_from_slice(&x[(b * l + best) * d..(b * l + best + 1) * d]);
                }
                self.ln_final.rows(&rows, n, d)
            }
        };
        Ok(self.text_projection.rows(n, &pooled, None, Act::None))
    }
}
