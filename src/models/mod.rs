//! The architectures: configurations with their named presets, and the candle implementation
//! of each encoder (any device, any dtype). Field names follow the checkpoint's key segments.
//! The native CPU engine (`crate::native`) builds the same architectures from the same keys.

pub mod coca;
pub mod config;
pub mod conv;
pub mod convnext;
pub mod eva;
pub mod fastvit;
pub mod fused;
pub mod hf_text;
pub mod nn;
pub mod resnet;
pub mod siglip;
pub mod text;
pub mod transformer;
pub mod vit;
pub mod vitamin;

pub use config::{
    Activation, AttnPool, CocaDecoder, Config, Family, HfPooler, HfProj, HfText, Registry,
    VisionLayers,
};

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Where a model's text tower keys live: open_clip's CoCa and SigLIP (custom-text models) keep
/// them under `text.`, CLIP and PyramidCLIP at the top level.
pub fn text_root<'a>(cfg: &Config, vb: VarBuilder<'a>) -> VarBuilder<'a> {
    if cfg.family.custom_text() {
        vb.pp("text")
    } else {
        vb
    }
}

#[derive(Debug, Clone)]
pub enum ImageEncoder {
    Vit(vit::VisionTransformer),
    ResNet(resnet::ModifiedResNet),
    ConvNext(convnext::ConvNext),
    Siglip(siglip::SiglipVision),
    Eva(eva::EvaVision),
    FastVit(fastvit::FastVit),
}

impl ImageEncoder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(if cfg.siglip.is_some() {
            Self::Siglip(siglip::SiglipVision::new(cfg, vb.pp("trunk"))?)
        } else if cfg.vision_eva.is_some() {
            Self::Eva(eva::EvaVision::new(cfg, vb)?)
        } else if cfg.vision_fastvit.is_some() {
            Self::FastVit(fastvit::FastVit::new(cfg, vb.pp("trunk"))?)
        } else if cfg.vision_timm.is_some() {
            Self::ConvNext(convnext::ConvNext::new(cfg, vb)?)
        } else if cfg.is_vit() {
            Self::Vit(vit::VisionTransformer::new(cfg, vb)?)
        } else {
            Self::ResNet(resnet::ModifiedResNet::new(cfg, vb)?)
        })
    }
}

impl Module for ImageEncoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Vit(m) => m.forward(x),
            Self::ResNet(m) => m.forward(x),
            Self::ConvNext(m) => m.forward(x),
            Self::Siglip(m) => m.forward(x),
            Self::Eva(m) => m.forward(x),
            Self::FastVit(m) => m.forward(x),
        }
    }
}

/// The text tower: CLIP's transformer (PyramidCLIP's, CoCa's and SigLIP's variants) or an
/// HF encoder.
#[derive(Debug, Clone)]
pub enum TextTower {
    Clip(text::TextEncoder),
    Hf(hf_text::HfTextEncoder),
}

impl TextTower {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(if cfg.hf_text.is_some() {
            Self::Hf(hf_text::HfTextEncoder::new(cfg, vb)?)
        } else {
            Self::Clip(text::TextEncoder::new(cfg, vb)?)
        })
    }
}

impl Module for TextTower {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Clip(m) => m.forward(x),
            Self::Hf(m) => m.forward(x),
        }
    }
}

/// The whole model on the candle engine: `visual.*` and the text tower's top-level keys
/// (CoCa's under `text.`).
#[derive(Debug, Clone)]
pub struct PyramidClip {
    pub visual: ImageEncoder,
    pub text: TextTower,
}

impl PyramidClip {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            visual: ImageEncoder::new(cfg, vb.pp("visual"))?,
            text: TextTower::new(cfg, text_root(cfg, vb))?,
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

    /// CoCa: raw image features and the tokens its captioning decoder attends to (see
    /// [`vit::VisionTransformer::forward_with_tokens`]).
    pub fn encode_image_with_tokens(&self, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        match &self.visual {
            ImageEncoder::Vit(v) => v.forward_with_tokens(pixels),
            _ => candle_core::bail!("only CoCa's image tower gives tokens"),
        }
    }

    /// CoCa: the text tower's rows before `ln_final` at a caption's positions but the last,
    /// `[N, context_length - 1, width]` (see [`text::TextEncoder::caption_tokens`]).
    pub fn caption_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        match &self.text {
            TextTower::Clip(t) => t.caption_tokens(tokens),
            TextTower::Hf(_) => candle_core::bail!("only CoCa's text tower gives caption tokens"),
        }
    }

    /// CoCa: the same rows at every position of generated prefixes `[N, t]`, `[N, t, width]`.
    pub fn prefix_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        match &self.text {
            TextTower::Clip(t) => t.prefix_tokens(tokens),
            TextTower::Hf(_) => candle_core::bail!("only CoCa's text tower gives caption tokens"),
        }
    }

    /// CoCa: those rows at the last position only of `n` prefixes of `t` ids, their earlier
    /// positions' keys and values read from `cache` (see [`text::TextEncoder::prefix_step`]).
    /// `[n, 1, width]`.
    pub fn prefix_step(
        &self,
        ids: &[u32],
        n: usize,
        t: usize,
        cache: &mut transformer::KvCache,
        parent: &[usize],
    ) -> Result<Tensor> {
        match &self.text {
            TextTower::Clip(tower) => tower.prefix_step(ids, n, t, cache, parent),
            TextTower::Hf(_) => candle_core::bail!("only CoCa's text tower gives caption tokens"),
        }
    }
}
