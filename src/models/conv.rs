//! Folded convolutions (one OIHW weight and a bias, zero padding `k / 2`), as the FastViT and
//! ViTamin loaders produce them for both engines, and the candle engine's forward of them.

use super::nn;
use candle_core::{DType, Result, Tensor};

/// One folded convolution: an OIHW weight `[out, in / groups, k, k]` and a bias `[out]`, both
/// f32; padding `k / 2` (timm's for these odd kernels at stride 1 and 2).
#[derive(Debug, Clone)]
pub struct Folded {
    pub weight: Tensor,
    pub bias: Tensor,
    pub stride: usize,
    pub groups: usize,
}

impl Folded {
    pub fn k(&self) -> usize {
        self.weight.dims().last().copied().unwrap_or(1)
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }
}

/// A folded conv in the compute dtype, its bias f32.
#[derive(Debug, Clone)]
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    groups: usize,
}

impl Conv {
    pub fn new(f: &Folded, dt: DType) -> Result<Self> {
        Ok(Self {
            weight: f.weight.to_dtype(dt)?,
            bias: f.bias.clone(),
            stride: f.stride,
            groups: f.groups,
        })
    }

    /// NCHW f32 -> NCHW f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.weight.dim(3)?;
        let dt = self.weight.dtype();
        if self.groups > 1 {
            return self.per_channel(x);
        }
        let y = nn::conv2d_grouped(x, &self.weight, k / 2, self.stride, self.groups, dt)?;
        let c = self.bias.dim(0)?;
        y.to_dtype(DType::F32)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}

impl Conv {
    /// A grouped conv with one input channel per group (depthwise, or each input channel to
    /// `m` outputs) as a sum over its k x k taps of shifted, strided views times per-channel
    /// weights, in f32: candle's grouped conv runs one convolution per group. Each output
    /// channel first gets its input channel (repeated m times).
    pub fn per_channel(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (co, _, k, _) = self.weight.dims4()?;
        let (s, p) = (self.stride, k / 2);
        let x = if co != c {
            let m = co / c.max(1);
            let idx: Vec<u32> = (0..co).map(|o| (o / m) as u32).collect();
            x.index_select(&Tensor::new(idx, x.device())?, 1)?
        } else {
            x.clone()
        };
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        // The extra s - 1 rows and columns let every tap's view take s * ho of them.
        let xp = x
            .to_dtype(DType::F32)?
            .pad_with_zeros(2, p, p + s - 1)?
            .pad_with_zeros(3, p, p + s - 1)?;
        let taps = self
            .weight
            .to_dtype(DType::F32)?
            .reshape((co, k * k))?
            .t()?
            .contiguous()?;
        let mut acc = self
            .bias
            .reshape((1, co, 1, 1))?
            .broadcast_as((n, co, ho, wo))?
            .contiguous()?;
        for ky in 0..k {
            for kx in 0..k {
                let v = tap(&xp, (ky, kx), s, (ho, wo))?;
                let t = taps.get(ky * k + kx)?.reshape((1, co, 1, 1))?;
                acc = (acc + v.broadcast_mul(&t)?)?;
            }
        }
        Ok(acc)
    }
}

/// The `ho` x `wo` view of padded NCHW `xp` that tap `(ky, kx)` of a window at stride `s`
/// reads (`xp` padded by `s - 1` more rows and columns at the end than the window needs).
pub fn tap(
    xp: &Tensor,
    (ky, kx): (usize, usize),
    s: usize,
    (ho, wo): (usize, usize),
) -> Result<Tensor> {
    let (n, c, _, _) = xp.dims4()?;
    let v = xp.narrow(2, ky, s * ho)?.narrow(3, kx, s * wo)?;
    if s == 1 {
        return Ok(v);
    }
    v.reshape((n, c, ho, s, wo, s))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((n, c, ho, wo))
}
