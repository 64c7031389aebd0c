//! Mirrors open_clip's `HFTextEncoder` around transformers' RoBERTa / XLM-RoBERTa encoder
//! (`XLMRobertaModel`) in candle tensor ops: word, position (counted from the pad id over the
//! non-pad ids) and token-type-0 embeddings, LayerNorm, post-LayerNorm blocks whose attention
//! hides the pad positions; or NLLB's (`M2M100Encoder`): scaled word embeddings plus
//! sinusoidal positions, pre-LayerNorm blocks with ReLU MLPs, a final LayerNorm. Then
//! open_clip's pooler (the mean over non-pad positions, or the first position, through the
//! encoder's own `pooler.dense` and tanh for RoBERTa's `cls_pooler`) and projection (`proj.0`,
//! GELU, `proj.2`; or `proj`).

use super::config::{Config, HfPooler, HfProj, HfText};
use super::fused;
use super::nn::{self, LayerNorm, Linear};
use super::transformer::{Mask, MultiheadAttention};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// The positions an HF tower computes for prompts of `l` ids: up to the last non-pad id of
/// any of them. A pad position's own row reaches no pooled output and no other row (its key
/// is hidden), so those after every prompt's last id are left out.
pub fn hf_span(ids: &[u32], l: usize, pad: u32) -> usize {
    if l == 0 {
        return 0;
    }
    ids.chunks(l)
        .map(|row| row.iter().rposition(|&t| t != pad).map_or(1, |p| p + 1))
        .max()
        .unwrap_or(l)
}

/// transformers' position ids for one prompt: the pad id where the id is the pad, else the
/// pad id plus the count of non-pad ids up to and including it.
pub fn position_ids(ids: &[u32], pad: u32) -> Vec<u32> {
    let mut seen = 0;
    ids.iter()
        .map(|&t| {
            if t == pad {
                pad
            } else {
                seen += 1;
                pad + seen
            }
        })
        .collect()
}

/// CLIP's BPE ids as ids an HF tower takes, for `bench` and `tune` (which feed ImageNet
/// prompts through CLIP's tokenizer): CLIP's padding (0) becomes the pad id and every other
/// id is folded into the vocabulary past it, so the same positions are computed as for a
/// prompt of that many pieces.
pub fn fold_clip_ids(ids: &mut [i64], vocab: usize, pad: u32) {
    let (vocab, pad) = (vocab.max(2) as i64, pad as i64);
    for t in ids.iter_mut() {
        *t = match *t % vocab {
            _ if *t == 0 => pad,
            f if f == pad => (pad + 1) % vocab,
            f => f,
        };
    }
}

/// Checks a batch's ids for an HF tower: inside the vocabulary, and each prompt with one
/// non-pad id at least (an all-pad prompt has nothing to attend to or average).
pub fn check_ids(ids: &[u32], l: usize, vocab: usize, pad: u32) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
    }
    if ids
        .chunks(l.max(1))
        .any(|row| row.iter().all(|&t| t == pad))
    {
        candle_core::bail!(
            "a prompt of pad ids only ({pad}): the tokenizer adds its start and end ids"
        );
    }
    Ok(())
}

/// The pooler and projection weights `HFTextEncoder` holds: `transformer.pooler.dense` (for
/// `cls_pooler`) and `proj.0` / `proj.2` or `proj` (`[out, in]` weights, no bias), f32.
pub struct Heads {
    pub pooler: Option<(Tensor, Tensor)>,
    pub proj: Vec<Tensor>,
}

pub fn heads(cfg: &Config, h: &HfText, vb: &VarBuilder) -> Result<Heads> {
    let w = cfg.transformer_width;
    let e = cfg.embed_dim;
    let pooler = match h.pooler {
        HfPooler::Cls => {
            let p = vb.pp("transformer").pp("pooler").pp("dense");
            Some((
                nn::load(&p, &[w, w], "weight")?,
                nn::load(&p, &[w], "bias")?,
            ))
        }
        HfPooler::Mean | HfPooler::ClsHidden => None,
    };
    let proj = match h.proj {
        HfProj::Mlp => {
            let hidden = (w + e) / 2;
            vec![
                nn::load(&vb.pp("proj").pp("0"), &[hidden, w], "weight")?,
                nn::load(&vb.pp("proj").pp("2"), &[e, hidden], "weight")?,
            ]
        }
        HfProj::Linear => vec![nn::load(&vb.pp("proj"), &[e, w], "weight")?],
        HfProj::None => vec![],
    };
    Ok(Heads { pooler, proj })
}

/// RoBERTa's attention weights (`attention.self.query` ...) and M2M100's
/// (`self_attn.q_proj` ...).
pub const ROBERTA_QKV: (&str, [&str; 3]) = ("attention.self", ["query", "key", "value"]);
pub const M2M_QKV: (&str, [&str; 3]) = ("self_attn", ["q_proj", "k_proj", "v_proj"]);

/// A block's fused q/k/v weight `[3 width, width]` and bias from its three projections
/// (`keys`: [`ROBERTA_QKV`] or [`M2M_QKV`]), f32.
pub fn fused_qkv(
    width: usize,
    vb: &VarBuilder,
    keys: (&str, [&str; 3]),
) -> Result<(Tensor, Tensor)> {
    let mut vb = vb.clone();
    for part in keys.0.split('.') {
        vb = vb.pp(part);
    }
    let mut w = Vec::with_capacity(3);
    let mut b = Vec::with_capacity(3);
    for k in keys.1 {
        w.push(nn::load(&vb.pp(k), &[width, width], "weight")?);
        b.push(nn::load(&vb.pp(k), &[width], "bias")?);
    }
    Ok((Tensor::cat(&w, 0)?, Tensor::cat(&b, 0)?))
}

/// transformers' `RobertaEmbeddings` (`word_embeddings`, `position_embeddings`,
/// `token_type_embeddings`, `LayerNorm`), f32.
#[derive(Debug, Clone)]
pub struct Embeddings {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    /// Token type 0's row, the only one open_clip passes.
    token_type_embeddings: Tensor,
    /// `LayerNorm`.
    layer_norm: LayerNorm,
}

impl Embeddings {
    pub fn new(cfg: &Config, h: &HfText, vb: VarBuilder) -> Result<Self> {
        let w = cfg.transformer_width;
        Ok(Self {
            word_embeddings: nn::load(&vb.pp("word_embeddings"), &[cfg.vocab_size, w], "weight")?,
            position_embeddings: nn::load(
                &vb.pp("position_embeddings"),
                &[h.positions, w],
                "weight",
            )?,
            token_type_embeddings: nn::load(
                &vb.pp("token_type_embeddings"),
                &[h.type_vocab, w],
                "weight",
            )?
            .get(0)?,
            layer_norm: nn::layer_norm_eps(w, h.eps, vb.pp("LayerNorm"))?,
        })
    }

    /// `ids`, `positions`: `[n, l]` u32 -> `[n, l, width]` f32.
    fn forward(&self, ids: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let (n, l) = ids.dims2()?;
        let words = self.word_embeddings.index_select(&ids.flatten_all()?, 0)?;
        let pos = self
            .position_embeddings
            .index_select(&positions.flatten_all()?, 0)?;
        let x = (words + pos)?.broadcast_add(&self.token_type_embeddings)?;
        self.layer_norm.forward(&x.reshape((n, l, ()))?)
    }
}

/// transformers' `RobertaLayer`: `x = LN(x + attention(x))`, then `LN(x + output(act(
/// intermediate(x))))`.
#[derive(Debug, Clone)]
pub struct Layer {
    attention: MultiheadAttention,
    /// `attention.output.LayerNorm`.
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    /// `output.LayerNorm`.
    output_norm: LayerNorm,
    act: fused::Act,
}

impl Layer {
    pub fn new(cfg: &Config, h: &HfText, vb: VarBuilder) -> Result<Self> {
        let (w, dt) = (cfg.transformer_width, vb.dtype());
        let (qkv_w, qkv_b) = fused_qkv(w, &vb, ROBERTA_QKV)?;
        let att_out = vb.pp("attention").pp("output");
        Ok(Self {
            attention: MultiheadAttention::from_parts(
                Linear::from_parts(&qkv_w, Some(qkv_b), dt)?,
                nn::linear(w, w, att_out.pp("dense"))?,
                cfg.transformer_heads,
            ),
            attention_norm: nn::layer_norm_eps(w, h.eps, att_out.pp("LayerNorm"))?,
            intermediate: nn::linear(w, h.intermediate, vb.pp("intermediate").pp("dense"))?,
            output: nn::linear(h.intermediate, w, vb.pp("output").pp("dense"))?,
            output_norm: nn::layer_norm_eps(w, h.eps, vb.pp("output").pp("LayerNorm"))?,
            act: nn::act_of(h.activation),
        })
    }

    /// `x`: `[n, l, width]` f32; `mask`: `[n, l, l]` added to the scores.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let dt = self.attention.dtype();
        let a = self
            .attention
            .forward(&x.to_dtype(dt)?, Mask::Add(mask), x)?;
        let x = self.attention_norm.forward(&a)?;
        let h = self.intermediate.forward_act(&x.to_dtype(dt)?, self.act)?;
        self.output_norm
            .forward(&self.output.forward_residual(&h, &x)?)
    }
}

/// M2M100's sinusoidal position table, `rows` x `dim`, as transformers builds it (in f32:
/// `exp(i * -ln(10000) / (half - 1))` per frequency, `sin` then `cos` of each position's
/// angles; the pad id's row zero).
pub fn sinusoids(rows: usize, dim: usize, pad: u32) -> Vec<f32> {
    let half = dim / 2;
    let step = (10000f64.ln() / (half.max(2) - 1) as f64) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut out = vec![0f32; rows * dim];
    for (p, row) in out.chunks_mut(dim).enumerate() {
        if p == pad as usize {
            continue;
        }
        for (i, &f) in freqs.iter().enumerate() {
            let a = p as f32 * f;
            row[i] = a.sin();
            row[half + i] = a.cos();
        }
    }
    out
}

/// The position table of an M2M100 encoder under `vb` (`embed_positions.weights`, which
/// older transformers saved), else [`sinusoids`]: `positions + 2` rows (M2M100's offset).
pub fn m2m_positions(h: &HfText, width: usize, vb: &VarBuilder) -> Result<Tensor> {
    let rows = h.positions + 2;
    let p = vb.pp("embed_positions");
    if p.contains_tensor("weights") {
        return nn::load(&p, &[rows, width], "weights");
    }
    Tensor::from_vec(sinusoids(rows, width, h.pad_id), (rows, width), vb.device())
}

/// transformers' `M2M100EncoderLayer`: `x + self_attn(LN(x))`, then `x + fc2(relu(fc1(LN(x))))`.
#[derive(Debug, Clone)]
pub struct M2mLayer {
    self_attn: MultiheadAttention,
    self_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
    act: fused::Act,
}

impl M2mLayer {
    pub fn new(cfg: &Config, h: &HfText, vb: VarBuilder) -> Result<Self> {
        let (w, dt) = (cfg.transformer_width, vb.dtype());
        let (qkv_w, qkv_b) = fused_qkv(w, &vb, M2M_QKV)?;
        Ok(Self {
            self_attn: MultiheadAttention::from_parts(
                Linear::from_parts(&qkv_w, Some(qkv_b), dt)?,
                nn::linear(w, w, vb.pp("self_attn").pp("out_proj"))?,
                cfg.transformer_heads,
            ),
            self_attn_layer_norm: nn::layer_norm_eps(w, h.eps, vb.pp("self_attn_layer_norm"))?,
            fc1: nn::linear(w, h.intermediate, vb.pp("fc1"))?,
            fc2: nn::linear(h.intermediate, w, vb.pp("fc2"))?,
            final_layer_norm: nn::layer_norm_eps(w, h.eps, vb.pp("final_layer_norm"))?,
            act: nn::act_of(h.activation),
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let dt = self.self_attn.dtype();
        let h = self.self_attn_layer_norm.forward_to(x, dt)?;
        let x = self.self_attn.forward(&h, Mask::Add(mask), x)?;
        let h = self.final_layer_norm.forward_to(&x, dt)?;
        let h = self.fc1.forward_act(&h, self.act)?;
        self.fc2.forward_residual(&h, &x)
    }
}

/// The encoder: RoBERTa's embeddings and post-LayerNorm layers, or M2M100's scaled word
/// embeddings, position table, pre-LayerNorm layers and final `layer_norm`.
#[derive(Debug, Clone)]
enum Body {
    Roberta {
        embeddings: Embeddings,
        layers: Vec<Layer>,
    },
    M2m100 {
        embed_tokens: Tensor,
        scale: f64,
        positions: Tensor,
        layers: Vec<M2mLayer>,
        layer_norm: LayerNorm,
    },
}

#[derive(Debug, Clone)]
pub struct HfTextEncoder {
    body: Body,
    /// `transformer.pooler.dense` (`cls_pooler`).
    pooler: Option<Linear>,
    /// `proj.0`, `proj.2` (GELU between) or `proj`.
    proj: Vec<Linear>,
    pooling: HfPooler,
    pad: u32,
    context: usize,
    vocab: usize,
}

impl HfTextEncoder {
    /// `vb` at the text tower (`text.`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let Some(h) = &cfg.hf_text else {
            candle_core::bail!("not a model with an HF text tower");
        };
        let dt = vb.dtype();
        let t = vb.pp("transformer");
        let w = cfg.transformer_width;
        let body = if h.is_m2m100() {
            Body::M2m100 {
                embed_tokens: nn::load(&t.pp("embed_tokens"), &[cfg.vocab_size, w], "weight")?,
                scale: if h.scale_embedding {
                    (w as f64).sqrt()
                } else {
                    1.0
                },
                positions: m2m_positions(h, w, &t)?,
                layers: (0..cfg.transformer_layers)
                    .map(|i| M2mLayer::new(cfg, h, t.pp("layers").pp(i)))
                    .collect::<Result<_>>()?,
                layer_norm: nn::layer_norm_eps(w, h.eps, t.pp("layer_norm"))?,
            }
        } else {
            Body::Roberta {
                embeddings: Embeddings::new(cfg, h, t.pp("embeddings"))?,
                layers: (0..cfg.transformer_layers)
                    .map(|i| Layer::new(cfg, h, t.pp("encoder").pp("layer").pp(i)))
                    .collect::<Result<_>>()?,
            }
        };
        let hd = heads(cfg, h, &vb)?;
        Ok(Self {
            body,
            pooler: hd
                .pooler
                .map(|(w, b)| Linear::from_parts(&w, Some(b), dt))
                .transpose()?,
            proj: hd
                .proj
                .iter()
                .map(|w| Linear::from_parts(w, None, dt))
                .collect::<Result<_>>()?,
            pooling: h.pooler,
            pad: h.pad_id,
            context: cfg.context_length,
            vocab: cfg.vocab_size,
        })
    }
}

impl Module for HfTextEncoder {
    /// `tokens`: `[N, context_length]` ids. Returns `[N, embed_dim]` (not normalised).
    fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (n, l) = tokens.dims2()?;
        if l != self.context {
            candle_core::bail!("{l} tokens per prompt, the model takes {}", self.context);
        }
        let dev = tokens.device();
        let ids: Vec<u32> = tokens
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        check_ids(&ids, l, self.vocab, self.pad)?;
        let span = hf_span(&ids, l, self.pad);
        let rows: Vec<&[u32]> = ids.chunks(l).map(|r| &r[..span]).collect();
        let flat: Vec<u32> = rows.concat();
        let pos: Vec<u32> = rows
            .iter()
            .flat_map(|r| position_ids(r, self.pad))
            .collect();
        let keep: Vec<f32> = flat
            .iter()
            .map(|&t| if t == self.pad { 0.0 } else { 1.0 })
            .collect();
        let ids_t = Tensor::from_vec(flat, (n, span), dev)?;
        let pos_t = Tensor::from_vec(pos, (n, span), dev)?;
        let keep = Tensor::from_vec(keep, (n, span), dev)?;
        // Pad keys get -inf on every query's scores.
        let mut add = Vec::with_capacity(n * span * span);
        for r in &rows {
            let row: Vec<f32> = r
                .iter()
                .map(|&t| {
                    if t == self.pad {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            for _ in 0..span {
                add.extend_from_slice(&row);
            }
        }
        let add = Tensor::from_vec(add, (n, span, span), dev)?;
        let x = match &self.body {
            Body::Roberta { embeddings, layers } => {
                let mut x = embeddings.forward(&ids_t, &pos_t)?;
                for layer in layers {
                    x = layer.forward(&x, &add)?;
                }
                x
            }
            Body::M2m100 {
                embed_tokens,
                scale,
                positions,
                layers,
                layer_norm,
            } => {
                let words = embed_tokens.index_select(&ids_t.flatten_all()?, 0)?;
                let pos = positions.index_select(&pos_t.flatten_all()?, 0)?;
                let mut x = (words.affine(*scale, 0.0)? + pos)?.reshape((n, span, ()))?;
                for layer in layers {
                    x = layer.forward(&x, &add)?;
                }
                layer_norm.forward(&x)?
            }
        };
        let pooled = match self.pooling {
            HfPooler::Mean => {
                let sum = x.broadcast_mul(&keep.unsqueeze(2)?)?.sum(1)?;
                sum.broadcast_div(&keep.sum_keepdim(1)?)?
            }
            HfPooler::Cls | HfPooler::ClsHidden => x.narrow(1, 0, 1)?.squeeze(1)?,
        };
        let pooled = match &self.pooler {
            Some(p) => p.forward_f32(&pooled)?.tanh()?,
            None => pooled,
        };
        match self.proj.as_slice() {
            [a, b] => b
                .forward(&a.forward_act(&pooled, fused::Act::Gelu)?)?
                .to_dtype(DType::F32),
            [a] => a.forward(&pooled)?.to_dtype(DType::F32),
            _ => Ok(pooled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_from_the_pad_id_over_non_pad_ids() {
        assert_eq!(position_ids(&[0, 7, 9, 2, 1, 1], 1), [2, 3, 4, 5, 1, 1]);
        // Left padding: the first id gets the first position.
        assert_eq!(position_ids(&[1, 1, 0, 5, 2], 1), [1, 1, 2, 3, 4]);
        let ids = [[0u32, 5, 2, 1, 1, 1], [0, 5, 6, 7, 2, 1]].concat();
        assert_eq!(hf_span(&ids, 6, 1), 5);
        assert_eq!(hf_span(&ids[..6], 6, 1), 3);
        assert!(check_ids(&[1, 1, 1], 3, 10, 1).is_err());
        assert!(check_ids(&[0, 12, 1], 3, 10, 1).is_err());
        assert!(check_ids(&[0, 2, 1], 3, 10, 1).is_ok());
        let mut clip = [49406i64, 320, 1, 49407, 0, 0];
        fold_clip_ids(&mut clip, 100, 1);
        assert_eq!(clip, [6, 20, 2, 7, 1, 1]);
    }
}
