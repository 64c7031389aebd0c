//! `pyramidclip predict`: per-image similarities and softmax over texts (the upstream
//! `demo.py`); for SigLIP, each pair's own sigmoid of its scaled, biased similarity (how
//! SigLIP was trained and open_clip's example scores it).

use super::load_model;
use crate::cli::PredictArgs;
use crate::features;
use crate::report::Log;

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let log = Log { quiet: args.json };
    let m = load_model(&args.model, None, log)?;
    let img = features::images(&m, &args.images, 32, false)?;
    let txt = features::texts(&m, &args.texts, 32, false)?;
    let cos: Vec<Vec<f32>> = img.matmul(&txt.t()?)?.to_vec2()?;
    let scale = m.logit_scale().unwrap_or(100.0);
    let bias = m.logit_bias();
    let probs: Vec<Vec<f32>> = cos
        .iter()
        .map(|row| match bias {
            Some(b) => row
                .iter()
                .map(|&c| 1.0 / (1.0 + (-(c * scale + b)).exp()))
                .collect(),
            None => {
                let mx = row.iter().fold(f32::MIN, |a, &b| a.max(b * scale));
                let e: Vec<f32> = row.iter().map(|&c| (c * scale - mx).exp()).collect();
                let s: f32 = e.iter().sum();
                e.into_iter().map(|v| v / s).collect()
            }
        })
        .collect();
    if args.json {
        let out: Vec<serde_json::Value> = args
            .images
            .iter()
            .zip(cos.iter().zip(&probs))
            .map(|(p, (c, pr))| {
                serde_json::json!({
                    "image": p.display().to_string(),
                    "texts": args.texts.iter().zip(c.iter().zip(pr)).map(|(t, (c, p))| serde_json::json!({"text": t, "cosine": c, "prob": p})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "logit_scale": scale,
                "logit_bias": bias,
                "probability": if bias.is_some() { "sigmoid" } else { "softmax" },
                "results": out
            }))?
        );
        return Ok(());
    }
    for (p, (c, pr)) in args.images.iter().zip(cos.iter().zip(&probs)) {
        println!("{}", p.display());
        let best = pr
            .iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > pr[b] { i } else { b });
        for (i, t) in args.texts.iter().enumerate() {
            let mark = if i == best { "*" } else { " " };
            println!("  {mark} {:>7.2}%  cos {:+.4}  {t}", pr[i] * 100.0, c[i]);
        }
    }
    Ok(())
}
