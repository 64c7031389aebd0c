//! Small building blocks shared by the encoders. Weights arrive in f32; folding (eval-mode
//! BatchNorm into the preceding layer) is done in f32 and the result cast to the compute dtype.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

pub const BN_EPS: f64 = 1e-5;
pub const LN_EPS: f64 = 1e-5;

fn load(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Tensor> {
    vb.get_with_hints_dtype(shape, name, candle_nn::Init::Const(0.), DType::F32)
}

/// `x @ w^T + b`, weights stored in the compute dtype.
#[derive(Debug, Clone)]
pub struct Linear {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn from_parts(weight: &Tensor, bias: Option<Tensor>, dtype: DType) -> Result<Self> {
        Ok(Self {
            weight_t: weight.t()?.contiguous()?.to_dtype(dtype)?,
            bias: bias.map(|b| b.to_dtype(dtype)).transpose()?,
        })
    }
}

/// Rows of output per task in the fused CPU path.
const LINEAR_CHUNK: usize = 128;

/// Runs `f` on the contiguous f32 data of a CPU tensor.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
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
    /// residual and the activation are applied inside the gemm's output chunks (one pass over
    /// memory instead of three); elsewhere it is the same sequence of candle ops.
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
        if !x.device().is_cpu() || x.dtype() != DType::F32 || self.weight_t.dtype() != DType::F32 {
            return Ok(None);
        }
        let x = x.contiguous()?;
        let residual = residual.map(|r| r.contiguous()).transpose()?;
        let dims = x.dims().to_vec();
        let k = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let n = self.weight_t.dim(1)?;
        let bias: Option<Vec<f32>> = self.bias.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?;
        let mut out = vec![0f32; rows * n];
        // Prefill the output with bias (+ residual), then one multi-threaded gemm accumulates.
        let prefill = |out: &mut [f32], res: Option<&[f32]>| {
            out.par_chunks_mut(LINEAR_CHUNK * n)
                .enumerate()
                .for_each(|(ci, dst)| {
                    let r0 = ci * LINEAR_CHUNK;
                    for (r, row) in dst.chunks_mut(n).enumerate() {
                        let rr = res.map(|res| &res[(r0 + r) * n..(r0 + r + 1) * n]);
                        match (&bias, rr) {
                            (Some(b), Some(rr)) => {
                                for ((d, bv), rv) in row.iter_mut().zip(b).zip(rr) {
                                    *d = bv + rv;
                                }
                            }
                            (Some(b), None) => row.copy_from_slice(b),
                            (None, Some(rr)) => row.copy_from_slice(rr),
                            (None, None) => {}
                        }
                    }
                });
        };
        let filled = match &residual {
            Some(r) => with_cpu_f32(r, |rs| prefill(&mut out, Some(rs))).is_some(),
            None => {
                prefill(&mut out, None);
                true
            }
        };
        let threads = candle_core::utils::get_num_threads();
        let done = filled
            && with_cpu_f32(&x, |xs| {
                with_cpu_f32(&self.weight_t, |w| unsafe {
                    // out[rows, n] += x[rows, k] @ w[k, n]
                    gemm::gemm(
                        rows,
                        n,
                        k,
                        out.as_mut_ptr(),
                        1,
                        n as isize,
                        true,
                        xs.as_ptr(),
                        1,
                        k as isize,
                        w.as_ptr(),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(threads),
                    );
                })
                .is_some()
            })
            .unwrap_or(false);
        if !done {
            return Ok(None);
        }
        if gelu {
            out.par_chunks_mut(1 << 14).for_each(|c| {
                for v in c.iter_mut() {
                    *v /= 1.0 + super::ops::exp(-1.702 * *v);
                }
            });
        }
        let mut shape = dims;
        let last = shape.len() - 1;
        shape[last] = n;
        Ok(Some(Tensor::from_vec(out, shape, x.device())?))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.forward_cpu(x, None, false)? {
            return Ok(y);
        }
        let dims = x.dims().to_vec();
        let k = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = x.reshape((rows, k))?.matmul(&self.weight_t)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = self.weight_t.dim(1)?;
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
}

pub fn layer_norm(dim: usize, vb: VarBuilder) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: load(&vb, &[dim], "weight")?,
        bias: load(&vb, &[dim], "bias")?,
    })
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
