//! Mirrors timm's `Eva` as open_clip's EVA models build it (`models::eva`) on plain buffers:
//! the patch conv (with its bias) as one product over gathered patches, the class token and
//! positional embedding, the blocks (q/k/v as one product, the rotary embedding turned in
//! place on the patch tokens' queries and keys, attention read out of that buffer; the
//! LayerNorms inside attention and the MLP where the trunk has them; SwiGLU's two input
//! products as one; layer scale folded into each branch's last product; a relative-position
//! bias added to the scores), the final norm of the class token (PE: of every token, then the
//! attention-pool head; the average-pooled ViT: of every token, then their mean), then `head`.

use super::gemm::{Act, GemmConfig};
use super::kernels::{self, HeadView, Mask};
use super::layers::{to_vec, LayerNorm, Linear};
use crate::models::config::EvaTower;
use crate::models::eva::{gains, qkv_weights, rel_pos_bias, rope_tables, Trunk};
use crate::models::nn::load;
use crate::models::transformer::Style;
use crate::models::Config;
use crate::models::{Activation, Family};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// The rotary tables, `[g * g, head_dim]` each ([`rope_tables`]), and the tokens before the
/// patches, not turned (the class token).
#[derive(Debug)]
struct Rope {
    sin: Vec<f32>,
    cos: Vec<f32>,
    head_dim: usize,
    prefix: usize,
}

impl Rope {
    /// Turns the queries and keys (the first `2 d` columns of each `[3 d]` row) of every patch
    /// token (not the class token), in place: pair `(a, b)` becomes
    /// `(a cos - b sin, b cos + a sin)`, as timm's `x * cos + rot(x) * sin`.
    fn apply(&self, qkv: &mut [f32], l: usize, d: usize) {
        let (hd, prefix) = (self.head_dim, self.prefix);
        qkv.par_chunks_mut(l * 3 * d).for_each(|img| {
            for (p, row) in img.chunks_mut(3 * d).enumerate().skip(prefix) {
                let at = (p - prefix) * hd;
                let (sin, cos) = (&self.sin[at..at + hd], &self.cos[at..at + hd]);
                for head in row[..2 * d].chunks_mut(hd) {
                    for ((pair, s), c) in head
                        .chunks_exact_mut(2)
                        .zip(sin.chunks_exact(2))
                        .zip(cos.chunks_exact(2))
                    {
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * c[0] - b * s[0];
                        pair[1] = b * c[1] + a * s[1];
                    }
                }
            }
        });
    }
}

#[derive(Debug)]
struct Attention {
    qkv: Linear,
    norm: Option<LayerNorm>,
    proj: Linear,
    heads: usize,
    /// The relative-position bias added to the scaled scores, `[heads, l, l]`.
    rel_pos: Option<Vec<f32>>,
}

impl Attention {
    /// `gain`: the block's `ls1`, folded into `proj`; `grid`: the patch grid's side (for the
    /// relative-position bias).
    fn new(
        d: usize,
        heads: usize,
        eva: &EvaTower,
        gain: Option<&Tensor>,
        grid: usize,
        vb: VarBuilder,
        g: GemmConfig,
    ) -> Result<Self> {
        if heads == 0 || !d.is_multiple_of(heads) {
            candle_core::bail!("width {d} does not split into {heads} attention heads");
        }
        let rel_pos = rel_pos_bias(eva, grid, heads, &vb)?;
        let (w, b) = qkv_weights(d, eva, &vb)?;
        Ok(Self {
            qkv: Linear::from_parts(&w, Some(&b), g)?,
            norm: eva
                .attn_norm
                .then(|| LayerNorm::with_eps(d, eva.eps as f32, vb.pp("norm")))
                .transpose()?,
            proj: Linear::with_gain(d, d, vb.pp("proj"), gain, g)?,
            heads,
            rel_pos,
        })
    }

    /// `proj(attention(x))` over `n` sequences of `l` rows `[n * l, d]` (`x` already normed
    /// where the block norms first), plus `residual` when given.
    fn forward(
        &self,
        x: &[f32],
        norm1: Option<&LayerNorm>,
        n: usize,
        l: usize,
        rope: Option<&Rope>,
        residual: Option<&[f32]>,
    ) -> Vec<f32> {
        let d = self.proj.out_dim();
        let hd = d / self.heads;
        let mut qkv = match norm1 {
            Some(ln) => {
                let h = ln.rows_for(&self.qkv, x, n * l, d);
                self.qkv.rows_of(n * l, h.rows(), None, Act::None)
            }
            None => self.qkv.rows(n * l, x, None, Act::None),
        };
        if let Some(r) = rope {
            r.apply(&mut qkv, l, d);
        }
        let view = |offset| HeadView {
            data: &qkv,
            rows: l,
            stride: 3 * d,
            offset,
        };
        let att = kernels::attention(
            self.qkv.config(),
            view(0),
            view(d),
            view(2 * d),
            n,
            self.heads,
            hd,
            match &self.rel_pos {
                Some(bias) => Mask::Bias(bias),
                None => Mask::None,
            },
        );
        drop(qkv);
        match &self.norm {
            Some(ln) => {
                let h = ln.rows_for(&self.proj, &att, n * l, d);
                self.proj.rows_of(n * l, h.rows(), residual, Act::None)
            }
            None => self.proj.rows(n * l, &att, residual, Act::None),
        }
    }
}

/// A gated MLP's gate: SwiGLU's `silu`, ViTamin's GeGLU's `gelu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Silu,
    Gelu,
}

/// timm's EVA MLPs; SwiGLU's `fc1_g` and `fc1_x` (GeGLU's `w0` and `w1`) as one product
/// (gates, then values).
#[derive(Debug)]
struct Mlp {
    fc1: Linear,
    gate: Option<Gate>,
    /// GeGLU's LayerNorm of its input (after the block's `norm2`).
    in_norm: Option<LayerNorm>,
    norm: Option<LayerNorm>,
    fc2: Linear,
}

impl Mlp {
    /// `gain`: the block's `ls2`, folded into `fc2`.
    fn new(
        d: usize,
        hidden: usize,
        eva: &EvaTower,
        gain: Option<&Tensor>,
        vb: VarBuilder,
        g: GemmConfig,
    ) -> Result<Self> {
        let gate = if eva.swiglu {
            Some(Gate::Silu)
        } else if eva.geglu {
            Some(Gate::Gelu)
        } else {
            None
        };
        let fc1 = if let Some(gate) = gate {
            let part = |k: &str| -> Result<(Tensor, Tensor)> {
                let v = vb.pp(k);
                Ok((
                    load(&v, &[hidden, d], "weight")?.to_dtype(candle_core::DType::F32)?,
                    load(&v, &[hidden], "bias")?.to_dtype(candle_core::DType::F32)?,
                ))
            };
            let (gk, xk) = match gate {
                Gate::Silu => ("fc1_g", "fc1_x"),
                Gate::Gelu => ("w0", "w1"),
            };
            let ((wg, bg), (wx, bx)) = (part(gk)?, part(xk)?);
            Linear::from_parts(
                &Tensor::cat(&[wg, wx], 0)?,
                Some(&Tensor::cat(&[bg, bx], 0)?),
                g,
            )?
        } else {
            Linear::new(d, hidden, vb.pp("fc1"), g)?
        };
        let eps = eva.eps as f32;
        Ok(Self {
            fc1,
            gate,
            in_norm: eva
                .geglu
                .then(|| LayerNorm::with_eps(d, eps, vb.pp("norm")))
                .transpose()?,
            norm: (eva.mlp_norm && !eva.geglu)
                .then(|| LayerNorm::with_eps(hidden, eps, vb.pp("norm")))
                .transpose()?,
            fc2: Linear::with_gain(
                hidden,
                d,
                vb.pp(if eva.geglu { "w2" } else { "fc2" }),
                gain,
                g,
            )?,
        })
    }

    /// `fc2(...)` over `m` rows of `x` (normed by `norm2` first when given), plus `residual`.
    fn forward(
        &self,
        x: &[f32],
        norm2: Option<&LayerNorm>,
        m: usize,
        residual: Option<&[f32]>,
    ) -> Vec<f32> {
        let d = self.fc1.in_dim();
        let normed = match (norm2, &self.in_norm) {
            (Some(n2), Some(own)) => Some(own.rows_for(&self.fc1, &n2.rows(x, m, d), m, d)),
            (Some(ln), None) | (None, Some(ln)) => Some(ln.rows_for(&self.fc1, x, m, d)),
            (None, None) => None,
        };
        let rows = match &normed {
            Some(h) => h.rows(),
            None => super::layers::Rows::F32(x),
        };
        if self.gate.is_none() && self.norm.is_none() {
            return self.fc1.rows_then(&self.fc2, m, rows, Act::Gelu, residual);
        }
        let hidden = self.fc2.in_dim();
        let h = if let Some(gate) = self.gate {
            let gx = self.fc1.rows_of(m, rows, None, Act::None);
            drop(normed);
            let mut h = vec![0f32; m * hidden];
            h.par_chunks_mut(hidden)
                .zip(gx.par_chunks(2 * hidden))
                .for_each(|(o, gx)| {
                    let (g, x) = gx.split_at(hidden);
                    for ((o, &g), &x) in o.iter_mut().zip(g).zip(x) {
                        *o = match gate {
                            Gate::Silu => g / (1.0 + (-g).exp()),
                            Gate::Gelu => super::simd::gelu_erf(g),
                        } * x;
                    }
                });
            h
        } else {
            self.fc1.rows_of(m, rows, None, Act::Gelu)
        };
        match &self.norm {
            Some(ln) => {
                let n = ln.rows_for(&self.fc2, &h, m, hidden);
                self.fc2.rows_of(m, n.rows(), residual, Act::None)
            }
            None => self.fc2.rows(m, &h, residual, Act::None),
        }
    }
}

#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    post_norm: bool,
}

impl Block {
    fn forward(&self, x: Vec<f32>, n: usize, l: usize, rope: Option<&Rope>) -> Vec<f32> {
        let d = self.norm1.weight.len();
        let m = n * l;
        if !self.post_norm {
            let x = self
                .attn
                .forward(&x, Some(&self.norm1), n, l, rope, Some(&x));
            return self.mlp.forward(&x, Some(&self.norm2), m, Some(&x));
        }
        // `x + norm1(attn(x))`, `x + norm2(mlp(x))`.
        let plus_normed = |mut x: Vec<f32>, y: &[f32], ln: &LayerNorm| {
            let y = ln.rows(y, m, d);
            x.par_iter_mut().zip(&y).for_each(|(o, &v)| *o += v);
            x
        };
        let a = self.attn.forward(&x, None, n, l, rope, None);
        let x = plus_normed(x, &a, &self.norm1);
        let y = self.mlp.forward(&x, None, m, None);
        plus_normed(x, &y, &self.norm2)
    }
}

/// How the patch tokens are made: the patch conv (kernel = stride = patch) as a product over
/// flattened patches, or MobileCLIP-B's convolutional stem, each conv (kernel = stride, its
/// BatchNorm folded in) a product over patches (the first gathered from the NCHW pixels, the
/// others channels-last), GELU in the epilogue of all but the last.
#[derive(Debug)]
enum PatchEmbed {
    Proj(Linear),
    Stem(Vec<(Linear, usize)>),
    /// ViTamin's convolutional stages.
    MbConv(Box<super::vitamin::MbConvStem>),
}

/// How the trunk's tokens become one row: the class token after the final norm, PE's
/// attention-pool head after it, (ViTamin) the mean of the tokens through `fc_norm`, or the
/// mean of the tokens after the final norm.
#[derive(Debug)]
enum Pool {
    Token(LayerNorm),
    Map(LayerNorm, Box<super::siglip::MapHead>),
    Mean(LayerNorm),
    NormMean(LayerNorm),
}

#[derive(Debug)]
pub struct EvaVision {
    patch_embed: PatchEmbed,
    width: usize,
    cls_token: Option<Vec<f32>>,
    /// None without positions (ViTamin-XL).
    pos_embed: Option<Vec<f32>>,
    /// The positional embedding covers the patches only (`no_embed_class`).
    no_embed_class: bool,
    norm_pre: Option<LayerNorm>,
    rope: Option<Rope>,
    blocks: Vec<Block>,
    pool: Pool,
    /// The trunk's `head`, or open_clip's `head.proj` after it (no bias).
    head: Linear,
    patch: usize,
    grid: usize,
    side: usize,
}

impl EvaVision {
    /// `visual`: the image tower (`visual`; the trunk is `visual.trunk`).
    pub fn new(cfg: &Config, visual: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let t = Trunk::of(cfg)?;
        let vb = visual.pp("trunk");
        let (eva, layers, width, patch) = (t.eva, t.layers, t.width, t.patch);
        let (grid, heads, hidden) = (t.grid, t.heads, t.hidden);
        // The pixels and the one pooled row per image stay f32 under bf16.
        let f32_gemm = GemmConfig {
            bf16: false,
            ..gemm
        };
        let patch_embed = if let Some(m) = &eva.mbconv {
            let backbone = vb.pp("patch_embed").pp("backbone");
            let parts = crate::models::vitamin::Parts::load(m, width, &backbone)?;
            PatchEmbed::MbConv(Box::new(super::vitamin::MbConvStem::new(&parts, gemm)?))
        } else if eva.conv_stem {
            let convs = t.conv_stem(&vb)?;
            let mut stem = Vec::with_capacity(convs.len());
            for (i, (w, b, k)) in convs.into_iter().enumerate() {
                let c_out = w.dim(0)?;
                // The first conv reads NCHW patches (c, ky, kx); the others channels-last
                // ones (ky, kx, c).
                let w = if i == 0 { w } else { w.permute((0, 2, 3, 1))? };
                let w = w.contiguous()?.reshape((c_out, ()))?;
                stem.push((Linear::from_parts(&w, Some(&b), f32_gemm)?, k));
            }
            PatchEmbed::Stem(stem)
        } else {
            let (w, b) = t.patch_embed(&vb)?;
            PatchEmbed::Proj(Linear::from_parts(&w, b.as_ref(), f32_gemm)?)
        };
        let blocks = vb.pp("blocks");
        let eps = eva.eps as f32;
        let block = |i: usize| -> Result<Block> {
            let v = blocks.pp(i);
            let [ls1, ls2] = gains(width, eva, &v)?;
            Ok(Block {
                norm1: LayerNorm::with_eps(width, eps, v.pp("norm1"))?,
                attn: Attention::new(width, heads, eva, ls1.as_ref(), grid, v.pp("attn"), gemm)?,
                norm2: LayerNorm::with_eps(width, eps, v.pp("norm2"))?,
                mlp: Mlp::new(width, hidden, eva, ls2.as_ref(), v.pp("mlp"), gemm)?,
                post_norm: eva.post_norm,
            })
        };
        let head_dim = width / heads;
        let prefix = usize::from(eva.class_token);
        let positions = t.positions();
        // The attention-pool head as SigLIP's (its 4x GELU MLP, the trunk's eps), in f32.
        let map_style = Style {
            family: Family::CustomText,
            activation: Activation::Gelu,
            mlp_width: None,
            layer_scale: false,
            timm_keys: true,
            eps: eva.eps,
        };
        Ok(Self {
            patch_embed,
            width,
            cls_token: eva
                .class_token
                .then(|| to_vec(&load(&vb, &[1, 1, width], "cls_token")?))
                .transpose()?,
            pos_embed: eva
                .pos_embed
                .then(|| to_vec(&load(&vb, &[1, positions, width], "pos_embed")?))
                .transpose()?,
            no_embed_class: eva.no_embed_class,
            norm_pre: eva
                .norm_pre
                .then(|| LayerNorm::with_eps(width, eps, vb.pp("norm_pre")))
                .transpose()?,
            rope: eva.rope.map(|r| {
                let (sin, cos) = rope_tables(grid, r, head_dim, eva.rope_offset, eva.rope_xy);
                Rope {
                    sin,
                    cos,
                    head_dim,
                    prefix,
                }
            }),
            blocks: (0..layers).map(block).collect::<Result<_>>()?,
            pool: if eva.avg_pool {
                Pool::Mean(LayerNorm::with_eps(width, eps, vb.pp("fc_norm"))?)
            } else {
                let norm = LayerNorm::with_eps(width, eps, vb.pp("norm"))?;
                match eva.map_heads {
                    None if eva.norm_mean => Pool::NormMean(norm),
                    Some(h) => Pool::Map(
                        norm,
                        Box::new(super::siglip::MapHead::new(
                            width,
                            h,
                            map_style,
                            vb.pp("attn_pool"),
                            gemm,
                        )?),
                    ),
                    None => Pool::Token(norm),
                }
            },
            head: if eva.head_proj {
                let w = load(
                    &visual.pp("head").pp("proj"),
                    &[cfg.embed_dim, width],
                    "weight",
                )?;
                Linear::from_parts(&w, None, f32_gemm)?
            } else {
                Linear::new(width, cfg.embed_dim, vb.pp("head"), f32_gemm)?
            },
            patch,
            grid,
            side: cfg.image_resolution,
        })
    }

    /// `px`: `n` images `[3, r, r]` (NCHW, normalised) -> `[n, embed_dim]`.
    pub fn forward(&self, px: &[f32], n: usize) -> Result<Vec<f32>> {
        let g = self.grid;
        let prefix = usize::from(self.cls_token.is_some());
        let (p, l) = (g * g, g * g + prefix);
        let width = self.width;
        let tokens = match &self.patch_embed {
            PatchEmbed::Proj(proj) => {
                let patches = super::vit::patches(px, n, self.side, self.patch)?;
                proj.rows(n * p, &patches, None, Act::None)
            }
            PatchEmbed::Stem(convs) => {
                let mut h = Vec::new();
                let mut side = self.side;
                for (i, (conv, k)) in convs.iter().enumerate() {
                    let patches = if i == 0 {
                        super::vit::patches(px, n, side, *k)?
                    } else {
                        super::conv::patches_nhwc(&h, n, side, *k)
                    };
                    side /= k;
                    let act = if i + 1 < convs.len() {
                        Act::Gelu
                    } else {
                        Act::None
                    };
                    h = conv.rows(n * side * side, &patches, None, act);
                }
                if side != g {
                    candle_core::bail!("the stem makes a {side} x {side} grid, not {g} x {g}");
                }
                h
            }
            PatchEmbed::MbConv(stem) => {
                let (h, side) = stem.forward(px, n, self.side);
                if side != g {
                    candle_core::bail!("the stages make a {side} x {side} grid, not {g} x {g}");
                }
                h
            }
        };
        // [class token, patches] per image, plus the positional embedding (over the patches
        // only where `no_embed_class`).
        let mut x = vec![0f32; n * l * width];
        x.par_chunks_mut(l * width)
            .zip(tokens.par_chunks(p * width))
            .for_each(|(img, t)| {
                let (cls, rest) = img.split_at_mut(prefix * width);
                if let Some(c) = &self.cls_token {
                    cls.copy_from_slice(c);
                }
                rest.copy_from_slice(t);
                let at = if self.no_embed_class { rest } else { img };
                for (o, &e) in at.iter_mut().zip(self.pos_embed.iter().flatten()) {
                    *o += e;
                }
            });
        drop(tokens);
        if let Some(ln) = &self.norm_pre {
            x = ln.rows(&x, n * l, width);
        }
        for b in &self.blocks {
            x = b.forward(x, n, l, self.rope.as_ref());
        }
        let pooled = match &self.pool {
            Pool::Map(norm, head) => head.forward(&norm.rows(&x, n * l, width), n, l),
            // The class token after the final norm (the norm is per token).
            Pool::Token(norm) => norm.rows(&x, n, l * width),
            Pool::Mean(fc_norm) => {
                fc_norm.rows(&kernels::token_means(&x, n, l, 0, width), n, width)
            }
            Pool::NormMean(norm) => {
                kernels::token_means(&norm.rows(&x, n * l, width), n, l, 0, width)
            }
        };
        Ok(self.head.rows(n, &pooled, None, Act::None))
    }
}
