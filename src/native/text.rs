//! Mirrors the reference's text tower (`encode_text`) on plain buffers: token embedding plus
//! positional embedding, the causal transformer, `ln_final`, a max over all positions (padding
//! included), then `text_projection`; for CLIP checkpoints the end-of-text position (or
//! MetaCLIP 2's first end-of-sequence id), computed only up to the latest one in the batch,
//! its last block only at that position. Positions that every prompt of a batch starts with
//! go through the blocks once. For open_clip's CoCa,
//! the class token appended after the prompt's positions, under its key mask. For SigLIP and
//! CLIPA, every position without a mask, the last block at the last position only.

use super::gemm::{Act, GemmConfig};
use super::kernels::Mask;
use super::layers::{to_vec, LayerNorm, Linear};
use super::transformer::{KvCache, Transformer};
use crate::models::nn as fold;
use crate::models::text::{
    coca_hidden, ln_final_eps, pool_position, projection, span as positions,
};
use crate::models::{Config, Family};
use candle_core::Result;
use candle_nn::VarBuilder;

#[derive(Debug)]
pub struct TextEncoder {
    /// `token_embedding.weight`, `[vocab, width]`.
    token_embedding: Vec<f32>,
    positional_embedding: Vec<f32>,
    /// CoCa's class token, appended after the prompt's positions.
    cls_emb: Option<Vec<f32>>,
    transformer: Transformer,
    ln_final: LayerNorm,
    /// None for a SigLIP without one (the pooled row is the feature).
    text_projection: Option<Linear>,
    width: usize,
    context: usize,
    family: crate::models::Family,
    /// The id a CLIP tower pools at (`pool_type: eos`), else the largest.
    eos: Option<u32>,
    /// CLIP's causal mask (open_clip's `no_causal_mask` leaves it out).
    causal: bool,
}

impl TextEncoder {
    pub fn new(cfg: &Config, vb: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let w = cfg.transformer_width;
        let proj = projection(cfg, &vb)?;
        Ok(Self {
            token_embedding: to_vec(&fold::load(
                &vb.pp("token_embedding"),
                &[cfg.vocab_size, w],
                "weight",
            )?)?,
            positional_embedding: to_vec(&fold::load(
                &vb,
                &[cfg.text_positions(), w],
                "positional_embedding",
            )?)?,
            cls_emb: (cfg.family == Family::Coca)
                .then(|| to_vec(&fold::load(&vb, &[w], "cls_emb")?))
                .transpose()?,
            transformer: Transformer::new(
                w,
                cfg.transformer_layers,
                cfg.transformer_heads,
                None,
                crate::models::transformer::Style::of(cfg),
                vb.pp("transformer"),
                gemm,
            )?,
            ln_final: LayerNorm::with_eps(w, ln_final_eps(cfg) as f32, vb.pp("ln_final"))?,
            text_projection: proj
                .map(|(w, b)| Linear::from_parts(&w, b.as_ref(), gemm))
                .transpose()?,
            width: w,
            context: cfg.context_length,
            family: cfg.family,
            eos: cfg.text_eos_id(),
            causal: cfg.text_causal(),
        })
    }

    /// `ids`: `n` prompts of `context_length` token ids -> `[n, embed_dim]` (not normalised).
    pub fn forward(&self, ids: &[u32], n: usize) -> Result<Vec<f32>> {
        let (l, d) = (self.context, self.width);
        crate::models::text::check_length(ids.len(), n, l)?;
        let vocab = self.token_embedding.len() / d;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
        }
        if let Some(cls) = &self.cls_emb {
            return self.forward_coca(ids, n, cls);
        }
        if self.family.pools_last() {
            // Every position sees every other (no shared prefix to compute once); only the
            // last one is pooled, so the last block computes just its query.
            let mut x = Vec::with_capacity(n * l * d);
            for prompt in ids.chunks(l.max(1)) {
                self.embed(prompt, &mut x);
            }
            let last = vec![l - 1; n];
            let rows = self.transformer.forward_at(x, n, l, &last, false)?;
            let pooled = self.ln_final.rows(&rows, n, d);
            return Ok(self.project(n, pooled));
        }
        // CLIP pools one position per prompt: the positions after the latest one are left out
        // (see `clip_span`); PyramidCLIP's max needs every position.
        let span = positions(self.family, self.eos, self.causal, ids, l);
        let mut x = Vec::with_capacity(n * span * d);
        for prompt in ids.chunks(l.max(1)) {
            self.embed(&prompt[..span], &mut x);
        }
        // A prefix every prompt starts with (one template's words before the class name) goes
        // through the tower once when that saves enough rows (see `shared_rows`).
        // (Not without the causal mask: the shared rows would see what follows them.)
        let p = if self.causal {
            shared_rows(ids, n, l, span)
        } else {
            0
        };
        let shared = p > 0;
        let pooled = match self.family {
            Family::PyramidClip
            | Family::Coca
            | Family::Siglip
            | Family::HfText
            | Family::Clipa => {
                let x = if shared {
                    self.transformer.forward_shared(x, n, span, p, None)?
                } else {
                    self.transformer.forward(x, n, span, Mask::Causal)?
                };
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
            Family::Clip | Family::CustomText => {
                // Only the end-of-text rows are pooled, so the last block computes only them
                // (its keys and values at every position), and ln_final only them.
                let eot: Vec<usize> = ids
                    .chunks(l.max(1))
                    .map(|p| pool_position(p, self.eos))
                    .collect();
                let rows = if shared {
                    self.transformer.forward_shared(x, n, span, p, Some(&eot))?
                } else {
                    self.transformer.forward_at(x, n, span, &eot, self.causal)?
                };
                self.ln_final.rows(&rows, n, d)
            }
        };
        Ok(self.project(n, pooled))
    }

    /// CoCa's token rows for its captioning decoder (`models::text::TextEncoder::caption_tokens`):
    /// each caption's first `context_length - 1` positions through the blocks under the causal
    /// mask and its hidden keys, before `ln_final`. `[n * (context_length - 1), width]`.
    pub fn caption_tokens(&self, ids: &[u32], n: usize) -> Result<Vec<f32>> {
        let l = self.context;
        crate::models::text::check_length(ids.len(), n, l)?;
        self.token_rows(ids, n, l, l.saturating_sub(1))
    }

    /// The same rows for `n` generated prefixes of `t` ids each (`t` at most the context):
    /// every position. `[n * t, width]`.
    pub fn prefix_tokens(&self, ids: &[u32], n: usize, t: usize) -> Result<Vec<f32>> {
        crate::models::text::check_length(ids.len(), n, t)?;
        if t == 0 || t > self.context {
            candle_core::bail!("a prefix of {t} ids for a context of {}", self.context);
        }
        self.token_rows(ids, n, t, t)
    }

    /// [`Self::prefix_tokens`]' rows at the last position only of `n` prefixes of `t` ids,
    /// prefix b extending `cache`'s prefix `parent[b]` of `t - 1` ids (no parents when `t` is
    /// 1), whose keys and values the cache holds; it then holds these prefixes'. `[n, width]`,
    /// each row equal to `prefix_tokens`' last.
    pub fn prefix_step(
        &self,
        ids: &[u32],
        n: usize,
        t: usize,
        cache: &mut KvCache,
        parent: &[usize],
    ) -> Result<Vec<f32>> {
        let coca = self.cls_emb.is_some();
        crate::models::text::check_step(ids.len(), n, t, cache.len(), self.context, coca)?;
        let d = self.width;
        let vocab = self.token_embedding.len() / d;
        let mut x = Vec::with_capacity(n * d);
        let mut hidden = Vec::with_capacity(n * t);
        for prefix in ids.chunks(t) {
            let id = prefix[t - 1];
            if id as usize >= vocab {
                candle_core::bail!("token id {id} is outside the vocabulary of {vocab}");
            }
            self.embed_at(id, t - 1, &mut x);
            hidden.extend(&coca_hidden(prefix, t)[..t]);
        }
        self.transformer.step(x, n, cache, parent, Some(&hidden))
    }

    /// `n` rows of `row` ids: the first `s` positions of each.
    fn token_rows(&self, ids: &[u32], n: usize, row: usize, s: usize) -> Result<Vec<f32>> {
        let d = self.width;
        if self.cls_emb.is_none() || s == 0 {
            candle_core::bail!("only CoCa's text tower gives caption tokens");
        }
        let vocab = self.token_embedding.len() / d;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
        }
        let mut x = Vec::with_capacity(n * s * d);
        let mut hidden = Vec::with_capacity(n * s);
        for caption in ids.chunks(row) {
            self.embed(&caption[..s], &mut x);
            hidden.extend(&coca_hidden(caption, s)[..s]);
        }
        self.transformer
            .forward(x, n, s, Mask::CausalHiding(&hidden))
    }

    /// `n` pooled rows through the projection (if any).
    fn project(&self, n: usize, pooled: Vec<f32>) -> Vec<f32> {
        match &self.text_projection {
            Some(p) => p.rows(n, &pooled, None, Act::None),
            None => pooled,
        }
    }

    /// Appends the rows of `ids` at positions 0.. to `x`: token embedding plus positional
    /// embedding.
    fn embed(&self, ids: &[u32], x: &mut Vec<f32>) {
        for (p, &t) in ids.iter().enumerate() {
            self.embed_at(t, p, x);
        }
    }

    /// Token `t`'s embedding at position `p`.
    fn embed_at(&self, t: u32, p: usize, x: &mut Vec<f32>) {
        let d = self.width;
        let row = &self.token_embedding[t as usize * d..(t as usize + 1) * d];
        let pos = &self.positional_embedding[p * d..(p + 1) * d];
        x.extend(row.iter().zip(pos).map(|(a, b)| a + b));
    }

    /// CoCa: each prompt's first `coca_span` positions then the class token (at the last
    /// position's embedding) through the blocks under the causal mask and the prompt's hidden
    /// keys; the class token's row after `ln_final`.
    fn forward_coca(&self, ids: &[u32], n: usize, cls: &[f32]) -> Result<Vec<f32>> {
        let (l, d) = (self.context, self.width);
        let span = positions(Family::Coca, None, true, ids, l);
        let pos = &self.positional_embedding;
        let keys = span + 1;
        let mut x = Vec::with_capacity(n * keys * d);
        let mut hidden = Vec::with_capacity(n * keys);
        for prompt in ids.chunks(l.max(1)) {
            self.embed(&prompt[..span], &mut x);
            x.extend(cls.iter().zip(&pos[l * d..(l + 1) * d]).map(|(a, b)| a + b));
            hidden.extend(coca_hidden(prompt, span));
        }
        let x = self
            .transformer
            .forward(x, n, keys, Mask::CausalHiding(&hidden))?;
        let last: Vec<f32> = x
            .chunks(keys * d)
            .flat_map(|seq| &seq[span * d..])
            .copied()
            .collect();
        let pooled = self.ln_final.rows(&last, n, d);
        Ok(self.project(n, pooled))
    }
}

/// Rows the prompts of a batch must save together before their shared prefix is computed
/// once: each block then copies the prefix's keys and values in front of every prompt's own
/// and runs the prefix's attention apart, which a position or two of a few prompts would not
/// repay.
const MIN_SHARED_ROWS: usize = 32;

/// The positions the tower computes once for the `n` prompts of `ids` (`l` ids each, `span`
/// positions computed): their shared prefix when that saves at least `MIN_SHARED_ROWS` rows,
/// else 0. Public so that `bench` counts the FLOPs that ran.
pub fn shared_rows(ids: &[u32], n: usize, l: usize, span: usize) -> usize {
    let p = shared_prefix(ids, l, span);
    if n >= 2 && (n - 1) * p >= MIN_SHARED_ROWS {
        p
    } else {
        0
    }
}

/// Positions every prompt of `ids` (prompts of `l` ids) starts with, fewer than `span` so
/// that each keeps a row of its own.
fn shared_prefix(ids: &[u32], l: usize, span: usize) -> usize {
    let mut prompts = ids.chunks(l.max(1));
    let Some(first) = prompts.next() else {
        return 0;
    };
    prompts.fold(span.saturating_sub(1), |p, other| {
        first[..p]
            .iter()
            .zip(other)
            .take_while(|(a, b)| a == b)
            .count()
    })
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
            vision_mlp_width: None,
            vision_layer_scale: false,
            vision_attn_pool: None,
            coca_decoder: None,
            vision_timm: None,
            siglip: None,
            hf_text: None,
            vision_eva: None,
            clipa: None,
            text_eos: None,
            text_no_causal_mask: false,
            vision_fastvit: None,
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

    /// Prompts that start alike (`prefix` ids after the start token, then their own words):
    /// computed together, their shared positions go through the tower once, and each
    /// prompt's features are still bit-identical to its features computed alone, for both
    /// families, in f32 and with bf16 products.
    #[test]
    fn a_shared_prefix_leaves_every_prompt_bit_identical() {
        let words =
            |i: usize, len: usize| (0..len).map(move |j| ((i * 13 + j * 7) % 50 + 5) as u32);
        let batch = |prefix: usize, n: usize| -> Vec<u32> {
            (0..n)
                .flat_map(|i| {
                    let mut ids = vec![0; 77];
                    let body: Vec<u32> = words(0, prefix).chain(words(i + 1, 1 + i % 4)).collect();
                    ids[0] = 62;
                    ids[1..=body.len()].copy_from_slice(&body);
                    ids[body.len() + 1] = 63;
                    ids
                })
                .collect()
        };
        for family in [Family::Clip, Family::PyramidClip] {
            let cfg = Config {
                family,
                activation: Activation::QuickGelu,
                ..tiny_clip()
            };
            for gemm in super::super::bf16::configs_to_test() {
                let t = TextEncoder::new(&cfg, random_vb(5), gemm).unwrap();
                let (prefix, n) = (6, 8);
                let ids = batch(prefix, n);
                assert_eq!(shared_prefix(&ids, 77, 77), prefix + 1);
                let together = t.forward(&ids, n).unwrap();
                for (i, one) in ids.chunks(77).enumerate() {
                    assert_eq!(
                        t.forward(one, 1).unwrap(),
                        together[i * 16..(i + 1) * 16],
                        "{family:?} bf16 {} prompt {i}",
                        gemm.bf16
                    );
                }
            }
        }
    }

    #[test]
    fn shared_prefix_stops_at_the_first_difference_and_before_the_span() {
        let a = [1u32, 2, 3, 4, 9, 9];
        let b = [1u32, 2, 3, 5, 9, 9];
        assert_eq!(shared_prefix(&[a, b].concat(), 6, 6), 3);
        assert_eq!(shared_prefix(&[a, a].concat(), 6, 6), 5);
        assert_eq!(shared_prefix(&[a, a].concat(), 6, 3), 2);
        assert_eq!(shared_prefix(&a, 6, 6), 5);
        assert_eq!(shared_prefix(&[], 6, 6), 0);
        // Taken only when the batch saves enough rows.
        assert_eq!(shared_rows(&[a, b].concat(), 2, 6, 6), 0);
        let many: Vec<u32> = (0..9).flat_map(|_| a).collect();
        assert_eq!(shared_rows(&many, 9, 6, 6), 5);
        assert_eq!(shared_rows(&many[..6 * 7], 7, 6, 6), 0);
    }
}
