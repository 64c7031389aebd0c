//! Mirrors the reference's `Transformer` / `ResidualAttentionBlock` (CLIP's, with the blocks split
//! into `resblocks1` and `resblocks2`) and the LEFF MLP of the ViT's first nine blocks, and
//! CLIP's own (OpenAI / open_clip: `resblocks.N`, QuickGELU or GELU), in candle tensor ops.
//! Activations are batch-first `[N, L, D]`; the reference is sequence-first, the math is the
//! same.

use super::config::{Activation, Config, Family};
use super::fused;
use super::nn::{self, LayerNorm, Linear};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// The reference always puts the first nine blocks in `resblocks1`.
pub const FIRST_GROUP: usize = 9;

/// Which keys each query of the attention sees.
#[derive(Debug, Clone, Copy)]
pub enum Mask<'a> {
    /// Every key (the image towers).
    None,
    /// Position i sees positions <= i (the text towers).
    Causal,
    /// Added to the scores `[N, L, L]` (0 or -inf; CoCa's text, whose mask is per prompt).
    Add(&'a Tensor),
}

/// How a family lays out its transformer blocks, which activation its MLPs use, and
/// open_clip's variations of the block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Style {
    pub family: Family,
    pub activation: Activation,
    /// The MLPs' hidden width when it is not 4 x the width (open_clip's `mlp_ratio`).
    pub mlp_width: Option<usize>,
    /// open_clip's layer scale: each branch's output times a per-channel `gamma` (`ls_1`
    /// after attention, `ls_2` after the MLP), folded into the branch's last linear at load.
    pub layer_scale: bool,
    /// timm's key names (`blocks.N`: `norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`,
    /// `mlp.fc2`; SigLIP's image tower) instead of CLIP's (`resblocks.N`: `ln_1`,
    /// `attn.in_proj_*`, `attn.out_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`).
    pub timm_keys: bool,
    /// The LayerNorms' eps: torch's 1e-5, SigLIP's 1e-6.
    pub eps: f64,
}

// The eps is one of two literals, never NaN.
impl Eq for Style {}

impl Style {
    /// The text tower's: 4 x width MLPs (SigLIP's: its `mlp_ratio`), no layer scale.
    pub fn of(cfg: &Config) -> Self {
        Self {
            family: cfg.family,
            activation: cfg.activation,
            mlp_width: cfg.siglip.as_ref().and_then(|s| s.text_mlp_width),
            layer_scale: false,
            timm_keys: false,
            eps: if cfg.family == Family::Siglip {
                1e-6
            } else {
                1e-5
            },
        }
    }

    /// The image tower's, with its MLP width, layer scale, and for SigLIP timm's keys and
    /// its own activation.
    pub fn vision(cfg: &Config) -> Self {
        Self {
            mlp_width: cfg.vision_mlp_width,
            layer_scale: cfg.vision_layer_scale,
            activation: cfg
                .siglip
                .as_ref()
                .map_or(cfg.activation, |s| s.vision_activation),
            timm_keys: cfg.siglip.is_some(),
            ..Self::of(cfg)
        }
    }

    /// A block's key names: (first norm, attention's fused q/k/v, attention's output, second
    /// norm, MLP in, MLP out).
    pub fn keys(&self) -> BlockKeys {
        if self.timm_keys {
            BlockKeys {
                ln_1: "norm1",
                qkv: ("qkv", "weight", "bias"),
                out_proj: "proj",
                ln_2: "norm2",
                fc: "fc1",
                proj: "fc2",
            }
        } else {
            BlockKeys {
                ln_1: "ln_1",
                qkv: ("", "in_proj_weight", "in_proj_bias"),
                out_proj: "out_proj",
                ln_2: "ln_2",
                fc: "c_fc",
                proj: "c_proj",
            }
        }
    }

    /// Where the blocks are: timm's `blocks.N`, CLIP's `resblocks.N`.
    pub fn blocks(&self) -> &'static str {
        if self.timm_keys {
            "blocks"
        } else {
            "resblocks"
        }
    }

    pub fn mlp_width(&self, width: usize) -> usize {
        self.mlp_width.unwrap_or(4 * width)
    }

    /// A block's `ls_1` and `ls_2` gains under `vb`, when the style has layer scale.
    pub fn gains(&self, width: usize, vb: &VarBuilder) -> Result<[Option<Tensor>; 2]> {
        if !self.layer_scale {
            return Ok([None, None]);
        }
        let gamma = |k: &str| nn::load(&vb.pp(k), &[width], "gamma").map(Some);
        Ok([gamma("ls_1")?, gamma("ls_2")?])
    }
}

/// A transformer block's key names (see [`Style::keys`]).
#[derive(Debug, Clone, Copy)]
pub struct BlockKeys {
    pub ln_1: &'static str,
    /// (module, weight, bias): `attn.in_proj_weight` or `attn.qkv.weight`.
    pub qkv: (&'static str, &'static str, &'static str),
    pub out_proj: &'static str,
    pub ln_2: &'static str,
    pub fc: &'static str,
    pub proj: &'static str,
}

impl BlockKeys {
    /// The fused q/k/v projection's `[3 width, width]` weight and `[3 width]` bias under `vb`
    /// (the attention's).
    pub fn qkv(&self, width: usize, vb: &VarBuilder) -> Result<(Tensor, Tensor)> {
        let (m, w, b) = self.qkv;
        let at = if m.is_empty() { vb.clone() } else { vb.pp(m) };
        Ok((
            nn::load(&at, &[3 * width, width], w)?,
            nn::load(&at, &[3 * width], b)?,
        ))
    }
}

#[derive(Debug, Clone)]
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
    ) -> Result<Self> {
        if heads == 0 || !width.is_multiple_of(heads) {
            candle_core::bail!("width {width} does not split into {heads} attention heads");
        }
        let (w, b) = keys.qkv(width, &vb)?;
        Ok(Self {
            in_proj: Linear::from_parts(&w, Some(b), vb.dtype())?,
            out_proj: nn::linear_gain(width, width, vb.pp(keys.out_proj), gain)?,
            heads,
        })
    }

    /// From its fused q/k/v projection (`[3 width, width]`, queries, keys, values) and its
    /// output projection (an HF encoder's `query`, `key`, `value` and `output.dense`).
    pub fn from_parts(in_proj: Linear, out_proj: Linear, heads: usize) -> Self {
        Self {
            in_proj,
            out_proj,
            heads,
        }
    }

    /// `residual + attention(x)` over `[N, L, D]`, `x` in the products' dtype, the residual
    /// (and the result) f32.
    pub fn forward(&self, x: &Tensor, mask: Mask, residual: &Tensor) -> Result<Tensor> {
        let (q, k, v) = self.project(x)?;
        self.attend(&q, &k, &v, mask, residual)
    }

    /// [`Self::forward`] at one new position `x` `[N, 1, D]` whose earlier positions' keys
    /// and values are `past` (`[N, H, len, D / H]` each; none at the first): the result,
    /// and the keys and values with the new position's appended. `mask` over the `len + 1`
    /// keys (`[N, 1, len + 1]` when some are hidden).
    pub fn step(
        &self,
        x: &Tensor,
        past: Option<KeysValues>,
        mask: Mask,
        residual: &Tensor,
    ) -> Result<(Tensor, KeysValues)> {
        let (q, k, v) = self.project(x)?;
        let (k, v) = match past {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        let y = self.attend(&q, &k, &v, mask, residual)?;
        Ok((y, (k, v)))
    }

    /// The scaled queries, keys and values of `x` `[N, L, D]`, each `[N, H, L, D / H]`.
    fn project(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let hd = x.dim(D::Minus1)? / self.heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let qkv = self.in_proj.product(x)?;
        fused::qkv_split(&qkv, &self.in_proj.bias()?, self.heads, scale)
    }

    /// `residual + out_proj(softmax(q k^T + mask) v)`, `[N, Lq, D]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Mask,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let (n, h, l, hd) = q.dims4()?;
        let dt = self.in_proj.dtype();
        let scores = nn::matmul(q, &k.t()?, dt)?;
        let att = match mask {
            Mask::None => fused::softmax(&scores, false)?,
            Mask::Causal => fused::softmax(&scores, true)?,
            Mask::Add(m) => {
                let m = m.unsqueeze(1)?.to_dtype(scores.dtype())?;
                fused::softmax(&scores.broadcast_add(&m)?, false)?
            }
        };
        let out = nn::matmul(&att, v, dt)?
            .transpose(1, 2)?
            .reshape((n, l, h * hd))?;
        self.out_proj.forward_residual(&out, residual)
    }

    /// The products' dtype.
    pub fn dtype(&self) -> DType {
        self.in_proj.dtype()
    }
}

/// CLIP's MLP: c_fc -> QuickGELU (or GELU) -> c_proj.
#[derive(Debug, Clone)]
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
    ) -> Result<Self> {
        Ok(Self {
            c_fc: nn::linear(width, hidden, vb.pp(keys.fc))?,
            c_proj: nn::linear_gain(hidden, width, vb.pp(keys.proj), gain)?,
            act,
        })
    }
}

impl Mlp {
    /// `residual + c_proj(act(c_fc(x)))`, `x` in the products' dtype, the residual f32.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let h = self.c_fc.forward_act(x, nn::act_of(self.act))?;
        self.c_proj.forward_residual(&h, residual)
    }
}

/// LEFF: the patch tokens go through linear -> BN -> QuickGELU -> depthwise 3x3 conv -> BN ->
/// QuickGELU -> linear -> BN -> QuickGELU on their g x g grid; the class token passes unchanged.
/// The BatchNorms are folded into the layer before them at load.
#[derive(Debug, Clone)]
pub struct Leff {
    linear1: Linear,
    /// Depthwise taps `[9, C]` (row-major 3x3, channels-last) and bias `[C]`, f32.
    dep_conv: (Tensor, Tensor),
    linear2: Linear,
    grid: usize,
}

impl Leff {
    pub fn new(width: usize, grid: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = 4 * width;
        Ok(Self {
            linear1: nn::linear_bn(width, hidden, vb.pp("linear1"), vb.pp("ac1").pp("bn"))?,
            dep_conv: nn::fold_depthwise_bn(hidden, vb.pp("depConv"))?,
            linear2: nn::linear_bn(hidden, width, vb.pp("linear2"), vb.pp("ac2").pp("bn"))?,
            grid,
        })
    }
}

impl Module for Leff {
    /// `y`: the f32 LayerNorm output; the class token passes through in f32, as the reference's
    /// `cat` under autocast keeps it.
    fn forward(&self, y: &Tensor) -> Result<Tensor> {
        let (n, l, _) = y.dims3()?;
        let g = self.grid;
        let cls = y.narrow(1, 0, 1)?;
        let p = y.narrow(1, 1, l - 1)?;
        let h = self.linear1.forward_act(&p, fused::Act::QuickGelu)?;
        let c = h.dim(D::Minus1)?;
        let (taps, bias) = &self.dep_conv;
        let h = fused::depthwise_gelu(&h.reshape((n, g, g, c))?, taps, bias)?;
        let h = self
            .linear2
            .forward_act(&h.reshape((n, g * g, c))?, fused::Act::QuickGelu)?;
        Tensor::cat(&[cls, h.to_dtype(DType::F32)?], 1)
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
        style: Style,
        vb: VarBuilder,
    ) -> Result<Self> {
        let [ls_1, ls_2] = style.gains(width, &vb)?;
        let keys = style.keys();
        let mlp = match leff_grid {
            Some(g) => BlockMlp::Leff(Leff::new(width, g, vb.pp("mlp"))?),
            None => BlockMlp::Standard(Mlp::new(
                width,
                style.mlp_width(width),
                style.activation,
                ls_2.as_ref(),
                keys,
                vb.pp("mlp"),
            )?),
        };
        Ok(Self {
            ln_1: nn::layer_norm_eps(width, style.eps, vb.pp(keys.ln_1))?,
            attn: MultiheadAttention::new(width, heads, ls_1.as_ref(), keys, vb.pp("attn"))?,
            ln_2: nn::layer_norm_eps(width, style.eps, vb.pp(keys.ln_2))?,
            mlp,
        })
    }

    /// `x`: the f32 residual stream `[N, L, D]`.
    pub fn forward(&self, x: &Tensor, mask: Mask) -> Result<Tensor> {
        let dt = self.attn.dtype();
        let x = self.attn.forward(&self.ln_1.forward_to(x, dt)?, mask, x)?;
        self.mlp(x)
    }

    /// [`Self::forward`] of a causal block at one new position `x` `[N, 1, D]` (see
    /// [`MultiheadAttention::step`]): its output and the keys and values so far.
    pub fn step(
        &self,
        x: &Tensor,
        past: Option<KeysValues>,
        mask: Mask,
    ) -> Result<(Tensor, KeysValues)> {
        let dt = self.attn.dtype();
        let (x, kv) = self
            .attn
            .step(&self.ln_1.forward_to(x, dt)?, past, mask, x)?;
        Ok((self.mlp(x)?, kv))
    }

    /// `x + mlp(ln_2(x))`.
    fn mlp(&self, x: Tensor) -> Result<Tensor> {
        let dt = self.attn.dtype();
        match &self.mlp {
            BlockMlp::Standard(m) => m.forward_residual(&self.ln_2.forward_to(&x, dt)?, &x),
            BlockMlp::Leff(m) => {
                let y = m.forward(&self.ln_2.forward(&x)?)?;
                x + y
            }
        }
    }
}

/// One attention layer's keys and values, `[N, H, len, D / H]` each.
pub type KeysValues = (Tensor, Tensor);

/// The keys and values each block of a causal stack computed at the positions of `n`
/// sequences so far: what stepwise decoding keeps so that a step runs only its new position
/// through the blocks.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<KeysValues>,
    n: usize,
    len: usize,
}

/// A step of `n` sequences, b extending cached sequence `parent[b]`, against a cache of
/// `cached` (sequences, positions) whose blocks are the stack's (`layers_fit`): no parents
/// for an empty cache, else one in range per sequence. Both engines' caches check so.
pub fn check_parents(
    n: usize,
    parent: &[usize],
    (sequences, len): (usize, usize),
    layers_fit: bool,
) -> Result<()> {
    let fits = match len {
        0 => parent.is_empty(),
        _ => parent.len() == n && parent.iter().all(|&p| p < sequences) && layers_fit,
    };
    if !fits {
        candle_core::bail!(
            "{} parents of {n} sequences for a cache of {sequences} sequences of {len} positions",
            parent.len()
        );
    }
    Ok(())
}

impl KvCache {
    /// Positions cached per sequence.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One step of `layers` blocks for `n` sequences, sequence b extending cached sequence
    /// `parent[b]` (no parents at the first step): `block(i, past)` gives block i's keys and
    /// values from its cached ones, gathered by parent. Parents that do not fit leave the
    /// cache as it was; an error of a block leaves it empty.
    pub fn advance(
        &mut self,
        n: usize,
        parent: &[usize],
        layers: usize,
        device: &Device,
        mut block: impl FnMut(usize, Option<KeysValues>) -> Result<KeysValues>,
    ) -> Result<()> {
        let len = self.len;
        check_parents(n, parent, (self.n, len), self.layers.len() == layers)?;
        // Beams that keep their places (most steps of a settled search) need no gather.
        let kept = n == self.n && parent.iter().enumerate().all(|(b, &p)| b == p);
        let idx = match len > 0 && !kept {
            true => {
                let idx: Vec<u32> = parent.iter().map(|&p| p as u32).collect();
                Some(Tensor::from_vec(idx, n, device)?)
            }
            false => None,
        };
        let mut cached = std::mem::take(self).layers.into_iter();
        let mut next = Vec::with_capacity(layers);
        for i in 0..layers {
            let past = match (cached.next(), &idx) {
                (Some((k, v)), Some(idx)) => {
                    Some((k.index_select(idx, 0)?, v.index_select(idx, 0)?))
                }
                (old, _) => old,
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
#[derive(Debug, Clone)]
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
    ) -> Result<Self> {
        let block = |i: usize, group: &str, grid: Option<usize>| {
            ResidualAttentionBlock::new(width, heads, grid, style, vb.pp(group).pp(i))
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

    pub fn forward(&self, x: &Tensor, mask: Mask) -> Result<Tensor> {
        let mut x = x.clone();
        for b in &self.resblocks {
            x = b.forward(&x, mask)?;
        }
        Ok(x)
    }

    /// [`Self::forward`] of a causal stack (`mask` the new position's over its `len + 1`
    /// keys, [`Mask::None`] where it sees them all) for one new position `x` `[n, 1, D]` of
    /// `n` sequences, b extending `cache`'s sequence `parent[b]` (none at the first step);
    /// `cache` then holds the `n` sequences'. `[n, 1, D]`: the new positions' outputs.
    pub fn step(
        &self,
        x: &Tensor,
        cache: &mut KvCache,
        parent: &[usize],
        mask: Mask,
    ) -> Result<Tensor> {
        let n = x.dim(0)?;
        let device = x.device().clone();
        let mut x = x.clone();
        let blocks = &self.resblocks;
        cache.advance(n, parent, blocks.len(), &device, |i, past| {
            let (y, kv) = blocks[i].step(&x, past, mask)?;
            x = y;
            Ok(kv)
        })?;
        Ok(x)
    }
}
