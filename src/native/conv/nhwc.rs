//! Channels-last (NHWC) activations of the native ResNet and the average pooling between its
//! convolutions.

use crate::native::kernels;
use rayon::prelude::*;

/// The `k` x `k` patches (stride `k`) of `n` channels-last grids `[g, g, c]`, each flattened
/// in `(ky, kx, c)` order: `[n * (g / k)^2, k * k * c]`, the rows of a kernel = stride
/// convolution's product.
pub fn patches_nhwc(x: &[f32], n: usize, g: usize, k: usize) -> Vec<f32> {
    let c = x.len() / (n * g * g).max(1);
    let go = g / k.max(1);
    let per = k * k * c;
    // Safety: each output pixel's task writes its k x k x c patch.
    unsafe {
        kernels::par_build(n * go * go * per, per, |p, dst| {
            let (b, oy, ox) = (p / (go * go), (p / go) % go, p % go);
            let mut o = 0;
            for ky in 0..k {
                for kx in 0..k {
                    let at = ((b * g + oy * k + ky) * g + ox * k + kx) * c;
                    dst[o..o + c].write_copy_of_slice(&x[at..at + c]);
                    o += c;
                }
            }
        })
    }
}

/// A batch of images, `[n, h, w, c]` row-major.
#[derive(Debug, Clone)]
pub struct Nhwc {
    pub data: Vec<f32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Nhwc {
    /// From NCHW.
    pub fn from_nchw(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Self {
        let mut data = vec![0f32; x.len()];
        data.par_chunks_mut(h * w * c)
            .zip(x.par_chunks(c * h * w))
            .for_each(|(dst, src)| {
                for ci in 0..c {
                    for p in 0..h * w {
                        dst[p * c + ci] = src[ci * h * w + p];
                    }
                }
            });
        Self { data, n, h, w, c }
    }
}

/// AvgPool2d(kernel = stride = `s`).
pub fn avg_pool(x: &Nhwc, s: usize) -> Nhwc {
    let (oh, ow, c) = (x.h / s, x.w / s, x.c);
    let mut out = vec![0f32; x.n * oh * ow * c];
    let inv = 1.0 / (s * s) as f32;
    out.par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(row, dst)| {
            let b = row / oh;
            let oy = row % oh;
            for ox in 0..ow {
                let d = &mut dst[ox * c..(ox + 1) * c];
                for ky in 0..s {
                    for kx in 0..s {
                        let src = ((b * x.h + oy * s + ky) * x.w + ox * s + kx) * c;
                        for (dv, sv) in d.iter_mut().zip(&x.data[src..src + c]) {
                            *dv += sv;
                        }
                    }
                }
                for v in d.iter_mut() {
                    *v *= inv;
                }
            }
        });
    Nhwc {
        data: out,
        n: x.n,
        h: oh,
        w: ow,
        c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window's values summed in order from zero, then scaled: AvgPool2d(s) with no
    /// padding (a ragged last row or column dropped), to the bit.
    #[test]
    fn avg_pool_matches_a_scalar_pool() {
        for (n, h, w, c, s) in [(2, 8, 6, 40, 2), (1, 7, 9, 3, 2), (1, 9, 9, 17, 3)] {
            let data: Vec<f32> = (0..n * h * w * c)
                .map(|i| ((i * 7919 % 1013) as f32 / 300.0) - 1.6)
                .collect();
            let x = Nhwc { data, n, h, w, c };
            let got = avg_pool(&x, s);
            let (oh, ow) = (h / s, w / s);
            assert_eq!((got.n, got.h, got.w, got.c), (n, oh, ow, c));
            let inv = 1.0 / (s * s) as f32;
            for b in 0..n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ch in 0..c {
                            let mut sum = 0f32;
                            for ky in 0..s {
                                for kx in 0..s {
                                    let (iy, ix) = (oy * s + ky, ox * s + kx);
                                    sum += x.data[((b * h + iy) * w + ix) * c + ch];
                                }
                            }
                            let at = ((b * oh + oy) * ow + ox) * c + ch;
                            assert_eq!(got.data[at].to_bits(), (sum * inv).to_bits(), "{at}");
                        }
                    }
                }
            }
        }
    }
}
