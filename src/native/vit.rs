//! Mirrors the reference's `VisualTransformer` on plain buffers: the patch conv as one product
//! over patches gathered straight from the pixels, class token and positional embedding in the
//! same pass, `ln_pre`, the transformer (the last block for the class token only), `ln_post`,
//! `proj`; for open_clip's CoCa, every token out of the last block into its attentional
//! pooler's first query, then `ln_post`, `proj`; for open_clip's CLIPA, no `ln_pre` and the
//! mean of the patch tokens out of the last block, then `ln_post`, `proj`.

use super::gemm::{Act, GemmConfig};
use super::kernels::{self, HeadView, Mask};
use super::layers::{to_vec, LayerNorm, Linear};
use super::transformer::Transformer;
use crate::models::nn as fold;
use crate::models::vit::PoolerWeights;
use crate::models::{AttnPool, Config, VisionLayers};
use candle_core::Result;
use candle_nn::VarBuilder;

/// open_clip's `AttentionalPooler` for its first query (`models::vit::AttentionalPooler`):
/// its query projected once at load, `ln_k`, the keys' and values' projections as one product,
/// attention, `out_proj`. In f32 under bf16 too (as the patch conv): ~1% of the tower's work.
#[derive(Debug)]
struct AttentionalPooler {
    query: Vec<f32>,
    /// Every query projected, `[queries, d]` (the others feed CoCa's captioning decoder).
    queries: Vec<f32>,
    ln_k: LayerNorm,
    kv: Linear,
    out_proj: Linear,
    heads: usize,
}

impl AttentionalPooler {
    fn new(
        pool: AttnPool,
        d: usize,
        context: usize,
        vb: VarBuilder,
        gemm: GemmConfig,
    ) -> Result<Self> {
        let w = PoolerWeights::new(pool, d, context, &vb)?;
        let gemm = GemmConfig {
            bf16: false,
            ..gemm
        };
        Ok(Self {
            query: to_vec(&w.query)?,
            queries: to_vec(&w.queries)?,
            ln_k: LayerNorm::new(context, vb.pp("ln_k"))?,
            kv: Linear::from_parts(&w.kv_weight, Some(&w.kv_bias), gemm)?,
            out_proj: Linear::new(d, d, vb.pp("attn").pp("out_proj"), gemm)?,
            heads: pool.heads,
        })
    }

    /// `n` sequences of `l` tokens `[n * l, context]` -> `[n, d]`.
    fn forward(&self, x: &[f32], n: usize, l: usize) -> Vec<f32> {
        let h = self.ln_k.rows(x, n * l, self.kv.in_dim());
        let kv = self.kv.rows(n * l, &h, None, Act::None);
        drop(h);
        let att = query_attention(self.kv.config(), &self.query, &kv, n, l, self.heads);
        self.out_proj.rows(n, &att, None, Act::None)
    }

    /// Every query's output: `[n * queries, d]`.
    fn forward_all(&self, x: &[f32], n: usize, l: usize) -> Vec<f32> {
        let nq = self.queries.len() / self.query.len();
        let h = self.ln_k.rows(x, n * l, self.kv.in_dim());
        let kv = self.kv.rows(n * l, &h, None, Act::None);
        drop(h);
        let att = query_attention(self.kv.config(), &self.queries, &kv, n, l, self.heads);
        self.out_proj.rows(n * nq, &att, None, Act::None)
    }
}

/// Learned queries (`queries`: one or more rows of `d`) attending to each of `n` sequences'
/// `l` keys and values (`kv`: `[n * l, 2d]`, keys then values) with `heads` heads, no mask: a
/// pooler's attention (CoCa's queries, SigLIP's attention-pool head). `[n * queries, d]`.
pub fn query_attention(
    cfg: GemmConfig,
    queries: &[f32],
    kv: &[f32],
    n: usize,
    l: usize,
    heads: usize,
) -> Vec<f32> {
    let d = kv.len() / (2 * n * l).max(1);
    let q: Vec<f32> = queries.repeat(n);
    let view = |data, rows, stride, offset| HeadView {
        data,
        rows,
        stride,
        offset,
    };
    kernels::attention(
        cfg,
        view(&q, queries.len() / d.max(1), d, 0),
        view(kv, l, 2 * d, 0),
        view(kv, l, 2 * d, d),
        n,
        heads,
        d / heads,
        Mask::None,
    )
}

/// The patches of `n` images `[3, r, r]` (NCHW) as rows `[n * g * g, 3 * p * p]`, in the
/// order a patch conv flattens its kernel (channel, row, column), image by image: the conv's
/// `g = r / p` patches a side (a remainder of `r` is left out, as the conv leaves it).
pub fn patches(px: &[f32], n: usize, r: usize, p: usize) -> Result<Vec<f32>> {
    let (c, h, w, g) = (3, r, r, r / p.max(1));
    if px.len() != n * c * h * w {
        candle_core::bail!("expected {n} images of 3x{h}x{w} pixels");
    }
    // One image per task (a serial gather left the other thread idle).
    let per_image = g * g * c * p * p;
    // Safety: each image's task copies all of its `per_image` elements.
    Ok(unsafe {
        kernels::par_build(n * per_image, per_image, |b, dst| {
            let mut o = 0;
            for gy in 0..g {
                for gx in 0..g {
                    for ch in 0..c {
                        for py in 0..p {
                            let at = ((b * c + ch) * h + gy * p + py) * w + gx * p;
                            dst[o..o + p].write_copy_of_slice(&px[at..at + p]);
                            o += p;
                        }
                    }
                }
            }
        })
    })
}

#[derive(Debug)]
pub struct VisionTransformer {
    /// The patch conv (kernel = stride = patch, no bias) as a product over flattened patches.
    conv1: Linear,
    class_embedding: Vec<f32>,
    positional_embedding: Vec<f32>,
    /// None in CLIPA's.
    ln_pre: Option<LayerNorm>,
    transformer: Transformer,
    /// CoCa's pooler, in place of taking the class token.
    attn_pool: Option<AttentionalPooler>,
    /// CLIPA's pooling: the patch tokens' mean, in place of the class token.
    avg_pool: bool,
    ln_post: LayerNorm,
    proj: Linear,
    patch: usize,
    grid: usize,
}

impl VisionTransformer {
    pub fn new(cfg: &Config, vb: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let width = cfg.vision_width;
        let patch = cfg.vision_patch_size.unwrap_or(1);
        let grid = cfg.image_resolution / patch;
        let VisionLayers::Vit(layers) = cfg.vision_layers else {
            candle_core::bail!("a ViT config needs an integer vision_layers")
        };
        let w = fold::load(&vb.pp("conv1"), &[width, 3, patch, patch], "weight")?;
        // The pooler hands `ln_post` and `proj` embed_dim wide rows.
        let pooled = if cfg.vision_attn_pool.is_some() {
            cfg.embed_dim
        } else {
            width
        };
        let proj = fold::load(&vb, &[pooled, cfg.embed_dim], "proj")?;
        let attn_pool = cfg
            .vision_attn_pool
            .map(|p| AttentionalPooler::new(p, cfg.embed_dim, width, vb.pp("attn_pool"), gemm))
            .transpose()?;
        Ok(Self {
            // The pixels stay f32 under bf16 (as the ResNet's stem does): a small
            // share of the work.
            conv1: Linear::from_parts(
                &w.reshape((width, 3 * patch * patch))?,
                None,
                GemmConfig {
                    bf16: false,
                    ..gemm
                },
            )?,
            class_embedding: to_vec(&fold::load(&vb, &[width], "class_embedding")?)?,
            positional_embedding: to_vec(&fold::load(
                &vb,
                &[grid * grid + 1, width],
                "positional_embedding",
            )?)?,
            ln_pre: cfg
                .vision_ln_pre()
                .then(|| LayerNorm::new(width, vb.pp("ln_pre")))
                .transpose()?,
            transformer: Transformer::new(
                width,
                layers,
                cfg.vision_heads(),
                Some(grid),
                crate::models::transformer::Style::vision(cfg),
                vb.pp("transformer"),
                gemm,
            )?,
            attn_pool,
            avg_pool: cfg.vision_avg_pool(),
            ln_post: LayerNorm::new(pooled, vb.pp("ln_post"))?,
            proj: Linear::from_parts(&proj.t()?, None, gemm)?,
            patch,
            grid,
        })
    }

    /// CoCa: each image's features then the tokens its captioning decoder attends to (the
    /// pooler's other queries after `ln_post`), `[n, embed_dim * queries]`.
    pub fn forward_with_tokens(&self, px: &[f32], n: usize) -> Result<Vec<f32>> {
        let Some(pool) = &self.attn_pool else {
            candle_core::bail!("only CoCa's image tower (an attentional pooler) gives tokens")
        };
        let (x, l) = self.trunk(px, n)?;
        let x = self.transformer.forward(x, n, l, Mask::None)?;
        let d = self.proj.in_dim();
        // The features by the first query alone, as `forward` computes them (bit for bit).
        let pooled = self.ln_post.rows(&pool.forward(&x, n, l), n, d);
        let features = self.proj.rows(n, &pooled, None, Act::None);
        let all = pool.forward_all(&x, n, l);
        let nq = all.len() / (n * d);
        let all = self.ln_post.rows(&all, n * nq, d);
        let e = features.len() / n;
        let mut out = Vec::with_capacity(n * (e + (nq - 1) * d));
        for (f, t) in features.chunks(e).zip(all.chunks(nq * d)) {
            out.extend_from_slice(f);
            out.extend_from_slice(&t[d..]);
        }
        Ok(out)
    }

    /// `px`: `n` images `[3, g*p, g*p]` (NCHW, normalised) -> `[n, embed_dim]`.
    pub fn forward(&self, px: &[f32], n: usize) -> Result<Vec<f32>> {
        let (x, l) = self.trunk(px, n)?;
        let width = self.conv1.out_dim();
        let x = match &self.attn_pool {
            Some(pool) => pool.forward(&self.transformer.forward(x, n, l, Mask::None)?, n, l),
            None if self.avg_pool => kernels::token_means(
                &self.transformer.forward(x, n, l, Mask::None)?,
                n,
                l,
                1,
                width,
            ),
            None => self.transformer.forward_at(x, n, l, &vec![0; n], false)?,
        };
        let x = self.ln_post.rows(&x, n, self.proj.in_dim());
        Ok(self.proj.rows(n, &x, None, Act::None))
    }

    /// The rows entering the blocks: class token and patches with their positions, after
    /// `ln_pre`; and how many a sequence has.
    fn trunk(&self, px: &[f32], n: usize) -> Result<(Vec<f32>, usize)> {
        let g = self.grid;
        let patches = patches(px, n, g * self.patch, self.patch)?;
        let tok = self.conv1.rows(n * g * g, &patches, None, Act::None);
        drop(patches);
        let width = self.conv1.out_dim();
        let (cls, pos) = (&self.class_embedding, &self.positional_embedding);
        let l = g * g + 1;
        // Safety: each image's task writes its class row and all its patch rows.
        let rows = unsafe {
            kernels::par_build(n * l * width, l * width, |b, dst| {
                let t = &tok[b * g * g * width..(b + 1) * g * g * width];
                let src = cls
                    .iter()
                    .zip(&pos[..width])
                    .chain(t.iter().zip(&pos[width..]));
                for (o, (a, b)) in dst.iter_mut().zip(src) {
                    o.write(a + b);
                }
            })
        };
        let x = match &self.ln_pre {
            Some(ln) => ln.rows(&rows, n * l, width),
            None => rows,
        };
        Ok((x, l))
    }
}
