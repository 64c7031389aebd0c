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

/// A product's input rows: f32, or already rounded to the bf16 pairs a bf16 product packs
/// ([`LayerNorm::rows_for`]).
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    F32(&'a [f32]),
    Bf16(&'a bf16::Bf16Rows),
}

/// Rows a layer computed for the product that consumes them, in that product's input form.
pub enum Normed {
    F32(Vec<f32>),
    Bf16(bf16::Bf16Rows),
}

impl Normed {
    pub fn rows(&self) -> Rows<'_> {
        match self {
            Self::F32(v) => Rows::F32(v),
            Self::Bf16(r) => Rows::Bf16(r),
        }
    }
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

    /// `weight` and `bias` under `vb`, each output scaled by `gain` (open_clip's layer scale
    /// folded in, [`fold::fold_linear_gain`]).
    pub fn with_gain(
        in_dim: usize,
        out_dim: usize,
        vb: VarBuilder,
        gain: Option<&Tensor>,
        cfg: GemmConfig,
    ) -> Result<Self> {
        let (w, b) = fold::fold_linear_gain(in_dim, out_dim, vb, gain)?;
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

    /// Output features `cols` of `m` contiguous rows: `(buffer, row stride, where cols start
    /// in a row)`. Only those features when `cols` starts on a panel boundary, else all of them
    /// (a product can start only there): a fused q/k/v projection's keys and values alone.
    pub fn cols_of(&self, m: usize, x: &[f32], cols: Range<usize>) -> (Vec<f32>, usize, usize) {
        if cols.start.is_multiple_of(self.weight.col_align()) {
            let w = cols.len();
            let mut out = vec![0f32; m * w];
            self.apply(m, x, self.in_dim(), cols, &mut out, w, None, Act::None);
            (out, w, 0)
        } else {
            (self.rows(m, x, None, Act::None), self.out_dim(), cols.start)
        }
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

    /// [`Self::rows`] on rows in either form (bf16 rows only for a bf16 weight).
    pub fn rows_of(&self, m: usize, x: Rows, residual: Option<&[f32]>, act: Act) -> Vec<f32> {
        match (x, &self.weight) {
            (Rows::F32(x), _) => self.rows(m, x, residual, act),
            (Rows::Bf16(x), Weight::Bf16(w)) => {
                assert_eq!(x.m(), m, "bf16 rows: {} rows for a product over {m}", x.m());
                let epi = Epilogue {
                    bias: self.bias.as_deref(),
                    residual: residual.map(|r| (r, self.out_dim())),
                    act,
                };
                bf16::gemm_rows(x, w, &epi, true)
            }
            (Rows::Bf16(_), Weight::F32(_)) => panic!("bf16 rows for an f32 product"),
        }
    }

    /// All output features of `m` rows rounded to the bf16 pairs a bf16 product reads
    /// ([`bf16::gemm_to_rows`]): the fused q/k/v projection feeding attention's bf16 products.
    /// A bf16 weight only.
    pub fn rows_to_bf16(&self, m: usize, x: Rows, act: Act) -> bf16::Bf16Rows {
        let Weight::Bf16(w) = &self.weight else {
            panic!("bf16 rows from an f32 product")
        };
        let epi = Epilogue::bias(self.bias.as_deref(), act);
        match x {
            Rows::F32(x) => bf16::gemm_to_rows(m, x, self.in_dim(), w, &epi, true),
            Rows::Bf16(x) => {
                assert_eq!(x.m(), m, "bf16 rows: {} rows for a product over {m}", x.m());
                bf16::rows_to_rows(x, w, &epi, true)
            }
        }
    }

    /// Whether the product takes bf16 rows ([`Rows::Bf16`]).
    pub fn takes_bf16(&self) -> bool {
        matches!(self.weight, Weight::Bf16(_))
    }

    /// `next(act(self(x)))`, plus `residual`, over `m` rows. When both products run in bf16
    /// the hidden rows pass between them as bf16 pairs ([`bf16::gemm_to_rows`]): the rounding
    /// the second product's packing would apply, so the result is the same, without the f32
    /// buffer's write and read and the packing pass.
    pub fn rows_then(
        &self,
        next: &Linear,
        m: usize,
        x: Rows,
        act: Act,
        residual: Option<&[f32]>,
    ) -> Vec<f32> {
        if let (Weight::Bf16(w1), Weight::Bf16(w2)) = (&self.weight, &next.weight) {
            let epi = Epilogue::bias(self.bias.as_deref(), act);
            let h = match x {
                Rows::F32(x) => bf16::gemm_to_rows(m, x, self.in_dim(), w1, &epi, true),
                Rows::Bf16(x) => bf16::rows_to_rows(x, w1, &epi, true),
            };
            let epi = Epilogue {
                bias: next.bias.as_deref(),
                residual: residual.map(|r| (r, next.out_dim())),
                act: Act::None,
            };
            return bf16::gemm_rows(&h, w2, &epi, true);
        }
        let h = self.rows_of(m, x, None, act);
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

/// LayerNorm (eps 1e-5 unless told) over rows of plain f32 buffers.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

impl LayerNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::with_eps(dim, kernels::LN_EPS, vb)
    }

    /// timm's ConvNeXt norms: eps 1e-6 (1e-5 for xxlarge).
    pub fn with_eps(dim: usize, eps: f32, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: to_vec(&fold::load(&vb, &[dim], "weight")?)?,
            bias: to_vec(&fold::load(&vb, &[dim], "bias")?)?,
            eps,
        })
    }

    /// Normalises `rows` rows read at `x[r * stride..]` into a dense `[rows, d]` buffer.
    pub fn rows(&self, x: &[f32], rows: usize, stride: usize) -> Vec<f32> {
        self.rows_picked(x, rows, RowPick::all(rows, stride))
    }

    /// [`Self::rows`] in the input form of `next`, the product they feed: bf16 pairs rounded
    /// in cache for a bf16 product ([`kernels::layer_norm_rows_bf16`]), else f32.
    pub fn rows_for(&self, next: &Linear, x: &[f32], rows: usize, stride: usize) -> Normed {
        self.rows_picked_for(next, x, rows, RowPick::all(rows, stride))
    }

    /// [`Self::rows_for`] over the rows `pick` selects.
    pub fn rows_picked_for(&self, next: &Linear, x: &[f32], rows: usize, pick: RowPick) -> Normed {
        if next.takes_bf16() {
            Normed::Bf16(kernels::layer_norm_rows_bf16(
                x,
                rows,
                pick,
                &self.weight,
                &self.bias,
                self.eps,
            ))
        } else {
            Normed::F32(self.rows_picked(x, rows, pick))
        }
    }

    /// [`Self::rows`] over the rows `pick` selects.
    pub fn rows_picked(&self, x: &[f32], rows: usize, pick: RowPick) -> Vec<f32> {
        kernels::layer_norm_rows(x, rows, pick, &self.weight, &self.bias, self.eps)
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// LayerNorm rows handed to a product in bf16 pairs, and a product's output handed to the
    /// next in pairs, give the products' results of the f32 hand-over bit for bit: odd widths,
    /// row counts off every block, with and without AMX's layout (emulated where the CPU has
    /// none).
    #[test]
    fn rows_handed_over_in_bf16_equal_the_f32_route() {
        if !bf16::supported() {
            eprintln!("no AVX512-BF16 on this CPU: bf16 hand-over not tested");
            return;
        }
        use crate::native::bf16::{bits, test_values as vals};
        let t = |v: Vec<f32>, shape: (usize, usize)| Tensor::from_vec(v, shape, &Device::Cpu);
        for &(m, d, h, n) in &[(37, 45, 70, 33), (1232, 64, 256, 64), (3, 32, 96, 5)] {
            let x = vals(m * d, 1);
            let ln = LayerNorm {
                weight: vals(d, 2),
                bias: vals(d, 3),
                eps: kernels::LN_EPS,
            };
            let res = vals(m * n, 4);
            for amx in [false, true] {
                let cfg = GemmConfig {
                    bf16: true,
                    amx,
                    ..GemmConfig::detected()
                };
                let fc = Linear::from_parts(&t(vals(h * d, 5), (h, d)).unwrap(), None, cfg);
                let proj = Linear::from_parts(&t(vals(n * h, 6), (n, h)).unwrap(), None, cfg);
                let (fc, proj) = (fc.unwrap(), proj.unwrap());
                let normed = ln.rows_for(&fc, &x, m, d);
                assert!(matches!(normed, Normed::Bf16(_)));
                let f32_rows = ln.rows(&x, m, d);
                // One product from each form of the same rows.
                let want = fc.rows(m, &f32_rows, None, Act::Gelu);
                let got = fc.rows_of(m, normed.rows(), None, Act::Gelu);
                assert_eq!(bits(&got), bits(&want), "{m}x{d}x{h} amx {amx}");
                // Two products chained through bf16 rows.
                let want = proj.rows(m, &want, Some(&res), Act::None);
                let got = fc.rows_then(&proj, m, normed.rows(), Act::Gelu, Some(&res));
                assert_eq!(bits(&got), bits(&want), "{m}x{d}x{h}x{n} amx {amx}");
            }
        }
    }
}
