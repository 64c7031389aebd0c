//! Mirrors the reference's text tower (`encode_text`) on plain buffers: token embedding plus
//! positional embedding, the causal transformer, `ln_final`, a max over all positions (padding
//! included), then `text_projection`; for CLIP checkpoints the end-of-text position, computed
//! only up to the latest one in the batch, its last block only at that position.

use super::gemm::{Act, GemmConfig};
use super::layers::{to_vec, LayerNorm, Linear};
use super::transformer::Transformer;
use crate::models::nn as fold;
use crate::models::text::{clip_span, eot_position};
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
        // CLIP pools one position per prompt: the positions after the latest one are left out
        // (see `clip_span`); PyramidCLIP's max needs every position.
        let span = match self.family {
            crate::models::Family::PyramidClip => l,
            crate::models::Family::Clip => clip_span(ids, l),
        };
        let (table, pos) = (&self.token_embedding, &self.positional_embedding);
        let mut x = Vec::with_capacity(n * span * d);
        for prompt in ids.chunks(l.max(1)) {
            for (p, &t) in prompt[..span].iter().enumerate() {
                let row = &table[t as usize * d..(t as usize + 1) * d];
                x.extend(row.iter().zip(&pos[p * d..(p + 1) * d]).map(|(a, b)| a + b));
            }
        }
        let pooled = match self.family {
            crate::models::Family::PyramidClip => {
                let x = self.transformer.forward(x, n, span, true)?;
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
                // Only the end-of-text rows are pooled, so the last block computes only them
                // (its keys and values at every position), and ln_final only them.
                let eot: Vec<usize> = ids.chunks(l.max(1)).map(eot_position).collect();
                let rows = self.transformer.forward_at(x, n, span, &eot, true)?;
                self.ln_final.rows(&rows, n, d)
            }
        };
        Ok(self.text_projection.rows(n, &pooled, None, Act::None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Activation, Family, VisionLayers};
    use crate::synth::random_vb;

    fn tiny_clip() -> Config {
        Config {
            embed_dim: 16,
            image_resolution: 32,
            vision_layers: VisionLayers::Vit(1),
            vision_width: 64,
            vision_patch_size: Some(16),
            context_length: 77,
            vocab_size: 64,
            transformer_width: 64,
            transformer_heads: 2,
            transformer_layers: 2,
            family: Family::Clip,
            activation: Activation::Gelu,
            vision_heads: None,
        }
    }

    /// Start (62), `len - 2` body ids, end-of-text (63), then padding.
    fn prompt(len: usize) -> Vec<u32> {
        let mut ids = vec![0; 77];
        ids[0] = 62;
        for (i, id) in ids.iter_mut().enumerate().take(len - 1).skip(1) {
            *id = (i * 7 % 60 + 1) as u32;
        }
        ids[len - 1] = 63;
        ids
    }

    /// A CLIP tower stops at the batch's latest end-of-text position: a short prompt's
    /// features are bit-identical alone (5 positions computed) and next to a prompt that
    /// fills the context (77), in f32 and, where the CPU has it, with bf16 products.
    #[test]
    fn clip_features_do_not_depend_on_the_positions_after_the_end() {
        for gemm in super::super::bf16::configs_to_test() {
            let t = TextEncoder::new(&tiny_clip(), random_vb(3), gemm).unwrap();
            let (short, full) = (prompt(5), prompt(77));
            let alone = t.forward(&short, 1).unwrap();
            let both = t
                .forward(&[short.clone(), full.clone()].concat(), 2)
                .unwrap();
            assert_eq!(alone, both[..16], "bf16 {}", gemm.bf16);
            assert_eq!(t.forward(&full, 1).unwrap(), both[16..]);
        }
    }
}
