//! Mirrors the reference's `Transformer` / `ResidualAttentionBlock` (CLIP's, with the blocks split
//! into `resblocks1` and `resblocks2`) and the LEFF MLP of the ViT's first nine blocks.
//! Activations are batch-first `[N, L, D]`; the reference is sequence-first, the math is the same.

use super::nn::{self, LayerNorm, Linear};
use super::ops::{self, HeadView};
use super::sgemm::Act;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// The reference always puts the first nine blocks in `resblocks1`.
pub const FIRST_GROUP: usize = 9;

#[derive(Debug, Clone)]
pub struct MultiheadAttention {
    in_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl MultiheadAttention {
    pub fn new(width: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        if heads == 0 || !width.is_multiple_of(heads) {
            candle_core::bail!("width {width} does not split into {heads} attention heads");
        }
        let w = vb.get_with_hints_dtype(
            (3 * width, width),
            "in_proj_weight",
            Default::default(),
            candle_core::DType::F32,
        )?;
        let b = vb.get_with_hints_dtype(
            3 * width,
            "in_proj_bias",
            Default::default(),
            candle_core::DType::F32,
        )?;
        let in_proj = Linear::from_parts(&w, Some(b), vb.dtype())?;
        let out_proj = nn::linear(width, width, vb.pp("out_proj"))?;
        Ok(Self {
            in_proj,
            out_proj,
            heads,
        })
    }

    /// Self-attention over `[N, L, D]`; `causal` lets position i see positions <= i only.
    /// `residual + attention(x)`, the residual add fused into the output projection.
    pub fn forward(&self, x: &Tensor, causal: bool, residual: Option<&Tensor>) -> Result<Tensor> {
        let (n, l, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self
            .in_proj
            .forward(x)?
            .reshape((n, l, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)? * (1.0 / (hd as f64).sqrt()))?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let att = q.contiguous()?.matmul(&k.t()?)?;
        let att = nn::softmax_last(&att, causal)?;
        let out = att.matmul(&v)?.transpose(1, 2)?.reshape((n, l, d))?;
        self.out_proj.forward_fused(&out, residual, false)
    }
}

impl MultiheadAttention {
    /// CPU rows path: `x + attention(h)` for `[n * l, d]` buffers.
    fn forward_rows(
        &self,
        h: &[f32],
        x: &[f32],
        n: usize,
        l: usize,
        causal: bool,
    ) -> Option<Vec<f32>> {
        let (ip, op) = (self.in_proj.cpu()?, self.out_proj.cpu()?);
        let d = op.out_dim();
        let qkv = ip.rows(n * l, h, None, Act::None);
        let view = |offset| HeadView {
            data: &qkv,
            rows: l,
            stride: 3 * d,
            offset,
        };
        let hd = d / self.heads;
        let att = ops::attention(view(0), view(d), view(2 * d), n, self.heads, hd, causal);
        Some(op.rows(n * l, &att, Some(x), Act::None))
    }

    /// Like [`Self::forward_rows`] for the first position of each sequence only (the class
    /// token of a ViT's last block): keys and values for every position, one query per image.
    /// Returns `[n, d]`.
    fn forward_first_rows(&self, h: &[f32], x: &[f32], n: usize, l: usize) -> Option<Vec<f32>> {
        let (ip, op) = (self.in_proj.cpu()?, self.out_proj.cpu()?);
        let d = op.out_dim();
        let hd = d / self.heads;
        // Keys and values: output features d..3d, when they start on a panel boundary.
        let (kv, kv_stride, k_off) = if d % ip.weight.isa().nr() == 0 {
            let mut kv = vec![0f32; n * l * 2 * d];
            ip.apply(n * l, h, d, d..3 * d, &mut kv, 2 * d, None, Act::None);
            (kv, 2 * d, 0)
        } else {
            (ip.rows(n * l, h, None, Act::None), 3 * d, d)
        };
        let mut q = vec![0f32; n * d];
        ip.apply(n, h, l * d, 0..d, &mut q, d, None, Act::None);
        let view = |offset| HeadView {
            data: &kv,
            rows: l,
            stride: kv_stride,
            offset,
        };
        let qv = HeadView {
            data: &q,
            rows: 1,
            stride: d,
            offset: 0,
        };
        let att = ops::attention(qv, view(k_off), view(k_off + d), n, self.heads, hd, false);
        let mut out = vec![0f32; n * d];
        op.apply(n, &att, d, 0..d, &mut out, d, Some((x, l * d)), Act::None);
        Some(out)
    }
}

/// CLIP's MLP: c_fc -> QuickGELU -> c_proj.
#[derive(Debug, Clone)]
pub struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
}

impl Mlp {
    pub fn new(width: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            c_fc: nn::linear(width, 4 * width, vb.pp("c_fc"))?,
            c_proj: nn::linear(4 * width, width, vb.pp("c_proj"))?,
        })
    }
}

impl Mlp {
    /// `residual + c_proj(QuickGELU(c_fc(x)))`.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let h = self.c_fc.forward_fused(x, None, true)?;
        self.c_proj.forward_fused(&h, Some(residual), false)
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.c_proj
            .forward(&self.c_fc.forward_fused(x, None, true)?)
    }
}

/// LEFF: the patch tokens go through linear -> BN -> QuickGELU -> depthwise 3x3 conv -> BN ->
/// QuickGELU -> linear -> BN -> QuickGELU on their g x g grid; the class token passes unchanged.
/// The BatchNorms are folded into the layer before them at load.
#[derive(Debug, Clone)]
pub struct Leff {
    linear1: Linear,
    /// Depthwise taps `[9, C]` (row-major 3x3) and bias `[C]`, channels-last.
    dw_taps: Vec<Tensor>,
    dw_bias: Tensor,
    /// The same taps and bias as plain f32 for the fused CPU kernel.
    dw_taps_cpu: Vec<Vec<f32>>,
    dw_bias_cpu: Vec<f32>,
    linear2: Linear,
    grid: usize,
}

impl Leff {
    pub fn new(width: usize, grid: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = 4 * width;
        let linear1 = nn::linear_bn(width, hidden, vb.pp("linear1"), vb.pp("ac1").pp("bn"))?;
        let linear2 = nn::linear_bn(hidden, width, vb.pp("linear2"), vb.pp("ac2").pp("bn"))?;
        let dc = vb.pp("depConv");
        let w = dc.pp("depconv").get_with_hints_dtype(
            (hidden, 1, 3, 3),
            "weight",
            Default::default(),
            candle_core::DType::F32,
        )?;
        let (scale, shift) = nn::batch_norm(hidden, dc.pp("bn"))?;
        let w = w
            .reshape((hidden, 9))?
            .broadcast_mul(&scale.unsqueeze(1)?)?
            .t()?
            .contiguous()?;
        let dt = vb.dtype();
        let dw_taps = (0..9)
            .map(|i| w.get(i)?.to_dtype(dt))
            .collect::<Result<Vec<_>>>()?;
        let dw_taps_cpu = (0..9)
            .map(|i| w.get(i)?.to_vec1::<f32>())
            .collect::<Result<Vec<_>>>()?;
        let dw_bias_cpu = shift.to_vec1::<f32>()?;
        Ok(Self {
            linear1,
            dw_taps,
            dw_taps_cpu,
            dw_bias_cpu,
            dw_bias: shift.to_dtype(dt)?,
            linear2,
            grid,
        })
    }

    fn depthwise(&self, x: &Tensor) -> Result<Tensor> {
        // x: [N, g, g, C]; zero padding 1, 3x3 taps.
        let g = self.grid;
        let p = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
        let mut acc = self.dw_bias.broadcast_as(x.shape())?.contiguous()?;
        for di in 0..3 {
            let rows = p.narrow(1, di, g)?;
            for dj in 0..3 {
                let win = rows.narrow(2, dj, g)?;
                acc = (acc + win.broadcast_mul(&self.dw_taps[di * 3 + dj])?)?;
            }
        }
        Ok(acc)
    }
}

impl Module for Leff {
    fn forward(&self, y: &Tensor) -> Result<Tensor> {
        let (n, l, _) = y.dims3()?;
        let g = self.grid;
        let cls = y.narrow(1, 0, 1)?;
        let p = y.narrow(1, 1, l - 1)?;
        let h = self.linear1.forward_fused(&p, None, true)?;
        let c = h.dim(D::Minus1)?;
        let h = h.reshape((n, g, g, c))?;
        let h = match super::ops::depthwise3x3_gelu(&h, &self.dw_taps_cpu, &self.dw_bias_cpu)? {
            Some(h) => h,
            None => nn::quick_gelu(&self.depthwise(&h)?)?,
        };
        let h = h.reshape((n, g * g, c))?;
        let h = self.linear2.forward_fused(&h, None, true)?;
        Tensor::cat(&[cls, h], 1)
    }
}

#[derive(Debug, Clone)]
pub enum BlockMlp {
    Standard(Mlp),
    Leff(Leff),
}

#[derive(Debug, Clone)]
pub struct ResidualAttentionBlock {
    ln_1: LayerNorm,
    attn: MultiheadAttention,
    ln_2: LayerNorm,
    mlp: BlockMlp,
}

impl ResidualAttentionBlock {
    /// `leff_grid`: Some(g) for the ViT's LEFF blocks.
    pub fn new(
        width: usize,
        heads: usize,
        leff_grid: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mlp = match leff_grid {
            Some(g) => BlockMlp::Leff(Leff::new(width, g, vb.pp("mlp"))?),
            None => BlockMlp::Standard(Mlp::new(width, vb.pp("mlp"))?),
        };
        Ok(Self {
            ln_1: nn::layer_norm(width, vb.pp("ln_1"))?,
            attn: MultiheadAttention::new(width, heads, vb.pp("attn"))?,
            ln_2: nn::layer_norm(width, vb.pp("ln_2"))?,
            mlp,
        })
    }

    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let x = self.attn.forward(&self.ln_1.forward(x)?, causal, Some(x))?;
        let y = self.ln_2.forward(&x)?;
        match &self.mlp {
            BlockMlp::Standard(m) => m.forward_residual(&y, &x),
            BlockMlp::Leff(m) => x + m.forward(&y)?,
        }
    }
}

impl ResidualAttentionBlock {
    /// CPU rows path over `[n * l, d]`.
    fn forward_rows(&self, x: &[f32], n: usize, l: usize, causal: bool) -> Option<Vec<f32>> {
        let d = self.attn.out_proj.cpu()?.out_dim();
        let h = self.ln_1.rows(x, n * l, d)?;
        let mut x1 = self.attn.forward_rows(&h, x, n, l, causal)?;
        drop(h);
        match &self.mlp {
            BlockMlp::Standard(m) => {
                let h2 = self.ln_2.rows(&x1, n * l, d)?;
                let f = m.c_fc.cpu()?.rows(n * l, &h2, None, Act::QuickGelu);
                Some(m.c_proj.cpu()?.rows(n * l, &f, Some(&x1), Act::None))
            }
            BlockMlp::Leff(m) => {
                let (l1, l2) = (m.linear1.cpu()?, m.linear2.cpu()?);
                let g = m.grid;
                if g * g + 1 != l {
                    return None;
                }
                // ln_2 of the patch tokens only, gathered densely for linear1 as it goes.
                let patches = ops::RowPick {
                    stride: d,
                    group: l - 1,
                    skip: 1,
                };
                let p = self.ln_2.rows_picked(&x1, n * (l - 1), patches)?;
                let mut f = l1.rows(n * (l - 1), &p, None, Act::QuickGelu);
                drop(p);
                let c = l1.out_dim();
                ops::depthwise3x3_gelu_inplace(&mut f, n, g, c, &m.dw_taps_cpu, &m.dw_bias_cpu);
                let y = l2.rows(n * (l - 1), &f, None, Act::QuickGelu);
                drop(f);
                // The class token passes the MLP unchanged: its residual adds its ln_2.
                let cls = self.ln_2.rows_picked(&x1, n, ops::RowPick::all(n, l * d))?;
                x1.par_chunks_mut(l * d)
                    .zip(y.par_chunks(g * g * d))
                    .zip(cls.par_chunks(d))
                    .for_each(|((img, y), cls)| ops::add_assign(img, cls, y));
                Some(x1)
            }
        }
    }

    /// The block's output at the first position of each sequence only, `[n, d]`.
    fn forward_first_rows(&self, x: &[f32], n: usize, l: usize) -> Option<Vec<f32>> {
        let d = self.attn.out_proj.cpu()?.out_dim();
        let h = self.ln_1.rows(x, n * l, d)?;
        let mut x1 = self.attn.forward_first_rows(&h, x, n, l)?;
        let h2 = self.ln_2.rows(&x1, n, d)?;
        match &self.mlp {
            BlockMlp::Standard(m) => {
                let f = m.c_fc.cpu()?.rows(n, &h2, None, Act::QuickGelu);
                Some(m.c_proj.cpu()?.rows(n, &f, Some(&x1), Act::None))
            }
            BlockMlp::Leff(_) => {
                for (o, &v) in x1.iter_mut().zip(&h2) {
                    *o += v;
                }
                Some(x1)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Transformer {
    resblocks1: Vec<ResidualAttentionBlock>,
    resblocks2: Vec<ResidualAttentionBlock>,
}

impl Transformer {
    /// `leff_grid` applies to the `resblocks1` group only (the ViT); text passes None.
    pub fn new(
        width: usize,
        layers: usize,
        heads: usize,
        leff_grid: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let first = layers.min(FIRST_GROUP);
        let resblocks1 = (0..first)
            .map(|i| {
                ResidualAttentionBlock::new(width, heads, leff_grid, vb.pp("resblocks1").pp(i))
            })
            .collect::<Result<_>>()?;
        let resblocks2 = (0..layers - first)
            .map(|i| ResidualAttentionBlock::new(width, heads, None, vb.pp("resblocks2").pp(i)))
            .collect::<Result<_>>()?;
        Ok(Self {
            resblocks1,
            resblocks2,
        })
    }

    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        if let Some(y) = self.forward_cpu(x, causal, false)? {
            return Ok(y);
        }
        let mut x = x.clone();
        for b in self.resblocks1.iter().chain(&self.resblocks2) {
            x = b.forward(&x, causal)?;
        }
        Ok(x)
    }

    /// The output at the first position only, `[N, D]` (a ViT's class token). On the CPU the
    /// last block computes just that position's query, attention output and MLP.
    pub fn forward_first(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.forward_cpu(x, false, true)? {
            return Ok(y);
        }
        self.forward(x, false)?.narrow(1, 0, 1)?.squeeze(1)
    }

    /// The f32 CPU path on plain row buffers; None where it does not apply (other devices or
    /// dtypes), so the tensor path runs instead.
    fn forward_cpu(&self, x: &Tensor, causal: bool, first_only: bool) -> Result<Option<Tensor>> {
        if !x.device().is_cpu() || x.dtype() != DType::F32 {
            return Ok(None);
        }
        let (n, l, d) = x.dims3()?;
        let x = x.contiguous()?;
        let Some(mut rows) = nn::with_cpu_f32(&x, |v| v.to_vec()) else {
            return Ok(None);
        };
        let blocks: Vec<_> = self.resblocks1.iter().chain(&self.resblocks2).collect();
        let Some((last, body)) = blocks.split_last() else {
            return Ok(None);
        };
        for b in body {
            match b.forward_rows(&rows, n, l, causal) {
                Some(y) => rows = y,
                None => return Ok(None),
            }
        }
        if first_only && !causal {
            return last
                .forward_first_rows(&rows, n, l)
                .map(|y| Tensor::from_vec(y, (n, d), x.device()))
                .transpose();
        }
        let Some(y) = last.forward_rows(&rows, n, l, causal) else {
            return Ok(None);
        };
        let y = Tensor::from_vec(y, (n, l, d), x.device())?;
        Ok(Some(if first_only {
            y.narrow(1, 0, 1)?.squeeze(1)?
        } else {
            y
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Shape};

    /// Deterministic random weights by name (BatchNorm variances kept positive).
    struct Random;

    impl candle_nn::var_builder::SimpleBackend for Random {
        fn get(
            &self,
            s: Shape,
            name: &str,
            _h: candle_nn::Init,
            _dtype: DType,
            dev: &Device,
        ) -> Result<Tensor> {
            let mut st = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            }) | 1;
            let v: Vec<f32> = (0..s.elem_count())
                .map(|_| {
                    st ^= st << 13;
                    st ^= st >> 7;
                    st ^= st << 17;
                    let r = ((st >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                    if name.ends_with("running_var") {
                        1.0 + 0.5 * r.abs()
                    } else {
                        0.2 * r
                    }
                })
                .collect();
            Tensor::from_vec(v, s, dev)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
            candle_core::bail!("no shape for {name}")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    /// The last block computed for the first position only equals the full block's first row,
    /// whether that block is a standard one or (with nine layers or fewer) a LEFF one.
    #[test]
    fn first_position_path_matches_full_output() {
        let dev = Device::Cpu;
        for layers in [4, 11] {
            let vb = VarBuilder::from_backend(Box::new(Random), DType::F32, dev.clone());
            let t = Transformer::new(64, layers, 2, Some(3), vb).unwrap();
            let x = Tensor::randn(0f32, 1.0, (3, 10, 64), &dev).unwrap();
            let full = t
                .forward(&x, false)
                .unwrap()
                .narrow(1, 0, 1)
                .unwrap()
                .squeeze(1)
                .unwrap();
            let first = t.forward_first(&x).unwrap();
            let diff = (full - first)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "{layers} layers: {diff}");
        }
    }
}
