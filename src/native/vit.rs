//! Mirrors the reference's `VisualTransformer` on plain buffers: the patch conv as one product
//! over patches gathered straight from the pixels, class token and positional embedding in the
//! same pass, `ln_pre`, the transformer (the last block for the class token only), `ln_post`,
//! `proj`.

use super::gemm::{Act, GemmConfig};
use super::kernels;
use super::layers::{to_vec, LayerNorm, Linear};
use super::transformer::Transformer;
use crate::models::nn as fold;
use crate::models::{Config, VisionLayers};
use candle_core::Result;
use candle_nn::VarBuilder;

#[derive(Debug)]
pub struct VisionTransformer {
    /// The patch conv (kernel = stride = patch, no bias) as a product over flattened patches.
    conv1: Linear,
    class_embedding: Vec<f32>,
    positional_embedding: Vec<f32>,
    ln_pre: LayerNorm,
    transformer: Transformer,
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
        let proj = fold::load(&vb, &[width, cfg.embed_dim], "proj")?;
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
            ln_pre: LayerNorm::new(width, vb.pp("ln_pre"))?,
            transformer: Transformer::new(
                width,
                layers,
                cfg.vision_heads(),
                Some(grid),
                crate::models::transformer::Style::vision(cfg),
                vb.pp("transformer"),
                gemm,
            )?,
            ln_post: LayerNorm::new(width, vb.pp("ln_post"))?,
            proj: Linear::from_parts(&proj.t()?, None, gemm)?,
            patch,
            grid,
        })
    }

    /// `px`: `n` images `[3, g*p, g*p]` (NCHW, normalised) -> `[n, embed_dim]`.
    pub fn forward(&self, px: &[f32], n: usize) -> Result<Vec<f32>> {
        let (g, p, c) = (self.grid, self.patch, 3);
        let (h, w) = (g * p, g * p);
        if px.len() != n * c * h * w {
            candle_core::bail!("expected {n} images of 3x{h}x{w} pixels");
        }
        // One image per task (a serial gather left the other thread idle).
        let per_image = g * g * c * p * p;
        // Safety: each image's task copies all of its `per_image` elements.
        let patches = unsafe {
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
        };
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
        let x = self.ln_pre.rows(&rows, n * l, width);
        drop(rows);
        let x = self.transformer.forward_at(x, n, l, &vec![0; n], false)?;
        let x = self.ln_post.rows(&x, n, width);
        Ok(self.proj.rows(n, &x, None, Act::None))
    }
}
