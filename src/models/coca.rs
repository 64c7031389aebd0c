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
        let layers = self.resblocks.len();
        cache.advance(n, parent, layers, &device, |i, past| {
            let (y, kv) = self.resblocks[i].step(&x, past, Mask::None)?;
            let Some(image) = keys.layers.get(i) else {
                candle_core::bail!(
                    "image keys of {} layers for a decoder of {layers}",
                    keys.layers.len()
                )
            };
            x = self.cross_attn[i].forward(&y, image)?;
            Ok(kv)
        })?;
        self.logits(&x.squeeze(1)?)
    }

    /// The decoder's rows `[N, L, D]` before `ln_final`.
    fn rows(&self, keys: &ImageKeys, text: &Tensor) -> Result<Tensor> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::text::TextEncoder;

    /// Stepwise generation (the text tower's and decoder's keys and values cached, beams
    /// reordered and repeated between steps, an image dropped, a prefix holding the pad id 0
    /// whose next key CoCa's text mask hides) gives the recomputed prefixes' logits: in bf16
    /// to the bit on the CPU, in f32 within 5e-7 of the largest (candle's CPU products of
    /// one query row sum in another order than those of many).
    #[test]
    fn step_logits_equal_the_recomputed_prefixes() {
        use crate::models::config::{CocaDecoder, Registry};
        use crate::synth::random_weights;
        let mut cfg = Registry::builtin().configs["coca_ViT-B-32"].clone();
        let (w, lk) = (64, 5);
        cfg.embed_dim = w;
        cfg.transformer_width = w;
        cfg.transformer_heads = 2;
        cfg.transformer_layers = 2;
        cfg.vocab_size = 300;
        cfg.context_length = 8;
        cfg.coca_decoder = Some(CocaDecoder {
            width: w,
            heads: 2,
            layers: 2,
        });
        let cpu = Device::Cpu;
        for dt in [DType::F32, DType::BF16] {
            let vb = random_weights(7, dt, &cpu);
            let text = TextEncoder::new(&cfg, vb.pp("text")).unwrap();
            let dec = TextDecoder::new(&cfg, vb.pp("text_decoder")).unwrap();
            let image = Tensor::randn(0f32, 1.0, (3, lk, w), &cpu).unwrap();
            let keys = dec.image_keys(&image).unwrap();
            // Three images' beams, two each, then image 1 done; each step's beams extend
            // these of the last (parent) with these ids.
            let steps: [(&[usize], &[usize], &[u32]); 5] = [
                (&[0, 0, 1, 1, 2, 2], &[], &[1, 1, 1, 1, 1, 1]),
                (
                    &[0, 0, 1, 1, 2, 2],
                    &[1, 0, 2, 2, 5, 4],
                    &[5, 0, 7, 9, 0, 3],
                ),
                (&[0, 0, 2, 2], &[0, 0, 5, 4], &[8, 2, 4, 0]),
                (&[0, 0, 2, 2], &[0, 1, 2, 3], &[299, 6, 0, 1]),
                (&[0, 0, 2, 2], &[0, 1, 2, 2], &[3, 3, 3, 4]),
            ];
            let (mut prefixes, mut cache_t, mut cache_d) = (
                Vec::<Vec<u32>>::new(),
                KvCache::default(),
                KvCache::default(),
            );
            for (t, &(of, parent, ids)) in steps.iter().enumerate() {
                let t = t + 1;
                prefixes = (0..of.len())
                    .map(|b| {
                        let mut p = parent.get(b).map_or(Vec::new(), |&k| prefixes[k].clone());
                        p.push(ids[b]);
                        p
                    })
                    .collect();
                let flat: Vec<u32> = prefixes.concat();
                let n = of.len();
                let selected = keys.select(of).unwrap();
                let rows = text
                    .prefix_tokens(&Tensor::from_vec(flat.clone(), (n, t), &cpu).unwrap())
                    .unwrap();
                let want = dec.next_logits(&selected, &rows).unwrap();
                let row = text.prefix_step(&flat, n, t, &mut cache_t, parent).unwrap();
                let got = dec
                    .step_logits(&selected, &row, &mut cache_d, parent)
                    .unwrap();
                let diff = (got - &want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let scale = want.abs().unwrap().max_all().unwrap();
                let scale = scale.to_scalar::<f32>().unwrap();
                assert!(diff <= 1e-5 * scale, "step {t}, {dt:?}: {diff} of {scale}");
                assert_eq!((cache_t.len(), cache_d.len()), (t, t));
            }
            // A step that skips a position, or parents out of range, is refused; the latter
            // leaves the cache as it was.
            let ids = vec![1u32; 4 * 7];
            assert!(text.prefix_step(&ids, 4, 7, &mut cache_t, &[0; 4]).is_err());
            let row = Tensor::zeros((4, 1, w), DType::F32, &cpu).unwrap();
            let selected = keys.select(&[0, 0, 2, 2]).unwrap();
            let e = dec.step_logits(&selected, &row, &mut cache_d, &[0, 1, 2, 9]);
            assert!(e.is_err());
            assert_eq!(cache_d.len(), 5);
        }
    }
}
