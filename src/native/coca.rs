//! Mirrors open_clip's CoCa captioning decoder (`MultimodalTransformer`, `text_decoder.`;
//! `models::coca` in candle ops) on plain `[n * l, d]` row buffers: causal self-attention
//! blocks, cross-attention blocks over the image tower's pooled tokens, `ln_final`,
//! `text_projection`; and each caption's mean cross-entropy of the logits, computed a few
//! positions at a time so the `[l, vocab]` logits of a whole batch are never held.

use super::gemm::{Act, GemmConfig};
use super::kernels::{self, HeadView, Mask};
use super::layers::{LayerNorm, Linear, Rows};
use super::transformer::{Mlp, ResidualAttentionBlock};
use crate::models::coca::decoder_config;
use crate::models::nn as fold;
use crate::models::transformer::Style;
use crate::models::Config;
use candle_core::Result;
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// `ResidualAttentionBlock(is_cross_attention=True)`.
#[derive(Debug)]
struct CrossAttentionBlock {
    ln_1: LayerNorm,
    ln_1_kv: LayerNorm,
    /// The fused q/k/v projection: queries from the caption rows, keys and values from the
    /// image's.
    in_proj: Linear,
    out_proj: Linear,
    heads: usize,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl CrossAttentionBlock {
    fn new(
        width: usize,
        heads: usize,
        style: Style,
        vb: VarBuilder,
        g: GemmConfig,
    ) -> Result<Self> {
        let keys = style.keys();
        let attn = vb.pp("attn");
        let (w, b) = keys.qkv(width, &attn)?;
        let eps = style.eps as f32;
        Ok(Self {
            ln_1: LayerNorm::with_eps(width, eps, vb.pp("ln_1"))?,
            ln_1_kv: LayerNorm::with_eps(width, eps, vb.pp("ln_1_kv"))?,
            in_proj: Linear::from_parts(&w, Some(&b), g)?,
            out_proj: Linear::new(width, width, attn.pp("out_proj"), g)?,
            heads,
            ln_2: LayerNorm::with_eps(width, eps, vb.pp("ln_2"))?,
            mlp: Mlp::new(
                width,
                style.mlp_width(width),
                style.activation,
                None,
                keys,
                vb.pp("mlp"),
                g,
            )?,
        })
    }

    /// `x`: `n` captions of `lq` rows; `image`: `n` images of `lk` rows; both `d` wide.
    fn forward(&self, x: &[f32], n: usize, lq: usize, image: &[f32], lk: usize) -> Vec<f32> {
        let kv = self.keys(image, n, lk);
        self.attend(x, n, lq, &kv, 1)
    }

    /// The keys and values of `n` images of `lk` rows.
    fn keys(&self, image: &[f32], n: usize, lk: usize) -> Keys {
        let d = self.out_proj.out_dim();
        let hk = self.ln_1_kv.rows(image, n * lk, d);
        let (kv, stride, offset) = self.in_proj.cols_of(n * lk, &hk, d..3 * d);
        Keys {
            kv,
            stride,
            offset,
            rows: lk,
        }
    }

    /// `x`: `n` captions of `lq` rows, each `per` consecutive captions reading one image of
    /// `kv` in turn (the cross-attention has no mask: their rows are queries of one image).
    fn attend(&self, x: &[f32], n: usize, lq: usize, kv: &Keys, per: usize) -> Vec<f32> {
        let ip = &self.in_proj;
        let d = self.out_proj.out_dim();
        let hq = self.ln_1.rows(x, n * lq, d);
        // Queries from the caption's rows, keys and values from the image's.
        let (q, q_stride, _) = ip.cols_of(n * lq, &hq, 0..d);
        let view = |data, rows, stride, offset| HeadView {
            data,
            rows,
            stride,
            offset,
        };
        let (lk, ks, ko) = (kv.rows, kv.stride, kv.offset);
        let att = kernels::attention(
            ip.config(),
            view(&q, per * lq, q_stride, 0),
            view(&kv.kv, lk, ks, ko),
            view(&kv.kv, lk, ks, ko + d),
            n / per,
            self.heads,
            d / self.heads,
            Mask::None,
        );
        let x1 = self.out_proj.rows(n * lq, &att, Some(x), Act::None);
        let h2 = self.ln_2.rows(&x1, n * lq, d);
        self.mlp.forward(Rows::F32(&h2), &x1, n * lq)
    }
}

/// One cross-attention layer's keys and values of a few images: `rows` rows an image, each
/// `stride` wide, the keys from column `offset` and the values after them.
#[derive(Debug, Clone)]
struct Keys {
    kv: Vec<f32>,
    stride: usize,
    offset: usize,
    rows: usize,
}

impl Keys {
    /// The images `of` (one for each caption), in that order.
    fn gather(&self, of: &[usize]) -> Keys {
        let per = self.rows * self.stride;
        Keys {
            kv: of
                .iter()
                .flat_map(|&i| &self.kv[i * per..(i + 1) * per])
                .copied()
                .collect(),
            ..*self
        }
    }
}

/// The decoder's keys and values of a batch of images at every cross-attention layer,
/// computed once for all the steps of their captions' generation.
#[derive(Debug)]
pub struct ImageKeys {
    layers: Vec<Keys>,
    images: usize,
}

/// open_clip's `MultimodalTransformer` as CoCa builds it.
#[derive(Debug)]
pub struct TextDecoder {
    resblocks: Vec<ResidualAttentionBlock>,
    cross_attn: Vec<CrossAttentionBlock>,
    ln_final: LayerNorm,
    text_projection: Linear,
    width: usize,
}

impl TextDecoder {
    /// `vb`: the checkpoint's `text_decoder.` keys, f32 on the CPU.
    pub fn new(cfg: &Config, vb: VarBuilder, g: GemmConfig) -> Result<Self> {
        let d = decoder_config(cfg)?;
        let style = Style::of(cfg);
        let resblocks = (0..d.layers)
            .map(|i| {
                let vb = vb.pp("resblocks").pp(i);
                ResidualAttentionBlock::new(d.width, d.heads, None, style, vb, g)
            })
            .collect::<Result<_>>()?;
        let cross_attn = (0..d.layers)
            .map(|i| {
                CrossAttentionBlock::new(d.width, d.heads, style, vb.pp("cross_attn").pp(i), g)
            })
            .collect::<Result<_>>()?;
        let proj = fold::load(&vb, &[d.width, cfg.vocab_size], "text_projection")?;
        Ok(Self {
            resblocks,
            cross_attn,
            ln_final: LayerNorm::with_eps(d.width, style.eps as f32, vb.pp("ln_final"))?,
            text_projection: Linear::from_parts(&proj.t()?, None, g)?,
            width: d.width,
        })
    }

    /// Each caption's mean cross-entropy over its `lq` positions, position i predicting
    /// `labels[i]` (every position, padding included, as open_clip_train's evaluation), for `n`
    /// captions' token rows `text` `[n * lq, d]` against their images' tokens `image` `[n * lk,
    /// d]`. `[n]`.
    pub fn row_losses(
        &self,
        image: &[f32],
        lk: usize,
        text: Vec<f32>,
        n: usize,
        lq: usize,
        labels: &[u32],
    ) -> Result<Vec<f32>> {
        let d = self.width;
        if image.len() != n * lk * d || text.len() != n * lq * d || labels.len() != n * lq {
            candle_core::bail!("the decoder takes {n} captions of {lq} and images of {lk} rows");
        }
        let mut x = text;
        for (block, cross) in self.resblocks.iter().zip(&self.cross_attn) {
            x = block.forward(&x, n, lq, Mask::Causal)?;
            x = cross.forward(&x, n, lq, image, lk);
        }
        let h = self.ln_final.rows(&x, n * lq, d);
        drop(x);
        let vocab = self.text_projection.out_dim();
        if let Some(&bad) = labels.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
        }
        // The logits of a few rows at a time: each [rows, vocab] block is reduced to its
        // cross-entropies before the next is computed.
        const ROWS: usize = 32;
        let mut ce = Vec::with_capacity(n * lq);
        for (rows, lab) in h.chunks(ROWS * d).zip(labels.chunks(ROWS)) {
            let logits = self.text_projection.rows(lab.len(), rows, None, Act::None);
            ce.par_extend(
                logits
                    .par_chunks(vocab)
                    .zip(lab.par_iter())
                    .map(|(z, &t)| cross_entropy(z, t as usize)),
            );
        }
        Ok(ce
            .chunks(lq)
            .map(|c| (c.iter().map(|&v| v as f64).sum::<f64>() / lq as f64) as f32)
            .collect())
    }

    /// The keys and values every cross-attention layer reads from `n` images' tokens
    /// `image` `[n * lk, d]`.
    pub fn image_keys(&self, image: &[f32], n: usize, lk: usize) -> Result<ImageKeys> {
        if image.len() != n * lk * self.width {
            candle_core::bail!("the decoder takes images of {lk} rows {} wide", self.width);
        }
        Ok(ImageKeys {
            layers: self
                .cross_attn
                .iter()
                .map(|c| c.keys(image, n, lk))
                .collect(),
            images: n,
        })
    }

    /// The logits of the id after each of `n` prefixes' `lq` token rows `text` `[n * lq, d]`,
    /// prefix i reading image `of[i]` of `keys`. `[n, vocab]`.
    pub fn next_logits(
        &self,
        keys: &ImageKeys,
        of: &[usize],
        text: Vec<f32>,
        lq: usize,
    ) -> Result<Vec<f32>> {
        let (d, n) = (self.width, of.len());
        if text.len() != n * lq * d || of.iter().any(|&i| i >= keys.images) {
            candle_core::bail!("the decoder takes {n} prefixes of {lq} rows and their images");
        }
        // A generation step's prefixes come image by image, the same number each: those
        // read their image's keys in place (or gathered once, when some images are done).
        let per = of.chunk_by(|a, b| a == b).next().map_or(1, <[usize]>::len);
        let images: Vec<usize> = of.iter().step_by(per.max(1)).copied().collect();
        let grouped = n.is_multiple_of(per)
            && of
                .chunks(per)
                .zip(&images)
                .all(|(c, i)| c.iter().all(|j| j == i))
            && images.windows(2).all(|w| w[0] < w[1]);
        let (per, images) = match grouped {
            true => (per, images),
            false => (1, of.to_vec()),
        };
        let whole = images.len() == keys.images && images.iter().enumerate().all(|(k, &i)| k == i);
        let mut x = text;
        for ((block, cross), kv) in self
            .resblocks
            .iter()
            .zip(&self.cross_attn)
            .zip(&keys.layers)
        {
            x = block.forward(&x, n, lq, Mask::Causal)?;
            x = match whole {
                true => cross.attend(&x, n, lq, kv, per),
                false => cross.attend(&x, n, lq, &kv.gather(&images), per),
            };
        }
        let last: Vec<f32> = x
            .chunks(lq * d)
            .flat_map(|c| &c[(lq - 1) * d..])
            .copied()
            .collect();
        let h = self.ln_final.rows(&last, n, d);
        Ok(self.text_projection.rows(n, &h, None, Act::None))
    }
}

/// `logsumexp(z) - z[label]`, in f64.
fn cross_entropy(z: &[f32], label: usize) -> f32 {
    let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = z.iter().map(|&v| (v as f64 - max).exp()).sum();
    (max + sum.ln() - z[label] as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_is_the_negative_log_softmax_at_the_label() {
        let z = [1.0f32, 2.0, 3.0, -4.0];
        let lse = z.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        for (t, &v) in z.iter().enumerate() {
            let want = (lse - v as f64) as f32;
            assert!((cross_entropy(&z, t) - want).abs() < 1e-6);
        }
        // Large logits do not overflow.
        assert!((cross_entropy(&[1000.0, 1000.0], 0) - 2f32.ln()).abs() < 1e-6);
    }
}
