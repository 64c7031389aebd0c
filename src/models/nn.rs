//! Small building blocks shared by the encoders. Weights arrive in f32; folding (eval-mode
//! BatchNorm into the preceding layer) is done in f32 and the result cast to the compute dtype.

use super::sgemm::{self, Act, Epilogue, PackedB};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use std::ops::Range;
use std::sync::Arc;

pub const BN_EPS: f64 = 1e-5;
pub const LN_EPS: f64 = 1e-5;

fn load(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Tensor> {
    vb.get_with_hints_dtype(shape, name, candle_nn::Init::Const(0.), DType::F32)
}

/// `x @ w^T + b`. On the CPU in f32 the weight is packed once for our gemm (and the tensor
/// copy dropped); elsewhere it is kept transposed in the compute dtype for candle's matmul.
#[derive(Debug, Clone)]
pub struct Linear {
    weight_t: Option<Tensor>,
    bias: Option<Tensor>,
    cpu: Option<Arc<CpuLinear>>,
}

/// The packed CPU form of a Linear.
#[derive(Debug)]
pub struct CpuLinear {
    pub weight: PackedB,
    pub bias: Option<Vec<f32>>,
}

impl CpuLinear {
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
        sgemm::gemm(m, x, lda, &self.weight, cols, out, ldc, &epi, true);
    }

    /// All output features of `m` contiguous rows, as a new buffer.
    pub fn rows(&self, m: usize, x: &[f32], residual: Option<&[f32]>, act: Act) -> Vec<f32> {
        let (k, n) = (self.weight.k(), self.weight.n());
        let epi = Epilogue {
            bias: self.bias.as_deref(),
            residual: residual.map(|r| (r, n)),
            act,
        };
        sgemm::gemm_new(m, x, k, &self.weight, 0..n, &epi, true)
    }

    pub fn in_dim(&self) -> usize {
        self.weight.k()
    }
    pub fn out_dim(&self) -> usize {
        self.weight.n()
    }
}

impl Linear {
    pub fn from_parts(weight: &Tensor, bias: Option<Tensor>, dtype: DType) -> Result<Self> {
        if weight.device().is_cpu() && dtype == DType::F32 {
            let (o, i) = weight.dims2()?;
            let w = weight
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let b = bias.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?;
            return Ok(Self {
                weight_t: None,
                bias: None,
                cpu: Some(Arc::new(CpuLinear {
                    weight: PackedB::from_linear_weight(&w, o, i),
                    bias: b,
                })),
            });
        }
        Ok(Self {
            weight_t: Some(weight.t()?.contiguous()?.to_dtype(dtype)?),
            bias: bias.map(|b| b.to_dtype(dtype)).transpose()?,
            cpu: None,
        })
    }

    /// The packed CPU form, when the model lives on the CPU in f32.
    pub fn cpu(&self) -> Option<&CpuLinear> {
        self.cpu.as_deref()
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
pub fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => {
            Some(f(&v[a..b]))
        }
        _ => None,
    }
}

impl Linear {
    /// `act?(x @ w^T + b + residual?)`, `act` being QuickGELU. On the CPU in f32 the bias, the
    /// residual and the activation are applied to each output tile inside the gemm; elsewhere
    /// it is the same sequence of candle ops.
    pub fn forward_fused(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        gelu: bool,
    ) -> Result<Tensor> {
        if let Some(y) = self.forward_cpu(x, residual, gelu)? {
            return Ok(y);
        }
        let mut y = self.forward(x)?;
        if let Some(r) = residual {
            y = (y + r)?;
        }
        if gelu {
            y = quick_gelu(&y)?;
        }
        Ok(y)
    }

    fn forward_cpu(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        gelu: bool,
    ) -> Result<Option<Tensor>> {
        let Some(cpu) = self.cpu.as_deref() else {
            return Ok(None);
        };
        let x = x
            .to_device(&candle_core::Device::Cpu)?
            .to_dtype(DType::F32)?
            .contiguous()?;
        let residual = residual
            .map(|r| r.to_dtype(DType::F32)?.contiguous())
            .transpose()?;
        let dims = x.dims().to_vec();
        let k = dims[dims.len() - 1];
        if k != cpu.in_dim() {
            candle_core::bail!(
                "linear: input has {k} features, the layer takes {}",
                cpu.in_dim()
            );
        }
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let act = if gelu { Act::QuickGelu } else { Act::None };
        let out = with_cpu_f32(&x, |xs| match &residual {
            Some(r) => with_cpu_f32(r, |rs| cpu.rows(rows, xs, Some(rs), act)),
            None => Some(cpu.rows(rows, xs, None, act)),
        })
        .flatten()
        .ok_or_else(|| candle_core::Error::Msg("linear: expected CPU f32 data".into()))?;
        let mut shape = dims;
        let last = shape.len() - 1;
        shape[last] = cpu.out_dim();
        Ok(Some(Tensor::from_vec(out, shape, x.device())?))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.forward_cpu(x, None, false)? {
            return Ok(y);
        }
        let weight_t = self
            .weight_t
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("linear: no weights for this device".into()))?;
        let dims = x.dims().to_vec();
        let k = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = x.reshape((rows, k))?.matmul(weight_t)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = weight_t.dim(1)?;
        y.reshape(out)
    }
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let w = load(&vb, &[out_dim, in_dim], "weight")?;
    let b = load(&vb, &[out_dim], "bias")?;
    Linear::from_parts(&w, Some(b), vb.dtype())
}

/// Eval-mode BatchNorm as a per-channel (scale, shift), in f32.
pub fn batch_norm(channels: usize, vb: VarBuilder) -> Result<(Tensor, Tensor)> {
    let w = load(&vb, &[channels], "weight")?;
    let b = load(&vb, &[channels], "bias")?;
    let mean = load(&vb, &[channels], "running_mean")?;
    let var = load(&vb, &[channels], "running_var")?;
    let scale = w.broadcast_div(&(var + BN_EPS)?.sqrt()?)?;
    let shift = (b - mean.mul(&scale)?)?;
    Ok((scale, shift))
}

/// A Linear followed by BatchNorm1d over its output features, folded into one Linear.
pub fn linear_bn(
    in_dim: usize,
    out_dim: usize,
    vb_lin: VarBuilder,
    vb_bn: VarBuilder,
) -> Result<Linear> {
    let w = load(&vb_lin, &[out_dim, in_dim], "weight")?;
    let b = load(&vb_lin, &[out_dim], "bias")?;
    let (scale, shift) = batch_norm(out_dim, vb_bn)?;
    let w = w.broadcast_mul(&scale.unsqueeze(1)?)?;
    let b = (b.mul(&scale)? + shift)?;
    Linear::from_parts(&w, Some(b), vb_lin.dtype())
}

/// LayerNorm computed in f32 whatever the compute dtype, as the reference does.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    /// Weight and bias as plain f32 for the CPU row kernel.
    cpu: Option<Arc<(Vec<f32>, Vec<f32>)>>,
}

pub fn layer_norm(dim: usize, vb: VarBuilder) -> Result<LayerNorm> {
    let weight = load(&vb, &[dim], "weight")?;
    let bias = load(&vb, &[dim], "bias")?;
    let cpu = if weight.device().is_cpu() {
        Some(Arc::new((weight.to_vec1::<f32>()?, bias.to_vec1::<f32>()?)))
    } else {
        None
    };
    Ok(LayerNorm { weight, bias, cpu })
}

impl LayerNorm {
    /// Normalises `rows` rows read at `x[r * stride..]` into a dense `[rows, d]` buffer
    /// (CPU models only).
    pub fn rows(&self, x: &[f32], rows: usize, stride: usize) -> Option<Vec<f32>> {
        self.rows_picked(x, rows, super::ops::RowPick::all(rows, stride))
    }

    /// [`Self::rows`] over the rows `pick` selects.
    pub fn rows_picked(
        &self,
        x: &[f32],
        rows: usize,
        pick: super::ops::RowPick,
    ) -> Option<Vec<f32>> {
        let (w, b) = self.cpu.as_deref()?;
        Some(super::ops::layer_norm_rows(x, rows, pick, w, b))
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.cpu.is_some() && x.device().is_cpu() && x.dtype() == DType::F32 {
            let d = x.dim(D::Minus1)?;
            let rows = x.elem_count() / d.max(1);
            let x = x.contiguous()?;
            if let Some(Some(y)) = with_cpu_f32(&x, |xs| self.rows(xs, rows, d)) {
                return Tensor::from_vec(y, x.shape(), x.device());
            }
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let y =
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, LN_EPS as f32)?;
        y.to_dtype(dtype)
    }
}

pub use super::ops::{quick_gelu, softmax_last};

/// Row-wise L2 normalisation, in f32.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&n)
}

/// Convolution with its BatchNorm folded in (the conv has no bias in these models).
#[derive(Debug, Clone)]
pub struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    /// The channels-last CPU kernel, prepared at load for f32 CPU models.
    pub cpu: Option<std::sync::Arc<super::nhwc::ConvKernel>>,
}

impl ConvBn {
    pub fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        vb_conv: VarBuilder,
        vb_bn: VarBuilder,
    ) -> Result<Self> {
        let w = load(&vb_conv, &[c_out, c_in, k, k], "weight")?;
        let (scale, shift) = batch_norm(c_out, vb_bn)?;
        let w = w.broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?;
        let dt = vb_conv.dtype();
        let cpu = if vb_conv.device().is_cpu() && dt == DType::F32 {
            let kern = super::nhwc::ConvKernel::new(
                &w.flatten_all()?.to_vec1::<f32>()?,
                shift.to_vec1::<f32>()?,
                c_out,
                c_in,
                k,
                stride,
                padding,
            );
            Some(std::sync::Arc::new(kern))
        } else {
            None
        };
        Ok(Self {
            weight: w.to_dtype(dt)?,
            bias: shift.reshape((1, c_out, 1, 1))?.to_dtype(dt)?,
            stride,
            padding,
            cpu,
        })
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
            .broadcast_add(&self.bias)
    }
}
