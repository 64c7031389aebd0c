//! Mirrors timm's `FastVit` (the MCi trunks of open_clip's MobileCLIP-S* / MobileCLIP2-S*
//! models: `TimmModel` with `timm_pool: avg` and the trunk's `head.fc` as the projection) in
//! candle tensor ops, on NCHW activations in f32: the MobileOne stem, stages of RepMixer blocks
//! or (with the conditional positional encoding first) attention blocks, each stage after the
//! first opened by a strided large-kernel downsampling, the final MobileOne conv with SE, the
//! average pool, then `head.fc`. Every re-parameterisable convolution (MobileOne's branches,
//! RepMixer, the large kernel with its small one, the positional encoding) is folded into one
//! convolution with a bias at load, as timm's `reparameterize` does; a checkpoint saved after
//! `reparameterize` (`reparam_conv`) loads as it is. The folds are what both engines share.

use super::config::{Config, FastVitTower, FASTVIT_HEAD_DIM};
pub use super::conv::{Conv, Folded};
use super::nn::{self, LayerNorm, Linear};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// BatchNorm's and LayerNorm2d's eps.
const EPS: f64 = 1e-5;
/// The attention's head width (timm's `head_dim`).
pub const HEAD_DIM: usize = FASTVIT_HEAD_DIM;

/// A kernel `[c, c / groups, k, k]` that passes each channel through (1 at its own input's
/// centre tap), as timm's `id_tensor`.
fn identity(c: usize, groups: usize, k: usize, dev: &Device) -> Result<Tensor> {
    let per = c / groups.max(1);
    let mut v = vec![0f32; c * per * k * k];
    for i in 0..c {
        v[((i * per + i % per) * k + k / 2) * k + k / 2] = 1.0;
    }
    Tensor::from_vec(v, (c, per, k, k), dev)
}

/// `kernel * gamma / std` and `beta - mean * gamma / std` of a branch's BatchNorm under `vb`.
fn bn_fold(kernel: &Tensor, vb: VarBuilder) -> Result<(Tensor, Tensor)> {
    let c = kernel.dim(0)?;
    let (scale, shift) = nn::batch_norm(c, vb)?;
    Ok((kernel.broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?, shift))
}

/// A conv then its BatchNorm (timm's `ConvNormAct` without act, `conv` and `bn`), folded.
fn conv_bn(
    vb: &VarBuilder,
    c_in: usize,
    c_out: usize,
    k: usize,
    groups: usize,
) -> Result<(Tensor, Tensor)> {
    let w = nn::load(&vb.pp("conv"), &[c_out, c_in / groups, k, k], "weight")?;
    bn_fold(&w, vb.pp("bn"))
}

/// Pads a `[o, i, s, s]` kernel with zeros to `k` x `k` around its centre.
fn pad_to(w: &Tensor, k: usize) -> Result<Tensor> {
    let s = w.dim(3)?;
    let p = (k - s) / 2;
    w.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)
}

/// A folded conv saved by `reparameterize` (`reparam_conv`), if the checkpoint has one.
fn reparam(vb: &VarBuilder, shape: [usize; 4]) -> Result<Option<(Tensor, Tensor)>> {
    let r = vb.pp("reparam_conv");
    if !r.contains_tensor("weight") {
        return Ok(None);
    }
    Ok(Some((
        nn::load(&r, &shape, "weight")?,
        nn::load(&r, &[shape[0]], "bias")?,
    )))
}

/// The shape of MobileOne's sum: which branches a block has (timm's `MobileOneBlock`).
#[derive(Debug, Clone, Copy)]
pub struct MobileOne {
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub groups: usize,
    /// The 1x1 branch (`conv_scale`) where k > 1.
    pub scale_branch: bool,
    /// The `conv_kxk` branches.
    pub conv_branches: usize,
}

impl MobileOne {
    /// The block's branches summed into one conv: `conv_kxk` and `conv_scale` (padded to k)
    /// with their BatchNorms, and the BatchNorm skip (`identity`) where the input passes
    /// through (same width, stride 1).
    pub fn fold(&self, vb: &VarBuilder) -> Result<Folded> {
        let (ci, co, k, g) = (self.c_in, self.c_out, self.k, self.groups);
        let folded = |(weight, bias)| Folded {
            weight,
            bias,
            stride: self.stride,
            groups: g,
        };
        if let Some(wb) = reparam(vb, [co, ci / g, k, k])? {
            return Ok(folded(wb));
        }
        let mut w = Tensor::zeros((co, ci / g, k, k), DType::F32, vb.device())?;
        let mut b = Tensor::zeros(co, DType::F32, vb.device())?;
        for i in 0..self.conv_branches {
            let (kw, kb) = conv_bn(&vb.pp("conv_kxk").pp(i), ci, co, k, g)?;
            (w, b) = ((w + kw)?, (b + kb)?);
        }
        if self.scale_branch && k > 1 {
            let (kw, kb) = conv_bn(&vb.pp("conv_scale"), ci, co, 1, g)?;
            (w, b) = ((w + pad_to(&kw, k)?)?, (b + kb)?);
        }
        if ci == co && self.stride == 1 {
            let (kw, kb) = bn_fold(&identity(co, g, k, vb.device())?, vb.pp("identity"))?;
            (w, b) = ((w + kw)?, (b + kb)?);
        }
        Ok(folded((w, b)))
    }
}

/// timm's `ReparamLargeKernelConv` (the downsampling's grouped 7x7 with its 3x3), folded.
pub fn large_kernel(vb: &VarBuilder, c_in: usize, c_out: usize, groups: usize) -> Result<Folded> {
    let shape = [c_out, c_in / groups, 7, 7];
    let (weight, bias) = match reparam(vb, shape)? {
        Some(wb) => wb,
        None => {
            let (lw, lb) = conv_bn(&vb.pp("large_conv"), c_in, c_out, 7, groups)?;
            let (sw, sb) = conv_bn(&vb.pp("small_conv"), c_in, c_out, 3, groups)?;
            ((lw + pad_to(&sw, 7)?)?, (lb + sb)?)
        }
    };
    Ok(Folded {
        weight,
        bias,
        stride: 2,
        groups,
    })
}

/// timm's `RepMixer`: `x + gamma * (mixer(x) - norm(x))` as one depthwise 3x3 conv.
pub fn rep_mixer(vb: &VarBuilder, dim: usize) -> Result<Folded> {
    let depthwise = |(weight, bias): (Tensor, Tensor)| Folded {
        weight,
        bias,
        stride: 1,
        groups: dim,
    };
    if let Some(wb) = reparam(vb, [dim, 1, 3, 3])? {
        return Ok(depthwise(wb));
    }
    let block = |scale_branch, conv_branches| MobileOne {
        c_in: dim,
        c_out: dim,
        k: 3,
        stride: 1,
        groups: dim,
        scale_branch,
        conv_branches,
    };
    let mixer = block(true, 1).fold(&vb.pp("mixer"))?;
    let norm = block(false, 0).fold(&vb.pp("norm"))?;
    let gamma = nn::load(&vb.pp("layer_scale"), &[dim, 1, 1], "gamma")?.flatten_all()?;
    let w = (identity(dim, dim, 3, vb.device())?
        + (mixer.weight - norm.weight)?.broadcast_mul(&gamma.reshape((dim, 1, 1, 1))?)?)?;
    let b = (mixer.bias - norm.bias)?.mul(&gamma)?;
    Ok(depthwise((w, b)))
}

/// timm's `RepConditionalPosEnc`: `x + pos_enc(x)` as one depthwise 7x7 conv.
pub fn rep_cpe(vb: &VarBuilder, dim: usize) -> Result<Folded> {
    let (weight, bias) = match reparam(vb, [dim, 1, 7, 7])? {
        Some(wb) => wb,
        None => {
            let p = vb.pp("pos_enc");
            let w = nn::load(&p, &[dim, 1, 7, 7], "weight")?;
            (
                (w + identity(dim, dim, 7, vb.device())?)?,
                nn::load(&p, &[dim], "bias")?,
            )
        }
    };
    Ok(Folded {
        weight,
        bias,
        stride: 1,
        groups: dim,
    })
}

/// timm's `SEModule` (`fc1`, ReLU, `fc2`, sigmoid gate) as `[out, in]` weights and biases.
#[derive(Debug, Clone)]
pub struct SeParts {
    pub fc1: (Tensor, Tensor),
    pub fc2: (Tensor, Tensor),
}

/// timm's `make_divisible(c * ratio, divisor, round_limit=0)`: the SE's reduced width.
pub fn se_width(c: usize, ratio: f64, divisor: usize) -> usize {
    let v = c as f64 * ratio;
    divisor.max((v + divisor as f64 / 2.0) as usize / divisor * divisor)
}

fn se(vb: &VarBuilder, c: usize, rd: usize) -> Result<SeParts> {
    let fc = |k: &str, o: usize, i: usize| -> Result<(Tensor, Tensor)> {
        let v = vb.pp("se").pp(k);
        Ok((
            nn::load(&v, &[o, i, 1, 1], "weight")?.reshape((o, i))?,
            nn::load(&v, &[o], "bias")?,
        ))
    };
    Ok(SeParts {
        fc1: fc("fc1", rd, c)?,
        fc2: fc("fc2", c, rd)?,
    })
}

/// A folded conv, optionally gated by SE, then GELU where `act`.
#[derive(Debug, Clone)]
pub struct ConvParts {
    pub conv: Folded,
    pub se: Option<SeParts>,
    pub act: bool,
}

/// The norm before an attention block: BatchNorm (folded into the q/k/v product) or
/// LayerNorm over the channels (`LayerNorm2d`, MCi3 / MCi4).
#[derive(Debug, Clone)]
pub enum AttnNorm {
    Folded,
    Layer(Tensor, Tensor),
}

/// An attention block's weights: the norm, `qkv` (bias-free in timm; BatchNorm's shift folded
/// in as a bias), `proj` with `layer_scale_1` folded in.
#[derive(Debug, Clone)]
pub struct AttnParts {
    pub norm: AttnNorm,
    pub qkv: (Tensor, Tensor),
    pub proj: (Tensor, Tensor),
    pub heads: usize,
}

/// timm's `ConvMlp` with the block's layer scale: the folded depthwise 7x7 conv, `fc1`,
/// GELU, `fc2` with the layer scale folded in (`[out, in]` weights).
#[derive(Debug, Clone)]
pub struct MlpParts {
    pub conv: Folded,
    pub fc1: (Tensor, Tensor),
    pub fc2: (Tensor, Tensor),
}

/// A FastViT block: RepMixer's folded conv, or attention; then the MLP.
#[derive(Debug, Clone)]
pub enum Mixer {
    Conv(Folded),
    Attention(AttnParts),
}

#[derive(Debug, Clone)]
pub struct BlockParts {
    pub mixer: Mixer,
    pub mlp: MlpParts,
}

#[derive(Debug, Clone)]
pub struct StageParts {
    /// The large-kernel conv (with SE where the stage has it) and MobileOne's 1x1, GELU after
    /// each.
    pub downsample: Option<(ConvParts, ConvParts)>,
    pub pos_emb: Option<Folded>,
    pub blocks: Vec<BlockParts>,
}

/// Every weight of a FastViT trunk folded, as both engines build it: stem, stages, the final
/// conv, and `head.fc`.
#[derive(Debug, Clone)]
pub struct Parts {
    pub stem: Vec<ConvParts>,
    pub stages: Vec<StageParts>,
    pub final_conv: ConvParts,
    pub head: (Tensor, Tensor),
}

fn gamma(vb: &VarBuilder, k: &str, d: usize) -> Result<Tensor> {
    nn::load(&vb.pp(k), &[d, 1, 1], "gamma")?.flatten_all()
}

fn linear1x1(vb: &VarBuilder, o: usize, i: usize) -> Result<(Tensor, Tensor)> {
    Ok((
        nn::load(vb, &[o, i, 1, 1], "weight")?.reshape((o, i))?,
        nn::load(vb, &[o], "bias")?,
    ))
}

fn mlp(vb: &VarBuilder, d: usize, hidden: usize, scale: Tensor) -> Result<MlpParts> {
    let (cw, cb) = conv_bn(&vb.pp("conv"), d, d, 7, d)?;
    let (w2, b2) = linear1x1(&vb.pp("fc2"), d, hidden)?;
    Ok(MlpParts {
        conv: Folded {
            weight: cw,
            bias: cb,
            stride: 1,
            groups: d,
        },
        fc1: linear1x1(&vb.pp("fc1"), hidden, d)?,
        fc2: (w2.broadcast_mul(&scale.unsqueeze(1)?)?, b2.mul(&scale)?),
    })
}

fn attention(vb: &VarBuilder, d: usize, layer_norm: bool) -> Result<AttnParts> {
    let a = vb.pp("token_mixer");
    let qkv_w = nn::load(&a.pp("qkv"), &[3 * d, d], "weight")?;
    let (norm, qkv) = if layer_norm {
        let n = vb.pp("norm");
        let ln = (nn::load(&n, &[d], "weight")?, nn::load(&n, &[d], "bias")?);
        let zeros = Tensor::zeros(3 * d, DType::F32, vb.device())?;
        (AttnNorm::Layer(ln.0, ln.1), (qkv_w, zeros))
    } else {
        // qkv(x * s + t) = (W * s) x + W t.
        let (s, t) = nn::batch_norm(d, vb.pp("norm"))?;
        let b = qkv_w.matmul(&t.unsqueeze(1)?)?.squeeze(1)?;
        (
            AttnNorm::Folded,
            (qkv_w.broadcast_mul(&s.unsqueeze(0)?)?, b),
        )
    };
    let scale = gamma(vb, "layer_scale_1", d)?;
    let p = a.pp("proj");
    let (pw, pb) = (
        nn::load(&p, &[d, d], "weight")?,
        nn::load(&p, &[d], "bias")?,
    );
    Ok(AttnParts {
        norm,
        qkv,
        proj: (pw.broadcast_mul(&scale.unsqueeze(1)?)?, pb.mul(&scale)?),
        heads: d / HEAD_DIM,
    })
}

impl Parts {
    /// `vb`: the trunk (`visual.trunk`).
    pub fn load(f: &FastVitTower, embed_dim: usize, vb: &VarBuilder) -> Result<Self> {
        let d0 = f.dims[0];
        let mobile = |c_in, c_out, k, stride, groups| MobileOne {
            c_in,
            c_out,
            k,
            stride,
            groups,
            scale_branch: true,
            conv_branches: 1,
        };
        let plain = |conv| ConvParts {
            conv,
            se: None,
            act: true,
        };
        let st = vb.pp("stem");
        let stem = vec![
            plain(
                MobileOne {
                    scale_branch: f.stem_scale_branch,
                    ..mobile(3, d0, 3, 2, 1)
                }
                .fold(&st.pp(0))?,
            ),
            plain(
                MobileOne {
                    scale_branch: f.stem_scale_branch,
                    ..mobile(d0, d0, 3, 2, d0)
                }
                .fold(&st.pp(1))?,
            ),
            plain(mobile(d0, d0, 1, 1, 1).fold(&st.pp(2))?),
        ];
        let mut stages = Vec::with_capacity(f.depths.len());
        let mut prev = d0;
        for (i, &d) in f.dims.iter().enumerate() {
            let sv = vb.pp("stages").pp(i);
            let downsample = (i > 0 || prev != d)
                .then(|| -> Result<_> {
                    let p = sv.pp("downsample").pp("proj");
                    let lk = p.pp(0);
                    Ok((
                        ConvParts {
                            conv: large_kernel(&lk, prev, d, prev)?,
                            se: f.se[i]
                                .then(|| se(&lk, d, se_width(d, 0.25, 8)))
                                .transpose()?,
                            act: true,
                        },
                        plain(mobile(d, d, 1, 1, 1).fold(&p.pp(1))?),
                    ))
                })
                .transpose()?;
            let pos_emb = f.attention[i]
                .then(|| rep_cpe(&sv.pp("pos_emb"), d))
                .transpose()?;
            let hidden = d * f.mlp_ratio;
            let blocks = (0..f.depths[i])
                .map(|j| -> Result<BlockParts> {
                    let bv = sv.pp("blocks").pp(j);
                    Ok(if f.attention[i] {
                        BlockParts {
                            mixer: Mixer::Attention(attention(&bv, d, f.layer_norm)?),
                            mlp: mlp(&bv.pp("mlp"), d, hidden, gamma(&bv, "layer_scale_2", d)?)?,
                        }
                    } else {
                        BlockParts {
                            mixer: Mixer::Conv(rep_mixer(&bv.pp("token_mixer"), d)?),
                            mlp: mlp(&bv.pp("mlp"), d, hidden, gamma(&bv, "layer_scale", d)?)?,
                        }
                    })
                })
                .collect::<Result<_>>()?;
            stages.push(StageParts {
                downsample,
                pos_emb,
                blocks,
            });
            prev = d;
        }
        let last = prev;
        let fv = vb.pp("final_conv");
        let final_conv = ConvParts {
            conv: mobile(last, 2 * last, 3, 1, last).fold(&fv)?,
            se: Some(se(&fv, 2 * last, se_width(2 * last, 1.0 / 16.0, 1))?),
            act: true,
        };
        let h = vb.pp("head").pp("fc");
        let head = (
            nn::load(&h, &[embed_dim, 2 * last], "weight")?,
            nn::load(&h, &[embed_dim], "bias")?,
        );
        Ok(Self {
            stem,
            stages,
            final_conv,
            head,
        })
    }
}

// ---- the candle engine ----

/// SE on NCHW f32: `x * sigmoid(fc2(relu(fc1(mean(x)))))`.
#[derive(Debug, Clone)]
struct Se {
    fc1: Linear,
    fc2: Linear,
}

impl Se {
    fn new(p: &SeParts) -> Result<Self> {
        Ok(Self {
            fc1: Linear::from_parts(&p.fc1.0, Some(p.fc1.1.clone()), DType::F32)?,
            fc2: Linear::from_parts(&p.fc2.0, Some(p.fc2.1.clone()), DType::F32)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let s = x.mean((2, 3))?;
        let s = self.fc1.forward(&s)?.relu()?;
        let s = candle_nn::ops::sigmoid(&self.fc2.forward(&s)?)?;
        x.broadcast_mul(&s.reshape((n, c, 1, 1))?)
    }
}

#[derive(Debug, Clone)]
struct ConvAct {
    conv: Conv,
    se: Option<Se>,
    act: bool,
}

impl ConvAct {
    fn new(p: &ConvParts, dt: DType) -> Result<Self> {
        Ok(Self {
            conv: Conv::new(&p.conv, dt)?,
            se: p.se.as_ref().map(Se::new).transpose()?,
            act: p.act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = self.conv.forward(x)?;
        if let Some(se) = &self.se {
            y = se.forward(&y)?;
        }
        if self.act {
            y = y.gelu_erf()?;
        }
        Ok(y)
    }
}

/// A `[out, in]` product over the channels of NCHW f32 (a 1x1 conv), f32 out.
fn channels(l: &Linear, x: &Tensor) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let rows = x.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
    let y = l.forward_f32(&rows.to_dtype(l.dtype())?)?;
    y.transpose(1, 2)?.reshape((n, (), h, w))
}

#[derive(Debug, Clone)]
struct Mlp {
    conv: Conv,
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(p: &MlpParts, dt: DType) -> Result<Self> {
        Ok(Self {
            conv: Conv::new(&p.conv, dt)?,
            fc1: Linear::from_parts(&p.fc1.0, Some(p.fc1.1.clone()), dt)?,
            fc2: Linear::from_parts(&p.fc2.0, Some(p.fc2.1.clone()), dt)?,
        })
    }

    /// `x + gamma * fc2(gelu(fc1(conv(x))))`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv.forward(x)?;
        let h = channels(&self.fc1, &h)?.gelu_erf()?;
        x + channels(&self.fc2, &h)?
    }
}

#[derive(Debug, Clone)]
struct Attention {
    norm: Option<LayerNorm>,
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn new(p: &AttnParts, dt: DType) -> Result<Self> {
        Ok(Self {
            norm: match &p.norm {
                AttnNorm::Folded => None,
                AttnNorm::Layer(w, b) => Some(LayerNorm::from_parts(w, b, EPS)?),
            },
            qkv: Linear::from_parts(&p.qkv.0, Some(p.qkv.1.clone()), dt)?,
            proj: Linear::from_parts(&p.proj.0, Some(p.proj.1.clone()), dt)?,
            heads: p.heads,
        })
    }

    /// `x + gamma * proj(attention(norm(x)))` on NCHW f32.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let l = h * w;
        let rows = x.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let dt = self.qkv.dtype();
        let normed = match &self.norm {
            Some(ln) => ln.forward_to(&rows, dt)?,
            None => rows.to_dtype(dt)?,
        };
        let qkv = self.qkv.forward_f32(&normed)?;
        let qkv = qkv
            .reshape((n, l, 3, self.heads, HEAD_DIM))?
            .permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let q = (q * (1.0 / (HEAD_DIM as f64).sqrt()))?
            .to_dtype(dt)?
            .contiguous()?;
        let k = k.to_dtype(dt)?.contiguous()?;
        let v = v.to_dtype(dt)?.contiguous()?;
        let scores = nn::matmul(&q, &k.t()?, dt)?;
        let att = super::fused::softmax(&scores, false)?;
        let out = nn::matmul(&att, &v, dt)?
            .transpose(1, 2)?
            .reshape((n, l, c))?;
        let out = self.proj.forward_f32(&out)?;
        x + out.transpose(1, 2)?.reshape((n, c, h, w))?
    }
}

#[derive(Debug, Clone)]
enum Block {
    RepMixer(Conv, Mlp),
    Attention(Attention, Mlp),
}

#[derive(Debug, Clone)]
struct Stage {
    downsample: Option<(ConvAct, ConvAct)>,
    pos_emb: Option<Conv>,
    blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
pub struct FastVit {
    stem: Vec<ConvAct>,
    stages: Vec<Stage>,
    final_conv: ConvAct,
    head: Linear,
}

impl FastVit {
    /// `vb`: the trunk (`visual.trunk`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let Some(f) = &cfg.vision_fastvit else {
            candle_core::bail!("a FastViT image tower needs a `vision_fastvit` section")
        };
        let dt = vb.dtype();
        let p = Parts::load(f, cfg.embed_dim, &vb)?;
        let stages = p
            .stages
            .iter()
            .map(|s| -> Result<Stage> {
                Ok(Stage {
                    downsample: s
                        .downsample
                        .as_ref()
                        .map(|(a, b)| -> Result<_> {
                            Ok((ConvAct::new(a, dt)?, ConvAct::new(b, dt)?))
                        })
                        .transpose()?,
                    pos_emb: s.pos_emb.as_ref().map(|c| Conv::new(c, dt)).transpose()?,
                    blocks: s
                        .blocks
                        .iter()
                        .map(|b| -> Result<Block> {
                            let mlp = Mlp::new(&b.mlp, dt)?;
                            Ok(match &b.mixer {
                                Mixer::Conv(c) => Block::RepMixer(Conv::new(c, dt)?, mlp),
                                Mixer::Attention(a) => {
                                    Block::Attention(Attention::new(a, dt)?, mlp)
                                }
                            })
                        })
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            // The pixels stay f32 (as the other towers' stems).
            stem: p
                .stem
                .iter()
                .enumerate()
                .map(|(i, c)| ConvAct::new(c, if i == 0 { DType::F32 } else { dt }))
                .collect::<Result<_>>()?,
            stages,
            final_conv: ConvAct::new(&p.final_conv, dt)?,
            head: Linear::from_parts(&p.head.0, Some(p.head.1.clone()), DType::F32)?,
        })
    }
}

impl Module for FastVit {
    /// `x`: `[N, 3, R, R]` normalised pixels -> `[N, embed_dim]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.to_dtype(DType::F32)?;
        for c in &self.stem {
            x = c.forward(&x)?;
        }
        for s in &self.stages {
            if let Some((a, b)) = &s.downsample {
                x = b.forward(&a.forward(&x)?)?;
            }
            if let Some(p) = &s.pos_emb {
                x = p.forward(&x)?;
            }
            for b in &s.blocks {
                x = match b {
                    Block::RepMixer(conv, mlp) => mlp.forward(&conv.forward(&x)?)?,
                    Block::Attention(att, mlp) => mlp.forward(&att.forward(&x)?)?,
                };
            }
        }
        let x = self.final_conv.forward(&x)?;
        self.head.forward(&x.mean((2, 3))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// timm's `make_divisible` as the SE widths use it: MobileOne's (1/16, divisor 1) and the
    /// large kernel's (1/4, divisor 8).
    #[test]
    fn se_widths_follow_make_divisible() {
        assert_eq!(se_width(1024, 1.0 / 16.0, 1), 64);
        assert_eq!(se_width(1280, 1.0 / 16.0, 1), 80);
        assert_eq!(se_width(256, 0.25, 8), 64);
        assert_eq!(se_width(20, 0.25, 8), 8);
        assert_eq!(se_width(8, 1.0 / 16.0, 1), 1);
    }

    /// The per-tap grouped convolution (depthwise and with a channel multiplier, strides 1
    /// and 2, odd and even sizes) equals candle's grouped `conv2d` plus the bias.
    #[test]
    fn per_tap_convolution_equals_candles_grouped_conv() {
        let dev = Device::Cpu;
        for &(c, co, k, s, h, w) in &[
            (4, 4, 3, 1, 5, 6),
            (4, 4, 7, 1, 9, 8),
            (4, 4, 3, 2, 7, 8),
            (4, 8, 7, 2, 9, 10),
            (4, 8, 3, 1, 5, 5),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &dev).unwrap();
            let weight = Tensor::randn(0f32, 1.0, (co, 1, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
            let conv = Conv::new(
                &Folded {
                    weight: weight.clone(),
                    bias: bias.clone(),
                    stride: s,
                    groups: c,
                },
                DType::F32,
            )
            .unwrap();
            let got = conv.forward(&x).unwrap();
            let want = x
                .conv2d(&weight, k / 2, s, 1, c)
                .unwrap()
                .broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(got.dims(), want.dims(), "{c} {co} {k} {s} {h} {w}");
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "{c} {co} {k} {s} {h} {w}: {diff}");
        }
    }

    /// The identity kernel passes each channel through its own group's centre tap.
    #[test]
    fn identity_kernel_is_the_centre_tap() {
        let id = identity(4, 2, 3, &Device::Cpu).unwrap();
        let v = id.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // [4, 2, 3, 3]: channel i's centre at input i % 2.
        for i in 0..4 {
            for j in 0..2 {
                for t in 0..9 {
                    let want = if j == i % 2 && t == 4 { 1.0 } else { 0.0 };
                    assert_eq!(v[(i * 2 + j) * 9 + t], want, "{i} {j} {t}");
                }
            }
        }
    }
}
