//! Mirrors the reference's `VisualTransformer` in candle tensor ops: patch conv, class token,
//! positional embedding, `ln_pre`, the LEFF/standard transformer, `ln_post` of the class token,
//! then `proj`.

use super::config::{Config, VisionLayers};
use super::nn::{self, LayerNorm, Linear};
use super::transformer::Transformer;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct VisionTransformer {
    /// The patch conv (kernel = stride = patch, no bias) as a matmul over flattened patches.
    conv1: Linear,
    class_embedding: Tensor,
    positional_embedding: Tensor,
    ln_pre: LayerNorm,
    transformer: Transformer,
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
        let proj = nn::load(&vb, &[width, cfg.embed_dim], "proj")?;
        Ok(Self {
            conv1,
            class_embedding: nn::load(&vb, &[width], "class_embedding")?,
            positional_embedding: nn::load(&vb, &[grid * grid + 1, width], "positional_embedding")?,
            ln_pre: nn::layer_norm(width, vb.pp("ln_pre"))?,
            transformer: Transformer::new(
                width,
                layers,
                cfg.vision_heads(),
                Some(grid),
                super::transformer::Style::vision(cfg),
                vb.pp("transformer"),
            )?,
            ln_post: nn::layer_norm(width, vb.pp("ln_post"))?,
            proj: Linear::from_parts(&proj.t()?, None, dt)?,
            patch,
            grid,
        })
    }
}

impl Module for VisionTransformer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let (g, p) = (self.grid, self.patch);
        let x = x.to_dtype(candle_core::DType::F32)?;
        // [N, 3, g, p, g, p] -> [N, g, g, 3, p, p]: patches in the order the conv flattens them.
        let patches = x
            .reshape((n, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n, g * g, c * p * p))?;
        let tokens = self
            .conv1
            .forward(&patches)?
            .to_dtype(candle_core::DType::F32)?;
        let width = tokens.dim(2)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, width))?
            .broadcast_as((n, 1, width))?
            .contiguous()?;
        let x = Tensor::cat(&[cls, tokens], 1)?.broadcast_add(&self.positional_embedding)?;
        let x = self.ln_pre.forward(&x)?;
        let x = self
            .transformer
            .forward(&x, false)?
            .narrow(1, 0, 1)?
            .squeeze(1)?;
        let x = self.ln_post.forward(&x)?;
        self.proj.forward(&x)
    }
}
