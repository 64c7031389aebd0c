//! Mirrors open_clip's CoCa captioning decoder (`MultimodalTransformer`, keys under
//! `text_decoder.`) in candle tensor ops: per layer a causal self-attention block over the
//! caption's token rows, then a cross-attention block whose keys and values are the image
//! tower's pooled tokens; `ln_final`, then `text_projection` onto the vocabulary. Used for
//! open_clip_train's `val_generative_loss`, never to embed.

use super::config::{CocaDecoder, Config};
use super::fused;
use super::nn::{self, LayerNorm, Linear};
use super::transformer::{Mask, Mlp, ResidualAttentionBlock, Style};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// The decoder's sizes, checked against the model it belongs to.
pub fn decoder_config(cfg: &Config) -> Result<CocaDecoder> {
    let Some(d) = cfg.coca_decoder else {
        candle_core::bail!("the model's config describes no CoCa captioning decoder")
    };
    if d.width != cfg.embed_dim || d.width != cfg.transformer_width {
        // open_clip's decoder takes the image tokens (embed_dim wide) and the text tower's
        // rows (its width) as they are.
        candle_core::bail!(
            "a captioning decoder {} wide cannot take {}-wide image tokens and {}-wide text rows",
            d.width,
            cfg.embed_dim,
            cfg.transformer_width
        );
    }
    Ok(d)
}

/// `ResidualAttentionBlock(is_cross_attention=True)`: `x + attn(ln_1(x), ln_1_kv(image))`, then
/// `x + mlp(ln_2(x))`.
#[derive(Debug, Clone)]
struct CrossAttentionBlock {
    ln_1: LayerNorm,
    ln_1_kv: LayerNorm,
    /// The fused `in_proj` split: queries from the caption, keys and values from the image.
    q: Linear,
    kv: Linear,
    out_proj: Linear,
    heads: usize,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl CrossAttentionBlock {
    fn new(width: usize, heads: usize, style: Style, vb: VarBuilder) -> Result<Self> {
        let keys = style.keys();
        let attn = vb.pp("attn");
        let (w, b) = keys.qkv(width, &attn)?;
        let dt = vb.dtype();
        Ok(Self {
            ln_1: nn::layer_norm_eps(width, style.eps, vb.pp("ln_1"))?,
            ln_1_kv: nn::layer_norm_eps(width, style.eps, vb.pp("ln_1_kv"))?,
            q: Linear::from_parts(&w.narrow(0, 0, width)?, Some(b.narrow(0, 0, width)?), dt)?,
            kv: Linear::from_parts(
                &w.narrow(0, width, 2 * width)?,
                Some(b.narrow(0, width, 2 * width)?),
                dt,
            )?,
            out_proj: nn::linear(width, width, attn.pp("out_proj"))?,
            heads,
            ln_2: nn::layer_norm_eps(width, style.eps, vb.pp("ln_2"))?,
            mlp: Mlp::new(
                width,
                style.mlp_width(width),
                style.activation,
                None,
                keys,
                vb.pp("mlp"),
            )?,
        })
    }

    /// `x`: the f32 caption rows `[N, Lq, D]`; `image`: `[N, Lk, D]` f32.
    fn forward(&self, x: &Tensor, image: &Tensor) -> Result<Tensor> {
        let (n, lq, d) = x.dims3()?;
        let lk = image.dim(1)?;
        let (h, hd) = (self.heads, d / self.heads);
        let dt = self.q.dtype();
        let q = self.q.forward(&self.ln_1.forward_to(x, dt)?)?;
        let kv = self.kv.forward(&self.ln_1_kv.forward_to(image, dt)?)?;
        let heads = |t: Tensor, l: usize| t.reshape((n, l, h, hd))?.transpose(1, 2)?.contiguous();
        let q = heads((q.to_dtype(DType::F32)? * (1.0 / (hd as f64).sqrt()))?, lq)?;
        let k = heads(kv.narrow(2, 0, d)?, lk)?;
        let v = heads(kv.narrow(2, d, d)?, lk)?;
        let scores = nn::matmul(&q.to_dtype(dt)?, &k.t()?, dt)?;
        let att = fused::softmax(&scores, false)?;
        let out = nn::matmul(&att, &v, dt)?
            .transpose(1, 2)?
            .reshape((n, lq, d))?;
        let x = self.out_proj.forward_residual(&out, x)?;
        self.mlp
            .forward_residual(&self.ln_2.forward_to(&x, dt)?, &x)
    }
}

/// open_clip's `MultimodalTransformer` as CoCa builds it.
#[derive(Debug, Clone)]
pub struct TextDecoder {
    resblocks: Vec<ResidualAttentionBlock>,
    cross_attn: Vec<CrossAttentionBlock>,
    ln_final: LayerNorm,
    /// `x @ text_projection` (`[width, vocab]`) as a bias-free linear layer.
    text_projection: Linear,
}

impl TextDecoder {
    /// `vb`: the checkpoint's `text_decoder.` keys.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let d = decoder_config(cfg)?;
        let style = Style::of(cfg);
        let resblocks = (0..d.layers)
            .map(|i| {
                ResidualAttentionBlock::new(d.width, d.heads, None, style, vb.pp("resblocks").pp(i))
            })
            .collect::<Result<_>>()?;
        let cross_attn = (0..d.layers)
            .map(|i| CrossAttentionBlock::new(d.width, d.heads, style, vb.pp("cross_attn").pp(i)))
            .collect::<Result<_>>()?;
        let proj = nn::load(&vb, &[d.width, cfg.vocab_size], "text_projection")?;
        Ok(Self {
            resblocks,
            cross_attn,
            ln_final: nn::layer_norm_eps(d.width, style.eps, vb.pp("ln_final"))?,
            text_projection: Linear::from_parts(&proj.t()?, None, vb.dtype())?,
        })
    }

    /// `image`: the image tower's tokens `[N, Lk, D]`; `text`: the caption's token rows `[N, L,
    /// D]` -> f32 logits over the vocabulary `[N, L, vocab]`, position i predicting id i + 1.
    pub fn forward(&self, image: &Tensor, text: &Tensor) -> Result<Tensor> {
        let image = image.to_dtype(DType::F32)?;
        let mut x = text.to_dtype(DType::F32)?;
        for (block, cross) in self.resblocks.iter().zip(&self.cross_attn) {
            x = block.forward(&x, Mask::Causal)?;
            x = cross.forward(&x, &image)?;
        }
        let dt = self.text_projection.dtype();
        self.text_projection
            .forward_f32(&self.ln_final.forward_to(&x, dt)?)
    }

    /// The f32 logits of the id after each prefix: `text` `[N, t, D]` the prefixes' token
    /// rows, `image` `[N, Lk, D]` their images' tokens -> `[N, vocab]`.
    pub fn next_logits(&self, image: &Tensor, text: &Tensor) -> Result<Tensor> {
        let image = image.to_dtype(DType::F32)?;
        let mut x = text.to_dtype(DType::F32)?;
        for (block, cross) in self.resblocks.iter().zip(&self.cross_attn) {
            x = block.forward(&x, Mask::Causal)?;
            x = cross.forward(&x, &image)?;
        }
        let t = x.dim(1)?;
        let last = x.narrow(1, t - 1, 1)?.squeeze(1)?;
        let dt = self.text_projection.dtype();
        self.text_projection
            .forward_f32(&self.ln_final.forward_to(&last, dt)?)
    }
}

/// Each row's mean cross-entropy of `logits` `[N, L, vocab]` against `labels` `[N, L]` (every
/// position, padding included: `F.cross_entropy` without `ignore_index`, as open_clip_train's
/// evaluation calls it). `[N]` f32.
pub fn row_losses(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let picked = lsm.gather(&labels.to_dtype(DType::U32)?.unsqueeze(2)?, 2)?;
    picked.squeeze(2)?.mean(1)?.neg()
}
