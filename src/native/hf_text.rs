//! Mirrors open_clip's `HFTextEncoder` around transformers' RoBERTa / XLM-RoBERTa encoder on
//! plain buffers: the embeddings' sum and LayerNorm, post-LayerNorm blocks (bias and residual
//! fused into the products, attention read out of a fused q/k/v projection with the pad keys
//! hidden); or around NLLB's M2M100 encoder (scaled word embeddings plus sinusoidal
//! positions, pre-LayerNorm blocks with ReLU MLPs, a final LayerNorm); then open_clip's pooler
//! and projection. Only the positions up to the batch's last
//! non-pad id are computed: a pad position's row reaches no pooled output.

use super::gemm::{Act, GemmConfig};
use super::kernels::Mask;
use super::layers::{to_vec, LayerNorm, Linear, Rows};
use super::transformer::{Mlp, MultiheadAttention};
use crate::models::hf_text::{
    check_ids, fused_qkv, heads, hf_span, m2m_positions, position_ids, M2M_QKV, ROBERTA_QKV,
};
use crate::models::nn as fold;
use crate::models::{Config, HfPooler, HfText};
use candle_core::Result;
use candle_nn::VarBuilder;

/// transformers' `RobertaLayer`: `x = LN(x + attention(x))`, then `LN(x + mlp(x))`.
#[derive(Debug)]
struct Layer {
    attention: MultiheadAttention,
    /// `attention.output.LayerNorm`.
    attention_norm: LayerNorm,
    /// `intermediate.dense`, the activation, `output.dense`.
    mlp: Mlp,
    /// `output.LayerNorm`.
    output_norm: LayerNorm,
}

impl Layer {
    fn new(cfg: &Config, h: &HfText, vb: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let w = cfg.transformer_width;
        let eps = h.eps as f32;
        let (qkv_w, qkv_b) = fused_qkv(w, &vb, ROBERTA_QKV)?;
        let out = vb.pp("attention").pp("output");
        Ok(Self {
            attention: MultiheadAttention::from_parts(
                Linear::from_parts(&qkv_w, Some(&qkv_b), gemm)?,
                Linear::new(w, w, out.pp("dense"), gemm)?,
                cfg.transformer_heads,
            )?,
            attention_norm: LayerNorm::with_eps(w, eps, out.pp("LayerNorm"))?,
            mlp: Mlp::from_parts(
                Linear::new(w, h.intermediate, vb.pp("intermediate").pp("dense"), gemm)?,
                Linear::new(h.intermediate, w, vb.pp("output").pp("dense"), gemm)?,
                h.activation,
            ),
            output_norm: LayerNorm::with_eps(w, eps, vb.pp("output").pp("LayerNorm"))?,
        })
    }

    /// The block over `[n * l, d]` rows, `hidden[b * l + j]` for pad keys.
    fn forward(&self, x: &[f32], n: usize, l: usize, hidden: &[bool]) -> Vec<f32> {
        let (d, rows) = (self.attention_norm.weight.len(), n * l);
        let a = self
            .attention
            .forward(Rows::F32(x), x, n, l, Mask::Hiding(hidden));
        let h = self.attention_norm.rows(&a, rows, d);
        drop(a);
        let m = self.mlp.forward(Rows::F32(&h), &h, rows);
        self.output_norm.rows(&m, rows, d)
    }
}

/// transformers' `M2M100EncoderLayer`: `x + self_attn(LN(x))`, then `x + mlp(LN(x))`.
#[derive(Debug)]
struct M2mLayer {
    self_attn: MultiheadAttention,
    self_attn_layer_norm: LayerNorm,
    /// `fc1`, ReLU, `fc2`.
    mlp: Mlp,
    final_layer_norm: LayerNorm,
}

impl M2mLayer {
    fn new(cfg: &Config, h: &HfText, vb: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let w = cfg.transformer_width;
        let eps = h.eps as f32;
        let (qkv_w, qkv_b) = fused_qkv(w, &vb, M2M_QKV)?;
        Ok(Self {
            self_attn: MultiheadAttention::from_parts(
                Linear::from_parts(&qkv_w, Some(&qkv_b), gemm)?,
                Linear::new(w, w, vb.pp("self_attn").pp("out_proj"), gemm)?,
                cfg.transformer_heads,
            )?,
            self_attn_layer_norm: LayerNorm::with_eps(w, eps, vb.pp("self_attn_layer_norm"))?,
            mlp: Mlp::from_parts(
                Linear::new(w, h.intermediate, vb.pp("fc1"), gemm)?,
                Linear::new(h.intermediate, w, vb.pp("fc2"), gemm)?,
                h.activation,
            ),
            final_layer_norm: LayerNorm::with_eps(w, eps, vb.pp("final_layer_norm"))?,
        })
    }

    /// The block over `[n * l, d]` rows, `hidden[b * l + j]` for pad keys.
    fn forward(&self, x: &[f32], n: usize, l: usize, hidden: &[bool]) -> Vec<f32> {
        let (d, rows) = (self.final_layer_norm.weight.len(), n * l);
        let h = self.self_attn_layer_norm.rows(x, rows, d);
        let x1 = self
            .self_attn
            .forward(Rows::F32(&h), x, n, l, Mask::Hiding(hidden));
        let h = self.final_layer_norm.rows(&x1, rows, d);
        self.mlp.forward(Rows::F32(&h), &x1, rows)
    }
}

/// RoBERTa's embeddings (`embeddings.*`: word, position and token type 0, then LayerNorm) and
/// post-LayerNorm layers, or M2M100's (`embed_tokens` times its scale plus the position table)
/// and pre-LayerNorm layers with a final `layer_norm`.
#[derive(Debug)]
enum Body {
    Roberta {
        /// Token type 0's row.
        token_type_embeddings: Vec<f32>,
        /// `embeddings.LayerNorm`.
        embeddings_norm: LayerNorm,
        layers: Vec<Layer>,
    },
    M2m100 {
        scale: f32,
        layers: Vec<M2mLayer>,
        layer_norm: LayerNorm,
    },
}

#[derive(Debug)]
pub struct HfTextEncoder {
    /// `[vocab, width]`: RoBERTa's `embeddings.word_embeddings`, M2M100's `embed_tokens`.
    word_embeddings: Vec<f32>,
    /// RoBERTa's `embeddings.position_embeddings`, M2M100's position table.
    position_embeddings: Vec<f32>,
    body: Body,
    /// `transformer.pooler.dense` (`cls_pooler`), tanh after it.
    pooler: Option<Linear>,
    /// `proj.0`, GELU, `proj.2`; or `proj`.
    proj: Vec<Linear>,
    pooling: HfPooler,
    pad: u32,
    width: usize,
    context: usize,
}

impl HfTextEncoder {
    /// `vb` at the text tower (`text.`).
    pub fn new(cfg: &Config, vb: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let Some(h) = &cfg.hf_text else {
            candle_core::bail!("not a model with an HF text tower");
        };
        let w = cfg.transformer_width;
        let t = vb.pp("transformer");
        let e = t.pp("embeddings");
        let load = |name: &str, rows: usize| fold::load(&e.pp(name), &[rows, w], "weight");
        let hd = heads(cfg, h, &vb)?;
        let (word_embeddings, position_embeddings, body) = if h.is_m2m100() {
            let words = fold::load(&t.pp("embed_tokens"), &[cfg.vocab_size, w], "weight")?;
            let body = Body::M2m100 {
                scale: if h.scale_embedding {
                    (w as f64).sqrt() as f32
                } else {
                    1.0
                },
                layers: (0..cfg.transformer_layers)
                    .map(|i| M2mLayer::new(cfg, h, t.pp("layers").pp(i), gemm))
                    .collect::<Result<_>>()?,
                layer_norm: LayerNorm::with_eps(w, h.eps as f32, t.pp("layer_norm"))?,
            };
            (to_vec(&words)?, to_vec(&m2m_positions(h, w, &t)?)?, body)
        } else {
            let types = load("token_type_embeddings", h.type_vocab)?.get(0)?;
            let body = Body::Roberta {
                token_type_embeddings: to_vec(&types)?,
                embeddings_norm: LayerNorm::with_eps(w, h.eps as f32, e.pp("LayerNorm"))?,
                layers: (0..cfg.transformer_layers)
                    .map(|i| Layer::new(cfg, h, t.pp("encoder").pp("layer").pp(i), gemm))
                    .collect::<Result<_>>()?,
            };
            (
                to_vec(&load("word_embeddings", cfg.vocab_size)?)?,
                to_vec(&load("position_embeddings", h.positions)?)?,
                body,
            )
        };
        Ok(Self {
            word_embeddings,
            position_embeddings,
            body,
            pooler: hd
                .pooler
                .map(|(w, b)| Linear::from_parts(&w, Some(&b), gemm))
                .transpose()?,
            proj: hd
                .proj
                .iter()
                .map(|w| Linear::from_parts(w, None, gemm))
                .collect::<Result<_>>()?,
            pooling: h.pooler,
            pad: h.pad_id,
            width: w,
            context: cfg.context_length,
        })
    }

    /// `ids`: `n` prompts of `context_length` token ids -> `[n, embed_dim]` (not normalised).
    pub fn forward(&self, ids: &[u32], n: usize) -> Result<Vec<f32>> {
        let (l, d) = (self.context, self.width);
        crate::models::text::check_length(ids.len(), n, l)?;
        check_ids(ids, l, self.word_embeddings.len() / d, self.pad)?;
        let span = hf_span(ids, l, self.pad);
        let mut x = Vec::with_capacity(n * span * d);
        let mut hidden = Vec::with_capacity(n * span);
        for prompt in ids.chunks(l.max(1)) {
            let prompt = &prompt[..span];
            // In range: `Config::validate` holds the positions to the context past the pad id.
            for (&t, p) in prompt.iter().zip(position_ids(prompt, self.pad)) {
                let word = &self.word_embeddings[t as usize * d..][..d];
                let pos = &self.position_embeddings[p as usize * d..][..d];
                match &self.body {
                    // As transformers sums them: (word + type) + position.
                    Body::Roberta {
                        token_type_embeddings: ty,
                        ..
                    } => x.extend((0..d).map(|c| word[c] + ty[c] + pos[c])),
                    Body::M2m100 { scale, .. } => {
                        x.extend((0..d).map(|c| word[c] * scale + pos[c]))
                    }
                }
                hidden.push(t == self.pad);
            }
        }
        let x = match &self.body {
            Body::Roberta {
                embeddings_norm,
                layers,
                ..
            } => {
                let mut x = embeddings_norm.rows(&x, n * span, d);
                for layer in layers {
                    x = layer.forward(&x, n, span, &hidden);
                }
                x
            }
            Body::M2m100 {
                layers, layer_norm, ..
            } => {
                let mut x = x;
                for layer in layers {
                    x = layer.forward(&x, n, span, &hidden);
                }
                layer_norm.rows(&x, n * span, d)
            }
        };
        let mut pooled = Vec::with_capacity(n * d);
        for (seq, hide) in x.chunks(span * d).zip(hidden.chunks(span)) {
            match self.pooling {
                HfPooler::Mean => {
                    let mut sum = vec![0f32; d];
                    let mut count = 0f32;
                    for (row, _) in seq.chunks(d).zip(hide).filter(|(_, &h)| !h) {
                        sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
                        count += 1.0;
                    }
                    pooled.extend(sum.iter().map(|s| s / count));
                }
                HfPooler::Cls | HfPooler::ClsHidden => pooled.extend_from_slice(&seq[..d]),
            }
        }
        if let Some(p) = &self.pooler {
            pooled = p.rows(n, &pooled, None, Act::None);
            pooled.iter_mut().for_each(|v| *v = v.tanh());
        }
        Ok(match self.proj.as_slice() {
            [a, b] => b.rows(n, &a.rows(n, &pooled, None, Act::Gelu), None, Act::None),
            [a] => a.rows(n, &pooled, None, Act::None),
            _ => pooled,
        })
    }
}
