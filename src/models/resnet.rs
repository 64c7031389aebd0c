//! Mirrors the reference's `ModifiedResNet` (CLIP's) in candle tensor ops: a three-conv stem
//! with average pooling, anti-aliased bottlenecks (average pooling before strided convs) and
//! attention pooling. Every BatchNorm is folded into its convolution at load.

use super::config::{Config, VisionLayers};
use super::fused::Act;
use super::nn::{self, ConvBn, Linear};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct Bottleneck {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
    downsample: Option<ConvBn>,
    stride: usize,
}

impl Bottleneck {
    pub fn new(inplanes: usize, planes: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let conv1 = ConvBn::new(inplanes, planes, 1, 1, 0, vb.pp("conv1"), vb.pp("bn1"))?;
        let conv2 = ConvBn::new(planes, planes, 3, 1, 1, vb.pp("conv2"), vb.pp("bn2"))?;
        let conv3 = ConvBn::new(planes, planes * 4, 1, 1, 0, vb.pp("conv3"), vb.pp("bn3"))?;
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
            )?)
        } else {
            None
        };
        Ok(Self {
            conv1,
            conv2,
            conv3,
            downsample,
            stride,
        })
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.conv1.forward_act(x, Act::Relu)?;
        let mut out = self.conv2.forward_act(&out, Act::Relu)?;
        if self.stride > 1 {
            out = nn::avg_pool2d(&out, self.stride)?;
        }
        let identity = match &self.downsample {
            Some(d) => {
                let x = if self.stride > 1 {
                    nn::avg_pool2d(x, self.stride)?
                } else {
                    x.clone()
                };
                d.forward(&x)?
            }
            None => x.clone(),
        };
        self.conv3.forward_add_act(&out, &identity, Act::Relu)
    }
}

/// Attention pooling: the mean token attends over the grid; only its output is kept.
#[derive(Debug, Clone)]
pub struct AttentionPool2d {
    positional_embedding: Tensor,
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
    ) -> Result<Self> {
        let pe = nn::load(&vb, &[spacial * spacial + 1, embed], "positional_embedding")?;
        Ok(Self {
            positional_embedding: pe,
            q_proj: nn::linear(embed, embed, vb.pp("q_proj"))?,
            k_proj: nn::linear(embed, embed, vb.pp("k_proj"))?,
            v_proj: nn::linear(embed, embed, vb.pp("v_proj"))?,
            c_proj: nn::linear(embed, out, vb.pp("c_proj"))?,
            heads,
        })
    }
}

impl Module for AttentionPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        self.forward_tokens(&x.reshape((n, c, h * w))?.transpose(1, 2)?)
    }
}

impl AttentionPool2d {
    /// `x`: the grid as tokens `[N, HW, C]`.
    pub fn forward_tokens(&self, x: &Tensor) -> Result<Tensor> {
        let (n, hw, c) = x.dims3()?;
        let x = x.to_dtype(candle_core::DType::F32)?;
        let mean = x.mean_keepdim(1)?;
        let x =
            Tensor::cat(&[mean, x.contiguous()?], 1)?.broadcast_add(&self.positional_embedding)?;
        let l = hw + 1;
        let hd = c / self.heads;
        let q = (self.q_proj.forward_f32(&x.narrow(1, 0, 1)?)? * (1.0 / (hd as f64).sqrt()))?;
        let q = q
            .reshape((n, 1, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = self
            .k_proj
            .forward_f32(&x)?
            .reshape((n, l, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = self
            .v_proj
            .forward_f32(&x)?
            .reshape((n, l, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        // One query per image: the projections' outputs, the scores and the weighted sum in f32
        // cost nothing, and the pool's logits are large enough that reduced-precision rounding
        // moves its softmax.
        let f32 = candle_core::DType::F32;
        let att = super::fused::softmax(&nn::matmul(&q, &k.t()?, f32)?, false)?;
        let out = nn::matmul(&att, &v, f32)?
            .transpose(1, 2)?
            .reshape((n, c))?;
        self.c_proj.forward_f32(&out)
    }
}

#[derive(Debug, Clone)]
pub struct ModifiedResNet {
    stem: [ConvBn; 3],
    layers: Vec<Vec<Bottleneck>>,
    attnpool: AttentionPool2d,
}

impl ModifiedResNet {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let VisionLayers::ResNet(depths) = &cfg.vision_layers else {
            candle_core::bail!("a ResNet config needs a list of vision_layers")
        };
        let width = cfg.vision_width;
        // The first convolution reads the pixels and stays f32 in every precision: rounding its
        // 27-term sums to a reduced precision was the largest single source of error measured
        // (tiny-RN in bf16: worst row cosine 0.976 -> 0.997), for 0.4% of RN50's FLOPs.
        let f32 = vb.clone().set_dtype(candle_core::DType::F32);
        let stem = [
            ConvBn::new(3, width / 2, 3, 2, 1, f32.pp("conv1"), vb.pp("bn1"))?,
            ConvBn::new(width / 2, width / 2, 3, 1, 1, vb.pp("conv2"), vb.pp("bn2"))?,
            ConvBn::new(width / 2, width, 3, 1, 1, vb.pp("conv3"), vb.pp("bn3"))?,
        ];
        let mut inplanes = width;
        let mut layers = Vec::new();
        for (i, &depth) in depths.iter().enumerate() {
            let planes = width << i;
            let stride = if i == 0 { 1 } else { 2 };
            let lvb = vb.pp(format!("layer{}", i + 1));
            let mut blocks = Vec::new();
            for b in 0..depth {
                blocks.push(Bottleneck::new(
                    inplanes,
                    planes,
                    if b == 0 { stride } else { 1 },
                    lvb.pp(b),
                )?);
                inplanes = planes * 4;
            }
            layers.push(blocks);
        }
        let embed = width * 32;
        let attnpool = AttentionPool2d::new(
            cfg.image_resolution / 32,
            embed,
            cfg.vision_heads(),
            cfg.embed_dim,
            vb.pp("attnpool"),
        )?;
        Ok(Self {
            stem,
            layers,
            attnpool,
        })
    }
}

impl Module for ModifiedResNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.to_dtype(candle_core::DType::F32)?;
        for conv in &self.stem {
            x = conv.forward_act(&x, Act::Relu)?;
        }
        x = nn::avg_pool2d(&x, 2)?;
        for layer in &self.layers {
            for block in layer {
                x = block.forward(&x)?;
            }
        }
        self.attnpool.forward(&x)
    }
}
