//! Dev tool: an in-process A/B of the native engine's tuning options on a noisy machine.
//!
//! Builds the native model once per option set from the same random weights and alternates
//! batches between them (order reversed every other round), printing each set's fastest and
//! mean rate. Two runs of `bench` minutes apart can differ by 30% on a shared VM; batches
//! alternated inside one process see the same conditions, so small differences show.
//!
//! ```text
//! cargo run --release --example model_ab -- ViT-B-32 text "" "--split-batch 0" "--gemm-direct 1"
//! ROUNDS=40 cargo run --release --example model_ab -- RN50 image "--gemm-prefetch 0" ""
//! ```
//! Each option set is the binary's own hidden tuning flags in one argument (`""`: the
//! defaults), mapped as the binary maps them (`commands::native_options`, fp32; their
//! `PYRAMIDCLIP_*` variables apply to every set). Batch 16, the global pool's threads
//! (`RAYON_NUM_THREADS`).
use candle_core::{Device, Tensor};
use clap::Parser;
use pyramidclip::cli::NativeArgs;
use pyramidclip::commands;
use pyramidclip::device::Precision;
use pyramidclip::models::config::Registry;
use pyramidclip::native::{NativeOptions, PyramidClip};
use pyramidclip::tokenizer;
use std::time::Instant;

/// The binary's tuning flags, parsed from one option set.
#[derive(Parser)]
struct Set {
    #[command(flatten)]
    native: NativeArgs,
}

fn options(spec: &str) -> Result<NativeOptions, String> {
    let set = Set::try_parse_from(std::iter::once("model_ab").chain(spec.split_whitespace()))
        .map_err(|e| format!("option set {spec:?}: {}", e.render()))?;
    Ok(commands::native_options(&set.native, Precision::Fp32))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("model_ab: {}", e.to_string().trim_end());
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: model_ab MODEL text|image OPTIONS...".into());
    }
    let cfg = Registry::builtin().get(&args[0])?.clone();
    let text = match args[1].as_str() {
        "text" => true,
        "image" => false,
        other => return Err(format!("expected text or image, got {other:?}").into()),
    };
    let mut models = Vec::new();
    for spec in &args[2..] {
        let model = PyramidClip::new(&cfg, pyramidclip::synth::random_vb(7), options(spec)?)?;
        let label = if spec.trim().is_empty() {
            "defaults"
        } else {
            spec.as_str()
        };
        models.push((label, model));
    }
    let n = 16;
    let l = cfg.context_length;
    // Start, 7-11 word ids, end-of-text, padding: prompt-like lengths.
    let mut ids = vec![0i64; n * l];
    for (b, row) in ids.chunks_mut(l).enumerate() {
        let end = 8 + b % 5;
        row[0] = i64::from(tokenizer::SOT);
        for (j, id) in row.iter_mut().enumerate().take(end).skip(1) {
            *id = (1000 + 37 * b + 11 * j) as i64;
        }
        row[end] = i64::from(tokenizer::EOT);
    }
    let tokens = Tensor::from_vec(ids, (n, l), &Device::Cpu)?;
    let r = cfg.image_resolution;
    let pixels = Tensor::randn(0f32, 1.0, (n, 3, r, r), &Device::Cpu)?;
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut best = vec![f64::INFINITY; models.len()];
    let mut total = vec![0f64; models.len()];
    for round in 0..rounds {
        for i in 0..models.len() {
            let i = if round % 2 == 0 {
                i
            } else {
                models.len() - 1 - i
            };
            let model = &models[i].1;
            let t = Instant::now();
            let out = if text {
                model.encode_text(&tokens)?
            } else {
                model.encode_image(&pixels)?
            };
            let dt = t.elapsed().as_secs_f64();
            std::hint::black_box(out);
            best[i] = best[i].min(dt);
            total[i] += dt;
        }
    }
    let unit = if text { "prompts/s" } else { "images/s" };
    for (i, (spec, _)) in models.iter().enumerate() {
        println!(
            "{spec}: fastest {:.2} {unit}, mean {:.2} {unit} ({rounds} batches of {n})",
            n as f64 / best[i],
            n as f64 * rounds as f64 / total[i]
        );
    }
    Ok(())
}
