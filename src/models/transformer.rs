//! Mirrors the reference's `Transformer` / `ResidualAttentionBlock` (CLIP's, with the blocks split
//! into `resblocks1` and `resblocks2`) and the LEFF MLP of the ViT's first nine blocks, and
//! CLIP's own (OpenAI / open_clip: `resblocks.N`, QuickGELU or GELU), in candle tensor ops.
//! Activations are batch-first `[N, L, D]`; the reference is sequence-first, the math is the
//! same.

use super::config::{Activation, Config, Family};
use super::nn::{self, LayerNorm, Linear};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// The reference always puts the first nine blocks in `resblocks1`.
pub const FIRST_GROUP: usize = 9;

/// How a family lays out its transformer blocks and which activation its MLPs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub family: Family,
    pub activation: Activation,
}

impl Style {
    pub fn of(cfg: &Config) -> Self {
        Self {
            family: cfg.family,
            activation: cfg.activation,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MultiheadAttention {
    in_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl MultiheadAttention {
    pub fn new(width: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        if heads == 0 || !width.is_multiple_of(heads) {
            candle_core::bail!("width {width} does not split into {heads} attention heads");
        }
        let w = nn::load(&vb, &[3 * width, width], "in_proj_weight")?;
        let b = nn::load(&vb, &[3 * width], "in_proj_bias")?;
        Ok(Self {
            in_proj: Linear::from_parts(&w, Some(b), vb.dtype())?,
            out_proj: nn::linear(width, width, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// `residual + attention(x)` over `[N, L, D]`; `causal` lets position i see positions <= i.
    pub fn forward(&self, x: &Tensor, causal: bool, residual: Option<&Tensor>) -> Result<Tensor> {
        let (n, l, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self
            .in_proj
            .forward(x)?
            .reshape((n, l, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)? * (1.0 / (hd as f64).sqrt()))?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let dt = self.in_proj.dtype();
        let att = nn::matmul(&q.contiguous()?, &k.t()?, dt)?;
        let att = nn::softmax_last(&att, causal)?;
        let out = nn::matmul(&att, &v, dt)?
            .transpose(1, 2)?
            .reshape((n, l, d))?;
        self.out_proj.forward_fused(&out, residual, false)
    }
}

/// CLIP's MLP: c_fc -> QuickGELU (or GELU) -> c_proj.
#[derive(Debug, Clone)]
pub struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
    act: Activation,
}

impl Mlp {
    pub fn new(width: usize, act: Activation, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            c_fc: nn::linear(width, 4 * width, vb.pp("c_fc"))?,
            c_proj: nn::linear(4 * width, width, vb.pp("c_proj"))?,
            act,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match self.act {
            Activation::QuickGelu => self.c_fc.forward_fused(x, None, true)?,
            act => nn::activation(&self.c_fc.forward(x)?, act)?,
        };
        self.c_proj.forward(&h)
    }
}

/// LEFF: the patch tokens go through linear -> BN -> QuickGELU -> depthwise 3x3 conv -> BN ->
/// QuickGELU -> linear -> BN -> QuickGELU on their g x g grid; the class token passes unchanged.
/// The BatchNorms are folded into the layer before them at load.
#[derive(Debug, Clone)]
pub struct Leff {
    linear1: Linear,
    /// Depthwise taps, one `[C]` row per tap (row-major 3x3), and bias `[C]`, channels-last.
    dep_conv: (Vec<Tensor>, Tensor),
    linear2: Linear,
    grid: usize,
}

impl Leff {
    pub fn new(width: usize, grid: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = 4 * width;
        let (taps, bias) = nn::fold_depthwise_bn(hidden, vb.pp("depConv"))?;
        let taps = (0..9).map(|i| taps.get(i)).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            linear1: nn::linear_bn(width, hidden, vb.pp("linear1"), vb.pp("ac1").pp("bn"))?,
            dep_conv: (taps, bias),
            linear2: nn::linear_bn(hidden, width, vb.pp("linear2"), vb.pp("ac2").pp("bn"))?,
            grid,
        })
    }

    /// `x`: `[N, g, g, C]`; zero padding 1, 3x3 taps, plus the bias.
    fn depthwise(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.grid;
        let (taps, bias) = &self.dep_conv;
        let p = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
        let mut acc = bias.broadcast_as(x.shape())?.contiguous()?;
        for di in 0..3 {
            let rows = p.narrow(1, di, g)?;
            for dj in 0..3 {
                let win = rows.narrow(2, dj, g)?;
                acc = (acc + win.broadcast_mul(&taps[di * 3 + dj])?)?;
            }
        }
        Ok(acc)
    }
}

impl Module for Leff {
    fn forward(&self, y: &Tensor) -> Result<Tensor> {
        let (n, l, _) = y.dims3()?;
        let g = self.grid;
        let cls = y.narrow(1, 0, 1)?;
        let p = y.narrow(1, 1, l - 1)?;
        let h = self.linear1.forward_fused(&p, None, true)?;
        let c = h.dim(D::Minus1)?;
        let h = nn::quick_gelu(&self.depthwise(&h.reshape((n, g, g, c))?)?)?;
        let h = h.reshape((n, g * g, c))?;
        let h = self.linear2.forward_fused(&h, None, true)?;
        Tensor::cat(&[cls, h], 1)
    }
}

#[derive(Debug, Clone)]
pub enum BlockMlp {
    Standard(Mlp),
    Leff(Leff),
}

#[derive(Debug, Clone)]
pub struct ResidualAttentionBlock {
    ln_1: LayerNorm,
    attn: MultiheadAttention,
    ln_2: LayerNorm,
    mlp: BlockMlp,
}

impl ResidualAttentionBlock {
    /// `leff_grid`: Some(g) for the ViT's LEFF blocks.
    pub fn new(
        width: usize,
        heads: usize,
        leff_grid: Option<usize>,
        act: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mlp = match leff_grid {
            Some(g) => BlockMlp::Leff(Leff::new(width, g, vb.pp("mlp"))?),
            None => BlockMlp::Standard(Mlp::new(width, act, vb.pp("mlp"))?),
        };
        Ok(Self {
            ln_1: nn::layer_norm(width, vb.pp("ln_1"))?,
            attn: MultiheadAttention::new(width, heads, vb.pp("attn"))?,
            ln_2: nn::layer_norm(width, vb.pp("ln_2"))?,
            mlp,
        })
    }

    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let x = self.attn.forward(&self.ln_1.forward(x)?, causal, Some(x))?;
        let y = self.ln_2.forward(&x)?;
        match &self.mlp {
            BlockMlp::Standard(m) => x + m.forward(&y)?,
            BlockMlp::Leff(m) => x + m.forward(&y)?,
        }
    }
}

/// The blocks in order: PyramidCLIP's `resblocks1` then `resblocks2`, or CLIP's `resblocks`.
#[derive(Debug, Clone)]
pub struct Transformer {
    resblocks: Vec<ResidualAttentionBlock>,
}

impl Transformer {
    /// `leff_grid` applies to PyramidCLIP's `resblocks1` group only (its ViT); text passes None.
    pub fn new(
        width: usize,
        layers: usize,
        heads: usize,
        leff_grid: Option<usize>,
        style: Style,
        vb: VarBuilder,
    ) -> Result<Self> {
        let act = style.activation;
        let resblocks = match style.family {
            Family::PyramidClip => {
                let first = layers.min(FIRST_GROUP);
                let g1 = (0..first).map(|i| {
                    ResidualAttentionBlock::new(
                        width,
                        heads,
                        leff_grid,
                        act,
                        vb.pp("resblocks1").pp(i),
                    )
                });
                let g2 = (0..layers - first).map(|i| {
                    ResidualAttentionBlock::new(width, heads, None, act, vb.pp("resblocks2").pp(i))
                });
                g1.chain(g2).collect::<Result<_>>()?
            }
            Family::Clip => (0..layers)
                .map(|i| {
                    ResidualAttentionBlock::new(width, heads, None, act, vb.pp("resblocks").pp(i))
                })
                .collect::<Result<_>>()?,
        };
        Ok(Self { resblocks })
    }

    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for b in &self.resblocks {
            x = b.forward(&x, causal)?;
        }
        Ok(x)
    }
}
