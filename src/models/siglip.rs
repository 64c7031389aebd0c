//! Mirrors timm's `VisionTransformer` as open_clip's SigLIP models build it (`TimmModel` with
//! `timm_pool: map`, `timm_proj: none`) in candle tensor ops: the patch conv with its bias, the
//! positional embedding (no class token), the blocks, the final norm, then the attention-pool
//! head (`AttentionPoolLatent`: one learned query attends to every token, `proj`, then
//! `x + mlp(norm(x))`), whose output is the image feature.

use super::config::{Activation, Config, VisionLayers};
use super::nn::{self, LayerNorm, Linear};
use super::transformer::{Mask, Style, Transformer};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// The attention-pool head's weights as both engines use them (`attn_pool.*`).
pub struct MapWeights {
    /// `q(latent)`, `[d]`: it does not depend on the image, so it is computed once here.
    pub query: Tensor,
}

impl MapWeights {
    pub fn new(d: usize, vb: &VarBuilder) -> Result<Self> {
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        let latent = f32(nn::load(vb, &[1, 1, d], "latent")?.reshape((1, d))?)?;
        let q = vb.pp("q");
        let w = f32(nn::load(&q, &[d, d], "weight")?)?;
        let b = f32(nn::load(&q, &[d], "bias")?)?;
        Ok(Self {
            query: latent.matmul(&w.t()?)?.squeeze(0)?.add(&b)?,
        })
    }
}

/// timm's `AttentionPoolLatent` with one latent query and an output as wide as its input.
/// Scores, softmax and value sums in f32.
#[derive(Debug, Clone)]
pub struct MapHead {
    query: Tensor,
    kv: Linear,
    proj: Linear,
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
    heads: usize,
}

impl MapHead {
    pub fn new(
        d: usize,
        heads: usize,
        mlp: usize,
        act: Activation,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let w = MapWeights::new(d, &vb)?;
        let m = vb.pp("mlp");
        Ok(Self {
            query: w.query,
            kv: nn::linear(d, 2 * d, vb.pp("kv"))?,
            proj: nn::linear(d, d, vb.pp("proj"))?,
            norm: nn::layer_norm_eps(d, eps, vb.pp("norm"))?,
            fc1: nn::linear(d, mlp, m.pp("fc1"))?,
            fc2: nn::linear(mlp, d, m.pp("fc2"))?,
            act,
            heads,
        })
    }
}

impl Module for MapHead {
    /// `[N, L, d]` tokens -> `[N, d]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kv = self.kv.forward_f32(x)?;
        let out = super::vit::query_attention(&self.query, &kv, self.heads)?;
        let y = self.proj.forward_f32(&out)?;
        let hid = self.fc1.forward_act(
            &self.norm.forward_to(&y, self.fc1.dtype())?,
            nn::act_of(self.act),
        )?;
        self.fc2.forward_residual(&hid, &y)
    }
}

#[derive(Debug, Clone)]
pub struct SiglipVision {
    /// The patch conv (kernel = stride = patch) as a matmul over flattened patches, with its
    /// bias.
    patch_embed: Linear,
    pos_embed: Tensor,
    blocks: Transformer,
    norm: LayerNorm,
    attn_pool: MapHead,
    patch: usize,
    grid: usize,
}

impl SiglipVision {
    /// `vb`: the trunk (`visual.trunk`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let width = cfg.vision_width;
        let patch = cfg.vision_patch_size.unwrap_or(1);
        let grid = cfg.image_resolution / patch;
        let VisionLayers::Vit(layers) = cfg.vision_layers else {
            candle_core::bail!("a SigLIP config needs an integer vision_layers")
        };
        let style = Style::vision(cfg);
        let pe = vb.pp("patch_embed").pp("proj");
        let w = nn::load(&pe, &[width, 3, patch, patch], "weight")?;
        let b = nn::load(&pe, &[width], "bias")?;
        let heads = cfg.vision_heads();
        Ok(Self {
            patch_embed: Linear::from_parts(
                &w.reshape((width, 3 * patch * patch))?,
                Some(b),
                vb.dtype(),
            )?,
            pos_embed: nn::load(&vb, &[1, grid * grid, width], "pos_embed")?.squeeze(0)?,
            // timm's blocks sit at the trunk's root (`blocks.N`).
            blocks: Transformer::new(width, layers, heads, None, style, vb.clone())?,
            norm: nn::layer_norm_eps(width, style.eps, vb.pp("norm"))?,
            attn_pool: MapHead::new(
                width,
                heads,
                style.mlp_width(width),
                style.activation,
                style.eps,
                vb.pp("attn_pool"),
            )?,
            patch,
            grid,
        })
    }
}

impl Module for SiglipVision {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let patches = super::vit::patches(x, self.grid, self.patch)?;
        let x = self
            .patch_embed
            .forward(&patches)?
            .to_dtype(DType::F32)?
            .broadcast_add(&self.pos_embed)?;
        let x = self.blocks.forward(&x, Mask::None)?;
        let x = self.norm.forward(&x)?;
        self.attn_pool.forward(&x)
    }
}
