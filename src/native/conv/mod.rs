//! Channels-last (NHWC) convolutions of the native ResNet (candle's generic CPU conv2d is
//! slow). Output pixels are processed in row chunks in parallel: each chunk
//! gathers its 3x3 patches (contiguous channel runs, so plain copies), runs one gemm into a
//! destination pre-filled with the bias (and the residual, when fused), and applies ReLU while
//! the chunk is still in cache. Weights are re-laid out once at load.

pub mod grid;
pub mod nhwc;
pub mod winograd;

pub use nhwc::{avg_pool, patches_nhwc, Nhwc};

use super::gemm::{Act, Epilogue, GemmConfig};
use super::weight::Weight;
use rayon::prelude::*;

/// Output pixels per task: big enough for an efficient gemm, small enough to stay in cache.
const CHUNK: usize = 256;

/// How a convolution runs: im2col + gemm, or Winograd for 3x3 stride-1 padding-1.
#[derive(Debug, Clone)]
pub enum Method {
    /// Weights as `[kh * kw * c_in, c_out]`, packed for the gemm.
    Gemm(Weight),
    Winograd(winograd::Winograd),
}

/// A convolution with BatchNorm folded in.
#[derive(Debug, Clone)]
pub struct ConvKernel {
    pub method: Method,
    pub bias: Vec<f32>,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub c_in: usize,
    pub c_out: usize,
}

impl ConvKernel {
    /// Whether the products round to bf16 (what the weight was packed for).
    pub fn bf16(&self) -> bool {
        match &self.method {
            Method::Gemm(w) => matches!(w, Weight::Bf16(_)),
            Method::Winograd(w) => w.bf16(),
        }
    }

    /// From an OIHW weight and a bias; `winograd` lets 3x3 stride-1 convolutions use
    /// Winograd (off only for comparisons).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: GemmConfig,
        winograd: bool,
        oihw: &[f32],
        bias: Vec<f32>,
        c_out: usize,
        c_in: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        let method = if k == 3 && stride == 1 && padding == 1 && winograd {
            Method::Winograd(winograd::Winograd::new(
                cfg,
                oihw,
                bias.clone(),
                c_out,
                c_in,
            ))
        } else {
            let mut weight = vec![0f32; k * k * c_in * c_out];
            for o in 0..c_out {
                for i in 0..c_in {
                    for ky in 0..k {
                        for kx in 0..k {
                            weight[((ky * k + kx) * c_in + i) * c_out + o] =
                                oihw[((o * c_in + i) * k + ky) * k + kx];
                        }
                    }
                }
            }
            Method::Gemm(Weight::new(cfg, &weight, k * k * c_in, c_out, c_out, 1))
        };
        Self {
            method,
            bias,
            k,
            stride,
            padding,
            c_in,
            c_out,
        }
    }

    /// `relu?(conv(x) + bias + residual?)`.
    pub fn forward(&self, x: &Nhwc, residual: Option<&Nhwc>, relu: bool) -> Nhwc {
        let weight = match &self.method {
            Method::Winograd(w) => return w.forward(x, residual, relu),
            Method::Gemm(w) => w,
        };
        assert_eq!(x.c, self.c_in);
        let (k, s, p) = (self.k, self.stride, self.padding);
        let oh = (x.h + 2 * p - k) / s + 1;
        let ow = (x.w + 2 * p - k) / s + 1;
        let m = x.n * oh * ow;
        let kk = k * k * self.c_in;
        let co = self.c_out;
        let mut out = Vec::<f32>::with_capacity(m * co);
        let direct = k == 1 && s == 1 && p == 0;
        let act = if relu { Act::Relu } else { Act::None };
        out.spare_capacity_mut()[..m * co]
            .par_chunks_mut(CHUNK * co)
            .enumerate()
            .for_each(|(ci, dst)| {
                let r0 = ci * CHUNK;
                let rows = dst.len() / co;
                let patches;
                let lhs: &[f32] = if direct {
                    &x.data[r0 * self.c_in..(r0 + rows) * self.c_in]
                } else {
                    let mut buf = vec![0f32; rows * kk];
                    for (r, prow) in buf.chunks_mut(kk).enumerate() {
                        let idx = r0 + r;
                        let b = idx / (oh * ow);
                        let oy = (idx / ow) % oh;
                        let ox = idx % ow;
                        for ky in 0..k {
                            let iy = (oy * s + ky) as isize - p as isize;
                            if iy < 0 || iy >= x.h as isize {
                                continue;
                            }
                            for kx in 0..k {
                                let ix = (ox * s + kx) as isize - p as isize;
                                if ix < 0 || ix >= x.w as isize {
                                    continue;
                                }
                                let src = ((b * x.h + iy as usize) * x.w + ix as usize) * x.c;
                                let dstp = (ky * k + kx) * self.c_in;
                                prow[dstp..dstp + self.c_in]
                                    .copy_from_slice(&x.data[src..src + self.c_in]);
                            }
                        }
                    }
                    patches = buf;
                    &patches
                };
                let epi = Epilogue {
                    bias: Some(&self.bias),
                    residual: residual.map(|r| (&r.data[r0 * co..(r0 + rows) * co], co)),
                    act,
                };
                // Safety: `dst` is this task's `rows * co` slice of the output's capacity and
                // the gemm writes every element of it.
                unsafe {
                    weight.gemm_ptr(
                        rows,
                        lhs,
                        kk,
                        0..co,
                        dst.as_mut_ptr() as *mut f32,
                        co,
                        &epi,
                        false,
                    );
                }
            });
        // Safety: every chunk above wrote all of its elements.
        unsafe { out.set_len(m * co) };
        Nhwc {
            data: out,
            n: x.n,
            h: oh,
            w: ow,
            c: co,
        }
    }
}

/// The largest `|a - b|` over two equally long slices (tests).
#[cfg(test)]
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_candle_conv2d() {
        let dev = Device::Cpu;
        for (c_in, c_out, k, s, p, h) in [
            (3, 8, 3, 2, 1, 17),
            (8, 16, 3, 1, 1, 9),
            (16, 8, 1, 1, 0, 7),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, c_in, h, h), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (c_out, c_in, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, c_out, &dev).unwrap();
            let want = x
                .conv2d(&w, p, s, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap())
                .unwrap()
                .relu()
                .unwrap();
            let want = want
                .permute((0, 2, 3, 1))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let xin = Nhwc::from_nchw(
                &x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                2,
                c_in,
                h,
                h,
            );
            let kern = ConvKernel::new(
                GemmConfig::detected(),
                true,
                &w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.to_vec1().unwrap(),
                c_out,
                c_in,
                k,
                s,
                p,
            );
            let got = kern.forward(&xin, None, true);
            let worst = max_abs_diff(&got.data, &want);
            assert!(worst < 1e-4, "{worst}");
        }
    }
}
