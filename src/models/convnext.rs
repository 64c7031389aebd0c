//! Mirrors open_clip's `TimmModel` around timm's `ConvNeXt` (open_clip's convnext_* models) in
//! candle tensor ops: the 4x4 stride-4 stem with its LayerNorm, four stages (a LayerNorm and a
//! 2x2 stride-2 conv between them; blocks of a 7x7 depthwise conv, LayerNorm, MLP with GELU,
//! layer scale, residual), the average pool and head LayerNorm, then open_clip's projection.
//! Activations stay channels-last `[N, H, W, C]` between the convolutions.

use super::config::{Config, TimmProj, TimmTower};
use super::nn::{self, LayerNorm, Linear};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// The depthwise kernel's size.
pub const DW: usize = 7;

/// A convolution's weight and bias as loaded (OIHW).
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
}

impl Conv {
    fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        groups: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            weight: nn::load(&vb, &[c_out, c_in / groups, k, k], "weight")?,
            bias: nn::load(&vb, &[c_out], "bias")?,
            stride,
            padding: if stride == 1 { k / 2 } else { 0 },
            groups,
        })
    }

    /// `[N, H, W, C]` -> `[N, H', W', C']`, in f32.
    fn forward_nhwc(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.permute((0, 3, 1, 2))?.contiguous()?;
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, self.groups)?;
        let c = self.bias.dim(0)?;
        y.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?
            .permute((0, 2, 3, 1))?
            .contiguous()
    }
}

#[derive(Debug, Clone)]
struct Block {
    conv_dw: Conv,
    norm: LayerNorm,
    fc1: Linear,
    /// `fc2` with the layer scale (`gamma`) folded in.
    fc2: Linear,
}

impl Block {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let gamma = nn::load(&vb, &[dim], "gamma")?;
        let mlp = vb.pp("mlp");
        Ok(Self {
            conv_dw: Conv::new(dim, dim, DW, 1, dim, vb.pp("conv_dw"))?,
            norm: nn::layer_norm_eps(dim, eps, vb.pp("norm"))?,
            fc1: nn::linear(dim, 4 * dim, mlp.pp("fc1"))?,
            fc2: nn::linear_gain(4 * dim, dim, mlp.pp("fc2"), Some(&gamma))?,
        })
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv_dw.forward_nhwc(x)?;
        let h = self.norm.forward_to(&h, self.fc1.dtype())?;
        let h = self.fc1.forward_act(&h, super::fused::Act::Gelu)?;
        self.fc2.forward_residual(&h, x)
    }
}

#[derive(Debug, Clone)]
struct Stage {
    /// The LayerNorm and 2x2 stride-2 conv before every stage but the first.
    downsample: Option<(LayerNorm, Conv)>,
    blocks: Vec<Block>,
}

/// open_clip's projection of the pooled features (`head.proj` or `head.mlp`).
#[derive(Debug, Clone)]
enum Head {
    Proj(Linear),
    Mlp(Linear, Linear),
}

#[derive(Debug, Clone)]
pub struct ConvNext {
    stem: (Conv, LayerNorm),
    stages: Vec<Stage>,
    head_norm: LayerNorm,
    head: Head,
}

impl ConvNext {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
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
        let eps = *eps;
        let trunk = vb.pp("trunk");
        let stem = (
            Conv::new(3, dims[0], 4, 4, 1, trunk.pp("stem").pp(0))?,
            nn::layer_norm_eps(dims[0], eps, trunk.pp("stem").pp(1))?,
        );
        let mut stages = Vec::with_capacity(4);
        for (i, (&depth, &dim)) in depths.iter().zip(dims).enumerate() {
            let vs = trunk.pp("stages").pp(i);
            let downsample = (i > 0)
                .then(|| -> Result<_> {
                    let d = vs.pp("downsample");
                    Ok((
                        nn::layer_norm_eps(dims[i - 1], eps, d.pp(0))?,
                        Conv::new(dims[i - 1], dim, 2, 2, 1, d.pp(1))?,
                    ))
                })
                .transpose()?;
            let blocks = (0..depth)
                .map(|b| Block::new(dim, eps, vs.pp("blocks").pp(b)))
                .collect::<Result<_>>()?;
            stages.push(Stage { downsample, blocks });
        }
        let last = dims[3];
        let e = cfg.embed_dim;
        let head = vb.pp("head");
        let head = match proj {
            TimmProj::Linear => {
                let w = nn::load(&head.pp("proj"), &[e, last], "weight")?;
                Head::Proj(Linear::from_parts(&w, None, vb.dtype())?)
            }
            TimmProj::Mlp => {
                let w = nn::load(&head.pp("mlp").pp("fc2"), &[e, 2 * e], "weight")?;
                Head::Mlp(
                    nn::linear(last, 2 * e, head.pp("mlp").pp("fc1"))?,
                    Linear::from_parts(&w, None, vb.dtype())?,
                )
            }
        };
        Ok(Self {
            stem,
            stages,
            head_norm: nn::layer_norm_eps(last, eps, trunk.pp("head").pp("norm"))?,
            head,
        })
    }
}

impl Module for ConvNext {
    /// `[N, 3, R, R]` normalised pixels -> `[N, embed_dim]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 1))?
            .contiguous()?;
        let mut x = self.stem.1.forward(&self.stem.0.forward_nhwc(&x)?)?;
        for stage in &self.stages {
            if let Some((norm, conv)) = &stage.downsample {
                x = conv.forward_nhwc(&norm.forward(&x)?)?;
            }
            for b in &stage.blocks {
                x = b.forward(&x)?;
            }
        }
        let (n, h, w, c) = x.dims4()?;
        let pooled = (x.reshape((n, h * w, c))?.sum(1)? / (h * w) as f64)?;
        let pooled = self.head_norm.forward(&pooled)?;
        match &self.head {
            Head::Proj(p) => p.forward_f32(&pooled),
            Head::Mlp(fc1, fc2) => {
                let h = fc1.forward_act(&pooled, super::fused::Act::Gelu)?;
                fc2.forward_f32(&h)
            }
        }
    }
}
