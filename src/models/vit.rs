//! Mirrors the reference's `VisualTransformer`: patch conv, class token, positional embedding,
//! `ln_pre`, the LEFF/standard transformer, `ln_post` of the class token, then `proj`.

use super::config::Config;
use super::nn::{self, LayerNorm, Linear};
use super::ops;
use super::sgemm::Act;
use super::transformer::Transformer;
use candle_core::{DType, Module, Result, Tensor};
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
    /// `x @ proj` as a linear layer (batch-independent rows on the CPU, as in the text tower).
    proj: Linear,
    patch: usize,
    grid: usize,
}

impl VisionTransformer {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let width = cfg.vision_width;
        let patch = cfg.vision_patch_size.unwrap_or(1);
        let grid = cfg.image_resolution / patch;
        let layers = match cfg.vision_layers {
            super::config::VisionLayers::Vit(l) => l,
            _ => candle_core::bail!("a ViT config needs an integer vision_layers"),
        };
        let dt = vb.dtype();
        let get = |shape: &[usize], name: &str| {
            vb.get_with_hints_dtype(shape, name, Default::default(), DType::F32)
        };
        let w = vb.pp("conv1").get_with_hints_dtype(
            (width, 3, patch, patch),
            "weight",
            Default::default(),
            DType::F32,
        )?;
        let conv1 = Linear::from_parts(&w.reshape((width, 3 * patch * patch))?, None, dt)?;
        Ok(Self {
            conv1,
            class_embedding: get(&[width], "class_embedding")?.to_dtype(dt)?,
            positional_embedding: get(&[grid * grid + 1, width], "positional_embedding")?
                .to_dtype(dt)?,
            ln_pre: nn::layer_norm(width, vb.pp("ln_pre"))?,
            transformer: Transformer::new(
                width,
                layers,
                cfg.vision_heads(),
                Some(grid),
                vb.pp("transformer"),
            )?,
            ln_post: nn::layer_norm(width, vb.pp("ln_post"))?,
            proj: Linear::from_parts(&get(&[width, cfg.embed_dim], "proj")?.t()?, None, dt)?,
            patch,
            grid,
        })
    }
}

impl VisionTransformer {
    /// The token rows `[N * (g*g + 1), width]` before `ln_pre`, built on plain buffers: patches
    /// gathered straight from the pixels in the conv's (channel, row, column) order, one gemm,
    /// then the class token and the positional embedding in the same pass.
    fn tokens_cpu(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(conv) = self.conv1.cpu() else {
            return Ok(None);
        };
        if !x.device().is_cpu() || x.dtype() != DType::F32 {
            return Ok(None);
        }
        let (n, c, h, w) = x.dims4()?;
        let (g, p) = (self.grid, self.patch);
        if h != g * p || w != g * p || conv.in_dim() != c * p * p {
            return Ok(None);
        }
        let x = x.contiguous()?;
        let Some(patches) = nn::with_cpu_f32(&x, |px| {
            // One image per task (a serial gather left the other thread idle).
            let per_image = g * g * c * p * p;
            // Safety: each image's task copies all of its `per_image` elements.
            unsafe {
                ops::par_build(n * per_image, per_image, |b, dst| {
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
            }
        }) else {
            return Ok(None);
        };
        let tok = conv.rows(n * g * g, &patches, None, Act::None);
        let width = conv.out_dim();
        let cls = self.class_embedding.to_vec1::<f32>()?;
        let pos = self.positional_embedding.flatten_all()?.to_vec1::<f32>()?;
        let l = g * g + 1;
        // Safety: each image's task writes its class row and all its patch rows.
        let rows = unsafe {
            ops::par_build(n * l * width, l * width, |b, dst| {
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
        Ok(Some(Tensor::from_vec(rows, (n, l, width), x.device())?))
    }
}

impl Module for VisionTransformer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(x) = self.tokens_cpu(x)? {
            let x = self.ln_pre.forward(&x)?;
            let x = self.transformer.forward_first(&x)?;
            let x = self.ln_post.forward(&x)?;
            return self.proj.forward(&x);
        }
        let (n, c, _, _) = x.dims4()?;
        let (g, p) = (self.grid, self.patch);
        // [N, 3, g, p, g, p] -> [N, g, g, 3, p, p]: patches in the order the conv flattens them.
        let patches = x
            .reshape((n, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n, g * g, c * p * p))?;
        let tokens = self.conv1.forward(&patches)?;
        let width = tokens.dim(2)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, width))?
            .broadcast_as((n, 1, width))?
            .contiguous()?;
        let x = Tensor::cat(&[cls, tokens], 1)?.broadcast_add(&self.positional_embedding)?;
        let x = self.ln_pre.forward(&x)?;
        let x = self.transformer.forward_first(&x)?;
        let x = self.ln_post.forward(&x)?;
        self.proj.forward(&x)
    }
}
