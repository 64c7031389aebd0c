//! Mirrors the reference's `ModifiedResNet` (CLIP's): a three-conv stem with average pooling,
//! anti-aliased bottlenecks (average pooling before strided convs) and attention pooling.
//! Every BatchNorm is folded into its convolution at load.

use super::config::{Config, VisionLayers};
use super::nhwc::{self, Nhwc};
use super::nn::{self, ConvBn, Linear};
use candle_core::{DType, Module, Result, Tensor};
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

impl Bottleneck {
    /// The channels-last CPU path: the same math, with bias, residual and ReLU fused.
    fn forward_nhwc(&self, x: &Nhwc) -> Option<Nhwc> {
        let out = self.conv1.cpu.as_ref()?.forward(x, None, true);
        let mut out = self.conv2.cpu.as_ref()?.forward(&out, None, true);
        if self.stride > 1 {
            out = nhwc::avg_pool(&out, self.stride);
        }
        let identity = match &self.downsample {
            Some(d) => {
                let pooled;
                let src = if self.stride > 1 {
                    pooled = nhwc::avg_pool(x, self.stride);
                    &pooled
                } else {
                    x
                };
                Some(d.cpu.as_ref()?.forward(src, None, false))
            }
            None => None,
        };
        Some(
            self.conv3
                .cpu
                .as_ref()?
                .forward(&out, Some(identity.as_ref().unwrap_or(x)), true),
        )
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.conv1.forward(x)?.relu()?;
        let mut out = self.conv2.forward(&out)?.relu()?;
        if self.stride > 1 {
            out = out.avg_pool2d(self.stride)?;
        }
        let out = self.conv3.forward(&out)?;
        let identity = match &self.downsample {
            Some(d) => {
                let x = if self.stride > 1 {
                    x.avg_pool2d(self.stride)?
                } else {
                    x.clone()
                };
                d.forward(&x)?
            }
            None => x.clone(),
        };
        (out + identity)?.relu()
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
        let pe = vb.get_with_hints_dtype(
            (spacial * spacial + 1, embed),
            "positional_embedding",
            Default::default(),
            DType::F32,
        )?;
        Ok(Self {
            positional_embedding: pe.to_dtype(vb.dtype())?,
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
        let mean = x.mean_keepdim(1)?;
        let x =
            Tensor::cat(&[mean, x.contiguous()?], 1)?.broadcast_add(&self.positional_embedding)?;
        let l = hw + 1;
        let hd = c / self.heads;
        let q = (self.q_proj.forward(&x.narrow(1, 0, 1)?)? * (1.0 / (hd as f64).sqrt()))?;
        let q = q
            .reshape((n, 1, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = self
            .k_proj
            .forward(&x)?
            .reshape((n, l, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = self
            .v_proj
            .forward(&x)?
            .reshape((n, l, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let att = nn::softmax_last(&q.matmul(&k.t()?)?, false)?;
        let out = att.matmul(&v)?.transpose(1, 2)?.reshape((n, c))?;
        self.c_proj.forward(&out)
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
        let stem = [
            ConvBn::new(3, width / 2, 3, 2, 1, vb.pp("conv1"), vb.pp("bn1"))?,
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

impl ModifiedResNet {
    fn forward_nhwc(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if !x.device().is_cpu()
            || x.dtype() != candle_core::DType::F32
            || self.stem[0].cpu.is_none()
        {
            return Ok(None);
        }
        let (n, c, h, w) = x.dims4()?;
        let mut t = Nhwc::from_nchw(&x.flatten_all()?.to_vec1::<f32>()?, n, c, h, w);
        for conv in &self.stem {
            t = match &conv.cpu {
                Some(k) => k.forward(&t, None, true),
                None => return Ok(None),
            };
        }
        t = nhwc::avg_pool(&t, 2);
        for layer in &self.layers {
            for block in layer {
                t = match block.forward_nhwc(&t) {
                    Some(t) => t,
                    None => return Ok(None),
                };
            }
        }
        let tokens = Tensor::from_vec(t.data, (t.n, t.h * t.w, t.c), x.device())?;
        Ok(Some(self.attnpool.forward_tokens(&tokens)?))
    }
}

impl Module for ModifiedResNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(out) = self.forward_nhwc(x)? {
            return Ok(out);
        }
        let mut x = x.clone();
        for conv in &self.stem {
            x = conv.forward(&x)?.relu()?;
        }
        x = x.avg_pool2d(2)?;
        for layer in &self.layers {
            for block in layer {
                x = block.forward(&x)?;
            }
        }
        self.attnpool.forward(&x)
    }
}
