//! Channels-last (NHWC) activations of the native ResNet and the average pooling between its
//! convolutions.

use rayon::prelude::*;

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
