//! Mirrors timm's `VisionTransformer` as open_clip's SigLIP models build it on plain buffers:
//! the patch conv (with its bias) as one product over gathered patches, the positional
//! embedding (no class token), the blocks, the final norm, then the attention-pool head
//! (`AttentionPoolLatent`): its query projected once at load, the keys' and values' product,
//! attention, `proj`, and `x + mlp(norm(x))`.

use super::gemm::{Act, GemmConfig};
use super::kernels::Mask;
use super::layers::{to_vec, LayerNorm, Linear};
use super::transformer::{act_of, Transformer};
use super::vit::query_attention;
use crate::models::siglip::MapWeights;
use crate::models::transformer::Style;
use crate::models::{Config, VisionLayers};
use candle_core::Result;
use candle_nn::VarBuilder;

/// The attention-pool head (`models::siglip::MapHead`). In f32 under bf16 too (as the patch
/// conv): one query per image, ~1/(2 x depth) of the tower's work.
#[derive(Debug)]
pub struct MapHead {
    query: Vec<f32>,
    kv: Linear,
    proj: Linear,
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Act,
    heads: usize,
}

impl MapHead {
    pub fn new(
        d: usize,
        heads: usize,
        style: Style,
        vb: VarBuilder,
        gemm: GemmConfig,
    ) -> Result<Self> {
        let gemm = GemmConfig {
            bf16: false,
            ..gemm
        };
        let mlp = style.mlp_width(d);
        let m = vb.pp("mlp");
        Ok(Self {
            query: to_vec(&MapWeights::new(d, &vb)?.query)?,
            kv: Linear::new(d, 2 * d, vb.pp("kv"), gemm)?,
            proj: Linear::new(d, d, vb.pp("proj"), gemm)?,
            norm: LayerNorm::with_eps(d, style.eps as f32, vb.pp("norm"))?,
            fc1: Linear::new(d, mlp, m.pp("fc1"), gemm)?,
            fc2: Linear::new(mlp, d, m.pp("fc2"), gemm)?,
            act: act_of(style.activation),
            heads,
        })
    }

    /// `n` sequences of `l` tokens `[n * l, d]` -> `[n, d]`.
    pub fn forward(&self, x: &[f32], n: usize, l: usize) -> Vec<f32> {
        let d = self.query.len();
        let kv = self.kv.rows(n * l, x, None, Act::None);
        let att = query_attention(self.kv.config(), &self.query, &kv, n, l, self.heads);
        let y = self.proj.rows(n, &att, None, Act::None);
        let h = self.norm.rows(&y, n, d);
        let h = self.fc1.rows(n, &h, None, self.act);
        self.fc2.rows(n, &h, Some(&y), Act::None)
    }
}

#[derive(Debug)]
pub struct SiglipVision {
    /// The patch conv (kernel = stride = patch) as a product over flattened patches.
    patch_embed: Linear,
    pos_embed: Vec<f32>,
    blocks: Transformer,
    norm: LayerNorm,
    attn_pool: MapHead,
    patch: usize,
    grid: usize,
    /// The input's side (a remainder past `grid * patch` is left out, as timm's conv does).
    side: usize,
}

impl SiglipVision {
    /// `vb`: the trunk (`visual.trunk`).
    pub fn new(cfg: &Config, vb: VarBuilder, gemm: GemmConfig) -> Result<Self> {
        let width = cfg.vision_width;
        let patch = cfg.vision_patch_size.unwrap_or(1);
        let grid = cfg.image_resolution / patch;
        let VisionLayers::Vit(layers) = cfg.vision_layers else {
            candle_core::bail!("a SigLIP config needs an integer vision_layers")
        };
        let style = Style::vision(cfg);
        let pe = vb.pp("patch_embed").pp("proj");
        let w = crate::models::nn::load(&pe, &[width, 3, patch, patch], "weight")?;
        let b = crate::models::nn::load(&pe, &[width], "bias")?;
        let heads = cfg.vision_heads();
        Ok(Self {
            // The pixels stay f32 under bf16 (as the CLIP ViT's patch conv).
            patch_embed: Linear::from_parts(
                &w.reshape((width, 3 * patch * patch))?,
                Some(&b),
                GemmConfig {
                    bf16: false,
                    ..gemm
                },
            )?,
            pos_embed: to_vec(&crate::models::nn::load(
                &vb,
                &[1, grid * grid, width],
                "pos_embed",
            )?)?,
            blocks: Transformer::new(width, layers, heads, None, style, vb.clone(), gemm)?,
            norm: LayerNorm::with_eps(width, style.eps as f32, vb.pp("norm"))?,
            attn_pool: MapHead::new(width, heads, style, vb.pp("attn_pool"), gemm)?,
            patch,
            grid,
            side: cfg.image_resolution,
        })
    }

    /// `px`: `n` images `[3, r, r]` (NCHW, normalised) -> `[n, width]`.
    pub fn forward(&self, px: &[f32], n: usize) -> Result<Vec<f32>> {
        let g = self.grid;
        let l = g * g;
        let patches = super::vit::patches(px, n, self.side, self.patch)?;
        let mut x = self.patch_embed.rows(n * l, &patches, None, Act::None);
        drop(patches);
        let width = self.patch_embed.out_dim();
        for img in x.chunks_mut(l * width) {
            for (o, &p) in img.iter_mut().zip(&self.pos_embed) {
                *o += p;
            }
        }
        let x = self.blocks.forward(x, n, l, Mask::None)?;
        let x = self.norm.rows(&x, n * l, width);
        Ok(self.attn_pool.forward(&x, n, l))
    }
}
