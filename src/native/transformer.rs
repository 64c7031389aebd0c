//! Mirrors the reference's `Transformer` / `ResidualAttentionBlock` (CLIP's, blocks split into
//! `resblocks1` and `resblocks2`) and the LEFF MLP of the ViT's first nine blocks, and CLIP's own
//! layout (`resblocks.N`, QuickGELU or GELU), on plain `[n * l, d]` row buffers: bias, residual
//! and QuickGELU fused into the products, attention read straight out of the fused q/k/v
//! projection.

use super::gemm::{Act, GemmConfig};
use super::kernels::{self, HeadView, Mask, RowPick};
use super::layers::{self, LayerNorm, Linear, Rows};
use crate::models::nn as fold;
use crate::models::transformer::{BlockKeys, Style, FIRST_GROUP};
use crate::models::{Activation, Family};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

#[derive(Debug)]
pub struct MultiheadAttention {
    in_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl MultiheadAttention {
    /// `gain`: a layer scale folded into `out_proj`.
    pub fn new(
        width: usize,
        heads: usize,
        gain: Option<&Tensor>,
        keys: BlockKeys,
        vb: VarBuilder,
        cfg: GemmConfig,
    ) -> Result<Self> {
        if heads == 0 || !width.is_multiple_of(heads) {
            candle_core::bail!("width {width} does not split into {heads} attention heads");
        }
        let (w, b) = keys.qkv(width, &vb)?;
        Ok(Self {
            in_proj: Linear::from_parts(&w, Some(&b), cfg)?,
            out_proj: Linear::with_gain(width, width, vb.pp(keys.out_proj), gain, cfg)?,
            heads,
        })
    }

    /// From its fused q/k/v projection (`[3 width, width]`, queries, keys, values) and its
    /// output projection (an HF encoder's `query`, `key`, `value` and `output.dense`).
    pub fn from_parts(in_proj: Linear, out_proj: Linear, heads: usize) -> Result<Self> {
        let width = out_proj.out_dim();
        if heads == 0 || !width.is_multiple_of(heads) || in_proj.out_dim() != 3 * width {
            candle_core::bail!("width {width} does not split into {heads} attention heads");
        }
        Ok(Self {
            in_proj,
            out_proj,
            heads,
        })
    }

    /// `x + attention(h)` for `[n * l, d]` buffers.
    pub(super) fn forward(&self, h: Rows, x: &[f32], n: usize, l: usize, mask: Mask) -> Vec<f32> {
        let (ip, op) = (&self.in_proj, &self.out_proj);
        let d = op.out_dim();
        let hd = d / self.heads;
        if ip.takes_bf16() && op.takes_bf16() && hd.is_multiple_of(32) {
            // In bf16 from the projection to out_proj: queries, keys and values leave in_proj
            // as the pairs attention's products would round them to, and the heads' results
            // reach out_proj the same way.
            let qkv = ip.rows_to_bf16(n * l, h, Act::None);
            let att = kernels::attention_pairs(ip.config(), &qkv, l, self.heads, hd, mask);
            return op.rows_of(n * l, Rows::Bf16(&att), Some(x), Act::None);
        }
        let qkv = ip.rows_of(n * l, h, None, Act::None);
        let view = |offset| HeadView {
            data: &qkv,
            rows: l,
            stride: 3 * d,
            offset,
        };
        let (q, k, v) = (view(0), view(d), view(2 * d));
        if op.takes_bf16() {
            // The heads' results reach out_proj as the bf16 pairs its packing would make.
            let att = kernels::attention_rows(ip.config(), q, k, v, n, self.heads, hd, mask);
            return op.rows_of(n * l, Rows::Bf16(&att), Some(x), Act::None);
        }
        let att = kernels::attention(ip.config(), q, k, v, n, self.heads, hd, mask);
        op.rows(n * l, &att, Some(x), Act::None)
    }

    /// [`Self::forward`] (causal) on `n` sequences whose first `p` rows are the same in all,
    /// held once: `h` and `x` are `p` prefix rows then each sequence's `s` rows after them.
    /// The prefix attends to itself; each sequence's queries see the prefix's keys and values,
    /// then their own up to their position. `[p + n * s, d]`.
    fn forward_shared(&self, h: Rows, x: &[f32], n: usize, p: usize, s: usize) -> Vec<f32> {
        let (ip, op) = (&self.in_proj, &self.out_proj);
        let (d, rows) = (op.out_dim(), p + n * s);
        let hd = d / self.heads;
        let qkv = ip.rows_of(rows, h, None, Act::None);
        let (qkv_p, qkv_s) = qkv.split_at(p * 3 * d);
        // Keys and values at every position of each sequence, the prefix's copied in front.
        let l = p + s;
        // Safety: each sequence's task writes its l rows of 2d (p prefix rows, s own rows).
        let kv = unsafe {
            kernels::par_build(n * l * 2 * d, l * 2 * d, |b, seq| {
                let own = qkv_s[b * s * 3 * d..].chunks(3 * d);
                for (row, src) in seq.chunks_mut(2 * d).zip(qkv_p.chunks(3 * d).chain(own)) {
                    for (o, &v) in row.iter_mut().zip(&src[d..3 * d]) {
                        o.write(v);
                    }
                }
            })
        };
        let view = |data, rows, stride, offset| HeadView {
            data,
            rows,
            stride,
            offset,
        };
        let cfg = ip.config();
        let (q, k, v) = (0, d, 2 * d);
        let prefix = |o| view(qkv_p, p, 3 * d, o);
        let mut att = kernels::attention(
            cfg,
            prefix(q),
            prefix(k),
            prefix(v),
            1,
            self.heads,
            hd,
            Mask::Causal,
        );
        let at = vec![p; n];
        att.extend(kernels::attention(
            cfg,
            view(qkv_s, s, 3 * d, q),
            view(&kv, l, 2 * d, 0),
            view(&kv, l, 2 * d, d),
            n,
            self.heads,
            hd,
            Mask::At(&at),
        ));
        op.rows(rows, &att, Some(x), Act::None)
    }

    /// [`Self::forward`] (causal) for one new position of each of `n` sequences (`h`, `x`:
    /// `[n, d]`) extending `past`'s: its query sees their keys and its own, but the hidden
    /// ones. Returns `x + attention` and the `n` sequences' keys and values with the new
    /// position's, `[n, len + 1, 2d]`. Each row equals the full forward's to the bit, as
    /// [`Self::forward_shared`]'s.
    fn step(&self, h: Rows, x: &[f32], n: usize, past: Past) -> (Vec<f32>, Vec<f32>) {
        let Past {
            kv: past,
            len,
            parent,
            hidden,
        } = past;
        let (ip, op) = (&self.in_proj, &self.out_proj);
        let d = op.out_dim();
        let (hd, l, row) = (d / self.heads, len + 1, 2 * d);
        let qkv = ip.rows_of(n, h, None, Act::None);
        // Safety: each sequence's task writes its len past rows and its new one.
        let kv = unsafe {
            kernels::par_build(n * l * row, l * row, |b, seq| {
                let (old, new) = seq.split_at_mut(len * row);
                let from = parent.get(b).map_or(0, |&p| p * len * row);
                for (o, &v) in old.iter_mut().zip(&past[from..from + len * row]) {
                    o.write(v);
                }
                for (o, &v) in new.iter_mut().zip(&qkv[b * 3 * d + d..(b + 1) * 3 * d]) {
                    o.write(v);
                }
            })
        };
        let at = vec![len; n];
        let mask = match hidden {
            Some(hidden) => Mask::AtHiding(&at, hidden),
            None => Mask::At(&at),
        };
        let q = HeadView {
            data: &qkv,
            rows: 1,
            stride: 3 * d,
            offset: 0,
        };
        let view = |offset| HeadView {
            data: &kv,
            rows: l,
            stride: row,
            offset,
        };
        let (cfg, heads) = (ip.config(), self.heads);
        let out = if op.takes_bf16() {
            // As `forward`'s bf16 routes: the products round their operands to the same pairs.
            let att = kernels::attention_rows(cfg, q, view(0), view(d), n, heads, hd, mask);
            op.rows_of(n, Rows::Bf16(&att), Some(x), Act::None)
        } else {
            let att = kernels::attention(cfg, q, view(0), view(d), n, heads, hd, mask);
            op.rows(n, &att, Some(x), Act::None)
        };
        (out, kv)
    }

    /// Like [`Self::forward`] for one position of each sequence only, `pick[b]` (a ViT's class
    /// token, CLIP text's end-of-text token in the last block): keys and values for every
    /// position, one query per sequence, which under `causal` sees the keys up to its own.
    /// `[n, d]`.
    fn forward_at(
        &self,
        h: &[f32],
        x: &[f32],
        n: usize,
        l: usize,
        pick: &[usize],
        causal: bool,
    ) -> Vec<f32> {
        let (ip, op) = (&self.in_proj, &self.out_proj);
        let d = op.out_dim();
        let hd = d / self.heads;
        // Keys and values: output features d..3d.
        let (kv, kv_stride, k_off) = ip.cols_of(n * l, h, d..3 * d);
        let mut q = vec![0f32; n * d];
        ip.apply(
            n,
            &picked(h, l, d, pick),
            d,
            0..d,
            &mut q,
            d,
            None,
            Act::None,
        );
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
        let att = kernels::attention(
            ip.config(),
            qv,
            view(k_off),
            view(k_off + d),
            n,
            self.heads,
            hd,
            if causal { Mask::At(pick) } else { Mask::None },
        );
        let mut out = vec![0f32; n * d];
        op.apply(
            n,
            &att,
            d,
            0..d,
            &mut out,
            d,
            Some((&picked(x, l, d, pick), d)),
            Act::None,
        );
        out
    }
}

/// Row `pick[b]` of each sequence of `l` rows of `d` in `buf`, as `[pick.len(), d]`.
fn picked(buf: &[f32], l: usize, d: usize, pick: &[usize]) -> Vec<f32> {
    pick.iter()
        .enumerate()
        .flat_map(|(b, &p)| &buf[(b * l + p) * d..][..d])
        .copied()
        .collect()
}

/// The gemm epilogue computing `act`.
pub fn act_of(act: Activation) -> Act {
    match act {
        Activation::QuickGelu => Act::QuickGelu,
        Activation::Gelu => Act::Gelu,
        Activation::GeluTanh => Act::GeluTanh,
        Activation::Relu => Act::Relu,
    }
}

/// CLIP's MLP: c_fc -> QuickGELU (or GELU) -> c_proj.
#[derive(Debug)]
pub struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
    act: Activation,
}

impl Mlp {
    /// `gain`: a layer scale folded into `c_proj`.
    pub fn new(
        width: usize,
        hidden: usize,
        act: Activation,
        gain: Option<&Tensor>,
        keys: BlockKeys,
        vb: VarBuilder,
        cfg: GemmConfig,
    ) -> Result<Self> {
        Ok(Self {
            c_fc: Linear::new(width, hidden, vb.pp(keys.fc), cfg)?,
            c_proj: Linear::with_gain(hidden, width, vb.pp(keys.proj), gain, cfg)?,
            act,
        })
    }

    /// From its two layers (an HF encoder's `intermediate.dense` and `output.dense`).
    pub fn from_parts(c_fc: Linear, c_proj: Linear, act: Activation) -> Self {
        Self { c_fc, c_proj, act }
    }

    /// `residual + c_proj(act(c_fc(h)))` over `m` rows.
    pub(super) fn forward(&self, h: Rows, residual: &[f32], m: usize) -> Vec<f32> {
        self.c_fc
            .rows_then(&self.c_proj, m, h, act_of(self.act), Some(residual))
    }
}

/// LEFF: linear1 (+BN, QuickGELU) -> depthwise 3x3 (+BN, QuickGELU) -> linear2 (+BN, QuickGELU)
/// on the patch tokens' g x g grid; the class token passes unchanged. BatchNorms folded at load.
#[derive(Debug)]
pub struct Leff {
    linear1: Linear,
    /// `depConv`: taps `[9][C]` (row-major 3x3, channels-last) and bias `[C]`.
    dep_conv: (Vec<Vec<f32>>, Vec<f32>),
    linear2: Linear,
    grid: usize,
}

impl Leff {
    pub fn new(width: usize, grid: usize, vb: VarBuilder, cfg: GemmConfig) -> Result<Self> {
        let hidden = 4 * width;
        let (taps, bias) = fold::fold_depthwise_bn(hidden, vb.pp("depConv"))?;
        let taps = (0..9)
            .map(|i| layers::to_vec(&taps.get(i)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            linear1: Linear::with_bn(width, hidden, vb.pp("linear1"), vb.pp("ac1").pp("bn"), cfg)?,
            dep_conv: (taps, layers::to_vec(&bias)?),
            linear2: Linear::with_bn(hidden, width, vb.pp("linear2"), vb.pp("ac2").pp("bn"), cfg)?,
            grid,
        })
    }
}

#[derive(Debug)]
pub enum BlockMlp {
    Standard(Mlp),
    Leff(Leff),
}

#[derive(Debug)]
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
        style: Style,
        vb: VarBuilder,
        cfg: GemmConfig,
    ) -> Result<Self> {
        let [ls_1, ls_2] = style.gains(width, &vb)?;
        let keys = style.keys();
        let mlp = match leff_grid {
            Some(g) => BlockMlp::Leff(Leff::new(width, g, vb.pp("mlp"), cfg)?),
            None => BlockMlp::Standard(Mlp::new(
                width,
                style.mlp_width(width),
                style.activation,
                ls_2.as_ref(),
                keys,
                vb.pp("mlp"),
                cfg,
            )?),
        };
        let eps = style.eps as f32;
        Ok(Self {
            ln_1: LayerNorm::with_eps(width, eps, vb.pp(keys.ln_1))?,
            attn: MultiheadAttention::new(width, heads, ls_1.as_ref(), keys, vb.pp("attn"), cfg)?,
            ln_2: LayerNorm::with_eps(width, eps, vb.pp(keys.ln_2))?,
            mlp,
        })
    }

    /// The block over `[n * l, d]`.
    pub(super) fn forward(&self, x: &[f32], n: usize, l: usize, mask: Mask) -> Result<Vec<f32>> {
        let d = self.ln_1.weight.len();
        // Each LayerNorm's rows in the form its product takes (bf16 pairs for bf16 weights).
        let h = self.ln_1.rows_for(&self.attn.in_proj, x, n * l, d);
        let mut x1 = self.attn.forward(h.rows(), x, n, l, mask);
        drop(h);
        match &self.mlp {
            BlockMlp::Standard(m) => {
                let h2 = self.ln_2.rows_for(&m.c_fc, &x1, n * l, d);
                Ok(m.forward(h2.rows(), &x1, n * l))
            }
            BlockMlp::Leff(m) => {
                let g = m.grid;
                if g * g + 1 != l {
                    candle_core::bail!("LEFF grid {g}x{g} does not match {l} tokens");
                }
                // ln_2 of the patch tokens only, gathered densely for linear1 as it goes.
                let patches = RowPick {
                    stride: d,
                    group: l - 1,
                    skip: 1,
                };
                let p = self
                    .ln_2
                    .rows_picked_for(&m.linear1, &x1, n * (l - 1), patches);
                let mut f = m
                    .linear1
                    .rows_of(n * (l - 1), p.rows(), None, Act::QuickGelu);
                drop(p);
                let c = m.linear1.out_dim();
                let (taps, bias) = &m.dep_conv;
                // Under bf16 the convolution's rows go to linear2 as the pairs it would pack.
                let y = if m.linear2.takes_bf16() {
                    let r = kernels::depthwise3x3_gelu_bf16(&f, n, g, c, taps, bias);
                    drop(f);
                    m.linear2
                        .rows_of(n * (l - 1), Rows::Bf16(&r), None, Act::QuickGelu)
                } else {
                    kernels::depthwise3x3_gelu_inplace(&mut f, n, g, c, taps, bias);
                    m.linear2.rows(n * (l - 1), &f, None, Act::QuickGelu)
                };
                // The class token passes the MLP unchanged: its residual adds its ln_2.
                let cls = self.ln_2.rows_picked(&x1, n, RowPick::all(n, l * d));
                x1.par_chunks_mut(l * d)
                    .zip(y.par_chunks(g * g * d))
                    .zip(cls.par_chunks(d))
                    .for_each(|((img, y), cls)| kernels::add_assign(img, cls, y));
                Ok(x1)
            }
        }
    }

    /// [`Self::forward`] (causal) on `n` sequences whose first `p` rows are the same in all,
    /// held once: `x` is those `p` rows, then each sequence's `s` rows after them.
    fn forward_shared(&self, x: &[f32], n: usize, p: usize, s: usize) -> Result<Vec<f32>> {
        let BlockMlp::Standard(m) = &self.mlp else {
            candle_core::bail!("a shared prefix needs standard MLP blocks (a text tower's)");
        };
        let (d, rows) = (self.ln_1.weight.len(), p + n * s);
        let h = self.ln_1.rows_for(&self.attn.in_proj, x, rows, d);
        let x1 = self.attn.forward_shared(h.rows(), x, n, p, s);
        drop(h);
        let h2 = self.ln_2.rows_for(&m.c_fc, &x1, rows, d);
        Ok(m.forward(h2.rows(), &x1, rows))
    }

    /// [`Self::forward`] (causal) for one new position of `n` sequences
    /// ([`MultiheadAttention::step`]): its output `[n, d]` and the sequences' keys and values.
    pub(super) fn step(&self, x: &[f32], n: usize, past: Past) -> Result<(Vec<f32>, Vec<f32>)> {
        let BlockMlp::Standard(m) = &self.mlp else {
            candle_core::bail!("stepwise decoding needs standard MLP blocks (a text tower's)");
        };
        let d = self.ln_1.weight.len();
        let h = self.ln_1.rows_for(&self.attn.in_proj, x, n, d);
        let (x1, kv) = self.attn.step(h.rows(), x, n, past);
        drop(h);
        let h2 = self.ln_2.rows_for(&m.c_fc, &x1, n, d);
        Ok((m.forward(h2.rows(), &x1, n), kv))
    }

    /// The block's output at position `pick[b]` of each sequence only, `[n, d]`. A LEFF block
    /// (the ViT's) takes the class token only, position 0.
    fn forward_at(
        &self,
        x: &[f32],
        n: usize,
        l: usize,
        pick: &[usize],
        causal: bool,
    ) -> Result<Vec<f32>> {
        let d = self.ln_1.weight.len();
        let h = self.ln_1.rows(x, n * l, d);
        let mut x1 = self.attn.forward_at(&h, x, n, l, pick, causal);
        let h2 = self.ln_2.rows(&x1, n, d);
        match &self.mlp {
            BlockMlp::Standard(m) => Ok(m.forward(Rows::F32(&h2), &x1, n)),
            BlockMlp::Leff(_) => {
                if pick.iter().any(|&p| p != 0) {
                    candle_core::bail!("a LEFF block passes only the class token (position 0)");
                }
                for (o, &v) in x1.iter_mut().zip(&h2) {
                    *o += v;
                }
                Ok(x1)
            }
        }
    }
}

/// What a block's step extends: the `len` cached positions' keys and values `kv` (`[_, len,
/// 2 width]`), new sequence b extending cached sequence `parent[b]` (no parents when `len` is
/// 0), and the keys hidden from the new position (CoCa text's, `[n * (len + 1)]`).
#[derive(Clone, Copy)]
pub(super) struct Past<'a> {
    kv: &'a [f32],
    len: usize,
    parent: &'a [usize],
    hidden: Option<&'a [bool]>,
}

/// The keys and values each block of a causal stack computed at the positions of `n`
/// sequences so far: what stepwise decoding keeps so that a step runs only its new position
/// through the blocks.
#[derive(Debug, Default)]
pub struct KvCache {
    /// Per block, `[n, len, 2 width]`: each position's key, then its value.
    layers: Vec<Vec<f32>>,
    n: usize,
    len: usize,
}

impl KvCache {
    /// Positions cached per sequence.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One step of `layers` blocks for `n` sequences, sequence b extending cached `parent[b]`
    /// (no parents at the first step), `hidden` keys as [`Past`]'s: `block(i, past)` gives
    /// block i's keys and values of the `n` sequences from its cached ones. Parents that do
    /// not fit leave the cache as it was; an error of a block leaves it empty.
    pub(super) fn advance(
        &mut self,
        n: usize,
        parent: &[usize],
        hidden: Option<&[bool]>,
        layers: usize,
        mut block: impl FnMut(usize, Past) -> Result<Vec<f32>>,
    ) -> Result<()> {
        let len = self.len;
        crate::models::transformer::check_parents(
            n,
            parent,
            (self.n, len),
            self.layers.len() == layers,
        )?;
        let mut cached = std::mem::take(self).layers.into_iter();
        let mut next = Vec::with_capacity(layers);
        for i in 0..layers {
            // Each block's old keys are dropped once its new ones are built.
            let old = cached.next().unwrap_or_default();
            let past = Past {
                kv: &old,
                len,
                parent,
                hidden,
            };
            next.push(block(i, past)?);
        }
        *self = KvCache {
            layers: next,
            n,
            len: len + 1,
        };
        Ok(())
    }
}

/// The blocks in order: PyramidCLIP's `resblocks1` then `resblocks2`, or CLIP's `resblocks`.
#[derive(Debug)]
pub struct Transformer {
    resblocks: Vec<ResidualAttentionBlock>,
}

impl Transformer {
    /// `leff_grid` applies to PyramidCLIP's `resblocks1` group only (its ViT); text passes None.
    pub fn new(
        width: usize,
        layers: usize,
        heads: usize,
        leff_grid: Option<usize>,
        style: Style,
        vb: VarBuilder,
        cfg: GemmConfig,
    ) -> Result<Self> {
        let block = |i: usize, group: &str, grid: Option<usize>| {
            ResidualAttentionBlock::new(width, heads, grid, style, vb.pp(group).pp(i), cfg)
        };
        let resblocks = match style.family {
            Family::PyramidClip => {
                let first = layers.min(FIRST_GROUP);
                (0..first)
                    .map(|i| block(i, "resblocks1", leff_grid))
                    .chain((0..layers - first).map(|i| block(i, "resblocks2", None)))
                    .collect::<Result<_>>()?
            }
            Family::Clip
            | Family::Coca
            | Family::Siglip
            | Family::HfText
            | Family::CustomText
            | Family::Clipa => (0..layers)
                .map(|i| block(i, style.blocks(), None))
                .collect::<Result<_>>()?,
        };
        Ok(Self { resblocks })
    }

    fn blocks(&self) -> impl Iterator<Item = &ResidualAttentionBlock> {
        self.resblocks.iter()
    }

    /// All blocks over `[n * l, d]` rows.
    pub fn forward(&self, mut x: Vec<f32>, n: usize, l: usize, mask: Mask) -> Result<Vec<f32>> {
        if let Mask::CausalHiding(h) = mask {
            if h.len() != n * l {
                candle_core::bail!("{} key flags for {n} sequences of {l}", h.len());
            }
        }
        for b in self.blocks() {
            x = b.forward(&x, n, l, mask)?;
        }
        Ok(x)
    }

    /// The output at position `pick[b]` of each sequence only, `[n, d]` (a ViT's class token,
    /// CLIP text's end-of-text token): the last block computes just those positions' queries,
    /// attention outputs and MLPs. Each picked row equals the full output's.
    pub fn forward_at(
        &self,
        mut x: Vec<f32>,
        n: usize,
        l: usize,
        pick: &[usize],
        causal: bool,
    ) -> Result<Vec<f32>> {
        if pick.len() != n || pick.iter().any(|&p| p >= l) {
            candle_core::bail!("one position per sequence, each below {l}");
        }
        let blocks: Vec<_> = self.blocks().collect();
        let Some((last, body)) = blocks.split_last() else {
            return Ok(picked(&x, l, x.len() / (n * l).max(1), pick));
        };
        let mask = if causal { Mask::Causal } else { Mask::None };
        for b in body {
            x = b.forward(&x, n, l, mask)?;
        }
        last.forward_at(&x, n, l, pick, causal)
    }

    /// [`Self::forward`] (causal, and `hidden` keys as `Mask::CausalHiding`'s, `[n * (len +
    /// 1)]`) for one new position `x` `[n, d]` of `n` sequences, b extending `cache`'s sequence
    /// `parent[b]` (none at the first step), whose earlier positions' keys and values `cache`
    /// holds; it then holds the `n` sequences'. `[n, d]`: the new positions' outputs, each
    /// equal to the full forward's row.
    pub fn step(
        &self,
        x: Vec<f32>,
        n: usize,
        cache: &mut KvCache,
        parent: &[usize],
        hidden: Option<&[bool]>,
    ) -> Result<Vec<f32>> {
        let d = x.len() / n.max(1);
        if x.len() != n * d || hidden.is_some_and(|h| h.len() != n * (cache.len() + 1)) {
            candle_core::bail!("a step takes one row of each of {n} sequences");
        }
        let mut x = x;
        cache.advance(n, parent, hidden, self.resblocks.len(), |i, past| {
            let (y, kv) = self.resblocks[i].step(&x, n, past)?;
            x = y;
            Ok(kv)
        })?;
        Ok(x)
    }

    /// A causal tower's [`Self::forward`], or [`Self::forward_at`] with `pick`, on `n`
    /// sequences of `l` rows whose first `p` rows are the same in all (a prompt template's
    /// words before the class name): those rows go through the blocks once, and every
    /// sequence's later rows read their keys and values. Each output row equals the unshared
    /// one's to the bit: rows never mix in the products, and a query's scores, softmax and
    /// value sums run over the same keys in the same order.
    pub fn forward_shared(
        &self,
        x: Vec<f32>,
        n: usize,
        l: usize,
        p: usize,
        pick: Option<&[usize]>,
    ) -> Result<Vec<f32>> {
        let d = x.len() / (n * l).max(1);
        if p == 0 || p >= l || n == 0 {
            candle_core::bail!("a shared prefix of {p} of {l} positions");
        }
        if pick.is_some_and(|pick| pick.len() != n || pick.iter().any(|&q| q >= l)) {
            candle_core::bail!("one position per sequence, each below {l}");
        }
        let s = l - p;
        // The prefix's rows once, then every sequence's rows after it: each block's products
        // run over all of them at once.
        let mut y: Vec<f32> = x[..p * d]
            .iter()
            .chain(x.chunks(l * d).flat_map(|seq| &seq[p * d..]))
            .copied()
            .collect();
        drop(x);
        let blocks: Vec<_> = self.blocks().collect();
        let shared = if pick.is_some() {
            blocks.len().saturating_sub(1)
        } else {
            blocks.len()
        };
        for b in &blocks[..shared] {
            y = b.forward_shared(&y, n, p, s)?;
        }
        let (xp, xs) = y.split_at(p * d);
        let x: Vec<f32> = xs
            .chunks(s * d)
            .flat_map(|seq| xp.iter().chain(seq))
            .copied()
            .collect();
        match (pick, blocks.last()) {
            (None, _) => Ok(x),
            (Some(pick), Some(last)) => last.forward_at(&x, n, l, pick, true),
            (Some(pick), None) => Ok(picked(&x, l, d, pick)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::random_vb;

    /// The last block computed for the first position only equals the full block's first row,
    /// whether that block is a standard one or (with nine layers or fewer) a LEFF one.
    #[test]
    fn first_position_path_matches_full_output() {
        let cfg = GemmConfig::detected();
        let (n, l, d) = (3, 10, 64);
        for layers in [4, 11] {
            let style = Style {
                family: Family::PyramidClip,
                activation: Activation::QuickGelu,
                mlp_width: None,
                layer_scale: false,
                timm_keys: false,
                eps: 1e-5,
            };
            let t = Transformer::new(d, layers, 2, Some(3), style, random_vb(1), cfg).unwrap();
            let x: Vec<f32> = (0..n * l * d)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
                .collect();
            let full = t.forward(x.clone(), n, l, Mask::None).unwrap();
            let first = t.forward_at(x, n, l, &[0; 3], false).unwrap();
            for b in 0..n {
                for c in 0..d {
                    let (a, f) = (full[b * l * d + c], first[b * d + c]);
                    assert!((a - f).abs() < 1e-4, "{layers} layers: {a} vs {f}");
                }
            }
        }
    }

    /// A causal tower's last block at one position per sequence (CLIP text's end-of-text
    /// token) gives exactly the full output's row there: its query sees the same keys, and
    /// the probabilities the full path sums past it are zeros. In f32 and, where the CPU has
    /// it, with bf16 products.
    #[test]
    fn picked_positions_match_the_full_causal_output() {
        let (n, l, d) = (4, 20, 64);
        let style = Style {
            family: Family::Clip,
            activation: Activation::Gelu,
            mlp_width: None,
            layer_scale: false,
            timm_keys: false,
            eps: 1e-5,
        };
        for cfg in super::super::bf16::configs_to_test() {
            let t = Transformer::new(d, 2, 2, None, style, random_vb(5), cfg).unwrap();
            let x: Vec<f32> = (0..n * l * d)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
                .collect();
            let full = t.forward(x.clone(), n, l, Mask::Causal).unwrap();
            // A first, a middle, the last position and one past a register band.
            let pick = [0, 7, l - 1, 15];
            let got = t.forward_at(x.clone(), n, l, &pick, true).unwrap();
            for (b, &p) in pick.iter().enumerate() {
                let want = &full[(b * l + p) * d..][..d];
                assert_eq!(&got[b * d..][..d], want, "bf16 {} sequence {b}", cfg.bf16);
            }
            assert!(t.forward_at(x, n, l, &[0, 1, l, 2], true).is_err());
        }
    }
}
