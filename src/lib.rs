//! pyramidclip: zero-shot evaluation of PyramidCLIP checkpoints on CPU or CUDA with Candle.
//!
//! Modules, lowest layer first:
//! - `util` (typo hints, atomic writes, the safetensors writer), `report` (log lines,
//!   progress, the SIGINT/SIGTERM flag), `device` (`--device`, `--precision`);
//! - `tokenizer` (CLIP's BPE with ftfy's cleaning), `checkpoint` (torch zip / legacy /
//!   safetensors readers, architecture detection, strict loading);
//! - `models`: the architectures (configs, presets) and their candle implementation;
//! - `native`: our own fp32 CPU engine (`simd` -> `gemm` -> `kernels`, `conv` -> `layers` ->
//!   encoders); `preprocess` (decode, resize, crop, normalise; uses `native::simd`);
//! - `engine` (the engine chosen at load, and the model built for it), `loader` (registry +
//!   checkpoint + engine), `synth` (random weights, synthetic JPEGs);
//! - `data` (label sets, image folders, the streaming loader), `features` (features of
//!   explicit images and texts), `zeroshot` (class vectors, cache, top-k, tallies),
//!   `recheck` (a reduced-precision run's near-ties decided in fp32),
//!   `results` (result JSON, predictions CSV, partials and merge), `eval` (the evaluation),
//!   `retrieval` (image-text recall from features), `generative` (CoCa's captioning loss),
//!   `captioning` (CoCa's beam search), `caption_metrics` (pycocoevalcap's scores), `selection` (image-caption selection), `lbfgs` (scipy's L-BFGS-B without
//!   bounds), `probe` (logistic-regression probes), `torch_rng` (torch's CPU random stream),
//!   `adamw_probe` (CLIP_benchmark's AdamW probe);
//! - `cli` (the arguments) and `commands` (one module per subcommand), used by `main.rs`.

pub mod adamw_probe;
pub mod caption_metrics;
pub mod captioning;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod data;
pub mod device;
pub mod engine;
pub mod eval;
pub mod features;
pub mod generative;
pub mod hub;
pub mod lbfgs;
pub mod loader;
pub mod models;
pub mod native;
pub mod preprocess;
pub mod probe;
pub mod recheck;
pub mod report;
pub mod results;
pub mod retrieval;
pub mod selection;
pub mod synth;
pub mod tokenizer;
pub mod torch_rng;
pub mod tune;
pub mod util;
pub mod zeroshot;

pub use checkpoint::Checkpoint;
pub use engine::{Engine, EngineChoice, Model};
pub use loader::{load, LoadOptions, LoadedModel};
pub use models::{Config, Registry};

/// Runs the command line; errors are printed once, with their causes, and mapped to exit codes.
pub fn run<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() {
                commands::exit::USAGE
            } else {
                0
            });
        }
    };
    let result = match cli.command {
        cli::Command::Eval(a) => commands::eval::run(a),
        cli::Command::Merge(a) => commands::merge::run(a),
        cli::Command::Results(a) => commands::results::run(a),
        cli::Command::Retrieval(a) => commands::retrieval::run(a),
        cli::Command::CaptionSelection(a) => commands::selection::run(a),
        cli::Command::Captioning(a) => commands::captioning::run(a),
        cli::Command::LinearProbe(a) => commands::linear_probe::run(a),
        cli::Command::Embed(a) => commands::embed::run(a),
        cli::Command::Predict(a) => commands::predict::run(a),
        cli::Command::Tokenize(a) => commands::tokenize::run(a),
        cli::Command::Preprocess(a) => commands::preprocess::run(a),
        cli::Command::Inspect(a) => commands::inspect::run(a),
        cli::Command::Convert(a) => commands::convert::run(a),
        cli::Command::Bench(a) => commands::bench::run(a),
        cli::Command::Dev(c) => commands::dev::run(c),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: candle may append a backtrace to its messages; keep each first line.
            let first = |s: String| s.lines().next().unwrap_or_default().to_string();
            let mut msg = format!("error: {}", first(e.to_string()));
            for cause in e.chain().skip(1) {
                let c = first(cause.to_string());
                if !msg.contains(&c) {
                    msg.push_str(&format!(": {c}"));
                }
            }
            eprintln!("{msg}");
            std::process::ExitCode::from(commands::exit_code(&e))
        }
    }
}
