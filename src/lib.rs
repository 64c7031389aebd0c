//! pyramidclip: zero-shot evaluation of PyramidCLIP checkpoints on CPU or CUDA with Candle.
//!
//! The layout follows the data: `checkpoint` reads weights, `models` holds the encoders,
//! `tokenizer` and `preprocess` turn text and images into tensors, `dataset` lists and streams
//! image folders, `zeroshot` builds class vectors and scores, and `cli` is the command line.

pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod dataset;
pub mod datasets;
pub mod device;
pub mod models;
pub mod preprocess;
pub mod tokenizer;
pub mod util;
pub mod zeroshot;

pub use checkpoint::{load_model, Checkpoint, LoadedModel};
pub use models::{Config, PyramidClip, Registry};

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
        cli::Command::Merge(a) => commands::eval::merge(a),
        cli::Command::Embed(a) => commands::misc::embed(a),
        cli::Command::Predict(a) => commands::misc::predict(a),
        cli::Command::Tokenize(a) => commands::misc::tokenize(a),
        cli::Command::Preprocess(a) => commands::misc::preprocess(a),
        cli::Command::Inspect(a) => commands::misc::inspect(a),
        cli::Command::Convert(a) => commands::misc::convert(a),
        cli::Command::Bench(a) => commands::bench::run(a),
        cli::Command::Synth(a) => commands::bench::synth(a),
        cli::Command::Compare(a) => commands::bench::compare(a),
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
