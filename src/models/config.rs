//! Architecture configurations in the upstream `models/model_config.yml` format.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model config `{name}`: {msg}")]
    Invalid { name: String, msg: String },
    #[error("cannot read model config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model config {path} is malformed: {msg}")]
    Malformed { path: PathBuf, msg: String },
    #[error("model config {path}: {msg}")]
    Unsupported { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    InFile { path: PathBuf, source: Box<Error> },
    #[error("unknown model `{name}`{hint}; known: {known}; add others with --model-config")]
    Unknown {
        name: String,
        hint: String,
        known: String,
    },
}

/// `vision_layers` is a list for ResNets and a number for ViTs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VisionLayers {
    Vit(usize),
    ResNet(Vec<usize>),
}

/// Which model family's layout: PyramidCLIP's (transformer blocks split into `resblocks1` /
/// `resblocks2`, LEFF MLPs in the ViT's first nine, text max-pooled over all positions) or
/// CLIP's (OpenAI / open_clip: `resblocks.N`, the standard MLP everywhere, text features at the
/// end-of-text position) or open_clip's CoCa (CLIP's blocks; the text tower under `text.`
/// with a class token appended after the prompt, pooled there; the image tower ending in an
/// attentional pooler) or open_clip's SigLIP (a timm ViT image tower pooled by its attention
/// head; the text tower under `text.` without causal mask, pooled at the last position, with
/// a HuggingFace tokenizer) or open_clip's models with a HuggingFace text tower (CLIP's image
/// tower; a RoBERTa / XLM-RoBERTa encoder under `text.transformer`, pooled, then projected)
/// or open_clip's other custom-text models (CLIP's own text tower under `text.`; the image
/// tower a timm EVA trunk) or open_clip's CLIPA (CLIP's key layout; the image tower without
/// `ln_pre`, the mean of its patch tokens through `ln_post`; the text tower without causal
/// mask, pooled at the last position, with a BERT WordPiece tokenizer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Family {
    #[default]
    #[serde(rename = "pyramidclip")]
    PyramidClip,
    #[serde(rename = "clip")]
    Clip,
    #[serde(rename = "coca")]
    Coca,
    #[serde(rename = "siglip")]
    Siglip,
    #[serde(rename = "hf-text")]
    HfText,
    #[serde(rename = "custom-text")]
    CustomText,
    #[serde(rename = "clipa")]
    Clipa,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::PyramidClip => "pyramidclip",
            Family::Clip => "clip",
            Family::Coca => "coca",
            Family::Siglip => "siglip",
            Family::HfText => "hf-text",
            Family::CustomText => "custom-text",
            Family::Clipa => "clipa",
        }
    }

    /// CLIP's transformer layout (`resblocks.N`, the standard MLP) and tokenizer use.
    pub fn clip_layout(self) -> bool {
        !matches!(self, Family::PyramidClip)
    }

    /// Whether the text tower's keys are under `text.` (open_clip's custom-text models).
    pub fn custom_text(self) -> bool {
        matches!(
            self,
            Family::Coca | Family::Siglip | Family::HfText | Family::CustomText
        )
    }

    /// Whether the text tower takes a HuggingFace tokenizer's ids (SigLIP's, the HF text
    /// towers', CLIPA's) rather than CLIP's BPE.
    pub fn hf_tokenizer(self) -> bool {
        matches!(self, Family::Siglip | Family::HfText | Family::Clipa)
    }

    /// Whether the text tower sees every position from every other and pools the last one
    /// (SigLIP's, CLIPA's: open_clip's `no_causal_mask` with `pool_type: last`).
    pub fn pools_last(self) -> bool {
        matches!(self, Family::Siglip | Family::Clipa)
    }
}

/// timm's SigLIP ViTs that open_clip's SigLIP configs name (`vision_cfg.timm_model_name`),
/// with their sizes and what the weights cannot show: the heads and the MLPs' activation.
pub struct SiglipVitSpec {
    pub name: &'static str,
    pub patch: usize,
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    /// timm's `int(width * mlp_ratio)`.
    pub mlp_width: usize,
    pub activation: Activation,
}

const fn siglip_vit(name: &'static str, size: [usize; 5], tanh: bool) -> SiglipVitSpec {
    let [patch, width, depth, heads, mlp_width] = size;
    SiglipVitSpec {
        name,
        patch,
        width,
        depth,
        heads,
        mlp_width,
        activation: if tanh {
            Activation::GeluTanh
        } else {
            Activation::Gelu
        },
    }
}

const B16: [usize; 5] = [16, 768, 12, 12, 3072];
const L16: [usize; 5] = [16, 1024, 24, 16, 4096];
const SO14: [usize; 5] = [14, 1152, 27, 16, 4304];
const SO16: [usize; 5] = [16, 1152, 27, 16, 4304];
const GOPT16: [usize; 5] = [16, 1536, 40, 16, 6144];

/// timm 1.0's `vit_*_siglip_*` with the `map` head: patch, width, depth, heads, MLP width,
/// and whether the MLPs use GELU's tanh approximation.
pub const SIGLIP_VITS: &[SiglipVitSpec] = &[
    siglip_vit("vit_base_patch32_siglip_256", [32, 768, 12, 12, 3072], true),
    siglip_vit("vit_base_patch16_siglip_224", B16, false),
    siglip_vit("vit_base_patch16_siglip_256", B16, false),
    siglip_vit("vit_base_patch16_siglip_384", B16, false),
    siglip_vit("vit_base_patch16_siglip_512", B16, false),
    siglip_vit("vit_large_patch16_siglip_256", L16, false),
    siglip_vit("vit_large_patch16_siglip_384", L16, false),
    siglip_vit("vit_large_patch16_siglip_512", L16, true),
    siglip_vit("vit_so400m_patch14_siglip_224", SO14, false),
    siglip_vit("vit_so400m_patch14_siglip_378", SO14, false),
    siglip_vit("vit_so400m_patch14_siglip_384", SO14, false),
    siglip_vit("vit_so400m_patch16_siglip_256", SO16, true),
    siglip_vit("vit_so400m_patch16_siglip_384", SO16, true),
    siglip_vit("vit_so400m_patch16_siglip_512", SO16, true),
    siglip_vit("vit_giantopt_patch16_siglip_256", GOPT16, true),
    siglip_vit("vit_giantopt_patch16_siglip_384", GOPT16, true),
];

/// The kinds of timm EVA trunk open_clip's configs name, with what their weights cannot show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvaKind {
    /// EVA01-g: one q/k/v product with `q_bias` / `v_bias`, GELU MLPs.
    Eva01,
    /// EVA02 B / L: separate q/k/v projections, the 2-D rotary embedding (positions scaled to
    /// a 16 x 16 grid), a LayerNorm after attention, SwiGLU MLPs with a LayerNorm before `fc2`.
    Eva02,
    /// EVA02-E: EVA01's blocks, post-norm.
    Eva02E,
    /// timm's plain `VisionTransformer` as its CLIP-style trunks set it (`pre_norm`: a
    /// LayerNorm before the blocks, the patch conv without bias), one q/k/v product with its
    /// own bias, GELU MLPs, LayerNorm eps 1e-5, pooled at the class token (MobileCLIP2-L-14's).
    Vit,
    /// timm's `vit_base_mci_224` (MobileCLIP-B's image tower): a convolutional stem in place of
    /// the patch conv (4x4 / 4 to width / 4, BatchNorm, GELU; 2x2 / 2, BatchNorm, GELU; 2x2 / 2
    /// with bias to width), the positional embedding over the patches only (`no_embed_class`),
    /// then the class token; plain ViT blocks (eps 1e-6), pooled at the class token.
    Mci,
    /// Meta's Perception Encoder (PE-Core): a LayerNorm before the blocks (the patch conv
    /// without bias), one q/k/v product with its own bias (timm's `AttentionRope`), the rotary
    /// embedding over an `xy` grid counted from `offset` and scaled to `rope_grid`, GELU MLPs,
    /// the attention-pool head (8 heads) then `head`; LayerNorm eps 1e-5; the gigantic one
    /// without class token.
    Pe {
        rope_grid: usize,
        offset: usize,
        class_token: bool,
    },
    /// timm's ViTamin (`vitamin_*`): convolutional stages in place of the patch conv (timm's
    /// `MbConvStages`: a stem `stem` wide, MBConv stages `stem` and `2 stem` wide, 2 and 4
    /// deep, a strided conv to the width; 16 pixels a token), no class token, plain ViT
    /// blocks with GeGLU MLPs (a LayerNorm of their own first), the mean of the tokens through
    /// `fc_norm`, then open_clip's `head.proj`; the largest without positional embedding.
    Vitamin { stem: usize, pos_embed: bool },
    /// timm's plain `VisionTransformer` without class token, pooled by the mean of the tokens
    /// after the final norm (`global_pool='avg'`, `fc_norm=False`): one q/k/v product without
    /// bias, layer scale (`ls1`, `ls2`), GELU MLPs, then open_clip's `head.proj`
    /// (`vit_medium_patch16_gap_256`).
    Gap,
    /// timm's `VisionTransformerRelPos` with a class token: no absolute positions, each
    /// block's attention scores biased by its log-coordinate relative-position MLP
    /// (`attn.rel_pos.mlp`, timm's `RelPosMlp` in its `cr` mode; zero for the class token),
    /// one q/k/v product without bias, layer scale, GELU MLPs, pooled at the class token after
    /// the final norm, then open_clip's `head.proj` (`vit_relpos_medium_patch16_cls_224`).
    RelPos,
}

/// timm's EVA trunks (`timm/models/eva.py`) that open_clip's EVA and PE configs name
/// (`vision_cfg.timm_model_name`), with their sizes and kind.
pub struct EvaSpec {
    pub name: &'static str,
    pub image: usize,
    pub patch: usize,
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    /// timm's `int(width * mlp_ratio)`.
    pub mlp_width: usize,
    pub kind: EvaKind,
}

impl EvaSpec {
    /// open_clip's `timm_pool` for this trunk: the class token, or PE's attention-pool head.
    pub fn pool(&self) -> &'static str {
        match self.kind {
            EvaKind::Pe { .. } => "map",
            EvaKind::Vitamin { .. } | EvaKind::Gap | EvaKind::RelPos => "",
            _ => "token",
        }
    }
}

const fn eva(name: &'static str, size: [usize; 6], kind: EvaKind) -> EvaSpec {
    let [image, patch, width, depth, heads, mlp_width] = size;
    EvaSpec {
        name,
        image,
        patch,
        width,
        depth,
        heads,
        mlp_width,
        kind,
    }
}

const EVA_G: [usize; 6] = [224, 14, 1408, 40, 16, 6144];

const fn pe(rope_grid: usize) -> EvaKind {
    EvaKind::Pe {
        rope_grid,
        offset: 1,
        class_token: true,
    }
}

/// timm 1.0's EVA trunks of open_clip's EVA01 / EVA02 / PE-Core configs, and the plain timm
/// ViTs of its MobileCLIP configs (the same keys): image, patch, width, depth, heads, MLP width.
pub const EVA_VITS: &[EvaSpec] = &[
    eva("eva_giant_patch14_224", EVA_G, EvaKind::Eva01),
    eva("eva_giant_patch14_clip_224", EVA_G, EvaKind::Eva01),
    eva(
        "eva02_base_patch16_clip_224",
        [224, 16, 768, 12, 12, 2048],
        EvaKind::Eva02,
    ),
    eva(
        "eva02_large_patch14_clip_224",
        [224, 14, 1024, 24, 16, 2730],
        EvaKind::Eva02,
    ),
    eva(
        "eva02_large_patch14_clip_336",
        [336, 14, 1024, 24, 16, 2730],
        EvaKind::Eva02,
    ),
    eva(
        "eva02_enormous_patch14_clip_224",
        [224, 14, 1792, 64, 16, 15360],
        EvaKind::Eva02E,
    ),
    eva(
        "vit_large_patch14_clip_224",
        [224, 14, 1024, 24, 16, 4096],
        EvaKind::Vit,
    ),
    eva(
        "vit_base_mci_224",
        [224, 16, 768, 12, 12, 3072],
        EvaKind::Mci,
    ),
    eva(
        "vit_pe_core_tiny_patch16_384",
        [384, 16, 192, 12, 3, 768],
        pe(24),
    ),
    eva(
        "vit_pe_core_small_patch16_384",
        [384, 16, 384, 12, 6, 1536],
        pe(24),
    ),
    eva(
        "vit_pe_core_base_patch16_224",
        [224, 16, 768, 12, 12, 3072],
        pe(14),
    ),
    eva(
        "vit_pe_core_large_patch14_336",
        [336, 14, 1024, 24, 16, 4096],
        pe(24),
    ),
    eva(
        "vit_pe_core_gigantic_patch14_448",
        [448, 14, 1536, 50, 16, 8960],
        EvaKind::Pe {
            rope_grid: 32,
            offset: 0,
            class_token: false,
        },
    ),
    eva(
        "vitamin_small_224",
        [224, 16, 384, 14, 6, 768],
        vitamin(64, true),
    ),
    eva(
        "vitamin_base_224",
        [224, 16, 768, 14, 12, 1536],
        vitamin(128, true),
    ),
    eva("vitamin_large_224", VITAMIN_L(224), vitamin(160, true)),
    eva("vitamin_large_256", VITAMIN_L(256), vitamin(160, true)),
    eva("vitamin_large_336", VITAMIN_L(336), vitamin(160, true)),
    eva("vitamin_large_384", VITAMIN_L(384), vitamin(160, true)),
    eva("vitamin_large2_224", VITAMIN_L(224), vitamin(160, true)),
    eva("vitamin_large2_256", VITAMIN_L(256), vitamin(160, true)),
    eva("vitamin_large2_336", VITAMIN_L(336), vitamin(160, true)),
    eva("vitamin_large2_384", VITAMIN_L(384), vitamin(160, true)),
    eva("vitamin_xlarge_256", VITAMIN_XL(256), vitamin(192, false)),
    eva("vitamin_xlarge_336", VITAMIN_XL(336), vitamin(192, false)),
    eva("vitamin_xlarge_384", VITAMIN_XL(384), vitamin(192, false)),
    eva(
        "vit_medium_patch16_gap_256",
        [256, 16, 512, 12, 8, 2048],
        EvaKind::Gap,
    ),
    eva(
        "vit_relpos_medium_patch16_cls_224",
        [224, 16, 512, 12, 8, 2048],
        EvaKind::RelPos,
    ),
];

const fn vitamin(stem: usize, pos_embed: bool) -> EvaKind {
    EvaKind::Vitamin { stem, pos_embed }
}

#[allow(non_snake_case)]
const fn VITAMIN_L(image: usize) -> [usize; 6] {
    [image, 16, 1024, 31, 16, 2048]
}

#[allow(non_snake_case)]
const fn VITAMIN_XL(image: usize) -> [usize; 6] {
    [image, 16, 1152, 32, 16, 2304]
}

/// ViTamin's convolutional stages (timm's `MbConvStages` under `patch_embed.backbone`): the
/// stem (3x3 / 2 conv, LayerNorm2d + GELU, 3x3 conv), MBConv stages of these widths and
/// depths (each opened at stride 2), then `pool` (LayerNorm2d, 3x3 / 2 conv to the width).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MbConvStages {
    pub stem: usize,
    pub widths: [usize; 2],
    pub depths: [usize; 2],
}

impl MbConvStages {
    /// timm's ViTamin stages for a stem this wide.
    pub fn vitamin(stem: usize) -> Self {
        Self {
            stem,
            widths: [stem, 2 * stem],
            depths: [2, 4],
        }
    }
}

/// EVA02's rotary embedding: positions scaled to this grid (timm's `ref_feat_shape`).
pub const EVA_ROPE_GRID: usize = 16;

/// PE's attention-pool head's heads (timm's `attn_pool_num_heads`).
pub const PE_MAP_HEADS: usize = 8;

fn yes() -> bool {
    true
}

fn timm_eps() -> f64 {
    1e-6
}

/// A timm EVA image tower (open_clip's `TimmModel` with the trunk's own head as the
/// projection, pooled at the class token or by the attention-pool head): the trunk's name and
/// options; its sizes are `vision_*`, its MLP width `vision_mlp_width`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaTower {
    pub model: String,
    /// One `attn.qkv` product rather than `q_proj`, `k_proj` (bias-free) and `v_proj`; its
    /// bias `q_bias` and `v_bias` (no key bias; timm's `EvaAttention`) unless `fused_bias`.
    pub qkv_fused: bool,
    /// The fused product's own bias (`attn.qkv.bias`; timm's `AttentionRope`, PE's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fused_bias: bool,
    /// SwiGLU MLPs (`fc1_g`, `fc1_x`, `silu(g) * x`, `fc2`) rather than GELU ones (`fc1`, `fc2`).
    pub swiglu: bool,
    /// A LayerNorm before the MLP's `fc2` (`mlp.norm`, timm's `scale_mlp`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mlp_norm: bool,
    /// A LayerNorm on the attention's output before `proj` (`attn.norm`, `scale_attn_inner`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attn_norm: bool,
    /// Post-norm blocks: `x + norm1(attn(x))`, `x + norm2(mlp(x))`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub post_norm: bool,
    /// The 2-D rotary embedding on the patch tokens' queries and keys, positions scaled to a
    /// grid this wide (timm's `ref_feat_shape`); None without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope: Option<usize>,
    /// The rotary positions counted from this (timm's `rope_grid_offset`: PE's 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rope_offset: usize,
    /// The rotary embedding's first half of each head turned by the column, the second by the
    /// row (timm's `rope_grid_indexing='xy'`: PE's), rather than the row first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rope_xy: bool,
    /// A class token before the patches (pooled unless `map_heads`).
    #[serde(default = "yes")]
    pub class_token: bool,
    /// A LayerNorm before the blocks (`norm_pre`), the patch conv then without bias.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub norm_pre: bool,
    /// The attention-pool head (`attn_pool`, timm's `AttentionPoolLatent`: one latent query,
    /// this many heads, a 4x GELU MLP) in place of the class token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_heads: Option<usize>,
    /// timm's LayerNorms' eps: 1e-6, PE's 1e-5.
    #[serde(default = "timm_eps")]
    pub eps: f64,
    /// `vit_base_mci_224`'s convolutional stem (`patch_embed.backbone`: two convs with
    /// BatchNorm and GELU, kernel = stride 4 then 2, then a 2 / 2 conv with bias) in place of
    /// the patch conv; the three strides make the patch size.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conv_stem: bool,
    /// The positional embedding over the patch tokens only, added before the class token is
    /// put in front (timm's `no_embed_class`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_embed_class: bool,
    /// ViTamin's convolutional stages in place of the patch conv (16 pixels a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbconv: Option<MbConvStages>,
    /// GeGLU MLPs (timm's `GeGluMlp`: `mlp.norm` on the input, `gelu(w0 x) * w1 x`, `w2`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub geglu: bool,
    /// The mean of the tokens through `fc_norm` (timm's `global_pool='avg'`; no final `norm`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub avg_pool: bool,
    /// open_clip's projection after the trunk (`visual.head.proj`, no bias: `timm_proj:
    /// linear`) in place of the trunk's own `head`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head_proj: bool,
    /// A learned positional embedding (`pos_embed`); ViTamin-XL has none.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub pos_embed: bool,
    /// A bias on the q/k/v product (`attn.qkv.bias`, or `q_bias` / `v_bias`); timm's
    /// `qkv_bias=False` has none.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub qkv_bias: bool,
    /// timm's layer scale: each branch's output times a per-channel `gamma` (`ls1` after
    /// attention, `ls2` after the MLP), folded into the branch's last linear at load.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub layer_scale: bool,
    /// The mean of the tokens after the final `norm` (timm's `global_pool='avg'` with
    /// `fc_norm=False`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub norm_mean: bool,
    /// Each block's attention scores biased by its relative-position MLP (`attn.rel_pos.mlp`:
    /// `fc1` from the two log coordinates, ReLU, `fc2` to one bias per head; timm's
    /// `RelPosMlp`, `cr` mode), the class token's row and column unbiased.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rel_pos: bool,
}

fn is_true(x: &bool) -> bool {
    *x
}

// The eps is one of two literals, never NaN.
impl Eq for EvaTower {}

fn is_zero(x: &usize) -> bool {
    *x == 0
}

impl EvaTower {
    pub fn new(spec: &EvaSpec) -> Self {
        let eva02 = spec.kind == EvaKind::Eva02;
        let base = Self {
            model: spec.name.to_string(),
            qkv_fused: !eva02,
            fused_bias: false,
            swiglu: eva02,
            mlp_norm: eva02,
            attn_norm: eva02,
            post_norm: spec.kind == EvaKind::Eva02E,
            rope: eva02.then_some(EVA_ROPE_GRID),
            rope_offset: 0,
            rope_xy: false,
            class_token: true,
            norm_pre: false,
            map_heads: None,
            eps: 1e-6,
            conv_stem: false,
            no_embed_class: false,
            mbconv: None,
            geglu: false,
            avg_pool: false,
            head_proj: false,
            pos_embed: true,
            qkv_bias: true,
            layer_scale: false,
            norm_mean: false,
            rel_pos: false,
        };
        let plain = Self {
            qkv_fused: true,
            fused_bias: true,
            swiglu: false,
            mlp_norm: false,
            attn_norm: false,
            post_norm: false,
            rope: None,
            ..base.clone()
        };
        match spec.kind {
            EvaKind::Vit => Self {
                norm_pre: true,
                eps: 1e-5,
                ..plain
            },
            EvaKind::Mci => Self {
                conv_stem: true,
                no_embed_class: true,
                ..plain
            },
            EvaKind::Vitamin { stem, pos_embed } => Self {
                class_token: false,
                mbconv: Some(MbConvStages::vitamin(stem)),
                geglu: true,
                avg_pool: true,
                head_proj: true,
                pos_embed,
                ..plain
            },
            EvaKind::Gap => Self {
                fused_bias: false,
                qkv_bias: false,
                class_token: false,
                layer_scale: true,
                norm_mean: true,
                head_proj: true,
                ..plain
            },
            EvaKind::RelPos => Self {
                fused_bias: false,
                qkv_bias: false,
                pos_embed: false,
                rel_pos: true,
                layer_scale: true,
                head_proj: true,
                ..plain
            },
            EvaKind::Pe {
                rope_grid,
                offset,
                class_token,
            } => Self {
                fused_bias: true,
                rope: Some(rope_grid),
                rope_offset: offset,
                rope_xy: true,
                class_token,
                norm_pre: true,
                map_heads: Some(PE_MAP_HEADS),
                eps: 1e-5,
                ..base
            },
            _ => base,
        }
    }
}

/// open_clip's text cleaning before an HF tokenizer (`tokenizer_kwargs.clean`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub enum TextClean {
    /// ftfy, HTML unescaping, `_` to a space, ASCII punctuation removed, lowercased, spaces
    /// collapsed (big_vision's `canonicalize_text`): SigLIP's.
    #[default]
    #[serde(rename = "canonicalize")]
    Canonicalize,
    /// ftfy, HTML unescaping, spaces collapsed, lowercased.
    #[serde(rename = "lower")]
    Lower,
    /// ftfy, HTML unescaping, spaces collapsed (open_clip's default for HF tokenizers).
    #[serde(rename = "whitespace")]
    Whitespace,
}

impl TextClean {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "canonicalize" => Self::Canonicalize,
            "lower" => Self::Lower,
            "whitespace" => Self::Whitespace,
            _ => return None,
        })
    }
}

/// What an open_clip SigLIP model adds to the shapes: its timm image trunk (the ViT's sizes
/// are `vision_*`, its heads `vision_heads`), that tower's activation (the text tower's is
/// `activation`), the text MLPs' width, and its tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Siglip {
    pub timm_model: String,
    pub vision_activation: Activation,
    /// The text MLPs' hidden width when not 4 x `transformer_width` (`text_cfg.mlp_ratio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_mlp_width: Option<usize>,
    /// The HuggingFace hub repo of the tokenizer (`text_cfg.hf_tokenizer_name`).
    pub tokenizer: String,
    #[serde(default)]
    pub clean: TextClean,
    /// No text projection (`text_cfg.proj_type: none`; ViT-SO400M-16-SigLIP-i18n-256): the
    /// pooled row is the feature.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_text_projection: bool,
}

/// How open_clip's `HFTextEncoder` pools the encoder's last hidden states
/// (`text_cfg.hf_pooler_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HfPooler {
    /// `mean_pooler`: the mean over the non-pad positions.
    #[serde(rename = "mean")]
    Mean,
    /// `cls_pooler`: the encoder's own pooler (`pooler.dense`, tanh) at the first position.
    #[serde(rename = "cls")]
    Cls,
    /// `cls_last_hidden_state_pooler`: the first position's hidden state.
    #[serde(rename = "cls_hidden")]
    ClsHidden,
}

/// `HFTextEncoder`'s projection (`text_cfg.hf_proj_type`): open_clip's two-layer MLP
/// (`proj.0`, GELU, `proj.2`, no biases), one linear layer (`proj`), or none (the pooled row
/// is the feature; only where the encoder's width is `embed_dim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HfProj {
    #[serde(rename = "mlp")]
    Mlp,
    #[serde(rename = "linear")]
    Linear,
    #[serde(rename = "none")]
    None,
}

/// What an open_clip model with a HuggingFace text tower adds to the shapes: the encoder's
/// configuration (transformers' `config.json`: its width, heads, layers and vocabulary are
/// `transformer_*` and `vocab_size`; `context_length` is the tokenizer's), the pooler, the
/// projection and the tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfText {
    /// The transformers model (`text_cfg.hf_model_name`).
    pub model: String,
    /// transformers' `model_type`: `roberta` or `xlm-roberta` (the same encoder), or
    /// `m2m_100` (NLLB's encoder: pre-LayerNorm blocks, sinusoidal positions, ReLU).
    pub model_type: String,
    /// The HuggingFace hub repo of the tokenizer (`text_cfg.hf_tokenizer_name`).
    pub tokenizer: String,
    #[serde(default = "whitespace")]
    pub clean: TextClean,
    /// The MLPs' hidden width (`intermediate_size`).
    pub intermediate: usize,
    /// Rows of the position embedding (`max_position_embeddings`).
    pub positions: usize,
    /// Rows of the token-type embedding (`type_vocab_size`); type 0 is added. None (0) in
    /// M2M100.
    pub type_vocab: usize,
    /// M2M100's `scale_embedding`: the word embeddings times sqrt(width).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scale_embedding: bool,
    /// The pad id (`pad_token_id`): hidden from attention and the mean, and the position
    /// ids' origin.
    pub pad_id: u32,
    /// The LayerNorms' eps (`layer_norm_eps`).
    pub eps: f64,
    /// The MLPs' activation (`hidden_act`).
    pub activation: Activation,
    pub pooler: HfPooler,
    pub proj: HfProj,
}

// The eps is a literal from a config, never NaN.
impl Eq for HfText {}

impl HfText {
    /// An encoder of `model_type` with transformers' defaults for what open_clip's configs
    /// leave to the hub's `config.json`: pad id 1, eps 1e-5; RoBERTa's one token type and
    /// GELU, M2M100's scaled embeddings and ReLU (and its `cls_pooler`, see `settled`).
    pub fn with_defaults(
        model_type: &str,
        [intermediate, positions]: [usize; 2],
        pooler: HfPooler,
        proj: HfProj,
    ) -> Self {
        let m2m = model_type == "m2m_100";
        Self {
            model: String::new(),
            model_type: model_type.to_string(),
            tokenizer: String::new(),
            clean: TextClean::Whitespace,
            intermediate,
            positions,
            type_vocab: usize::from(!m2m),
            scale_embedding: m2m,
            pad_id: 1,
            eps: 1e-5,
            activation: if m2m {
                Activation::Relu
            } else {
                Activation::Gelu
            },
            pooler,
            proj,
        }
        .settled()
    }

    /// NLLB's M2M100 encoder rather than RoBERTa's.
    pub fn is_m2m100(&self) -> bool {
        self.model_type == "m2m_100"
    }

    /// As open_clip builds it: M2M100's encoder has no pooler of its own, so `cls_pooler`
    /// takes the first position's hidden state.
    pub fn settled(self) -> Self {
        match self.pooler {
            HfPooler::Cls if self.is_m2m100() => Self {
                pooler: HfPooler::ClsHidden,
                ..self
            },
            _ => self,
        }
    }
}

fn whitespace() -> TextClean {
    TextClean::Whitespace
}

/// What an open_clip CLIPA model adds to CLIP's shapes: its tokenizer (open_clip's
/// `HFTokenizer` of `bert-base-uncased` with `strip_sep_token`: the `[SEP]` id written as 0,
/// the pad id). The towers' differences from CLIP's follow from the family: no `ln_pre`, the
/// patch tokens' mean then `ln_post`; a bidirectional text tower pooled at the last position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clipa {
    /// The HuggingFace hub repo of the tokenizer (`text_cfg.hf_tokenizer_name`).
    pub tokenizer: String,
    #[serde(default = "whitespace")]
    pub clean: TextClean,
    /// `tokenizer_kwargs.strip_sep_token`: the separator's id replaced by 0.
    #[serde(default = "yes")]
    pub strip_sep: bool,
}

/// The tokenizer open_clip's CLIPA configs name.
pub const CLIPA_TOKENIZER: &str = "bert-base-uncased";

impl Default for Clipa {
    fn default() -> Self {
        Self {
            tokenizer: CLIPA_TOKENIZER.to_string(),
            clean: TextClean::Whitespace,
            strip_sep: true,
        }
    }
}

/// open_clip's CLIP towers fed by a HuggingFace tokenizer and pooled at its end-of-sequence id
/// (`text_cfg.pool_type: eos`, `eos_id`: the first position holding it) rather than at the
/// largest id: MetaCLIP 2's "worldwide" models (XLM-V's or mT5's tokenizer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EosText {
    /// The HuggingFace hub repo of the tokenizer (`text_cfg.hf_tokenizer_name`).
    pub tokenizer: String,
    #[serde(default = "whitespace")]
    pub clean: TextClean,
    pub eos_id: u32,
}

/// A HuggingFace tokenizer as a text tower takes it: its hub repo (possibly empty),
/// open_clip's cleaning before it, and whether the separator's id is written as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HfTokenizerSpec<'a> {
    pub repo: &'a str,
    pub clean: TextClean,
    pub strip_sep: bool,
}

/// The most positions an HF text tower's config may state (NLLB's have 1024, RoBERTa's 514):
/// M2M100's table is computed to that size when a checkpoint does not hold it.
pub const MAX_HF_POSITIONS: usize = 1 << 16;

/// The HuggingFace text models open_clip's configs name, with the `config.json` fields the
/// tower needs (transformers' hub configs): (name, model_type, width, heads, layers, MLP
/// width, vocabulary, positions). RoBERTa's have pad id 1, eps 1e-5, GELU and one token
/// type; NLLB's (M2M100) pad id 1, eps 1e-5, ReLU and scaled embeddings.
pub const HF_TEXT_MODELS: &[(&str, &str, [usize; 6])] = &[
    ("roberta-base", "roberta", [768, 12, 12, 3072, 50265, 514]),
    (
        "xlm-roberta-base",
        "xlm-roberta",
        [768, 12, 12, 3072, 250002, 514],
    ),
    (
        "xlm-roberta-large",
        "xlm-roberta",
        [1024, 16, 24, 4096, 250002, 514],
    ),
    (
        "facebook/nllb-200-distilled-600M",
        "m2m_100",
        [1024, 16, 12, 4096, 256206, 1024],
    ),
    (
        "facebook/nllb-200-distilled-1.3B",
        "m2m_100",
        [1024, 16, 24, 8192, 256206, 1024],
    ),
];

/// timm's ConvNeXt trunks that open_clip's configs name (`vision_cfg.timm_model_name`), with
/// what the weights cannot show: the LayerNorms' eps (timm's 1e-6, 1e-5 for xxlarge).
pub struct ConvNextSpec {
    pub name: &'static str,
    pub depths: [usize; 4],
    pub dims: [usize; 4],
    pub eps: f64,
}

pub const CONVNEXTS: &[ConvNextSpec] = &[
    ConvNextSpec {
        name: "convnext_tiny",
        depths: [3, 3, 9, 3],
        dims: [96, 192, 384, 768],
        eps: 1e-6,
    },
    ConvNextSpec {
        name: "convnext_small",
        depths: [3, 3, 27, 3],
        dims: [96, 192, 384, 768],
        eps: 1e-6,
    },
    ConvNextSpec {
        name: "convnext_base",
        depths: [3, 3, 27, 3],
        dims: [128, 256, 512, 1024],
        eps: 1e-6,
    },
    ConvNextSpec {
        name: "convnext_large",
        depths: [3, 3, 27, 3],
        dims: [192, 384, 768, 1536],
        eps: 1e-6,
    },
    ConvNextSpec {
        name: "convnext_xlarge",
        depths: [3, 3, 27, 3],
        dims: [256, 512, 1024, 2048],
        eps: 1e-6,
    },
    ConvNextSpec {
        name: "convnext_xxlarge",
        depths: [3, 4, 30, 3],
        dims: [384, 768, 1536, 3072],
        eps: 1e-5,
    },
];

/// How open_clip's `TimmModel` projects the trunk's pooled features (`timm_proj`): one
/// bias-free linear, or an MLP (fc1 with bias, GELU, bias-free fc2) twice embed_dim wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimmProj {
    #[serde(rename = "linear")]
    Linear,
    #[serde(rename = "mlp")]
    Mlp,
}

/// A timm ConvNeXt image tower (open_clip's `TimmModel`): the trunk's timm name, its stages'
/// depths and widths, its LayerNorms' eps, and the projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimmTower {
    pub model: String,
    pub depths: Vec<usize>,
    pub dims: Vec<usize>,
    pub eps: f64,
    pub proj: TimmProj,
}

// The eps is one of a few literals, never NaN.
impl Eq for TimmTower {}

impl TimmTower {
    pub fn new(spec: &ConvNextSpec, proj: TimmProj) -> Self {
        Self {
            model: spec.name.to_string(),
            depths: spec.depths.to_vec(),
            dims: spec.dims.to_vec(),
            eps: spec.eps,
            proj,
        }
    }
}

/// timm's FastViT MCi trunks of open_clip's MobileCLIP-S* / MobileCLIP2-S* configs: the
/// stages' depths and widths, MLP ratio; the last two (MCi3 / MCi4: five stages) or one
/// (MCi0-2: four) stages attention stages with the conditional positional encoding; MCi0-2 with
/// SE in their last two stages' downsampling and BatchNorm before attention, MCi3 / MCi4 with
/// LayerNorm and no 1x1 branch in the stem.
pub struct FastVitSpec {
    pub name: &'static str,
    pub depths: &'static [usize],
    pub dims: &'static [usize],
    pub mlp_ratio: usize,
    pub mci34: bool,
}

const fn fastvit(
    name: &'static str,
    depths: &'static [usize],
    dims: &'static [usize],
    mlp_ratio: usize,
    mci34: bool,
) -> FastVitSpec {
    FastVitSpec {
        name,
        depths,
        dims,
        mlp_ratio,
        mci34,
    }
}

/// The width of a FastViT attention head (timm's `head_dim`).
pub const FASTVIT_HEAD_DIM: usize = 32;

pub const FASTVITS: &[FastVitSpec] = &[
    fastvit(
        "fastvit_mci0",
        &[2, 6, 10, 2],
        &[64, 128, 256, 512],
        3,
        false,
    ),
    fastvit(
        "fastvit_mci1",
        &[4, 12, 20, 4],
        &[64, 128, 256, 512],
        3,
        false,
    ),
    fastvit(
        "fastvit_mci2",
        &[4, 12, 24, 4],
        &[80, 160, 320, 640],
        3,
        false,
    ),
    fastvit(
        "fastvit_mci3",
        &[2, 12, 24, 4, 2],
        &[96, 192, 384, 768, 1536],
        4,
        true,
    ),
    fastvit(
        "fastvit_mci4",
        &[2, 12, 24, 4, 4],
        &[128, 256, 512, 1024, 2048],
        4,
        true,
    ),
];

/// A timm FastViT image tower (open_clip's `TimmModel` with `timm_pool: avg` and the trunk's
/// own `head.fc` as the projection): per stage its depth, width, whether its blocks are
/// attention blocks (with the conditional positional encoding before them) rather than
/// RepMixer blocks, whether its downsampling has SE; the MLP ratio; LayerNorm (eps 1e-5)
/// rather than BatchNorm before attention; the stem's 1x1 branches. The stem, downsampling,
/// RepMixer, positional encoding and final conv are MobileOne's re-parameterisable
/// convolutions, folded into one convolution each at load (timm's `reparameterize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastVitTower {
    pub model: String,
    pub depths: Vec<usize>,
    pub dims: Vec<usize>,
    pub attention: Vec<bool>,
    pub se: Vec<bool>,
    pub mlp_ratio: usize,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub layer_norm: bool,
    #[serde(default = "yes")]
    pub stem_scale_branch: bool,
}

impl FastVitTower {
    pub fn new(spec: &FastVitSpec) -> Self {
        let s = spec.depths.len();
        let attention = (0..s)
            .map(|i| i + 2 + usize::from(spec.mci34) > s)
            .collect();
        Self {
            model: spec.name.to_string(),
            depths: spec.depths.to_vec(),
            dims: spec.dims.to_vec(),
            attention,
            se: (0..s).map(|i| !spec.mci34 && i >= 2).collect(),
            mlp_ratio: spec.mlp_ratio,
            layer_norm: spec.mci34,
            stem_scale_branch: !spec.mci34,
        }
    }
}

/// open_clip's attentional pooler ending a CoCa image tower: `queries` learned queries attend
/// to the last block's tokens with `heads` heads; the first one's output is the image feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttnPool {
    pub queries: usize,
    pub heads: usize,
}

/// open_clip's CoCa captioning decoder (`text_decoder`, its `multimodal_cfg`): `layers`
/// causal self-attention blocks over the caption, each followed by a cross-attention block over
/// the image tower's pooled tokens, then `ln_final` and the projection onto the vocabulary.
/// Only `retrieval --pairing rows` runs it (open_clip's `val_generative_loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocaDecoder {
    pub width: usize,
    pub heads: usize,
    pub layers: usize,
}

/// The transformer MLPs' activation: QuickGELU (`x * sigmoid(1.702 x)`: PyramidCLIP, OpenAI's
/// CLIP) or GELU (erf; open_clip's models without `-quickgelu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Activation {
    #[default]
    #[serde(rename = "quickgelu")]
    QuickGelu,
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU's tanh approximation (`gelu_tanh`; torch's `approximate='tanh'`): some of
    /// SigLIP's towers.
    #[serde(rename = "gelu_tanh")]
    GeluTanh,
    /// `max(x, 0)`: NLLB's encoder (M2M100) MLPs.
    #[serde(rename = "relu")]
    Relu,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::QuickGelu => "quickgelu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Relu => "relu",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub embed_dim: usize,
    pub image_resolution: usize,
    pub vision_layers: VisionLayers,
    pub vision_width: usize,
    pub vision_patch_size: Option<usize>,
    pub context_length: usize,
    pub vocab_size: usize,
    pub transformer_width: usize,
    pub transformer_heads: usize,
    pub transformer_layers: usize,
    #[serde(default)]
    pub family: Family,
    #[serde(default)]
    pub activation: Activation,
    /// ViT heads when not `vision_width / 64` (open_clip's `head_width`, e.g. ViT-H-14's 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_heads: Option<usize>,
    /// The ViT MLPs' hidden width when not 4 x `vision_width` (open_clip's
    /// `int(width * mlp_ratio)`: ViT-g-14's 6144, ViT-bigG-14's 8192).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_mlp_width: Option<usize>,
    /// open_clip's layer scale in the ViT's blocks (`ls_init_value`: `ls_1.gamma`,
    /// `ls_2.gamma`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vision_layer_scale: bool,
    /// The image tower's attentional pooler (CoCa), in place of `ln_post` on the class token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_attn_pool: Option<AttnPool>,
    /// CoCa's captioning decoder, where the config (or the checkpoint) describes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coca_decoder: Option<CocaDecoder>,
    /// A timm image tower (open_clip's ConvNeXt models) in place of the ViT or ResNet; its
    /// stage depths are `vision_layers` and its first width `vision_width`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_timm: Option<TimmTower>,
    /// open_clip's SigLIP: its timm ViT, text MLP width and tokenizer (family `siglip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siglip: Option<Siglip>,
    /// open_clip's HuggingFace text tower (family `hf-text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_text: Option<HfText>,
    /// A timm EVA image tower (family `custom-text`): its trunk's block options; its sizes
    /// are the ViT's `vision_*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_eva: Option<EvaTower>,
    /// A timm FastViT image tower (MobileCLIP-S*), its trunk under `visual.trunk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_fastvit: Option<FastVitTower>,
    /// open_clip's CLIPA: its tokenizer (family `clipa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clipa: Option<Clipa>,
    /// CLIP's text tower pooled at a HuggingFace tokenizer's end-of-sequence id (family
    /// `clip`; MetaCLIP 2 worldwide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_eos: Option<EosText>,
    /// CLIP's text tower without its causal mask (every position sees every other), still
    /// pooled at the end-of-text position: open_clip's `no_causal_mask` with `pool_type:
    /// argmax` (MobileCLIP-S*, MobileCLIP2).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub text_no_causal_mask: bool,
}

impl Config {
    pub fn is_vit(&self) -> bool {
        matches!(self.vision_layers, VisionLayers::Vit(_))
    }

    /// The HuggingFace tokenizer the text tower takes: SigLIP's, the HF text towers' and
    /// CLIPA's; None for CLIP's BPE.
    pub fn hf_tokenizer(&self) -> Option<HfTokenizerSpec<'_>> {
        let (repo, clean, strip_sep) = if let Some(s) = &self.siglip {
            (s.tokenizer.as_str(), s.clean, false)
        } else if let Some(h) = &self.hf_text {
            (h.tokenizer.as_str(), h.clean, false)
        } else if let Some(c) = &self.clipa {
            (c.tokenizer.as_str(), c.clean, c.strip_sep)
        } else if let Some(e) = &self.text_eos {
            (e.tokenizer.as_str(), e.clean, false)
        } else {
            return None;
        };
        Some(HfTokenizerSpec {
            repo,
            clean,
            strip_sep,
        })
    }

    /// The id a CLIP-layout text tower pools at the first position of (`pool_type: eos`);
    /// None for the largest id (`argmax`).
    pub fn text_eos_id(&self) -> Option<u32> {
        self.text_eos.as_ref().map(|e| e.eos_id)
    }

    /// Whether the text tower's attention is causal: CLIP's and PyramidCLIP's unless
    /// `text_no_causal_mask`; SigLIP's, CLIPA's and the HF towers' never.
    pub fn text_causal(&self) -> bool {
        !self.text_no_causal_mask && !self.family.pools_last() && self.family != Family::HfText
    }

    /// open_clip's `ln_pre` before the ViT's blocks (none in CLIPA's).
    pub fn vision_ln_pre(&self) -> bool {
        self.family != Family::Clipa
    }

    /// The ViT pooled by the mean of its patch tokens then `ln_post` (CLIPA's `pool_type:
    /// avg` with `final_ln_after_pool`), not `ln_post` of the class token.
    pub fn vision_avg_pool(&self) -> bool {
        self.family == Family::Clipa
    }

    /// Positions of the text tower's positional embedding: the prompt's ids, plus CoCa's
    /// appended class token.
    pub fn text_positions(&self) -> usize {
        self.context_length + usize::from(self.family == Family::Coca)
    }

    /// Vision heads as upstream derives them (or as the config states).
    pub fn vision_heads(&self) -> usize {
        if let Some(h) = self.vision_heads.filter(|&h| h > 0) {
            return h;
        }
        if self.is_vit() {
            (self.vision_width / 64).max(1)
        } else {
            (self.vision_width * 32 / 64).max(1)
        }
    }

    /// Checks the sizes the model code relies on.
    pub fn validate(&self, name: &str) -> Result<(), Error> {
        let bad = |msg: String| {
            Err(Error::Invalid {
                name: name.to_string(),
                msg,
            })
        };
        if self.transformer_heads == 0
            || !self
                .transformer_width
                .is_multiple_of(self.transformer_heads)
        {
            return bad("transformer_width must be a multiple of transformer_heads".into());
        }
        if self.embed_dim == 0 || self.context_length == 0 || self.vocab_size == 0 {
            return bad("embed_dim, context_length and vocab_size must be positive".into());
        }
        match (&self.vision_layers, self.vision_patch_size) {
            (VisionLayers::Vit(_), Some(p)) => {
                // timm's patch conv leaves a remainder out (SigLIP's 384 px with 14 px
                // patches); CLIP's ViTs take whole patches.
                let whole = self.image_resolution.is_multiple_of(p.max(1));
                if p == 0 || self.image_resolution < p || (!whole && self.siglip.is_none()) {
                    return bad("image_resolution must be a multiple of vision_patch_size".into());
                }
                if !self.vision_width.is_multiple_of(self.vision_heads()) {
                    return bad("vision_width must be a multiple of the vision heads".into());
                }
            }
            (VisionLayers::Vit(_), None) => return bad("a ViT needs vision_patch_size".into()),
            (VisionLayers::ResNet(_), _) if self.vision_attn_pool.is_some() => {
                return bad("an attentional pooler needs a ViT image tower".into())
            }
            // A FastViT's stages are checked with its section.
            (VisionLayers::ResNet(_), _) if self.vision_fastvit.is_some() => {}
            (VisionLayers::ResNet(l), _) => {
                if l.len() != 4
                    || !self.image_resolution.is_multiple_of(32)
                    || self.vision_width < 2
                {
                    return bad(
                        "a ResNet needs 4 stage depths and a resolution divisible by 32".into(),
                    );
                }
            }
        }
        if let Some(p) = self.vision_attn_pool {
            if p.queries == 0 || p.heads == 0 || !self.embed_dim.is_multiple_of(p.heads) {
                return bad(
                    "the attentional pooler needs queries and heads dividing embed_dim".into(),
                );
            }
        }
        if let Some(t) = &self.vision_timm {
            if t.depths.len() != 4
                || t.dims.len() != 4
                || self.vision_layers != VisionLayers::ResNet(t.depths.clone())
                || self.vision_width != t.dims[0]
                || t.eps.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            {
                return bad(format!(
                    "a ConvNeXt needs 4 stages, vision_layers its depths and vision_width its first width (has {:?} deep, {:?} wide)",
                    t.depths, t.dims
                ));
            }
        }
        if (self.family == Family::Coca) != self.vision_attn_pool.is_some() {
            return bad("a CoCa model (and only one) has an attentional pooler".into());
        }
        if let Some(d) = self.coca_decoder {
            if self.family != Family::Coca {
                return bad("only a CoCa model has a captioning decoder".into());
            }
            if d.heads == 0 || d.layers == 0 || !d.width.is_multiple_of(d.heads) {
                return bad(
                    "the captioning decoder needs layers and heads dividing its width".into(),
                );
            }
        }
        if (self.family == Family::Siglip) != self.siglip.is_some() {
            return bad("a SigLIP model (and only one) has a `siglip` section".into());
        }
        if self.siglip.is_some() && (!self.is_vit() || self.vision_timm.is_some()) {
            return bad("a SigLIP image tower is a ViT".into());
        }
        // A timm trunk goes with CLIP's text tower under `text.` (custom-text) or at the top
        // level (clip); a custom-text model has one.
        let trunks =
            usize::from(self.vision_eva.is_some()) + usize::from(self.vision_fastvit.is_some());
        let allowed = match self.family {
            Family::CustomText => trunks == 1,
            Family::Clip => trunks <= 1,
            _ => trunks == 0,
        };
        if !allowed {
            return bad(
                "a custom-text model has a `vision_eva` or `vision_fastvit` section, a clip model at most one, no other model either"
                    .into(),
            );
        }
        if let Some(f) = &self.vision_fastvit {
            let s = f.depths.len();
            if s == 0
                || [f.dims.len(), f.attention.len(), f.se.len()] != [s; 3]
                || self.vision_layers != VisionLayers::ResNet(f.depths.clone())
                || self.vision_width != f.dims[0]
                || f.dims
                    .iter()
                    .zip(&f.attention)
                    .any(|(&d, &a)| d == 0 || (a && !d.is_multiple_of(FASTVIT_HEAD_DIM)))
                || f.mlp_ratio == 0
            {
                return bad(format!(
                    "a FastViT needs per stage a depth, a width (a multiple of 32 in attention stages), attention and SE flags, vision_layers its depths and vision_width its first width (has {:?} deep, {:?} wide)",
                    f.depths, f.dims
                ));
            }
        }
        if let Some(e) = &self.vision_eva {
            if !self.is_vit() || self.vision_timm.is_some() || self.siglip.is_some() {
                return bad("an EVA image tower is a ViT".into());
            }
            let pools = [e.map_heads.is_some(), e.avg_pool, e.norm_mean];
            let pools = pools.iter().filter(|&&p| p).count();
            if !e.class_token && pools == 0 {
                return bad("an EVA image tower without class token needs its attention-pool head (`map_heads`) or the mean of its tokens (`avg_pool`, `norm_mean`)".into());
            }
            if pools > 1 || (e.class_token && (e.avg_pool || e.norm_mean)) {
                return bad("an EVA image tower pools its tokens one way: the class token, the attention-pool head (`map_heads`) or their mean (`avg_pool` through `fc_norm`, `norm_mean` after the final norm)".into());
            }
            if e.layer_scale && e.post_norm {
                return bad("layer scale with post-norm EVA blocks is not implemented".into());
            }
            if !e.qkv_bias && !e.qkv_fused {
                return bad(
                    "an EVA image tower without q/k/v bias has one q/k/v product (`qkv_fused`)"
                        .into(),
                );
            }
            if e.geglu && e.swiglu {
                return bad("an EVA MLP is GeGLU or SwiGLU, not both".into());
            }
            if let Some(m) = &e.mbconv {
                if e.conv_stem
                    || self.vision_patch_size != Some(16)
                    || m.stem == 0
                    || m.widths.contains(&0)
                    || m.depths.contains(&0)
                {
                    return bad(format!(
                        "ViTamin's convolutional stages make 16-pixel tokens (vision_patch_size 16, no conv_stem) from positive widths and depths (has {:?} wide, {:?} deep)",
                        m.widths, m.depths
                    ));
                }
            }
            if e.map_heads
                .is_some_and(|h| h == 0 || !self.vision_width.is_multiple_of(h))
            {
                return bad("the attention-pool head's heads must divide vision_width".into());
            }
            if e.eps.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                return bad("an EVA image tower's eps must be positive".into());
            }
            if e.swiglu && !e.mlp_norm {
                return bad(
                    "an EVA SwiGLU MLP without its LayerNorm (timm's packed `GluMlp`) is not implemented"
                        .into(),
                );
            }
            let hd = self.vision_width / self.vision_heads();
            if e.rope.is_some_and(|g| g == 0) || (e.rope.is_some() && !hd.is_multiple_of(4)) {
                return bad(format!(
                    "an EVA rotary embedding needs a positive grid and heads a multiple of 4 wide (has {hd})"
                ));
            }
        }
        if let Some(e) = &self.text_eos {
            if self.family != Family::Clip {
                return bad("only a CLIP-layout text tower is pooled at an `eos_id`".into());
            }
            if e.eos_id as usize >= self.vocab_size {
                return bad(format!(
                    "the eos_id {} is outside the vocabulary of {}",
                    e.eos_id, self.vocab_size
                ));
            }
        }
        if (self.family == Family::Clipa) != self.clipa.is_some() {
            return bad("a CLIPA model (and only one) has a `clipa` section".into());
        }
        if self.clipa.is_some()
            && (!self.is_vit()
                || self.vision_timm.is_some()
                || self.vision_attn_pool.is_some()
                || self.siglip.is_some()
                || self.vision_eva.is_some())
        {
            return bad("a CLIPA image tower is CLIP's ViT".into());
        }
        // NLLB-SigLIP: SigLIP's image tower, an HF text tower.
        let hf_family = matches!(self.family, Family::HfText | Family::Siglip);
        if (self.family == Family::HfText && self.hf_text.is_none())
            || (self.hf_text.is_some() && !hf_family)
        {
            return bad(
                "a model with a HuggingFace text tower (and only one) has an `hf_text` section"
                    .into(),
            );
        }
        if let Some(h) = &self.hf_text {
            // Position ids run to the pad id plus the context; M2M100's table has two rows
            // more than its `positions`.
            let rows = h
                .positions
                .saturating_add(if h.is_m2m100() { 2 } else { 0 });
            if h.positions > MAX_HF_POSITIONS {
                return bad(format!(
                    "the HF text tower's {} positions are more than {MAX_HF_POSITIONS}",
                    h.positions
                ));
            }
            if rows < self.context_length.saturating_add(h.pad_id as usize + 1)
                || (h.type_vocab == 0 && !h.is_m2m100())
                || h.intermediate == 0
                || h.pad_id as usize >= self.vocab_size
            {
                return bad(format!(
                    "the HF text tower's {} positions (pad id {}) cannot hold {} ids, or it has no token types or MLP",
                    h.positions, h.pad_id, self.context_length
                ));
            }
            if h.proj == HfProj::None && self.embed_dim != self.transformer_width {
                return bad(format!(
                    "an HF text tower without projection gives {}-wide features, not embed_dim {}",
                    self.transformer_width, self.embed_dim
                ));
            }
        }
        Ok(())
    }
}

/// Named architectures: the built-in presets plus any `--model-config` file.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub configs: BTreeMap<String, Config>,
    /// For CLIP-layout checkpoints, the names whose CLIP architecture has other shapes than
    /// the upstream entry of that name (OpenAI's RN50x64).
    pub clip: BTreeMap<String, Config>,
}

const BUILTIN: &str = include_str!("../../configs/model_config.yml");
const BUILTIN_CLIP: &str = include_str!("../../configs/clip_model_config.yml");

impl Registry {
    pub fn builtin() -> Self {
        let configs = serde_yaml::from_str(BUILTIN).expect("built-in model_config.yml is valid");
        let clip =
            serde_yaml::from_str(BUILTIN_CLIP).expect("built-in clip_model_config.yml is valid");
        Self { configs, clip }
    }

    /// Built-in presets, with the entries of `file` (if any) added or overriding by name.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        Self::load_named(file, None)
    }

    /// [`Registry::load`], an open_clip config's one entry named `name` instead of after its
    /// file (`hf-hub:ORG/NAME`, whose config is `open_clip_config.json`).
    pub fn load_named(file: Option<&Path>, name: Option<&str>) -> Result<Self, Error> {
        let mut reg = Self::builtin();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let extra: BTreeMap<String, Config> = match open_clip_config(path, &text) {
                Some(r) => match (r?, name) {
                    (m, Some(name)) => m.into_values().map(|c| (name.to_string(), c)).collect(),
                    (m, None) => m,
                },
                None => serde_yaml::from_str(&text).map_err(|e| Error::Malformed {
                    path: path.to_path_buf(),
                    msg: e.to_string(),
                })?,
            };
            for (name, cfg) in &extra {
                cfg.validate(name).map_err(|e| Error::InFile {
                    path: path.to_path_buf(),
                    source: Box::new(e),
                })?;
            }
            // A file's entry is the architecture of that name for either family.
            for name in extra.keys() {
                reg.clip.remove(name);
            }
            reg.configs.extend(extra);
        }
        Ok(reg)
    }

    /// The configs `name` may mean for a checkpoint of `family`, the family's own first (a
    /// CLIP-layout RN50x64 is OpenAI's, a PyramidCLIP one upstream's, and either is accepted
    /// when its shapes match), each with the activation the name asks for: open_clip's
    /// `NAME-quickgelu` is `NAME` with QuickGELU; a bare name means GELU for CLIP unless an
    /// open_clip config states otherwise.
    pub fn resolve(
        &self,
        name: &str,
        family: Family,
    ) -> Result<Vec<(Config, Option<Activation>)>, Error> {
        let (base, quick) = match name.strip_suffix("-quickgelu") {
            Some(base) if !self.configs.contains_key(name) => (base, true),
            _ => (name, false),
        };
        let mut maps = [&self.clip, &self.configs];
        if !family.clip_layout() {
            maps.reverse();
        }
        let found: Vec<_> = maps
            .iter()
            .filter_map(|m| m.get(base))
            .map(|c| {
                let act = if quick {
                    Activation::QuickGelu
                } else if c.family.clip_layout() {
                    c.activation
                } else {
                    Activation::Gelu
                };
                (c.clone(), Some(act))
            })
            .collect();
        if found.is_empty() {
            return Err(self.get(name).unwrap_err());
        }
        Ok(found)
    }

    /// Every named config, upstream's and the CLIP variants (what detection matches shapes
    /// against).
    pub fn all(&self) -> impl Iterator<Item = (&String, &Config)> {
        self.configs.iter().chain(&self.clip)
    }

    pub fn get(&self, name: &str) -> Result<&Config, Error> {
        self.configs.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.configs.keys().map(String::as_str).collect();
            let hint = crate::util::nearest(name, &known)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            Error::Unknown {
                name: name.to_string(),
                hint,
                known: known.join(", "),
            }
        })
    }
}

/// open_clip model-config options that change what the towers compute, with the value the
/// encoders here implement (absent or null also means that). A config that sets another value
/// describes a model these encoders would compute differently without any weight showing it
/// (a missing causal mask, another pooling or normalisation, a HuggingFace or timm tower,
/// another tokenizer or preprocessing), so it is refused, naming the option.
const OPEN_CLIP_FIXED: &[(&str, &str, &str)] = &[
    ("", "custom_text", "false"),
    ("vision_cfg", "attentional_pool", "false"),
    ("vision_cfg", "no_ln_pre", "false"),
    ("vision_cfg", "pos_embed_type", "\"learnable\""),
    ("vision_cfg", "final_ln_after_pool", "false"),
    ("vision_cfg", "global_average_pool", "false"),
    ("vision_cfg", "pool_type", "\"tok\""),
    ("vision_cfg", "timm_model_name", "null"),
    ("vision_cfg", "timm_pool", "null"),
    ("vision_cfg", "timm_proj", "null"),
    ("vision_cfg", "act_kwargs", "null"),
    ("vision_cfg", "norm_kwargs", "null"),
    (
        "vision_cfg",
        "image_mean",
        "[0.48145466, 0.4578275, 0.40821073]",
    ),
    (
        "vision_cfg",
        "image_std",
        "[0.26862954, 0.26130258, 0.27577711]",
    ),
    ("vision_cfg", "interpolation", "\"bicubic\""),
    ("vision_cfg", "resize_mode", "\"shortest\""),
    ("text_cfg", "mlp_ratio", "4"),
    ("text_cfg", "ls_init_value", "null"),
    ("text_cfg", "embed_cls", "false"),
    ("text_cfg", "correct_cls_mask", "false"),
    ("text_cfg", "no_causal_mask", "false"),
    ("text_cfg", "final_ln_after_pool", "false"),
    ("text_cfg", "pool_type", "\"argmax\""),
    ("text_cfg", "proj_bias", "false"),
    ("text_cfg", "proj_type", "\"linear\""),
    ("text_cfg", "hf_model_name", "null"),
    ("text_cfg", "hf_tokenizer_name", "null"),
    ("text_cfg", "tokenizer_kwargs", "null"),
    ("text_cfg", "act_kwargs", "null"),
    ("text_cfg", "norm_kwargs", "null"),
];

/// What a CoCa config (open_clip's `custom_text` with a `multimodal_cfg`) must set instead
/// of [`OPEN_CLIP_FIXED`]'s value: its towers as they are implemented here.
const COCA_FIXED: &[(&str, &str, &str)] = &[
    ("", "custom_text", "true"),
    ("vision_cfg", "attentional_pool", "true"),
    ("text_cfg", "embed_cls", "true"),
];

/// What a SigLIP config (a custom-text model with a timm SigLIP ViT) must set instead: a text
/// tower without causal mask, pooled at the last position, projected with a bias, its
/// LayerNorms' eps 1e-6; the trunk's own attention-pool head and no projection after it.
const SIGLIP_FIXED: &[(&str, &str, &str)] = &[
    ("", "custom_text", "true"),
    ("vision_cfg", "timm_pool", "\"map\""),
    ("vision_cfg", "timm_proj", "\"none\""),
    ("text_cfg", "no_causal_mask", "true"),
    ("text_cfg", "proj_bias", "true"),
    ("text_cfg", "pool_type", "\"last\""),
    ("text_cfg", "norm_kwargs", "{\"eps\": 1e-6}"),
];

/// What a config with a HuggingFace text tower must set instead: `custom_text` is implied.
const HF_TEXT_FIXED: &[(&str, &str, &str)] = &[("", "custom_text", "true")];

/// What a SigLIP image tower with an HF text tower (NLLB-SigLIP) must set: SigLIP's image side.
const SIGLIP_HF_FIXED: &[(&str, &str, &str)] = &[
    ("", "custom_text", "true"),
    ("vision_cfg", "timm_pool", "\"map\""),
    ("vision_cfg", "timm_proj", "\"none\""),
];

/// What a config with a timm ViT trunk (EVA, PE, MobileCLIP, ViTamin, the average-pooled
/// ViT) must set instead: nothing; `custom_text` is read (the text tower under `text.` or at
/// the top level), the trunk's pool and projection checked against the trunk's.
const EVA_FIXED: &[(&str, &str, &str)] = &[];

/// What a MetaCLIP 2 worldwide config (CLIP's towers with a HuggingFace tokenizer, pooled at its
/// `eos_id`) must set instead.
const EOS_FIXED: &[(&str, &str, &str)] = &[("text_cfg", "pool_type", "\"eos\"")];

/// What a CLIPA config (CLIP's towers with a HuggingFace tokenizer) must set instead: the ViT
/// without `ln_pre`, the patch tokens' mean then `ln_post`; the text tower without causal mask,
/// pooled at the last position.
const CLIPA_FIXED: &[(&str, &str, &str)] = &[
    ("vision_cfg", "no_ln_pre", "true"),
    ("vision_cfg", "pool_type", "\"avg\""),
    ("vision_cfg", "final_ln_after_pool", "true"),
    ("text_cfg", "no_causal_mask", "true"),
    ("text_cfg", "pool_type", "\"last\""),
];

/// Which architecture an open_clip config describes, for [`open_clip_unsupported`].
#[derive(Clone, Copy, PartialEq)]
enum OpenClipKind {
    Clip,
    Coca,
    Siglip,
    HfText,
    /// A SigLIP image tower with an HF text tower (NLLB-SigLIP).
    SiglipHf,
    /// A timm EVA image tower with CLIP's text tower (open_clip's EVA01 / EVA02 models).
    Eva,
    /// CLIP's towers as CLIPA sets them, with a HuggingFace tokenizer.
    Clipa,
    /// CLIP's towers with a HuggingFace tokenizer, pooled at its `eos_id` (MetaCLIP 2
    /// worldwide).
    Eos,
}

/// The first option of [`OPEN_CLIP_FIXED`] (CoCa's: [`COCA_FIXED`], SigLIP's:
/// [`SIGLIP_FIXED`]) that `v` sets to another value (theirs: or leaves out), as a message.
fn open_clip_unsupported(v: &serde_json::Value, kind: OpenClipKind) -> Option<String> {
    fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (a, b) {
            (V::Number(x), V::Number(y)) => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                (x - y).abs() <= 1e-6 * y.abs().max(1.0)
            }
            (V::Array(x), V::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            _ => a == b,
        }
    }
    OPEN_CLIP_FIXED.iter().find_map(|&(section, key, want)| {
        let at = if section.is_empty() {
            Some(v)
        } else {
            v.get(section)
        };
        let own = match kind {
            OpenClipKind::Clip => &[][..],
            OpenClipKind::Coca => COCA_FIXED,
            OpenClipKind::Siglip => SIGLIP_FIXED,
            OpenClipKind::HfText => HF_TEXT_FIXED,
            OpenClipKind::SiglipHf => SIGLIP_HF_FIXED,
            OpenClipKind::Eva => EVA_FIXED,
            OpenClipKind::Clipa => CLIPA_FIXED,
            OpenClipKind::Eos => EOS_FIXED,
        };
        let own_wants = own.iter().find(|&&(s, k, _)| s == section && k == key);
        let got = match own_wants {
            Some(_) => at
                .and_then(|o| o.get(key))
                .cloned()
                .unwrap_or(serde_json::Value::Null),
            None => at?.get(key).filter(|x| !x.is_null())?.clone(),
        };
        let got = &got;
        let want = own_wants.map_or(want, |&(_, _, w)| w);
        let want: serde_json::Value = serde_json::from_str(want).expect("valid JSON");
        let name = if section.is_empty() {
            key.to_string()
        } else {
            format!("{section}.{key}")
        };
        let whose = match kind {
            OpenClipKind::Clip => "CLIP's",
            OpenClipKind::Coca => "CoCa's",
            OpenClipKind::Siglip => "SigLIP's",
            OpenClipKind::HfText => "the HF text tower's",
            OpenClipKind::SiglipHf => "SigLIP's image tower's",
            OpenClipKind::Eva => "EVA's",
            OpenClipKind::Clipa => "CLIPA's",
            OpenClipKind::Eos => "MetaCLIP 2's",
        };
        (!same(got, &want)).then(|| {
            format!("`{name}` is {got}; only {want} ({whose} own architecture) is implemented")
        })
    })
}

/// An open_clip model-config JSON (`embed_dim`, `vision_cfg`, `text_cfg`, `quick_gelu`), named
/// by its file's stem; None when the text is not one.
fn open_clip_config(path: &Path, text: &str) -> Option<Result<BTreeMap<String, Config>, Error>> {
    let mut v: serde_json::Value = serde_json::from_str(text).ok()?;
    // open_clip's hub and local-dir configs wrap it: {"model_cfg": ..., "preprocess_cfg": ...};
    // the preprocessing (mean, std, resize mode, interpolation) is the loader's.
    if let Some(model_cfg) = v.get("model_cfg").cloned() {
        v = model_cfg;
    }
    let vision = v.get("vision_cfg")?;
    let textc = v.get("text_cfg")?;
    let bad = |m: &str| Error::Malformed {
        path: path.to_path_buf(),
        msg: format!("open_clip config: {m}"),
    };
    let num = |o: &serde_json::Value, k: &str| -> Result<usize, Error> {
        o.get(k)
            .and_then(|x| x.as_u64())
            .map(|x| x as usize)
            .ok_or_else(|| bad(&format!("no integer `{k}`")))
    };
    // open_clip builds a CoCa for a custom-text config with a multimodal (decoder) part; the
    // decoder runs only for the generative loss.
    let coca = v.get("multimodal_cfg").is_some()
        && v.get("custom_text").and_then(|x| x.as_bool()) == Some(true);
    // A timm ConvNeXt image tower (open_clip's `TimmModel`), checked here and then set aside
    // for the other options' check.
    let timm_name = vision.get("timm_model_name").and_then(|x| x.as_str());
    let timm = timm_name.and_then(|n| CONVNEXTS.iter().find(|s| s.name == n));
    // A SigLIP: a timm SigLIP ViT (open_clip builds the tower from timm; its sizes are read
    // from the name's table and the config).
    let siglip_vit = timm_name.and_then(|n| SIGLIP_VITS.iter().find(|s| s.name == n));
    // An EVA: a timm EVA trunk (its sizes and block options from the name's table).
    let eva_vit = timm_name.and_then(|n| EVA_VITS.iter().find(|s| s.name == n));
    // A MobileCLIP-S*: a timm FastViT trunk (its stages from the name's table).
    let fastvit = timm_name.and_then(|n| FASTVITS.iter().find(|s| s.name == n));
    // A HuggingFace text tower (open_clip's `HFTextEncoder`) with CLIP's or SigLIP's image
    // tower.
    let hf_model = textc
        .get("hf_model_name")
        .and_then(|x| x.as_str())
        .filter(|_| !coca);
    let kind = if coca {
        OpenClipKind::Coca
    } else if siglip_vit.is_some() && hf_model.is_some() {
        OpenClipKind::SiglipHf
    } else if siglip_vit.is_some() {
        OpenClipKind::Siglip
    } else if hf_model.is_some() {
        OpenClipKind::HfText
    } else if eva_vit.is_some() || fastvit.is_some() {
        OpenClipKind::Eva
    } else if timm_name.is_none() && textc.get("hf_tokenizer_name").is_some_and(|x| !x.is_null()) {
        // CLIP's own towers with a HuggingFace tokenizer: pooled at its end-of-sequence id,
        // MetaCLIP 2's worldwide models; else open_clip's CLIPA.
        if textc.get("pool_type").and_then(|x| x.as_str()) == Some("eos") {
            OpenClipKind::Eos
        } else {
            OpenClipKind::Clipa
        }
    } else {
        OpenClipKind::Clip
    };
    let parse = || -> Result<Config, Error> {
        let unsupported = |msg: String| Error::Unsupported {
            path: path.to_path_buf(),
            msg,
        };
        let mut rest = v.clone();
        // A timm trunk goes with CLIP's text tower at the top level (`CLIP`) or under `text.`
        // (`CustomTextCLIP`), as `custom_text` says.
        let custom_text = v.get("custom_text").and_then(|x| x.as_bool()) == Some(true);
        if kind == OpenClipKind::Eva {
            if let Some(o) = rest.as_object_mut() {
                o.remove("custom_text");
            }
        }
        let mut proj = None;
        if let Some(spec) = timm {
            let get = |k: &str| vision.get(k).filter(|x| !x.is_null());
            let pool = get("timm_pool").and_then(|x| x.as_str()).unwrap_or("avg");
            // `""` keeps the trunk's own head (average pool, then its norm); `"avg"` sets the
            // same pool.
            if !pool.is_empty() && pool != "avg" {
                return Err(unsupported(format!(
                    "`vision_cfg.timm_pool` is \"{pool}\"; only \"\" (the trunk's own pooling) is implemented for {}",
                    spec.name
                )));
            }
            proj = match get("timm_proj").and_then(|x| x.as_str()).unwrap_or("linear") {
                "linear" => Some(TimmProj::Linear),
                "mlp" => Some(TimmProj::Mlp),
                other => {
                    return Err(unsupported(format!(
                        "`vision_cfg.timm_proj` is \"{other}\"; only \"linear\" and \"mlp\" are implemented"
                    )))
                }
            };
            if get("timm_proj_bias").and_then(|x| x.as_bool()) == Some(true) {
                return Err(unsupported(
                    "`vision_cfg.timm_proj_bias` is true; only false is implemented".into(),
                ));
            }
            if let Some(o) = rest.get_mut("vision_cfg").and_then(|x| x.as_object_mut()) {
                for k in ["timm_model_name", "timm_pool", "timm_proj"] {
                    o.remove(k);
                }
            }
        }
        let mut siglip = None;
        let mut siglip_act = None;
        if let Some(spec) = siglip_vit {
            let text_get = |k: &str| textc.get(k).filter(|x| !x.is_null());
            let act = match text_get("act_kwargs") {
                None => Activation::Gelu,
                Some(a) if a == &serde_json::json!({"approximate": "tanh"}) => {
                    Activation::GeluTanh
                }
                Some(a) => {
                    return Err(unsupported(format!(
                        "`text_cfg.act_kwargs` is {a}; only null and {{\"approximate\": \"tanh\"}} are implemented"
                    )))
                }
            };
            let tokenizer = text_get("hf_tokenizer_name")
                .and_then(|x| x.as_str())
                .ok_or_else(|| bad("a SigLIP text tower needs `text_cfg.hf_tokenizer_name`"))?;
            let (clean, _) = tokenizer_kwargs(textc, false).map_err(unsupported)?;
            // `proj_type: none` drops the projection (its bias option with it).
            let no_text_projection = text_get("proj_type").and_then(|x| x.as_str()) == Some("none");
            // An HF text tower has its own sizes (below).
            let text_mlp_width = match text_get("mlp_ratio").and_then(|x| x.as_f64()) {
                Some(r) if hf_model.is_none() => {
                    let tw = num(textc, "width")?;
                    (r > 0.0 && (tw as f64 * r) as usize != 4 * tw)
                        .then_some((tw as f64 * r) as usize)
                }
                _ => None,
            };
            siglip_act = Some(act);
            siglip = Some(Siglip {
                timm_model: spec.name.to_string(),
                vision_activation: spec.activation,
                text_mlp_width,
                tokenizer: tokenizer.to_string(),
                clean,
                no_text_projection,
            });
            if let Some(o) = rest.get_mut("vision_cfg").and_then(|x| x.as_object_mut()) {
                o.remove("timm_model_name");
            }
            if let Some(o) = rest.get_mut("text_cfg").and_then(|x| x.as_object_mut()) {
                for k in [
                    "act_kwargs",
                    "hf_tokenizer_name",
                    "tokenizer_kwargs",
                    "mlp_ratio",
                ] {
                    o.remove(k);
                }
                if no_text_projection {
                    o.remove("proj_type");
                    o.insert("proj_bias".into(), true.into());
                }
            }
        }
        if let Some(spec) = eva_vit.filter(|_| hf_model.is_none()) {
            let pool = vision
                .get("timm_pool")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            // The average-pooled trunk's own pool is the one `avg` names, the relative-position
            // ViT's the one `token` names.
            let own = match spec.kind {
                EvaKind::Gap => pool == "avg",
                EvaKind::RelPos => pool == "token",
                _ => false,
            };
            if pool != spec.pool() && !own {
                return Err(unsupported(format!(
                    "`vision_cfg.timm_pool` is \"{pool}\"; only \"{}\" (the trunk's own pooling) is implemented for {}",
                    spec.pool(),
                    spec.name
                )));
            }
            // ViTamin's and the average-pooled ViT's projection is open_clip's linear one
            // after the trunk, without bias.
            let head_proj = EvaTower::new(spec).head_proj;
            if head_proj {
                let get = |k: &str| vision.get(k).filter(|x| !x.is_null());
                let proj = get("timm_proj")
                    .and_then(|x| x.as_str())
                    .unwrap_or("linear");
                if proj != "linear" {
                    return Err(unsupported(format!(
                        "`vision_cfg.timm_proj` is \"{proj}\"; only \"linear\" is implemented for {}",
                        spec.name
                    )));
                }
                if get("timm_proj_bias").and_then(|x| x.as_bool()) == Some(true) {
                    return Err(unsupported(
                        "`vision_cfg.timm_proj_bias` is true; only false is implemented".into(),
                    ));
                }
            }
            if let Some(o) = rest.get_mut("vision_cfg").and_then(|x| x.as_object_mut()) {
                o.remove("timm_model_name");
                o.remove("timm_pool");
                if head_proj {
                    o.remove("timm_proj");
                }
            }
        }
        if let Some(spec) = fastvit.filter(|_| hf_model.is_none()) {
            let pool = vision
                .get("timm_pool")
                .and_then(|x| x.as_str())
                .unwrap_or("avg");
            if pool != "avg" {
                return Err(unsupported(format!(
                    "`vision_cfg.timm_pool` is \"{pool}\"; only \"avg\" (the trunk's own pooling) is implemented for {}",
                    spec.name
                )));
            }
            if let Some(o) = rest.get_mut("vision_cfg").and_then(|x| x.as_object_mut()) {
                o.remove("timm_model_name");
                o.remove("timm_pool");
            }
        }
        let hf = match hf_model {
            Some(model) => {
                let text_get = |k: &str| textc.get(k).filter(|x| !x.is_null());
                let tokenizer = text_get("hf_tokenizer_name")
                    .and_then(|x| x.as_str())
                    .ok_or_else(|| bad("an HF text tower needs `text_cfg.hf_tokenizer_name`"))?;
                let pooler = match text_get("hf_pooler_type").and_then(|x| x.as_str()) {
                    None | Some("mean_pooler") => HfPooler::Mean,
                    Some("cls_pooler") => HfPooler::Cls,
                    Some("cls_last_hidden_state_pooler") => HfPooler::ClsHidden,
                    Some(other) => return Err(unsupported(format!(
                        "`text_cfg.hf_pooler_type` is \"{other}\"; only \"mean_pooler\", \"cls_pooler\" and \"cls_last_hidden_state_pooler\" are implemented"
                    ))),
                };
                // open_clip's default is the MLP; an explicit null means none, which it
                // builds only where the widths match (checked by `validate`).
                let proj = match textc.get("hf_proj_type") {
                    None => HfProj::Mlp,
                    Some(serde_json::Value::Null) => HfProj::None,
                    Some(x) => match x.as_str() {
                        Some("mlp") => HfProj::Mlp,
                        Some("linear") => HfProj::Linear,
                        _ => return Err(unsupported(format!(
                            "`text_cfg.hf_proj_type` is {x}; only \"mlp\", \"linear\" and null are implemented"
                        ))),
                    },
                };
                let (clean, _) = tokenizer_kwargs(textc, false).map_err(unsupported)?;
                let (h, sizes) = hf_text_model(path, model, tokenizer, clean, pooler, proj)?;
                if let Some(o) = rest.get_mut("text_cfg").and_then(|x| x.as_object_mut()) {
                    for k in [
                        "hf_model_name",
                        "hf_tokenizer_name",
                        "hf_pooler_type",
                        "hf_proj_type",
                        "hf_model_pretrained",
                        "tokenizer_kwargs",
                    ] {
                        o.remove(k);
                    }
                }
                if let Some(o) = rest.as_object_mut() {
                    o.insert("custom_text".into(), true.into());
                }
                Some((h, sizes))
            }
            None => None,
        };
        let clipa = match kind {
            OpenClipKind::Clipa => {
                let tokenizer = textc
                    .get("hf_tokenizer_name")
                    .and_then(|x| x.as_str())
                    .ok_or_else(|| bad("`text_cfg.hf_tokenizer_name` is not a string"))?;
                let (clean, strip_sep) = tokenizer_kwargs(textc, true).map_err(unsupported)?;
                if let Some(o) = rest.get_mut("text_cfg").and_then(|x| x.as_object_mut()) {
                    o.remove("hf_tokenizer_name");
                    o.remove("tokenizer_kwargs");
                }
                Some(Clipa {
                    tokenizer: tokenizer.to_string(),
                    clean,
                    strip_sep,
                })
            }
            _ => None,
        };
        let text_eos = match kind {
            OpenClipKind::Eos => {
                let tokenizer = textc
                    .get("hf_tokenizer_name")
                    .and_then(|x| x.as_str())
                    .ok_or_else(|| bad("`text_cfg.hf_tokenizer_name` is not a string"))?;
                let (clean, _) = tokenizer_kwargs(textc, false).map_err(unsupported)?;
                // open_clip's `CLIPTextCfg.eos_id` default.
                let eos_id = match textc.get("eos_id").filter(|x| !x.is_null()) {
                    None => 2,
                    Some(x) => x
                        .as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .ok_or_else(|| bad("`text_cfg.eos_id` is not a token id"))?,
                };
                if let Some(o) = rest.get_mut("text_cfg").and_then(|x| x.as_object_mut()) {
                    o.remove("hf_tokenizer_name");
                    o.remove("tokenizer_kwargs");
                }
                Some(EosText {
                    tokenizer: tokenizer.to_string(),
                    clean,
                    eos_id,
                })
            }
            _ => None,
        };
        // CLIP's text tower without its causal mask, pooled at the end-of-text id as before
        // (MobileCLIP's); SigLIP's and CLIPA's own options say it for them.
        let text_no_causal_mask = matches!(kind, OpenClipKind::Clip | OpenClipKind::Eva)
            && textc.get("no_causal_mask").and_then(|x| x.as_bool()) == Some(true);
        if text_no_causal_mask {
            if let Some(o) = rest.get_mut("text_cfg").and_then(|x| x.as_object_mut()) {
                o.remove("no_causal_mask");
            }
        }
        if let Some(msg) = open_clip_unsupported(&rest, kind) {
            return Err(unsupported(msg));
        }
        let image = match vision.get("image_size") {
            Some(serde_json::Value::Array(a)) => {
                a.first().and_then(|x| x.as_u64()).unwrap_or(0) as usize
            }
            _ => num(vision, "image_size")?,
        };
        let eva_vit = eva_vit.filter(|_| kind == OpenClipKind::Eva);
        let fastvit = fastvit.filter(|_| kind == OpenClipKind::Eva);
        if let Some(spec) = eva_vit {
            // timm builds the trunk at its own size; open_clip's `image_size` only sizes the
            // preprocessing, which a trunk without positions takes at any multiple of its patch
            // (ViTamin-XL-384's config preprocesses at 256).
            let no_positions = matches!(
                spec.kind,
                EvaKind::Vitamin {
                    pos_embed: false,
                    ..
                }
            );
            if image != spec.image && !(no_positions && image.is_multiple_of(spec.patch)) {
                return Err(unsupported(format!(
                    "`vision_cfg.image_size` is {image}; {} is built for {} px",
                    spec.name, spec.image
                )));
            }
        }
        let layers = match (timm, vision.get("layers")) {
            (Some(spec), _) => VisionLayers::ResNet(spec.depths.to_vec()),
            (None, _) if fastvit.is_some() => {
                VisionLayers::ResNet(fastvit.map_or(vec![], |s| s.depths.to_vec()))
            }
            (None, _) if eva_vit.is_some() => VisionLayers::Vit(eva_vit.map_or(0, |s| s.depth)),
            (None, _) if siglip_vit.is_some() => {
                VisionLayers::Vit(siglip_vit.map_or(0, |s| s.depth))
            }
            (None, Some(serde_json::Value::Array(a))) => {
                VisionLayers::ResNet(a.iter().map(|x| x.as_u64().unwrap_or(0) as usize).collect())
            }
            _ => VisionLayers::Vit(num(vision, "layers")?),
        };
        let width = match (timm, siglip_vit, eva_vit) {
            _ if fastvit.is_some() => fastvit.map_or(0, |s| s.dims[0]),
            (Some(spec), _, _) => spec.dims[0],
            (_, Some(spec), _) => spec.width,
            (_, _, Some(spec)) => spec.width,
            _ => num(vision, "width")?,
        };
        let patch = match (siglip_vit, eva_vit) {
            (Some(spec), _) => Some(spec.patch),
            (_, Some(spec)) => Some(spec.patch),
            _ => vision
                .get("patch_size")
                .and_then(|x| x.as_u64())
                .map(|x| x as usize),
        };
        let vision_heads = match (&layers, vision.get("head_width").and_then(|x| x.as_u64())) {
            (VisionLayers::Vit(_), Some(hw)) if hw > 0 => {
                let hw = hw as usize;
                if hw > width || !width.is_multiple_of(hw) {
                    return Err(bad(&format!(
                        "vision_cfg.head_width {hw} does not divide the width {width}"
                    )));
                }
                Some(width / hw)
            }
            _ => None,
        };
        let quick = v
            .get("quick_gelu")
            .and_then(|x| x.as_bool())
            .unwrap_or(false);
        Ok(Config {
            embed_dim: num(&v, "embed_dim")?,
            image_resolution: image,
            vision_layers: layers,
            vision_width: width,
            vision_patch_size: patch,
            context_length: textc
                .get("context_length")
                .and_then(|x| x.as_u64())
                .unwrap_or(77) as usize,
            vocab_size: match &hf {
                Some((_, s)) => s[4],
                None => textc
                    .get("vocab_size")
                    .and_then(|x| x.as_u64())
                    .unwrap_or(49408) as usize,
            },
            transformer_width: match &hf {
                Some((_, s)) => s[0],
                None => num(textc, "width")?,
            },
            transformer_heads: match &hf {
                Some((_, s)) => s[1],
                None => num(textc, "heads")?,
            },
            transformer_layers: match &hf {
                Some((_, s)) => s[2],
                None => num(textc, "layers")?,
            },
            family: match kind {
                OpenClipKind::Clip => Family::Clip,
                OpenClipKind::Coca => Family::Coca,
                OpenClipKind::Siglip => Family::Siglip,
                OpenClipKind::HfText => Family::HfText,
                OpenClipKind::SiglipHf => Family::Siglip,
                OpenClipKind::Eva if custom_text => Family::CustomText,
                OpenClipKind::Eva => Family::Clip,
                OpenClipKind::Clipa => Family::Clipa,
                OpenClipKind::Eos => Family::Clip,
            },
            activation: if quick {
                Activation::QuickGelu
            } else if let Some(act) = siglip_act {
                act
            } else {
                Activation::Gelu
            },
            vision_heads: siglip_vit
                .map(|s| s.heads)
                .or(eva_vit.map(|s| s.heads))
                .or(vision_heads),
            vision_mlp_width: match (siglip_vit, vision.get("mlp_ratio").and_then(|x| x.as_f64())) {
                (Some(s), _) => (s.mlp_width != 4 * s.width).then_some(s.mlp_width),
                (None, _) if eva_vit.is_some() => eva_vit
                    .filter(|s| s.mlp_width != 4 * s.width)
                    .map(|s| s.mlp_width),
                // open_clip's `int(width * mlp_ratio)`.
                (None, Some(r)) if r > 0.0 && (width as f64 * r) as usize != 4 * width => {
                    Some((width as f64 * r) as usize)
                }
                _ => None,
            },
            vision_layer_scale: vision.get("ls_init_value").is_some_and(|x| !x.is_null()),
            // open_clip's defaults: 256 queries, 8 heads.
            vision_timm: timm
                .zip(proj)
                .map(|(spec, proj)| TimmTower::new(spec, proj)),
            siglip,
            hf_text: hf.map(|(h, _)| h),
            vision_eva: eva_vit.map(EvaTower::new),
            vision_fastvit: fastvit.map(FastVitTower::new),
            clipa,
            text_eos,
            text_no_causal_mask,
            // open_clip's MultimodalCfg defaults: 512 wide, 8 heads, 12 layers.
            coca_decoder: coca.then(|| {
                let m = &v["multimodal_cfg"];
                let get = |k: &str, d: u64| m.get(k).and_then(|x| x.as_u64()).unwrap_or(d) as usize;
                CocaDecoder {
                    width: get("width", 512),
                    heads: get("heads", 8),
                    layers: get("layers", 12),
                }
            }),
            vision_attn_pool: coca.then(|| AttnPool {
                queries: vision
                    .get("attn_pooler_queries")
                    .and_then(|x| x.as_u64())
                    .unwrap_or(256) as usize,
                heads: vision
                    .get("attn_pooler_heads")
                    .and_then(|x| x.as_u64())
                    .unwrap_or(8) as usize,
            }),
        })
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "custom".into());
    Some(parse().map(|c| BTreeMap::from([(name, c)])))
}

/// `text_cfg.tokenizer_kwargs`: `clean` (open_clip's default `whitespace`) and, where
/// `strip_sep` is allowed (CLIPA's), `strip_sep_token`; other options are refused, as a
/// message.
fn tokenizer_kwargs(
    textc: &serde_json::Value,
    strip_sep: bool,
) -> Result<(TextClean, bool), String> {
    let kwargs = textc
        .get("tokenizer_kwargs")
        .filter(|x| !x.is_null())
        .cloned()
        .unwrap_or_default();
    let known = |k: &str| k == "clean" || (strip_sep && k == "strip_sep_token");
    let Some(o) = kwargs.as_object() else {
        return Ok((TextClean::Whitespace, false));
    };
    if !o.keys().all(|k| known(k)) {
        let only = if strip_sep {
            "`clean` and `strip_sep_token` are"
        } else {
            "`clean` is"
        };
        return Err(format!(
            "`text_cfg.tokenizer_kwargs` is {kwargs}; only {only} implemented"
        ));
    }
    let clean = match o.get("clean") {
        None => TextClean::Whitespace,
        Some(c) => c.as_str().and_then(TextClean::parse).ok_or_else(|| {
            format!("`text_cfg.tokenizer_kwargs.clean` is {c}; only \"canonicalize\", \"lower\" and \"whitespace\" are implemented")
        })?,
    };
    let strip = match o.get("strip_sep_token") {
        None => false,
        Some(s) => s.as_bool().ok_or_else(|| {
            format!("`text_cfg.tokenizer_kwargs.strip_sep_token` is {s}; true or false")
        })?,
    };
    Ok((clean, strip))
}

/// The HF text tower `model` names (`text_cfg.hf_model_name`) and its sizes (width, heads,
/// layers, MLP width, vocabulary, positions): open_clip reads transformers' `config.json`
/// for it; here a name of [`HF_TEXT_MODELS`] (their hub configs), else a directory holding a
/// `config.json` (as given, or beside the model config).
fn hf_text_model(
    path: &Path,
    model: &str,
    tokenizer: &str,
    clean: TextClean,
    pooler: HfPooler,
    proj: HfProj,
) -> Result<(HfText, [usize; 6]), Error> {
    let unsupported = |msg: String| Error::Unsupported {
        path: path.to_path_buf(),
        msg,
    };
    let named = |h: HfText| HfText {
        model: model.to_string(),
        tokenizer: tokenizer.to_string(),
        clean,
        ..h
    };
    if let Some(&(_, ty, sizes)) = HF_TEXT_MODELS.iter().find(|m| m.0 == model) {
        let h = HfText::with_defaults(ty, [sizes[3], sizes[5]], pooler, proj);
        return Ok((named(h), sizes));
    }
    let known: Vec<&str> = HF_TEXT_MODELS.iter().map(|m| m.0).collect();
    let dirs = [
        PathBuf::from(model),
        path.parent().unwrap_or(Path::new(".")).join(model),
    ];
    let Some(file) = dirs
        .iter()
        .map(|d| d.join("config.json"))
        .find(|f| f.is_file())
    else {
        return Err(unsupported(format!(
            "`text_cfg.hf_model_name` \"{model}\" is not one of {} and no directory of that name holds its config.json",
            known.join(", ")
        )));
    };
    let text = std::fs::read_to_string(&file).map_err(|source| Error::Read {
        path: file.clone(),
        source,
    })?;
    let malformed = |msg: String| Error::Malformed {
        path: file.clone(),
        msg,
    };
    let c: serde_json::Value = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    let ty = c.get("model_type").and_then(|x| x.as_str()).unwrap_or("");
    if !matches!(ty, "roberta" | "xlm-roberta" | "m2m_100") {
        return Err(Error::Unsupported {
            path: file.clone(),
            msg: format!(
                "`model_type` is \"{ty}\"; only RoBERTa, XLM-RoBERTa and M2M100 (NLLB) text towers are implemented"
            ),
        });
    }
    let m2m = ty == "m2m_100";
    if let Some(p) = c
        .get("position_embedding_type")
        .and_then(|x| x.as_str())
        .filter(|&p| p != "absolute")
    {
        return Err(Error::Unsupported {
            path: file.clone(),
            msg: format!("`position_embedding_type` is \"{p}\"; only \"absolute\" is implemented"),
        });
    }
    let num = |k: &str| -> Result<usize, Error> {
        c.get(k)
            .and_then(|x| x.as_u64())
            .map(|x| x as usize)
            .ok_or_else(|| malformed(format!("no integer `{k}`")))
    };
    let act_key = if m2m {
        "activation_function"
    } else {
        "hidden_act"
    };
    let activation = match c.get(act_key).and_then(|x| x.as_str()) {
        None if m2m => Activation::Relu,
        Some("relu") => Activation::Relu,
        None | Some("gelu") => Activation::Gelu,
        Some("gelu_new" | "gelu_pytorch_tanh") => Activation::GeluTanh,
        Some("quick_gelu") => Activation::QuickGelu,
        Some(a) => {
            return Err(Error::Unsupported {
                path: file.clone(),
                msg: format!(
                "`{act_key}` is \"{a}\"; only gelu, gelu_new, quick_gelu and relu are implemented"
            ),
            })
        }
    };
    let names = if m2m {
        [
            "d_model",
            "encoder_attention_heads",
            "encoder_layers",
            "encoder_ffn_dim",
        ]
    } else {
        [
            "hidden_size",
            "num_attention_heads",
            "num_hidden_layers",
            "intermediate_size",
        ]
    };
    let sizes = [
        num(names[0])?,
        num(names[1])?,
        num(names[2])?,
        num(names[3])?,
        num("vocab_size")?,
        num("max_position_embeddings")?,
    ];
    let h = HfText {
        type_vocab: if m2m {
            0
        } else {
            num("type_vocab_size").unwrap_or(1)
        },
        scale_embedding: m2m
            && c.get("scale_embedding")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
        pad_id: num("pad_token_id").unwrap_or(1) as u32,
        eps: c
            .get("layer_norm_eps")
            .and_then(|x| x.as_f64())
            .unwrap_or(1e-5),
        activation,
        ..named(HfText::with_defaults(
            ty,
            [sizes[3], sizes[5]],
            pooler,
            proj,
        ))
    }
    .settled();
    Ok((h, sizes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_validate() {
        let r = Registry::builtin();
        assert_eq!(r.configs.len(), 126);
        for (n, c) in &r.configs {
            c.validate(n).unwrap();
        }
        let b16 = r.get("ViT-B-16").unwrap();
        assert_eq!(b16.vision_patch_size, Some(16));
        assert_eq!(
            r.get("RN50").unwrap().vision_layers,
            VisionLayers::ResNet(vec![3, 4, 6, 3])
        );
        assert!(r.get("RN5O").unwrap_err().to_string().contains("RN50"));
        for (n, c) in &r.clip {
            c.validate(n).unwrap();
        }
    }

    #[test]
    fn a_name_resolves_to_its_familys_architecture_first() {
        let r = Registry::builtin();
        let width = |fam| -> Vec<usize> {
            r.resolve("RN50x64", fam)
                .unwrap()
                .iter()
                .map(|(c, _)| c.vision_width)
                .collect()
        };
        // Upstream's model_config.yml says 512; OpenAI's release is 128 wide.
        assert_eq!(width(Family::PyramidClip), [512, 128]);
        assert_eq!(width(Family::Clip), [128, 512]);
        let one = r.resolve("ViT-B-32-quickgelu", Family::Clip).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].1, Some(Activation::QuickGelu));
        let bare = r.resolve("RN50x64", Family::Clip).unwrap();
        assert_eq!(bare[0].1, Some(Activation::Gelu));
        assert!(r.resolve("RN50x65", Family::Clip).is_err());
        // A --model-config entry of that name replaces both.
        let dir = std::env::temp_dir().join(format!("pyramidclip-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("models.yml");
        let entry = serde_yaml::to_string(&BTreeMap::from([("RN50x64", &r.clip["RN50x64"])]));
        std::fs::write(&file, entry.unwrap()).unwrap();
        let with_file = Registry::load(Some(&file)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let got = with_file.resolve("RN50x64", Family::PyramidClip).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.vision_width, 128);
    }

    /// open_clip's CLIPA configs: family `clipa`, the tokenizer and `strip_sep_token` read;
    /// the same towers with a causal text mask, `ln_pre` or the class token are refused, as is
    /// `strip_sep_token` for another family, and the built-in CLIPA configs equal the JSON's.
    #[test]
    fn open_clip_clipa_configs_are_read() {
        let clipa = r#"{"embed_dim": 768,
            "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14,
                           "no_ln_pre": true, "pool_type": "avg", "final_ln_after_pool": true},
            "text_cfg": {"context_length": 32, "vocab_size": 32000,
                         "hf_tokenizer_name": "bert-base-uncased",
                         "tokenizer_kwargs": {"strip_sep_token": true}, "width": 768,
                         "heads": 12, "layers": 12, "pool_type": "last",
                         "no_causal_mask": true}}"#;
        let path = Path::new("ViT-L-14-CLIPA.json");
        let ok = &open_clip_config(path, clipa).unwrap().unwrap()["ViT-L-14-CLIPA"];
        assert_eq!(ok.family, Family::Clipa);
        assert_eq!(ok.activation, Activation::Gelu);
        let tok = ok.hf_tokenizer().unwrap();
        assert_eq!(
            (tok.repo, tok.clean, tok.strip_sep),
            ("bert-base-uncased", TextClean::Whitespace, true)
        );
        assert!(!ok.vision_ln_pre() && ok.vision_avg_pool());
        ok.validate("ViT-L-14-CLIPA").unwrap();
        let builtin = Registry::builtin();
        assert_eq!(builtin.get("ViT-L-14-CLIPA").unwrap(), ok);
        for (from, to, named) in [
            (
                r#""no_causal_mask": true"#,
                r#""no_causal_mask": false"#,
                "`text_cfg.no_causal_mask`",
            ),
            (r#""no_ln_pre": true, "#, "", "`vision_cfg.no_ln_pre`"),
            (
                r#""pool_type": "avg""#,
                r#""pool_type": "tok""#,
                "`vision_cfg.pool_type`",
            ),
            (
                r#"{"strip_sep_token": true}"#,
                r#"{"strip_sep_token": true, "language": "en"}"#,
                "`clean` and `strip_sep_token` are",
            ),
        ] {
            let text = clipa.replacen(from, to, 1);
            assert_ne!(text, clipa);
            let e = open_clip_config(path, &text)
                .unwrap()
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{e}");
        }
        // Only CLIPA's tokenizer options include `strip_sep_token`.
        let siglip = r#"{"embed_dim": 768, "custom_text": true,
            "vision_cfg": {"image_size": 224, "timm_model_name": "vit_base_patch16_siglip_224",
                           "timm_pool": "map", "timm_proj": "none"},
            "text_cfg": {"context_length": 64, "vocab_size": 32000,
                         "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                         "tokenizer_kwargs": {"strip_sep_token": true}, "width": 768,
                         "heads": 12, "layers": 12, "no_causal_mask": true, "proj_bias": true,
                         "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}}"#;
        let e = open_clip_config(Path::new("s.json"), siglip)
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("only `clean` is implemented"), "{e}");
    }

    /// MetaCLIP 2's worldwide configs: family `clip` pooled at the tokenizer's `eos_id`
    /// (open_clip's default 2 when unset), the tokenizer and its cleaning read; the built-in
    /// configs equal the JSON's; `strip_sep_token` is refused there.
    #[test]
    fn open_clip_worldwide_configs_are_read() {
        let ww = r#"{"embed_dim": 768,
            "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
            "text_cfg": {"hf_tokenizer_name": "google/mt5-base", "pool_type": "eos",
                         "eos_id": 1, "tokenizer_kwargs": {"clean": "canonicalize"},
                         "context_length": 77, "vocab_size": 250100, "width": 768,
                         "heads": 12, "layers": 12}}"#;
        let path = Path::new("ViT-L-14-worldwide.json");
        let ok = &open_clip_config(path, ww).unwrap().unwrap()["ViT-L-14-worldwide"];
        assert_eq!((ok.family, ok.activation), (Family::Clip, Activation::Gelu));
        assert_eq!(ok.text_eos_id(), Some(1));
        let tok = ok.hf_tokenizer().unwrap();
        assert_eq!(
            (tok.repo, tok.clean, tok.strip_sep),
            ("google/mt5-base", TextClean::Canonicalize, false)
        );
        ok.validate("ViT-L-14-worldwide").unwrap();
        assert_eq!(Registry::builtin().get("ViT-L-14-worldwide").unwrap(), ok);
        let text = ww.replacen(r#""eos_id": 1, "#, "", 1);
        let c = &open_clip_config(path, &text).unwrap().unwrap()["ViT-L-14-worldwide"];
        assert_eq!(c.text_eos_id(), Some(2));
        let text = ww.replacen(
            r#""clean": "canonicalize""#,
            r#""strip_sep_token": true"#,
            1,
        );
        let e = open_clip_config(path, &text).unwrap().unwrap_err();
        assert!(e.to_string().contains("only `clean` is"), "{e}");
        // An eos id outside the vocabulary is refused.
        let text = ww.replacen(r#""eos_id": 1"#, r#""eos_id": 250100"#, 1);
        let c = &open_clip_config(path, &text).unwrap().unwrap()["ViT-L-14-worldwide"];
        assert!(c.validate("x").unwrap_err().to_string().contains("eos_id"));
    }

    #[test]
    fn open_clip_options_computed_otherwise_are_refused() {
        let base = r#"{"embed_dim": 512, "quick_gelu": true,
            "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32,
                           "mlp_ratio": 4.0, "ls_init_value": null, "pool_type": "tok",
                           "image_mean": [0.48145466, 0.4578275, 0.40821073]},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512,
                         "heads": 8, "layers": 12, "pool_type": "argmax"}}"#;
        let path = Path::new("ViT-B-32-quickgelu.json");
        let ok = open_clip_config(path, base).unwrap().unwrap();
        assert_eq!(ok["ViT-B-32-quickgelu"].family, Family::Clip);
        for (from, to, named) in [
            (
                r#""pool_type": "argmax""#,
                r#""pool_type": "last""#,
                "`text_cfg.pool_type`",
            ),
            (
                r#""heads": 8,"#,
                r#""heads": 8, "mlp_ratio": 2.0,"#,
                "`text_cfg.mlp_ratio`",
            ),
            (r#"0.4578275"#, r#"0.5"#, "`vision_cfg.image_mean`"),
            (
                r#""embed_dim": 512,"#,
                r#""embed_dim": 512, "custom_text": true,"#,
                "`custom_text`",
            ),
            (
                r#""patch_size": 32,"#,
                r#""patch_size": 32, "head_width": 1000,"#,
                "head_width 1000 does not divide",
            ),
        ] {
            let text = base.replacen(from, to, 1);
            assert_ne!(text, base);
            let e = open_clip_config(path, &text)
                .unwrap()
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{e}");
            assert!(e.contains("ViT-B-32-quickgelu.json"), "{e}");
        }
        // CLIP's text tower without its causal mask, still pooled at the end-of-text id.
        let text = base.replacen(
            r#""heads": 8,"#,
            r#""heads": 8, "no_causal_mask": true,"#,
            1,
        );
        let c = &open_clip_config(path, &text).unwrap().unwrap()["ViT-B-32-quickgelu"];
        assert!(c.text_no_causal_mask && !c.text_causal());
        assert!(ok["ViT-B-32-quickgelu"].text_causal());
        // The image tower's mlp_ratio and layer scale are read (open_clip's int(width * r)).
        let text = base.replacen(
            r#""mlp_ratio": 4.0, "ls_init_value": null"#,
            r#""mlp_ratio": 2.6667, "ls_init_value": 1e-5"#,
            1,
        );
        assert_ne!(text, base);
        let c = &open_clip_config(path, &text).unwrap().unwrap()["ViT-B-32-quickgelu"];
        assert_eq!(
            (c.vision_mlp_width, c.vision_layer_scale),
            (Some(2048), true)
        );
    }

    #[test]
    fn convnext_configs_read_as_open_clip_builds_them() {
        // open_clip 3.3's convnext_large_d.json.
        let base = r#"{"embed_dim": 768,
            "vision_cfg": {"timm_model_name": "convnext_large", "timm_model_pretrained": false,
                           "timm_pool": "", "timm_proj": "mlp", "timm_drop": 0.0,
                           "timm_drop_path": 0.1, "image_size": 256},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768,
                         "heads": 12, "layers": 16}}"#;
        let path = Path::new("convnext_large_d.json");
        let got = open_clip_config(path, base).unwrap().unwrap();
        let c = &got["convnext_large_d"];
        let t = c.vision_timm.as_ref().unwrap();
        assert_eq!(
            (t.model.as_str(), t.proj, t.eps),
            ("convnext_large", TimmProj::Mlp, 1e-6)
        );
        assert_eq!(c.vision_layers, VisionLayers::ResNet(vec![3, 3, 27, 3]));
        assert_eq!((c.vision_width, c.image_resolution), (192, 256));
        c.validate("convnext_large_d").unwrap();
        // The built-in entry is the same architecture.
        assert_eq!(&Registry::builtin().configs["convnext_large_d"], c);
        let xxl = &Registry::builtin().configs["convnext_xxlarge"];
        assert_eq!(xxl.vision_timm.as_ref().unwrap().eps, 1e-5);
        let avg = base.replacen(r#""timm_pool": """#, r#""timm_pool": "avg""#, 1);
        assert_eq!(
            &open_clip_config(path, &avg).unwrap().unwrap()["convnext_large_d"],
            c
        );
        for (from, to, named) in [
            (
                r#""timm_pool": """#,
                r#""timm_pool": "abs_attn""#,
                "`vision_cfg.timm_pool`",
            ),
            (
                r#""timm_proj": "mlp""#,
                r#""timm_proj": "none""#,
                "`vision_cfg.timm_proj`",
            ),
            (
                r#""timm_proj": "mlp","#,
                r#""timm_proj": "mlp", "timm_proj_bias": true,"#,
                "`vision_cfg.timm_proj_bias`",
            ),
            (
                r#""convnext_large""#,
                r#""vit_base_patch16_224""#,
                "`vision_cfg.timm_model_name`",
            ),
        ] {
            let text = base.replacen(from, to, 1);
            assert_ne!(text, base);
            let e = open_clip_config(path, &text)
                .unwrap()
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{e}");
        }
    }

    #[test]
    fn hf_text_configs_read_as_open_clip_builds_them() {
        // open_clip 3.3's three configs with an HF text tower.
        let parse = |name: &str, text: &str| {
            let path = PathBuf::from(format!("{name}.json"));
            open_clip_config(&path, text).unwrap()
        };
        let reg = Registry::builtin();
        for (name, text) in [
            (
                "xlm-roberta-base-ViT-B-32",
                r#"{"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12,
                "width": 768, "patch_size": 32}, "text_cfg": {"hf_model_name":
                "xlm-roberta-base", "hf_tokenizer_name": "xlm-roberta-base",
                "hf_pooler_type": "mean_pooler"}}"#,
            ),
            (
                "roberta-ViT-B-32",
                r#"{"embed_dim": 512, "quick_gelu": true, "vision_cfg": {"image_size": 224,
                "layers": 12, "width": 768, "patch_size": 32}, "text_cfg": {"hf_model_name":
                "roberta-base", "hf_tokenizer_name": "roberta-base",
                "hf_pooler_type": "mean_pooler"}}"#,
            ),
            (
                "xlm-roberta-large-ViT-H-14",
                r#"{"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": 32,
                "width": 1280, "head_width": 80, "patch_size": 14}, "text_cfg":
                {"hf_model_name": "xlm-roberta-large", "hf_tokenizer_name":
                "xlm-roberta-large", "hf_pooler_type": "mean_pooler"}}"#,
            ),
            (
                "nllb-clip-base",
                r#"{"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12,
                "width": 768, "patch_size": 32}, "text_cfg": {"hf_model_name":
                "facebook/nllb-200-distilled-600M", "hf_tokenizer_name":
                "facebook/nllb-200-distilled-600M", "hf_proj_type": "linear",
                "hf_pooler_type": "cls_pooler"}}"#,
            ),
            (
                "nllb-clip-base-siglip",
                r#"{"embed_dim": 768, "custom_text": true, "init_logit_bias": -10,
                "vision_cfg": {"image_size": 384, "timm_model_name":
                "vit_base_patch16_siglip_384", "timm_model_pretrained": false,
                "timm_pool": "map", "timm_proj": "none"}, "text_cfg": {"hf_model_name":
                "facebook/nllb-200-distilled-600M", "hf_tokenizer_name":
                "facebook/nllb-200-distilled-600M", "hf_proj_type": "linear",
                "hf_pooler_type": "cls_pooler"}}"#,
            ),
            (
                "nllb-clip-large-siglip",
                r#"{"embed_dim": 1152, "custom_text": true, "init_logit_bias": -10,
                "vision_cfg": {"image_size": 384, "timm_model_name":
                "vit_so400m_patch14_siglip_384", "timm_model_pretrained": false,
                "timm_pool": "map", "timm_proj": "none"}, "text_cfg": {"hf_model_name":
                "facebook/nllb-200-distilled-1.3B", "hf_tokenizer_name":
                "facebook/nllb-200-distilled-1.3B", "hf_proj_type": "linear",
                "hf_pooler_type": "cls_pooler"}}"#,
            ),
            (
                "nllb-clip-large",
                r#"{"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": 32,
                "width": 1280, "head_width": 80, "patch_size": 14}, "text_cfg":
                {"hf_model_name": "facebook/nllb-200-distilled-1.3B", "hf_tokenizer_name":
                "facebook/nllb-200-distilled-1.3B", "hf_proj_type": "linear",
                "hf_pooler_type": "cls_pooler"}}"#,
            ),
        ] {
            let got = &parse(name, text).unwrap()[name];
            assert_eq!(&reg.configs[name], got, "{name}");
            got.validate(name).unwrap();
            assert_eq!(got.hf_tokenizer().unwrap().clean, TextClean::Whitespace);
        }
        // A position table too small for the context, or larger than any model's.
        for positions in [76, MAX_HF_POSITIONS + 1, usize::MAX] {
            let mut c = reg.configs["nllb-clip-base"].clone();
            c.hf_text.as_mut().unwrap().positions = positions;
            assert!(c.validate("m").is_err(), "{positions}");
        }
        let base = r#"{"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12,
            "width": 768, "patch_size": 32}, "text_cfg": {"hf_model_name": "xlm-roberta-base",
            "hf_tokenizer_name": "xlm-roberta-base", "hf_pooler_type": "mean_pooler"}}"#;
        let h = |text: &str| parse("m", text).unwrap()["m"].hf_text.clone().unwrap();
        let cls = h(&base.replace("mean_pooler", "cls_pooler"));
        assert_eq!(cls.pooler, HfPooler::Cls);
        let lin = h(&base.replace(r#""hf_pooler_type""#, r#""hf_proj_type": "linear", "x""#));
        assert_eq!((lin.pooler, lin.proj), (HfPooler::Mean, HfProj::Linear));
        // Refused, naming the option: another pooler, a text model without a known config,
        // another encoder's config.json.
        for (text, want) in [
            (base.replace("mean_pooler", "max_pooler"), "hf_pooler_type"),
            (
                base.replace(
                    r#""hf_model_name": "xlm-roberta-base""#,
                    r#""hf_model_name": "google/mt5-base""#,
                ),
                "hf_model_name",
            ),
        ] {
            let e = parse("m", &text).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("enc")).unwrap();
        let cfg_json = |ty: &str| {
            format!(
                r#"{{"model_type": "{ty}", "hidden_size": 64, "num_attention_heads": 1,
                "num_hidden_layers": 1, "intermediate_size": 128, "vocab_size": 100,
                "max_position_embeddings": 90, "pad_token_id": 1, "layer_norm_eps": 1e-12}}"#
            )
        };
        let at = dir.path().join("m.json");
        let text = base
            .replace(
                r#""hf_model_name": "xlm-roberta-base""#,
                r#""hf_model_name": "enc""#,
            )
            .replace(r#""embed_dim": 512"#, r#""embed_dim": 64"#);
        std::fs::write(dir.path().join("enc/config.json"), cfg_json("roberta")).unwrap();
        let got = &open_clip_config(&at, &text).unwrap().unwrap()["m"];
        let hf = got.hf_text.as_ref().unwrap();
        assert_eq!(
            (got.transformer_width, got.vocab_size, hf.positions, hf.eps),
            (64, 100, 90, 1e-12)
        );
        std::fs::write(dir.path().join("enc/config.json"), cfg_json("bert")).unwrap();
        let e = open_clip_config(&at, &text)
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("model_type") && e.contains("bert"), "{e}");
    }

    #[test]
    fn eva_configs_read_as_open_clip_builds_them() {
        // open_clip 3.3's EVA02-B-16.json, and its other EVA configs by their differences.
        let base = r#"{"embed_dim": 512, "custom_text": true,
            "vision_cfg": {"image_size": 224, "timm_model_name": "eva02_base_patch16_clip_224",
                           "timm_model_pretrained": false, "timm_pool": "token",
                           "timm_proj": null},
            "text_cfg": {"context_length": 77, "vocab_size": 49408,
                         "width": 512, "heads": 8, "layers": 12}}"#;
        let parse = |name: &str, text: &str| {
            let path = PathBuf::from(format!("{name}.json"));
            open_clip_config(&path, text).unwrap()
        };
        let reg = Registry::builtin();
        let variants = [
            ("EVA02-B-16", base.to_string()),
            (
                "EVA02-L-14-336",
                base.replace(r#""embed_dim": 512"#, r#""embed_dim": 768"#)
                    .replace(r#""image_size": 224"#, r#""image_size": 336"#)
                    .replace(
                        "eva02_base_patch16_clip_224",
                        "eva02_large_patch14_clip_336",
                    )
                    .replace(
                        r#""width": 512, "heads": 8"#,
                        r#""width": 768, "heads": 12"#,
                    ),
            ),
            (
                "EVA01-g-14",
                base.replace(r#""embed_dim": 512"#, r#""embed_dim": 1024"#)
                    .replace("eva02_base_patch16_clip_224", "eva_giant_patch14_224")
                    .replace(
                        r#""width": 512, "heads": 8"#,
                        r#""width": 768, "heads": 12"#,
                    ),
            ),
            (
                "EVA02-E-14-plus",
                base.replace(r#""embed_dim": 512"#, r#""embed_dim": 1024"#)
                    .replace(
                        "eva02_base_patch16_clip_224",
                        "eva02_enormous_patch14_clip_224",
                    )
                    .replace(
                        r#""width": 512, "heads": 8, "layers": 12"#,
                        r#""width": 1280, "heads": 20, "layers": 32"#,
                    ),
            ),
        ];
        for (name, text) in &variants {
            let c = &parse(name, text).unwrap()[*name];
            assert_eq!(&reg.configs[*name], c, "{name}");
            c.validate(name).unwrap();
            assert_eq!(
                (c.family, c.activation),
                (Family::CustomText, Activation::Gelu)
            );
        }
        let e = &reg.configs["EVA02-E-14-plus"];
        let eva = e.vision_eva.as_ref().unwrap();
        assert!(eva.post_norm && eva.qkv_fused && eva.rope.is_none());
        assert_eq!(
            (e.vision_heads, e.vision_mlp_width),
            (Some(16), Some(15360))
        );
        // PE-Core: the attention-pool head (`timm_pool: map`); the gigantic one without class
        // token, its rotary grid counted from 0.
        let pe = base
            .replace(r#""embed_dim": 512"#, r#""embed_dim": 1024"#)
            .replace(
                "eva02_base_patch16_clip_224",
                "vit_pe_core_base_patch16_224",
            )
            .replace(r#""timm_pool": "token""#, r#""timm_pool": "map""#)
            .replace(r#""context_length": 77"#, r#""context_length": 32"#)
            .replace(
                r#""width": 512, "heads": 8, "layers": 12"#,
                r#""width": 1024, "heads": 16, "layers": 24"#,
            );
        let b = &parse("PE-Core-B-16", &pe).unwrap()["PE-Core-B-16"];
        assert_eq!(&reg.configs["PE-Core-B-16"], b);
        let e = b.vision_eva.as_ref().unwrap();
        assert!(e.fused_bias && e.norm_pre && e.rope_xy && e.class_token);
        assert_eq!(
            (e.rope, e.rope_offset, e.map_heads, e.eps),
            (Some(14), 1, Some(8), 1e-5)
        );
        let g = reg.configs["PE-Core-bigG-14-448"]
            .vision_eva
            .clone()
            .unwrap();
        assert!(!g.class_token && g.rope_offset == 0 && g.rope == Some(32));
        let e = parse(
            "PE-Core-B-16",
            &pe.replace(r#""timm_pool": "map""#, r#""timm_pool": "token""#),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`vision_cfg.timm_pool`") && e.contains("\"map\""),
            "{e}"
        );
        let l = reg.configs["EVA02-L-14-336"].vision_eva.clone().unwrap();
        assert!(l.swiglu && l.mlp_norm && l.attn_norm && !l.qkv_fused && !l.post_norm);
        assert_eq!(l.rope, Some(16));
        // What open_clip would build otherwise is refused, naming the option.
        for (from, to, what) in [
            (
                r#""timm_pool": "token""#,
                r#""timm_pool": "avg""#,
                "`vision_cfg.timm_pool`",
            ),
            (
                r#""timm_proj": null"#,
                r#""timm_proj": "linear""#,
                "`vision_cfg.timm_proj`",
            ),
            (
                r#""image_size": 224"#,
                r#""image_size": 336"#,
                "`vision_cfg.image_size`",
            ),
        ] {
            let e = parse("EVA02-B-16", &base.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
        // MobileCLIP's timm ViTs: the text tower without its causal mask (MobileCLIP2-L-14's);
        // MobileCLIP-B's convolutional stem and positions for the patches only.
        let l14 = base
            .replace("eva02_base_patch16_clip_224", "vit_large_patch14_clip_224")
            .replace(
                r#""layers": 12}"#,
                r#""layers": 12, "no_causal_mask": true}"#,
            );
        let c = &parse("MobileCLIP2-L-14", &l14).unwrap()["MobileCLIP2-L-14"];
        let e = c.vision_eva.as_ref().unwrap();
        assert!(c.text_no_causal_mask && e.norm_pre && e.fused_bias && e.rope.is_none());
        assert_eq!(
            (e.eps, c.vision_patch_size, c.vision_heads),
            (1e-5, Some(14), Some(16))
        );
        let b = &parse(
            "MobileCLIP-B",
            &base.replace("eva02_base_patch16_clip_224", "vit_base_mci_224"),
        )
        .unwrap()["MobileCLIP-B"];
        let e = b.vision_eva.as_ref().unwrap();
        assert!(e.conv_stem && e.no_embed_class && !e.norm_pre && !b.text_no_causal_mask);
        assert_eq!((e.eps, b.vision_mlp_width), (1e-6, None));
        let r = Registry::builtin();
        assert_eq!(r.get("MobileCLIP-B").unwrap(), b);
        // Without `custom_text` open_clip builds a `CLIP`: the same trunk, CLIP's text tower
        // at the top level.
        let top = &parse("EVA02-B-16", &base.replace(r#""custom_text": true,"#, "")).unwrap()
            ["EVA02-B-16"];
        assert_eq!(top.family, Family::Clip);
        assert_eq!(top.vision_eva, reg.configs["EVA02-B-16"].vision_eva);
    }

    /// open_clip 3.3's vit_medium_patch16_gap_256.json: timm's average-pooled ViT with CLIP's
    /// text tower at the top level, as the built-in config; `timm_pool: avg` is the same
    /// pool, another projection is refused.
    #[test]
    fn average_pooled_vit_config_reads_as_open_clip_builds_it() {
        let text = r#"{"embed_dim": 512, "vision_cfg": {"timm_model_name":
            "vit_medium_patch16_gap_256", "timm_model_pretrained": false, "timm_pool": "",
            "timm_proj": "linear", "image_size": 256}, "text_cfg": {"context_length": 77,
            "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}"#;
        let name = "vit_medium_patch16_gap_256";
        let parse = |text: &str| open_clip_config(&PathBuf::from(format!("{name}.json")), text);
        let c = parse(text).unwrap().unwrap();
        let r = Registry::builtin();
        assert_eq!(&c[name], r.get(name).unwrap());
        let g = &c[name];
        assert_eq!(
            (g.family, g.activation, g.image_resolution, g.vision_heads),
            (Family::Clip, Activation::Gelu, 256, Some(8))
        );
        let e = g.vision_eva.as_ref().unwrap();
        assert!(e.norm_mean && e.layer_scale && e.head_proj && !e.qkv_bias && !e.class_token);
        assert!(!e.avg_pool && !e.fused_bias && e.rope.is_none());
        let avg = parse(&text.replace(r#""timm_pool": """#, r#""timm_pool": "avg""#));
        assert_eq!(&avg.unwrap().unwrap()[name], g);
        for (from, to, what) in [
            (
                r#""timm_proj": "linear""#,
                r#""timm_proj": "mlp""#,
                "`vision_cfg.timm_proj`",
            ),
            (
                r#""timm_pool": """#,
                r#""timm_pool": "token""#,
                "`vision_cfg.timm_pool`",
            ),
        ] {
            let e = parse(&text.replace(from, to))
                .unwrap()
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
    }

    /// open_clip 3.3's vit_relpos_medium_patch16_cls_224.json: timm's relative-position ViT
    /// with CLIP's text tower at the top level, as the built-in config (224 px: timm builds the
    /// trunk at its own size); `timm_pool: token` is the same pool.
    #[test]
    fn relative_position_vit_config_reads_as_open_clip_builds_it() {
        let text = r#"{"embed_dim": 512, "vision_cfg": {"timm_model_name":
            "vit_relpos_medium_patch16_cls_224", "timm_model_pretrained": false,
            "timm_pool": "", "timm_proj": "linear", "image_size": 224}, "text_cfg":
            {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
            "layers": 12}}"#;
        let name = "vit_relpos_medium_patch16_cls_224";
        let parse = |text: &str| open_clip_config(&PathBuf::from(format!("{name}.json")), text);
        let c = parse(text).unwrap().unwrap();
        assert_eq!(&c[name], Registry::builtin().get(name).unwrap());
        let g = &c[name];
        assert_eq!((g.family, g.vision_heads), (Family::Clip, Some(8)));
        let e = g.vision_eva.as_ref().unwrap();
        assert!(e.rel_pos && e.layer_scale && e.class_token && e.head_proj);
        assert!(!e.pos_embed && !e.qkv_bias && !e.norm_mean);
        let token = parse(&text.replace(r#""timm_pool": """#, r#""timm_pool": "token""#));
        assert_eq!(&token.unwrap().unwrap()[name], g);
        let e = parse(&text.replace(r#""image_size": 224"#, r#""image_size": 256"#))
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`vision_cfg.image_size`"), "{e}");
    }

    /// open_clip 3.3's ViTamin-S.json and ViTamin-XL-384.json read as the built-in configs
    /// (the XL at the 256 pixels its config preprocesses); another projection is refused.
    #[test]
    fn vitamin_configs_read_as_open_clip_builds_them() {
        let json = |trunk: &str, image: usize, embed: usize, text: [usize; 3]| {
            format!(
                r#"{{"embed_dim": {embed}, "vision_cfg": {{"timm_model_name": "{trunk}",
                "timm_model_pretrained": false, "timm_pool": "", "timm_proj": "linear",
                "timm_drop": 0.0, "timm_drop_path": 0.1, "image_size": {image}}},
                "text_cfg": {{"context_length": 77, "vocab_size": 49408, "width": {},
                "heads": {}, "layers": {}}}, "custom_text": true}}"#,
                text[0], text[1], text[2]
            )
        };
        let parse = |name: &str, text: &str| {
            let path = PathBuf::from(format!("{name}.json"));
            open_clip_config(&path, text).unwrap()
        };
        let r = Registry::builtin();
        let s = json("vitamin_small_224", 224, 384, [384, 6, 12]);
        let c = parse("ViTamin-S", &s).unwrap();
        assert_eq!(&c["ViTamin-S"], r.get("ViTamin-S").unwrap());
        let e = c["ViTamin-S"].vision_eva.clone().unwrap();
        assert_eq!(e.mbconv, Some(MbConvStages::vitamin(64)));
        assert!(e.geglu && e.avg_pool && e.head_proj && e.pos_embed && !e.class_token);
        let xl = json("vitamin_xlarge_384", 256, 1152, [1152, 16, 27]);
        let c = parse("ViTamin-XL-384", &xl).unwrap();
        let x = &c["ViTamin-XL-384"];
        assert_eq!(x, r.get("ViTamin-XL-384").unwrap());
        assert_eq!((x.image_resolution, x.vision_mlp_width), (256, Some(2304)));
        assert!(!x.vision_eva.as_ref().unwrap().pos_embed);
        for (from, to, what) in [
            (
                r#""timm_proj": "linear""#,
                r#""timm_proj": "mlp""#,
                "`vision_cfg.timm_proj`",
            ),
            (
                r#""timm_pool": """#,
                r#""timm_pool": "avg""#,
                "`vision_cfg.timm_pool`",
            ),
            (
                r#""timm_proj": "linear","#,
                r#""timm_proj": "linear", "timm_proj_bias": true,"#,
                "`vision_cfg.timm_proj_bias`",
            ),
        ] {
            let e = parse("ViTamin-S", &s.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn siglip_configs_read_as_open_clip_builds_them() {
        // open_clip 3.3's ViT-B-16-SigLIP.json, ViT-SO400M-14-SigLIP.json's text tower and
        // ViT-B-16-SigLIP2.json's.
        let base = r#"{"embed_dim": 768, "init_logit_bias": -10, "custom_text": true,
            "vision_cfg": {"image_size": 224, "timm_model_name": "vit_base_patch16_siglip_224",
                           "timm_model_pretrained": false, "timm_pool": "map",
                           "timm_proj": "none"},
            "text_cfg": {"context_length": 64, "vocab_size": 32000,
                         "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                         "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 768,
                         "heads": 12, "layers": 12, "no_causal_mask": true,
                         "proj_bias": true, "pool_type": "last",
                         "norm_kwargs": {"eps": 1e-6}}}"#;
        let parse = |name: &str, text: &str| {
            let path = PathBuf::from(format!("{name}.json"));
            open_clip_config(&path, text).unwrap()
        };
        let b16 = &parse("ViT-B-16-SigLIP", base).unwrap()["ViT-B-16-SigLIP"];
        let reg = Registry::builtin();
        assert_eq!(&reg.configs["ViT-B-16-SigLIP"], b16);
        b16.validate("ViT-B-16-SigLIP").unwrap();
        let sig = b16.siglip.as_ref().unwrap();
        assert_eq!(
            (
                b16.family,
                b16.activation,
                sig.vision_activation,
                b16.vision_heads
            ),
            (Family::Siglip, Activation::Gelu, Activation::Gelu, Some(12))
        );
        let so = base
            .replace(r#""embed_dim": 768"#, r#""embed_dim": 1152"#)
            .replace(
                "vit_base_patch16_siglip_224",
                "vit_so400m_patch14_siglip_224",
            )
            .replace(r#""context_length": 64"#, r#""context_length": 16"#)
            .replace(r#""width": 768,"#, r#""width": 1152, "mlp_ratio": 3.7362,"#)
            .replace(
                r#""heads": 12, "layers": 12,"#,
                r#""heads": 16, "layers": 27,"#,
            );
        let so = &parse("ViT-SO400M-14-SigLIP", &so).unwrap()["ViT-SO400M-14-SigLIP"];
        assert_eq!(&reg.configs["ViT-SO400M-14-SigLIP"], so);
        assert_eq!(so.vision_mlp_width, Some(4304));
        assert_eq!(so.siglip.as_ref().unwrap().text_mlp_width, Some(4304));
        // ViT-SO400M-16-SigLIP-i18n-256: no text projection (and no `proj_bias`).
        let i18n = base
            .replace(r#""embed_dim": 768"#, r#""embed_dim": 1152"#)
            .replace(r#""image_size": 224"#, r#""image_size": 256"#)
            .replace(
                "vit_base_patch16_siglip_224",
                "vit_so400m_patch16_siglip_256",
            )
            .replace(r#""vocab_size": 32000"#, r#""vocab_size": 250000"#)
            .replace("timm/ViT-B-16-SigLIP", "timm/ViT-B-16-SigLIP-i18n-256")
            .replace(r#""width": 768,"#, r#""width": 1152, "mlp_ratio": 3.7362,"#)
            .replace(
                r#""heads": 12, "layers": 12,"#,
                r#""heads": 16, "layers": 27,"#,
            )
            .replace(r#""proj_bias": true,"#, r#""proj_type": "none","#);
        let name = "ViT-SO400M-16-SigLIP-i18n-256";
        let i18n = &parse(name, &i18n).unwrap()[name];
        assert_eq!(&reg.configs[name], i18n);
        assert!(i18n.siglip.as_ref().unwrap().no_text_projection);
        let v2 = base
            .replace(r#""vocab_size": 32000"#, r#""vocab_size": 256000"#)
            .replace("timm/ViT-B-16-SigLIP", "timm/ViT-B-16-SigLIP2")
            .replace(
                r#""pool_type": "last","#,
                r#""pool_type": "last", "act_kwargs": {"approximate": "tanh"},"#,
            );
        let v2 = &parse("ViT-B-16-SigLIP2", &v2).unwrap()["ViT-B-16-SigLIP2"];
        assert_eq!(&reg.configs["ViT-B-16-SigLIP2"], v2);
        assert_eq!(v2.activation, Activation::GeluTanh);
        for (from, to, named) in [
            (
                r#""no_causal_mask": true"#,
                r#""no_causal_mask": false"#,
                "`text_cfg.no_causal_mask`",
            ),
            (
                r#""timm_pool": "map""#,
                r#""timm_pool": "avg""#,
                "`vision_cfg.timm_pool`",
            ),
            (
                r#""pool_type": "last""#,
                r#""pool_type": "argmax""#,
                "`text_cfg.pool_type`",
            ),
            (
                r#""canonicalize""#,
                r#""lower_punct""#,
                "`text_cfg.tokenizer_kwargs.clean`",
            ),
            (
                r#""pool_type": "last","#,
                r#""pool_type": "last", "act_kwargs": {"approximate": "none"},"#,
                "`text_cfg.act_kwargs`",
            ),
            (r#""custom_text": true,"#, "", "`custom_text`"),
        ] {
            let text = base.replacen(from, to, 1);
            assert_ne!(text, base);
            let e = parse("ViT-B-16-SigLIP", &text).unwrap_err().to_string();
            assert!(e.contains(named), "{e}");
        }
    }

    #[test]
    fn coca_configs_read_as_open_clip_builds_them() {
        // open_clip 3.3's coca_ViT-B-32.json, less its multimodal part's sizes.
        let base = r#"{"embed_dim": 512, "custom_text": true,
            "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32,
                           "attentional_pool": true, "attn_pooler_heads": 8,
                           "output_tokens": true},
            "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 512, "heads": 8,
                         "layers": 12, "embed_cls": true, "output_tokens": true},
            "multimodal_cfg": {"context_length": 76, "width": 512}}"#;
        let path = Path::new("coca_ViT-B-32.json");
        let got = open_clip_config(path, base).unwrap().unwrap();
        let c = &got["coca_ViT-B-32"];
        assert_eq!(c.family, Family::Coca);
        assert_eq!(c.activation, Activation::Gelu);
        assert_eq!(c.context_length, 76);
        assert_eq!(c.text_positions(), 77);
        assert_eq!(
            c.vision_attn_pool,
            Some(AttnPool {
                queries: 256,
                heads: 8
            })
        );
        // The built-in entry is the same architecture.
        assert_eq!(&Registry::builtin().configs["coca_ViT-B-32"], c);
        for (from, to, named) in [
            (
                r#""embed_cls": true,"#,
                r#""embed_cls": true, "correct_cls_mask": true,"#,
                "`text_cfg.correct_cls_mask`",
            ),
            (
                r#""attentional_pool": true"#,
                r#""attentional_pool": "parallel""#,
                "`vision_cfg.attentional_pool`",
            ),
            (r#""embed_cls": true,"#, "", "`text_cfg.embed_cls`"),
        ] {
            let text = base.replacen(from, to, 1);
            assert_ne!(text, base);
            let e = open_clip_config(path, &text)
                .unwrap()
                .unwrap_err()
                .to_string();
            assert!(e.contains(named) && e.contains("CoCa's"), "{e}");
        }
    }
}
