//! Mirrors open_clip's CoCa captioning decoder (`MultimodalTransformer`, keys under
//! `text_decoder.`) in candle tensor ops: per layer a causal self-attention block over the
//! caption's token rows, then a cross-attention block whose keys and values are the image
//! tower's pooled tokens; `ln_final`, then `text_projection` onto the vocabulary. Used for
//! open_clip_train's `val_generative_loss`, never to embed.

use super::config::{CocaDecoder, Config};
use super::fused;
use super::nn::{self, LayerNorm, Linear};
use super::transformer::{KeysValues, KvCache, Mask, Mlp, ResidualAttentionBlock, Style};
use candle_core::{DType, Device, Module, Result, Tensor, D};
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

    /// The keys and values of the images' tokens `image` `[N, Lk, D]` (f32), `[N, H, Lk, D /
    /// H]` each.
    fn image_kv(&self, image: &Tensor) -> Result<KeysValues> {
        let (n, lk, d) = image.dims3()?;
        let h = self.heads;
        let kv = self
            .kv
            .forward(&self.ln_1_kv.forward_to(image, self.q.dtype())?)?;
        let heads = |t: Tensor| t.reshape((n, lk, h, d / h))?.transpose(1, 2)?.contiguous();
        Ok((heads(kv.narrow(2, 0, d)?)?, heads(kv.narrow(2, d, d)?)?))
    }

    /// `x`: the f32 caption rows `[N, Lq, D]`; `(k, v)`: their images' keys and values
    /// ([`Self::image_kv`]).
    fn forward(&self, x: &Tensor, (k, v): &KeysValues) -> Result<Tensor> {
        let (n, lq, d) = x.dims3()?;
        let (h, hd) = (self.heads, d / self.heads);
        let dt = self.q.dtype();
        let q = self.q.forward(&self.ln_1.forward_to(x, dt)?)?;
        let q = (q.to_dtype(DType::F32)? * (1.0 / (hd as f64).sqrt()))?
            .reshape((n, lq, h, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let scores = nn::matmul(&q.to_dtype(dt)?, &k.t()?, dt)?;
        let att = fused::softmax(&scores, false)?;
        let out = nn::matmul(&att, v, dt)?
            .transpose(1, 2)?
            .reshape((n, lq, d))?;
        let x = self.out_proj.forward_residual(&out, x)?;
        self.mlp
            .forward_residual(&self.ln_2.forward_to(&x, dt)?, &x)
    }
}

/// What the decoder reads of a batch of images: each cross-attention layer's keys and values
/// of their tokens, computed once.
#[derive(Debug, Clone)]
pub struct ImageKeys {
    layers: Vec<KeysValues>,
}

impl ImageKeys {
    /// Where the keys are.
    pub fn device(&self) -> Device {
        self.layers
            .first()
            .map_or(Device::Cpu, |(k, _)| k.device().clone())
    }

    /// The keys of images `of` (repeats allowed), in that order.
    pub fn select(&self, of: &[usize]) -> Result<Self> {
        let Some((k, _)) = self.layers.first() else {
            return Ok(self.clone());
        };
        let idx: Vec<u32> = of.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, of.len(), k.device())?;
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?)))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
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
        let x = self.rows(&self.image_keys(image)?, text)?;
        let dt = self.text_projection.dtype();
        self.text_projection
            .forward_f32(&self.ln_final.forward_to(&x, dt)?)
    }

    /// The keys and values every cross-attention layer reads of the images' tokens `image`
    /// `[N, Lk, D]`.
    pub fn image_keys(&self, image: &Tensor) -> Result<ImageKeys> {
        let image = image.to_dtype(DType::F32)?;
        let layers = self
            .cross_attn
            .iter()
            .map(|c| c.image_kv(&image))
            .collect::<Result<_>>()?;
        Ok(ImageKeys { layers })
    }

    /// The f32 logits of the id after each prefix: `text` `[N, t, D]` the prefixes' token
    /// rows, `keys` their images' ([`ImageKeys::select`]) -> `[N, vocab]`.
    pub fn next_logits(&self, keys: &ImageKeys, text: &Tensor) -> Result<Tensor> {
        let x = self.rows(keys, text)?;
        let t = x.dim(1)?;
        self.logits(&x.narrow(1, t - 1, 1)?.squeeze(1)?)
    }

    /// [`Self::next_logits`] of `n` prefixes from the text tower's rows at their last
    /// position only, `x` `[n, 1, D]`: prefix b extends `cache`'s prefix `parent[b]` (no
    /// parents at the first step), whose self-attention keys and values the cache holds; it
    /// then holds these prefixes'. `[n, vocab]`.
    pub fn step_logits(
        &self,
        keys: &ImageKeys,
        x: &Tensor,
        cache: &mut KvCache,
        parent: &[usize],
    ) -> Result<Tensor> {
        let n = x.dim(0)?;
        let device = x.device().clone();
        let mut x = x.to_dtype(DType::F32)?;
        self.check(keys)?;
        cache.advance(n, parent, self.resblocks.len(), &device, |i, past| {
            let (y, kv) = self.resblocks[i].step(&x, past, Mask::None)?;
            x = self.cross_attn[i].forward(&y, &keys.layers[i])?;
            Ok(kv)
        })?;
        self.logits(&x.squeeze(1)?)
    }

    /// `keys` has one layer per cross-attention block (another decoder's may not).
    fn check(&self, keys: &ImageKeys) -> Result<()> {
        if keys.layers.len() != self.cross_attn.len() {
            candle_core::bail!(
                "image keys of {} layers for a decoder of {}",
                keys.layers.len(),
                self.cross_attn.len()
            );
        }
        Ok(())
    }

    /// The decoder's rows `[N, L, D]` before `ln_final`.
    fn rows(&self, keys: &ImageKeys, text: &Tensor) -> Result<Tensor> {
        self.check(keys)?;
        let mut x = text.to_dtype(DType::F32)?;
        for ((block, cross), kv) in self
            .resblocks
            .iter()
            .zip(&self.cross_attn)
            .zip(&keys.layers)
        {
            x = block.forward(&x, Mask::Causal)?;
            x = cross.forward(&x, kv)?;
        }
        Ok(x)
    }

    /// `ln_final` then the projection onto the vocabulary of rows `[N, D]`: f32 `[N, vocab]`.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let dt = self.text_projection.dtype();
        self.text_projection
            .forward_f32(&self.ln_final.forward_to(x, dt)?)
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

/// What the stepwise generation tests of both engines share.
#[cfg(test)]
pub(crate) mod testing {
    use crate::models::config::{AttnPool, CocaDecoder, Config, Registry, VisionLayers};

    /// A small CoCa: width 64, 2 heads and 2 layers in the text tower and the decoder, a
    /// vocabulary of 300, a context of 8; a one-block image tower over 32-pixel images.
    pub fn tiny_coca() -> Config {
        let mut cfg = Registry::builtin().configs["coca_ViT-B-32"].clone();
        let w = 64;
        (cfg.embed_dim, cfg.transformer_width, cfg.transformer_heads) = (w, w, 2);
        (cfg.transformer_layers, cfg.vocab_size, cfg.context_length) = (2, 300, 8);
        (cfg.image_resolution, cfg.vision_patch_size) = (32, Some(16));
        (cfg.vision_layers, cfg.vision_width) = (VisionLayers::Vit(1), 24);
        (cfg.vision_heads, cfg.vision_mlp_width) = (Some(3), None);
        cfg.vision_attn_pool = Some(AttnPool {
            queries: 6,
            heads: 2,
        });
        cfg.coca_decoder = Some(CocaDecoder {
            width: w,
            heads: 2,
            layers: 2,
        });
        cfg
    }

    /// A beam search's steps over three images, two beams each, then image 1 done: the
    /// beams' images, the beams of the step before they extend (none at the first), and
    /// their new ids. Beams are reordered and repeated, keep their places once (step 4), and
    /// take the pad id 0, whose next key CoCa's text mask hides.
    pub const STEPS: [(&[usize], &[usize], &[u32]); 5] = [
        (&[0, 0, 1, 1, 2, 2], &[], &[1, 1, 1, 1, 1, 1]),
        (
            &[0, 0, 1, 1, 2, 2],
            &[1, 0, 2, 2, 5, 4],
            &[5, 0, 7, 9, 0, 3],
        ),
        (&[0, 0, 2, 2], &[0, 0, 5, 4], &[8, 2, 4, 0]),
        (&[0, 0, 2, 2], &[0, 1, 2, 3], &[299, 6, 0, 1]),
        (&[0, 0, 2, 2], &[1, 0, 3, 3], &[3, 3, 3, 4]),
    ];

    /// Each step's prefixes of [`STEPS`], flat (`[n * t]` at step t).
    pub fn prefixes() -> Vec<Vec<u32>> {
        let mut beams: Vec<Vec<u32>> = Vec::new();
        STEPS
            .iter()
            .map(|&(of, parent, ids)| {
                beams = (0..of.len())
                    .map(|b| {
                        let mut p = parent.get(b).map_or(Vec::new(), |&k| beams[k].clone());
                        p.push(ids[b]);
                        p
                    })
                    .collect();
                beams.concat()
            })
            .collect()
    }
}
