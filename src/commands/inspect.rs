//! `pyramidclip inspect`: format, architecture, epoch and parameters of a checkpoint.

use super::{exit, fail};
use crate::checkpoint::{self, Checkpoint};
use crate::cli::InspectArgs;

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let reg = crate::loader::registry(args.model_config.as_deref(), None)
        .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    let ck = Checkpoint::open(&args.checkpoint)?;
    let arch = checkpoint::detect_config(&ck, &reg, args.visual_model.as_deref());
    let (name, desc, cfg, notice) = match &arch {
        Ok(a) => (
            a.name.clone(),
            checkpoint::describe_arch(&a.config),
            Some(a.config.clone()),
            a.notice.clone(),
        ),
        Err(e) => (None, format!("unrecognised: {e}"), None, None),
    };
    let family = cfg.as_ref().map(|c| c.family.name());
    let activation = cfg.as_ref().map(|c| c.activation.name());
    let unused = ck.unused_keys();
    if args.json {
        let v = serde_json::json!({
            "checkpoint": args.checkpoint.display().to_string(),
            "format": ck.format.name(),
            "layout": ck.layout,
            "architecture": name,
            "family": family,
            "activation": activation,
            "activation_notice": notice,
            "description": desc,
            "config": cfg,
            "epoch": ck.epoch,
            "parameters": ck.param_count(),
            "tensors": ck.entries.len(),
            "dtypes": ck.stored_dtypes(),
            "unused_keys": unused,
            "file_bytes": ck.file_len(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("checkpoint:   {}", args.checkpoint.display());
        println!("format:       {}", ck.format_label());
        let unnamed = if ck.metadata.contains_key(checkpoint::hf::VISION_HEADS) {
            "custom (from the weights' shapes and the folder's config.json)"
        } else {
            "unknown (pass --model-config with its config)"
        };
        println!("architecture: {}", name.as_deref().unwrap_or(unnamed));
        println!("detected:     {desc}");
        if let Some(text) = cfg.as_ref().and_then(checkpoint::describe_text) {
            println!("text tower:   {text}");
        }
        if let (Some(f), Some(a)) = (family, activation) {
            // The notice may be about the heads or a ConvNeXt's input size instead.
            let how = match notice.as_deref() {
                Some(n) if n.contains("activation") && f == "siglip" => {
                    " (not in the weights: assumed; --visual-model NAME decides)"
                }
                Some(n) if n.contains("activation") => {
                    " (not in the weights: QuickGELU assumed; --visual-model NAME or NAME-quickgelu decides)"
                }
                _ => "",
            };
            println!("family:       {f}, activation {a}{how}");
            // Other notices (the input size, the heads) as the loading commands warn them.
            if let Some(n) = notice.as_deref().filter(|_| how.is_empty()) {
                println!("notice:       {n}");
            }
        }
        println!(
            "epoch:        {}",
            ck.epoch
                .map(|e| e.to_string())
                .unwrap_or_else(|| "-".into())
        );
        println!(
            "parameters:   {} ({} tensors)",
            ck.param_count(),
            ck.entries.len()
        );
        println!("dtypes:       {}", ck.stored_dtypes().join(", "));
        // Counted, not listed: BatchNorm's counters and CoCa's captioning decoder.
        let is_decoder = |k: &str| k.starts_with("text_decoder.");
        let shown: Vec<&str> = unused
            .iter()
            .filter(|k| !k.ends_with("num_batches_tracked") && !is_decoder(k))
            .copied()
            .collect();
        let decoder = unused.iter().filter(|k| is_decoder(k)).count();
        let tracked = unused.len() - shown.len() - decoder;
        let mut parts: Vec<String> = shown.iter().map(|s| s.to_string()).collect();
        if tracked > 0 {
            parts.push(format!("{tracked} x num_batches_tracked"));
        }
        if decoder > 0 {
            parts.push(format!(
                "text_decoder.* ({decoder} tensors, the captioning decoder: read only by retrieval --pairing rows and captioning)"
            ));
        }
        println!(
            "unused keys:  {}",
            if unused.is_empty() {
                "-".to_string()
            } else {
                parts.join(", ")
            }
        );
    }
    Ok(())
}
