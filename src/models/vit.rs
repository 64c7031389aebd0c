//! Mirrors the reference's `VisualTransformer` in candle tensor ops: patch conv, class token,
//! positional embedding, `ln_pre`, the LEFF/standard transformer, `ln_post` of the class token,
//! then `proj`; open_clip's CoCa image tower, which pools the tokens with its
//! `AttentionalPooler` (first query) before `ln_post` and `proj`; and open_clip's CLIPA tower,
//! without `ln_pre`, pooled by the mean of its patch tokens before `ln_post` and `proj`.

use super::config::{AttnPool, Config, VisionLayers};
use super::fused;
use super::nn::{self, LayerNorm, Linear};
use super::transformer::{Mask, Transformer};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// An attentional pooler's weights as both engines use them (`attn_pool.*`, open_clip's
/// `AttentionalPooler` over `context` wide tokens into `d` wide queries).
pub struct PoolerWeights {
    /// The first query after `ln_q` and the query projection, `[d]`: it does not depend on
    /// the image, so it is computed once here. Only the first query's output is the image
    /// feature; the others feed the captioning decoder.
    pub query: Tensor,
    /// Every query so projected, `[queries, d]`: the first is `query`, the others' outputs are
    /// the tokens CoCa's captioning decoder attends to.
    pub queries: Tensor,
    /// The keys' and values' projections as one `[2d, context]` weight and `[2d]` bias.
    pub kv_weight: Tensor,
    pub kv_bias: Tensor,
}

impl PoolerWeights {
    /// `nn.MultiheadAttention` keeps one `in_proj_weight` when the tokens are as wide as the
    /// queries, else `q_proj_weight`, `k_proj_weight` and `v_proj_weight`.
    pub fn new(pool: AttnPool, d: usize, context: usize, vb: &VarBuilder) -> Result<Self> {
        let attn = vb.pp("attn");
        let bias = nn::load(&attn, &[3 * d], "in_proj_bias")?;
        let (wq, wkv) = if attn.contains_tensor("in_proj_weight") && d == context {
            let w = nn::load(&attn, &[3 * d, d], "in_proj_weight")?;
            (w.narrow(0, 0, d)?, w.narrow(0, d, 2 * d)?)
        } else {
            let wq = nn::load(&attn, &[d, d], "q_proj_weight")?;
            let wk = nn::load(&attn, &[d, context], "k_proj_weight")?;
            let wv = nn::load(&attn, &[d, context], "v_proj_weight")?;
            (wq, Tensor::cat(&[wk, wv], 0)?)
        };
        let all = nn::load(vb, &[pool.queries, d], "query")?;
        let ln_q = nn::layer_norm(d, vb.pp("ln_q"))?;
        let project = |q: &Tensor| {
            ln_q.forward(q)?
                .matmul(&wq.t()?)?
                .broadcast_add(&bias.narrow(0, 0, d)?)
        };
        Ok(Self {
            query: project(&all.narrow(0, 0, 1)?)?.squeeze(0)?,
            queries: project(&all)?,
            kv_weight: wkv,
            kv_bias: bias.narrow(0, d, 2 * d)?,
        })
    }
}

/// open_clip's `AttentionalPooler` for its first query: multi-head attention of that query over
/// `ln_k` of the tokens, then `out_proj`. Scores, softmax and value sums in f32.
#[derive(Debug, Clone)]
pub struct AttentionalPooler {
    query: Tensor,
    queries: Tensor,
    ln_k: LayerNorm,
    /// The keys' and values' projections as one product.
    kv: Linear,
    out_proj: Linear,
    heads: usize,
}

impl AttentionalPooler {
    pub fn new(pool: AttnPool, d: usize, context: usize, vb: VarBuilder) -> Result<Self> {
        let w = PoolerWeights::new(pool, d, context, &vb)?;
        let dt = vb.dtype();
        Ok(Self {
            query: w.query,
            queries: w.queries,
            ln_k: nn::layer_norm(context, vb.pp("ln_k"))?,
            kv: Linear::from_parts(&w.kv_weight, Some(w.kv_bias), dt)?,
            out_proj: nn::linear(d, d, vb.pp("attn").pp("out_proj"))?,
            heads: pool.heads,
        })
    }
}

impl Module for AttentionalPooler {
    /// `[N, L, context]` tokens -> `[N, d]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kv = self
            .kv
            .forward_f32(&self.ln_k.forward_to(x, self.kv.dtype())?)?;
        self.out_proj
            .forward_f32(&query_attention(&self.query, &kv, self.heads)?)
    }
}

impl AttentionalPooler {
    /// Every query's output, `[N, queries, d]` (CoCa's `attn_pool` as open_clip runs it).
    fn forward_all(&self, x: &Tensor) -> Result<Tensor> {
        let kv = self
            .kv
            .forward_f32(&self.ln_k.forward_to(x, self.kv.dtype())?)?;
        self.out_proj
            .forward_f32(&queries_attention(&self.queries, &kv, self.heads)?)
    }
}

/// Learned `queries` `[Q, d]` attending to each sequence's keys and values (`kv`: `[N, L, 2d]`
/// f32, keys then values) with `heads` heads, no mask, in f32. `[N, Q, d]`.
pub fn queries_attention(queries: &Tensor, kv: &Tensor, heads: usize) -> Result<Tensor> {
    let (n, l, d2) = kv.dims3()?;
    let (nq, d) = (queries.dim(0)?, d2 / 2);
    let (h, hd) = (heads, d / heads);
    let split = |t: Tensor| t.reshape((n, l, h, hd))?.transpose(1, 2)?.contiguous();
    let k = split(kv.narrow(2, 0, d)?)?;
    let v = split(kv.narrow(2, d, d)?)?;
    let q = (queries.reshape((1, nq, h, hd))?.transpose(1, 2)? * (1.0 / (hd as f64).sqrt()))?
        .broadcast_as((n, h, nq, hd))?
        .contiguous()?;
    let att = fused::softmax(&q.matmul(&k.t()?)?, false)?;
    att.matmul(&v)?.transpose(1, 2)?.reshape((n, nq, d))
}

/// One learned `query` `[d]` attending to each sequence's keys and values (`kv`: `[N, L, 2d]`
/// f32, keys then values) with `heads` heads, no mask, in f32: a pooler's attention (CoCa's
/// first query, SigLIP's attention-pool head). `[N, d]`.
pub fn query_attention(query: &Tensor, kv: &Tensor, heads: usize) -> Result<Tensor> {
    let d = query.dim(0)?;
    queries_attention(&query.reshape((1, d))?, kv, heads)?.reshape((kv.dim(0)?, d))
}

/// `[N, 3, R, R]` images as `[N, g * g, 3 * p * p]` f32 rows of `p x p` patches, in the order a
/// patch conv flattens its kernel; a remainder of `R` past `g * p` is left out, as the conv
/// leaves it (SigLIP's 384 px with 14 px patches).
pub fn patches(x: &Tensor, g: usize, p: usize) -> Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    let x = x
        .to_dtype(DType::F32)?
        .narrow(2, 0, g * p)?
        .narrow(3, 0, g * p)?;
    // [N, 3, g, p, g, p] -> [N, g, g, 3, p, p].
    x.reshape((n, c, g, p, g, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((n, g * g, c * p * p))
}

#[derive(Debug, Clone)]
pub struct VisionTransformer {
    /// The patch conv (kernel = stride = patch, no bias) as a matmul over flattened patches.
    conv1: Linear,
    class_embedding: Tensor,
    positional_embedding: Tensor,
    /// None in CLIPA's.
    ln_pre: Option<LayerNorm>,
    transformer: Transformer,
    /// CoCa's pooler, in place of taking the class token.
    attn_pool: Option<AttentionalPooler>,
    /// CLIPA's pooling: the patch tokens' mean, in place of the class token.
    avg_pool: bool,
    ln_post: LayerNorm,
    /// `x @ proj` as a bias-free linear layer.
    proj: Linear,
    patch: usize,
    grid: usize,
}

impl VisionTransformer {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let width = cfg.vision_width;
        let patch = cfg.vision_patch_size.unwrap_or(1);
        let grid = cfg.image_resolution / patch;
        let VisionLayers::Vit(layers) = cfg.vision_layers else {
            candle_core::bail!("a ViT config needs an integer vision_layers")
        };
        let dt = vb.dtype();
        let w = nn::load(&vb.pp("conv1"), &[width, 3, patch, patch], "weight")?;
        let conv1 = Linear::from_parts(&w.reshape((width, 3 * patch * patch))?, None, dt)?;
        // The pooler hands `ln_post` and `proj` embed_dim wide rows.
        let pooled = if cfg.vision_attn_pool.is_some() {
            cfg.embed_dim
        } else {
            width
        };
        let proj = nn::load(&vb, &[pooled, cfg.embed_dim], "proj")?;
        let attn_pool = cfg
            .vision_attn_pool
            .map(|p| AttentionalPooler::new(p, cfg.embed_dim, width, vb.pp("attn_pool")))
            .transpose()?;
        Ok(Self {
            conv1,
            class_embedding: nn::load(&vb, &[width], "class_embedding")?,
            positional_embedding: nn::load(&vb, &[grid * grid + 1, width], "positional_embedding")?,
            ln_pre: cfg
                .vision_ln_pre()
                .then(|| nn::layer_norm(width, vb.pp("ln_pre")))
                .transpose()?,
            transformer: Transformer::new(
                width,
                layers,
                cfg.vision_heads(),
                Some(grid),
                super::transformer::Style::vision(cfg),
                vb.pp("transformer"),
            )?,
            attn_pool,
            avg_pool: cfg.vision_avg_pool(),
            ln_post: nn::layer_norm(pooled, vb.pp("ln_post"))?,
            proj: Linear::from_parts(&proj.t()?, None, dt)?,
            patch,
            grid,
        })
    }
}

impl VisionTransformer {
    /// CoCa's image features and the tokens its captioning decoder attends to: the pooler's
    /// other queries after `ln_post` (open_clip's `_global_pool` of the pooled rows), `[N,
    /// queries - 1, embed_dim]`.
    pub fn forward_with_tokens(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let Some(pool) = &self.attn_pool else {
            candle_core::bail!("only CoCa's image tower (an attentional pooler) gives tokens")
        };
        let x = self.trunk(x)?;
        // The features by the first query alone, as `forward` computes them (bit for bit).
        let features = self
            .proj
            .forward(&self.ln_post.forward(&pool.forward(&x)?)?)?;
        let all = self.ln_post.forward(&pool.forward_all(&x)?)?;
        let q = all.dim(1)?;
        Ok((features, all.narrow(1, 1, q - 1)?.contiguous()?))
    }

    /// The patches through the blocks: `[N, 1 + g * g, width]`.
    fn trunk(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let patches = patches(x, self.grid, self.patch)?;
        let tokens = self.conv1.forward(&patches)?.to_dtype(DType::F32)?;
        let width = tokens.dim(2)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, width))?
            .broadcast_as((n, 1, width))?
            .contiguous()?;
        let x = Tensor::cat(&[cls, tokens], 1)?.broadcast_add(&self.positional_embedding)?;
        let x = match &self.ln_pre {
            Some(ln) => ln.forward(&x)?,
            None => x,
        };
        self.transformer.forward(&x, Mask::None)
    }
}

impl Module for VisionTransformer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.trunk(x)?;
        let x = match &self.attn_pool {
            Some(pool) => pool.forward(&x)?,
            None if self.avg_pool => {
                let l = x.dim(1)?;
                x.narrow(1, 1, l - 1)?.to_dtype(DType::F32)?.mean(1)?
            }
            None => x.narrow(1, 0, 1)?.squeeze(1)?,
        };
        let x = self.ln_post.forward(&x)?;
        self.proj.forward(&x)
    }
}
