//! The candle engine's building blocks, and the weight folding both engines share. Weights
//! arrive in f32; folding (eval-mode BatchNorm into the preceding layer) is done in f32. In a
//! reduced precision the products' weights are stored in it, each product rounds its inputs
//! to it (f32 accumulation) and gives its output in it, as PyTorch's autocast does; the
//! residual stream of the transformers, LayerNorm, softmax and activation arithmetic are f32
//! (see `fused`).

use super::fused;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

pub const BN_EPS: f64 = 1e-5;
pub const LN_EPS: f64 = 1e-5;

/// A checkpoint tensor in f32, whatever the compute dtype.
pub fn load(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Tensor> {
    vb.get_with_hints_dtype(shape, name, candle_nn::Init::Const(0.), DType::F32)
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

/// A Linear (`[out, in]` weight and bias) followed by BatchNorm1d over its outputs, folded into
/// one weight and bias.
pub fn fold_linear_bn(
    in_dim: usize,
    out_dim: usize,
    vb_lin: VarBuilder,
    vb_bn: VarBuilder,
) -> Result<(Tensor, Tensor)> {
    let w = load(&vb_lin, &[out_dim, in_dim], "weight")?;
    let b = load(&vb_lin, &[out_dim], "bias")?;
    let (scale, shift) = batch_norm(out_dim, vb_bn)?;
    let w = w.broadcast_mul(&scale.unsqueeze(1)?)?;
    let b = (b.mul(&scale)? + shift)?;
    Ok((w, b))
}

/// A Linear's `[out, in]` weight and bias, each output scaled by `gain` when given: open_clip's
/// layer scale (`x + gamma * branch(x)`) folded into the linear that ends the branch.
pub fn fold_linear_gain(
    in_dim: usize,
    out_dim: usize,
    vb: VarBuilder,
    gain: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let w = load(&vb, &[out_dim, in_dim], "weight")?;
    let b = load(&vb, &[out_dim], "bias")?;
    match gain {
        Some(g) => Ok((w.broadcast_mul(&g.unsqueeze(1)?)?, b.mul(g)?)),
        None => Ok((w, b)),
    }
}

/// A bias-free convolution (OIHW weight) followed by BatchNorm2d, folded into one weight and a
/// per-channel bias `[c_out]`.
pub fn fold_conv_bn(
    c_in: usize,
    c_out: usize,
    k: usize,
    vb_conv: VarBuilder,
    vb_bn: VarBuilder,
) -> Result<(Tensor, Tensor)> {
    let w = load(&vb_conv, &[c_out, c_in, k, k], "weight")?;
    let (scale, shift) = batch_norm(c_out, vb_bn)?;
    let w = w.broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?;
    Ok((w, shift))
}

/// The LEFF's depthwise 3x3 conv (`depConv.depconv`) with its BatchNorm (`depConv.bn`) folded
/// in: taps `[9, channels]` (row-major ky * 3 + kx, channels-last) and a bias `[channels]`.
pub fn fold_depthwise_bn(channels: usize, vb: VarBuilder) -> Result<(Tensor, Tensor)> {
    let w = load(&vb.pp("depconv"), &[channels, 1, 3, 3], "weight")?;
    let (scale, shift) = batch_norm(channels, vb.pp("bn"))?;
    let taps = w
        .reshape((channels, 9))?
        .broadcast_mul(&scale.unsqueeze(1)?)?
        .t()?
        .contiguous()?;
    Ok((taps, shift))
}

/// A product in the compute dtype `dt` of operands given in any dtype: both rounded to `dt`, the
/// product in `dt` (f32 accumulation in the GEMMs), the result in `dt` as autocast's products
/// give it; in f32 the casts are no-ops.
fn product(
    a: &Tensor,
    b: &Tensor,
    dt: DType,
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (a, b) = (a.to_dtype(dt)?, b.to_dtype(dt)?);
    // candle 0.11's CPU matmul and convolution have no bf16 kernel: compute from f32 copies of
    // the same bf16 values and round the result to bf16, as a bf16 GEMM with f32 accumulation
    // (a GPU's) would.
    if dt == DType::BF16 && a.device().is_cpu() {
        f(&a.to_dtype(DType::F32)?, &b.to_dtype(DType::F32)?)?.to_dtype(DType::BF16)
    } else {
        f(&a, &b)
    }
}

/// `a @ b` (batched) in the compute dtype `dt`, result in `dt`.
pub fn matmul(a: &Tensor, b: &Tensor, dt: DType) -> Result<Tensor> {
    product(a, b, dt, |a, b| a.matmul(b))
}

/// `conv2d(x, w)` with `groups` (dilation 1) in the compute dtype `dt`, result in `dt`.
pub fn conv2d_grouped(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
    groups: usize,
    dt: DType,
) -> Result<Tensor> {
    product(x, w, dt, |x, w| x.conv2d(w, padding, stride, 1, groups))
}

/// `conv2d(x, w)` (groups 1, dilation 1) in the compute dtype `dt`, result in `dt`.
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize, stride: usize, dt: DType) -> Result<Tensor> {
    product(x, w, dt, |x, w| x.conv2d(w, padding, stride, 1, 1))
}

/// `x @ w^T + b`: the weight kept transposed in the compute dtype, the bias f32; the bias (and
/// an activation, or a residual) is one fused pass over the product.
#[derive(Debug, Clone)]
pub struct Linear {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// From a `[out, in]` weight (any dtype), stored in `dtype`, and an optional bias.
    pub fn from_parts(weight: &Tensor, bias: Option<Tensor>, dtype: DType) -> Result<Self> {
        Ok(Self {
            weight_t: weight.t()?.contiguous()?.to_dtype(dtype)?,
            bias: bias.map(|b| b.to_dtype(DType::F32)).transpose()?,
        })
    }

    /// The dtype of the product.
    pub fn dtype(&self) -> DType {
        self.weight_t.dtype()
    }

    /// The f32 bias, or zeros.
    pub fn bias(&self) -> Result<Tensor> {
        match &self.bias {
            Some(b) => Ok(b.clone()),
            None => Tensor::zeros(self.weight_t.dim(1)?, DType::F32, self.weight_t.device()),
        }
    }

    /// `x @ w^T` alone, in the compute dtype, over the last dim of `x`.
    pub fn product(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        // Cast first: a strided input (a narrowed sequence) becomes contiguous in the same pass.
        let x = x.to_dtype(self.dtype())?.reshape((rows, k))?;
        let y = matmul(&x, &self.weight_t, self.dtype())?;
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = self.weight_t.dim(1)?;
        y.reshape(out)
    }

    /// `act(x @ w^T + b)` in the compute dtype.
    pub fn forward_act(&self, x: &Tensor, act: fused::Act) -> Result<Tensor> {
        let y = self.product(x)?;
        match (&self.bias, act) {
            (None, fused::Act::None) => Ok(y),
            _ => fused::bias_act(&y, &self.bias()?, act),
        }
    }

    /// `x @ w^T + b` in f32: the product's output (rounded to the compute dtype) widened before
    /// the bias, for the few small products whose outputs stay f32.
    pub fn forward_f32(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.product(x)?.to_dtype(DType::F32)?;
        fused::bias_act(&y, &self.bias()?, fused::Act::None)
    }

    /// `residual + (x @ w^T + b)`, in the residual's dtype (the f32 residual stream).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        fused::bias_add_act(&self.product(x)?, &self.bias()?, residual, fused::Act::None)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, fused::Act::None)
    }
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let w = load(&vb, &[out_dim, in_dim], "weight")?;
    let b = load(&vb, &[out_dim], "bias")?;
    Linear::from_parts(&w, Some(b), vb.dtype())
}

/// A Linear whose outputs are scaled by `gain` (see [`fold_linear_gain`]).
pub fn linear_gain(
    in_dim: usize,
    out_dim: usize,
    vb: VarBuilder,
    gain: Option<&Tensor>,
) -> Result<Linear> {
    let dtype = vb.dtype();
    let (w, b) = fold_linear_gain(in_dim, out_dim, vb, gain)?;
    Linear::from_parts(&w, Some(b), dtype)
}

/// A Linear followed by BatchNorm1d over its output features, folded into one Linear.
pub fn linear_bn(
    in_dim: usize,
    out_dim: usize,
    vb_lin: VarBuilder,
    vb_bn: VarBuilder,
) -> Result<Linear> {
    let dtype = vb_lin.dtype();
    let (w, b) = fold_linear_bn(in_dim, out_dim, vb_lin, vb_bn)?;
    Linear::from_parts(&w, Some(b), dtype)
}

/// LayerNorm in f32 (the reference computes it in f32 whatever the precision); its output is
/// f32 (`forward`) or stored straight in a product's dtype (`forward_to`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

pub fn layer_norm(dim: usize, vb: VarBuilder) -> Result<LayerNorm> {
    layer_norm_eps(dim, LN_EPS, vb)
}

/// A LayerNorm with another eps than PyTorch's default (timm's ConvNeXt: 1e-6).
pub fn layer_norm_eps(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: load(&vb, &[dim], "weight")?,
        bias: load(&vb, &[dim], "bias")?,
        eps,
    })
}

impl LayerNorm {
    /// From its weight and bias (f32).
    pub fn from_parts(weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(DType::F32)?,
            bias: bias.to_dtype(DType::F32)?,
            eps,
        })
    }

    pub fn forward_to(&self, x: &Tensor, dt: DType) -> Result<Tensor> {
        fused::layer_norm(x, &self.weight, &self.bias, self.eps, dt)
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_to(x, DType::F32)
    }
}

/// The fused kernels' code for an MLP activation.
pub fn act_of(act: super::Activation) -> fused::Act {
    match act {
        super::Activation::QuickGelu => fused::Act::QuickGelu,
        super::Activation::Gelu => fused::Act::Gelu,
        super::Activation::GeluTanh => fused::Act::GeluTanh,
        super::Activation::Relu => fused::Act::Relu,
    }
}

/// Average pooling (kernel = stride = `s`) summing in f32 whatever the storage dtype, as
/// PyTorch does: candle's CUDA kernel sums in f32, its CPU one in the storage dtype, so on the
/// CPU a reduced precision pools a widened copy (same numbers, one rounding at the end).
pub fn avg_pool2d(x: &Tensor, s: usize) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() != DType::F32 {
        x.to_dtype(DType::F32)?.avg_pool2d(s)?.to_dtype(x.dtype())
    } else {
        x.avg_pool2d(s)
    }
}

/// Row-wise L2 normalisation, in f32 (the features of either engine).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&n)
}

/// Convolution with its BatchNorm folded in (the conv has no bias in these models): the weight
/// in the compute dtype, the bias and the output f32.
#[derive(Debug, Clone)]
pub struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
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
        let dt = vb_conv.dtype();
        let (w, shift) = fold_conv_bn(c_in, c_out, k, vb_conv, vb_bn)?;
        Self::from_parts(&w, shift, stride, padding, dt)
    }

    /// From an OIHW weight (stored in `dtype`) and an f32 bias `[c_out]`.
    pub fn from_parts(
        weight: &Tensor,
        bias: Tensor,
        stride: usize,
        padding: usize,
        dtype: DType,
    ) -> Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(dtype)?,
            bias: bias.to_dtype(DType::F32)?,
            stride,
            padding,
        })
    }
}

impl ConvBn {
    /// `act(conv(x) + bias)` in the compute dtype.
    pub fn forward_act(&self, x: &Tensor, act: fused::Act) -> Result<Tensor> {
        let dt = self.weight.dtype();
        let y = conv2d(x, &self.weight, self.padding, self.stride, dt)?;
        fused::bias_act_nchw(&y, &self.bias, act)
    }

    /// `act(residual + (conv(x) + bias))` in the residual's dtype.
    pub fn forward_add_act(
        &self,
        x: &Tensor,
        residual: &Tensor,
        act: fused::Act,
    ) -> Result<Tensor> {
        let dt = self.weight.dtype();
        let y = conv2d(x, &self.weight, self.padding, self.stride, dt)?;
        fused::bias_add_act_nchw(&y, &self.bias, residual, act)
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, fused::Act::None)
    }
}
