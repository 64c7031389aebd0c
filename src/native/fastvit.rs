//! Mirrors timm's `FastVit` as open_clip's MobileCLIP-S* models build it (`models::fastvit`,
//! whose folded weights it takes) on channels-last row buffers `[n * h * w, c]`: the stem's
//! dense 3x3 conv as a product over gathered patches, the grouped and depthwise convs through
//! the depthwise kernel (`kernels::depthwise_nhwc`), 1x1 convs and the MLPs as products (GELU
//! in the first one's epilogue, the layer scale folded into the second, residual added there),
//! SE, the attention blocks over each image's rows, the average pool, then `head.fc`.

use super::conv::grid::{gelu_in_place, Conv, Grid, Grouped};
use super::gemm::{Act, GemmConfig};
use super::kernels::{self, HeadView, Mask};
use super::layers::{to_vec, LayerNorm, Linear};
use crate::models::fastvit::{
    AttnNorm, AttnParts, ConvParts, Mixer, MlpParts, Parts, SeParts, HEAD_DIM,
};
use crate::models::Config;
use candle_core::Result;
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// SE: each image's rows scaled by `sigmoid(fc2(relu(fc1(mean))))`.
#[derive(Debug)]
struct Se {
    fc1: Linear,
    fc2: Linear,
}

impl Se {
    fn new(p: &SeParts, gemm: GemmConfig) -> Result<Self> {
        Ok(Self {
            fc1: Linear::from_parts(&p.fc1.0, Some(&p.fc1.1), gemm)?,
            fc2: Linear::from_parts(&p.fc2.0, Some(&p.fc2.1), gemm)?,
        })
    }

    fn apply(&self, x: &mut Grid) {
        let (c, hw) = (x.c(), x.h * x.w);
        let mut mean = vec![0f32; x.n * c];
        for (b, m) in mean.chunks_mut(c).enumerate() {
            for row in x.data[b * hw * c..(b + 1) * hw * c].chunks(c) {
                m.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            m.iter_mut().for_each(|v| *v /= hw as f32);
        }
        let h = self.fc1.rows(x.n, &mean, None, Act::Relu);
        let g = self.fc2.rows(x.n, &h, None, Act::None);
        x.data
            .par_chunks_mut(hw * c)
            .zip(g.par_chunks(c))
            .for_each(|(img, g)| {
                let gate: Vec<f32> = g.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
                for row in img.chunks_mut(c) {
                    row.iter_mut().zip(&gate).for_each(|(v, &s)| *v *= s);
                }
            });
    }
}

/// A folded conv, SE where it has one, then GELU where `act`.
#[derive(Debug)]
struct ConvAct {
    conv: Conv,
    se: Option<Se>,
    act: bool,
}

impl ConvAct {
    fn new(p: &ConvParts, gemm: GemmConfig) -> Result<Self> {
        Ok(Self {
            conv: Conv::new(&p.conv, gemm)?,
            se: p.se.as_ref().map(|s| Se::new(s, gemm)).transpose()?,
            act: p.act,
        })
    }

    fn forward(&self, x: &Grid) -> Grid {
        // GELU goes into the product's epilogue only where no SE comes between.
        let fused = if self.act && self.se.is_none() {
            Act::Gelu
        } else {
            Act::None
        };
        let (mut y, applied) = self.conv.forward(x, fused);
        if let Some(se) = &self.se {
            se.apply(&mut y);
        }
        if self.act && !(applied && fused != Act::None) {
            gelu_in_place(&mut y.data);
        }
        y
    }
}

/// `x + fc2(gelu(fc1(conv(x))))`, the layer scale folded into `fc2`.
#[derive(Debug)]
struct Mlp {
    conv: Grouped,
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(p: &MlpParts, gemm: GemmConfig) -> Result<Self> {
        Ok(Self {
            conv: Grouped::new(&p.conv)?,
            fc1: Linear::from_parts(&p.fc1.0, Some(&p.fc1.1), gemm)?,
            fc2: Linear::from_parts(&p.fc2.0, Some(&p.fc2.1), gemm)?,
        })
    }

    fn forward(&self, x: Grid) -> Grid {
        let m = x.rows();
        let h = self.conv.forward(&x, false);
        let h = self.fc1.rows(m, &h.data, None, Act::Gelu);
        Grid {
            data: self.fc2.rows(m, &h, Some(&x.data), Act::None),
            ..x
        }
    }
}

/// `x + proj(attention(norm(x)))` over each image's rows (BatchNorm folded into `qkv`, the
/// layer scale into `proj`).
#[derive(Debug)]
struct Attention {
    norm: Option<LayerNorm>,
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn new(p: &AttnParts, gemm: GemmConfig) -> Result<Self> {
        Ok(Self {
            norm: match &p.norm {
                AttnNorm::Folded => None,
                AttnNorm::Layer(w, b) => Some(LayerNorm {
                    weight: to_vec(w)?,
                    bias: to_vec(b)?,
                    eps: 1e-5,
                }),
            },
            qkv: Linear::from_parts(&p.qkv.0, Some(&p.qkv.1), gemm)?,
            proj: Linear::from_parts(&p.proj.0, Some(&p.proj.1), gemm)?,
            heads: p.heads,
        })
    }

    fn forward(&self, x: Grid) -> Grid {
        let (m, l) = (x.rows(), x.h * x.w);
        let d = self.proj.out_dim();
        let qkv = match &self.norm {
            Some(ln) => {
                let h = ln.rows_for(&self.qkv, &x.data, m, d);
                self.qkv.rows_of(m, h.rows(), None, Act::None)
            }
            None => self.qkv.rows(m, &x.data, None, Act::None),
        };
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
            x.n,
            self.heads,
            HEAD_DIM,
            Mask::None,
        );
        drop(qkv);
        Grid {
            data: self.proj.rows(m, &att, Some(&x.data), Act::None),
            ..x
        }
    }
}

#[derive(Debug)]
enum Block {
    RepMixer(Grouped, Mlp),
    Attention(Box<Attention>, Mlp),
}

#[derive(Debug)]
struct Stage {
    downsample: Option<(ConvAct, ConvAct)>,
    pos_emb: Option<Grouped>,
    blocks: Vec<Block>,
}

#[derive(Debug)]
pub struct FastVit {
    stem: Vec<ConvAct>,
    stages: Vec<Stage>,
    final_conv: ConvAct,
    head: Linear,
    resolution: usize,
}

impl FastVit {
    /// `vb`: the trunk (`visual.trunk`).
    pub fn new(cfg: &Config, vb: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let Some(f) = &cfg.vision_fastvit else {
            candle_core::bail!("a FastViT image tower needs a `vision_fastvit` section")
        };
        let p = Parts::load(f, cfg.embed_dim, &vb)?;
        // The pixels and the pooled rows stay f32 under bf16 (as the other towers' stems).
        let f32_gemm = GemmConfig {
            bf16: false,
            ..gemm
        };
        let stages = p
            .stages
            .iter()
            .map(|s| -> Result<Stage> {
                Ok(Stage {
                    downsample: s
                        .downsample
                        .as_ref()
                        .map(|(a, b)| -> Result<_> {
                            Ok((ConvAct::new(a, gemm)?, ConvAct::new(b, gemm)?))
                        })
                        .transpose()?,
                    pos_emb: s.pos_emb.as_ref().map(Grouped::new).transpose()?,
                    blocks: s
                        .blocks
                        .iter()
                        .map(|b| -> Result<Block> {
                            let mlp = Mlp::new(&b.mlp, gemm)?;
                            Ok(match &b.mixer {
                                Mixer::Conv(c) => Block::RepMixer(Grouped::new(c)?, mlp),
                                Mixer::Attention(a) => {
                                    Block::Attention(Box::new(Attention::new(a, gemm)?), mlp)
                                }
                            })
                        })
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            stem: p
                .stem
                .iter()
                .enumerate()
                .map(|(i, c)| ConvAct::new(c, if i == 0 { f32_gemm } else { gemm }))
                .collect::<Result<_>>()?,
            stages,
            final_conv: ConvAct::new(&p.final_conv, gemm)?,
            head: Linear::from_parts(&p.head.0, Some(&p.head.1), f32_gemm)?,
            resolution: cfg.image_resolution,
        })
    }

    /// `px`: `n` images `[3, R, R]` (NCHW, normalised) -> `[n, embed_dim]`.
    pub fn forward(&self, px: &[f32], n: usize) -> Result<Vec<f32>> {
        let r = self.resolution;
        if px.len() != n * 3 * r * r {
            candle_core::bail!("expected {n} images of 3x{r}x{r} pixels");
        }
        let hw = r * r;
        let mut nhwc = vec![0f32; n * 3 * hw];
        nhwc.par_chunks_mut(3 * hw)
            .zip(px.par_chunks(3 * hw))
            .for_each(|(dst, img)| {
                for (p, o) in dst.chunks_mut(3).enumerate() {
                    for (ch, v) in o.iter_mut().enumerate() {
                        *v = img[ch * hw + p];
                    }
                }
            });
        let mut x = Grid {
            data: nhwc,
            n,
            h: r,
            w: r,
        };
        for c in &self.stem {
            x = c.forward(&x);
        }
        for s in &self.stages {
            if let Some((a, b)) = &s.downsample {
                x = b.forward(&a.forward(&x));
            }
            if let Some(p) = &s.pos_emb {
                x = p.forward(&x, false);
            }
            for b in &s.blocks {
                x = match b {
                    Block::RepMixer(conv, mlp) => mlp.forward(conv.forward(&x, false)),
                    Block::Attention(att, mlp) => mlp.forward(att.forward(x)),
                };
            }
        }
        let x = self.final_conv.forward(&x);
        let (c, hw) = (x.c(), x.h * x.w);
        let mut pooled = vec![0f32; n * c];
        for (b, out) in pooled.chunks_mut(c).enumerate() {
            for row in x.data[b * hw * c..(b + 1) * hw * c].chunks(c) {
                out.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
            }
            out.iter_mut().for_each(|v| *v /= hw as f32);
        }
        Ok(self.head.rows(n, &pooled, None, Act::None))
    }
}
