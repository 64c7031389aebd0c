//! Mirrors timm's `Eva` as open_clip's EVA models build it (`TimmModel` with `timm_pool: token`
//! and the trunk's own head as the projection) in candle tensor ops: the patch conv with its
//! bias, the class token, the positional embedding, the blocks (EVA01's and EVA02-E's fused
//! q/k/v with GELU MLPs, EVA02-E's post-norm; EVA02's separate q/k/v, 2-D rotary embedding,
//! LayerNorm after attention and SwiGLU MLPs with a LayerNorm), the final norm of the class
//! token, then `head`; and Meta's PE-Core as timm builds it (a LayerNorm before the blocks, one
//! q/k/v product with its own bias, the rotary embedding over an `xy` grid, the attention-pool
//! head after the final norm); timm's average-pooled `VisionTransformer` (no class token,
//! q/k/v without bias, layer scale folded into each branch's last linear, the mean of the
//! normed tokens, open_clip's `head.proj`) and its `VisionTransformerRelPos` (each block's
//! relative-position MLP biasing the scores, no absolute positions). timm's LayerNorms have eps 1e-6 (PE's 1e-5).

use super::config::{Activation, Config, EvaTower, VisionLayers};
use super::fused;
use super::nn::{self, LayerNorm, Linear};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// timm's `RotaryEmbeddingCat` as `Eva` sets it up (`in_pixels=False`, temperature 10,000,
/// `ref_feat_shape`, `grid_offset`, interleaved pairs) for a `grid` x `grid` patch grid: the
/// sines and cosines, each `[grid * grid, head_dim]` row-major. Channel pair `i` of a head turns
/// by `row * band[i]` for the first quarter's bands, by `column * band[i]` for the second's
/// (`xy`: the column first), where the coordinates, counted from `offset`, are scaled to a
/// `reference` x `reference` grid. Bands and angles are computed in f32 as timm computes them;
/// the sines and cosines of those f32 angles exactly.
pub fn rope_tables(
    grid: usize,
    reference: usize,
    head_dim: usize,
    offset: usize,
    xy: bool,
) -> (Vec<f32>, Vec<f32>) {
    let bands_n = head_dim / 4;
    let bands: Vec<f32> = (0..bands_n)
        .map(|i| 1.0 / 10000f32.powf(i as f32 / bands_n as f32))
        .collect();
    let coord = |j: usize| (j as f32 + offset as f32) / grid as f32 * reference as f32;
    let (mut sin, mut cos) = (
        Vec::with_capacity(grid * grid * head_dim),
        Vec::with_capacity(grid * grid * head_dim),
    );
    for row in 0..grid {
        for col in 0..grid {
            let (first, second) = if xy { (col, row) } else { (row, col) };
            for t in [coord(first), coord(second)] {
                for &b in &bands {
                    let angle = f64::from(t * b);
                    for _ in 0..2 {
                        sin.push(angle.sin() as f32);
                        cos.push(angle.cos() as f32);
                    }
                }
            }
        }
    }
    (sin, cos)
}

/// An EVA trunk's sizes and options from a config, and its patch conv's weights, as both
/// engines build it.
pub struct Trunk<'a> {
    pub eva: &'a EvaTower,
    pub layers: usize,
    pub width: usize,
    pub patch: usize,
    pub grid: usize,
    pub heads: usize,
    /// The MLPs' hidden width.
    pub hidden: usize,
}

impl<'a> Trunk<'a> {
    pub fn of(cfg: &'a Config) -> Result<Self> {
        let Some(eva) = &cfg.vision_eva else {
            candle_core::bail!("an EVA image tower needs a `vision_eva` section")
        };
        let VisionLayers::Vit(layers) = cfg.vision_layers else {
            candle_core::bail!("an EVA config needs an integer vision_layers")
        };
        let (width, patch) = (cfg.vision_width, cfg.vision_patch_size.unwrap_or(1));
        Ok(Self {
            eva,
            layers,
            width,
            patch,
            grid: cfg.image_resolution / patch,
            heads: cfg.vision_heads(),
            hidden: cfg.vision_mlp_width.unwrap_or(4 * width),
        })
    }

    /// `vit_base_mci_224`'s convolutional stem under the trunk's `vb`
    /// (`patch_embed.backbone.{0,1,2}`): each conv's OIHW weight and bias with the BatchNorm
    /// after the first two folded in, and its kernel (= stride): 4 then 2 and 2, to width / 4,
    /// width / 4, width. GELU follows the first two.
    pub fn conv_stem(&self, vb: &VarBuilder) -> Result<Vec<(Tensor, Tensor, usize)>> {
        if self.patch != 16 || !self.width.is_multiple_of(4) {
            candle_core::bail!(
                "the convolutional stem makes 16-pixel patches of a width divisible by 4, not {} / {}",
                self.patch,
                self.width
            );
        }
        let stem = vb.pp("patch_embed").pp("backbone");
        let q = self.width / 4;
        let mut convs = Vec::with_capacity(3);
        for (i, (c_in, c_out, k)) in [(3, q, 4), (q, q, 2), (q, self.width, 2)]
            .into_iter()
            .enumerate()
        {
            let v = stem.pp(i);
            let (w, b) = if i < 2 {
                nn::fold_conv_bn(c_in, c_out, k, v.pp("conv"), v.pp("bn"))?
            } else {
                let conv = v.pp("conv");
                (
                    nn::load(&conv, &[c_out, c_in, k, k], "weight")?,
                    nn::load(&conv, &[c_out], "bias")?,
                )
            };
            convs.push((w, b, k));
        }
        Ok(convs)
    }

    /// Positions of the positional embedding: the patches, and the class token unless
    /// `no_embed_class`.
    pub fn positions(&self) -> usize {
        self.grid * self.grid + usize::from(self.eva.class_token && !self.eva.no_embed_class)
    }

    /// The patch conv as a `[width, 3 p p]` weight, and its bias (none before PE's
    /// `norm_pre`), under the trunk's `vb`.
    pub fn patch_embed(&self, vb: &VarBuilder) -> Result<(Tensor, Option<Tensor>)> {
        let (width, p) = (self.width, self.patch);
        let pe = vb.pp("patch_embed").pp("proj");
        let w = nn::load(&pe, &[width, 3, p, p], "weight")?.reshape((width, 3 * p * p))?;
        let b = (!self.eva.norm_pre)
            .then(|| nn::load(&pe, &[width], "bias"))
            .transpose()?;
        Ok((w, b))
    }
}

/// The rotary tables on the model's device: sines and cosines `[g * g, head_dim]` f32, and
/// the tokens before the patches that are not turned (the class token).
#[derive(Debug, Clone)]
pub struct Rope {
    sin: Tensor,
    cos: Tensor,
    prefix: usize,
}

impl Rope {
    pub fn new(
        grid: usize,
        eva: &EvaTower,
        head_dim: usize,
        vb: &VarBuilder,
    ) -> Result<Option<Self>> {
        let Some(reference) = eva.rope else {
            return Ok(None);
        };
        let (sin, cos) = rope_tables(grid, reference, head_dim, eva.rope_offset, eva.rope_xy);
        let t = |v: Vec<f32>| Tensor::from_vec(v, (grid * grid, head_dim), vb.device());
        Ok(Some(Self {
            sin: t(sin)?,
            cos: t(cos)?,
            prefix: usize::from(eva.class_token),
        }))
    }

    /// `x * cos + rot(x) * sin` over `[N, H, L, hd]` (L the patch tokens), `rot` turning each
    /// channel pair `(a, b)` into `(-b, a)`; in f32, the result in `x`'s dtype.
    fn rotate(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let (n, h, l, hd) = x.dims4()?;
        let pairs = x.reshape((n, h, l, hd / 2, 2))?;
        let (a, b) = (pairs.narrow(4, 0, 1)?, pairs.narrow(4, 1, 1)?);
        let rot = Tensor::cat(&[b.neg()?, a], 4)?.reshape((n, h, l, hd))?;
        (x.broadcast_mul(&self.cos)? + rot.broadcast_mul(&self.sin)?)?.to_dtype(dt)
    }

    /// [`Self::rotate`] on every token but the class token.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (l, p) = (x.dim(2)?, self.prefix);
        if p == 0 {
            return self.rotate(x);
        }
        Tensor::cat(
            &[x.narrow(2, 0, p)?, self.rotate(&x.narrow(2, p, l - p)?)?],
            2,
        )
    }
}

/// The q/k/v projections of a block as one `[3 d, d]` weight and `[3 d]` bias (the keys have
/// none: zeros): timm's fused `qkv` with `q_bias` / `v_bias`, its own bias (PE's) or none
/// (zeros), or `q_proj`, `k_proj`, `v_proj`.
pub fn qkv_weights(d: usize, eva: &EvaTower, vb: &VarBuilder) -> Result<(Tensor, Tensor)> {
    let zeros = Tensor::zeros(d, DType::F32, vb.device())?;
    let f32 = |t: Tensor| t.to_dtype(DType::F32);
    if eva.qkv_fused && !eva.qkv_bias {
        let w = nn::load(&vb.pp("qkv"), &[3 * d, d], "weight")?;
        return Ok((w, Tensor::zeros(3 * d, DType::F32, vb.device())?));
    }
    if eva.fused_bias {
        let qkv = vb.pp("qkv");
        let w = nn::load(&qkv, &[3 * d, d], "weight")?;
        return Ok((w, f32(nn::load(&qkv, &[3 * d], "bias")?)?));
    }
    if eva.qkv_fused {
        let w = nn::load(&vb.pp("qkv"), &[3 * d, d], "weight")?;
        let q = f32(nn::load(vb, &[d], "q_bias")?)?;
        let v = f32(nn::load(vb, &[d], "v_bias")?)?;
        return Ok((w, Tensor::cat(&[q, zeros, v], 0)?));
    }
    let w = |k: &str| nn::load(&vb.pp(k), &[d, d], "weight");
    let b = |k: &str| nn::load(&vb.pp(k), &[d], "bias").and_then(f32);
    let weight = Tensor::cat(
        &[
            w("q_proj")?.to_dtype(DType::F32)?,
            w("k_proj")?.to_dtype(DType::F32)?,
            w("v_proj")?.to_dtype(DType::F32)?,
        ],
        0,
    )?;
    Ok((
        weight,
        Tensor::cat(&[b("q_proj")?, zeros, b("v_proj")?], 0)?,
    ))
}

/// A block's relative-position bias where the trunk has one (timm's `RelPosMlp` in its `cr`
/// mode; None otherwise) for a `grid` x `grid` patch grid behind its class token, from its MLP
/// under the attention's `vb`
/// (`rel_pos.mlp.fc1`: the two log coordinates to `hidden`, ReLU, `fc2` to one value a head):
/// `[heads, l, l]` row-major, `l = prefix + grid * grid`; query `(r1, c1)` and key `(r2, c2)`
/// get the MLP of `(sign(dr) ln(1 + |dr|), sign(dc) ln(1 + |dc|))` for `dr = r1 - r2`,
/// `dc = c1 - c2`; the class tokens' rows and columns stay zero. In f32 as timm computes it.
pub fn rel_pos_bias(
    eva: &EvaTower,
    grid: usize,
    heads: usize,
    vb: &VarBuilder,
) -> Result<Option<Vec<f32>>> {
    if !eva.rel_pos {
        return Ok(None);
    }
    let prefix = usize::from(eva.class_token);
    let mlp = vb.pp("rel_pos").pp("mlp");
    let w1 = mlp.pp("fc1").get_unchecked("weight")?;
    let hidden = w1.dim(0)?;
    let vec = |t: Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
    let w1 = vec(nn::load(&mlp.pp("fc1"), &[hidden, 2], "weight")?)?;
    let b1 = vec(nn::load(&mlp.pp("fc1"), &[hidden], "bias")?)?;
    let w2 = vec(nn::load(&mlp.pp("fc2"), &[heads, hidden], "weight")?)?;
    let b2 = vec(nn::load(&mlp.pp("fc2"), &[heads], "bias")?)?;
    let side = 2 * grid - 1;
    let log = |d: f32| d.signum() * d.abs().ln_1p();
    // The MLP over every offset (dr, dc) in -(grid - 1)..grid, `[side * side, heads]`.
    let mut table = vec![0f32; side * side * heads];
    let mut h = vec![0f32; hidden];
    for i in 0..side {
        for j in 0..side {
            let y = log(i as f32 - (grid - 1) as f32);
            let x = log(j as f32 - (grid - 1) as f32);
            for (k, v) in h.iter_mut().enumerate() {
                *v = (w1[2 * k] * y + w1[2 * k + 1] * x + b1[k]).max(0.0);
            }
            for o in 0..heads {
                let row = &w2[o * hidden..(o + 1) * hidden];
                let dot: f32 = row.iter().zip(&h).map(|(a, b)| a * b).sum();
                table[(i * side + j) * heads + o] = dot + b2[o];
            }
        }
    }
    let (p, l) = (grid * grid, prefix + grid * grid);
    let mut bias = vec![0f32; heads * l * l];
    for q in 0..p {
        let (r1, c1) = (q / grid, q % grid);
        for k in 0..p {
            let (r2, c2) = (k / grid, k % grid);
            let at = (r1 + grid - 1 - r2) * side + (c1 + grid - 1 - c2);
            for o in 0..heads {
                bias[o * l * l + (prefix + q) * l + prefix + k] = table[at * heads + o];
            }
        }
    }
    Ok(Some(bias))
}

/// A block's layer-scale gains (`ls1.gamma`, `ls2.gamma`) under its `vb` where the trunk has
/// them, folded into `attn.proj` and the MLP's last linear by both engines.
pub fn gains(d: usize, eva: &EvaTower, vb: &VarBuilder) -> Result<[Option<Tensor>; 2]> {
    if !eva.layer_scale {
        return Ok([None, None]);
    }
    if eva.post_norm {
        candle_core::bail!("layer scale with post-norm blocks is not implemented");
    }
    let gamma = |k: &str| nn::load(&vb.pp(k), &[d], "gamma").map(Some);
    Ok([gamma("ls1")?, gamma("ls2")?])
}

/// timm's `EvaAttention` (no mask). Scores, softmax and value sums in the products' dtype as
/// CLIP's blocks compute them.
#[derive(Debug, Clone)]
pub struct EvaAttention {
    qkv: Linear,
    /// `scale_attn_inner`: a LayerNorm on the heads' output before `proj`.
    norm: Option<LayerNorm>,
    proj: Linear,
    heads: usize,
    /// The relative-position bias added to the scaled scores, `[1, heads, l, l]` f32.
    rel_pos: Option<Tensor>,
}

impl EvaAttention {
    /// `gain`: the block's `ls1`, folded into `proj`; `grid`: the patch grid's side (for the
    /// relative-position bias).
    pub fn new(
        d: usize,
        heads: usize,
        eva: &EvaTower,
        gain: Option<&Tensor>,
        grid: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        if heads == 0 || !d.is_multiple_of(heads) {
            candle_core::bail!("width {d} does not split into {heads} attention heads");
        }
        let (w, b) = qkv_weights(d, eva, &vb)?;
        let l = usize::from(eva.class_token) + grid * grid;
        let rel_pos = rel_pos_bias(eva, grid, heads, &vb)?
            .map(|bias| Tensor::from_vec(bias, (1, heads, l, l), vb.device()))
            .transpose()?;
        Ok(Self {
            qkv: Linear::from_parts(&w, Some(b), vb.dtype())?,
            norm: eva
                .attn_norm
                .then(|| nn::layer_norm_eps(d, eva.eps, vb.pp("norm")))
                .transpose()?,
            proj: nn::linear_gain(d, d, vb.pp("proj"), gain)?,
            heads,
            rel_pos,
        })
    }

    /// `x` `[N, L, d]` in the products' dtype -> `proj(...)` f32.
    pub fn forward(&self, x: &Tensor, rope: Option<&Rope>) -> Result<Tensor> {
        let (n, l, d) = x.dims3()?;
        let hd = d / self.heads;
        let dt = self.qkv.dtype();
        let qkv = self.qkv.product(x)?;
        let (q, k, v) = fused::qkv_split(&qkv, &self.qkv.bias()?, self.heads, 1.0)?;
        let (q, k) = match rope {
            Some(r) => (r.apply(&q)?, r.apply(&k)?),
            None => (q, k),
        };
        let q = (q.to_dtype(DType::F32)? * (1.0 / (hd as f64).sqrt()))?.to_dtype(dt)?;
        let scores = nn::matmul(&q, &k.t()?, dt)?;
        let scores = match &self.rel_pos {
            Some(b) => scores
                .to_dtype(DType::F32)?
                .broadcast_add(b)?
                .to_dtype(dt)?,
            None => scores,
        };
        let att = fused::softmax(&scores, false)?;
        let out = nn::matmul(&att, &v, dt)?
            .transpose(1, 2)?
            .reshape((n, l, d))?;
        match &self.norm {
            Some(norm) => self
                .proj
                .forward_f32(&norm.forward_to(&out.to_dtype(DType::F32)?, dt)?),
            None => self.proj.forward_f32(&out),
        }
    }
}

/// timm's EVA MLPs: `Mlp` (fc1, GELU, optional LayerNorm, fc2) or `SwiGLU` (fc1_g, fc1_x,
/// `silu(g) * x`, LayerNorm, fc2).
#[derive(Debug, Clone)]
pub enum EvaMlp {
    Gelu {
        fc1: Linear,
        norm: Option<LayerNorm>,
        fc2: Linear,
    },
    SwiGlu {
        fc1_g: Linear,
        fc1_x: Linear,
        norm: Option<LayerNorm>,
        fc2: Linear,
    },
    /// ViTamin's `GeGluMlp`: its own LayerNorm of the input, `gelu(w0 x) * w1 x`, `w2`.
    GeGlu {
        norm: LayerNorm,
        w0: Linear,
        w1: Linear,
        w2: Linear,
    },
}

impl EvaMlp {
    /// `gain`: the block's `ls2`, folded into the last linear.
    pub fn new(
        d: usize,
        hidden: usize,
        eva: &EvaTower,
        gain: Option<&Tensor>,
        vb: VarBuilder,
    ) -> Result<Self> {
        if eva.geglu {
            return Ok(Self::GeGlu {
                norm: nn::layer_norm_eps(d, eva.eps, vb.pp("norm"))?,
                w0: nn::linear(d, hidden, vb.pp("w0"))?,
                w1: nn::linear(d, hidden, vb.pp("w1"))?,
                w2: nn::linear_gain(hidden, d, vb.pp("w2"), gain)?,
            });
        }
        let norm = eva
            .mlp_norm
            .then(|| nn::layer_norm_eps(hidden, eva.eps, vb.pp("norm")))
            .transpose()?;
        let fc2 = nn::linear_gain(hidden, d, vb.pp("fc2"), gain)?;
        Ok(if eva.swiglu {
            Self::SwiGlu {
                fc1_g: nn::linear(d, hidden, vb.pp("fc1_g"))?,
                fc1_x: nn::linear(d, hidden, vb.pp("fc1_x"))?,
                norm,
                fc2,
            }
        } else {
            Self::Gelu {
                fc1: nn::linear(d, hidden, vb.pp("fc1"))?,
                norm,
                fc2,
            }
        })
    }

    /// `x` in the products' dtype -> f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (h, norm, fc2) = match self {
            Self::Gelu { fc1, norm, fc2 } => (
                fc1.forward_act(x, fused::Act::Gelu)?.to_dtype(DType::F32)?,
                norm,
                fc2,
            ),
            Self::SwiGlu {
                fc1_g,
                fc1_x,
                norm,
                fc2,
            } => {
                let g = fc1_g.forward_f32(x)?;
                let h = (candle_nn::ops::silu(&g)? * fc1_x.forward_f32(x)?)?;
                (h, norm, fc2)
            }
            Self::GeGlu { norm, w0, w1, w2 } => {
                let dt = w0.dtype();
                let x = norm.forward_to(&x.to_dtype(DType::F32)?, dt)?;
                let h = (w0.forward_f32(&x)?.gelu_erf()? * w1.forward_f32(&x)?)?;
                return w2.forward_f32(&h.to_dtype(dt)?);
            }
        };
        let dt = fc2.dtype();
        let h = match norm {
            Some(n) => n.forward_to(&h, dt)?,
            None => h.to_dtype(dt)?,
        };
        fc2.forward_f32(&h)
    }
}

/// timm's `EvaBlock` (pre-norm) or `EvaBlockPostNorm`.
#[derive(Debug, Clone)]
pub struct EvaBlock {
    norm1: LayerNorm,
    attn: EvaAttention,
    norm2: LayerNorm,
    mlp: EvaMlp,
    post_norm: bool,
}

impl EvaBlock {
    /// `grid`: the patch grid's side.
    pub fn new(
        d: usize,
        heads: usize,
        hidden: usize,
        eva: &EvaTower,
        grid: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let [ls1, ls2] = gains(d, eva, &vb)?;
        Ok(Self {
            norm1: nn::layer_norm_eps(d, eva.eps, vb.pp("norm1"))?,
            attn: EvaAttention::new(d, heads, eva, ls1.as_ref(), grid, vb.pp("attn"))?,
            norm2: nn::layer_norm_eps(d, eva.eps, vb.pp("norm2"))?,
            mlp: EvaMlp::new(d, hidden, eva, ls2.as_ref(), vb.pp("mlp"))?,
            post_norm: eva.post_norm,
        })
    }

    /// `x`: the f32 residual stream `[N, L, d]`.
    pub fn forward(&self, x: &Tensor, rope: Option<&Rope>) -> Result<Tensor> {
        let dt = self.attn.qkv.dtype();
        if self.post_norm {
            let a = self.attn.forward(&x.to_dtype(dt)?, rope)?;
            let x = (x + self.norm1.forward(&a)?)?;
            let m = self.mlp.forward(&x.to_dtype(dt)?)?;
            return x + self.norm2.forward(&m)?;
        }
        let x = (x + self.attn.forward(&self.norm1.forward_to(x, dt)?, rope)?)?;
        // A GeGLU MLP norms its input again, from the f32 values.
        let h = match self.mlp {
            EvaMlp::GeGlu { .. } => self.norm2.forward(&x)?,
            _ => self.norm2.forward_to(&x, dt)?,
        };
        let m = self.mlp.forward(&h)?;
        x + m
    }
}

/// How the patch tokens are made: the patch conv (kernel = stride = patch) as a matmul over
/// flattened patches, with its bias (none before PE's `norm_pre`), MobileCLIP-B's
/// convolutional stem (GELU after all but the last conv) or ViTamin's convolutional stages.
#[derive(Debug, Clone)]
enum PatchEmbed {
    Proj(Linear),
    Stem(Vec<nn::ConvBn>),
    MbConv(Box<super::vitamin::MbConvStem>),
}

/// How the trunk's tokens become one row: the class token after the final norm, PE's
/// attention-pool head after it, (ViTamin) the mean of the tokens through `fc_norm`, or the
/// mean of the tokens after the final norm.
#[derive(Debug, Clone)]
enum Pool {
    Token(LayerNorm),
    Map(LayerNorm, super::siglip::MapHead),
    Mean(LayerNorm),
    NormMean(LayerNorm),
}

#[derive(Debug, Clone)]
pub struct EvaVision {
    patch_embed: PatchEmbed,
    cls_token: Option<Tensor>,
    pos_embed: Option<Tensor>,
    /// The positional embedding covers the patches only (`no_embed_class`).
    no_embed_class: bool,
    norm_pre: Option<LayerNorm>,
    rope: Option<Rope>,
    blocks: Vec<EvaBlock>,
    pool: Pool,
    /// The trunk's `head`, or open_clip's `head.proj` after it (no bias).
    head: Linear,
    patch: usize,
    grid: usize,
}

impl EvaVision {
    /// `visual`: the image tower (`visual`; the trunk is `visual.trunk`).
    pub fn new(cfg: &Config, visual: VarBuilder) -> Result<Self> {
        let t = Trunk::of(cfg)?;
        let vb = visual.pp("trunk");
        let (eva, layers, width, patch) = (t.eva, t.layers, t.width, t.patch);
        let (grid, heads, hidden) = (t.grid, t.heads, t.hidden);
        let patch_embed = if let Some(m) = &eva.mbconv {
            let backbone = vb.pp("patch_embed").pp("backbone");
            let parts = super::vitamin::Parts::load(m, width, &backbone)?;
            PatchEmbed::MbConv(Box::new(super::vitamin::MbConvStem::new(
                &parts,
                vb.dtype(),
            )?))
        } else if eva.conv_stem {
            let convs = t.conv_stem(&vb)?;
            PatchEmbed::Stem(
                convs
                    .into_iter()
                    .map(|(w, b, k)| nn::ConvBn::from_parts(&w, b, k, 0, vb.dtype()))
                    .collect::<Result<_>>()?,
            )
        } else {
            let (w, b) = t.patch_embed(&vb)?;
            PatchEmbed::Proj(Linear::from_parts(&w, b, vb.dtype())?)
        };
        let blocks = vb.pp("blocks");
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        Ok(Self {
            patch_embed,
            cls_token: eva
                .class_token
                .then(|| nn::load(&vb, &[1, 1, width], "cls_token").and_then(f32))
                .transpose()?,
            pos_embed: eva
                .pos_embed
                .then(|| f32(nn::load(&vb, &[1, t.positions(), width], "pos_embed")?.squeeze(0)?))
                .transpose()?,
            no_embed_class: eva.no_embed_class,
            norm_pre: eva
                .norm_pre
                .then(|| nn::layer_norm_eps(width, eva.eps, vb.pp("norm_pre")))
                .transpose()?,
            rope: Rope::new(grid, eva, width / heads, &vb)?,
            blocks: (0..layers)
                .map(|i| EvaBlock::new(width, heads, hidden, eva, grid, blocks.pp(i)))
                .collect::<Result<_>>()?,
            pool: if eva.avg_pool {
                Pool::Mean(nn::layer_norm_eps(width, eva.eps, vb.pp("fc_norm"))?)
            } else {
                let norm = nn::layer_norm_eps(width, eva.eps, vb.pp("norm"))?;
                match eva.map_heads {
                    None if eva.norm_mean => Pool::NormMean(norm),
                    Some(h) => {
                        let mlp = 4 * width;
                        let pool = vb.pp("attn_pool");
                        let head = super::siglip::MapHead::new(
                            width,
                            h,
                            mlp,
                            Activation::Gelu,
                            eva.eps,
                            pool,
                        )?;
                        Pool::Map(norm, head)
                    }
                    None => Pool::Token(norm),
                }
            },
            head: if eva.head_proj {
                let w = nn::load(
                    &visual.pp("head").pp("proj"),
                    &[cfg.embed_dim, width],
                    "weight",
                )?;
                Linear::from_parts(&w, None, vb.dtype())?
            } else {
                nn::linear(width, cfg.embed_dim, vb.pp("head"))?
            },
            patch,
            grid,
        })
    }
}

impl Module for EvaVision {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let tokens = match &self.patch_embed {
            PatchEmbed::Proj(p) => {
                let patches = super::vit::patches(x, self.grid, self.patch)?;
                p.forward(&patches)?.to_dtype(DType::F32)?
            }
            PatchEmbed::Stem(convs) => {
                let mut h = x.clone();
                for (i, conv) in convs.iter().enumerate() {
                    let act = if i + 1 < convs.len() {
                        fused::Act::Gelu
                    } else {
                        fused::Act::None
                    };
                    h = conv.forward_act(&h, act)?;
                }
                // [N, width, g, g] -> [N, g * g, width].
                h.to_dtype(DType::F32)?
                    .flatten_from(2)?
                    .transpose(1, 2)?
                    .contiguous()?
            }
            PatchEmbed::MbConv(stem) => stem.forward(x)?,
        };
        let width = tokens.dim(2)?;
        let tokens = match &self.pos_embed {
            Some(pe) if self.no_embed_class => tokens.broadcast_add(pe)?,
            _ => tokens,
        };
        let x = match &self.cls_token {
            Some(c) => Tensor::cat(&[c.broadcast_as((n, 1, width))?.contiguous()?, tokens], 1)?,
            None => tokens,
        };
        let mut x = match &self.pos_embed {
            Some(pe) if !self.no_embed_class => x.broadcast_add(pe)?,
            _ => x,
        };
        if let Some(norm) = &self.norm_pre {
            x = norm.forward(&x)?;
        }
        for b in &self.blocks {
            x = b.forward(&x, self.rope.as_ref())?;
        }
        let pooled = match &self.pool {
            Pool::Map(norm, head) => head.forward(&norm.forward(&x)?)?,
            // The class token after the final norm (the norm is per token).
            Pool::Token(norm) => norm.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?,
            Pool::Mean(fc_norm) => fc_norm.forward(&x.mean(1)?)?,
            Pool::NormMean(norm) => norm.forward(&x)?.mean(1)?,
        };
        self.head.forward_f32(&pooled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables turn pair `i` by row then column coordinates times timm's bands, scaled to
    /// the reference grid: at 4 x 4 patches on a 16-wide reference, token (1, 2) sits at
    /// (4, 8); the first band is 1.
    #[test]
    fn rope_tables_follow_timms_layout() {
        let (sin, cos) = rope_tables(4, 16, 8, 0, false);
        let at = |t: usize| &sin[t * 8..(t + 1) * 8];
        let (row, col) = (1, 2);
        let token = row * 4 + col;
        let b1 = 1.0 / 10000f32.powf(0.5);
        let want = [
            4.0f32,
            4.0,
            4.0 * b1,
            4.0 * b1,
            8.0,
            8.0,
            8.0 * b1,
            8.0 * b1,
        ];
        for (got, w) in at(token).iter().zip(want) {
            assert!((got - w.sin()).abs() < 1e-6, "{got} vs {}", w.sin());
        }
        assert!(cos[..8].iter().all(|&c| c == 1.0));
    }

    /// PE's grid (`xy`, counted from 1): the column's bands come first, and token (0, 0) sits
    /// at (1, 1) scaled to the reference, so it turns.
    #[test]
    fn pe_rope_tables_put_the_column_first_from_one() {
        let (sin, _) = rope_tables(4, 8, 8, 1, true);
        let b1 = 1.0 / 10000f32.powf(0.5);
        let (row, col) = (1usize, 2usize);
        let at = &sin[(row * 4 + col) * 8..][..8];
        // Coordinates (j + 1) / 4 * 8: column 2 -> 6, row 1 -> 4.
        let want = [
            6.0f32,
            6.0,
            6.0 * b1,
            6.0 * b1,
            4.0,
            4.0,
            4.0 * b1,
            4.0 * b1,
        ];
        for (got, w) in at.iter().zip(want) {
            assert!((got - w.sin()).abs() < 1e-6, "{got} vs {}", w.sin());
        }
        assert!((sin[0] - 2f32.sin()).abs() < 1e-6);
    }
}
