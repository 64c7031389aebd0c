//! Mirrors timm's ViTamin convolutional stages (`MbConvStages`, the `patch_embed.backbone` of
//! open_clip's ViTamin models) in candle tensor ops on NCHW f32: the stem (3x3 / 2 conv,
//! LayerNorm2d + GELU, 3x3 conv), MBConv blocks (LayerNorm2d, 1x1 conv, GELU, depthwise 3x3
//! at the block's stride, GELU, 1x1 conv, plus the shortcut: at stride 2 a 3x3 / 2 average
//! pool that counts only in-image pixels, then a 1x1 conv where the width changes), then
//! `pool` (LayerNorm2d, 3x3 / 2 conv to the trunk's width). The loaded [`Parts`] are what
//! both engines build from; the ViT blocks after them are `models::eva`'s.

use super::config::MbConvStages;
use super::conv::{tap, Conv, Folded};
use super::nn::{self, LayerNorm};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// The stages' LayerNorm2d eps (timm's ViTamin configs).
pub const EPS: f64 = 1e-6;

/// timm's `make_divisible(v, 8)`: the MBConv blocks' expanded width for `4 * out`.
pub fn expanded(out: usize) -> usize {
    let v = 4 * out;
    let r = ((v + 4) / 8 * 8).max(8);
    // timm rounds up again when rounding lost more than 10%.
    if (r as f64) < 0.9 * v as f64 {
        r + 8
    } else {
        r
    }
}

/// A LayerNorm over channels: weight and bias, f32.
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Norm {
    fn load(vb: &VarBuilder, c: usize) -> Result<Self> {
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        Ok(Self {
            weight: f32(nn::load(vb, &[c], "weight")?)?,
            bias: f32(nn::load(vb, &[c], "bias")?)?,
        })
    }
}

/// An MBConv block's shortcut.
#[derive(Debug, Clone)]
pub enum Shortcut {
    Identity,
    /// timm's `Downsample2d` at stride 2: the average pool, then a 1x1 conv (`expand`) where
    /// the width changes.
    Pool(Option<Folded>),
    /// A 1x1 conv at stride 1 between widths.
    Conv(Folded),
}

#[derive(Debug, Clone)]
pub struct BlockParts {
    pub shortcut: Shortcut,
    pub pre_norm: Norm,
    pub conv1_1x1: Folded,
    pub conv2_kxk: Folded,
    pub conv3_1x1: Folded,
}

/// The stages' weights, f32, as both engines take them.
#[derive(Debug, Clone)]
pub struct Parts {
    pub conv1: Folded,
    pub norm1: Norm,
    pub conv2: Folded,
    pub blocks: Vec<BlockParts>,
    pub pool_norm: Norm,
    pub pool_proj: Folded,
}

/// A conv under `vb` (`weight` OIHW, `bias`), f32.
fn conv(vb: &VarBuilder, shape: [usize; 4], stride: usize, groups: usize) -> Result<Folded> {
    Ok(Folded {
        weight: nn::load(vb, &shape, "weight")?.to_dtype(DType::F32)?,
        bias: nn::load(vb, &[shape[0]], "bias")?.to_dtype(DType::F32)?,
        stride,
        groups,
    })
}

impl Parts {
    /// `vb`: the backbone (`visual.trunk.patch_embed.backbone`); `width`: the trunk's.
    pub fn load(m: &MbConvStages, width: usize, vb: &VarBuilder) -> Result<Self> {
        let stem = vb.pp("stem");
        let s = m.stem;
        let mut blocks = Vec::new();
        let mut c_in = s;
        for (i, (&c, &depth)) in m.widths.iter().zip(&m.depths).enumerate() {
            for d in 0..depth {
                let v = vb.pp("stages").pp(i).pp(d);
                let stride = if d == 0 { 2 } else { 1 };
                let mid = expanded(c);
                let expand = |k: &str| conv(&v.pp("shortcut").pp(k), [c, c_in, 1, 1], 1, 1);
                let shortcut = match (stride, c_in == c) {
                    (2, true) => Shortcut::Pool(None),
                    (2, false) => Shortcut::Pool(Some(expand("expand")?)),
                    (_, true) => Shortcut::Identity,
                    (_, false) => Shortcut::Conv(conv(&v.pp("shortcut"), [c, c_in, 1, 1], 1, 1)?),
                };
                blocks.push(BlockParts {
                    shortcut,
                    pre_norm: Norm::load(&v.pp("pre_norm"), c_in)?,
                    conv1_1x1: conv(&v.pp("conv1_1x1"), [mid, c_in, 1, 1], 1, 1)?,
                    conv2_kxk: conv(&v.pp("conv2_kxk"), [mid, 1, 3, 3], stride, mid)?,
                    conv3_1x1: conv(&v.pp("conv3_1x1"), [c, mid, 1, 1], 1, 1)?,
                });
                c_in = c;
            }
        }
        let pool = vb.pp("pool");
        Ok(Self {
            conv1: conv(&stem.pp("conv1"), [s, 3, 3, 3], 2, 1)?,
            norm1: Norm::load(&stem.pp("norm1"), s)?,
            conv2: conv(&stem.pp("conv2"), [s, s, 3, 3], 1, 1)?,
            blocks,
            pool_norm: Norm::load(&pool.pp("norm"), c_in)?,
            pool_proj: conv(&pool.pp("proj"), [width, c_in, 3, 3], 2, 1)?,
        })
    }
}

// ---- the candle engine ----

/// LayerNorm2d: a LayerNorm over the channels of NCHW f32.
#[derive(Debug, Clone)]
struct Norm2d(LayerNorm);

impl Norm2d {
    fn new(n: &Norm) -> Result<Self> {
        Ok(Self(LayerNorm::from_parts(&n.weight, &n.bias, EPS)?))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.0.forward(&x.permute((0, 2, 3, 1))?.contiguous()?)?;
        y.permute((0, 3, 1, 2))?.contiguous()
    }
}

/// A 3x3 / 2 average pool with zero padding 1 that divides by the in-image pixels of each
/// window (PyTorch's `count_include_pad=False`), NCHW f32.
pub fn avg_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (ho, wo) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    let xp = x.pad_with_zeros(2, 1, 2)?.pad_with_zeros(3, 1, 2)?;
    let mut sum: Option<Tensor> = None;
    for ky in 0..3 {
        for kx in 0..3 {
            let v = tap(&xp, (ky, kx), 2, (ho, wo))?;
            sum = Some(match sum {
                Some(s) => (s + v)?,
                None => v,
            });
        }
    }
    // Rows (and columns) of a window inside the image: the window at o covers 2o - 1 ..= 2o + 1.
    let inside = |o: usize, len: usize| ((2 * o + 2).min(len) - (2 * o).saturating_sub(1)) as f32;
    let counts: Vec<f32> = (0..ho)
        .flat_map(|oy| (0..wo).map(move |ox| inside(oy, h) * inside(ox, w)))
        .collect();
    let counts = Tensor::from_vec(counts, (1, 1, ho, wo), x.device())?;
    sum.expect("nine taps").broadcast_div(&counts)
}

#[derive(Debug, Clone)]
enum ShortcutOp {
    Identity,
    Pool(Option<Conv>),
    Conv(Conv),
}

#[derive(Debug, Clone)]
struct Block {
    shortcut: ShortcutOp,
    pre_norm: Norm2d,
    conv1_1x1: Conv,
    conv2_kxk: Conv,
    conv3_1x1: Conv,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let shortcut = match &self.shortcut {
            ShortcutOp::Identity => x.clone(),
            ShortcutOp::Pool(expand) => {
                let p = avg_pool_3x3_s2(x)?;
                match expand {
                    Some(c) => c.forward(&p)?,
                    None => p,
                }
            }
            ShortcutOp::Conv(c) => c.forward(x)?,
        };
        let h = self.pre_norm.forward(x)?;
        let h = self.conv1_1x1.forward(&h)?.gelu_erf()?;
        let h = self.conv2_kxk.forward(&h)?.gelu_erf()?;
        self.conv3_1x1.forward(&h)? + shortcut
    }
}

/// The stages in the compute dtype: NCHW pixels -> the tokens `[N, g * g, width]` f32.
#[derive(Debug, Clone)]
pub struct MbConvStem {
    conv1: Conv,
    norm1: Norm2d,
    conv2: Conv,
    blocks: Vec<Block>,
    pool_norm: Norm2d,
    pool_proj: Conv,
}

impl MbConvStem {
    pub fn new(p: &Parts, dt: DType) -> Result<Self> {
        let block = |b: &BlockParts| -> Result<Block> {
            Ok(Block {
                shortcut: match &b.shortcut {
                    Shortcut::Identity => ShortcutOp::Identity,
                    Shortcut::Pool(e) => {
                        ShortcutOp::Pool(e.as_ref().map(|f| Conv::new(f, dt)).transpose()?)
                    }
                    Shortcut::Conv(f) => ShortcutOp::Conv(Conv::new(f, dt)?),
                },
                pre_norm: Norm2d::new(&b.pre_norm)?,
                conv1_1x1: Conv::new(&b.conv1_1x1, dt)?,
                conv2_kxk: Conv::new(&b.conv2_kxk, dt)?,
                conv3_1x1: Conv::new(&b.conv3_1x1, dt)?,
            })
        };
        Ok(Self {
            conv1: Conv::new(&p.conv1, dt)?,
            norm1: Norm2d::new(&p.norm1)?,
            conv2: Conv::new(&p.conv2, dt)?,
            blocks: p.blocks.iter().map(block).collect::<Result<_>>()?,
            pool_norm: Norm2d::new(&p.pool_norm)?,
            pool_proj: Conv::new(&p.pool_proj, dt)?,
        })
    }
}

impl Module for MbConvStem {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let h = self.conv1.forward(&x)?;
        let h = self.norm1.forward(&h)?.gelu_erf()?;
        let mut h = self.conv2.forward(&h)?;
        for b in &self.blocks {
            h = b.forward(&h)?;
        }
        let h = self.pool_proj.forward(&self.pool_norm.forward(&h)?)?;
        // [N, width, g, g] -> [N, g * g, width].
        h.flatten_from(2)?.transpose(1, 2)?.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// timm's `make_divisible(4 * out, 8)` for the widths of its ViTamin models and odd ones.
    #[test]
    fn expanded_widths_follow_timm() {
        for (out, want) in [
            (64, 256),
            (128, 512),
            (160, 640),
            (192, 768),
            (8, 32),
            (3, 16),
        ] {
            assert_eq!(expanded(out), want, "{out}");
        }
    }

    /// The pool divides each window's sum by its in-image pixels: on a 5 x 4 grid of ones
    /// every output is 1; on the running index, the corner window (0, 0) averages pixels
    /// (0..2) x (0..2).
    #[test]
    fn avg_pool_counts_in_image_pixels_only() {
        let dev = Device::Cpu;
        let ones = Tensor::ones((1, 1, 5, 4), DType::F32, &dev).unwrap();
        let y = avg_pool_3x3_s2(&ones).unwrap();
        assert_eq!(y.dims(), &[1, 1, 3, 2]);
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&a| (a - 1.0).abs() < 1e-6), "{v:?}");
        let idx = Tensor::arange(0f32, 20.0, &dev)
            .unwrap()
            .reshape((1, 1, 5, 4))
            .unwrap();
        let y: Vec<f32> = avg_pool_3x3_s2(&idx)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // (0 + 1 + 4 + 5) / 4; the last row's window (rows 3..5, columns 1..4): rows 3 and 4.
        assert!((y[0] - 2.5).abs() < 1e-6);
        let last = (13.0 + 14.0 + 15.0 + 17.0 + 18.0 + 19.0) / 6.0;
        assert!((y[5] - last).abs() < 1e-5, "{} vs {last}", y[5]);
    }
}
