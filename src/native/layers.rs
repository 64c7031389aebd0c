//! The native engine's weight-holding layers, built from the same checkpoint keys as the candle
//! ones (folding shared with `models::nn`): a packed `Linear`, `LayerNorm` and a convolution
//! with its BatchNorm folded in, each computing on plain f32 row buffers.

use super::bf16;
use super::conv::{ConvKernel, Nhwc};
use super::gemm::{Act, Epilogue, GemmConfig};
use super::kernels::{self, RowPick};
use super::weight::Weight;
use crate::models::nn as fold;
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use std::ops::Range;

/// A tensor's elements as f32 in row-major order.
pub fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// `x @ w^T + b`, the weight packed once at load for the kernel of `cfg` (in bf16 when
/// `cfg.bf16`).
#[derive(Debug)]
pub struct Linear {
    pub weight: Weight,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// `weight` `[out, in]` and `bias` `[out]` under `vb`.
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder, cfg: GemmConfig) -> Result<Self> {
        let w = fold::load(&vb, &[out_dim, in_dim], "weight")?;
        let b = fold::load(&vb, &[out_dim], "bias")?;
        Self::from_parts(&w, Some(&b), cfg)
    }

    /// From a `[out, in]` weight and an optional bias.
    pub fn from_parts(weight: &Tensor, bias: Option<&Tensor>, cfg: GemmConfig) -> Result<Self> {
        let (o, i) = weight.dims2()?;
        let w = to_vec(weight)?;
        Ok(Self {
            weight: Weight::from_linear_weight(cfg, &w, o, i),
            bias: bias.map(to_vec).transpose()?,
        })
    }

    /// A Linear with the BatchNorm1d over its outputs folded in.
    pub fn with_bn(
        in_dim: usize,
        out_dim: usize,
        vb_lin: VarBuilder,
        vb_bn: VarBuilder,
        cfg: GemmConfig,
    ) -> Result<Self> {
        let (w, b) = fold::fold_linear_bn(in_dim, out_dim, vb_lin, vb_bn)?;
        Self::from_parts(&w, Some(&b), cfg)
    }

    /// `out[i * ldc + j - cols.start] = act(x[i * lda ..] . w[j] + b[j] + residual)` for rows
    /// `i < m` and output features `j` in `cols`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        m: usize,
        x: &[f32],
        lda: usize,
        cols: Range<usize>,
        out: &mut [f32],
        ldc: usize,
        residual: Option<(&[f32], usize)>,
        act: Act,
    ) {
        let epi = Epilogue {
            bias: self.bias.as_deref(),
            residual,
            act,
        };
        self.weight.gemm(m, x, lda, cols, out, ldc, &epi, true)
    }

    /// All output features of `m` contiguous rows, as a new buffer.
    pub fn rows(&self, m: usize, x: &[f32], residual: Option<&[f32]>, act: Act) -> Vec<f32> {
        let (k, n) = (self.in_dim(), self.out_dim());
        let epi = Epilogue {
            bias: self.bias.as_deref(),
            residual: residual.map(|r| (r, n)),
            act,
        };
        self.weight.gemm_new(m, x, k, 0..n, &epi, true)
    }

    /// `next(act(self(x)))`, plus `residual`, over `m` rows. When both products run in bf16
    /// the hidden rows pass between them as bf16 pairs ([`bf16::gemm_to_rows`]): the rounding
    /// the second product's packing would apply, so the result is the same, without the f32
    /// buffer's write and read and the packing pass.
    pub fn rows_then(
        &self,
        next: &Linear,
        m: usize,
        x: &[f32],
        act: Act,
        residual: Option<&[f32]>,
    ) -> Vec<f32> {
        if let (Weight::Bf16(w1), Weight::Bf16(w2)) = (&self.weight, &next.weight) {
            let epi = Epilogue::bias(self.bias.as_deref(), act);
            let h = bf16::gemm_to_rows(m, x, self.in_dim(), w1, &epi, true);
            let epi = Epilogue {
                bias: next.bias.as_deref(),
                residual: residual.map(|r| (r, next.out_dim())),
                act: Act::None,
            };
            return bf16::gemm_rows(&h, w2, &epi, true);
        }
        let h = self.rows(m, x, None, act);
        next.rows(m, &h, residual, Act::None)
    }

    pub fn in_dim(&self) -> usize {
        self.weight.k()
    }
    pub fn out_dim(&self) -> usize {
        self.weight.n()
    }
    pub fn config(&self) -> GemmConfig {
        self.weight.config()
    }
}

/// LayerNorm (eps 1e-5) over rows of plain f32 buffers.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl LayerNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: to_vec(&fold::load(&vb, &[dim], "weight")?)?,
            bias: to_vec(&fold::load(&vb, &[dim], "bias")?)?,
        })
    }

    /// Normalises `rows` rows read at `x[r * stride..]` into a dense `[rows, d]` buffer.
    pub fn rows(&self, x: &[f32], rows: usize, stride: usize) -> Vec<f32> {
        self.rows_picked(x, rows, RowPick::all(rows, stride))
    }

    /// [`Self::rows`] over the rows `pick` selects.
    pub fn rows_picked(&self, x: &[f32], rows: usize, pick: RowPick) -> Vec<f32> {
        kernels::layer_norm_rows(x, rows, pick, &self.weight, &self.bias)
    }
}

/// A bias-free convolution with its BatchNorm folded in, as a channels-last kernel.
#[derive(Debug)]
pub struct ConvBn {
    pub kernel: ConvKernel,
}

impl ConvBn {
    /// `winograd`: 3x3 stride-1 convolutions through Winograd (the tuned default).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        vb_conv: VarBuilder,
        vb_bn: VarBuilder,
        cfg: GemmConfig,
        winograd: bool,
    ) -> Result<Self> {
        let (w, shift) = fold::fold_conv_bn(c_in, c_out, k, vb_conv, vb_bn)?;
        let kernel = ConvKernel::new(
            cfg,
            winograd,
            &to_vec(&w)?,
            to_vec(&shift)?,
            c_out,
            c_in,
            k,
            stride,
            padding,
        );
        Ok(Self { kernel })
    }

    /// `relu?(conv(x) + bias + residual?)`.
    pub fn forward(&self, x: &Nhwc, residual: Option<&Nhwc>, relu: bool) -> Nhwc {
        self.kernel.forward(x, residual, relu)
    }
}
