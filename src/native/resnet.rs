//! Mirrors the reference's `ModifiedResNet` (CLIP's) on channels-last buffers: the three-conv
//! stem with average pooling, anti-aliased bottlenecks (average pooling before strided convs)
//! with bias, residual and ReLU fused into each convolution, and attention pooling.

use super::conv::{avg_pool, Nhwc};
use super::gemm::{Act, GemmConfig};
use super::kernels::{self, HeadView};
use super::layers::{to_vec, ConvBn, Linear};
use crate::models::nn as fold;
use crate::models::{Config, VisionLayers};
use candle_core::Result;
use candle_nn::VarBuilder;

#[derive(Debug)]
pub struct Bottleneck {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
    downsample: Option<ConvBn>,
    stride: usize,
}

impl Bottleneck {
    pub fn new(
        inplanes: usize,
        planes: usize,
        stride: usize,
        vb: VarBuilder,
        gemm: GemmConfig,
        winograd: bool,
    ) -> Result<Self> {
        let conv = |c_in, c_out, k, pad, i: usize| {
            let (c, b) = (format!("conv{i}"), format!("bn{i}"));
            ConvBn::new(c_in, c_out, k, 1, pad, vb.pp(c), vb.pp(b), gemm, winograd)
        };
        let downsample = if stride > 1 || inplanes != planes * 4 {
            let d = vb.pp("downsample");
            Some(ConvBn::new(
                inplanes,
                planes * 4,
                1,
                1,
                0,
                d.pp("0"),
                d.pp("1"),
                gemm,
                winograd,
            )?)
        } else {
            None
        };
        Ok(Self {
            conv1: conv(inplanes, planes, 1, 0, 1)?,
            conv2: conv(planes, planes, 3, 1, 2)?,
            conv3: conv(planes, planes * 4, 1, 0, 3)?,
            downsample,
            stride,
        })
    }

    fn forward(&self, x: &Nhwc) -> Nhwc {
        let out = self.conv1.forward(x, None, true);
        let mut out = self.conv2.forward(&out, None, true);
        if self.stride > 1 {
            out = avg_pool(&out, self.stride);
        }
        let identity = self.downsample.as_ref().map(|d| {
            if self.stride > 1 {
                d.forward(&avg_pool(x, self.stride), None, false)
            } else {
                d.forward(x, None, false)
            }
        });
        self.conv3
            .forward(&out, Some(identity.as_ref().unwrap_or(x)), true)
    }
}

/// Attention pooling: the mean token attends over the grid; only its output is kept.
#[derive(Debug)]
pub struct AttentionPool2d {
    positional_embedding: Vec<f32>,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    c_proj: Linear,
    heads: usize,
}

impl AttentionPool2d {
    pub fn new(
        spacial: usize,
        embed: usize,
        heads: usize,
        out: usize,
        vb: VarBuilder,
        gemm: GemmConfig,
    ) -> Result<Self> {
        let pe = fold::load(&vb, &[spacial * spacial + 1, embed], "positional_embedding")?;
        Ok(Self {
            positional_embedding: to_vec(&pe)?,
            q_proj: Linear::new(embed, embed, vb.pp("q_proj"), gemm)?,
            k_proj: Linear::new(embed, embed, vb.pp("k_proj"), gemm)?,
            v_proj: Linear::new(embed, embed, vb.pp("v_proj"), gemm)?,
            c_proj: Linear::new(embed, out, vb.pp("c_proj"), gemm)?,
            heads,
        })
    }

    /// The grid as tokens `[n, hw, c]` -> `[n, out]`.
    fn forward(&self, x: &Nhwc) -> Result<Vec<f32>> {
        let (n, hw, c) = (x.n, x.h * x.w, x.c);
        let l = hw + 1;
        if self.positional_embedding.len() != l * c {
            candle_core::bail!("attention pool: a {}x{} grid of {c} channels", x.h, x.w);
        }
        let pos = &self.positional_embedding;
        // Per image: the mean token, then the grid, each plus its positional embedding.
        let mut rows = vec![0f32; n * l * c];
        for (img, src) in rows.chunks_mut(l * c).zip(x.data.chunks(hw * c)) {
            let (mean, grid) = img.split_at_mut(c);
            for t in src.chunks(c) {
                for (m, &v) in mean.iter_mut().zip(t) {
                    *m += v;
                }
            }
            for (m, &p) in mean.iter_mut().zip(&pos[..c]) {
                *m = *m / hw as f32 + p;
            }
            for ((g, &v), &p) in grid.iter_mut().zip(src).zip(&pos[c..]) {
                *g = v + p;
            }
        }
        let mut q = vec![0f32; n * c];
        self.q_proj
            .apply(n, &rows, l * c, 0..c, &mut q, c, None, Act::None);
        let k = self.k_proj.rows(n * l, &rows, None, Act::None);
        let v = self.v_proj.rows(n * l, &rows, None, Act::None);
        let view = |data| HeadView {
            data,
            rows: l,
            stride: c,
            offset: 0,
        };
        let qv = HeadView {
            data: &q,
            rows: 1,
            stride: c,
            offset: 0,
        };
        let att = kernels::attention(
            self.q_proj.config(),
            qv,
            view(&k),
            view(&v),
            n,
            self.heads,
            c / self.heads,
            kernels::Mask::None,
        );
        Ok(self.c_proj.rows(n, &att, None, Act::None))
    }
}

#[derive(Debug)]
pub struct ModifiedResNet {
    /// `conv1`/`bn1` .. `conv3`/`bn3`.
    stem: [ConvBn; 3],
    /// `layer1` .. `layer4`.
    layers: Vec<Vec<Bottleneck>>,
    attnpool: AttentionPool2d,
    resolution: usize,
}

impl ModifiedResNet {
    pub fn new(cfg: &Config, vb: VarBuilder, gemm: GemmConfig, winograd: bool) -> Result<Self> {
        let VisionLayers::ResNet(depths) = &cfg.vision_layers else {
            candle_core::bail!("a ResNet config needs a list of vision_layers")
        };
        let width = cfg.vision_width;
        let stem = |c_in, c_out, stride, i: usize| {
            let (c, b) = (format!("conv{i}"), format!("bn{i}"));
            // The stem stays f32 under bf16 (as the ViT's patch embedding does): measured on a
            // random RN50 (512 images), its bf16 rounding was 30% of the image features' error
            // (mean 1 - cosine 3.06e-5 -> 2.16e-5) for 1-2% of the time, its products being
            // only 32-64 channels deep.
            let gemm = GemmConfig {
                bf16: false,
                ..gemm
            };
            ConvBn::new(
                c_in,
                c_out,
                3,
                stride,
                1,
                vb.pp(c),
                vb.pp(b),
                gemm,
                winograd,
            )
        };
        let stem = [
            stem(3, width / 2, 2, 1)?,
            stem(width / 2, width / 2, 1, 2)?,
            stem(width / 2, width, 1, 3)?,
        ];
        let mut inplanes = width;
        let mut layers = Vec::new();
        for (i, &depth) in depths.iter().enumerate() {
            let planes = width << i;
            let stride = if i == 0 { 1 } else { 2 };
            let lvb = vb.pp(format!("layer{}", i + 1));
            let mut blocks = Vec::new();
            for b in 0..depth {
                let s = if b == 0 { stride } else { 1 };
                blocks.push(Bottleneck::new(
                    inplanes,
                    planes,
                    s,
                    lvb.pp(b),
                    gemm,
                    winograd,
                )?);
                inplanes = planes * 4;
            }
            layers.push(blocks);
        }
        let attnpool = AttentionPool2d::new(
            cfg.image_resolution / 32,
            width * 32,
            cfg.vision_heads(),
            cfg.embed_dim,
            vb.pp("attnpool"),
            gemm,
        )?;
        Ok(Self {
            stem,
            layers,
            attnpool,
            resolution: cfg.image_resolution,
        })
    }

    /// `px`: `n` images `[3, R, R]` (NCHW, normalised) -> `[n, embed_dim]`.
    pub fn forward(&self, px: &[f32], n: usize) -> Result<Vec<f32>> {
        let r = self.resolution;
        if px.len() != n * 3 * r * r {
            candle_core::bail!("expected {n} images of 3x{r}x{r} pixels");
        }
        let mut t = Nhwc::from_nchw(px, n, 3, r, r);
        for conv in &self.stem {
            t = conv.forward(&t, None, true);
        }
        t = avg_pool(&t, 2);
        for block in self.layers.iter().flatten() {
            t = block.forward(&t);
        }
        self.attnpool.forward(&t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Activation, Family};
    use crate::synth::random_vb;

    /// Under bf16 the stem (pixels and the two narrow convolutions after them) keeps f32
    /// products and every bottleneck convolution rounds to bf16 (packing only: runs anywhere).
    #[test]
    fn bf16_keeps_the_stem_f32() {
        let cfg = Config {
            embed_dim: 16,
            image_resolution: 64,
            vision_layers: VisionLayers::ResNet(vec![1, 1, 1, 1]),
            vision_width: 32,
            vision_patch_size: None,
            context_length: 77,
            vocab_size: 64,
            transformer_width: 32,
            transformer_heads: 2,
            transformer_layers: 1,
            family: Family::Clip,
            activation: Activation::QuickGelu,
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
        };
        let gemm = GemmConfig {
            bf16: true,
            ..GemmConfig::detected()
        };
        let r = ModifiedResNet::new(&cfg, random_vb(5), gemm, true).unwrap();
        assert!(r.stem.iter().all(|c| !c.kernel.bf16()));
        let convs = r.layers.iter().flatten().flat_map(|b| {
            [&b.conv1, &b.conv2, &b.conv3]
                .into_iter()
                .chain(b.downsample.as_ref())
        });
        assert!(convs.into_iter().all(|c| c.kernel.bf16()));
    }
}
