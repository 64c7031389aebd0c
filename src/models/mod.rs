//! The PyramidCLIP model: one image encoder (ViT or ModifiedResNet) and the text encoder.

pub mod config;
pub mod nhwc;
pub mod nn;
pub mod ops;
pub mod resnet;
pub mod sgemm;
pub mod text;
pub mod transformer;
pub mod vit;
pub mod winograd;

pub use config::{Config, Registry, VisionLayers};

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub enum ImageEncoder {
    Vit(vit::VisionTransformer),
    ResNet(resnet::ModifiedResNet),
}

impl Module for ImageEncoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Vit(m) => m.forward(x),
            Self::ResNet(m) => m.forward(x),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PyramidClip {
    pub visual: ImageEncoder,
    pub text: text::TextEncoder,
    pub config: Config,
}

impl PyramidClip {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let visual = if cfg.is_vit() {
            ImageEncoder::Vit(vit::VisionTransformer::new(cfg, vb.pp("visual"))?)
        } else {
            ImageEncoder::ResNet(resnet::ModifiedResNet::new(cfg, vb.pp("visual"))?)
        };
        let text = text::TextEncoder::new(cfg, vb.clone())?;
        Ok(Self {
            visual,
            text,
            config: cfg.clone(),
        })
    }

    /// `pixels`: `[N, 3, R, R]` normalised images -> `[N, embed_dim]` raw features.
    pub fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        self.visual.forward(pixels)
    }

    /// `tokens`: `[N, context_length]` ids -> `[N, embed_dim]` raw features.
    pub fn encode_text(&self, tokens: &Tensor) -> Result<Tensor> {
        self.text.forward(tokens)
    }

    pub fn encode_image_normalized(&self, pixels: &Tensor) -> Result<Tensor> {
        nn::l2_normalize(&self.encode_image(pixels)?)
    }

    pub fn encode_text_normalized(&self, tokens: &Tensor) -> Result<Tensor> {
        nn::l2_normalize(&self.encode_text(tokens)?)
    }
}
