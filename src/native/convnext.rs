//! Mirrors open_clip's `TimmModel` around timm's `ConvNeXt` (`models::convnext`) on
//! channels-last row buffers `[n * h * w, c]`: the stem and downsampling convolutions as
//! products over gathered patches, the 7x7 depthwise conv as its own kernel, LayerNorm and the
//! MLP (GELU in the first product's epilogue, layer scale folded into the second, residual
//! added there), then the average pool, head LayerNorm and projection.

use super::conv::patches_nhwc;
use super::gemm::{Act, GemmConfig};
use super::kernels;
use super::layers::{to_vec, LayerNorm, Linear};
use crate::models::config::{TimmProj, TimmTower};
use crate::models::convnext::DW;
use crate::models::nn as fold;
use crate::models::Config;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug)]
struct Block {
    /// `conv_dw`'s taps `[49, c]` (ky * 7 + kx) and bias.
    taps: Vec<f32>,
    bias: Vec<f32>,
    norm: LayerNorm,
    fc1: Linear,
    /// `fc2` with the layer scale (`gamma`) folded in.
    fc2: Linear,
}

impl Block {
    fn new(dim: usize, eps: f32, vb: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let dw = vb.pp("conv_dw");
        let w = fold::load(&dw, &[dim, 1, DW, DW], "weight")?;
        let gamma = fold::load(&vb, &[dim], "gamma")?;
        let mlp = vb.pp("mlp");
        Ok(Self {
            taps: to_vec(&w.reshape((dim, DW * DW))?.t()?)?,
            bias: to_vec(&fold::load(&dw, &[dim], "bias")?)?,
            norm: LayerNorm::with_eps(dim, eps, vb.pp("norm"))?,
            fc1: Linear::new(dim, 4 * dim, mlp.pp("fc1"), gemm)?,
            fc2: Linear::with_gain(4 * dim, dim, mlp.pp("fc2"), Some(&gamma), gemm)?,
        })
    }

    /// `x + fc2(gelu(fc1(norm(conv_dw(x)))))` over `n` grids of `g` x `g`.
    fn forward(&self, x: &[f32], n: usize, g: usize) -> Vec<f32> {
        let c = self.bias.len();
        let m = n * g * g;
        let d = kernels::Depthwise {
            n,
            h: g,
            w: g,
            c,
            k: DW,
            stride: 1,
            gelu: false,
        };
        let h = kernels::depthwise_nhwc(x, d, &self.taps, &self.bias);
        let h = self.norm.rows_for(&self.fc1, &h, m, c);
        let h = self.fc1.rows_of(m, h.rows(), None, Act::Gelu);
        self.fc2.rows(m, &h, Some(x), Act::None)
    }
}

/// A convolution with kernel = stride (the stem's 4, downsampling's 2) as a product over
/// patches gathered channels-last: its weight reordered to `[out, ky, kx, in]`.
#[derive(Debug)]
struct Patchify {
    linear: Linear,
    k: usize,
}

impl Patchify {
    fn new(c_in: usize, c_out: usize, k: usize, vb: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let w = fold::load(&vb, &[c_out, c_in, k, k], "weight")?
            .permute((0, 2, 3, 1))?
            .reshape((c_out, k * k * c_in))?;
        let b = fold::load(&vb, &[c_out], "bias")?;
        Ok(Self {
            linear: Linear::from_parts(&w, Some(&b), gemm)?,
            k,
        })
    }

    /// `n` channels-last grids `[g, g, c]` -> `[n * (g / k)^2, c_out]`.
    fn forward(&self, x: &[f32], n: usize, g: usize) -> Vec<f32> {
        let go = g / self.k;
        let patches = patches_nhwc(x, n, g, self.k);
        self.linear.rows(n * go * go, &patches, None, Act::None)
    }
}

#[derive(Debug)]
struct Stage {
    downsample: Option<(LayerNorm, Patchify)>,
    blocks: Vec<Block>,
}

#[derive(Debug)]
enum Head {
    Proj(Linear),
    Mlp(Linear, Linear),
}

#[derive(Debug)]
pub struct ConvNext {
    stem: Patchify,
    stem_norm: LayerNorm,
    stages: Vec<Stage>,
    head_norm: LayerNorm,
    head: Head,
    resolution: usize,
}

impl ConvNext {
    pub fn new(cfg: &Config, vb: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let Some(TimmTower {
            depths,
            dims,
            eps,
            proj,
            ..
        }) = cfg.vision_timm.as_ref()
        else {
            candle_core::bail!("a ConvNeXt config needs its timm tower")
        };
        let eps = *eps as f32;
        let trunk = vb.pp("trunk");
        // The pixels stay f32 under bf16 (as the other towers' stems).
        let f32_gemm = GemmConfig {
            bf16: false,
            ..gemm
        };
        let mut stages = Vec::with_capacity(4);
        for (i, (&depth, &dim)) in depths.iter().zip(dims).enumerate() {
            let vs = trunk.pp("stages").pp(i);
            let downsample = (i > 0)
                .then(|| -> Result<_> {
                    let d = vs.pp("downsample");
                    Ok((
                        LayerNorm::with_eps(dims[i - 1], eps, d.pp(0))?,
                        Patchify::new(dims[i - 1], dim, 2, d.pp(1), gemm)?,
                    ))
                })
                .transpose()?;
            let blocks = (0..depth)
                .map(|b| Block::new(dim, eps, vs.pp("blocks").pp(b), gemm))
                .collect::<Result<_>>()?;
            stages.push(Stage { downsample, blocks });
        }
        let (last, e) = (dims[3], cfg.embed_dim);
        let head = vb.pp("head");
        let bias_free = |vb: VarBuilder, o: usize, i: usize| -> Result<Linear> {
            let w: Tensor = fold::load(&vb, &[o, i], "weight")?;
            Linear::from_parts(&w, None, gemm)
        };
        let head = match proj {
            TimmProj::Linear => Head::Proj(bias_free(head.pp("proj"), e, last)?),
            TimmProj::Mlp => Head::Mlp(
                Linear::new(last, 2 * e, head.pp("mlp").pp("fc1"), gemm)?,
                bias_free(head.pp("mlp").pp("fc2"), e, 2 * e)?,
            ),
        };
        Ok(Self {
            stem: Patchify::new(3, dims[0], 4, trunk.pp("stem").pp(0), f32_gemm)?,
            stem_norm: LayerNorm::with_eps(dims[0], eps, trunk.pp("stem").pp(1))?,
            stages,
            head_norm: LayerNorm::with_eps(last, eps, trunk.pp("head").pp("norm"))?,
            head,
            resolution: cfg.image_resolution,
        })
    }

    /// `px`: `n` images `[3, R, R]` (NCHW, normalised) -> `[n, embed_dim]`.
    pub fn forward(&self, px: &[f32], n: usize) -> Result<Vec<f32>> {
        let r = self.resolution;
        if px.len() != n * 3 * r * r {
            candle_core::bail!("expected {n} images of 3x{r}x{r} pixels");
        }
        // Channels-last pixels for the stem's patches.
        let hw = r * r;
        // Safety: each image's task writes all of its pixels.
        let nhwc = unsafe {
            kernels::par_build(n * 3 * hw, 3 * hw, |b, dst| {
                let img = &px[b * 3 * hw..(b + 1) * 3 * hw];
                for (p, o) in dst.chunks_mut(3).enumerate() {
                    for (ch, v) in o.iter_mut().enumerate() {
                        v.write(img[ch * hw + p]);
                    }
                }
            })
        };
        let mut g = r;
        let x = self.stem.forward(&nhwc, n, g);
        drop(nhwc);
        g /= 4;
        let c0 = self.stem_norm.weight.len();
        let mut x = self.stem_norm.rows(&x, n * g * g, c0);
        for stage in &self.stages {
            if let Some((norm, conv)) = &stage.downsample {
                let c = norm.weight.len();
                x = conv.forward(&norm.rows(&x, n * g * g, c), n, g);
                g /= 2;
            }
            for b in &stage.blocks {
                x = b.forward(&x, n, g);
            }
        }
        // The average pool, then the head's norm and the projection.
        let c = self.head_norm.weight.len();
        let mut pooled = vec![0f32; n * c];
        for (b, out) in pooled.chunks_mut(c).enumerate() {
            for row in x[b * g * g * c..(b + 1) * g * g * c].chunks(c) {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
            let inv = 1.0 / (g * g) as f32;
            out.iter_mut().for_each(|v| *v *= inv);
        }
        let pooled = self.head_norm.rows(&pooled, n, c);
        Ok(match &self.head {
            Head::Proj(p) => p.rows(n, &pooled, None, Act::None),
            Head::Mlp(fc1, fc2) => {
                let h = fc1.rows(n, &pooled, None, Act::Gelu);
                fc2.rows(n, &h, None, Act::None)
            }
        })
    }
}
