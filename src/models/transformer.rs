//! Mirrors the reference's `Transformer` / `ResidualAttentionBlock` (CLIP's, with the blocks split
//! into `resblocks1` and `resblocks2`) and the LEFF MLP of the ViT's first nine blocks.
//! Activations are batch-first `[N, L, D]`; the reference is sequence-first, the math is the same.

use super::nn::{self, LayerNorm, Linear};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// The reference always puts the first nine blocks in `resblocks1`.
pub const FIRST_GROUP: usize = 9;

#[derive(Debug, Clone)]
pub struct MultiheadAttention {
    in_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl MultiheadAttention {
    pub fn new(width: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get_with_hints_dtype(
            (3 * width, width),
            "in_proj_weight",
            Default::default(),
            candle_core::DType::F32,
        )?;
        let b = vb.get_with_hints_dtype(
            3 * width,
            "in_proj_bias",
            Default::default(),
            candle_core::DType::F32,
        )?;
        let in_proj = Linear::from_parts(&w, Some(b), vb.dtype())?;
        let out_proj = nn::linear(width, width, vb.pp("out_proj"))?;
        Ok(Self {
            in_proj,
            out_proj,
            heads,
        })
    }

    /// Self-attention over `[N, L, D]`; `causal` lets position i see positions <= i only.
    /// `residual + attention(x)`, the residual add fused into the output projection.
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
        let att = q.contiguous()?.matmul(&k.t()?)?;
        let att = nn::softmax_last(&att, causal)?;
        let out = att.matmul(&v)?.transpose(1, 2)?.reshape((n, l, d))?;
        self.out_proj.forward_fused(&out, residual, false)
    }
}

/// CLIP's MLP: c_fc -> QuickGELU -> c_proj.
#[derive(Debug, Clone)]
pub struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
}

impl Mlp {
    pub fn new(width: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            c_fc: nn::linear(width, 4 * width, vb.pp("c_fc"))?,
            c_proj: nn::linear(4 * width, width, vb.pp("c_proj"))?,
        })
    }
}

impl Mlp {
    /// `residual + c_proj(QuickGELU(c_fc(x)))`.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let h = self.c_fc.forward_fused(x, None, true)?;
        self.c_proj.forward_fused(&h, Some(residual), false)
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.c_proj
            .forward(&self.c_fc.forward_fused(x, None, true)?)
    }
}

/// LEFF: the patch tokens go through linear -> BN -> QuickGELU -> depthwise 3x3 conv -> BN ->
/// QuickGELU -> linear -> BN -> QuickGELU on their g x g grid; the class token passes unchanged.
/// The BatchNorms are folded into the layer before them at load.
#[derive(Debug, Clone)]
pub struct Leff {
    linear1: Linear,
    /// Depthwise taps `[9, C]` (row-major 3x3) and bias `[C]`, channels-last.
    dw_taps: Vec<Tensor>,
    dw_bias: Tensor,
    /// The same taps and bias as plain f32 for the fused CPU kernel.
    dw_taps_cpu: Vec<Vec<f32>>,
    dw_bias_cpu: Vec<f32>,
    linear2: Linear,
    grid: usize,
}

impl Leff {
    pub fn new(width: usize, grid: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = 4 * width;
        let linear1 = nn::linear_bn(width, hidden, vb.pp("linear1"), vb.pp("ac1").pp("bn"))?;
        let linear2 = nn::linear_bn(hidden, width, vb.pp("linear2"), vb.pp("ac2").pp("bn"))?;
        let dc = vb.pp("depConv");
        let w = dc.pp("depconv").get_with_hints_dtype(
            (hidden, 1, 3, 3),
            "weight",
            Default::default(),
            candle_core::DType::F32,
        )?;
        let (scale, shift) = nn::batch_norm(hidden, dc.pp("bn"))?;
        let w = w
            .reshape((hidden, 9))?
            .broadcast_mul(&scale.unsqueeze(1)?)?
            .t()?
            .contiguous()?;
        let dt = vb.dtype();
        let dw_taps = (0..9)
            .map(|i| w.get(i)?.to_dtype(dt))
            .collect::<Result<Vec<_>>>()?;
        let dw_taps_cpu = (0..9)
            .map(|i| w.get(i)?.to_vec1::<f32>())
            .collect::<Result<Vec<_>>>()?;
        let dw_bias_cpu = shift.to_vec1::<f32>()?;
        Ok(Self {
            linear1,
            dw_taps,
            dw_taps_cpu,
            dw_bias_cpu,
            dw_bias: shift.to_dtype(dt)?,
            linear2,
            grid,
        })
    }

    fn depthwise(&self, x: &Tensor) -> Result<Tensor> {
        // x: [N, g, g, C]; zero padding 1, 3x3 taps.
        let g = self.grid;
        let p = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
        let mut acc = self.dw_bias.broadcast_as(x.shape())?.contiguous()?;
        for di in 0..3 {
            let rows = p.narrow(1, di, g)?;
            for dj in 0..3 {
                let win = rows.narrow(2, dj, g)?;
                acc = (acc + win.broadcast_mul(&self.dw_taps[di * 3 + dj])?)?;
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
        let h = h.reshape((n, g, g, c))?;
        let h = match super::ops::depthwise3x3_gelu(&h, &self.dw_taps_cpu, &self.dw_bias_cpu)? {
            Some(h) => h,
            None => nn::quick_gelu(&self.depthwise(&h)?)?,
        };
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
        vb: VarBuilder,
    ) -> Result<Self> {
        let mlp = match leff_grid {
            Some(g) => BlockMlp::Leff(Leff::new(width, g, vb.pp("mlp"))?),
            None => BlockMlp::Standard(Mlp::new(width, vb.pp("mlp"))?),
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
            BlockMlp::Standard(m) => m.forward_residual(&y, &x),
            BlockMlp::Leff(m) => x + m.forward(&y)?,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Transformer {
    resblocks1: Vec<ResidualAttentionBlock>,
    resblocks2: Vec<ResidualAttentionBlock>,
}

impl Transformer {
    /// `leff_grid` applies to the `resblocks1` group only (the ViT); text passes None.
    pub fn new(
        width: usize,
        layers: usize,
        heads: usize,
        leff_grid: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let first = layers.min(FIRST_GROUP);
        let resblocks1 = (0..first)
            .map(|i| {
                ResidualAttentionBlock::new(width, heads, leff_grid, vb.pp("resblocks1").pp(i))
            })
            .collect::<Result<_>>()?;
        let resblocks2 = (0..layers - first)
            .map(|i| ResidualAttentionBlock::new(width, heads, None, vb.pp("resblocks2").pp(i)))
            .collect::<Result<_>>()?;
        Ok(Self {
            resblocks1,
            resblocks2,
        })
    }

    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for b in self.resblocks1.iter().chain(&self.resblocks2) {
            x = b.forward(&x, causal)?;
        }
        Ok(x)
    }
}
