//! Architecture detection from a checkpoint's keys and shapes.

use super::Checkpoint;
use crate::models::config::{
    Clipa, EvaKind, EvaTower, FastVitTower, MbConvStages, Siglip, TextClean, TimmProj, TimmTower,
    CONVNEXTS, EVA_ROPE_GRID, EVA_VITS, FASTVITS, PE_MAP_HEADS, SIGLIP_VITS,
};
use crate::models::{
    Activation, AttnPool, CocaDecoder, Config, Family, HfPooler, HfProj, HfText, Registry,
    VisionLayers,
};

#[derive(Debug, Clone)]
pub struct DetectedArch {
    /// The registry name that matches, if any.
    pub name: Option<String>,
    pub config: Config,
    /// Said once when loading: how a choice the weights cannot show was made.
    pub notice: Option<String>,
}

/// One notice from two: `first`'s, then `more`.
fn also(first: Option<String>, more: String) -> String {
    match first {
        Some(n) => format!("{n}. Also, {more}"),
        None => more,
    }
}

/// Count of the entries `<prefix><i>.` present (one past the largest index).
fn count_indexed(ck: &Checkpoint, prefix: &str) -> usize {
    ck.keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

/// Count of blocks `<prefix>resblocks{1,2}.<i>.` (PyramidCLIP) or `<prefix>resblocks.<i>.`
/// (CLIP) present.
fn count_blocks(ck: &Checkpoint, prefix: &str) -> usize {
    let mut n = 0;
    for group in ["resblocks1", "resblocks2", "resblocks"] {
        let p = format!("{prefix}{group}.");
        let max = ck
            .keys()
            .filter_map(|k| k.strip_prefix(&p))
            .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
            .max();
        n += max.map_or(0, |m| m + 1);
    }
    n
}

fn dim(ck: &Checkpoint, key: &str, i: usize) -> Result<usize, String> {
    ck.shape(key)
        .and_then(|s| s.get(i).copied())
        .ok_or_else(|| format!("has no `{key}`: not a PyramidCLIP/CLIP checkpoint"))
}

fn isqrt(n: usize) -> usize {
    let r = (n as f64).sqrt().round() as usize;
    if r * r == n {
        r
    } else {
        0
    }
}

/// open_clip's default attentional pooler heads (the shapes cannot show them).
const POOLER_HEADS: usize = 8;

/// The family, from the keys: SigLIP's attention-pool head (its text tower under `text.`),
/// CoCa's class token (its tower under `text.`), else CLIP's or PyramidCLIP's block names.
fn family(ck: &Checkpoint) -> Family {
    let eva = (ck.shape("visual.trunk.cls_token").is_some()
        || ck.shape("visual.trunk.norm_pre.weight").is_some()
        || ck
            .shape("visual.trunk.patch_embed.backbone.stem.conv1.weight")
            .is_some()
        || is_fastvit(ck))
        && ck.shape("text.token_embedding.weight").is_some();
    if eva {
        // open_clip's EVA and PE models: a timm EVA trunk (PE's with SigLIP's attention-pool
        // head, but a class token or a norm before the blocks; ViTamin's after its
        // convolutional stages), CLIP's text tower under `text.`.
        Family::CustomText
    } else if ck.shape("visual.trunk.attn_pool.latent").is_some() {
        // Also NLLB-SigLIP's (an HF text tower).
        Family::Siglip
    } else if has_hf_text(ck) {
        Family::HfText
    } else if ck.shape("text.cls_emb").is_some() {
        Family::Coca
    } else if ck.keys().any(|k| k.starts_with("transformer.resblocks.")) {
        // open_clip's CLIPA: CLIP's layout, its ViT without `ln_pre` (no other open_clip
        // model leaves it out).
        if ck.shape("visual.class_embedding").is_some()
            && ck.shape("visual.ln_pre.weight").is_none()
        {
            Family::Clipa
        } else {
            Family::Clip
        }
    } else {
        Family::PyramidClip
    }
}

/// An HF text tower's word embedding (open_clip's `HFTextEncoder`): RoBERTa's, NLLB's
/// (M2M100's encoder).
const HF_WORDS: &str = "text.transformer.embeddings.word_embeddings.weight";
const M2M_WORDS: &str = "text.transformer.embed_tokens.weight";

/// `HFTextEncoder`'s projection, from its keys: `proj.0` / `proj.2` (MLP), `proj`, none.
fn hf_proj(ck: &Checkpoint) -> HfProj {
    if ck.shape("text.proj.0.weight").is_some() {
        HfProj::Mlp
    } else if ck.shape("text.proj.weight").is_some() {
        HfProj::Linear
    } else {
        HfProj::None
    }
}

fn has_hf_text(ck: &Checkpoint) -> bool {
    ck.shape(HF_WORDS).is_some() || ck.shape(M2M_WORDS).is_some()
}

/// An M2M100 (NLLB) encoder's configuration from its shapes (width, layers, vocabulary, MLP
/// width; the position table's size where a checkpoint holds it) and NLLB's defaults for the
/// rest: 64-wide heads, pad id 1, eps 1e-5, ReLU, scaled embeddings, 1024 positions, the
/// first position pooled (open_clip's `cls_pooler`).
fn m2m_shapes(ck: &Checkpoint) -> Result<(HfText, [usize; 3]), String> {
    let (vocab, width) = (dim(ck, M2M_WORDS, 0)?, dim(ck, M2M_WORDS, 1)?);
    let layers = count_indexed(ck, "text.transformer.layers.");
    let known = crate::models::config::HF_TEXT_MODELS
        .iter()
        .find(|(_, ty, s)| *ty == "m2m_100" && s[0] == width && s[2] == layers && s[4] == vocab);
    let positions = ck
        .shape("text.transformer.embed_positions.weights")
        .and_then(|s| s.first())
        .map_or(1024, |&p| p.saturating_sub(2));
    let intermediate = dim(ck, "text.transformer.layers.0.fc1.weight", 0)?;
    let h = HfText {
        model: known.map_or("", |m| m.0).to_string(),
        tokenizer: known.map_or("", |m| m.0).to_string(),
        ..HfText::with_defaults(
            "m2m_100",
            [intermediate, positions],
            HfPooler::Cls,
            hf_proj(ck),
        )
    };
    Ok((h, [width, layers, vocab]))
}

/// An HF text tower's configuration from its shapes (width, layers, vocabulary) and, for
/// what they cannot show, transformers' RoBERTa defaults: 64-wide heads, pad id 1, eps 1e-5,
/// GELU, the mean pooler unless the encoder's own pooler is there (`cls_pooler`); the
/// tokenizer of the hub model with that vocabulary and width, if open_clip names one.
fn hf_text_shapes(ck: &Checkpoint) -> Result<(HfText, [usize; 3]), String> {
    if ck.shape(M2M_WORDS).is_some() {
        return m2m_shapes(ck);
    }
    let e = "text.transformer.embeddings.";
    let (vocab, width) = (dim(ck, HF_WORDS, 0)?, dim(ck, HF_WORDS, 1)?);
    let layers = count_indexed(ck, "text.transformer.encoder.layer.");
    let pooler = if ck.shape("text.transformer.pooler.dense.weight").is_some() {
        HfPooler::Cls
    } else {
        HfPooler::Mean
    };
    let known = crate::models::config::HF_TEXT_MODELS
        .iter()
        .find(|(_, _, s)| s[0] == width && s[2] == layers && s[4] == vocab);
    let intermediate = dim(
        ck,
        "text.transformer.encoder.layer.0.intermediate.dense.weight",
        0,
    )?;
    let positions = dim(ck, &format!("{e}position_embeddings.weight"), 0)?;
    let h = HfText {
        model: known.map_or("", |m| m.0).to_string(),
        tokenizer: known.map_or("", |m| m.0).to_string(),
        type_vocab: dim(ck, &format!("{e}token_type_embeddings.weight"), 0)?,
        ..HfText::with_defaults(
            known.map_or("roberta", |m| m.1),
            [intermediate, positions],
            pooler,
            hf_proj(ck),
        )
    };
    Ok((h, [width, layers, vocab]))
}

/// A timm ViT trunk under `visual.trunk` (open_clip's `TimmModel`): its patch conv and blocks.
fn is_timm_vit(ck: &Checkpoint) -> bool {
    ck.shape("visual.trunk.patch_embed.proj.weight").is_some()
        && ck.shape("visual.trunk.blocks.0.norm1.weight").is_some()
}

/// A timm FastViT trunk (MobileCLIP-S*): MobileOne's final conv, trained or folded.
fn is_fastvit(ck: &Checkpoint) -> bool {
    ck.keys().any(|k| k.starts_with("visual.trunk.final_conv."))
}

/// A FastViT's stages from its keys (`stages.i.blocks.j`, each stage's width from its MLP,
/// attention blocks by their q/k/v, SE in the downsampling, LayerNorm before attention by a
/// norm without running statistics), matched to timm's MCi trunks for the name; the stem's
/// 1x1 branch is not in folded weights (and then does not matter).
fn fastvit_tower(ck: &Checkpoint) -> Result<FastVitTower, String> {
    let t = "visual.trunk.stages.";
    let stages = count_indexed(ck, t);
    let (mut depths, mut dims, mut attention, mut se) = (vec![], vec![], vec![], vec![]);
    for i in 0..stages {
        let b = format!("{t}{i}.blocks.");
        depths.push(count_indexed(ck, &b));
        dims.push(dim(ck, &format!("{b}0.mlp.fc1.weight"), 1)?);
        attention.push(ck.shape(&format!("{b}0.token_mixer.qkv.weight")).is_some());
        se.push(
            ck.shape(&format!("{t}{i}.downsample.proj.0.se.fc1.weight"))
                .is_some(),
        );
    }
    let hidden = dim(ck, &format!("{t}0.blocks.0.mlp.fc1.weight"), 0)?;
    let layer_norm = attention.iter().position(|&a| a).is_some_and(|i| {
        ck.shape(&format!("{t}{i}.blocks.0.norm.running_mean"))
            .is_none()
    });
    let stem_scale_branch = ck
        .shape("visual.trunk.stem.0.reparam_conv.weight")
        .is_some()
        || ck
            .shape("visual.trunk.stem.0.conv_scale.conv.weight")
            .is_some();
    let spec = FASTVITS
        .iter()
        .find(|s| s.depths == depths && s.dims == dims);
    Ok(FastVitTower {
        model: spec.map_or("fastvit", |s| s.name).to_string(),
        mlp_ratio: hidden / dims.first().copied().unwrap_or(1).max(1),
        depths,
        dims,
        attention,
        se,
        layer_norm,
        stem_scale_branch,
    })
}

/// The configuration implied by the checkpoint's shapes. Heads cannot be seen in shapes: they
/// come from a matching named config, else the upstream rule (width / 64).
fn derive(ck: &Checkpoint) -> Result<Config, String> {
    let fam = family(ck);
    let t = if fam.custom_text() { "text." } else { "" };
    let hf = has_hf_text(ck).then(|| hf_text_shapes(ck)).transpose()?;
    let (tw, text_layers) = match &hf {
        Some((_, [w, layers, _])) => (*w, *layers),
        None => (
            dim(ck, &format!("{t}ln_final.weight"), 0)?,
            count_blocks(ck, &format!("{t}transformer.")),
        ),
    };
    let vision_attn_pool = match ck.shape("visual.attn_pool.query") {
        Some(&[queries, _]) => Some(AttnPool {
            queries,
            heads: POOLER_HEADS,
        }),
        _ => None,
    };
    let coca_decoder = (fam == Family::Coca)
        .then(|| coca_decoder_shapes(ck))
        .flatten();
    let (vision_layers, vision_width, patch, res, embed);
    let (mut vision_mlp_width, mut vision_layer_scale, mut vision_timm) = (None, false, None);
    let (mut siglip, mut vision_heads, mut vision_eva) = (None, None, None);
    let mut vision_fastvit = None;
    if matches!(fam, Family::CustomText | Family::Clip) && is_fastvit(ck) {
        let f = fastvit_tower(ck)?;
        vision_width = f.dims[0];
        vision_layers = VisionLayers::ResNet(f.depths.clone());
        patch = None;
        // Not in the weights: MobileCLIP's input size (a named config says which).
        res = 256;
        embed = dim(ck, "visual.trunk.head.fc.weight", 0)?;
        vision_fastvit = Some(f);
    } else if fam == Family::CustomText || (fam == Family::Clip && is_timm_vit(ck)) {
        // A timm EVA trunk (with CLIP's text tower under `text.`, or at the top level): its
        // sizes and block options from the keys; what the weights cannot show (post-norm, the
        // rotary embedding, the pool's heads, the eps) from timm's trunk of those sizes, else
        // as EVA02 (rotary with SwiGLU), PE (a norm before the blocks: rotary on its own grid),
        // the average-pooled ViT (no class token, no pool of its own) or EVA01.
        let t = "visual.trunk.";
        let b = format!("{t}blocks.0.");
        let has = |k: &str| ck.shape(&format!("{b}{k}")).is_some();
        let has_top = |k: &str| ck.shape(&format!("{t}{k}")).is_some();
        let class_token = has_top("cls_token");
        let norm_pre = has_top("norm_pre.weight");
        let map_pool = has_top("attn_pool.latent");
        // MobileCLIP-B's convolutional stem: its three strides make the patch.
        let stem = |i: usize| format!("{t}patch_embed.backbone.{i}.conv.weight");
        let conv_stem = ck.shape(&stem(0)).is_some();
        // ViTamin's convolutional stages: four stride-2 steps, 16 pixels a token.
        let bb = format!("{t}patch_embed.backbone.");
        let mbconv = ck
            .shape(&format!("{bb}stem.conv1.weight"))
            .is_some()
            .then(|| -> Result<MbConvStages, String> {
                let width = |i: usize| dim(ck, &format!("{bb}stages.{i}.0.conv3_1x1.weight"), 0);
                let depth = |i: usize| count_indexed(ck, &format!("{bb}stages.{i}."));
                Ok(MbConvStages {
                    stem: dim(ck, &format!("{bb}stem.conv1.weight"), 0)?,
                    widths: [width(0)?, width(1)?],
                    depths: [depth(0), depth(1)],
                })
            })
            .transpose()?;
        let p;
        if mbconv.is_some() {
            vision_width = dim(ck, &format!("{bb}pool.proj.weight"), 0)?;
            p = 16;
        } else if conv_stem {
            vision_width = dim(ck, &stem(2), 0)?;
            p = (0..3)
                .map(|i| dim(ck, &stem(i), 2))
                .product::<Result<usize, _>>()?;
        } else {
            vision_width = dim(ck, &format!("{t}patch_embed.proj.weight"), 0)?;
            p = dim(ck, &format!("{t}patch_embed.proj.weight"), 2)?;
        }
        // Without positions the input size is not in the weights: timm's default, 256 for
        // ViTamin-XL, 224 for the relative-position ViT (a named config says which).
        let has_pos = has_top("pos_embed");
        let rel_pos = has("attn.rel_pos.mlp.fc1.weight");
        let tokens = if has_pos {
            dim(ck, &format!("{t}pos_embed"), 1)?
        } else {
            let side = if rel_pos { 224 } else { 256 };
            (side / p) * (side / p) + usize::from(class_token)
        };
        // timm's `no_embed_class`: a square count of positions with a class token (the count
        // and one less cannot both be squares).
        let no_embed_class = has_pos && class_token && isqrt(tokens) * isqrt(tokens) == tokens;
        let g = isqrt(tokens.saturating_sub(usize::from(class_token && !no_embed_class)));
        let depth = count_indexed(ck, &format!("{t}blocks."));
        let swiglu = has("mlp.fc1_g.weight");
        let geglu = has("mlp.w0.weight");
        let fc1 = if swiglu {
            "mlp.fc1_g.weight"
        } else if geglu {
            "mlp.w0.weight"
        } else {
            "mlp.fc1.weight"
        };
        let mlp = dim(ck, &format!("{b}{fc1}"), 0)?;
        // timm's `global_pool='avg'` without `fc_norm`: no class token, no pool or norm of its
        // own after the final norm.
        let avg_pool = has_top("fc_norm.weight") && !class_token && !map_pool;
        let norm_mean = !class_token && !map_pool && !avg_pool && mbconv.is_none();
        vision_layers = VisionLayers::Vit(depth);
        patch = Some(p);
        res = g * p;
        let head_proj = ck.shape("visual.head.proj.weight").is_some();
        embed = if head_proj {
            dim(ck, "visual.head.proj.weight", 0)?
        } else {
            dim(ck, &format!("{t}head.weight"), 0)?
        };
        vision_mlp_width = Some(mlp).filter(|&h| h != 4 * vision_width);
        let kind_fits = |k: EvaKind| match k {
            EvaKind::Eva02 => swiglu,
            EvaKind::Pe { .. } => norm_pre && map_pool,
            EvaKind::Vit => norm_pre && !map_pool,
            EvaKind::Mci => conv_stem,
            EvaKind::Vitamin { stem, pos_embed } => {
                mbconv.as_ref().is_some_and(|m| m.stem == stem) && pos_embed == has_pos
            }
            EvaKind::Gap => norm_mean,
            EvaKind::RelPos => rel_pos,
            EvaKind::Eva01 | EvaKind::Eva02E => {
                !swiglu && !norm_pre && !conv_stem && mbconv.is_none() && !norm_mean
            }
        };
        let spec = EVA_VITS.iter().find(|s| {
            (s.patch, s.width, s.depth, s.mlp_width) == (p, vision_width, depth, mlp)
                && kind_fits(s.kind)
        });
        // The relative-position MLP ends in one bias a head: the heads are in the weights.
        vision_heads = if rel_pos {
            Some(dim(ck, &format!("{b}attn.rel_pos.mlp.fc2.weight"), 0)?)
        } else {
            spec.map(|s| s.heads)
        };
        let like = |name: &str| EVA_VITS.iter().find(|s| s.name == name).map(EvaTower::new);
        let unseen = match spec {
            Some(s) => EvaTower::new(s),
            None if conv_stem => like("vit_base_mci_224").unwrap_or_else(unseen_eva),
            None if mbconv.is_some() => like("vitamin_small_224").unwrap_or_else(unseen_eva),
            None if norm_pre && !map_pool => {
                like("vit_large_patch14_clip_224").unwrap_or_else(unseen_eva)
            }
            None if norm_mean => like("vit_medium_patch16_gap_256").unwrap_or_else(unseen_eva),
            None if rel_pos => like("vit_relpos_medium_patch16_cls_224").unwrap_or_else(unseen_eva),
            None if norm_pre => EvaTower {
                rope: Some(g),
                rope_offset: usize::from(class_token),
                rope_xy: true,
                map_heads: Some(PE_MAP_HEADS),
                eps: 1e-5,
                ..unseen_eva()
            },
            None => EvaTower {
                rope: swiglu.then_some(EVA_ROPE_GRID),
                ..unseen_eva()
            },
        };
        let qkv_fused = has("attn.qkv.weight");
        vision_eva = Some(EvaTower {
            qkv_fused,
            fused_bias: has("attn.qkv.bias"),
            qkv_bias: !qkv_fused || has("attn.qkv.bias") || has("attn.q_bias"),
            layer_scale: has("ls1.gamma"),
            norm_mean,
            rel_pos,
            swiglu,
            // GeGLU's `mlp.norm` norms its input, not the hidden width.
            mlp_norm: has("mlp.norm.weight") && !geglu,
            attn_norm: has("attn.norm.weight"),
            class_token,
            norm_pre,
            map_heads: unseen.map_heads.filter(|_| map_pool),
            conv_stem,
            no_embed_class,
            avg_pool,
            geglu,
            head_proj,
            pos_embed: has_pos,
            mbconv,
            ..unseen
        });
    } else if fam == Family::Siglip {
        // open_clip's SigLIP: a timm ViT without class token, its sizes matched to timm's
        // SigLIP models for the heads and activation (not in the weights).
        let t = "visual.trunk.";
        vision_width = dim(ck, &format!("{t}patch_embed.proj.weight"), 0)?;
        let p = dim(ck, &format!("{t}patch_embed.proj.weight"), 2)?;
        let g = isqrt(dim(ck, &format!("{t}pos_embed"), 1)?);
        let depth = count_indexed(ck, &format!("{t}blocks."));
        let mlp = dim(ck, &format!("{t}blocks.0.mlp.fc1.weight"), 0)?;
        vision_layers = VisionLayers::Vit(depth);
        patch = Some(p);
        res = g * p;
        // Without a text projection (ViT-SO400M-16-SigLIP-i18n-256) the text width is the
        // embedding's.
        let no_text_projection = ck.shape("text.text_projection.weight").is_none();
        embed = match &hf {
            // NLLB-SigLIP: the HF tower's projection.
            Some((h, _)) => match h.proj {
                HfProj::Mlp => dim(ck, "text.proj.2.weight", 0)?,
                HfProj::Linear => dim(ck, "text.proj.weight", 0)?,
                HfProj::None => tw,
            },
            None if no_text_projection => tw,
            None => dim(ck, "text.text_projection.weight", 0)?,
        };
        vision_mlp_width = Some(mlp).filter(|&h| h != 4 * vision_width);
        let spec = SIGLIP_VITS
            .iter()
            .find(|s| (s.patch, s.width, s.depth, s.mlp_width) == (p, vision_width, depth, mlp));
        vision_heads = spec.map(|s| s.heads);
        let text_mlp = match &hf {
            Some(_) => 4 * tw,
            None => dim(ck, "text.transformer.resblocks.0.mlp.c_fc.weight", 0)?,
        };
        siglip = Some(Siglip {
            timm_model: spec.map_or("vit_siglip", |s| s.name).to_string(),
            vision_activation: spec.map_or(Activation::Gelu, |s| s.activation),
            text_mlp_width: Some(text_mlp).filter(|&h| h != 4 * tw),
            // Not in the weights: a named config's, else --tokenizer.
            tokenizer: String::new(),
            clean: TextClean::Canonicalize,
            // An HF text tower's projection is its own (`hf_text.proj`).
            no_text_projection: no_text_projection && hf.is_none(),
        });
    } else if ck.shape("visual.class_embedding").is_some() {
        vision_width = dim(ck, "visual.conv1.weight", 0)?;
        let p = dim(ck, "visual.conv1.weight", 2)?;
        let g = isqrt(dim(ck, "visual.positional_embedding", 0)?.saturating_sub(1));
        vision_layers = VisionLayers::Vit(count_blocks(ck, "visual.transformer."));
        patch = Some(p);
        res = g * p;
        embed = dim(ck, "visual.proj", 1)?;
        // open_clip's mlp_ratio and layer scale (CLIP-layout ViTs).
        let block = "visual.transformer.resblocks.0.";
        if let Some(s) = ck.shape(&format!("{block}mlp.c_fc.weight")) {
            vision_mlp_width = s.first().copied().filter(|&h| h != 4 * vision_width);
        }
        vision_layer_scale = ck.shape(&format!("{block}ls_1.gamma")).is_some();
    } else if ck.shape("visual.layer1.0.conv1.weight").is_some() {
        vision_width = dim(ck, "visual.layer1.0.conv1.weight", 1)?;
        let mut depths = Vec::new();
        for l in 1..=4 {
            let p = format!("visual.layer{l}.");
            let n = ck
                .keys()
                .filter_map(|k| k.strip_prefix(&p))
                .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
                .max()
                .map_or(0, |m| m + 1);
            depths.push(n);
        }
        vision_layers = VisionLayers::ResNet(depths);
        patch = None;
        res = isqrt(dim(ck, "visual.attnpool.positional_embedding", 0)?.saturating_sub(1)) * 32;
        embed = dim(ck, "visual.attnpool.c_proj.weight", 0)?;
    } else if ck.shape("visual.trunk.stem.0.weight").is_some() {
        // open_clip's timm ConvNeXt: each stage's depth and width, matched to timm's models.
        let mut depths = Vec::new();
        let mut dims = Vec::new();
        for i in 0..4 {
            depths.push(count_indexed(
                ck,
                &format!("visual.trunk.stages.{i}.blocks."),
            ));
            dims.push(dim(
                ck,
                &format!("visual.trunk.stages.{i}.blocks.0.norm.weight"),
                0,
            )?);
        }
        // Another trunk gets timm's ConvNeXt defaults (eps 1e-6), said in the notice of an
        // architecture no named config matches.
        let spec = CONVNEXTS
            .iter()
            .find(|s| s.depths[..] == depths[..] && s.dims[..] == dims[..]);
        let (proj, key) = if ck.shape("visual.head.mlp.fc2.weight").is_some() {
            (TimmProj::Mlp, "visual.head.mlp.fc2.weight")
        } else {
            (TimmProj::Linear, "visual.head.proj.weight")
        };
        vision_width = dims[0];
        vision_layers = VisionLayers::ResNet(depths.clone());
        patch = None;
        // Not in the weights: timm's default input size (a named config says which).
        res = 224;
        embed = dim(ck, key, 0)?;
        vision_timm = Some(TimmTower {
            model: spec.map_or("convnext", |s| s.name).to_string(),
            depths,
            dims,
            eps: spec.map_or(1e-6, |s| s.eps),
            proj,
        });
    } else {
        return Err("has neither a ViT (`visual.class_embedding`), a ModifiedResNet (`visual.layer1.*`) , a timm ConvNeXt (`visual.trunk.stem.*`) nor a timm EVA (`visual.trunk.cls_token`) image encoder".into());
    }
    Ok(Config {
        embed_dim: embed,
        image_resolution: res,
        vision_layers,
        vision_width,
        vision_patch_size: patch,
        // CoCa's last position is its class token's; an HF tower's context is its
        // tokenizer's (open_clip's 77).
        context_length: match &hf {
            Some(_) => 77,
            None => dim(ck, &format!("{t}positional_embedding"), 0)?
                .saturating_sub(usize::from(fam == Family::Coca)),
        },
        siglip,
        vocab_size: match &hf {
            Some((_, [_, _, vocab])) => *vocab,
            None => dim(ck, &format!("{t}token_embedding.weight"), 0)?,
        },
        transformer_width: tw,
        transformer_heads: (tw / 64).max(1),
        transformer_layers: text_layers,
        family: fam,
        activation: Activation::QuickGelu,
        vision_heads,
        vision_mlp_width,
        vision_layer_scale,
        vision_attn_pool,
        coca_decoder,
        vision_timm,
        hf_text: hf.map(|(h, _)| h),
        vision_eva,
        vision_fastvit,
        // Not in the weights: a named config's, else open_clip's CLIPA tokenizer.
        clipa: (fam == Family::Clipa).then(Clipa::default),
        // Not in the weights: a named config's.
        text_eos: None,
        text_no_causal_mask: false,
    })
}

/// CoCa's captioning decoder as the checkpoint holds it (`text_decoder.`), if it does: its
/// width and layers from the weights, its heads by the 64-wide rule (open_clip's released CoCa
/// configs have 64-wide heads; a named config says otherwise).
pub fn coca_decoder_shapes(ck: &Checkpoint) -> Option<CocaDecoder> {
    match ck.shape("text_decoder.ln_final.weight") {
        Some(&[width]) => Some(CocaDecoder {
            width,
            heads: (width / 64).max(1),
            layers: count_blocks(ck, "text_decoder."),
        }),
        _ => None,
    }
}

/// An EVA trunk's options the weights cannot show, as EVA01's (for a trunk no table entry
/// matches; the keys set the rest).
fn unseen_eva() -> EvaTower {
    EvaTower {
        model: "eva".into(),
        ..EvaTower::new(&EVA_VITS[0])
    }
}

/// Whether two configs have the same weights' shapes (heads, family and activation aside).
fn same_shapes(a: &Config, b: &Config) -> bool {
    let strip = |c: &Config| Config {
        transformer_heads: 0,
        family: Family::PyramidClip,
        activation: Activation::QuickGelu,
        vision_heads: None,
        vision_attn_pool: c.vision_attn_pool.map(|p| AttnPool { heads: 0, ..p }),
        // The captioning decoder may be left out of a checkpoint (it is not needed to embed);
        // loading it checks its shapes.
        coca_decoder: None,
        // A FastViT's name is not in its weights, nor the stem's 1x1 branch once folded.
        vision_fastvit: c.vision_fastvit.as_ref().map(|f| FastVitTower {
            model: String::new(),
            stem_scale_branch: true,
            ..f.clone()
        }),
        // A ConvNeXt's name, eps and input size are not in its weights.
        vision_timm: c.vision_timm.as_ref().map(|t| TimmTower {
            model: String::new(),
            eps: 0.0,
            ..t.clone()
        }),
        // A ConvNeXt's input size is not in its weights, nor a ViTamin-XL's (no positions); a
        // SigLIP's only up to the remainder its patch conv leaves out (ViT-SO400M-14-SigLIP-384
        // takes 384 px, 27 patches).
        image_resolution: match (&c.vision_timm, &c.siglip, c.vision_patch_size) {
            _ if c.vision_fastvit.is_some() => 0,
            _ if c.vision_eva.as_ref().is_some_and(|e| !e.pos_embed) => 0,
            (Some(_), _, _) => 0,
            (_, Some(_), Some(p)) => c.image_resolution / p.max(1) * p,
            _ => c.image_resolution,
        },
        // An HF text tower's context, names, eps, pad id, activation and pooling are not in
        // its weights.
        context_length: if c.hf_text.is_some() {
            0
        } else {
            c.context_length
        },
        hf_text: c.hf_text.as_ref().map(|h| HfText {
            model: String::new(),
            model_type: String::new(),
            tokenizer: String::new(),
            clean: TextClean::Whitespace,
            scale_embedding: false,
            pad_id: 0,
            eps: 0.0,
            activation: Activation::Gelu,
            // open_clip builds the encoder's own pooler for `cls_pooler` only, but a
            // checkpoint may hold one it does not use.
            pooler: HfPooler::Mean,
            ..h.clone()
        }),
        // A SigLIP's trunk name, activation and tokenizer are not in its weights.
        siglip: c.siglip.as_ref().map(|s| Siglip {
            timm_model: String::new(),
            vision_activation: Activation::Gelu,
            tokenizer: String::new(),
            clean: TextClean::Canonicalize,
            ..s.clone()
        }),
        // A CLIPA's tokenizer is not in its weights, nor a CLIP's pooling at an eos id.
        clipa: c.clipa.as_ref().map(|_| Clipa::default()),
        text_eos: None,
        text_no_causal_mask: false,
        // An MLP width stated as 4 x the width is the default's.
        vision_mlp_width: c.vision_mlp_width.filter(|&h| h != 4 * c.vision_width),
        // An EVA's trunk name, post-norm and rotary embedding are not in its weights.
        vision_eva: c.vision_eva.as_ref().map(|e| EvaTower {
            model: String::new(),
            post_norm: false,
            rope: None,
            rope_offset: 0,
            rope_xy: false,
            map_heads: e.map_heads.map(|_| 0),
            eps: 0.0,
            ..e.clone()
        }),
        ..c.clone()
    };
    strip(a) == strip(b)
}

/// The heads the checkpoint states (a transformers `config.json`), set on `cfg`; whether
/// there were any.
fn set_stated_heads(ck: &Checkpoint, cfg: &mut Config) -> bool {
    let get = |k: &str| ck.metadata.get(k).and_then(|v| v.parse::<usize>().ok());
    match (get(super::hf::VISION_HEADS), get(super::hf::TEXT_HEADS)) {
        (Some(v), Some(t)) => {
            cfg.vision_heads = Some(v);
            cfg.transformer_heads = t;
            true
        }
        _ => false,
    }
}

/// Sets the family found in the keys and the activation: PyramidCLIP's is QuickGELU; for CLIP,
/// the name asked for (`NAME-quickgelu` or `NAME`), else the one the checkpoint states (a
/// TorchScript archive's classes, a transformers `config.json`), else an open_clip config's,
/// else OpenAI's QuickGELU with a notice.
fn settle(
    ck: &Checkpoint,
    mut cfg: Config,
    requested_act: Option<Activation>,
    from_registry: bool,
    name: Option<&str>,
) -> (Config, Option<String>) {
    let fam = family(ck);
    let from_config = (from_registry && cfg.family.clip_layout()).then_some(cfg.activation);
    cfg.family = fam;
    if fam == Family::PyramidClip {
        cfg.activation = Activation::QuickGelu;
        return (cfg, None);
    }
    if fam == Family::Siglip && cfg.hf_text.is_some() {
        // NLLB-SigLIP: the HF text tower has its own activation.
        cfg.activation = requested_act.or(from_config).unwrap_or(Activation::Gelu);
        return (cfg, None);
    }
    if matches!(fam, Family::CustomText | Family::Clipa) {
        // open_clip's EVA and CLIPA models are all GELU.
        cfg.activation = requested_act.or(from_config).unwrap_or(Activation::Gelu);
        return (cfg, None);
    }
    if fam == Family::Siglip {
        // No TorchScript SigLIP exists; without a named config, GELU's tanh form for SigLIP 2's
        // Gemma vocabulary (256,000 ids), else GELU.
        return match requested_act.or(from_config) {
            Some(a) => {
                cfg.activation = a;
                (cfg, None)
            }
            None => {
                cfg.activation = if cfg.vocab_size == 256_000 {
                    Activation::GeluTanh
                } else {
                    Activation::Gelu
                };
                let n = name.unwrap_or("NAME");
                let notice = format!(
                    "SigLIP checkpoint: the text tower's activation cannot be read off the weights; using {} (image tower: {}). open_clip's named models (--visual-model {n}) or --model-config say which",
                    cfg.activation.name(),
                    cfg.siglip.as_ref().map_or("gelu", |s| s.vision_activation.name())
                );
                (cfg, Some(notice))
            }
        };
    }
    let stored = match ck
        .metadata
        .get(super::STORED_ACTIVATION)
        .map(String::as_str)
    {
        Some("gelu") => Some(Activation::Gelu),
        Some("quickgelu") => Some(Activation::QuickGelu),
        Some("gelu_tanh") => Some(Activation::GeluTanh),
        _ => None,
    };
    let mut notice = None;
    if let (Some(r), Some(st)) = (requested_act, stored) {
        if r != st {
            notice = Some(format!(
                "the checkpoint states the activation {}; using {} as --visual-model {} asks (leave --visual-model out to use the checkpoint's)",
                st.name(),
                r.name(),
                name.unwrap_or("NAME")
            ));
        }
    }
    cfg.activation = match (requested_act, stored, from_config) {
        (Some(a), _, _) | (None, Some(a), _) | (None, None, Some(a)) => a,
        (None, None, None) => {
            let n = name.unwrap_or("NAME");
            notice = Some(format!(
                "CLIP checkpoint: the activation cannot be read off the weights; using QuickGELU (OpenAI's). For open_clip's GELU models pass --visual-model {n} (QuickGELU: --visual-model {n}-quickgelu)"
            ));
            Activation::QuickGelu
        }
    };
    (cfg, notice)
}

/// "a ViT (patch 32, width 768, 12 layers)" / "a ModifiedResNet (layers [3, 4, 6, 3], width 64)".
pub fn describe_arch(c: &Config) -> String {
    match &c.vision_layers {
        VisionLayers::Vit(l) => format!(
            "{} (patch {}, width {}, {} layers, resolution {}{}{}{}{}{}{})",
            if c.siglip.is_some() {
                "a SigLIP ViT"
            } else if c
                .vision_eva
                .as_ref()
                .is_some_and(|e| e.fused_bias && e.rope.is_none())
            {
                // timm's plain VisionTransformer (MobileCLIP's), not an EVA block.
                "a timm ViT"
            } else if c.vision_eva.is_some() {
                "an EVA ViT"
            } else {
                "a ViT"
            },
            c.vision_patch_size.unwrap_or(0),
            c.vision_width,
            l,
            c.image_resolution,
            c.vision_mlp_width
                .map_or(String::new(), |h| format!(", MLP width {h}")),
            if c.vision_layer_scale {
                ", layer scale"
            } else {
                ""
            },
            c.vision_attn_pool.map_or(String::new(), |p| format!(
                ", attentional pooler of {} queries",
                p.queries
            )),
            if c.siglip.is_some() {
                ", attention-pool head"
            } else {
                ""
            },
            if c.vision_avg_pool() {
                ", no ln_pre, mean of the patch tokens"
            } else {
                ""
            },
            c.vision_eva.as_ref().map_or(String::new(), |e| {
                let mut s = String::new();
                if e.swiglu {
                    s.push_str(", SwiGLU");
                }
                if e.rope.is_some() {
                    s.push_str(", rotary embedding");
                }
                if e.post_norm {
                    s.push_str(", post-norm");
                }
                if !e.class_token {
                    s.push_str(", no class token");
                }
                if e.map_heads.is_some() {
                    s.push_str(", attention-pool head");
                }
                if e.conv_stem {
                    s.push_str(", convolutional stem");
                }
                if e.no_embed_class {
                    s.push_str(", no position for the class token");
                }
                if let Some(m) = &e.mbconv {
                    s.push_str(&format!(
                        ", ViTamin's convolutional stages ({:?} deep, {:?} wide, stem {})",
                        m.depths, m.widths, m.stem
                    ));
                }
                if e.geglu {
                    s.push_str(", GeGLU");
                }
                if e.avg_pool {
                    s.push_str(", mean of the tokens");
                }
                if e.norm_mean {
                    s.push_str(", mean of the normed tokens");
                }
                if e.layer_scale {
                    s.push_str(", layer scale");
                }
                if !e.qkv_bias {
                    s.push_str(", no q/k/v bias");
                }
                if e.rel_pos {
                    s.push_str(", relative-position MLP");
                }
                if !e.pos_embed {
                    s.push_str(", no positional embedding");
                }
                s
            })
        ),
        VisionLayers::ResNet(_) if c.vision_fastvit.is_some() => {
            let f = c.vision_fastvit.as_ref().expect("checked");
            let at = |v: &[bool]| -> Vec<usize> {
                v.iter()
                    .enumerate()
                    .filter(|(_, &a)| a)
                    .map(|(i, _)| i)
                    .collect()
            };
            format!(
                "a timm FastViT (stages {:?} deep, {:?} wide, attention in stages {:?}, {} before attention, MLP ratio {})",
                f.depths,
                f.dims,
                at(&f.attention),
                if f.layer_norm { "LayerNorm" } else { "BatchNorm" },
                f.mlp_ratio
            )
        }
        VisionLayers::ResNet(_) if c.vision_timm.is_some() => {
            let t = c.vision_timm.as_ref().expect("checked");
            format!(
                "a timm ConvNeXt (stages {:?} deep, {:?} wide, {} projection)",
                t.depths,
                t.dims,
                match t.proj {
                    TimmProj::Linear => "linear",
                    TimmProj::Mlp => "MLP",
                }
            )
        }
        VisionLayers::ResNet(l) => {
            format!(
                "a ModifiedResNet (layers {:?}, width {}, resolution {})",
                l, c.vision_width, c.image_resolution
            )
        }
    }
}

/// The text tower, as `inspect` shows it where it is not CLIP's usual one: an HF encoder ("an
/// XLM-RoBERTa encoder (12 layers, width 768, 12 heads), the mean pooler, an MLP
/// projection"), or CLIP's pooled at an end-of-sequence id or without causal mask.
pub fn describe_text(c: &Config) -> Option<String> {
    let clip = |how: String| {
        format!(
            "CLIP's ({} layers, width {}, {} heads), {how}",
            c.transformer_layers, c.transformer_width, c.transformer_heads
        )
    };
    if let Some(e) = &c.text_eos {
        return Some(clip(format!(
            "pooled at the first end-of-sequence id {} (`{}`'s)",
            e.eos_id, e.tokenizer
        )));
    }
    if c.text_no_causal_mask {
        return Some(clip(
            "without causal mask, pooled at the end-of-text position".into(),
        ));
    }
    if let Some(a) = &c.clipa {
        return Some(clip(format!(
            "without causal mask, pooled at the last position (`{}`'s ids{})",
            a.tokenizer,
            if a.strip_sep { ", [SEP] as 0" } else { "" }
        )));
    }
    let h = c.hf_text.as_ref()?;
    let kind = match h.model_type.as_str() {
        "m2m_100" => "an NLLB (M2M100)",
        "xlm-roberta" => "an XLM-RoBERTa",
        _ => "a RoBERTa",
    };
    Some(format!(
        "{kind} encoder ({} layers, width {}, {} heads), {}, {}",
        c.transformer_layers,
        c.transformer_width,
        c.transformer_heads,
        match h.pooler {
            HfPooler::Mean => "the mean pooler",
            HfPooler::Cls => "the encoder's pooler at the first position",
            HfPooler::ClsHidden => "the first position",
        },
        match h.proj {
            HfProj::Mlp => "an MLP projection",
            HfProj::Linear => "a linear projection",
            HfProj::None => "no projection",
        }
    ))
}

/// Detects the architecture; with `requested`, checks that it agrees with the checkpoint.
pub fn detect_config(
    ck: &Checkpoint,
    reg: &Registry,
    requested: Option<&str>,
) -> Result<DetectedArch, super::Error> {
    let arch_err =
        |m: String| super::Error::Architecture(format!("checkpoint {} {m}", ck.path.display()));
    // Files written by `convert` carry their architecture.
    if let (Some(name), Some(cfg)) = (ck.metadata.get("architecture"), ck.metadata.get("config")) {
        if let Ok(cfg) = serde_json::from_str::<Config>(cfg) {
            if requested.is_none_or(|r| r == name) {
                return Ok(DetectedArch {
                    name: Some(name.clone()),
                    config: cfg,
                    notice: None,
                });
            }
        }
    }
    let derived = derive(ck).map_err(arch_err)?;
    let fam = derived.family;
    // Prefer a config of the checkpoint's own family (an open_clip JSON for CLIP weights).
    let matched = reg
        .all()
        .filter(|(_, c)| same_shapes(c, &derived))
        .min_by_key(|(_, c)| (c.family != fam) as u8);
    let found = match matched {
        Some((n, c)) => DetectedArch {
            name: Some(n.clone()),
            config: c.clone(),
            notice: None,
        },
        None => DetectedArch {
            name: None,
            config: derived,
            notice: None,
        },
    };
    if let Some(req) = requested {
        let candidates = reg
            .resolve(req, fam)
            .map_err(|e| super::Error::Architecture(e.to_string()))?;
        // The family's own architecture of that name, else one whose shapes match.
        let (want, req_act) = candidates
            .iter()
            .find(|(c, _)| same_shapes(c, &found.config))
            .unwrap_or(&candidates[0]);
        if !same_shapes(want, &found.config) {
            let label = found
                .name
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default();
            return Err(super::Error::Architecture(format!(
                "checkpoint {} holds {}{label} but --visual-model {req} was given ({})",
                ck.path.display(),
                describe_arch(&found.config)
                    .trim_end_matches(')')
                    .to_string()
                    + ")",
                describe_arch(want)
            )));
        }
        let (mut config, notice) = settle(ck, want.clone(), *req_act, true, Some(req));
        set_stated_heads(ck, &mut config);
        return Ok(DetectedArch {
            name: Some(req.to_string()),
            config,
            notice,
        });
    }
    let from_registry = found.name.is_some();
    let (mut config, mut notice) =
        settle(ck, found.config, None, from_registry, found.name.as_deref());
    let stated_heads = set_stated_heads(ck, &mut config);
    if config.vision_timm.is_some() {
        // Several of open_clip's ConvNeXt configs share their weights' shapes (convnext_base_w
        // and convnext_base_w_320) and differ only in the input size.
        let size = format!(
            "a ConvNeXt's input size is not in its weights: using {} px ({}); --visual-model NAME chooses the model",
            config.image_resolution,
            found
                .name
                .as_deref()
                .map_or("timm's default".to_string(), |n| format!("{n}'s"))
        );
        notice = Some(also(notice, size));
    } else {
        // Configs that differ only in the input size share their weights' shapes where the
        // positions do not show it: open_clip's ViT-SO400M-14-SigLIP-378 and -384 (27 patches
        // a side; 384 px leave 6 out), ViTamin-XL-256, -336 and -384 (no positions).
        let sizes: std::collections::BTreeSet<usize> = reg
            .all()
            .filter(|(_, c)| same_shapes(c, &config))
            .map(|(_, c)| c.image_resolution)
            .collect();
        if sizes.len() > 1 {
            let size = format!(
                "the input size is not in these weights ({sizes:?} px fit them): using {} px ({}'s); --visual-model NAME chooses the model",
                config.image_resolution,
                found.name.as_deref().unwrap_or("a matching config")
            );
            notice = Some(also(notice, size));
        }
    }
    if !from_registry && !stated_heads {
        // No named config matched: the heads are the 64-wide rule's, which the weights cannot
        // confirm (ViT-H-16's 80-wide heads were once read as 20 instead of 16 this way).
        let pooler = config.vision_attn_pool.map_or(String::new(), |p| {
            format!(
                ", and open_clip's default of {} in the attentional pooler",
                p.heads
            )
        });
        // A ConvNeXt image tower has no attention.
        let image = if config.vision_timm.is_some() {
            String::new()
        } else {
            format!("{} in the image tower, ", config.vision_heads())
        };
        let heads = format!(
            "attention heads cannot be read off the weights: assuming 64-wide heads ({image}{} in the text tower{pooler}); for other heads pass --model-config with the architecture's config",
            config.transformer_heads
        );
        notice = Some(match notice {
            Some(n) => also(Some(n), heads),
            None => format!("checkpoint of no known architecture: {heads}"),
        });
        if let Some(h) = &config.hf_text {
            let hf = format!(
                "the HF text tower's pooling, pad id and eps are not in its weights: using {} (pad id {}, eps {:e}) and a context of {} ids",
                match h.pooler {
                    crate::models::HfPooler::Cls => "the encoder's own pooler (its weights are there)",
                    _ => "the mean over non-pad positions",
                },
                h.pad_id,
                h.eps,
                config.context_length
            );
            notice = Some(also(notice, hf));
        }
    }
    Ok(DetectedArch {
        config,
        notice,
        ..found
    })
}

/// The keys and shapes a model of `cfg` loads (what a released checkpoint holds, less the
/// unused extras), found by building the model on zero weights.
pub fn state_dict_shapes(cfg: &Config) -> candle_core::Result<Vec<(String, Vec<usize>)>> {
    use candle_core::{DType, Device, Shape, Tensor};
    use std::sync::Mutex;
    struct Record(Mutex<Vec<(String, Vec<usize>)>>);
    impl candle_nn::var_builder::SimpleBackend for Record {
        fn get(
            &self,
            s: Shape,
            name: &str,
            _: candle_nn::Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            self.0
                .lock()
                .unwrap()
                .push((name.to_string(), s.dims().to_vec()));
            Tensor::zeros(s, dtype, dev)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            candle_core::bail!("no shape for {name}")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }
    let rec = std::sync::Arc::new(Record(Mutex::new(Vec::new())));
    // The GPU-less build path is enough: shapes do not depend on the device.
    let vb = candle_nn::VarBuilder::from_backend(
        Box::new(super::Shared(rec.clone())),
        DType::F16,
        Device::Cpu,
    );
    crate::models::PyramidClip::new(cfg, vb)?;
    let mut v = rec.0.lock().unwrap().clone();
    v.sort();
    v.dedup();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A registry where `tiny` means another width for PyramidCLIP than for CLIP (as
    /// upstream's RN50x64 and OpenAI's do).
    fn two_meanings(clip_side: bool) -> (Checkpoint, Registry, Config) {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip");
        let ck = Checkpoint::open(&fx.join("tiny-clip-rn.pt")).unwrap();
        let json = Registry::load(Some(&fx.join("tiny-clip-rn.json"))).unwrap();
        let right = Config {
            family: Family::PyramidClip,
            ..json.configs["tiny-clip-rn"].clone()
        };
        let wrong = Config {
            vision_width: right.vision_width * 2,
            ..right.clone()
        };
        let (configs, clip) = if clip_side {
            (wrong, right.clone())
        } else {
            (right.clone(), wrong)
        };
        let reg = Registry {
            configs: [("tiny".to_string(), configs)].into(),
            clip: [("tiny".to_string(), clip)].into(),
        };
        (ck, reg, right)
    }

    #[test]
    fn a_clip_checkpoint_finds_the_clip_meaning_of_a_name() {
        for clip_side in [true, false] {
            let (ck, reg, right) = two_meanings(clip_side);
            let found = detect_config(&ck, &reg, None).unwrap();
            assert_eq!(found.name.as_deref(), Some("tiny"));
            assert_eq!(found.config.vision_width, right.vision_width);
            assert_eq!(found.config.family, Family::Clip);
            for name in ["tiny", "tiny-quickgelu"] {
                let asked = detect_config(&ck, &reg, Some(name)).unwrap();
                assert_eq!(asked.config.vision_width, right.vision_width, "{name}");
            }
            let act = |n| detect_config(&ck, &reg, Some(n)).unwrap().config.activation;
            assert_eq!(act("tiny"), Activation::Gelu);
            assert_eq!(act("tiny-quickgelu"), Activation::QuickGelu);
        }
        // Neither meaning fits: the error names the CLIP one.
        let (ck, mut reg, right) = two_meanings(true);
        let odd = Config {
            vision_width: right.vision_width * 3,
            ..right
        };
        reg.clip.insert("tiny".into(), odd);
        let e = detect_config(&ck, &reg, Some("tiny"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("width 24"), "{e}");
    }
}
