//! Convolutions on channels-last row buffers (`[n * h * w, c]`) with zero padding `k / 2`, as
//! the FastViT and ViTamin trunks run them: dense ones as products over gathered patches,
//! 1x1 ones as products over the rows, grouped ones (one input channel per group) as their
//! own kernel.

use crate::models::conv::Folded;
use crate::native::gemm::{Act, GemmConfig};
use crate::native::kernels;
use crate::native::layers::{to_vec, Linear};
use crate::native::simd;
use candle_core::Result;
use rayon::prelude::*;

/// A grid of channels-last rows: `n` images of `h` x `w`, `c` channels.
pub struct Grid {
    pub data: Vec<f32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

impl Grid {
    pub fn c(&self) -> usize {
        self.data.len() / (self.n * self.h * self.w).max(1)
    }

    pub fn rows(&self) -> usize {
        self.n * self.h * self.w
    }

    /// The output size of a k x k window at stride s with zero padding k / 2.
    pub fn out_size(&self, k: usize, s: usize) -> (usize, usize) {
        let p = k / 2;
        ((self.h + 2 * p - k) / s + 1, (self.w + 2 * p - k) / s + 1)
    }

    /// The grid a k x k window at stride s (zero padding k / 2) makes, `co` channels: each
    /// output pixel's values are filled by `f(image, (oy, ox), values)` (zeros before), the
    /// rows in parallel.
    pub fn per_window(
        &self,
        k: usize,
        s: usize,
        co: usize,
        f: impl Fn(usize, (usize, usize), &mut [f32]) + Sync,
    ) -> Grid {
        let (ho, wo) = self.out_size(k, s);
        let mut out = vec![0f32; self.n * ho * wo * co];
        out.par_chunks_mut(wo * co)
            .enumerate()
            .for_each(|(r, row)| {
                let (b, oy) = (r / ho, r % ho);
                for (ox, values) in row.chunks_mut(co).enumerate() {
                    f(b, (oy, ox), values);
                }
            });
        Grid {
            data: out,
            n: self.n,
            h: ho,
            w: wo,
        }
    }

    /// The taps of image b's k x k window at output pixel (oy, ox) (stride s, zero padding
    /// k / 2) that fall inside the image: each tap's index ky * k + kx and its pixel's offset
    /// in `data`.
    pub fn window(
        &self,
        b: usize,
        (oy, ox): (usize, usize),
        k: usize,
        s: usize,
    ) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (p, c) = (k / 2, self.c());
        let inside =
            move |o: usize, t: usize, len: usize| (o * s + t).checked_sub(p).filter(|&v| v < len);
        (0..k).flat_map(move |ky| {
            (0..k).filter_map(move |kx| {
                let iy = inside(oy, ky, self.h)?;
                let ix = inside(ox, kx, self.w)?;
                Some((ky * k + kx, ((b * self.h + iy) * self.w + ix) * c))
            })
        })
    }
}

/// Torch's erf GELU over `x`, in parallel chunks.
pub fn gelu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(gelu_chunk);
}

simd::simd_fn! {
    fn gelu_chunk(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = simd::gelu_erf(*v));
    }
}

/// A grouped convolution with one input channel per group (`c_out = m * c_in`; depthwise at
/// m = 1), kernel k, stride s, zero padding k / 2: taps `[k * k, c_out]` (ky * k + kx).
#[derive(Debug)]
pub struct Grouped {
    taps: Vec<f32>,
    bias: Vec<f32>,
    k: usize,
    stride: usize,
}

impl Grouped {
    pub fn new(f: &Folded) -> Result<Self> {
        let (co, per, k, _) = f.weight.dims4()?;
        if per != 1 || f.groups == 0 || !co.is_multiple_of(f.groups) {
            candle_core::bail!("a grouped conv here takes one input channel per group");
        }
        Ok(Self {
            taps: to_vec(&f.weight.reshape((co, k * k))?.t()?)?,
            bias: to_vec(&f.bias)?,
            k,
            stride: f.stride,
        })
    }

    /// The conv, then torch's erf GELU where `gelu`.
    pub fn forward(&self, x: &Grid, gelu: bool) -> Grid {
        let (c, co, k, s) = (x.c(), self.bias.len(), self.k, self.stride);
        let m = co / c.max(1);
        if k % 2 == 0 {
            let mut y = x.per_window(k, s, co, |b, o, acc| {
                acc.copy_from_slice(&self.bias);
                for (tap, at) in x.window(b, o, k, s) {
                    let xin = &x.data[at..at + c];
                    let t = &self.taps[tap * co..][..co];
                    for ((a, tt), &v) in acc.chunks_mut(m).zip(t.chunks(m)).zip(xin) {
                        for (o, &w) in a.iter_mut().zip(tt) {
                            *o += v * w;
                        }
                    }
                }
            });
            if gelu {
                gelu_in_place(&mut y.data);
            }
            return y;
        }
        // m outputs per input channel: each input channel repeated m times makes it a
        // depthwise conv over `co` channels, which the vectorised kernel runs.
        let repeated;
        let input = if m == 1 {
            &x.data
        } else {
            repeated = x
                .data
                .iter()
                .flat_map(|&v| std::iter::repeat_n(v, m))
                .collect::<Vec<f32>>();
            &repeated
        };
        let d = kernels::Depthwise {
            n: x.n,
            h: x.h,
            w: x.w,
            c: co,
            k,
            stride: s,
            gelu,
        };
        let (h, w) = d.out_size();
        Grid {
            data: kernels::depthwise_nhwc(input, d, &self.taps, &self.bias),
            n: x.n,
            h,
            w,
        }
    }
}

/// A dense convolution (one group) as a product over gathered k x k patches, zero padded by
/// k / 2: its weight reordered to `[out, ky, kx, in]`.
#[derive(Debug)]
pub struct Dense {
    linear: Linear,
    k: usize,
    stride: usize,
}

impl Dense {
    pub fn new(f: &Folded, gemm: GemmConfig) -> Result<Self> {
        let (co, _, k, _) = f.weight.dims4()?;
        let w = f
            .weight
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((co, ()))?;
        Ok(Self {
            linear: Linear::from_parts(&w, Some(&f.bias), gemm)?,
            k,
            stride: f.stride,
        })
    }

    pub fn forward(&self, x: &Grid, act: Act) -> Grid {
        let (c, k, s) = (x.c(), self.k, self.stride);
        let (ho, wo) = x.out_size(k, s);
        let per = k * k * c;
        let mut patches = vec![0f32; x.n * ho * wo * per];
        patches
            .par_chunks_mut(per)
            .enumerate()
            .for_each(|(r, dst)| {
                let (b, oy, ox) = (r / (ho * wo), (r / wo) % ho, r % wo);
                for (tap, at) in x.window(b, (oy, ox), k, s) {
                    dst[tap * c..][..c].copy_from_slice(&x.data[at..at + c]);
                }
            });
        Grid {
            data: self.linear.rows(x.n * ho * wo, &patches, None, act),
            n: x.n,
            h: ho,
            w: wo,
        }
    }
}

/// A folded conv: dense, 1x1 (a product over the rows) or grouped.
#[derive(Debug)]
pub enum Conv {
    Dense(Dense),
    Pointwise(Linear),
    Grouped(Grouped),
}

impl Conv {
    pub fn new(f: &Folded, gemm: GemmConfig) -> Result<Self> {
        let (co, per, k, _) = f.weight.dims4()?;
        Ok(if f.groups > 1 {
            Self::Grouped(Grouped::new(f)?)
        } else if k == 1 && f.stride == 1 {
            let w = f.weight.reshape((co, per))?;
            Self::Pointwise(Linear::from_parts(&w, Some(&f.bias), gemm)?)
        } else {
            Self::Dense(Dense::new(f, gemm)?)
        })
    }

    /// The conv, with `act` in a product's epilogue (grouped convs apply GELU only and leave
    /// other activations to the caller). Also whether `act` was applied.
    pub fn forward(&self, x: &Grid, act: Act) -> (Grid, bool) {
        match self {
            Self::Dense(d) => (d.forward(x, act), true),
            Self::Pointwise(l) => (
                Grid {
                    data: l.rows(x.rows(), &x.data, None, act),
                    ..*x
                },
                true,
            ),
            Self::Grouped(g) => (g.forward(x, act == Act::Gelu), act == Act::Gelu),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// A direct NCHW convolution (zero padding k / 2) as the reference, on channels-last
    /// input and output.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        x: &[f32],
        (n, h, w, c): (usize, usize, usize, usize),
        wt: &[f32],
        bias: &[f32],
        co: usize,
        k: usize,
        s: usize,
        groups: usize,
    ) -> Vec<f32> {
        let p = k / 2;
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let (cin_g, cout_g) = (c / groups, co / groups);
        let mut out = vec![0f32; n * ho * wo * co];
        for b in 0..n {
            for oy in 0..ho {
                for ox in 0..wo {
                    for o in 0..co {
                        let g = o / cout_g;
                        let mut acc = bias[o] as f64;
                        for i in 0..cin_g {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = (oy * s + ky, ox * s + kx);
                                    if iy < p || ix < p || iy - p >= h || ix - p >= w {
                                        continue;
                                    }
                                    let xi = x[((b * h + iy - p) * w + ix - p) * c + g * cin_g + i];
                                    let wi = wt[((o * cin_g + i) * k + ky) * k + kx];
                                    acc += xi as f64 * wi as f64;
                                }
                            }
                        }
                        out[((b * ho + oy) * wo + ox) * co + o] = acc as f32;
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    /// The grouped kernel (depthwise and with a channel multiplier, strides 1 and 2, odd and
    /// even sizes) and the dense one equal a direct convolution, without and with GELU.
    #[test]
    fn convolutions_equal_a_direct_one() {
        let gemm = GemmConfig::detected();
        for &(c, co, k, s, groups, h, w) in &[
            (4, 4, 3, 1, 4, 5, 6),
            (4, 4, 7, 1, 4, 9, 8),
            (4, 4, 3, 2, 4, 7, 8),
            (4, 8, 7, 2, 4, 9, 10),
            (4, 8, 3, 1, 4, 5, 5),
            (3, 8, 3, 2, 1, 9, 8),
            (8, 8, 1, 1, 1, 3, 4),
        ] {
            let n = 2;
            let x = values(n * h * w * c, 1);
            let wt = values(co * (c / groups) * k * k, 2);
            let bias = values(co, 3);
            let f = Folded {
                weight: Tensor::from_vec(wt.clone(), (co, c / groups, k, k), &Device::Cpu).unwrap(),
                bias: Tensor::from_vec(bias.clone(), co, &Device::Cpu).unwrap(),
                stride: s,
                groups,
            };
            let grid = Grid {
                data: x.clone(),
                n,
                h,
                w,
            };
            let conv = Conv::new(&f, gemm).unwrap();
            let want = direct(&x, (n, h, w, c), &wt, &bias, co, k, s, groups);
            for act in [Act::None, Act::Gelu] {
                let (got, applied) = conv.forward(&grid, act);
                assert!(applied || act == Act::None);
                assert_eq!(got.data.len(), want.len(), "{c} {co} {k} {s} {groups}");
                for (&a, &b) in got.data.iter().zip(&want) {
                    let b = match act {
                        Act::Gelu => crate::native::simd::reference::gelu(b as f64) as f32,
                        _ => b,
                    };
                    assert!(
                        (a - b).abs() < 1e-4,
                        "{c} {co} {k} {s} {groups} {act:?}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
