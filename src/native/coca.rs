//! Mirrors open_clip's CoCa captioning decoder (`MultimodalTransformer`, `text_decoder.`;
//! `models::coca` in candle ops) on plain `[n * l, d]` row buffers: causal self-attention
//! blocks, cross-attention blocks over the image tower's pooled tokens, `ln_final`,
//! `text_projection`; and each caption's mean cross-entropy of the logits, computed a few
//! positions at a time so the `[l, vocab]` logits of a whole batch are never held.

use super::gemm::{Act, GemmConfig};
use super::kernels::{self, HeadView, Mask, PackedHead};
use super::layers::{LayerNorm, Linear, Rows};
use super::transformer::{KvCache, Mlp, ResidualAttentionBlock};
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
        let kv: Vec<&PackedHead> = kv.iter().collect();
        self.attend(x, lq, &kv, 1)
    }

    /// The keys and values of `n` images of `lk` rows, packed per image and head.
    fn keys(&self, image: &[f32], n: usize, lk: usize) -> Vec<PackedHead> {
        let d = self.out_proj.out_dim();
        let hk = self.ln_1_kv.rows(image, n * lk, d);
        let (kv, stride, offset) = self.in_proj.cols_of(n * lk, &hk, d..3 * d);
        let view = |offset| HeadView {
            data: &kv,
            rows: lk,
            stride,
            offset,
        };
        let (cfg, hd) = (self.in_proj.config(), d / self.heads);
        kernels::pack_heads(cfg, view(offset), view(offset + d), n, self.heads, hd)
    }

    /// `x`: captions of `lq` rows, each `per` consecutive captions reading one image's heads
    /// of `kv` in turn (the cross-attention has no mask: their rows are queries of one image).
    fn attend(&self, x: &[f32], lq: usize, kv: &[&PackedHead], per: usize) -> Vec<f32> {
        let ip = &self.in_proj;
        let d = self.out_proj.out_dim();
        let rows = kv.len() / self.heads * per * lq;
        let hq = self.ln_1.rows(x, rows, d);
        // Queries from the caption's rows, keys and values from the image's.
        let (q, q_stride, _) = ip.cols_of(rows, &hq, 0..d);
        let q = HeadView {
            data: &q,
            rows: per * lq,
            stride: q_stride,
            offset: 0,
        };
        let att = kernels::attention_packed(ip.config(), q, kv, self.heads, d / self.heads);
        let x1 = self.out_proj.rows(rows, &att, Some(x), Act::None);
        let h2 = self.ln_2.rows(&x1, rows, d);
        self.mlp.forward(Rows::F32(&h2), &x1, rows)
    }
}

/// The decoder's keys and values of a batch of images at every cross-attention layer,
/// computed once for all the steps of their captions' generation.
#[derive(Debug)]
pub struct ImageKeys {
    /// Per layer, image b's head h at `b * heads + h`.
    layers: Vec<Vec<PackedHead>>,
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
        if text.len() != n * lq * d {
            candle_core::bail!("the decoder takes {n} prefixes of {lq} rows and their images");
        }
        let reading = Reading::of(keys, of)?;
        let mut x = text;
        for ((block, cross), kv) in self
            .resblocks
            .iter()
            .zip(&self.cross_attn)
            .zip(&keys.layers)
        {
            x = block.forward(&x, n, lq, Mask::Causal)?;
            x = reading.attend(cross, &x, lq, kv);
        }
        let last: Vec<f32> = x
            .chunks(lq * d)
            .flat_map(|c| &c[(lq - 1) * d..])
            .copied()
            .collect();
        Ok(self.logits(&last, n))
    }

    /// [`Self::next_logits`] computing each prefix's last position only: `text` `[n, d]` its
    /// text row there ([`super::text::TextEncoder::prefix_step`]), prefix i extending `cache`'s
    /// prefix `parent[i]` (no parents at the first step), whose keys and values at the earlier
    /// positions the cache holds; it then holds these prefixes'. Equal to `next_logits` to the
    /// bit.
    pub fn step_logits(
        &self,
        keys: &ImageKeys,
        of: &[usize],
        text: Vec<f32>,
        cache: &mut KvCache,
        parent: &[usize],
    ) -> Result<Vec<f32>> {
        let (d, n) = (self.width, of.len());
        if text.len() != n * d {
            candle_core::bail!("the decoder takes one row of each of {n} prefixes");
        }
        let reading = Reading::of(keys, of)?;
        let mut x = text;
        cache.advance(n, parent, None, self.resblocks.len(), |i, past| {
            let (y, kv) = self.resblocks[i].step(&x, n, past)?;
            x = reading.attend(&self.cross_attn[i], &y, 1, &keys.layers[i]);
            Ok(kv)
        })?;
        Ok(self.logits(&x, n))
    }

    /// The vocabulary's logits of `n` rows of the last block's output.
    fn logits(&self, x: &[f32], n: usize) -> Vec<f32> {
        let h = self.ln_final.rows(x, n, self.width);
        self.text_projection.rows(n, &h, None, Act::None)
    }
}

/// Which images' keys a generation step's prefixes read, and how.
struct Reading {
    /// Consecutive prefixes reading one image.
    per: usize,
    /// The images read, in order.
    images: Vec<usize>,
}

impl Reading {
    /// For prefix i reading image `of[i]`.
    fn of(keys: &ImageKeys, of: &[usize]) -> Result<Self> {
        if of.iter().any(|&i| i >= keys.images) {
            candle_core::bail!("a prefix of an image the decoder did not remember");
        }
        // A generation step's prefixes come image by image, the same number each: one
        // attention task per image and head takes all of its prefixes' queries.
        let per = of.chunk_by(|a, b| a == b).next().map_or(1, <[usize]>::len);
        let images: Vec<usize> = of.iter().step_by(per.max(1)).copied().collect();
        let grouped = of.len().is_multiple_of(per)
            && of
                .chunks(per)
                .zip(&images)
                .all(|(c, i)| c.iter().all(|j| j == i))
            && images.windows(2).all(|w| w[0] < w[1]);
        let (per, images) = match grouped {
            true => (per, images),
            false => (1, of.to_vec()),
        };
        Ok(Self { per, images })
    }

    /// `cross` over the prefixes' `lq` rows `x`, reading their images' heads of `kv`.
    fn attend(
        &self,
        cross: &CrossAttentionBlock,
        x: &[f32],
        lq: usize,
        kv: &[PackedHead],
    ) -> Vec<f32> {
        let heads = cross.heads;
        let kv: Vec<&PackedHead> = self
            .images
            .iter()
            .flat_map(|&i| &kv[i * heads..(i + 1) * heads])
            .collect();
        cross.attend(x, lq, &kv, self.per)
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

    /// Stepwise generation (`models::coca::testing::STEPS`: the text tower's and decoder's
    /// keys and values cached, beams reordered and repeated between steps, a prefix holding
    /// the pad id 0, whose next key CoCa's text mask hides) gives the recomputed prefixes'
    /// logits to the bit, in fp32 and, where the CPU has it, bf16 (head width 32: the bf16
    /// attention's paired route).
    #[test]
    fn step_logits_equal_the_recomputed_prefixes() {
        use crate::models::coca::testing;
        let cfg = testing::tiny_coca();
        let (w, lk) = (cfg.embed_dim, 5);
        for g in crate::native::bf16::configs_to_test() {
            let vb = crate::synth::random_vb(7);
            let text = super::super::text::TextEncoder::new(&cfg, vb.pp("text"), g).unwrap();
            let dec = TextDecoder::new(&cfg, vb.pp("text_decoder"), g).unwrap();
            let image = crate::native::bf16::test_values(3 * lk * w, 1);
            let keys = dec.image_keys(&image, 3, lk).unwrap();
            let (mut cache_t, mut cache_d) = (KvCache::default(), KvCache::default());
            for (i, flat) in testing::prefixes().into_iter().enumerate() {
                let (t, (of, parent, _)) = (i + 1, testing::STEPS[i]);
                let n = of.len();
                let rows = text.prefix_tokens(&flat, n, t).unwrap();
                let want = dec.next_logits(&keys, of, rows, t).unwrap();
                let row = text.prefix_step(&flat, n, t, &mut cache_t, parent).unwrap();
                let got = dec
                    .step_logits(&keys, of, row, &mut cache_d, parent)
                    .unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "step {t}, bf16 {}", g.bf16);
                assert_eq!((cache_t.len(), cache_d.len()), (t, t));
            }
            // A step that skips a position, or parents out of range, is refused.
            let ids = vec![1u32; 4 * 7];
            assert!(text.prefix_step(&ids, 4, 7, &mut cache_t, &[0; 4]).is_err());
            let row = vec![0f32; 4 * w];
            let e = dec.step_logits(&keys, &[0, 0, 2, 2], row, &mut cache_d, &[0, 1, 2, 9]);
            assert!(e.is_err());
            assert_eq!(
                cache_d.len(),
                5,
                "a refused step leaves the cache as it was"
            );
        }
    }

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
