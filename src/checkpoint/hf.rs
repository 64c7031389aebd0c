//! transformers' `CLIPModel` layout (what `save_pretrained` writes and the hub's
//! `openai/clip-vit-*` and `laion/CLIP-*` folders hold): its keys renamed at open into
//! OpenAI's CLIP layout, which every engine loads (q/k/v stacked into `in_proj`, the two
//! projections transposed, both as views of the stored tensors), and what its `config.json`
//! says that the weights cannot show (activation, heads).

use super::{Checkpoint, TensorEntry};
use crate::preprocess::Normalize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How `inspect` names the layout.
pub const LAYOUT: &str = "transformers CLIPModel";

/// Metadata keys under which `config.json`'s heads are recorded (image tower, text tower).
pub const VISION_HEADS: &str = "hf_vision_heads";
pub const TEXT_HEADS: &str = "hf_text_heads";

/// Where a transformers model folder keeps its weights.
pub enum Weights {
    One(PathBuf),
    /// The `*.index.json` naming each key's shard.
    Sharded(PathBuf),
}

/// The weights of a transformers model folder, in the order transformers prefers them.
pub fn weights_in(dir: &Path) -> Result<Weights, String> {
    for name in ["model.safetensors", "pytorch_model.bin"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(Weights::One(p));
        }
        let index = dir.join(format!("{name}.index.json"));
        if index.is_file() {
            return Ok(Weights::Sharded(index));
        }
    }
    if dir.join("open_clip_config.json").is_file() {
        return Err(format!(
            "is an open_clip model folder: pass --visual-model local-dir:{}",
            dir.display()
        ));
    }
    Err("is a directory without `model.safetensors` or `pytorch_model.bin` (a transformers model folder holds one of them, or their shards and `*.index.json`)".into())
}

/// The folder's `config.json` for a CLIP model, if there is one (`None` when absent or of
/// another model type).
fn clip_config(dir: &Path) -> Result<Option<Value>, String> {
    let path = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
    Ok((v.get("model_type").and_then(Value::as_str) == Some("clip")).then_some(v))
}

/// What one tower's section of `config.json` says, with transformers' defaults for what it
/// leaves out (`CLIPTextConfig` / `CLIPVisionConfig`).
struct Tower {
    act: &'static str,
    heads: usize,
}

fn tower(cfg: &Value, section: &str, default_heads: usize) -> Result<Tower, String> {
    let t = cfg.get(section).unwrap_or(&Value::Null);
    let act = match t.get("hidden_act").and_then(Value::as_str).unwrap_or("quick_gelu") {
        "quick_gelu" => "quickgelu",
        "gelu" => "gelu",
        "gelu_pytorch_tanh" | "gelu_new" => "gelu_tanh",
        other => {
            return Err(format!(
                "config.json: {section}.hidden_act `{other}` is not implemented (quick_gelu, gelu and gelu_pytorch_tanh are)"
            ))
        }
    };
    let eps = t
        .get("layer_norm_eps")
        .and_then(Value::as_f64)
        .unwrap_or(1e-5);
    if eps != 1e-5 {
        return Err(format!(
            "config.json: {section}.layer_norm_eps {eps:e} is not implemented (CLIP's LayerNorms use 1e-5)"
        ));
    }
    let heads = match t.get("num_attention_heads") {
        None => default_heads,
        Some(h) => h
            .as_u64()
            .filter(|&h| h > 0)
            .map(|h| h as usize)
            .ok_or_else(|| {
                format!("config.json: {section}.num_attention_heads is not a positive integer")
            })?,
    };
    Ok(Tower { act, heads })
}

/// Whether the keys are transformers' CLIPModel's (both towers' embeddings).
pub fn is_layout(entries: &BTreeMap<String, TensorEntry>) -> bool {
    entries.contains_key("vision_model.embeddings.patch_embedding.weight")
        && entries.contains_key("text_model.embeddings.token_embedding.weight")
}

/// The same tensor seen transposed (a 2-d weight `[out, in]` as `[in, out]`).
fn transposed(e: &TensorEntry) -> Result<TensorEntry, String> {
    match (&e.shape[..], &e.strides[..]) {
        (&[a, b], &[sa, sb]) if e.parts.is_empty() => Ok(TensorEntry {
            shape: vec![b, a],
            strides: vec![sb, sa],
            ..e.clone()
        }),
        _ => Err(format!(
            "expected a 2-d projection, found shape {:?}",
            e.shape
        )),
    }
}

/// One layer key's name in OpenAI's layout (`None` for q/k/v, which are stacked).
fn layer_rest(rest: &str) -> Option<String> {
    const RENAMES: [(&str, &str); 5] = [
        ("layer_norm1.", "ln_1."),
        ("layer_norm2.", "ln_2."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
        ("self_attn.out_proj.", "attn.out_proj."),
    ];
    RENAMES
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|p| format!("{to}{p}")))
}

/// Renames `ck`'s entries into OpenAI's layout and records `config.json`'s activation and
/// heads (from the folder holding the weights) in its metadata.
pub fn adopt(ck: &mut Checkpoint) -> Result<(), String> {
    let dir = ck.path.parent().unwrap_or(Path::new("."));
    if let Some(cfg) = clip_config(dir)? {
        let vision = tower(&cfg, "vision_config", 12)?;
        let text = tower(&cfg, "text_config", 8)?;
        if vision.act != text.act {
            return Err(format!(
                "config.json: the image tower's activation ({}) differs from the text tower's ({}); one activation for both is implemented",
                vision.act, text.act
            ));
        }
        ck.metadata
            .insert(super::STORED_ACTIVATION.into(), vision.act.into());
        ck.metadata
            .insert(VISION_HEADS.into(), vision.heads.to_string());
        ck.metadata
            .insert(TEXT_HEADS.into(), text.heads.to_string());
    }
    let old = std::mem::take(&mut ck.entries);
    let mut out = BTreeMap::new();
    // (new key, q/k/v index) -> the part, stacked once all three are in.
    let mut qkv: BTreeMap<String, [Option<TensorEntry>; 3]> = BTreeMap::new();
    for (key, e) in old {
        let (new, e) = match key.as_str() {
            // transformers' position-id buffers (saved by its older versions).
            k if k.ends_with("embeddings.position_ids") => continue,
            "vision_model.embeddings.class_embedding" => ("visual.class_embedding".into(), e),
            "vision_model.embeddings.patch_embedding.weight" => ("visual.conv1.weight".into(), e),
            "vision_model.embeddings.position_embedding.weight" => {
                ("visual.positional_embedding".into(), e)
            }
            "text_model.embeddings.token_embedding.weight" => ("token_embedding.weight".into(), e),
            "text_model.embeddings.position_embedding.weight" => ("positional_embedding".into(), e),
            "visual_projection.weight" => (
                "visual.proj".into(),
                transposed(&e).map_err(|m| format!("`{key}`: {m}"))?,
            ),
            "text_projection.weight" => (
                "text_projection".into(),
                transposed(&e).map_err(|m| format!("`{key}`: {m}"))?,
            ),
            k => {
                let norms = [
                    ("vision_model.pre_layrnorm.", "visual.ln_pre."),
                    ("vision_model.post_layernorm.", "visual.ln_post."),
                    ("text_model.final_layer_norm.", "ln_final."),
                ];
                let towers = [
                    (
                        "vision_model.encoder.layers.",
                        "visual.transformer.resblocks.",
                    ),
                    ("text_model.encoder.layers.", "transformer.resblocks."),
                ];
                if let Some(n) = norms
                    .iter()
                    .find_map(|(f, t)| k.strip_prefix(f).map(|p| format!("{t}{p}")))
                {
                    (n, e)
                } else if let Some((to, rest)) = towers
                    .iter()
                    .find_map(|(f, t)| k.strip_prefix(f).map(|r| (*t, r)))
                {
                    let (idx, rest) = rest.split_once('.').unwrap_or((rest, ""));
                    let stacked = ["q_proj.", "k_proj.", "v_proj."]
                        .iter()
                        .enumerate()
                        .find_map(|(i, p)| {
                            rest.strip_prefix("self_attn.")?
                                .strip_prefix(p)
                                .map(|s| (i, s))
                        });
                    if let Some((i, what)) = stacked {
                        let name = format!("{to}{idx}.attn.in_proj_{what}");
                        qkv.entry(name).or_default()[i] = Some(e);
                        continue;
                    }
                    match layer_rest(rest) {
                        Some(r) => (format!("{to}{idx}.{r}"), e),
                        // Not CLIP's: kept, so that strict loading names it.
                        None => (key, e),
                    }
                } else {
                    (key, e)
                }
            }
        };
        if out.insert(new.clone(), e).is_some() {
            return Err(format!("two keys map to `{new}`"));
        }
    }
    for (name, parts) in qkv {
        let [Some(q), Some(k), Some(v)] = parts else {
            return Err(format!(
                "`{name}` needs the layer's q_proj, k_proj and v_proj; one is missing"
            ));
        };
        let trailing = |e: &TensorEntry| e.shape.get(1..).map(<[usize]>::to_vec);
        if trailing(&q).is_none() || trailing(&k) != trailing(&q) || trailing(&v) != trailing(&q) {
            return Err(format!(
                "`{name}`: q/k/v shapes {:?}, {:?}, {:?} do not stack",
                q.shape, k.shape, v.shape
            ));
        }
        out.insert(name, TensorEntry::stacked(vec![q, k, v]));
    }
    ck.entries = out;
    ck.layout = Some(LAYOUT);
    Ok(())
}

/// The image mean and std of the transformers CLIP folder holding `checkpoint` (the folder,
/// or its weights file or a shard), from its `preprocessor_config.json`; `None` where there is
/// no such folder or file. Other files in the folder (a hub snapshot may hold open_clip's
/// weights too) keep their own normalisation.
pub fn normalization(checkpoint: &Path) -> Result<Option<Normalize>, String> {
    let dir = if checkpoint.is_dir() {
        checkpoint
    } else {
        let name = checkpoint
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if !(name.starts_with("model") || name.starts_with("pytorch_model")) {
            return Ok(None);
        }
        checkpoint.parent().unwrap_or(Path::new("."))
    };
    // A config.json that is not a CLIP model's (or not JSON) names no transformers CLIP
    // folder here; loading reports a broken one if the weights are in its layout.
    if !matches!(clip_config(dir), Ok(Some(_))) {
        return Ok(None);
    }
    let path = dir.join("preprocessor_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let bad = |m: &str| format!("{}: {m}", path.display());
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(&format!("not valid JSON: {e}")))?;
    let three = |k: &str| -> Result<Option<[f32; 3]>, String> {
        let Some(a) = v.get(k) else { return Ok(None) };
        let xs: Vec<f32> = a
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|x| x as f32)
                    .collect()
            })
            .unwrap_or_default();
        match xs[..] {
            [a, b, c] => Ok(Some([a, b, c])),
            _ => Err(bad(&format!("`{k}` is not a list of three numbers"))),
        }
    };
    let (mean, std) = (three("image_mean")?, three("image_std")?);
    if std.is_some_and(|s| s.iter().any(|&x| x.is_nan() || x <= 0.0)) {
        return Err(bad("`image_std` has a value that is not positive"));
    }
    Ok(match (mean, std) {
        (None, None) => None,
        (m, s) => Some(Normalize {
            mean: m.unwrap_or(crate::preprocess::MEAN),
            std: s.unwrap_or(crate::preprocess::STD),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_keys_take_openai_names() {
        assert_eq!(layer_rest("layer_norm1.weight").unwrap(), "ln_1.weight");
        assert_eq!(layer_rest("mlp.fc2.bias").unwrap(), "mlp.c_proj.bias");
        assert_eq!(
            layer_rest("self_attn.out_proj.weight").unwrap(),
            "attn.out_proj.weight"
        );
        // q/k/v are stacked elsewhere; other names are left for strict loading to report.
        assert!(layer_rest("self_attn.q_proj.weight").is_none());
        assert!(layer_rest("adapter.weight").is_none());
    }

    #[test]
    fn transposing_swaps_shape_and_strides() {
        let e = TensorEntry {
            dtype: super::super::StoredDType::F32,
            shape: vec![3, 5],
            strides: vec![5, 1],
            storage_start: 0,
            elem_offset: 0,
            parts: vec![],
            shard: 0,
        };
        let t = transposed(&e).unwrap();
        assert_eq!((t.shape, t.strides), (vec![5, 3], vec![1, 5]));
        assert!(transposed(&TensorEntry {
            shape: vec![15],
            strides: vec![1],
            ..e
        })
        .is_err());
    }
}
