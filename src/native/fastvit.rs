//! Mirrors timm's `FastVit` as open_clip's MobileCLIP-S* models build it (`models::fastvit`,
//! whose folded weights it takes) on channels-last row buffers `[n * h * w, c]`: the stem's
//! dense 3x3 conv as a product over gathered patches, the grouped and depthwise convs as their
//! own kernel (stride-1 depthwise through ConvNeXt's), 1x1 convs and the MLPs as products (GELU
//! in the first one's epilogue, the layer scale folded into the second, residual added there),
//! SE, the attention blocks over each image's rows, the average pool, then `head.fc`.

use super::gemm::{Act, GemmConfig};
use super::kernels::{self, HeadView, Mask};
use super::layers::{to_vec, LayerNorm, Linear};
use super::simd;
use crate::models::fastvit::{
    AttnNorm, AttnParts, ConvParts, Folded, Mixer, MlpParts, Parts, SeParts, HEAD_DIM,
};
use crate::models::Config;
use candle_core::Result;
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// A grid of channels-last rows: `n` images of `h` x `w`, `c` channels.
struct Grid {
    data: Vec<f32>,
    n: usize,
    h: usize,
    w: usize,
}

impl Grid {
    fn c(&self) -> usize {
        self.data.len() / (self.n * self.h * self.w).max(1)
    }

    fn rows(&self) -> usize {
        self.n * self.h * self.w
    }

    /// The output size of a k x k window at stride s with zero padding k / 2.
    fn out_size(&self, k: usize, s: usize) -> (usize, usize) {
        let p = k / 2;
        ((self.h + 2 * p - k) / s + 1, (self.w + 2 * p - k) / s + 1)
    }

    /// The taps of image b's k x k window at output pixel (oy, ox) (stride s, zero padding
    /// k / 2) that fall inside the image: each tap's index ky * k + kx and its pixel's offset
    /// in `data`.
    fn window(
        &self,
        b: usize,
        (oy, ox): (usize, usize),
        k: usize,
        s: usize,
    ) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (p, c) = (k / 2, self.c());
        let inside =
            move |o: usize, t: usize, len: usize| (o * s + t).checked_sub(p).filter(|&v| v < len);
        (0..k).flat_map(move |ky| {
            (0..k).filter_map(move |kx| {
                let iy = inside(oy, ky, self.h)?;
                let ix = inside(ox, kx, self.w)?;
                Some((ky * k + kx, ((b * self.h + iy) * self.w + ix) * c))
            })
        })
    }
}

fn gelu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(4096)
        .for_each(|c| c.iter_mut().for_each(|v| *v = simd::gelu_erf(*v)));
}

/// A grouped convolution with one input channel per group (`c_out = m * c_in`; depthwise at
/// m = 1), kernel k, stride s, zero padding k / 2: taps `[k * k, c_out]` (ky * k + kx).
#[derive(Debug)]
struct Grouped {
    taps: Vec<f32>,
    bias: Vec<f32>,
    k: usize,
    stride: usize,
}

impl Grouped {
    fn new(f: &Folded) -> Result<Self> {
        let (co, per, k, _) = f.weight.dims4()?;
        if per != 1 || f.groups == 0 || !co.is_multiple_of(f.groups) {
            candle_core::bail!("a grouped conv here takes one input channel per group");
        }
        Ok(Self {
            taps: to_vec(&f.weight.reshape((co, k * k))?.t()?)?,
            bias: to_vec(&f.bias)?,
            k,
            stride: f.stride,
        })
    }

    fn forward(&self, x: &Grid) -> Grid {
        let (c, co, k, s) = (x.c(), self.bias.len(), self.k, self.stride);
        if s == 1 && c == co {
            // Depthwise at stride 1: ConvNeXt's kernel.
            let data =
                kernels::depthwise_nhwc(&x.data, x.n, x.h, x.w, c, k, &self.taps, &self.bias);
            return Grid { data, ..*x };
        }
        let m = co / c.max(1);
        let (ho, wo) = x.out_size(k, s);
        let mut out = vec![0f32; x.n * ho * wo * co];
        out.par_chunks_mut(wo * co)
            .enumerate()
            .for_each(|(r, row)| {
                let (b, oy) = (r / ho, r % ho);
                for (ox, acc) in row.chunks_mut(co).enumerate() {
                    acc.copy_from_slice(&self.bias);
                    for (tap, at) in x.window(b, (oy, ox), k, s) {
                        let xin = &x.data[at..at + c];
                        let t = &self.taps[tap * co..][..co];
                        for ((a, tt), &v) in acc.chunks_mut(m).zip(t.chunks(m)).zip(xin) {
                            for (o, &w) in a.iter_mut().zip(tt) {
                                *o += v * w;
                            }
                        }
                    }
                }
            });
        Grid {
            data: out,
            n: x.n,
            h: ho,
            w: wo,
        }
    }
}

/// A dense convolution (one group) as a product over gathered k x k patches, zero padded by
/// k / 2: its weight reordered to `[out, ky, kx, in]`.
#[derive(Debug)]
struct Dense {
    linear: Linear,
    k: usize,
    stride: usize,
}

impl Dense {
    fn new(f: &Folded, gemm: GemmConfig) -> Result<Self> {
        let (co, _, k, _) = f.weight.dims4()?;
        let w = f
            .weight
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((co, ()))?;
        Ok(Self {
            linear: Linear::from_parts(&w, Some(&f.bias), gemm)?,
            k,
            stride: f.stride,
        })
    }

    fn forward(&self, x: &Grid, act: Act) -> Grid {
        let (c, k, s) = (x.c(), self.k, self.stride);
        let (ho, wo) = x.out_size(k, s);
        let per = k * k * c;
        let mut patches = vec![0f32; x.n * ho * wo * per];
        patches
            .par_chunks_mut(per)
            .enumerate()
            .for_each(|(r, dst)| {
                let (b, oy, ox) = (r / (ho * wo), (r / wo) % ho, r % wo);
                for (tap, at) in x.window(b, (oy, ox), k, s) {
                    dst[tap * c..][..c].copy_from_slice(&x.data[at..at + c]);
                }
            });
        Grid {
            data: self.linear.rows(x.n * ho * wo, &patches, None, act),
            n: x.n,
            h: ho,
            w: wo,
        }
    }
}

/// A folded conv: dense, 1x1 (a product over the rows) or grouped.
#[derive(Debug)]
enum Conv {
    Dense(Dense),
    Pointwise(Linear),
    Grouped(Grouped),
}

impl Conv {
    fn new(f: &Folded, gemm: GemmConfig) -> Result<Self> {
        let (co, per, k, _) = f.weight.dims4()?;
        Ok(if f.groups > 1 {
            Self::Grouped(Grouped::new(f)?)
        } else if k == 1 && f.stride == 1 {
            let w = f.weight.reshape((co, per))?;
            Self::Pointwise(Linear::from_parts(&w, Some(&f.bias), gemm)?)
        } else {
            Self::Dense(Dense::new(f, gemm)?)
        })
    }

    /// The conv, with `act` in a product's epilogue; grouped convs leave it to the caller.
    /// Also whether `act` was applied.
    fn forward(&self, x: &Grid, act: Act) -> (Grid, bool) {
        match self {
            Self::Dense(d) => (d.forward(x, act), true),
            Self::Pointwise(l) => (
                Grid {
                    data: l.rows(x.rows(), &x.data, None, act),
                    ..*x
                },
                true,
            ),
            Self::Grouped(g) => (g.forward(x), false),
        }
    }
}

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
        let h = self.conv.forward(&x);
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
                x = p.forward(&x);
            }
            for b in &s.blocks {
                x = match b {
                    Block::RepMixer(conv, mlp) => mlp.forward(conv.forward(&x)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// A direct NCHW convolution (zero padding k / 2) as the reference, on channels-last
    /// input and output.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        x: &[f32],
        (n, h, w, c): (usize, usize, usize, usize),
        wt: &[f32],
        bias: &[f32],
        co: usize,
        k: usize,
        s: usize,
        groups: usize,
    ) -> Vec<f32> {
        let p = k / 2;
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let (cin_g, cout_g) = (c / groups, co / groups);
        let mut out = vec![0f32; n * ho * wo * co];
        for b in 0..n {
            for oy in 0..ho {
                for ox in 0..wo {
                    for o in 0..co {
                        let g = o / cout_g;
                        let mut acc = bias[o] as f64;
                        for i in 0..cin_g {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = (oy * s + ky, ox * s + kx);
                                    if iy < p || ix < p || iy - p >= h || ix - p >= w {
                                        continue;
                                    }
                                    let xi = x[((b * h + iy - p) * w + ix - p) * c + g * cin_g + i];
                                    let wi = wt[((o * cin_g + i) * k + ky) * k + kx];
                                    acc += xi as f64 * wi as f64;
                                }
                            }
                        }
                        out[((b * ho + oy) * wo + ox) * co + o] = acc as f32;
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    /// The grouped kernel (depthwise and with a channel multiplier, strides 1 and 2, odd and
    /// even sizes, stride-1 depthwise through ConvNeXt's kernel) and the dense one equal a
    /// direct convolution.
    #[test]
    fn convolutions_equal_a_direct_one() {
        let gemm = GemmConfig::detected();
        for &(c, co, k, s, groups, h, w) in &[
            (4, 4, 3, 1, 4, 5, 6),
            (4, 4, 7, 1, 4, 9, 8),
            (4, 4, 3, 2, 4, 7, 8),
            (4, 8, 7, 2, 4, 9, 10),
            (4, 8, 3, 1, 4, 5, 5),
            (3, 8, 3, 2, 1, 9, 8),
            (8, 8, 1, 1, 1, 3, 4),
        ] {
            let n = 2;
            let x = values(n * h * w * c, 1);
            let wt = values(co * (c / groups) * k * k, 2);
            let bias = values(co, 3);
            let f = Folded {
                weight: Tensor::from_vec(wt.clone(), (co, c / groups, k, k), &Device::Cpu).unwrap(),
                bias: Tensor::from_vec(bias.clone(), co, &Device::Cpu).unwrap(),
                stride: s,
                groups,
            };
            let grid = Grid {
                data: x.clone(),
                n,
                h,
                w,
            };
            let (got, _) = Conv::new(&f, gemm).unwrap().forward(&grid, Act::None);
            let want = direct(&x, (n, h, w, c), &wt, &bias, co, k, s, groups);
            assert_eq!(got.data.len(), want.len(), "{c} {co} {k} {s} {groups}");
            for (a, b) in got.data.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{c} {co} {k} {s} {groups}: {a} vs {b}"
                );
            }
        }
    }
}
