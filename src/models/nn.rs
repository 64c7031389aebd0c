//! Small building blocks shared by the encoders. Weights arrive in f32; folding (eval-mode
//! BatchNorm into the preceding layer) is done in f32 and the result cast to the compute dtype.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

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

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
