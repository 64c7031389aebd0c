//! Mirrors timm's ViTamin convolutional stages (`models::vitamin`, whose loaded weights it
//! takes) on channels-last row buffers `[n * h * w, c]`: the 3x3 convs as products over
//! gathered patches, the 1x1 convs as products over the rows (GELU in the expansion's
//! epilogue, the shortcut added in the projection's), the depthwise 3x3 and its GELU as one
//! kernel pass, LayerNorm2d as a LayerNorm of each row, the shortcut's average pool counting
//! in-image pixels only.

use super::conv::grid::{gelu_in_place, Conv, Grid, Grouped};
use super::conv::Nhwc;
use super::gemm::{Act, GemmConfig};
use super::layers::{to_vec, LayerNorm, Linear};
use crate::models::conv::Folded;
use crate::models::vitamin::{BlockParts, Norm, Parts, Shortcut, EPS};
use candle_core::Result;

fn norm(n: &Norm) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: to_vec(&n.weight)?,
        bias: to_vec(&n.bias)?,
        eps: EPS as f32,
    })
}

/// A 1x1 conv as a product over the rows.
fn pointwise(f: &Folded, gemm: GemmConfig) -> Result<Linear> {
    let (co, ci, _, _) = f.weight.dims4()?;
    Linear::from_parts(&f.weight.reshape((co, ci))?, Some(&f.bias), gemm)
}

/// A 3x3 / 2 average pool with zero padding 1 over the in-image pixels of each window
/// (PyTorch's `count_include_pad=False`), summed in window order.
pub fn avg_pool_3x3_s2(x: &Grid) -> Grid {
    let c = x.c();
    x.per_window(3, 2, c, |b, o, acc| {
        let mut count = 0usize;
        for (_, at) in x.window(b, o, 3, 2) {
            acc.iter_mut()
                .zip(&x.data[at..at + c])
                .for_each(|(a, &v)| *a += v);
            count += 1;
        }
        acc.iter_mut().for_each(|a| *a /= count as f32);
    })
}

#[derive(Debug)]
enum ShortcutOp {
    Identity,
    Pool(Option<Linear>),
    Conv(Linear),
}

#[derive(Debug)]
struct Block {
    shortcut: ShortcutOp,
    pre_norm: LayerNorm,
    conv1_1x1: Linear,
    conv2_kxk: Grouped,
    conv3_1x1: Linear,
}

impl Block {
    fn new(p: &BlockParts, gemm: GemmConfig) -> Result<Self> {
        Ok(Self {
            shortcut: match &p.shortcut {
                Shortcut::Identity => ShortcutOp::Identity,
                Shortcut::Pool(e) => {
                    ShortcutOp::Pool(e.as_ref().map(|f| pointwise(f, gemm)).transpose()?)
                }
                Shortcut::Conv(f) => ShortcutOp::Conv(pointwise(f, gemm)?),
            },
            pre_norm: norm(&p.pre_norm)?,
            conv1_1x1: pointwise(&p.conv1_1x1, gemm)?,
            conv2_kxk: Grouped::new(&p.conv2_kxk)?,
            conv3_1x1: pointwise(&p.conv3_1x1, gemm)?,
        })
    }

    fn forward(&self, x: Grid) -> Grid {
        let c = x.c();
        let h = Grid {
            data: self.pre_norm.rows(&x.data, x.rows(), c),
            ..x
        };
        let h = Grid {
            data: self.conv1_1x1.rows(h.rows(), &h.data, None, Act::Gelu),
            ..h
        };
        let h = self.conv2_kxk.forward(&h, true);
        let shortcut = match &self.shortcut {
            ShortcutOp::Identity => x.data,
            ShortcutOp::Pool(expand) => {
                let p = avg_pool_3x3_s2(&x);
                match expand {
                    Some(l) => l.rows(p.rows(), &p.data, None, Act::None),
                    None => p.data,
                }
            }
            ShortcutOp::Conv(l) => l.rows(x.rows(), &x.data, None, Act::None),
        };
        Grid {
            data: self
                .conv3_1x1
                .rows(h.rows(), &h.data, Some(&shortcut), Act::None),
            ..h
        }
    }
}

/// The stages: NCHW pixels -> the tokens `[n * g * g, width]`.
#[derive(Debug)]
pub struct MbConvStem {
    conv1: Conv,
    norm1: LayerNorm,
    conv2: Conv,
    blocks: Vec<Block>,
    pool_norm: LayerNorm,
    pool_proj: Conv,
}

impl MbConvStem {
    pub fn new(p: &Parts, gemm: GemmConfig) -> Result<Self> {
        Ok(Self {
            conv1: Conv::new(&p.conv1, gemm)?,
            norm1: norm(&p.norm1)?,
            conv2: Conv::new(&p.conv2, gemm)?,
            blocks: p
                .blocks
                .iter()
                .map(|b| Block::new(b, gemm))
                .collect::<Result<_>>()?,
            pool_norm: norm(&p.pool_norm)?,
            pool_proj: Conv::new(&p.pool_proj, gemm)?,
        })
    }

    /// `px`: `n` images `[3, side, side]`; also the side of the token grid.
    pub fn forward(&self, px: &[f32], n: usize, side: usize) -> (Vec<f32>, usize) {
        let x = Nhwc::from_nchw(px, n, 3, side, side);
        let x = Grid {
            data: x.data,
            n,
            h: side,
            w: side,
        };
        let (h, _) = self.conv1.forward(&x, Act::None);
        let c = h.c();
        let mut h = Grid {
            data: self.norm1.rows(&h.data, h.rows(), c),
            ..h
        };
        gelu_in_place(&mut h.data);
        let (mut h, _) = self.conv2.forward(&h, Act::None);
        for b in &self.blocks {
            h = b.forward(h);
        }
        let c = h.c();
        let normed = Grid {
            data: self.pool_norm.rows(&h.data, h.rows(), c),
            ..h
        };
        let (out, _) = self.pool_proj.forward(&normed, Act::None);
        (out.data, out.h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The native pool equals the candle engine's on a 7 x 6 grid of 3 channels (odd and
    /// even sides: edge windows hold 4 or 6 pixels).
    #[test]
    fn avg_pool_matches_the_candle_engine() {
        let (n, c, h, w) = (2, 3, 7, 6);
        let v: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let t = Tensor::from_vec(v.clone(), (n, c, h, w), &Device::Cpu).unwrap();
        let want = crate::models::vitamin::avg_pool_3x3_s2(&t)
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let x = Nhwc::from_nchw(&v, n, c, h, w);
        let got = avg_pool_3x3_s2(&Grid {
            data: x.data,
            n,
            h,
            w,
        });
        assert_eq!((got.h, got.w), (4, 3));
        assert_eq!(got.data.len(), want.len());
        for (a, b) in got.data.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
